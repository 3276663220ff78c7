"""Run directories refuse foreign records; impossible timestamps are bad lines (issue 9, item 4)."""
from __future__ import annotations

import json

import pytest

from fastiov_lib.testbeds import backend_for
from fastiov_lib.analysis.pods import read_pods
from fastiov_lib.config import ConfigError, load_profile
from fastiov_lib.run.rundir import RunDirError, create_run_dir

from local_testbed_support import make_testbed


@pytest.fixture()
def testbed(tmp_path):
    return make_testbed(tmp_path / "wd", "h9d", 246)


def test_extending_a_run_of_another_profile_is_refused(testbed, tmp_path):
    create_run_dir(testbed, load_profile("smoke"), run_id="r1", results_root=tmp_path, facts=backend_for(testbed).facts())
    create_run_dir(testbed, load_profile("smoke"), run_id="r1", results_root=tmp_path, facts=backend_for(testbed).facts())  # same run: resumed
    with pytest.raises(RunDirError, match=r"belongs to another run \(profile 'smoke' \(this run: 'default'\)"):
        create_run_dir(testbed, load_profile("default"), run_id="r1", results_root=tmp_path, facts=backend_for(testbed).facts())
    run = create_run_dir(testbed, load_profile("default"), run_id="r1", results_root=tmp_path, extend_foreign=True, facts=backend_for(testbed).facts())
    info = run.read_run_info()
    assert info["profile_name"] == "smoke" and info["extended_by"][0]["profile_name"] == "default"


def test_extending_a_run_from_another_host_is_refused(testbed, tmp_path):
    run = create_run_dir(testbed, load_profile("smoke"), run_id="r2", results_root=tmp_path, facts=backend_for(testbed).facts())
    info = run.read_run_info()
    info["host"]["hostname"] = "elsewhere"
    run.run_file.write_text(json.dumps(info))
    with pytest.raises(RunDirError, match="host 'elsewhere'"):
        create_run_dir(testbed, load_profile("smoke"), run_id="r2", results_root=tmp_path, facts=backend_for(testbed).facts())


@pytest.mark.parametrize("text, expected", [("{not json", "not JSON"), ("[1, 2]", "expected a JSON object, got list")])
def test_a_broken_run_json_is_named_not_a_traceback(testbed, tmp_path, text, expected):
    (tmp_path / "r3").mkdir()
    (tmp_path / "r3" / "run.json").write_text(text)
    with pytest.raises(ConfigError, match=expected):
        create_run_dir(testbed, load_profile("smoke"), run_id="r3", results_root=tmp_path, facts=backend_for(testbed).facts())


def test_a_non_empty_folder_without_run_json_is_not_a_run_to_extend(testbed, tmp_path):
    (tmp_path / "r4").mkdir()
    (tmp_path / "r4" / "notes.txt").write_text("mine")
    with pytest.raises(RunDirError, match="has no run.json"):
        create_run_dir(testbed, load_profile("smoke"), run_id="r4", results_root=tmp_path, facts=backend_for(testbed).facts())


@pytest.mark.parametrize("run_id", ["../x", "..", "a/b", "/abs", ".hidden"])
def test_run_ids_that_leave_the_results_folder_are_refused(testbed, tmp_path, run_id):
    with pytest.raises(RunDirError, match="run id"):
        create_run_dir(testbed, load_profile("smoke"), run_id=run_id, results_root=tmp_path / "results", facts=backend_for(testbed).facts())
    assert not (tmp_path / "results").exists()


def _pod(**ts) -> dict:
    return {"run_id": "r", "testbed": "t", "testbed_kind": "local", "experiment": "startup", "variant": "bridge",
            "network": "bridge", "runtime_handler": "runc", "concurrency": 1, "repeat": 0, "pod_index": 0,
            "pod_name": "p", "status": "ok", **ts}


def test_impossible_timestamps_are_counted_as_bad_lines_not_averaged(tmp_path):
    lines = [
        _pod(t_released_ns=1_000_000_000, t_sandbox_returned_ns=1_200_000_000),  # 200 ms: fine
        _pod(t_released_ns=2_000_000_000, t_sandbox_returned_ns=1_000_000_000),  # returned before released
        _pod(t_released_ns=1, t_sandbox_returned_ns=10**30),  # absurd magnitude
        _pod(t_released_ns=1.5, t_sandbox_returned_ns=3),  # not an integer
        _pod(t_released_ns=0, t_sandbox_returned_ns=10**9 * 86_400 * 2),  # a two-day "startup"
        _pod(t_released_ns=True, t_sandbox_returned_ns=5),
    ]
    (tmp_path / "pods.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    df, report = read_pods(tmp_path)
    assert len(df) == 1 and df["startup_ms"].tolist() == [200.0]
    assert [line for _, line, _ in report.skipped] == [2, 3, 4, 5, 6]
    reasons = [r for _, _, r in report.skipped]
    assert "precedes" in reasons[0] and "outside 0..2^63-1" in reasons[1] and "not an integer" in reasons[2]
    assert "more than a day" in reasons[3]
