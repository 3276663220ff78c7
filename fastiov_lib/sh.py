"""The one subprocess wrapper: argument lists only (no shell), bounded time, errors that name the command."""
from __future__ import annotations

import shlex
import subprocess
from pathlib import Path
from typing import Mapping


class CommandError(RuntimeError):
    """A command was not found, timed out or failed; the message says which and how."""


def run(argv: list[str], *, what: str = "", timeout: float = 60.0, check: bool = True,
        env: Mapping[str, str] | None = None, cwd: Path | str | None = None, input: str | None = None,
        error: type[Exception] = CommandError) -> subprocess.CompletedProcess[str]:
    """Run `argv` (never through a shell), capture text output; raise `error` with a one-line reason."""
    argv = [str(a) for a in argv]
    label = f"{what}: " if what else ""
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, input=input,
                              env=dict(env) if env is not None else None, cwd=cwd)
    except FileNotFoundError:
        raise error(f"{label}{argv[0]}: command not found (install it; see the README's set-up)") from None
    except subprocess.TimeoutExpired:
        raise error(f"{label}`{shlex.join(argv)}` did not finish within {timeout:.0f} s") from None
    if check and proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        raise error(f"{label}`{shlex.join(argv)}` exited {proc.returncode}: " + " | ".join(tail))
    return proc


def output(argv: list[str], **kwargs) -> str:
    """Standard output of a command that must succeed, stripped."""
    return run(argv, **kwargs).stdout.strip()
