"""What the report is made of: report items (a figure or a section), each with a test of whether it applies to a run."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from matplotlib.figure import Figure

from fastiov_lib.analysis.stats import Run


@dataclass
class Section:
    """A part of report.md: its markdown and the figures it shows (saved as figures/<name>.png and .pdf;
    a figure the markdown does not link is shown after it)."""

    markdown: str
    figures: dict[str, Figure] = field(default_factory=dict)


@dataclass(frozen=True)
class ReportItem:
    """One figure or section of the report: its name, whether it applies to a loaded run, and its builder.

    A figure item builds `figure(run, width_in)`; a section item builds `section(run)`."""

    name: str
    applies: Callable[[Run], bool]
    figure: Callable[[Run, float], Figure] | None = None
    section: Callable[[Run], Section] | None = None

    def __post_init__(self) -> None:
        if (self.figure is None) == (self.section is None):
            raise ValueError(f"report item {self.name!r}: give exactly one of figure= or section=")


def holds(run: Run, name: str) -> bool:
    """Whether the run directory holds a file (or folder) of this name."""
    return (Path(run.path) / name).exists()


def has_pods(run: Run) -> bool:
    """Whether the run recorded any pod start (the virtual SR-IOV host records none)."""
    return not run.pods.empty
