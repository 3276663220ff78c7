"""The directories the patched components hard-code, created before the first pod as a host step.

The kata shim and fastiov-cni exit at start-up when `/tmp/pod_test/` is missing; containerd, the
kata runtime, fastiov-cni and QEMU write their timing records below fixed paths that must exist.
The step is a plan first (rows), idempotent (existing directories are left alone), and records
every directory it created in `<build_dir>/created-dirs.json`, so `remove_created_dirs` removes
only those, and only when empty.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from fastiov_lib.config import FastiovHostSettings, Testbed
from fastiov_lib.hw.host_steps import Action, Step

STATE_FILE = "created-dirs.json"


def _under(root: Path, path: Path | str) -> Path:
    return Path(root) / str(path).lstrip("/")


def component_dirs(s: FastiovHostSettings) -> list[tuple[Path, str]]:
    """(directory, why) of every directory the components need before the first pod."""
    out = [(s.pod_test_dir, "kata shim debug log and fastiov-cni: both exit at start-up without it")]
    out += [(d, f"{comp} writes its cnicmp-*.log timing records here (hard-coded)")
            for comp, d in sorted(s.instrumentation_log_dirs.items())]
    if s.qemu_log_dir:
        out.append((s.qemu_log_dir, "the patched QEMU writes qemu-<pid>.log timelines here (hard-coded)"))
    return out


def state_file(testbed: Testbed, root: Path) -> Path:
    return _under(root, testbed.fastiov.build_dir) / STATE_FILE


def _created(path: Path) -> list[str]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return []


def _record(state: Path, dirs: list[Path]) -> None:
    known = _created(state)
    known += [str(d) for d in dirs if str(d) not in known]
    state.parent.mkdir(parents=True, exist_ok=True)
    tmp = state.with_name(state.name + ".tmp")
    tmp.write_text(json.dumps(known, indent=1) + "\n")
    os.replace(tmp, state)


def _make(target: Path, state: Path) -> None:
    missing = [p for p in [target, *target.parents] if not p.exists()]
    target.mkdir(parents=True, exist_ok=True)
    _record(state, list(reversed(missing)))  # parents first, so removal goes deepest first


def log_dir_step(testbed: Testbed, root: Path | None = None) -> Step:
    """mkdir of every component directory that does not exist yet (plan rows, idempotent apply)."""
    root = Path(root or testbed.sys_root)
    state = state_file(testbed, root)
    actions = []
    for d, why in component_dirs(testbed.fastiov):
        target = _under(root, d)
        actions.append(Action("mkdir", str(d), "parents as needed", why,
                              perform=lambda t=target: _make(t, state), is_done=target.is_dir))
    return Step("component log directories", actions)


def remove_created_dirs(testbed: Testbed, root: Path | None = None) -> tuple[list[str], list[str]]:
    """Remove the directories this artifact created (deepest first, only empty ones): (removed, kept)."""
    root = Path(root or testbed.sys_root)
    state = state_file(testbed, root)
    removed, kept = [], []
    for d in sorted(_created(state), key=lambda p: p.count("/"), reverse=True):
        p = Path(d)
        if not p.is_dir():
            continue
        try:
            p.rmdir()
            removed.append(d)
        except OSError:
            kept.append(f"{d} (not empty)")
    remaining = [d for d in _created(state) if Path(d).is_dir()]
    if remaining:
        state.write_text(json.dumps(remaining, indent=1) + "\n")
    elif state.exists():
        state.unlink()
    return removed, kept
