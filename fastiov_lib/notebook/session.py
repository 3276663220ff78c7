"""What every notebook does first: load the testbed and profile, open the session's run directory.

One session, one run: 01_build starts a run and records it in `<results root>/current-run.json`;
02-05 (and `fastiov-artifact run`, one notebook at a time) reuse that run while the testbed and the
profile are the same as the ones it was started with, and start a new one when they differ or when
asked (`new_run = True`). 06_figures shows the current run, and the committed example run only
when there is none. An explicit `run_dir` always wins and leaves the pointer alone.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from fastiov_lib.config import REPO_ROOT, Profile, Testbed, load_profile, load_testbed, resolve_path
from fastiov_lib.notebook.parameters import require_types
from fastiov_lib.run.rundir import RUN_FILE, RunDir, create_run_dir, open_run_dir
from fastiov_lib.testbeds import backend_for
from fastiov_lib.testbeds.base import TestbedBackend

CURRENT_RUN_FILE = "current-run.json"
EXAMPLE_RUN = "results/example-local"


@dataclass(frozen=True)
class Session:
    """The testbed, profile and run directory a notebook works with (passed to every call)."""

    testbed: Testbed
    profile: Profile
    run: RunDir
    backend: TestbedBackend = None  # type: ignore[assignment]  # None: the testbed's own back end
    why: str = ""  # how the run was chosen (new, reused current run, given)

    def __post_init__(self) -> None:
        if self.backend is None:
            object.__setattr__(self, "backend", backend_for(self.testbed))

    def summary(self) -> pd.DataFrame:
        """A one-row table for the top of a notebook: which testbed, profile and run."""
        return pd.DataFrame(
            [{
                "testbed": self.testbed.name,
                "kind": self.backend.kind,
                "profile": self.profile.name,
                "host changes allowed": self.testbed.allow_host_changes,
                "run id": self.run.run_id,
                "run": self.why,
            }]
        )


def current_run_file(results_root: Path) -> Path:
    """Where the pointer to the session's current run lives (in the results root)."""
    return Path(results_root) / CURRENT_RUN_FILE


def read_current_run(results_root: Path) -> RunDir | None:
    """The run the pointer names, or None (no pointer, unreadable, or the run is gone)."""
    pointer = current_run_file(results_root)
    try:
        data = json.loads(pointer.read_text())
        path = Path(results_root) / str(data["run_id"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return RunDir(path) if (path / RUN_FILE).is_file() else None


def write_current_run(run: RunDir) -> Path:
    """Make `run` the current run of its results root (atomically; returns the pointer's path)."""
    pointer = current_run_file(run.path.parent)
    data = {"run_id": run.run_id,
            "set_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "why": "the run 01_build (or the pipeline) started; 02-06 reuse it while testbed and profile match"}
    tmp = pointer.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, pointer)
    return pointer


def run_matches(run: RunDir, testbed: Testbed, profile: Profile) -> str:
    """"" when the run was made with this testbed and profile, else what differs (one line)."""
    rec = run.record()
    if rec.testbed_name != testbed.name:
        return f"testbed {rec.testbed_name!r} != {testbed.name!r}"
    if rec.testbed not in (None, testbed.model_dump(mode="json")):
        return f"testbed {testbed.name!r} settings changed since the run started"
    if rec.profile != profile.model_dump(mode="json"):
        return f"profile {rec.profile_name!r} != {profile.name!r} (or its values changed)"
    return ""


def session_run(testbed: Testbed, profile: Profile, new_run: bool = False, run_id: str | None = None,
                results_root: Path | None = None, extend_foreign: bool = False) -> tuple[RunDir, str]:
    """The run a notebook of this session writes into, and why that one (see the module docstring)."""
    root = Path(results_root) if results_root else testbed.resolve_results_dir()
    if run_id:
        run = create_run_dir(testbed, profile, run_id=run_id, results_root=root, extend_foreign=extend_foreign,
                             facts=backend_for(testbed).facts())
        return run, f"given run id {run_id}"
    current = None if new_run else read_current_run(root)
    differs = run_matches(current, testbed, profile) if current is not None else ""
    if current is not None and not differs:
        return current, "current run (reused)"
    run = create_run_dir(testbed, profile, results_root=root, facts=backend_for(testbed).facts())
    write_current_run(run)
    if new_run:
        return run, "new run (asked for)"
    return run, f"new run ({differs})" if differs else "new run (no current run)"


def open_session(testbed_path: str, profile: str, run_dir: str = "",
                 overrides: dict[str, Any] | None = None, new_run: bool = False) -> Session:
    """Load config and open the run: `run_dir` if given, else the session's current run (or a new one)."""
    require_types(testbed_path=(testbed_path, str), profile=(profile, str), run_dir=(run_dir, str),
                  new_run=(new_run, bool))
    testbed = load_testbed(testbed_path)
    prof = load_profile(profile, overrides)
    if run_dir:
        path = resolve_path(run_dir)
        run = create_run_dir(testbed, prof, run_id=Path(path).name, results_root=Path(path).parent,
                             facts=backend_for(testbed).facts())
        return Session(testbed, prof, run, why="given run_dir")
    run, why = session_run(testbed, prof, new_run=new_run)
    return Session(testbed, prof, run, why=why)


def open_existing_run(run_dir: str) -> RunDir:
    """An existing run directory, for analysis notebooks (relative paths from the repository root)."""
    return open_run_dir(resolve_path(run_dir))


def analysis_run(run_dir: str = "", results_root: str | Path = "results") -> tuple[RunDir, str]:
    """The run 06_figures shows: `run_dir` if given, else the current run, else the committed example."""
    require_types(run_dir=(run_dir, str))
    if run_dir:
        return open_existing_run(run_dir), "given run_dir"
    root = Path(results_root) if Path(results_root).is_absolute() else REPO_ROOT / results_root
    current = read_current_run(root)
    if current is not None:
        return current, "current run of this session"
    return open_existing_run(EXAMPLE_RUN), "no current run: the committed example run"


def which_run(run: RunDir, why: str) -> pd.DataFrame:
    """A one-row table naming the run a notebook shows and why (the run id, not a path object)."""
    rec = run.record()
    return pd.DataFrame([{"run id": run.run_id, "testbed": rec.testbed_name if rec.testbed_name != "unknown" else "",
                          "profile": rec.profile_name or "", "chosen": why}])
