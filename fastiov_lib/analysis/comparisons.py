"""Comparisons between variants and growth with concurrency, with intervals from resampled rounds.

Every row says how many pods and rounds it rests on; an interval needs MIN_ROUNDS rounds per
group (analysis.intervals), and a statistic its minimum sample count (analysis.samples): where
either is short, the interval is left empty and `note` says why.
"""
from __future__ import annotations

import math
from typing import Literal, Sequence

import numpy as np
import pandas as pd

from fastiov_lib.analysis.intervals import (Estimate, effect_estimate, effect_over_levels, round_arrays,
                                            round_bootstrap, statistic)

Kind = Literal["reduction", "increase", "difference"]

COMPARE_COLUMNS = ["concurrency", "baseline", "variant", "stat", "kind", "baseline_ms", "variant_ms",
                   "value", "ci_low", "ci_high", "n_baseline", "n_variant", "rounds_baseline", "rounds_variant",
                   "note"]
GROWTH_COLUMNS = ["variant", "stat", "levels", "rounds", "slope_ms_per_pod", "ci_low", "ci_high", "note"]


def ok_values(pods: pd.DataFrame, value: str = "startup_ms") -> pd.DataFrame:
    """Only pods with status ok and a measured `value`."""
    return pods[(pods["status"] == "ok") & pods[value].notna()]


def _select(pods: pd.DataFrame, experiment: str | None, value: str) -> pd.DataFrame:
    return ok_values(pods if experiment is None else pods[pods["experiment"] == experiment], value)


def compare_variants(pods: pd.DataFrame, baseline: str, variants: Sequence[str] | None = None,
                     stat: str = "mean", kind: Kind = "reduction", value: str = "startup_ms",
                     experiment: str | None = None, n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Each variant vs `baseline` per concurrency level (both measured there): the effect on `stat`
    with an interval from resampled rounds, and the pods and rounds of each side."""
    df = _select(pods, experiment, value)
    variants = [v for v in (variants or sorted(df["variant"].unique())) if v != baseline]
    rows = []
    for conc in sorted(df["concurrency"].unique()):
        at = df[df["concurrency"] == conc]
        b = round_arrays(at[at["variant"] == baseline], value)
        if not b:
            continue
        for v in variants:
            x = round_arrays(at[at["variant"] == v], value)
            if not x:
                continue
            est = effect_estimate(b, x, stat, kind, n_boot=n_boot, seed=seed)
            rows.append({"concurrency": int(conc), "baseline": baseline, "variant": v, "stat": stat, "kind": kind,
                         "baseline_ms": statistic(np.concatenate(b), stat),
                         "variant_ms": statistic(np.concatenate(x), stat), "value": est.value,
                         "ci_low": est.low, "ci_high": est.high, "n_baseline": int(sum(map(len, b))),
                         "n_variant": int(sum(map(len, x))), "rounds_baseline": len(b), "rounds_variant": len(x),
                         "note": est.note})
    return pd.DataFrame(rows, columns=COMPARE_COLUMNS)


def variant_effect(pods: pd.DataFrame, variant: str, baseline: str, stat: str = "mean", kind: Kind = "reduction",
                   experiment: str | None = None, concurrency: int | str | None = None, aggregate: str = "mean",
                   value: str = "startup_ms", n_boot: int = 1000, seed: int = 0) -> Estimate | None:
    """One effect as an Estimate: at one level (an int, or "max": the highest level both were
    measured at) or aggregated over every common level (mean, min, max) with one joint interval.
    None when the two were never measured at a common level."""
    df = _select(pods, experiment, value)
    levels = sorted(set(df.loc[df["variant"] == variant, "concurrency"]) &
                    set(df.loc[df["variant"] == baseline, "concurrency"]))
    if concurrency == "max":
        levels = levels[-1:]
    elif concurrency is not None:
        levels = [c for c in levels if c == int(concurrency)]
    if not levels:
        return None
    per = {int(c): (round_arrays(df[(df["concurrency"] == c) & (df["variant"] == baseline)], value),
                    round_arrays(df[(df["concurrency"] == c) & (df["variant"] == variant)], value)) for c in levels}
    if len(per) == 1:
        (b, x), = per.values()
        return effect_estimate(b, x, stat, kind, n_boot=n_boot, seed=seed)
    return effect_over_levels(per, stat, kind, aggregate, n_boot=n_boot, seed=seed)


def _slope(x: np.ndarray, y: np.ndarray) -> float:
    xc = x - x.mean()
    return float(xc @ (y - y.mean()) / (xc @ xc))


def growth_estimate(g: pd.DataFrame, value: str = "startup_ms", stat: str = "p50", n_boot: int = 1000,
                    seed: int = 0) -> tuple[Estimate, int]:
    """Least-squares slope of the per-level statistic against the level, rounds resampled within
    each level; returns the estimate and the number of levels."""
    levels = sorted(int(c) for c in g["concurrency"].unique())
    if len(levels) < 2:
        return Estimate(math.nan, note=f"{len(levels)} concurrency level (a slope needs 2)"), len(levels)
    groups = {str(c): round_arrays(g[g["concurrency"] == c], value) for c in levels}
    x = np.asarray(levels, dtype=float)
    est = round_bootstrap(groups, lambda p: _slope(x, np.array([statistic(p[str(c)], stat) for c in levels])),
                          n_boot=n_boot, seed=seed)
    return est, len(levels)


def growth_slope(pods: pd.DataFrame, value: str = "startup_ms", stat: str = "p50",
                 experiment: str | None = None, n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """How `value` grows with concurrency, per variant: least-squares slope (ms per extra pod) of the
    per-level statistic against the level, with an interval from resampled rounds (within each
    level). NaN with fewer than two levels."""
    df = _select(pods, experiment, value)
    rows = []
    for variant, g in df.groupby("variant", sort=True):
        est, levels = growth_estimate(g, value, stat, n_boot, seed)
        rows.append({"variant": variant, "stat": stat, "levels": levels, "rounds": est.rounds,
                     "slope_ms_per_pod": est.value, "ci_low": est.low, "ci_high": est.high, "note": est.note})
    return pd.DataFrame(rows, columns=GROWTH_COLUMNS)
