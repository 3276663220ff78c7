"""The record every readiness check returns (host checks, local testbed probes)."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Iterable, Literal

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
