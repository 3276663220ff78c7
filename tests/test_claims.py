"""Claims: data files, metrics and verdicts on synthetic run directories with known outcomes."""
from __future__ import annotations

import pytest

from fastiov_lib.analysis import stats as analysis
from fastiov_lib.config import ConfigError
from fastiov_lib.report import claims
from synthetic_runs import write_run


def verdict_of(table, claim_id):
    row = table[table["claim"] == claim_id]
    assert len(row) == 1, f"{claim_id} not in table"
    return row["verdict"].iloc[0], row["measured"].iloc[0]


def local_run(path, *, slope=10.0, bridge=150.0, drop=0, app=True):
    write_run(path, variants={"bridge": 100.0}, concurrency=(1, 4, 8), repeats=3, slope_ms=slope, drop=drop)
    write_run(path, experiment="ablation", variants={"none": 100.0, "bridge": bridge}, concurrency=(4,),
              repeats=3, append=True, start_ns=2 * 10**18)
    if app:
        write_run(path, experiment="app", variants={"bridge": 100.0}, concurrency=(2,), app="compress",
                  append=True, start_ns=3 * 10**18)
    return path


def test_shipped_claim_files_load_and_name_registered_metrics():
    loaded = claims.load_claims([claims.CLAIMS_DIR / "paper.yaml", claims.CLAIMS_DIR / "local.yaml"])
    assert {c.id for c in loaded} >= {"P2-startup-reduction-mean", "L1-every-pod-recorded"}
    assert all(c.metric in claims.metrics() for c in loaded)
    paper = [c for c in loaded if c.id.startswith("P")]
    assert all("10.1145/3689031.3696066" in c.source and c.testbed_kinds == ["fastiov"] for c in paper)


def test_paper_thresholds_follow_the_stated_rule_from_the_published_numbers():
    for c in claims.load_claims([claims.CLAIMS_DIR / "paper.yaml"]):
        assert c.published is not None and "published" in c.threshold_from, c.id
        if c.comparison == ">=":
            assert c.threshold == pytest.approx(0.8 * c.published, abs=0.0015), c.id
        elif c.comparison == "<=":
            assert c.threshold == pytest.approx(1.25 * c.published, abs=0.0015), c.id
        else:
            assert c.threshold == pytest.approx([0.8 * c.published, 1.2 * c.published], abs=0.0015), c.id


def test_every_claim_says_how_its_threshold_was_set_and_changes_after_data_are_on_record():
    every = claims.load_claims()
    assert all(c.threshold_from for c in every), [c.id for c in every if not c.threshold_from]
    history = claims.threshold_history()
    v13 = history[history["claim"] == "V13-patched-qemu-saves-the-ram-dma-map"]
    assert v13["change"].tolist() == ["threshold 0.8 -> 0.5", "threshold 0.5 -> 0.8 (restored)"]
    assert v13["after seeing data"].all()
    removed = set(history.loc[history["change"] == "removed", "claim"])
    assert {"L3-startup-grows-with-concurrency", "V8-vf-adds-to-vm-start"} <= removed
    assert not removed & {c.id for c in every}


def test_a_healthy_local_run_holds_every_local_claim(tmp_path):
    table = claims.evaluate_claims(local_run(tmp_path / "r"))
    assert set(table["claim"]) >= {"L1-every-pod-recorded", "L7-apps-complete"}
    paper = table[table["claim"].str.startswith("P")]  # listed, with what they need, not hidden
    assert len(paper) >= 17 and set(paper["verdict"]) == {"needs a fastiov testbed"}
    assert verdict_of(table, "P2-startup-reduction-mean")[1] == ""
    assert table.set_index("claim").loc["L4-bridge-adds-over-none", "readme"] == "C11"
    assert verdict_of(table, "L1-every-pod-recorded") == ("holds", "100.0%")  # a harness check: exact
    assert table.set_index("claim").loc["L1-every-pod-recorded", "role"] == "check"
    verdict, measured = verdict_of(table, "L4-bridge-adds-over-none")
    # the 50 ms the synthetic bridge adds, with its interval and what it rests on
    assert verdict == "holds" and measured.endswith("(3 rounds, 24 samples)"), measured
    value, low, high = (float(x) for x in measured.replace("[", "").replace(",", "").split()[0:5:2])
    assert low <= value <= high and 0 < low < 50 < high < 60
    assert verdict_of(table, "L7-apps-complete")[0] == "holds"
    assert verdict_of(table, "L5-macvlan-adds-over-none") == ("not measured", "")


def test_missing_pods_and_a_faster_mode_fail_their_claims(tmp_path):
    table = claims.evaluate_claims(local_run(tmp_path / "r", slope=0.0, bridge=60.0, drop=1, app=False))
    assert verdict_of(table, "L1-every-pod-recorded")[0] == "fails"
    # bridge 40 ms faster than none in every round: the whole interval excludes the claim
    assert verdict_of(table, "L4-bridge-adds-over-none")[0] == "fails"
    assert verdict_of(table, "L7-apps-complete") == ("not measured", "")


def test_an_interval_that_spans_the_threshold_is_inconclusive_and_says_more_rounds_decide(tmp_path):
    # bridge adds 10 ms, but whole rounds move by +-60 ms: the rounds cannot tell
    run = write_run(tmp_path / "r", experiment="ablation", variants={"none": 500.0, "bridge": 510.0},
                    concurrency=(8,), repeats=4, slope_ms=0.0, noise_ms=2.0, round_sd_ms=60.0, seed=3)
    table = claims.evaluate_claims(run).set_index("claim")
    row = table.loc["L4-bridge-adds-over-none"]
    assert row["verdict"] == "inconclusive", row["measured"]
    low, high = (float(x) for x in row["measured"].split("[")[1].split("]")[0].replace(" ms", "").split(","))
    assert low < 0 < high and "(4 rounds, 64 samples)" in row["measured"]
    assert "more rounds would decide" in row["why"] and "4 now" in row["why"]
    # the same pods, resampled as if independent, would have claimed an interval far narrower
    pods = claims.run_for(run).pods
    ok = pods[pods["status"] == "ok"]
    by_pod = analysis.compare_variants(ok.assign(repeat=range(len(ok))), "none", ["bridge"], stat="p50",
                                       kind="difference")
    assert by_pod["ci_high"].iloc[0] - by_pod["ci_low"].iloc[0] < (high - low) / 2


def test_one_round_per_variant_gives_no_interval_and_no_verdict(tmp_path):
    run = write_run(tmp_path / "r", experiment="ablation", variants={"none": 100.0, "bridge": 300.0},
                    concurrency=(8,), repeats=1, slope_ms=0.0)
    row = claims.evaluate_claims(run).set_index("claim").loc["L4-bridge-adds-over-none"]
    assert row["verdict"] == "inconclusive" and "[" not in row["measured"]
    assert "(1 round, 16 samples)" in row["measured"] and "1 round in a group" in row["why"]


def test_paper_claims_on_a_fastiov_run_with_known_reductions(tmp_path):
    run = write_run(tmp_path / "f", kind="fastiov", variants={"no-network": 1000.0, "vanilla": 4000.0,
                                                              "fastiov": 1400.0},
                    concurrency=(10, 20), repeats=3, slope_ms=0.0, noise_ms=0.0)
    table = claims.evaluate_claims(run)
    verdict, measured = verdict_of(table, "P2-startup-reduction-mean")
    assert verdict == "holds" and measured.startswith("65.0% [65.0%, 65.0%] (3 rounds")   # 1 - 1400/4000
    assert verdict_of(table, "P1-vf-overhead-reduction")[1].startswith("86.7%")  # 1 - 400/3000
    assert verdict_of(table, "P1-vf-overhead-reduction")[0] == "holds"
    assert verdict_of(table, "P8-vanilla-over-no-network-mean")[1].startswith("300.0%")
    assert verdict_of(table, "P10-sriov-added-at-200")[0] == "not measured"   # no 200-pod level
    assert verdict_of(table, "P11-vf-open-share")[0] == "not measured"        # no stages.csv
    # p99 of 30 pods per group is their maximum: shown, no interval claimed for it
    verdict, measured = verdict_of(table, "P3-startup-reduction-p99")
    assert verdict == "inconclusive" and "[" not in measured
    slow = write_run(tmp_path / "s", kind="fastiov", variants={"vanilla": 4000.0, "fastiov": 3000.0},
                     concurrency=(10,), repeats=3, slope_ms=0.0, noise_ms=0.0)
    verdict, measured = verdict_of(claims.evaluate_claims(slow), "P2-startup-reduction-mean")
    assert verdict == "fails" and measured.startswith("25.0%")


def test_claims_files_with_mistakes_are_refused_with_file_and_claim(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("claims:\n  - id: X1\n    statement: s\n    source: s\n    metric: ok_fraction\n"
                   "    comparison: '~'\n    threshold: 1\n    testbed_kinds: [local]\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: claim #1 \(X1\): key 'comparison'"):
        claims.load_claims([bad])
    between = tmp_path / "between.yaml"
    between.write_text("claims:\n  - id: X2\n    statement: s\n    source: s\n    metric: ok_fraction\n"
                       "    comparison: between\n    threshold: 1\n    testbed_kinds: [local]\n")
    with pytest.raises(ConfigError, match="X2"):
        claims.load_claims([between])
    dup = tmp_path / "dup.yaml"
    dup.write_text("claims:\n" + "".join(
        "  - {id: D, statement: s, source: s, metric: ok_fraction, comparison: '>=', threshold: 1,"
        " testbed_kinds: [local]}\n" for _ in range(2)))
    with pytest.raises(ConfigError, match="already defined"):
        claims.load_claims([dup])
    (tmp_path / "list.yaml").write_text("- 1\n")
    with pytest.raises(ConfigError, match="claims:"):
        claims.load_claims([tmp_path / "list.yaml"])


def test_registered_metrics_are_used_and_unknown_ones_are_not_measured(tmp_path, monkeypatch):
    run = local_run(tmp_path / "r", app=False)
    f = tmp_path / "extra.yaml"
    f.write_text("claims:\n"
                 "  - {id: E1, statement: pods counted, source: test, metric: test_pod_count, comparison: '>=',"
                 " threshold: 30, unit: pods, testbed_kinds: [local]}\n"
                 "  - {id: E2, statement: unknown, source: test, metric: no_such_metric, comparison: '>=',"
                 " threshold: 0, testbed_kinds: [local]}\n"
                 "  - {id: E3, statement: other kind, source: test, metric: ok_fraction, comparison: '>=',"
                 " threshold: 0, testbed_kinds: [vsriov]}\n")
    monkeypatch.setitem(claims.METRICS, "test_pod_count", lambda run_dir: float(len(claims.run_for(run_dir).pods)))
    table = claims.evaluate_claims(run, claims.load_claims([f]))
    assert table["claim"].tolist() == ["E1", "E2", "E3"]
    assert verdict_of(table, "E3") == ("needs a vsriov testbed", "")
    assert verdict_of(table, "E1") == ("holds", "63 pods")  # 39 startup + 24 ablation
    assert verdict_of(table, "E2") == ("not measured", "")
    assert "not registered" in table.loc[table["claim"] == "E2", "note"].iloc[0]
    assert claims.verdicts(table).columns.tolist() == ["claim", "verdict"]
