"""Verdicts of a claim from an estimate: holds, fails, inconclusive (or not measured).

A claim holds when its whole interval lies on the claimed side of the threshold, fails when the
whole interval lies on the other side (the evidence excludes the claim), and is inconclusive when
the interval contains the threshold: the run showed neither the effect nor its absence, and more
rounds would decide it. An estimate without an interval (too few rounds or samples) is
inconclusive too, and says what is missing. Only exact values (counts and fractions of everything
the run recorded, not samples) are decided on the value alone.
"""
from __future__ import annotations

import math
from typing import Literal, Sequence

from fastiov_lib.analysis.intervals import Estimate

Comparison = Literal[">=", "<=", ">", "<", "between"]
Outcome = Literal["holds", "fails", "inconclusive", "not measured"]


def _side(x: float, comparison: str, threshold: float | Sequence[float]) -> bool:
    t = threshold
    return {">=": lambda: x >= t, "<=": lambda: x <= t, ">": lambda: x > t, "<": lambda: x < t,
            "between": lambda: t[0] <= x <= t[1]}[comparison]()


def decide(est: Estimate | None, comparison: Comparison, threshold: float | Sequence[float]) -> tuple[Outcome, str]:
    """The verdict and why (what decided it, or what would)."""
    if est is None or not est.measured:
        return "not measured", (est.note if est is not None and est.note else "")
    if est.exact:
        return ("holds" if _side(est.value, comparison, threshold) else "fails"), "exact value of the whole run"
    if not est.has_interval:
        return "inconclusive", f"no interval: {est.note or 'too few rounds'}; more rounds would decide"
    lo, hi = est.low, est.high
    if comparison == "between":
        a, b = threshold
        if a <= lo and hi <= b:
            return "holds", "interval inside the range"
        if hi < a or lo > b:
            return "fails", "interval outside the range"
        return "inconclusive", _more_rounds(est, a if lo < a else b)
    t = float(threshold)
    if _side(lo, comparison, t) and _side(hi, comparison, t):
        return "holds", "whole interval on the claimed side"
    if not _side(lo, comparison, t) and not _side(hi, comparison, t):
        return "fails", "whole interval on the other side: the evidence excludes the claim"
    return "inconclusive", _more_rounds(est, t)


def rounds_to_decide(est: Estimate, threshold: float) -> int | None:
    """About how many rounds per group would make the interval clear `threshold`, if the estimate
    stayed where it is (the interval narrows as one over the square root of the rounds)."""
    half = (est.high - est.low) / 2.0
    gap = abs(est.value - threshold)
    if not est.rounds or not math.isfinite(half) or gap <= 0 or half <= 0:
        return None
    return max(est.rounds + 1, math.ceil(est.rounds * (half / gap) ** 2))


def _more_rounds(est: Estimate, threshold: float) -> str:
    need = rounds_to_decide(est, threshold)
    text = "interval contains the threshold: more rounds would decide"
    if need is not None and need > 20 * est.rounds:  # the estimate sits at the threshold itself
        text += f" (the estimate lies so close to the threshold that no practical number would; {est.rounds} now)"
    elif need is not None:
        text += f" (about {need} per group if the estimate stays; {est.rounds} now)"
    return text
