"""What every notebook does first: load the testbed and profile, open (or create) the run directory."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from .config import Profile, Testbed, load_profile, load_testbed, resolve_path
from .results import RunDir, create_run_dir, open_run_dir


@dataclass(frozen=True)
class Session:
    """The testbed, profile and run directory a notebook works with (passed to every call)."""

    testbed: Testbed
    profile: Profile
    run: RunDir

    def summary(self) -> pd.DataFrame:
        """A one-row table for the top of a notebook: which testbed, profile and run."""
        return pd.DataFrame(
            [{
                "testbed": self.testbed.name,
                "kind": self.testbed.kind,
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
