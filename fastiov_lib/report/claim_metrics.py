"""The metrics of the local and the FastIOV-host claims, computed from a run directory.

Counts and fractions of everything a run recorded are exact values (harness checks); every
statistic of sampled pods is an Estimate with an interval from resampled rounds
(analysis.intervals), so that a verdict can say whether the evidence decides the claim.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from fastiov_lib.analysis import stats as analysis
from fastiov_lib.analysis.comparisons import variant_effect
from fastiov_lib.analysis.intervals import Estimate, effect_over_levels, exact, round_arrays, round_bootstrap, statistic
from fastiov_lib.analysis.pod_breakdown import join_records, pod_stage_durations, sandbox_pid_map, stage_share_estimate
from fastiov_lib.analysis.samples import enough, min_samples
from fastiov_lib.report.claims import run_for
from fastiov_lib.run.rounds import read_rounds, sandbox_pids


def _select(pods: pd.DataFrame, experiment: str | None) -> pd.DataFrame:
    return pods if experiment is None else pods[pods["experiment"] == experiment]


def complete_rounds_fraction(run_dir: Path, experiment: str | None = None) -> Estimate | None:
    """Fraction of expected rounds in which every started pod has a record (see round_completeness)."""
    run = run_for(run_dir)
    pods = _select(run.pods, experiment)
    if pods.empty:
        return None
    rc = analysis.round_completeness(pods, analysis.expected_levels_from_profile(run.info))
    return exact(float(rc["complete"].mean()), len(rc))


def ok_fraction(run_dir: Path, experiment: str | None = None) -> Estimate | None:
    """Fraction of recorded pods whose status is ok."""
    pods = _select(run_for(run_dir).pods, experiment)
    return None if pods.empty else exact(float((pods["status"] == "ok").mean()), len(pods))


def effect(run_dir: Path, variant: str, baseline: str, stat: str = "mean", kind: str = "reduction",
           experiment: str | None = None, concurrency: int | str | None = None,
           aggregate: str = "mean", value: str = "startup_ms") -> Estimate | None:
    """`variant` vs `baseline` (reduction/increase as a fraction, difference in ms) on a statistic.

    At one concurrency level (an int, or "max" for the highest level both were measured at), or
    aggregated over every common level with `aggregate` = mean, min or max (one joint interval).
    None if the two were never measured at a common level."""
    return variant_effect(run_for(run_dir).pods, variant, baseline, stat=stat, kind=kind, experiment=experiment,
                          concurrency=concurrency, aggregate=aggregate, value=value)


def effect_vs_each(run_dir: Path, variant: str, baselines: list[str], stat: str = "p50", kind: str = "difference",
                   experiment: str | None = None, concurrency: int | str | None = "max") -> Estimate | None:
    """The smallest of `variant`'s effects over each of `baselines`, with the interval of that minimum
    (from the smallest lower and the smallest upper end): above 0 means above every one of them, an
    interval wholly at or below 0 that one of them is not exceeded. None when any was not measured."""
    ests = [effect(run_dir, variant, b, stat=stat, kind=kind, experiment=experiment, concurrency=concurrency)
            for b in baselines]
    if not ests or any(e is None or not e.measured for e in ests):
        return None
    value = min(e.value for e in ests)
    rounds, samples = min(e.rounds for e in ests), max(e.samples for e in ests)
    if not all(e.has_interval for e in ests):
        return Estimate(value, rounds=rounds, samples=samples, note=next(e.note for e in ests if not e.has_interval))
    return Estimate(value, min(e.low for e in ests), min(e.high for e in ests), rounds=rounds, samples=samples)


def overhead_reduction(run_dir: Path, variant: str = "fastiov", baseline: str = "vanilla",
                       reference: str = "no-network", stat: str = "mean",
                       experiment: str | None = None) -> Estimate | None:
    """How much of the baseline's overhead over `reference` the variant removes, averaged over the
    levels all three were measured at: 1 - (variant - reference) / (baseline - reference)."""
    pods = analysis.ok_values(_select(run_for(run_dir).pods, experiment))
    names = (variant, baseline, reference)
    groups: dict[str, list[np.ndarray]] = {}
    levels = []
    for conc, at in pods.groupby("concurrency"):
        per = {n: round_arrays(at[at["variant"] == n], "startup_ms") for n in names}
        if all(per.values()):
            levels.append(int(conc))
            groups.update({f"{n}@{conc}": r for n, r in per.items()})
    if not levels:
        return None

    def stat_of(p: dict[str, np.ndarray]) -> float:
        vals = []
        for c in levels:
            v, b, r = (statistic(p[f"{n}@{c}"], stat) for n in names)
            vals.append(1 - (v - r) / (b - r) if b - r > 0 else math.nan)
        return float(np.mean(vals))

    est = round_bootstrap(groups, stat_of)
    if not all(enough(len(np.concatenate(r)), stat) for r in groups.values()):
        return Estimate(est.value, rounds=est.rounds, samples=est.samples,
                        note=f"{stat} needs >= {min_samples(stat)} pods per group")
    return est


def _per_pod_stages(run_dir: Path) -> pd.DataFrame:
    run = run_for(run_dir)
    if "pod_stages" not in run.cache:
        rounds, _ = read_rounds(run.path)
        joined = join_records(run.stages, run.pods, sandbox_pid_map(run.path, sandbox_pids(rounds)))
        run.cache["pod_stages"] = pod_stage_durations(joined, run.pods)
    return run.cache["pod_stages"]


def stage_share(run_dir: Path, stage: str, variant: str = "vanilla", concurrency: int | str | None = "max",
                share: str = "share_of_mean", component: str | None = None) -> Estimate | None:
    """Share of one component stage (a stages.csv subject, summed per pod) in the startup of the same
    pods of a variant at a level: mean over mean (share_of_mean) or p99 over p99 (share_of_p99)."""
    if run_for(run_dir).stages is None:
        return None
    per = _per_pod_stages(run_dir)
    per = per[(per["variant"] == variant) & (per["stage"] == stage)]
    if per.empty:
        return None
    levels = sorted(per["concurrency"].unique())
    level = levels[-1] if concurrency in (None, "max") else int(concurrency)
    per = per[per["concurrency"] == level]
    return None if per.empty else stage_share_estimate(per, stage, share, component)


def app_completed_fraction(run_dir: Path) -> Estimate | None:
    """Fraction of app-experiment pods that ran their app to the end (status ok, exit recorded)."""
    pods = _select(run_for(run_dir).pods, "app")
    if pods.empty:
        return None
    done = (pods["status"] == "ok") & pods["app_completion_ms"].notna()
    return exact(float(done.mean()), len(pods))


def app_effect(run_dir: Path, variant: str = "fastiov", baseline: str = "vanilla", stat: str = "mean",
               aggregate: str = "min") -> Estimate | None:
    """Reduction of app completion time per app (over every level), aggregated over apps (min or max)."""
    pods = analysis.ok_values(_select(run_for(run_dir).pods, "app"), "app_completion_ms")
    per = {}
    for app, g in pods.groupby("app"):
        b = round_arrays(g[g["variant"] == baseline], "app_completion_ms")
        v = round_arrays(g[g["variant"] == variant], "app_completion_ms")
        if b and v:
            per[str(app)] = (b, v)
    if not per:
        return None
    return effect_over_levels(per, stat, "reduction", aggregate)


METRICS = {
    "complete_rounds_fraction": complete_rounds_fraction,
    "ok_fraction": ok_fraction,
    "effect": effect,
    "effect_vs_each": effect_vs_each,
    "overhead_reduction": overhead_reduction,
    "stage_share": stage_share,
    "app_completed_fraction": app_completed_fraction,
    "app_effect": app_effect,
}
