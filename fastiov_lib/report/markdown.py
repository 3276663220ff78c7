"""From a run directory to figures/ (PNG + PDF) and report.md: every item of the report registry that applies."""
from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from fastiov_lib.analysis import stats as analysis
from fastiov_lib.analysis.instrumentation import build_stages_csv
from fastiov_lib.report import figures as plots
from fastiov_lib.report import registry
from fastiov_lib.report.pod_figures import comparison_for, startup_pods  # noqa: F401  (what 04-06 call as report.*)
from fastiov_lib.report.section import Section

FIGURES = [i.name for i in registry.ITEMS if i.figure is not None]  # the figures' file names, in report order


def figure(run: analysis.Run, name: str, width: float = plots.FULL_WIDTH) -> Figure:
    """One of the report's figures by name, e.g. for 04_bench and 05_ablation."""
    if name not in FIGURES:
        raise KeyError(f"no figure {name!r}; known: {', '.join(FIGURES)}")
    return registry.item(name).figure(run, width)


def build_figures(run: analysis.Run, width: float = plots.FULL_WIDTH) -> dict[str, Figure]:
    """The pod figures of a run, by file name (the set 06_figures shows; each says so when it has no data)."""
    return {i.name: i.figure(run, width) for i in registry.ITEMS if i.figure is not None}


def experiment_summary(run: analysis.Run, experiment: str) -> pd.DataFrame:
    """Summary table (pods, failures, mean/p50/p90/p99/max startup in ms) of one experiment of a run."""
    pods = run.pods[run.pods["experiment"] == experiment]
    value = "app_completion_ms" if experiment == "app" else "startup_ms"
    return analysis.summarise(pods, value=value, by=("variant", "concurrency"))


def write_section(section: Section, run_dir: Path) -> tuple[str, list[Path]]:
    """Save a section's figures under <run>/figures/; its markdown with a link to each figure it does not show."""
    parts = [section.markdown.strip() + "\n"]
    paths: list[Path] = []
    for name, fig in section.figures.items():
        png, pdf = plots.save_figure(fig, Path(run_dir) / "figures", name)
        paths += [png, pdf]
        if png.name not in section.markdown:
            parts.append(f"\n![{name}]({os.path.relpath(png, run_dir)})\n")
    return "\n".join(parts), paths


def write_report(run_dir: str | Path) -> Path:
    """Write figures/ (PNG + PDF) and report.md into the run directory; returns report.md's path.

    Builds stages.csv first when the run has instrumentation logs but no stages.csv yet.
    """
    run_dir = Path(run_dir)
    if not (run_dir / "stages.csv").exists() and (run_dir / "logs").is_dir():
        build_stages_csv(run_dir)
    run = analysis.load_run(run_dir)
    figures_dir = run_dir / "figures"
    parts: list[str] = []
    figures_started = False
    for item in registry.items(run):
        if item.figure is not None:
            if not figures_started:
                parts.append("\n## Figures\n")
                figures_started = True
            png, pdf = plots.save_figure(item.figure(run, plots.FULL_WIDTH), figures_dir, item.name)
            parts.append(f"\n### {item.name.replace('_', ' ')}\n\n![{item.name}](figures/{png.name})\n\n"
                         f"[PDF](figures/{pdf.name})\n")
        else:
            markdown, _paths = write_section(item.section(run), run_dir)
            parts.append("\n" + markdown.strip() + "\n")
    out = run_dir / "report.md"
    tmp = out.with_suffix(".md.tmp")
    tmp.write_text("\n".join(part.strip("\n") + "\n" for part in parts))
    os.replace(tmp, out)
    return out
