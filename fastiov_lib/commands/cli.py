"""`fastiov-artifact`: one console script; each sub-command lives in fastiov_lib/commands/<name>.py.

A command module exposes `register(subparsers)`, which adds its parser(s) and sets `func` (a callable
taking the parsed args and returning an exit code). Modules are discovered, so adding a command
touches no shared file.
"""
from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

from fastiov_lib import commands
from fastiov_lib.config import ConfigError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fastiov-artifact",
        description="Reproduce FastIOV (EuroSys'25): build, set up, measure, plot.",
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


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
