"""Stopping a child process together with everything it started (its whole process group)."""
from __future__ import annotations

import os
import signal
import subprocess


def stop_process_group(proc: subprocess.Popen, grace_s: float = 5.0, kill_wait_s: float = 10.0) -> None:
    """SIGTERM the child's process group, SIGKILL it after grace_s; the child must lead its group.

    Children of a leader that already exited are killed too, so nothing lingers (make -j jobs,
    a QEMU's helpers).
    """
    if proc.poll() is None:
        for sig, wait in ((signal.SIGTERM, grace_s), (signal.SIGKILL, kill_wait_s)):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                proc.wait(timeout=wait)
                break
            except subprocess.TimeoutExpired:
                continue
    else:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
