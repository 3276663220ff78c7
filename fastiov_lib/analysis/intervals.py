"""Estimates with intervals from resampled rounds (pods of one round share its fate).

Pods started together in one round are not independent samples: they queue behind the same
containerd, the same device-set lock and the same busy host, so a round's pods move together
(round medians of one mode at 20 pods on this machine: 840 / 760 / 1468 ms). An interval that
resamples pods treats 60 such pods as 60 independent samples and comes out far too narrow. Here
the unit of resampling is the round (a cluster bootstrap): each group's rounds are drawn with
replacement, their pods pooled, the statistic computed on the pool. The point estimate is the
statistic of all pods, and every estimate says how many rounds its interval rests on; with fewer
than MIN_ROUNDS rounds in a group there is no interval, and the estimate says so.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from fastiov_lib.analysis.samples import MIN_ROUNDS, enough, min_samples, statistic  # noqa: F401 (re-exported)

ROUND_KEYS = ("experiment", "variant", "concurrency", "repeat")  # one round of a sweep


@dataclass(frozen=True)
class Estimate:
    """A measured value, its interval (NaN ends: none) and what it rests on."""

    value: float
    low: float = math.nan
    high: float = math.nan
    rounds: int = 0  # rounds per group behind the interval (the fewest of the groups compared)
    samples: int = 0  # pods (or VMs, opens) behind the value
    exact: bool = False  # a count or fraction of the whole run, not a sample: decided on the value
    level: float = 0.95
    note: str = ""  # why there is no interval (too few rounds or samples)

    @property
    def has_interval(self) -> bool:
        return math.isfinite(self.low) and math.isfinite(self.high)

    @property
    def measured(self) -> bool:
        return self.value is not None and math.isfinite(self.value)

    def scaled(self, factor: float) -> "Estimate":
        """The same estimate in another unit (e.g. a fraction as %)."""
        return replace(self, value=self.value * factor, low=self.low * factor, high=self.high * factor)


def exact(value: float | None, samples: int = 0) -> Estimate | None:
    """A count or fraction of everything the run recorded (no interval: nothing was sampled)."""
    if value is None:
        return None
    return Estimate(float(value), samples=samples, exact=True)


def as_estimate(value: "Estimate | float | None") -> Estimate | None:
    """Metrics may return a bare number: that is an exact value (a count or fraction), not a sample."""
    if value is None or isinstance(value, Estimate):
        return value
    return Estimate(float(value), exact=True)


def round_arrays(df: pd.DataFrame, value: str, keys: Sequence[str] = ROUND_KEYS) -> list[np.ndarray]:
    """The finite values of `value`, one array per round (rounds told apart by `keys`)."""
    keys = [k for k in keys if k in df.columns]
    if df.empty:
        return []
    if not keys:
        arr = df[value].to_numpy(dtype=float)
        return [arr[np.isfinite(arr)]]
    out = []
    for _, g in df.groupby(keys, sort=True, dropna=False):
        arr = g[value].to_numpy(dtype=float)
        arr = arr[np.isfinite(arr)]
        if len(arr):
            out.append(arr)
    return out


def round_bootstrap(groups: Mapping[str, Sequence[np.ndarray]], statistic: Callable[[dict[str, np.ndarray]], float],
                    n_boot: int = 2000, level: float = 0.95, seed: int = 0,
                    min_rounds: int = MIN_ROUNDS) -> Estimate:
    """Point estimate and percentile interval of `statistic` over groups of rounds.

    `groups` maps a name to that group's rounds (one array of values per round); `statistic`
    takes a dict of name -> pooled values. Each bootstrap sample draws, independently per group,
    as many rounds as the group has, with replacement. No interval (and a note) when a group has
    fewer than `min_rounds` rounds.
    """
    groups = {k: [np.asarray(r, dtype=float) for r in v if len(r)] for k, v in groups.items()}
    if not groups or any(not rounds for rounds in groups.values()):
        return Estimate(math.nan, note="not measured in every group")
    pooled = {k: np.concatenate(v) for k, v in groups.items()}
    with np.errstate(divide="ignore", invalid="ignore"):
        point = float(statistic(pooled))
    fewest = min(len(v) for v in groups.values())
    samples = sum(len(p) for p in pooled.values())
    if fewest < min_rounds:
        return Estimate(point, rounds=fewest, samples=samples, level=level,
                        note=f"{fewest} round{'s' if fewest != 1 else ''} in a group (an interval needs "
                             f"{min_rounds} rounds per group)")
    rng = np.random.default_rng(seed)
    draws = {k: rng.integers(0, len(v), (n_boot, len(v))) for k, v in groups.items()}
    values = np.empty(n_boot)
    with np.errstate(divide="ignore", invalid="ignore"):
        for b in range(n_boot):
            values[b] = statistic({k: np.concatenate([groups[k][i] for i in draws[k][b]]) for k in groups})
    values = values[np.isfinite(values)]
    if len(values) < n_boot / 2:  # the statistic is undefined in most resamples (e.g. a zero baseline)
        return Estimate(point, rounds=fewest, samples=samples, level=level,
                        note="the statistic is undefined in most resamples")
    alpha = (1.0 - level) / 2.0
    return Estimate(point, float(np.quantile(values, alpha)), float(np.quantile(values, 1.0 - alpha)),
                    rounds=fewest, samples=samples, level=level)


# --------------------------------------------------------------------------------------------------
# statistics and effects
# --------------------------------------------------------------------------------------------------

def effect(base: float, var: float, kind: str) -> float:
    """reduction = 1 - var/base, increase = var/base - 1, difference = var - base."""
    if kind == "reduction":
        return 1.0 - var / base if base else math.nan
    if kind == "increase":
        return var / base - 1.0 if base else math.nan
    if kind == "difference":
        return var - base
    raise ValueError(f"unknown comparison kind {kind!r}; expected reduction, increase or difference")


def samples_note(groups: Mapping[str, Sequence[np.ndarray]], stat: str) -> str:
    """Why `stat` cannot be summarised in some group (too few samples), or ""."""
    for name, rounds in groups.items():
        n = sum(len(r) for r in rounds)
        if not enough(n, stat):
            return f"{stat} needs >= {min_samples(stat)} samples per group, {name} has {n}"
    return ""


def effect_estimate(base_rounds: Sequence[np.ndarray], var_rounds: Sequence[np.ndarray], stat: str = "mean",
                    kind: str = "reduction", n_boot: int = 2000, seed: int = 0) -> Estimate:
    """The effect of a variant over a baseline on one statistic, with an interval from resampled rounds."""
    groups = {"baseline": base_rounds, "variant": var_rounds}
    est = round_bootstrap(groups, lambda p: effect(statistic(p["baseline"], stat), statistic(p["variant"], stat), kind),
                          n_boot=n_boot, seed=seed)
    note = samples_note(groups, stat)
    if note:  # e.g. a p99 from 30 pods is their maximum: shown, but no interval is claimed for it
        return replace(est, low=math.nan, high=math.nan, note=note)
    return est


def effect_over_levels(levels: Mapping[int, tuple[Sequence[np.ndarray], Sequence[np.ndarray]]], stat: str = "mean",
                       kind: str = "reduction", aggregate: str = "mean", n_boot: int = 2000,
                       seed: int = 0) -> Estimate:
    """The effect per level (baseline rounds, variant rounds), aggregated over levels (mean, min or
    max), with one joint interval: every level's rounds are resampled in the same bootstrap sample."""
    fn = {"mean": np.mean, "min": np.min, "max": np.max}[aggregate]
    if not levels:
        return Estimate(math.nan, note="not measured at any level")
    groups: dict[str, Sequence[np.ndarray]] = {}
    for c, (b, v) in levels.items():
        groups[f"baseline@{c}"], groups[f"variant@{c}"] = b, v

    def stat_of(p: dict[str, np.ndarray]) -> float:
        return float(fn([effect(statistic(p[f"baseline@{c}"], stat), statistic(p[f"variant@{c}"], stat), kind)
                         for c in levels]))

    est = round_bootstrap(groups, stat_of, n_boot=n_boot, seed=seed)
    note = samples_note(groups, stat)
    return replace(est, low=math.nan, high=math.nan, note=note) if note else est


def own_rounds(values: Sequence[float] | np.ndarray | pd.Series) -> list[np.ndarray]:
    """Sequential measurements, each its own round: one VF open, one DMA map, one VM start run
    alone share no round with the next, so each is resampled on its own."""
    arr = np.asarray(pd.to_numeric(pd.Series(values), errors="coerce"), dtype=float)
    return [np.array([v]) for v in arr[np.isfinite(arr)]]
