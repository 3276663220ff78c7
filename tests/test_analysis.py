"""Statistics against hand-computed values."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fastiov_lib.analysis import stats as analysis
from fastiov_lib.analysis.pods import pods_frame
from synthetic_runs import write_run


def pods_with(values_by_group: dict[tuple[str, int], list[float]], failed: int = 0) -> pd.DataFrame:
    rows = []
    for (variant, conc), values in values_by_group.items():
        for i, v in enumerate(values):
            rows.append(dict(run_id="r", testbed="t", testbed_kind="local", experiment="startup", variant=variant,
                             network=variant, runtime_handler="runc", concurrency=conc, repeat=0, pod_index=i,
                             pod_name=f"p{i}", t_released_ns=0, t_sandbox_returned_ns=int(v * 1e6), status="ok"))
        for j in range(failed):
            rows.append(dict(rows[-1], pod_index=len(values) + j, t_sandbox_returned_ns=None, status="timeout"))
    return pods_frame(rows)


def test_summary_matches_hand_computed_percentiles():
    s = analysis.summarise(pods_with({("bridge", 4): [10, 20, 30, 40]}, failed=1))
    row = s.iloc[0]
    assert row["pods"] == 5 and row["failures"] == 1
    # linear interpolation on [10, 20, 30, 40]: p50 = 25, p90 = 37, p99 = 39.7
    assert (row["mean_ms"], row["p50_ms"], row["p90_ms"], row["p99_ms"], row["max_ms"]) == \
        pytest.approx((25.0, 25.0, 37.0, 39.7, 40.0))
    assert list(s.columns[:4]) == ["testbed", "experiment", "variant", "concurrency"]


def test_ecdf_steps_through_sorted_values():
    e = analysis.ecdf(pods_with({("none", 1): [30, 10, 20]}))
    assert e["startup_ms"].tolist() == [10, 20, 30]
    assert e["ecdf"].tolist() == pytest.approx([1 / 3, 2 / 3, 1.0])


def test_bootstrap_effect_point_estimates_and_intervals():
    base = np.array([100.0, 100.0, 100.0])
    var = np.array([40.0, 40.0, 40.0])
    assert analysis.bootstrap_effect(base, var, "mean", "reduction") == pytest.approx((0.6, 0.6, 0.6))
    assert analysis.bootstrap_effect(base, var, "mean", "increase")[0] == pytest.approx(-0.6)
    assert analysis.bootstrap_effect(base, var, "p50", "difference")[0] == pytest.approx(-60.0)
    rng = np.random.default_rng(1)
    b, v = rng.normal(100, 10, 200), rng.normal(50, 10, 200)
    point, lo, hi = analysis.bootstrap_effect(b, v, "mean", "reduction")
    assert lo < point < hi and 0.4 < lo and hi < 0.6


def test_compare_variants_only_at_levels_both_measured():
    pods = pods_with({("vanilla", 10): [100, 100], ("fastiov", 10): [40, 40], ("fastiov", 20): [50]})
    c = analysis.compare_variants(pods, "vanilla")
    assert c["concurrency"].tolist() == [10]
    assert c["value"].iloc[0] == pytest.approx(0.6)
    assert c["baseline_ms"].iloc[0] == 100 and c["variant_ms"].iloc[0] == 40


def test_growth_slope_recovers_the_model_slope(tmp_path):
    run = analysis.load_run(write_run(tmp_path / "r", variants={"bridge": 100.0}, concurrency=(1, 4, 8, 16),
                                      repeats=3, slope_ms=10.0, noise_ms=1.0))
    g = analysis.growth_slope(run.pods)
    row = g.iloc[0]
    assert row["levels"] == 4
    assert row["slope_ms_per_pod"] == pytest.approx(10.0, abs=0.3)
    assert row["ci_low"] <= row["slope_ms_per_pod"] <= row["ci_high"]


def test_growth_slope_is_undefined_with_one_level():
    g = analysis.growth_slope(pods_with({("none", 4): [1, 2, 3]}))
    assert g["levels"].iloc[0] == 1 and np.isnan(g["slope_ms_per_pod"].iloc[0])


def test_phase_breakdown_shares_add_up(tmp_path):
    run = analysis.load_run(write_run(tmp_path / "r", variants={"bridge": 95.0}, concurrency=(2,), repeats=1,
                                      noise_ms=0.0, slope_ms=0.0, app="compress", experiment="app"))
    b = analysis.phase_breakdown(run.pods)
    assert b["stage"].tolist() == ["sandbox", "network ready", "container started", "container ran"]
    assert b["mean_ms"].tolist() == pytest.approx([95.0, 5.0, 15.0, 200.0])
    assert b["share_of_mean"].sum() == pytest.approx(1.0)
    assert b["share_of_mean"].iloc[0] == pytest.approx(95 / 315)


def test_stage_breakdown_sums_per_process_and_keeps_one_depth():
    pods = pods_with({("vanilla", 2): [1000, 1000]})
    stages = pd.DataFrame({
        "component": "kata", "file": "f", "pid": [1, 1, 2, 2, 1],
        "subject": ["open1", "open1", "open1", "map2", "open1-1"],
        "start_wall_ns": [1, 2, 3, 4, 5], "elapsed_ns": [100e6, 100e6, 200e6, 300e6, 50e6],
        "experiment": "startup", "variant": "vanilla", "concurrency": 2,
    })
    b = analysis.stage_breakdown(stages, pods)
    got = dict(zip(b["stage"], b["mean_ms"]))
    assert got == pytest.approx({"open1": 200.0, "map2": 300.0})  # pid 1: 100+100, pid 2: 200
    assert dict(zip(b["stage"], b["share_of_mean"]))["open1"] == pytest.approx(0.2)
    assert analysis.stage_depth("createVM3-4-1") == 2 and analysis.stage_depth("sandbox1") == 0


def test_round_completeness_notices_missing_pods(tmp_path):
    run = analysis.load_run(write_run(tmp_path / "r", variants={"none": 10.0}, concurrency=(4,), repeats=2, drop=1))
    rc = analysis.round_completeness(run.pods)
    assert rc["recorded"].tolist() == [3, 4] and rc["complete"].tolist() == [False, True]


def test_runs_from_different_hosts_are_not_pooled_unless_asked(tmp_path):
    a = write_run(tmp_path / "a", variants={"none": 10.0}, concurrency=(1,), repeats=1)
    b = write_run(tmp_path / "b", variants={"none": 10.0}, concurrency=(1,), repeats=1,
                  host={"hostname": "other", "cpu_model": "cpu", "cpu_count": 2, "mem_total_kb": 1, "kernel": "6.1"})
    c = write_run(tmp_path / "c", variants={"none": 10.0}, concurrency=(1,), repeats=1)
    with pytest.raises(analysis.PoolingError, match="hostname"):
        analysis.load_runs([a, b])
    assert len(analysis.load_runs([a, b], allow_pooling=True)) == 2
    assert set(analysis.load_runs([a, c])["run_id"]) == {"a", "c"}


def test_busy_host_is_flagged():
    assert analysis.host_busy_warning({"host": {"load_avg": [3.0, 1, 1], "cpu_count": 2}})
    assert analysis.host_busy_warning({"host": {"load_avg": [0.2, 1, 1], "cpu_count": 2}}) is None
    assert analysis.host_busy_warning({}) is None
