"""The sections every report has: the run summary, the startup tables, the claims, the provenance."""
from __future__ import annotations

import json

from fastiov_lib.analysis import stats as analysis
from fastiov_lib.report import claims
from fastiov_lib.report.md_table import md_table
from fastiov_lib.report.pod_figures import comparison_for, startup_pods
from fastiov_lib.report.section import ReportItem, Section, has_pods
from fastiov_lib.run.rounds import read_rounds, rounds_frame

PROVENANCE_KEYS = ("run_id", "testbed_name", "testbed_kind", "baseline_variant", "comparison", "profile_name",
                   "provenance", "imported_from", "start_time", "end_time", "git", "tools", "host")


def summary_section(run: analysis.Run) -> Section:
    """Title, caption, the run summary, and warnings (busy host, skipped lines, no pods)."""
    parts = [
        f"# Run report: {run.run_id}\n",
        f"{run.caption}\n",
        "## Run summary\n",
        md_table(analysis.run_summary(run).T.reset_index().set_axis(["field", "value"], axis=1)),
    ]
    warn = analysis.host_busy_warning(run.info)
    if warn:
        parts.append(f"\n> Warning: {warn}\n")
    if run.report.skipped:
        parts.append(f"\n{len(run.report.skipped)} line(s) of pods.jsonl were skipped; first: "
                     f"line {run.report.skipped[0][1]}: {run.report.skipped[0][2]}\n")
    if run.pods.empty:
        parts.append(f"\nNo pods in this run (testbed kind {run.testbed_kind}): "
                     "startup tables and pod figures are left out.\n")
    return Section("\n".join(part.strip("\n") + "\n" for part in parts))


def startup_section(run: analysis.Run) -> Section:
    """Startup per group, growth with concurrency, each variant against the baseline, the breakdown."""
    bd, source = analysis.breakdown(run)
    parts = [
        "\n## Startup latency per group (ms from the release, ok pods; the table of 04-06)\n",
        md_table(analysis.group_summary(run.pods)),
        "\n## Growth with concurrency (startup experiment)\n",
        "Least-squares slope of the median startup against the number of concurrent pods, with a 95% "
        "interval from rounds resampled within each level (`rounds`: the fewest of a level).\n",
        md_table(analysis.growth_slope(startup_pods(run)), ".2f"),
        f"\n## Each variant vs {run.baseline}\n",
        "The effect with its 95% interval from resampled rounds, the pods (`n_`) and rounds (`rounds_`) of "
        "each side; `note` says why an interval is missing.\n",
        md_table(comparison_for(run), ".3f"),
        f"\n## Breakdown ({source})\n",
        "Each record joined to its pod, a stage summed per pod, then the mean (and, from 100 pods, the p99) "
        "over the pods of a group, against the same pods' startup. `nested` stages run inside `parent` and "
        "are never stacked: the shares of the stages that are not nested add up to at most 100% of the mean.\n",
        md_table(bd.drop(columns=["order"]).assign(share_of_mean=bd["share_of_mean"] * 100,
                                                    share_of_p99=bd["share_of_p99"] * 100)
                 .rename(columns={"share_of_mean": "% of mean", "share_of_p99": "% of p99"})),
    ]
    return Section("\n".join(part.strip("\n") + "\n" for part in parts))


def claims_section(run: analysis.Run) -> Section:
    """The claims (decided on intervals), the harness checks (exact counts), and every recorded
    change of a threshold or removal of a claim, with its reason."""
    table = claims.evaluate_claims(run.path)
    cols = ["claim", "readme", "statement", "expected", "measured", "verdict", "why", "figure"]
    is_check = table["role"] == "check"
    parts = [
        "\n## Claims\n",
        "Every claim of the paper and the artifact: the ones this run's testbed cannot check say which "
        "testbed they need; `readme` is the README's claim (C1-C11), `figure` the figure that shows it. "
        "`measured` is the estimate with its 95% interval from resampled rounds (pods of one round share "
        "its fate) and the rounds and samples behind it. A claim *holds* when its whole interval lies on "
        "the claimed side of the threshold, *fails* when its whole interval lies on the other side, and is "
        "*inconclusive* when the interval contains the threshold or there are too few rounds for one "
        "(`why` says what would decide it).\n",
        md_table(table.loc[~is_check, cols]),
        "\n## Harness checks\n",
        "Exact counts of what the run recorded: the artifact worked as it should (not claims about the "
        "system).\n",
        md_table(table.loc[is_check, ["claim", "statement", "expected", "measured", "verdict"]]),
        "\n## Threshold changes and removed claims\n",
        "Thresholds come from the paper's numbers or the mechanism (each claim's `threshold_from` in "
        "fastiov_lib/data/claims/); any change made after seeing data is listed here with its reason.\n",
        md_table(claims.threshold_history()),
    ]
    return Section("\n".join(part.strip("\n") + "\n" for part in parts))


def rounds_section(run: analysis.Run) -> Section:
    """The rounds in the order they ran (rounds.jsonl): variant, level, repeat, load per core before
    and after, kernel; variants interleave so that the host's drift falls on every variant alike."""
    records, _ = read_rounds(run.path)
    df = rounds_frame(records).sort_values(["wall_start_ns"])
    df["seconds"] = (df["wall_end_ns"] - df["wall_start_ns"]) / 1e9
    cols = ["order_index", "experiment", "variant", "concurrency", "repeat", "pods", "seconds",
            "load_per_core_before", "load_per_core_after", "kernel_release"]
    seeds = sorted({r.sweep_seed for r in records if r.sweep_seed is not None})
    text = ("\n## Rounds in the order they ran\n\n"
            "Each repeat runs every variant and level once, in an order shuffled per repeat (seeds "
            f"{', '.join(map(str, seeds)) or 'none'}; the planned order is in run.json, `round_orders`). Load "
            "per core is the 1-minute load average over the cores, just before the round and just after it.\n\n"
            + md_table(df[cols], ".2f"))
    return Section(text)


def has_rounds(run: analysis.Run) -> bool:
    """The run recorded its rounds (rounds.jsonl: runs made since the rounds were interleaved)."""
    return bool(read_rounds(run.path)[0])


def provenance_section(run: analysis.Run) -> Section:
    """How the run was made: the run record's main keys, as JSON."""
    record = run.record.model_dump(mode="json")
    prov = {k: record.get(k) for k in PROVENANCE_KEYS if record.get(k) is not None}
    return Section("\n## Provenance (run.json)\n\n```json\n" + json.dumps(prov, indent=2, default=str) + "\n```\n")


def always(run: analysis.Run) -> bool:
    """Applies to every run."""
    return True


HEAD = [
    ReportItem("summary", always, section=summary_section),
    ReportItem("startup_tables", has_pods, section=startup_section),
    ReportItem("claims", always, section=claims_section),
    ReportItem("rounds", has_rounds, section=rounds_section),
]
TAIL = [ReportItem("provenance", always, section=provenance_section)]
