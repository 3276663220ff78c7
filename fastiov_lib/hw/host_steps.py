"""The generic host-change step: a plan as data rows first, then an apply guarded by the testbed.

Used by `nic`, `runtime_config` and `build`. A step is a named list of actions; each action says
what it does (`action`, `target`, `value`, `why`) and carries the callable that does it. `plan()`
returns the rows without touching anything; `apply()` refuses unless host changes are allowed,
skips actions that are already done (idempotent), and backs up every file it is about to edit.

Only the standard library is imported here: `nic` (which imports this) also runs inside a
minimal QEMU guest.
"""
from __future__ import annotations

import datetime as _dt
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

PLAN_COLUMNS = ("step", "action", "target", "value", "why")


class HostChangesNotAllowed(PermissionError):
    """apply() was called for a testbed that does not say `allow_host_changes: true`."""


class StepError(RuntimeError):
    """An action failed; the message names the step, the action and its target."""


def require_host_changes(allowed: bool, what: str, source: str | None = None) -> None:
    """Raise HostChangesNotAllowed unless `allowed`; the message says which file to edit."""
    if not allowed:
        where = f" in {source}" if source else " in the testbed file"
        raise HostChangesNotAllowed(
            f"{what}: refusing to change the host; set 'allow_host_changes: true'{where} "
            "after reading the plan (fastiov-artifact ... plan)"
        )


@dataclass
class Action:
    """One change: a plan row plus the callable that makes it (never called by plan())."""

    action: str  # write, edit, mkdir, copy, run, symlink, ioctl, ...
    target: str  # file, device or directory acted on
    value: str  # what is written / the command line / the new value
    why: str
    perform: Callable[[], Any] | None = field(default=None, repr=False, compare=False)
    is_done: Callable[[], bool] | None = field(default=None, repr=False, compare=False)
    backup: Path | None = None  # a file this action edits: copied to the backup dir first

    def row(self, step: str = "") -> dict[str, str]:
        return {"step": step, "action": self.action, "target": self.target, "value": self.value,
                "why": self.why}


@dataclass
class ActionResult:
    """What apply() did with one action."""

    step: str
    action: str
    target: str
    status: str  # done, skipped (already done), failed
    duration_ns: int
    detail: str = ""
    backup: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def backup_file(path: Path, backup_dir: Path) -> Path | None:
    """Copy `path` into `backup_dir` (keeping its absolute layout) unless that was done before.

    Returns the backup's path, or None when `path` does not exist (nothing to back up). The first
    backup is never overwritten, so repeated applies keep the original file.
    """
    path = Path(path)
    if not path.exists():
        return None
    dest = Path(backup_dir) / str(path.resolve()).lstrip("/")
    if not dest.exists():
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, dest)
    return dest


def default_backup_dir(base: Path) -> Path:
    """A time-stamped backup directory below `base`."""
    return Path(base) / "backups" / _dt.datetime.now().strftime("%Y%m%d-%H%M%S")


@dataclass
class Step:
    """A named list of actions with plan() and apply()."""

    name: str
    actions: list[Action] = field(default_factory=list)

    def plan(self) -> list[dict[str, str]]:
        """The rows (step, action, target, value, why) that apply() would carry out."""
        return [a.row(self.name) for a in self.actions]

    def apply(self, allow_host_changes: bool, backup_dir: Path | None = None,
              source: str | None = None) -> list[ActionResult]:
        """Carry out the actions in order; stop at the first failure (raised as StepError).

        Actions whose `is_done()` is true are skipped. Files named in `backup` are copied to
        `backup_dir` before the action runs (a backup dir is required for such actions).
        """
        require_host_changes(allow_host_changes, f"step {self.name!r}", source)
        results: list[ActionResult] = []
        for act in self.actions:
            t0 = time.monotonic_ns()
            if act.is_done is not None and act.is_done():
                results.append(ActionResult(self.name, act.action, act.target, "skipped",
                                            time.monotonic_ns() - t0, "already done"))
                continue
            saved = None
            if act.backup is not None:
                if backup_dir is None:
                    raise StepError(f"step {self.name!r}: {act.action} {act.target}: needs a backup dir")
                saved = backup_file(act.backup, backup_dir)
            try:
                if act.perform is not None:
                    act.perform()
            except Exception as exc:  # re-raised with the step and target named
                raise StepError(f"step {self.name!r}: {act.action} {act.target} = {act.value!r} "
                                f"failed: {exc}") from exc
            results.append(ActionResult(self.name, act.action, act.target, "done",
                                        time.monotonic_ns() - t0, "",
                                        str(saved) if saved else None))
        return results


def plan_rows(steps: Iterable[Step]) -> list[dict[str, str]]:
    """All plan rows of several steps, in order."""
    rows: list[dict[str, str]] = []
    for s in steps:
        rows.extend(s.plan())
    return rows


def format_plan(rows: Iterable[dict[str, Any]], columns: Iterable[str] | None = None) -> str:
    """A plain-text table of plan rows for the terminal (columns: those of the first row)."""
    rows = list(rows)
    if not rows:
        return "(nothing to do)"
    cols = list(columns or rows[0].keys())
    widths = {c: min(60, max(len(c), *(len(str(r.get(c, ""))) for r in rows))) for c in cols}
    lines = ["  ".join(c.upper().ljust(widths[c]) for c in cols)]
    for r in rows:
        cells = []
        for c in cols:
            text = str(r.get(c, ""))
            cells.append(text if c == cols[-1] else text.ljust(widths[c]))
        lines.append("  ".join(cells))
    return "\n".join(lines)

