"""How many samples a statistic needs before the artifact shows it as a summary.

Below the minimum a table leaves the cell empty (and says why) and a figure draws the points
themselves instead of a bar, line or band. The minimums:

- a quantile p needs at least 1 / (1 - p) samples, so that it is not simply the largest one
  (p99: 100 pods, p90: 10); the median and the mean need 5 and 3;
- an interval from resampled rounds needs 3 rounds per group: with 2 there are only 3 distinct
  resamples, with 1 there is no spread between rounds at all;
- a slope needs 3 levels (2 points always lie on a line).
"""
from __future__ import annotations

import math

import numpy as np

MIN_SAMPLES = {"mean": 3, "p50": 5, "median": 5, "max": 1, "bar": 3, "box": 5}
MIN_ROUNDS = 3  # rounds per group behind an interval from resampled rounds
MIN_LEVELS = 3  # concurrency levels behind a slope


def min_samples(stat: str) -> int:
    """Samples `stat` needs (mean, median/p50, max, bar, box, or a quantile pNN)."""
    if stat in MIN_SAMPLES:
        return MIN_SAMPLES[stat]
    if stat.startswith("p"):
        try:
            q = float(stat[1:]) / 100.0
        except ValueError:
            raise ValueError(f"unknown statistic {stat!r}; expected mean, median, max or pNN") from None
        if not 0 < q < 1:
            raise ValueError(f"unknown statistic {stat!r}; pNN needs 0 < NN < 100")
        return max(MIN_SAMPLES["p50"], math.ceil(round(1.0 / (1.0 - q), 9)))
    raise ValueError(f"unknown statistic {stat!r}; expected mean, median, max or pNN")


def enough(n: int, stat: str) -> bool:
    """True when `n` samples are enough to show `stat` as a summary."""
    return int(n) >= min_samples(stat)


def too_few_text(n: int, stat: str) -> str:
    """Why a summary is not shown, e.g. 'p99 needs >= 100 samples, has 60'."""
    return f"{stat} needs >= {min_samples(stat)} samples, has {int(n)}"


def statistic(values: np.ndarray, stat: str) -> float:
    """mean, max, median or pNN of `values` (NaN when empty), whatever their number."""
    values = np.asarray(values, dtype=float)
    if len(values) == 0:
        return float("nan")
    if stat == "mean":
        return float(np.mean(values))
    if stat == "max":
        return float(np.max(values))
    if stat == "median":
        return float(np.median(values))
    if stat.startswith("p"):
        return float(np.percentile(values, float(stat[1:])))
    raise ValueError(f"unknown statistic {stat!r}; expected mean, max, median or pNN")


def stat_or_nan(values: np.ndarray, stat: str) -> float:
    """`stat` of the finite `values`, NaN below its minimum sample count."""
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    return statistic(values, stat) if enough(len(values), stat) else float("nan")
