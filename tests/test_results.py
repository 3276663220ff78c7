"""Run directories: provenance, append-only JSONL that survives truncation and concurrent writers."""
import json
import threading

from fastiov_lib.testbeds import backend_for
from fastiov_lib.config import load_profile, load_testbed, REPO_ROOT
from fastiov_lib.run.rundir import JsonlWriter, PodRecord, create_run_dir, open_run_dir, read_jsonl


def pod(i: int, status="ok") -> PodRecord:
    return PodRecord(run_id="r", testbed="local", testbed_kind="local", experiment="startup",
                     variant="bridge", network="bridge", runtime_handler="runc", concurrency=4,
                     repeat=0, pod_index=i, pod_name=f"sandbox-0-{i}", t_released_ns=10,
                     t_sandbox_returned_ns=20 + i, status=status)


def test_run_dir_records_provenance(tmp_path):
    tb = load_testbed(REPO_ROOT / "testbeds/local.yaml")
    run = create_run_dir(tb, load_profile("smoke"), run_id="r1", results_root=tmp_path, facts=backend_for(tb).facts())
    info = json.loads(run.run_file.read_text())
    for key in ("testbed", "profile", "git", "python_packages", "tools", "host", "start_time"):
        assert key in info
    assert info["host"]["cpu_count"] >= 1 and info["host"]["kernel"]
    assert set(info["git"]) == {"commit", "dirty", "dirty_files", "notebook_outputs_changed"}
    run.finish()
    assert json.loads(run.run_file.read_text())["end_time"]


def test_reopening_a_run_dir_keeps_its_start_time(tmp_path):
    tb = load_testbed(REPO_ROOT / "testbeds/local.yaml")
    first = create_run_dir(tb, load_profile("smoke"), run_id="r1", results_root=tmp_path, facts=backend_for(tb).facts())
    start = first.read_run_info()["start_time"]
    again = create_run_dir(tb, load_profile("smoke"), run_id="r1", results_root=tmp_path, facts=backend_for(tb).facts())
    assert again.read_run_info()["start_time"] == start


def test_bad_run_id_is_refused(tmp_path):
    tb = load_testbed(REPO_ROOT / "testbeds/local.yaml")
    try:
        create_run_dir(tb, load_profile("smoke"), run_id="../escape", results_root=tmp_path, facts=backend_for(tb).facts())
    except ValueError as exc:
        assert "run id" in str(exc)
    else:
        raise AssertionError("a run id with '/' was accepted")


def test_loader_tolerates_truncated_last_line(tmp_path):
    path = tmp_path / "pods.jsonl"
    with JsonlWriter(path) as w:
        w.append(pod(0))
        w.append(pod(1))
    with open(path, "a") as fh:
        fh.write('{"run_id": "r", "pod_ind')  # the driver died mid-write
    records, report = read_jsonl(path)
    assert [r["pod_index"] for r in records] == [0, 1]
    assert report.skipped == [(3, "truncated last line")]


def test_loader_reports_malformed_lines_with_numbers(tmp_path):
    path = tmp_path / "pods.jsonl"
    path.write_text('{"a": 1}\nnot json\n[1, 2]\n\n{"b": 2}\n')
    records, report = read_jsonl(path)
    assert records == [{"a": 1}, {"b": 2}]
    assert [n for n, _ in report.skipped] == [2, 3]
    assert "JSON object" in report.skipped[1][1]


def test_concurrent_appends_from_threads_never_interleave(tmp_path):
    path = tmp_path / "pods.jsonl"
    writer = JsonlWriter(path, fsync=False)
    barrier = threading.Barrier(8)

    def work(t: int) -> None:
        barrier.wait()
        for i in range(200):
            writer.append(pod(t * 1000 + i))

    threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    writer.close()
    records, report = read_jsonl(path)
    assert report.ok
    assert sorted(r["pod_index"] for r in records) == sorted(t * 1000 + i for t in range(8) for i in range(200))


def test_each_record_is_on_disk_as_soon_as_it_is_appended(tmp_path):
    path = tmp_path / "pods.jsonl"
    writer = JsonlWriter(path)
    writer.append(pod(7, status="interrupted"))
    records, _ = read_jsonl(path)  # read before close: nothing buffered
    assert records[0]["status"] == "interrupted"
    writer.close()


def test_open_run_dir_refuses_a_plain_directory(tmp_path):
    try:
        open_run_dir(tmp_path)
    except FileNotFoundError as exc:
        assert "not a run directory" in str(exc)
    else:
        raise AssertionError("a directory without run.json was accepted")
