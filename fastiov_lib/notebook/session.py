"""What every notebook does first: load the testbed and profile, open (or create) the run directory."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from fastiov_lib.config import Profile, Testbed, load_profile, load_testbed, resolve_path
from fastiov_lib.run.rundir import RunDir, create_run_dir, open_run_dir
from fastiov_lib.testbeds import backend_for
from fastiov_lib.testbeds.base import TestbedBackend


@dataclass(frozen=True)
class Session:
    """The testbed, profile and run directory a notebook works with (passed to every call)."""

    testbed: Testbed
    profile: Profile
    run: RunDir
    backend: TestbedBackend = None  # type: ignore[assignment]  # None: the testbed's own back end

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
            }]
        )


def open_session(testbed_path: str, profile: str, run_dir: str = "",
                 overrides: dict[str, Any] | None = None) -> Session:
    """Load config and open `run_dir` (created with run.json if new; a fresh run id if empty)."""
    testbed = load_testbed(testbed_path)
    prof = load_profile(profile, overrides)
    if run_dir:
        path = resolve_path(run_dir)
        run = create_run_dir(testbed, prof, run_id=Path(path).name, results_root=Path(path).parent)
    else:
        run = create_run_dir(testbed, prof)
    return Session(testbed, prof, run)


def open_existing_run(run_dir: str) -> RunDir:
    """An existing run directory, for analysis notebooks (relative paths from the repository root)."""
    return open_run_dir(resolve_path(run_dir))
