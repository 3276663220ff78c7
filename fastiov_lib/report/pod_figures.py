"""The pod-startup figures of a run (04-06 and report.md): startup vs concurrency, CDF, breakdown, ablation, app."""
from __future__ import annotations

import pandas as pd
from matplotlib.figure import Figure

from fastiov_lib.analysis import stats as analysis
from fastiov_lib.report import figures as plots
from fastiov_lib.report.section import ReportItem, has_pods


def comparison_for(run: analysis.Run) -> pd.DataFrame:
    """The ablation comparison the run recorded for its testbed: on a FastIOV host each variant's mean
    startup reduction vs vanilla; locally the median startup each network mode adds over `none`."""
    pods = run.pods
    exp = "ablation" if (pods["experiment"] == "ablation").any() else None
    return analysis.compare_variants(pods, run.baseline, stat=run.comparison.statistic, kind=run.comparison.effect,
                                     experiment=exp)


def startup_pods(run: analysis.Run) -> pd.DataFrame:
    """Pods of the startup experiment (all pods when the run has none tagged so)."""
    p = run.pods
    return p[p["experiment"] == "startup"] if (p["experiment"] == "startup").any() else p


def breakdown_figure(run: analysis.Run, width: float = plots.FULL_WIDTH) -> Figure:
    """The stage breakdown: component stage records where the run has them, else the harness's phases."""
    bd, source = analysis.breakdown(run)
    return plots.stage_breakdown(bd, run.caption, source=source, width=width)


def startup_figure(run: analysis.Run, width: float = plots.FULL_WIDTH) -> Figure:
    """Startup latency vs concurrency of the startup experiment."""
    return plots.startup_vs_concurrency(startup_pods(run), run.caption, experiment=None, width=width)


def cdf_figure(run: analysis.Run, width: float = plots.FULL_WIDTH) -> Figure:
    """The startup latency's CDF per concurrency level."""
    return plots.cdf_per_concurrency(startup_pods(run), run.caption, width=width)


def ablation_figure(run: analysis.Run, width: float = plots.FULL_WIDTH) -> Figure:
    """Each variant against the run's baseline (comparison_for)."""
    return plots.ablation_bars(comparison_for(run), run.caption, width=width)


def app_figure(run: analysis.Run, width: float = plots.FULL_WIDTH) -> Figure:
    """App completion time per variant and concurrency."""
    return plots.app_completion(run.pods, run.caption, width=width)


# The report's pod figures, by file name, each built from a loaded run at a width in inches
# (plots.FULL_WIDTH for the report, plots.COLUMN_WIDTH for one column of a paper).
ITEMS = [
    ReportItem("startup_vs_concurrency", has_pods, figure=startup_figure),
    ReportItem("startup_cdf", has_pods, figure=cdf_figure),
    ReportItem("stage_breakdown", has_pods, figure=breakdown_figure),
    ReportItem("ablation", has_pods, figure=ablation_figure),
    ReportItem("app_completion", has_pods, figure=app_figure),
]
