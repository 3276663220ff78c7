"""The one registry of what a report holds: every figure and section, in report order.

Each item has a name, a test of whether it applies to a loaded run (decided from its record and the
files and records it holds) and a builder. `write_report` and 06_figures iterate it; a new figure or
section is added to ITEMS here (an explicit list: importing a module registers nothing).
"""
from __future__ import annotations

from fastiov_lib.analysis.stats import Run
from fastiov_lib.report import pod_figures, run_sections, stage_figures, vsriov_report
from fastiov_lib.report.section import ReportItem, holds
from fastiov_lib.run.rundir import VSRIOV_FILE


def stage_records_apply(run: Run) -> bool:
    """The instrumented containerd's CNI_* stage records, joined to this run's pods."""
    return holds(run, "stages.csv") and not stage_figures.pod_stages(run.path).empty


def vsriov_applies(run: Run) -> bool:
    """The virtual SR-IOV host's guest records."""
    return holds(run, VSRIOV_FILE)


ITEMS: list[ReportItem] = [
    *run_sections.HEAD,
    *pod_figures.ITEMS,
    ReportItem("stage_records", stage_records_apply, section=lambda run: stage_figures.report_section(run.path)),
    ReportItem("vsriov", vsriov_applies, section=lambda run: vsriov_report.report_section(run.path)),
    *run_sections.TAIL,
]


def items(run: Run) -> list[ReportItem]:
    """The items that apply to this run, in report order."""
    return [item for item in ITEMS if item.applies(run)]


def item(name: str) -> ReportItem:
    """One item by name; KeyError naming the known ones."""
    for candidate in ITEMS:
        if candidate.name == name:
            return candidate
    raise KeyError(f"no report item {name!r}; known: {', '.join(i.name for i in ITEMS)}")
