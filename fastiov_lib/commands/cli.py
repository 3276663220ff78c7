"""`fastiov-artifact`: one console script; each sub-command lives in fastiov_lib/commands/<name>.py.

A command module exposes `register(subparsers)`, which adds its parser(s) and sets `func` (a callable
taking the parsed args and returning an exit code). Modules are discovered, so adding a command
touches no shared file.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import pkgutil
import signal
import sys
import traceback

from fastiov_lib import commands
from fastiov_lib.config import ConfigError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fastiov-artifact",
        description="Reproduce FastIOV (EuroSys'25): build, set up, measure, plot.",
        epilog="Add --debug anywhere (or set FASTIOV_DEBUG=1) to see the traceback behind an error.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        if info.name == "cli":
            continue
        module = importlib.import_module(f"{commands.__name__}.{info.name}")
        register = getattr(module, "register", None)
        if register is not None:
            register(sub)
    return parser


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like SIGINT's KeyboardInterrupt so every long command ends the same way."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def install_signal_handlers() -> None:
    """SIGINT and SIGTERM both end a command through its clean-up path (records kept, testbed down).

    Installed explicitly: a background job starts with SIGINT ignored, which would make it unstoppable.
    """
    def on_term(signum: int, _frame: object) -> None:
        raise Terminated(signum)

    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, on_term)


def exit_code_of_signal(exc: BaseException) -> int:
    """128 + the signal number (130 for SIGINT, 143 for SIGTERM)."""
    return 128 + int(getattr(exc, "signum", signal.SIGINT))


def describe_error(exc: BaseException) -> tuple[str, int]:
    """One line for the user and the exit status (2: bad input, 1: anything else)."""
    from fastiov_lib.sh import CommandError

    if isinstance(exc, ConfigError):
        return f"error: {exc}", 2
    if isinstance(exc, OSError):
        where = f"{exc.filename}: " if exc.filename else ""
        return f"error: {where}{exc.strerror or exc}", 1
    if isinstance(exc, (CommandError, RuntimeError, ValueError, LookupError)):
        return f"error: {exc}", 1
    text = " ".join(str(exc).split())
    return f"error: {type(exc).__name__}: {text} (unexpected; run with --debug for the traceback)", 1


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get("FASTIOV_DEBUG") == "1"
    argv = [a for a in argv if a != "--debug"]
    parser = build_parser()
    args = parser.parse_args(argv)
    install_signal_handlers()
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt as exc:
        name = signal.Signals(exit_code_of_signal(exc) - 128).name
        print(f"interrupted by {name}", file=sys.stderr)
        return exit_code_of_signal(exc)
    except BrokenPipeError:
        # the reader of our output went away (`| head`); nothing more to say to it
        with contextlib.suppress(OSError):
            sys.stdout = open(os.devnull, "w")
        return 141
    except Exception as exc:
        if debug:
            traceback.print_exc()
        message, code = describe_error(exc)
        print(message, file=sys.stderr)
        return code


if __name__ == "__main__":
    sys.exit(main())
