"""The sections every report has: the run summary, the startup tables, the claims, the provenance."""
from __future__ import annotations

import json

from fastiov_lib.analysis import stats as analysis
from fastiov_lib.report import claims
from fastiov_lib.report.md_table import md_table
from fastiov_lib.report.pod_figures import comparison_for, startup_pods
from fastiov_lib.report.section import ReportItem, Section, has_pods

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
        "bootstrap interval.\n",
        md_table(analysis.growth_slope(startup_pods(run)), ".2f"),
        f"\n## Each variant vs {run.baseline}\n",
        md_table(comparison_for(run), ".3f"),
        f"\n## Breakdown ({source})\n",
        md_table(bd.drop(columns=["order"]).assign(share_of_mean=bd["share_of_mean"] * 100,
                                                    share_of_p99=bd["share_of_p99"] * 100)
                 .rename(columns={"share_of_mean": "% of mean", "share_of_p99": "% of p99"})),
    ]
    return Section("\n".join(part.strip("\n") + "\n" for part in parts))


def claims_section(run: analysis.Run) -> Section:
    """Every claim, with its verdict on this run (or the testbed it needs)."""
    table = claims.evaluate_claims(run.path)
    parts = [
        "\n## Claims\n",
        "Every claim of the paper and the artifact: the ones this run's testbed cannot check say which "
        "testbed they need; `readme` is the README's claim (C1-C11), `figure` the figure that shows it.\n",
        md_table(table[["claim", "readme", "statement", "expected", "measured", "verdict", "figure"]]),
    ]
    return Section("\n".join(part.strip("\n") + "\n" for part in parts))


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
]
TAIL = [ReportItem("provenance", always, section=provenance_section)]
