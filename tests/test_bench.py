"""The startup benchmark on the real containerd of a private local testbed: every network mode, the
app test, interrupts (SIGINT/SIGTERM), containerd dying mid-round, and the summary table."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from fastiov_lib.testbeds import backend_for
from fastiov_lib.bench import engine as bench

from fastiov_lib.testbeds.local import testbed as local_testbed
from fastiov_lib import config
from fastiov_lib.config import load_profile
from fastiov_lib.cri import CriClient
from fastiov_lib.run.rundir import PodRecord, create_run_dir, read_jsonl
from fastiov_lib.bench.storage_server import make_input_file

from local_testbed_support import make_testbed, needs_local_testbed, our_links, write_testbed_yaml

PREFIX = "ftb"


@pytest.fixture(scope="module")
def testbed(tmp_path_factory):
    tb = make_testbed(tmp_path_factory.mktemp("bench") / "tb", PREFIX, 252, pool_size=4)
    yield tb
    if os.geteuid() == 0:
        local_testbed.down(tb)
        assert our_links(PREFIX) == []


@pytest.fixture()
def run(testbed, tmp_path):
    return create_run_dir(testbed, load_profile("smoke"), run_id="test-run", results_root=tmp_path, facts=backend_for(testbed).facts())


class RecordingHooks:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def before_round(self, round_info, run) -> None:
        self.calls.append(("before", round_info.round_id))

    def after_round(self, round_info, run) -> None:
        assert round_info.log_file is not None and round_info.counts
        self.calls.append(("after", round_info.round_id))


@needs_local_testbed
def test_startup_sweep_records_every_pod_in_each_network_mode(testbed, run):
    modes = [m.mode for m in local_testbed.probe_network_modes(testbed)
             if m.supported and m.mode in testbed.local.network_modes]
    hooks = RecordingHooks()
    result = bench.run_startup_sweep(testbed, run, [1, 3], 1, networks=modes, hooks=hooks, timeout_s=60)
    assert len(result.records) == 4 * len(modes)
    assert [r.status for r in result.records] == ["ok"] * len(result.records), [r.error for r in result.records]
    on_disk, report = read_jsonl(run.pods_file)
    assert report.ok and len(on_disk) == len(result.records)
    assert {PodRecord(**d).sandbox_id for d in on_disk} == {r.sandbox_id for r in result.records}
    for rec in result.records:
        assert rec.variant == rec.network and rec.experiment == "startup"
        assert rec.runtime_handler == f"runc-{rec.network}"
        assert rec.pod_name == f"sandbox-0-{rec.pod_index}"
        assert rec.t_released_ns < rec.t_sandbox_returned_ns
        if rec.network == "none":
            assert rec.t_network_ready_ns is None
        else:
            assert rec.t_network_ready_ns >= rec.t_sandbox_returned_ns
            assert rec.extra["pod_ip"]
    assert len(result.rounds) == 2 * len(modes)
    assert hooks.calls == [(k, r.round_id) for r in result.rounds for k in ("before", "after")]
    for rnd in result.rounds:
        assert rnd.leftovers == []
        log = rnd.log_file.read_text()
        uids = [r.extra["uid"] for r in result.records if r.extra["round_id"] == rnd.round_id]
        assert all(f"Uid:{uid}," in log for uid in uids)
    table = result.summary()
    assert list(table["pods"]) == [1, 3] * len(modes)
    # 1 and 3 pods: too few for a median (analysis.samples), but every group has its slowest pod
    assert (table["failed"] == 0).all() and table["max_startup_ms"].notna().all()
    assert local_testbed.pod_leftovers(testbed) == []


@needs_local_testbed
def test_app_round_downloads_and_hashes_the_input_in_every_pod(testbed, run):
    result = bench.run_app_sweep(testbed, run, [2], 1, network="bridge", file_mb=1, timeout_s=60)
    expected = make_input_file(local_testbed.paths_for(testbed).storage_dir, 1, with_fnv=True)
    assert [r.status for r in result.records] == ["ok", "ok"], [r.error for r in result.records]
    for rec in result.records:
        assert rec.experiment == "app"
        assert rec.extra["bytes"] == 1024 * 1024 and rec.extra["fnv1a64"] == expected.fnv1a64
        assert rec.t_sandbox_returned_ns < rec.t_container_started_ns
        assert rec.t_container_exited_ns > rec.t_sandbox_returned_ns
    # two pods are too few for a median completion (analysis.samples): the table says so with an empty cell
    assert result.summary()["p50_completion_ms"].isna().all() and (result.summary()["ok"] == 2).all()


@needs_local_testbed
def test_bench_refuses_modes_it_cannot_run(testbed, run):
    with pytest.raises(bench.BenchError, match="not a local testbed mode"):
        bench.run_startup_sweep(testbed, run, [1], 1, networks=["ipvlan"])
    with pytest.raises(bench.BenchError, match="hostdev_pool_size is 4"):
        bench.run_startup_sweep(testbed, run, [5], 1, networks=["hostdev"])
    with pytest.raises(bench.BenchError, match="needs a pod network"):
        bench.run_app_sweep(testbed, run, [1], 1, network="none")
    assert not run.pods_file.exists() or read_jsonl(run.pods_file)[0] == []


@needs_local_testbed
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_bench_keeps_measured_pods_when_interrupted(testbed, tmp_path, sig):
    local_testbed.ensure_up(testbed)
    yaml_path = write_testbed_yaml(testbed, tmp_path / "testbed.yaml")
    out = tmp_path / "run"
    driver = subprocess.Popen([sys.executable, "-m", "fastiov_lib", "bench", "--testbed", str(yaml_path),
                               "--concurrency", "1,24", "--repeats", "1", "--network", "bridge", "--out", str(out)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    pods = out / "pods.jsonl"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and driver.poll() is None:
        if pods.exists() and len(pods.read_text().splitlines()) >= 2:
            break
        time.sleep(0.005)
    driver.send_signal(sig)
    stdout, stderr = driver.communicate(timeout=120)
    assert driver.returncode == (130 if sig == signal.SIGINT else 143), stderr
    records, report = read_jsonl(pods)
    assert report.ok
    # the rounds run in shuffled order; every round that started (the interrupted one too) is in
    # rounds.jsonl, and every pod of those rounds has exactly one record
    rounds, _ = read_jsonl(out / "rounds.jsonl")
    started = sum(r["concurrency"] for r in rounds)
    assert 24 in [r["concurrency"] for r in rounds] and started in (24, 25)
    assert len(records) == started
    assert len({(r["concurrency"], r["pod_index"]) for r in records}) == started
    statuses = [r["status"] for r in records]
    assert set(statuses) <= {"ok", "interrupted"} and statuses.count("ok") >= 2
    assert "interrupted" in statuses
    with CriClient(local_testbed.paths_for(testbed).socket, timeout_s=10) as cri:
        assert cri.list_pod_sandboxes() == []
    assert local_testbed.pod_leftovers(testbed) == []


@needs_local_testbed
def test_pods_fail_with_a_clear_error_when_containerd_dies_mid_round(testbed, run):
    local_testbed.ensure_up(testbed)

    class KillContainerd:
        def before_round(self, round_info, run_dir) -> None:
            pid = local_testbed.containerd_pid(testbed)
            threading.Timer(0.3, os.kill, (pid, signal.SIGKILL)).start()

        def after_round(self, round_info, run_dir) -> None:
            pass

    t0 = time.monotonic()
    result = bench.run_startup_sweep(testbed, run, [16], 2, networks=["bridge"], hooks=KillContainerd(),
                                     timeout_s=60)
    assert time.monotonic() - t0 < 90
    assert len(result.rounds) == 1 and "containerd stopped" in result.message
    assert len(result.records) == 16
    failed = [r for r in result.records if r.status != "ok"]
    assert failed and all(r.status == "failed" for r in failed)
    assert all("UNAVAILABLE" in r.error or "CANCELLED" in r.error for r in failed), [r.error for r in failed]
    local_testbed.ensure_up(testbed)
    local_testbed.cleanup(testbed)
    assert local_testbed.pod_leftovers(testbed) == []


def test_vsriov_testbed_has_no_pods_to_start(tmp_path):
    tb = config.Testbed.model_validate({"name": "vs", "kind": "vsriov"})
    run = create_run_dir(tb, load_profile("smoke"), run_id="vs", results_root=tmp_path, facts=backend_for(tb).facts())
    for result in (bench.run_startup_sweep(tb, run, [1], 1), bench.run_app_sweep(tb, run, [1], 1)):
        assert result.records == [] and "no pods to start" in result.message
        assert list(result.summary().columns) == bench.SUMMARY_COLUMNS and result.summary().empty
        assert result.overview().loc[0, "pods"] == 0


def test_summary_table_gives_percentiles_of_ok_pods_per_mode_and_concurrency():
    def rec(variant: str, conc: int, i: int, ms: float | None, status: str = "ok") -> dict:
        return {"experiment": "startup", "variant": variant, "concurrency": conc, "pod_index": i,
                "status": status, "t_released_ns": 1_000_000_000,
                "t_sandbox_returned_ns": None if ms is None else 1_000_000_000 + int(ms * 1e6),
                "t_network_ready_ns": None}
    records = [rec("bridge", 100, i, ms) for i, ms in enumerate(range(1, 101))]
    records += [rec("none", 4, 0, 5), rec("none", 4, 1, None, "failed")]
    table = bench.summary_table(records)
    bridge = table[table["variant"] == "bridge"].iloc[0]
    assert (bridge["pods"], bridge["ok"], bridge["failed"]) == (100, 100, 0)
    assert bridge["p50_startup_ms"] == 50.5 and bridge["p99_startup_ms"] == 99.0  # 99.01, to 0.1 ms
    none = table[table["variant"] == "none"].iloc[0]
    # one ok pod: its time is the max, not a median (analysis.samples)
    assert (none["pods"], none["ok"], none["failed"], none["max_startup_ms"]) == (2, 1, 1, 5.0)
    assert np.isnan(none["p50_startup_ms"])


@needs_local_testbed
def test_ablation_skips_modes_the_host_cannot_run_and_names_them(testbed, run):
    from fastiov_lib.notebook import steps
    from fastiov_lib.notebook.session import Session

    prof = load_profile("smoke", {"ablation_networks": ["none", "ipvlan", "hostdev"],
                                  "ablation_concurrency": [2, 5], "repeats": 1})
    result = steps.ablation_step(Session(testbed, prof, run))
    table = result.summary()
    assert list(zip(table["variant"], table["concurrency"])) == [("hostdev", 2), ("none", 2), ("none", 5)]
    assert (table["failed"] == 0).all()
    assert "ipvlan skipped" in result.message and "hostdev skipped at concurrency [5]" in result.message
    assert {r.experiment for r in result.records} == {"ablation"}


@needs_local_testbed
def test_rounds_interleave_modes_and_each_round_is_recorded_with_its_load_and_pids(testbed, run):
    from fastiov_lib.notebook import steps
    from fastiov_lib.notebook.session import Session
    from fastiov_lib.run.rounds import read_rounds

    # hostdev's pool serves only the lower level: its spec differs from none's, yet the rounds interleave
    prof = load_profile("smoke", {"ablation_networks": ["none", "hostdev"], "ablation_concurrency": [2, 5],
                                  "repeats": 2})
    result = steps.ablation_step(Session(testbed, prof, run))
    assert [r.status for r in result.records] == ["ok"] * len(result.records)
    order = run.read_run_info()["round_orders"][-1]
    assert order["experiment"] == "ablation" and isinstance(order["seed"], int)
    planned = [tuple(r) for r in order["rounds"]]
    assert planned == [(r.variant, r.concurrency, r.repeat) for r in result.rounds]  # run in the planned order
    for rep in (0, 1):  # each repeat a block of every cell: no mode waits for the other to finish
        assert sorted((v, c) for v, c, r in planned if r == rep) == [("hostdev", 2), ("none", 2), ("none", 5)]
    rounds, report = read_rounds(run.path)
    assert report.ok and [r.round_id for r in rounds] == [r.round_id for r in result.rounds]
    assert [r.order_index for r in rounds] == list(range(6)) and {r.sweep_seed for r in rounds} == {order["seed"]}
    for rec, info in zip(rounds, result.rounds):
        assert rec.wall_start_ns < rec.wall_end_ns and len(rec.load_before) == 3 and len(rec.load_after) == 3
        assert rec.kernel_release == os.uname().release and rec.pods == info.concurrency
        # the pid each sandbox reported (runc: its pause process; kata: its QEMU), one per sandbox
        sids = {p.sandbox_id for p in result.records if p.extra["round_id"] == rec.round_id}
        assert set(rec.sandbox_pids) == sids and len(set(rec.sandbox_pids.values())) == len(sids)
        assert all(pid > 1 for pid in rec.sandbox_pids.values())
