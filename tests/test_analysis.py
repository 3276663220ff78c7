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
    s = analysis.summarise(pods_with({("bridge", 100): list(range(1, 101))}, failed=1))
    row = s.iloc[0]
    assert row["pods"] == 101 and row["failures"] == 1 and row["n"] == 100
    # linear interpolation on 1..100: p50 = 50.5, p90 = 90.1, p99 = 99.01
    assert (row["mean_ms"], row["p50_ms"], row["p90_ms"], row["p99_ms"], row["max_ms"]) == \
        pytest.approx((50.5, 50.5, 90.1, 99.01, 100.0))
    assert list(s.columns[:4]) == ["testbed", "experiment", "variant", "concurrency"]


def test_summaries_of_too_few_pods_are_left_empty():
    # a p99 of 4 pods is their maximum, a median of 4 is not yet a median worth a line (analysis.samples)
    row = analysis.summarise(pods_with({("bridge", 4): [10, 20, 30, 40]})).iloc[0]
    assert row["n"] == 4 and (row["mean_ms"], row["max_ms"]) == pytest.approx((25.0, 40.0))
    assert np.isnan(row["p50_ms"]) and np.isnan(row["p90_ms"]) and np.isnan(row["p99_ms"])
    g = analysis.group_summary(pods_with({("bridge", 4): [10, 20, 30, 40]})).iloc[0]
    assert g["ok"] == 4 and g["mean_startup_ms"] == 25.0 and np.isnan(g["p99_startup_ms"])


def test_ecdf_steps_through_sorted_values():
    e = analysis.ecdf(pods_with({("none", 1): [30, 10, 20]}))
    assert e["startup_ms"].tolist() == [10, 20, 30]
    assert e["ecdf"].tolist() == pytest.approx([1 / 3, 2 / 3, 1.0])


def test_effects_have_round_level_intervals_and_say_what_they_rest_on(tmp_path):
    run = analysis.load_run(write_run(tmp_path / "r", variants={"vanilla": 100.0, "fastiov": 40.0}, concurrency=(10,),
                                      repeats=3, slope_ms=0.0, noise_ms=0.0))
    c = analysis.compare_variants(run.pods, "vanilla", stat="mean", kind="reduction")
    row = c.iloc[0]
    assert (row["value"], row["ci_low"], row["ci_high"]) == pytest.approx((0.6, 0.6, 0.6))
    assert (row["n_baseline"], row["rounds_baseline"], row["rounds_variant"]) == (30, 3, 3) and row["note"] == ""
    one = analysis.compare_variants(run.pods[run.pods["repeat"] == 0], "vanilla")
    assert np.isnan(one["ci_low"].iloc[0]) and "1 round" in one["note"].iloc[0]


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


def test_stage_breakdown_sums_per_pod_not_per_round():
    # the old breakdown summed records per process; containerd's have none, so a whole round's
    # records of a stage were summed into one value (shares of 190% and more): it was wrong
    pods = pods_with({("vanilla", 2): [1000, 1000]})
    pods["sandbox_id"] = ["sa", "sb"]
    stages = pd.DataFrame({
        "component": "containerd", "file": "f", "pid": -1,
        "subject": ["CNI_md", "CNI_md_add_cni", "CNI_md", "CNI_md_add_cni"], "record_id": ["sa", "sa", "sb", "sb"],
        "start_wall_ns": [0, 10, 0, 10], "elapsed_ns": [200e6, 150e6, 400e6, 300e6],
    })
    b = analysis.stage_breakdown(stages, pods).set_index("stage")
    assert b.loc["CNI_md", "mean_ms"] == pytest.approx(300.0) and b.loc["CNI_md", "pods"] == 2
    assert b.loc["CNI_md", "share_of_mean"] == pytest.approx(0.3)
    assert bool(b.loc["CNI_md_add_cni", "nested"]) and b.loc["CNI_md_add_cni", "parent"] == "CNI_md"
    assert not bool(b.loc["CNI_md", "nested"])


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
