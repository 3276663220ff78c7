"""Round-level intervals, three-valued verdicts, minimum samples and the interleaved round order."""
from __future__ import annotations

import math

import numpy as np
import pytest

from fastiov_lib.analysis import samples
from fastiov_lib.analysis.intervals import Estimate, effect_estimate, exact, round_bootstrap, statistic
from fastiov_lib.bench.round_order import plan_rounds
from fastiov_lib.report.verdicts import decide, rounds_to_decide


def rounds_around(medians, pods=20, sd=5.0, seed=0):
    rng = np.random.default_rng(seed)
    return [m + rng.normal(0, sd, pods) for m in medians]


def test_rounds_not_pods_are_resampled():
    # the rounds of `none` at 20 pods: 840 / 760 / 1468 ms; pods within a round close together
    none = rounds_around([840, 760, 1468])
    bridge = rounds_around([900, 1000, 1500], seed=1)
    est = effect_estimate(none, bridge, "p50", "difference")
    assert est.rounds == 3 and est.samples == 120 and est.has_interval
    assert est.low < 0 < est.high  # three rounds per mode cannot tell 100-ish ms from 0
    pooled = effect_estimate([np.concatenate(none)[i:i + 1] for i in range(60)],
                             [np.concatenate(bridge)[i:i + 1] for i in range(60)], "p50", "difference")
    assert (pooled.high - pooled.low) < (est.high - est.low)  # pods taken as independent: too narrow


def test_fewer_than_three_rounds_give_no_interval():
    est = round_bootstrap({"a": rounds_around([100, 110])}, lambda p: float(np.mean(p["a"])))
    assert math.isfinite(est.value) and not est.has_interval and est.rounds == 2 and "2 rounds" in est.note


def test_a_p99_of_too_few_pods_gets_no_interval():
    est = effect_estimate(rounds_around([100] * 3, pods=10), rounds_around([200] * 3, pods=10), "p99", "difference")
    assert not est.has_interval and "p99 needs >= 100 samples" in est.note


def test_statistic_and_minimum_samples():
    assert statistic(np.arange(1, 101), "p99") == pytest.approx(99.01)
    assert samples.min_samples("p99") == 100 and samples.min_samples("p90") == 10
    assert samples.min_samples("p50") == samples.min_samples("median") == 5 and samples.min_samples("mean") == 3
    assert math.isnan(samples.stat_or_nan(np.arange(99), "p99")) and samples.stat_or_nan(np.arange(3), "mean") == 1.0


@pytest.mark.parametrize("comparison,threshold,est,verdict", [
    (">", 0.0, Estimate(50, 10, 90, rounds=3), "holds"),
    (">", 0.0, Estimate(-50, -90, -10, rounds=3), "fails"),
    (">", 0.0, Estimate(40, -10, 90, rounds=3), "inconclusive"),
    (">=", 0.526, Estimate(0.65, 0.6, 0.7, rounds=3), "holds"),
    (">=", 0.526, Estimate(0.25, 0.2, 0.3, rounds=3), "fails"),
    ("<=", 0.489, Estimate(0.3, 0.2, 0.5, rounds=3), "inconclusive"),
    ("<=", 0.489, Estimate(0.3, 0.2, 0.4, rounds=3), "holds"),
    ("between", [0.385, 0.577], Estimate(0.48, 0.4, 0.55, rounds=3), "holds"),
    ("between", [0.385, 0.577], Estimate(0.2, 0.1, 0.3, rounds=3), "fails"),
    ("between", [0.385, 0.577], Estimate(0.5, 0.3, 0.6, rounds=3), "inconclusive"),
    (">", 0.0, Estimate(50, rounds=1, note="1 round in a group"), "inconclusive"),
    (">=", 1.0, exact(1.0), "holds"),
    (">=", 1.0, exact(0.99), "fails"),
    (">=", 1.0, None, "not measured"),
])
def test_three_valued_verdicts(comparison, threshold, est, verdict):
    assert decide(est, comparison, threshold)[0] == verdict


def test_an_inconclusive_verdict_says_how_many_rounds_would_decide():
    est = Estimate(40.0, -10.0, 90.0, rounds=3)
    assert rounds_to_decide(est, 0.0) == math.ceil(3 * (50 / 40) ** 2)
    verdict, why = decide(est, ">", 0.0)
    assert verdict == "inconclusive" and "about 5 per group" in why and "3 now" in why


def test_an_estimate_at_the_threshold_itself_is_not_promised_a_decision():
    verdict, why = decide(Estimate(0.82, 0.35, 1.74, rounds=4), ">=", 0.8)
    assert verdict == "inconclusive" and "no practical number" in why and "about" not in why


def test_rounds_interleave_variants_in_every_repeat_with_a_recorded_seed():
    cells = [(v, c) for v in ("none", "bridge", "hostdev") for c in (10, 20)]
    plan = plan_rounds(cells, 3, seed=7)
    assert [r.order_index for r in plan] == list(range(18))
    for rep in range(3):  # each repeat is one block holding every cell once
        block = [(r.variant, r.concurrency) for r in plan if r.repeat == rep]
        assert sorted(block) == sorted(cells) and [r.repeat for r in plan[6 * rep:6 * rep + 6]] == [rep] * 6
    assert plan_rounds(cells, 3, seed=7) == plan  # the seed gives the order back
    assert [(r.variant, r.concurrency) for r in plan] != cells * 3  # not variant after variant
    first_half = {r.variant for r in plan[:9]}
    assert first_half == {"none", "bridge", "hostdev"}  # no variant waits for the others to finish
    assert [(r.variant, r.concurrency) for r in plan_rounds(cells, 1, seed=None)] == cells


def test_above_each_other_mode_fails_when_one_difference_lies_wholly_below(tmp_path, monkeypatch):
    from fastiov_lib.report import claim_metrics

    ests = {"bridge": Estimate(40.0, -100.0, 50.0, rounds=3), "macvlan": Estimate(-20.0, -30.0, -5.0, rounds=3)}
    monkeypatch.setattr(claim_metrics, "effect", lambda run_dir, variant, baseline, **kw: ests[baseline])
    est = claim_metrics.effect_vs_each(tmp_path, "hostdev", ["bridge", "macvlan"])
    assert (est.value, est.low, est.high) == (-20.0, -100.0, -5.0)
    assert decide(est, ">", 0.0)[0] == "fails"  # hostdev is below macvlan, whatever bridge's interval says
    ests["macvlan"] = Estimate(30.0, 10.0, 50.0, rounds=3)
    assert decide(claim_metrics.effect_vs_each(tmp_path, "hostdev", ["bridge", "macvlan"]), ">", 0.0)[0] == \
        "inconclusive"
