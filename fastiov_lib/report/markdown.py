"""From a run directory to figures/ (PNG + PDF) and report.md: summary, provenance, claims, figures."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable

import pandas as pd
from matplotlib.figure import Figure

from fastiov_lib.analysis import stats as analysis
from fastiov_lib.report import claims
from fastiov_lib.testbeds import backend_class
from fastiov_lib.report import figures as plots
from fastiov_lib.analysis.instrumentation import build_stages_csv


def comparison_for(run: analysis.Run) -> pd.DataFrame:
    """The ablation comparison this testbed kind calls for: on a FastIOV host each variant's mean
    startup reduction vs vanilla; locally the median startup each network mode adds over `none`."""
    pods = run.pods
    exp = "ablation" if (pods["experiment"] == "ablation").any() else None
    stat, kind = backend_class(run.testbed_kind).comparison
    return analysis.compare_variants(pods, run.baseline, stat=stat, kind=kind, experiment=exp)


def startup_pods(run: analysis.Run) -> pd.DataFrame:
    """Pods of the startup experiment (all pods when the run has none tagged so)."""
    p = run.pods
    return p[p["experiment"] == "startup"] if (p["experiment"] == "startup").any() else p


def _breakdown_figure(run: analysis.Run, width: float = plots.FULL_WIDTH) -> Figure:
    bd, source = analysis.breakdown(run)
    return plots.stage_breakdown(bd, run.caption, source=source, width=width)


# The report's figures, by file name, each built from a loaded run at a width in inches
# (plots.FULL_WIDTH for the report, plots.COLUMN_WIDTH for one column of a paper).
FIGURES: dict[str, Callable[[analysis.Run, float], Figure]] = {
    "startup_vs_concurrency": lambda run, w: plots.startup_vs_concurrency(startup_pods(run), run.caption,
                                                                          experiment=None, width=w),
    "startup_cdf": lambda run, w: plots.cdf_per_concurrency(startup_pods(run), run.caption, width=w),
    "stage_breakdown": _breakdown_figure,
    "ablation": lambda run, w: plots.ablation_bars(comparison_for(run), run.caption, width=w),
    "app_completion": lambda run, w: plots.app_completion(run.pods, run.caption, width=w),
}


def figure(run: analysis.Run, name: str, width: float = plots.FULL_WIDTH) -> Figure:
    """One of the report's figures by name (see FIGURES), e.g. for 04_bench and 05_ablation."""
    if name not in FIGURES:
        raise KeyError(f"no figure {name!r}; known: {', '.join(FIGURES)}")
    return FIGURES[name](run, width)


def build_figures(run: analysis.Run, width: float = plots.FULL_WIDTH) -> dict[str, Figure]:
    """Every figure of a run, by file name (the same set report.md and 06_figures show)."""
    return {name: build(run, width) for name, build in FIGURES.items()}


def experiment_summary(run: analysis.Run, experiment: str) -> pd.DataFrame:
    """Summary table (pods, failures, mean/p50/p90/p99/max startup in ms) of one experiment of a run."""
    pods = run.pods[run.pods["experiment"] == experiment]
    value = "app_completion_ms" if experiment == "app" else "startup_ms"
    return analysis.summarise(pods, value=value, by=("variant", "concurrency"))


def _md_table(df: pd.DataFrame, floatfmt: str = ".1f") -> str:
    if df.empty:
        return "_(none)_\n"
    cols = list(df.columns)

    def cell(v: Any) -> str:
        if v is None:
            return ""
        if isinstance(v, float):
            return "" if pd.isna(v) else format(v, floatfmt)
        return str(v).replace("|", "\\|").replace("\n", " ")
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def claims_sections(table: pd.DataFrame) -> list[str]:
    """The claims (decided on intervals), the harness checks (exact counts), and every recorded
    change of a threshold or removal of a claim, with its reason."""
    cols = ["claim", "readme", "statement", "expected", "measured", "verdict", "why", "figure"]
    is_check = table["role"] == "check"
    history = claims.threshold_history()
    return [
        "\n## Claims\n",
        "Every claim of the paper and the artifact: the ones this run's testbed cannot check say which "
        "testbed they need; `readme` is the README's claim (C1-C11), `figure` the figure that shows it. "
        "`measured` is the estimate with its 95% interval from resampled rounds (pods of one round share "
        "its fate) and the rounds and samples behind it. A claim *holds* when its whole interval lies on "
        "the claimed side of the threshold, *fails* when its whole interval lies on the other side, and is "
        "*inconclusive* when the interval contains the threshold or there are too few rounds for one "
        "(`why` says what would decide it).\n",
        _md_table(table.loc[~is_check, cols]),
        "\n## Harness checks\n",
        "Exact counts of what the run recorded: the artifact worked as it should (not claims about the "
        "system).\n",
        _md_table(table.loc[is_check, ["claim", "statement", "expected", "measured", "verdict"]]),
        "\n## Threshold changes and removed claims\n",
        "Thresholds come from the paper's numbers or the mechanism (each claim's `threshold_from` in "
        "fastiov_lib/data/claims/); any change made after seeing data is listed here with its reason.\n",
        _md_table(history),
    ]


def rounds_section(run_dir: Path) -> list[str]:
    """The rounds in the order they ran (rounds.jsonl): variant, level, repeat, load per core before
    and after, kernel; variants interleave so that the host's drift falls on every variant alike."""
    from fastiov_lib.run.rounds import read_rounds, rounds_frame

    records, _ = read_rounds(run_dir)
    if not records:
        return []
    df = rounds_frame(records).sort_values(["wall_start_ns"])
    df["seconds"] = (df["wall_end_ns"] - df["wall_start_ns"]) / 1e9
    cols = ["order_index", "experiment", "variant", "concurrency", "repeat", "pods", "seconds",
            "load_per_core_before", "load_per_core_after", "kernel_release"]
    seeds = sorted({r.sweep_seed for r in records if r.sweep_seed is not None})
    return ["\n## Rounds in the order they ran\n",
            "Each repeat runs every variant and level once, in an order shuffled per repeat (seeds "
            f"{', '.join(map(str, seeds)) or 'none'}; the planned order is in run.json, `round_orders`). Load "
            "per core is the 1-minute load average over the cores, just before the round and just after it.\n",
            _md_table(df[cols], ".2f")]


def optional_sections(run_dir: Path) -> list[tuple[str, list[Path]]]:
    """Sections other modules add: the virtual SR-IOV analysis when the run has vsriov.jsonl, the
    instrumented containerd's stage breakdown when stages.csv has its CNI_* records."""
    out: list[tuple[str, list[Path]]] = []
    if (run_dir / "stages.csv").exists():
        from fastiov_lib.report import stage_figures

        if not stage_figures.pod_stages(run_dir).empty:
            out.append(stage_figures.report_section(run_dir))
    if (run_dir / "vsriov.jsonl").exists():
        from fastiov_lib.analysis import vsriov  # imported here: it imports the claims module

        md, figs = vsriov.report_section(run_dir)
        out.append((md, [Path(f) for f in figs]))
    return out


def write_report(run_dir: str | Path) -> Path:
    """Write figures/ (PNG + PDF) and report.md into the run directory; returns report.md's path.

    Builds stages.csv first when the run has instrumentation logs but no stages.csv yet.
    """
    run_dir = Path(run_dir)
    if not (run_dir / "stages.csv").exists() and (run_dir / "logs").is_dir():
        build_stages_csv(run_dir)
    run = analysis.load_run(run_dir)
    figures_dir = run_dir / "figures"
    written: dict[str, list[Path]] = {}
    has_pods = not run.pods.empty
    # a run without pods (the virtual SR-IOV host) gets no empty pod figures or tables
    for name, fig in (build_figures(run).items() if has_pods else ()):
        written[name] = plots.save_figure(fig, figures_dir, name)
    table = claims.evaluate_claims(run_dir)
    summary = analysis.group_summary(run.pods)
    bd, source = analysis.breakdown(run)
    info = run.info
    prov = {k: info.get(k) for k in ("run_id", "testbed_name", "testbed_kind", "profile_name", "provenance",
                                      "imported_from", "start_time", "end_time", "git", "tools", "host")
            if info.get(k) is not None}
    parts = [
        f"# Run report: {run.run_id}\n",
        f"{run.caption}\n",
        "## Run summary\n",
        _md_table(analysis.run_summary(run).T.reset_index().set_axis(["field", "value"], axis=1)),
    ]
    warn = analysis.host_busy_warning(info)
    if warn:
        parts.append(f"\n> Warning: {warn}\n")
    if run.report.skipped:
        parts.append(f"\n{len(run.report.skipped)} line(s) of pods.jsonl were skipped; first: "
                     f"line {run.report.skipped[0][1]}: {run.report.skipped[0][2]}\n")
    if not has_pods:
        parts.append(f"\nNo pods in this run (testbed kind {info.get('testbed_kind', 'unknown')}): "
                     "startup tables and pod figures are left out.\n")
    parts += [] if not has_pods else [
        "\n## Startup latency per group (ms from the release, ok pods; the table of 04-06)\n",
        _md_table(summary),
        "\n## Growth with concurrency (startup experiment)\n",
        "Least-squares slope of the median startup against the number of concurrent pods, with a 95% "
        "interval from rounds resampled within each level (`rounds`: the fewest of a level).\n",
        _md_table(analysis.growth_slope(startup_pods(run)), ".2f"),
        f"\n## Each variant vs {run.baseline}\n",
        "The effect with its 95% interval from resampled rounds, the pods (`n_`) and rounds (`rounds_`) of "
        "each side; `note` says why an interval is missing.\n",
        _md_table(comparison_for(run), ".3f"),
        f"\n## Breakdown ({source})\n",
        "Each record joined to its pod, a stage summed per pod, then the mean (and, from 100 pods, the p99) "
        "over the pods of a group, against the same pods' startup. `nested` stages run inside `parent` and "
        "are never stacked: the shares of the stages that are not nested add up to at most 100% of the mean.\n",
        _md_table(bd.drop(columns=["order"]).assign(share_of_mean=bd["share_of_mean"] * 100,
                                                     share_of_p99=bd["share_of_p99"] * 100)
                  .rename(columns={"share_of_mean": "% of mean", "share_of_p99": "% of p99"})),
    ]
    parts += claims_sections(table)
    parts += rounds_section(run_dir)
    parts += ["\n## Figures\n"]
    for name, paths in written.items():
        png, pdf = paths
        parts.append(f"\n### {name.replace('_', ' ')}\n\n![{name}](figures/{png.name})\n\n[PDF](figures/{pdf.name})\n")
    for md, figs in optional_sections(run_dir):
        parts.append("\n" + md.strip() + "\n")
        for f in figs:  # link figures the section's markdown does not show itself
            rel = os.path.relpath(f, run_dir)
            if f.suffix == ".png" and f.name not in md:
                parts.append(f"\n![{f.stem}]({rel})\n")
    parts += ["\n## Provenance (run.json)\n", "```json\n" + json.dumps(prov, indent=2, default=str) + "\n```\n"]
    out = run_dir / "report.md"
    tmp = out.with_suffix(".md.tmp")
    tmp.write_text("\n".join(part.strip("\n") + "\n" for part in parts))
    os.replace(tmp, out)
    return out

