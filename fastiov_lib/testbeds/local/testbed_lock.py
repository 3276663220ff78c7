"""One artifact process at a time drives a local testbed: an fcntl lock per work dir.

The lock file lives in /run/lock (else the system temp dir), named after the work dir's path, so
deleting the work dir never deletes a held lock. A second process waits up to
`FASTIOV_TESTBED_LOCK_WAIT_S` seconds (default 10), saying whom it waits for, then refuses naming
the holder. The lock is re-entrant within a process and for its children (papermill kernels of a
`reproduce`): the holder exports the lock path in `FASTIOV_TESTBED_LOCK_HELD`. The team's manual
`flock /tmp/testbed.lock` uses another file, so the two never deadlock.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Iterator

from fastiov_lib.config import ConfigError
from fastiov_lib.testbeds.base import BackendError

ENV_HELD = "FASTIOV_TESTBED_LOCK_HELD"
ENV_WAIT = "FASTIOV_TESTBED_LOCK_WAIT_S"
_held: dict[str, int] = {}  # lock path -> depth, in this process
_guard = threading.Lock()


class TestbedBusy(ConfigError, BackendError):
    """Another artifact process is driving this testbed right now."""

    __test__ = False  # not a pytest test class, despite the name


def lock_path(work_dir: Path) -> Path:
    """The lock file of a work dir (outside it)."""
    digest = hashlib.sha256(str(Path(work_dir).resolve()).encode()).hexdigest()[:16]
    base = Path("/run/lock")
    if not (base.is_dir() and os.access(base, os.W_OK)):
        base = Path(tempfile.gettempdir())
    return base / f"fastiov-testbed-{digest}.lock"


def _holder(path: Path) -> str:
    try:
        return path.read_text().strip() or "another process"
    except OSError:
        return "another process"


@contextlib.contextmanager
def hold(work_dir: Path, what: str, wait_s: float | None = None) -> Iterator[None]:
    """Hold the testbed's lock for `what` (e.g. "bench"); raise TestbedBusy if another process keeps it."""
    path = lock_path(work_dir)
    key = str(path)
    with _guard:
        if _held.get(key) or os.environ.get(ENV_HELD) == key:
            _held[key] = _held.get(key, 0) + 1
            reentrant = True
        else:
            reentrant = False
    if reentrant:
        try:
            yield
        finally:
            with _guard:
                _held[key] -= 1
        return
    wait_s = float(os.environ.get(ENV_WAIT, "10")) if wait_s is None else wait_s
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot open the lock of the testbed at {work_dir} ({exc.strerror}); {what} "
                          "needs the rights of whoever brought the testbed up (root)") from None
    try:
        deadline = time.monotonic() + wait_s
        told = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise TestbedBusy(f"testbed at {work_dir} is in use by {_holder(path)} (lock {path}); "
                                      f"{what} refused after waiting {wait_s:.0f} s; try again when it is done"
                                      ) from None
                if not told:
                    print(f"waiting for {_holder(path)} to finish with the testbed at {work_dir} "
                          f"(up to {wait_s:.0f} s)", file=sys.stderr)
                    told = True
                time.sleep(0.2)
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} ({what}: {' '.join(sys.argv[:3])})\n".encode())
        previous_env = os.environ.get(ENV_HELD)
        os.environ[ENV_HELD] = key
        with _guard:
            _held[key] = 1
        try:
            yield
        finally:
            with _guard:
                _held.pop(key, None)
            if previous_env is None:
                os.environ.pop(ENV_HELD, None)
            else:
                os.environ[ENV_HELD] = previous_env
            os.ftruncate(fd, 0)
    finally:
        os.close(fd)  # closing the descriptor releases the flock
