"""The record every readiness check returns (host checks, local testbed probes), and the host probes they share."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable, Literal

from fastiov_lib import sh

CheckStatus = Literal["pass", "warn", "fail"]


@dataclass(frozen=True)
class Check:
    """One readiness check: what was looked at, what was seen, and how to fix a warn/fail."""

    name: str
    status: CheckStatus
    seen: str
    fix: str = ""

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


def worst_status(checks: Iterable[Check]) -> CheckStatus:
    order = {"pass": 0, "warn": 1, "fail": 2}
    worst: CheckStatus = "pass"
    for c in checks:
        if order[c.status] > order[worst]:
            worst = c.status
    return worst


def format_checks(checks: Iterable[Check]) -> str:
    """A plain-text table for the terminal."""
    rows = list(checks)
    if not rows:
        return "(no checks)"
    width = max(len(c.name) for c in rows)
    lines = []
    for c in rows:
        line = f"{c.status.upper():4}  {c.name:<{width}}  {c.seen}"
        if c.status != "pass" and c.fix:
            line += f"\n      {'':<{width}}  fix: {c.fix}"
        lines.append(line)
    return "\n".join(lines)


# ------------------------------------------------------------------ host probes (below a root path: / or a fake tree)

def under(root: Path, path: str | Path) -> Path:
    """`path` (absolute on the host) below `root`."""
    return Path(root) / str(path).lstrip("/")


def read_text(path: Path) -> str | None:
    """A file's text, or None when it cannot be read."""
    try:
        return path.read_text()
    except OSError:
        return None


def version_of(binary: Path, args: list[str]) -> str | None:
    """The first line a binary prints for `args` (e.g. --version), or None when it cannot say."""
    try:
        res = sh.run([str(binary), *args], timeout=10, check=False)
    except (sh.CommandError, OSError):
        return None
    text = (res.stdout or res.stderr).strip()
    return text.splitlines()[0].strip() if res.returncode == 0 and text else None


def module_loaded(root: Path, name: str) -> bool:
    """A module is there if /sys/module/<name> exists (also for built-ins) or /proc/modules lists it."""
    if under(root, f"sys/module/{name}").is_dir():
        return True
    text = read_text(under(root, "proc/modules")) or ""
    return any(line.split(" ", 1)[0] == name for line in text.splitlines())


def check_kvm_device(root: Path) -> Check:
    """/dev/kvm is there (hardware virtualisation usable)."""
    if under(root, "dev/kvm").exists():
        return Check("kvm.device", "pass", "/dev/kvm present")
    return Check("kvm.device", "fail", "/dev/kvm missing", "modprobe kvm_intel (or kvm_amd)")
