"""The stage breakdown joins every component's records to its pod before it sums or summarises them.

Two real pods of the instrumented containerd (one per round of `startup`, bridge, 1 pod) with
their real CNI_* records, and real QEMU timelines of the patched QEMU 6.2.0; kata's shim and
fastiov-cni cannot run here, so their records are written in the format their zap loggers write,
placed inside the containerd stages that run them. Every expected number below is worked out by
hand from those lines.
"""
from __future__ import annotations

import datetime as dt
import json
import shutil
from pathlib import Path

import pytest

from fastiov_lib.analysis import pod_breakdown as pb
from fastiov_lib.analysis import stats as analysis
from fastiov_lib.analysis.instrumentation import build_stages_csv, read_stages
from fastiov_lib.analysis.pods import read_pods
from fastiov_lib.run.rounds import read_rounds, sandbox_pids

DATA = Path(__file__).parent / "data" / "pod_breakdown"
A = "9b7cc499477570557aa3f558c24a8e670a2f563f5e96e0f1642a0fd09b268fef"  # round r0, startup 141.350393 ms
B = "c30c802991b88e0b33d0a7b7b0da86852a80e6b6e7d37fd83af0e2f77204a0f8"  # round r1, startup 98.069807 ms
ROUND_A, ROUND_B = "startup-bridge-c1-r0-55ea74", "startup-bridge-c1-r1-5dd4b2"


def ns(stamp: str) -> int:
    """Wall ns of an RFC3339 time with ns digits (as the containerd records give them)."""
    head, frac = stamp.rstrip("Z").split(".")
    secs = int(dt.datetime.fromisoformat(head).replace(tzinfo=dt.timezone.utc).timestamp())
    return secs * 10**9 + int(frac.ljust(9, "0"))


def rfc(wall_ns: int) -> str:
    secs, frac = divmod(wall_ns, 10**9)
    return dt.datetime.fromtimestamp(secs, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S") + f".{frac:09d}Z"


def zap(subject: str, record_id: str, start_ns: int, elapsed_ns: int) -> str:
    """One record as the patched components' zap console logger writes it."""
    return (f"{rfc(start_ns + elapsed_ns)}\tINFO\t{subject}\t{{\"record_id\": \"{record_id}\", "
            f"\"start_t\": \"{rfc(start_ns)}\", \"elapsed_ns\": {elapsed_ns}}}\n")


def records(sid: str, at: int, spans: list[tuple[str, str | None, float, float]]) -> str:
    """(subject, record_id or None for the sandbox id, start ms after `at`, elapsed ms) as zap lines."""
    return "".join(zap(s, rid or sid, at + int(start * 1e6), int(ms * 1e6)) for s, rid, start, ms in spans)


@pytest.fixture()
def run_dir(tmp_path):
    run = tmp_path / "run"
    (run / "logs").mkdir(parents=True)
    (run / "run.json").write_text(json.dumps({"run_id": "run", "testbed_name": "t", "testbed_kind": "fastiov"}))
    shutil.copy(DATA / "pods.jsonl", run / "pods.jsonl")
    for rnd, src in ((ROUND_A, "containerd-r0.log"), (ROUND_B, "containerd-r1.log")):
        (run / "logs" / rnd / "containerd_logs").mkdir(parents=True)
        shutil.copy(DATA / src, run / "logs" / rnd / "containerd_logs" / f"cnicmp-{rnd}.log")
    # kata's shim: one process per pod inside containerd's CNI_setup_task; "start" records name no sandbox
    kata = {
        (ROUND_A, A, 4242, ns("2026-12-02T06:05:44.744675319Z") + 1_000_000): [
            ("CNI_kata", None, 0, 70), ("CNI_kata_create_sandbox", None, 0.5, 12),
            ("CNI_kata_create_sandbox1", "start", 1, 10), ("CNI_kata_create_newsandbox4", "start", 2, 6),
            ("CNI_kata_create_newsandbox4-1", "start", 2.5, 2), ("CNI_kata_create_newsandbox4-2", "start", 5, 2.5),
            ("CNI_kata_start_vm", None, 15, 50)],
        (ROUND_B, B, 5151, ns("2026-12-02T06:05:45.079979644Z") + 1_000_000): [
            ("CNI_kata", None, 0, 50), ("CNI_kata_create_sandbox", None, 0.5, 9),
            ("CNI_kata_create_sandbox1", "start", 1, 7), ("CNI_kata_create_newsandbox4", "start", 2, 5),
            ("CNI_kata_create_newsandbox4-1", "start", 2.2, 1.5), ("CNI_kata_create_newsandbox4-2", "start", 3.8, 3),
            ("CNI_kata_create_resourceController3", None, 7.1, 0.4),  # twice in one pod: summed
            ("CNI_kata_create_resourceController3", None, 7.55, 0.4),
            ("CNI_kata_start_vm", None, 10, 35)],
    }
    for (rnd, sid, pid, at), spans in kata.items():
        d = run / "logs" / rnd / "kata_logs"
        d.mkdir()
        (d / f"cnicmp-{pid}.log").write_text(records(sid, at, spans))
    # a shim process that never names its sandbox: its records belong to no known pod
    (run / "logs" / ROUND_B / "kata_logs" / "cnicmp-6161.log").write_text(
        zap("CNI_kata_create_sandbox1", "start", ns("2026-12-02T06:05:45.08Z"), 3_000_000))
    # fastiov-cni: record_id = CNI's ContainerID = the sandbox id, inside containerd's CNI_md_add_cni
    cni = {(ROUND_A, A, ns("2026-12-02T06:05:44.709328585Z")): [0.2, 0.5, 1.0, 1.0, 2.5, 3.0, 6.0, 10.0, 17.0, 4.0],
           (ROUND_B, B, ns("2026-12-02T06:05:45.062164576Z")): [0.1, 0.3, 0.5, 0.5, 1.2, 2.0, 3.5, 6.0, 10.0, 3.0]}
    for (rnd, sid, at), t in cni.items():
        d = run / "logs" / rnd / "cni_logs"
        d.mkdir()
        names = ["CNI_conf", "CNI_nns", "CNI_vfconf", "CNI_vfmain", "CNI_ipam"]
        (d / "cnicmp-1714600000.log").write_text(
            records(sid, at, [(n, None, t[2 * i], t[2 * i + 1]) for i, n in enumerate(names)]))
    # QEMU: real timelines; each pod's after its containerd records (clock.json maps CLOCK_MONOTONIC)
    for rnd, pid, mono_start, wall_start in ((ROUND_A, 1284, 274_386_728_000, ns("2026-12-02T06:05:46.0Z")),
                                             (ROUND_B, 1312, 283_829_836_000, ns("2026-12-02T06:05:47.0Z"))):
        d = run / "logs" / rnd / "qemu"
        d.mkdir()
        shutil.copy(DATA / f"qemu-{pid}.log", d / f"qemu-{pid}.log")
        (d / "clock.json").write_text(json.dumps({"realtime_minus_monotonic_ns": wall_start - mono_start}))
    shutil.copy(DATA / "qemu-1296.log", run / "logs" / ROUND_B / "qemu" / "qemu-1296.log")  # a pid no sandbox reported
    # QEMU pid -> pod, from either source: what the bench writes per round (the pid each sandbox
    # reported: QEMU's under kata), or the pid files a real host's round hooks copy from /run/vc/vm
    (run / "rounds.jsonl").write_text("".join(json.dumps(
        {"run_id": "run", "experiment": "startup", "variant": "bridge", "concurrency": 1, "repeat": r,
         "order_index": r, "round_id": rnd, "wall_start_ns": 0, "sandbox_pids": pids}) + "\n"
        for r, (rnd, pids) in enumerate(((ROUND_A, {A: 1284}), (ROUND_B, {})))))
    (run / "logs" / ROUND_B / "qemu" / pb.VM_PIDS_FILE).write_text(json.dumps({"1312": B}))
    out, report = build_stages_csv(run)
    assert out is not None
    return run


def load(run_dir):
    stages, (pods, _) = read_stages(run_dir), read_pods(run_dir)
    rounds, _ = read_rounds(run_dir)
    return stages, pods, pb.sandbox_pid_map(run_dir, sandbox_pids(rounds))


def test_every_component_record_is_joined_to_its_pod_and_how(run_dir):
    stages, pods, pids = load(run_dir)
    joined = pb.join_records(stages, pods, pids)
    s = pb.join_summary(joined).set_index("component")
    assert s.loc["containerd", "by record id"] == 24 and s.loc["containerd", "not joined"] == 0
    assert s.loc["fastiov-cni", "by record id"] == 10
    # kata: sandbox-id records by id, the "start" records through their shim process; pid 6161 named no sandbox
    assert (s.loc["kata", "by record id"], s.loc["kata", "by shim process"], s.loc["kata", "not joined"]) == (8, 8, 1)
    # QEMU: 7 stage records per timeline of 1284 and 1312 (two of them pc.bios maps) by the pid their sandbox reported; 1296 reported by none
    assert s.loc["qemu", "by QEMU pid"] == 14 and s.loc["qemu", "not joined"] > 0
    by_pod = joined.dropna(subset=["sandbox_id"]).groupby("sandbox_id")["component"].agg(set)
    assert by_pod[A] == by_pod[B] == {"containerd", "fastiov-cni", "kata", "qemu"}


def test_nesting_comes_from_the_records_own_intervals(run_dir):
    nest = pb.stage_nesting(pb.join_records(*load(run_dir))).set_index(["component", "stage"])
    parent = {k: (r["parent_component"], r["parent"]) for k, r in nest.iterrows()}
    assert parent[("containerd", "CNI_md_add_cni")] == ("containerd", "CNI_md")
    assert parent[("containerd", "CNI_setup_task")] == ("containerd", "CNI_pod_setup")
    assert parent[("fastiov-cni", "CNI_vfmain")] == ("containerd", "CNI_md_add_cni")
    assert parent[("kata", "CNI_kata")] == ("containerd", "CNI_setup_task")
    assert parent[("kata", "CNI_kata_create_newsandbox4-2")] == ("kata", "CNI_kata_create_newsandbox4")
    assert parent[("kata", "CNI_kata_create_resourceController3")] == ("kata", "CNI_kata_create_sandbox1")
    assert parent[("qemu", "vfio-getdev..vfio-config")] == ("qemu", "realize-start..realize-end")
    # the second pc.bios map of each VM runs after realize: only preconfig holds both
    assert parent[("qemu", "vfio-mem-ram-map-pc.bios..vfio-mem-ram-ok-pc.bios")] == ("qemu", "preconfig-start..preconfig-end")
    # QEMU's outermost stage runs inside the shim even though the clocks cannot show it here
    assert nest.loc[("qemu", "qemuInit-start..qemuInit-end"), "evidence"] == "runs inside kata"
    top = set(nest.index[~nest["nested"].astype(bool)])
    assert top == {("containerd", s) for s in ("CNI_start", "CNI_nns", "CNI_md", "CNI_ops_and_specs", "CNI_create_pod",
                                               "CNI_pod_setup")}


def test_breakdown_sums_per_pod_then_averages_over_pods(run_dir):
    stages, pods, pids = load(run_dir)
    b = analysis.stage_breakdown(stages, pods, pids)
    assert set(zip(b["experiment"], b["variant"], b["concurrency"])) == {("startup", "bridge", 1)}
    row = {(c, s): r for c, s, r in zip(b["component"], b["stage"], b.to_dict("records"))}
    startup = (141.350393 + 98.069807) / 2
    md = row[("containerd", "CNI_md")]
    assert (md["pods"], md["rounds"]) == (2, 2)
    assert md["mean_ms"] == pytest.approx((40.073930 + 20.276282) / 2)
    assert md["startup_mean_ms"] == pytest.approx(startup)
    assert md["share_of_mean"] == pytest.approx((40.073930 + 20.276282) / 2 / startup)
    assert row[("containerd", "CNI_pod_setup")]["mean_ms"] == pytest.approx((83.611838 + 61.940807) / 2)
    assert row[("fastiov-cni", "CNI_vfmain")]["mean_ms"] == pytest.approx((10.0 + 6.0) / 2)
    assert row[("fastiov-cni", "CNI_nns")]["mean_ms"] == pytest.approx((1.0 + 0.5) / 2)  # not containerd's CNI_nns
    assert row[("kata", "CNI_kata_create_newsandbox4-2")]["mean_ms"] == pytest.approx((2.5 + 3.0) / 2)
    # pod A has kata records but no resourceController3: it counts 0; pod B ran it twice (0.4 + 0.4 ms)
    assert row[("kata", "CNI_kata_create_resourceController3")]["mean_ms"] == pytest.approx((0.0 + 0.8) / 2)
    assert row[("qemu", "vfio-getdev..vfio-config")]["mean_ms"] == pytest.approx((110.036 + 117.060) / 2)
    # two pc.bios maps per VM: (0.454 + 0.193) and (0.878 + 0.175) ms
    assert row[("qemu", "vfio-mem-ram-map-pc.bios..vfio-mem-ram-ok-pc.bios")]["mean_ms"] == pytest.approx(
        (0.647 + 1.053) / 2)
    assert b["p99_ms"].isna().all()  # a p99 of 2 pods is no p99 (it needs 100)
    top = b[~b["nested"].astype(bool)]
    per_pod_top = (0.000851 + 0.998897 + 40.073930 + 0.187959 + 5.473728 + 83.611838,
                   0.000972 + 0.980875 + 20.276282 + 0.094941 + 3.073589 + 61.940807)
    assert top["mean_ms"].sum() == pytest.approx(sum(per_pod_top) / 2)
    assert top["share_of_mean"].sum() == pytest.approx(sum(per_pod_top) / 2 / startup) and top["share_of_mean"].sum() < 1


def test_the_committed_example_breakdown_never_exceeds_its_startup():
    run = analysis.load_run(Path(__file__).parents[1] / "results" / "example-local-instrumented")
    b, source = analysis.breakdown(run)
    assert source.startswith("component stage records")
    top = b[~b["nested"].astype(bool)]
    assert (top["share_of_mean"] <= 1).all()
    assert (top.groupby(["experiment", "variant", "concurrency"])["share_of_mean"].sum() <= 1).all()
    assert set(b.loc[b["nested"].astype(bool), "stage"]) == {
        "CNI_md_add_lo", "CNI_md_add_cni", "CNI_setup_rootdir", "CNI_setup_files", "CNI_setup_timestamp", "CNI_setup_task"}
    # the issue's example: CNI_create_pod at bridge 20 pods averaged 245.8 ms per pod, not 6,201.6
    both = b[(b["variant"] == "bridge") & (b["concurrency"] == 20) & (b["stage"] == "CNI_create_pod")]
    assert (both["mean_ms"] * both["pods"]).sum() / both["pods"].sum() == pytest.approx(245.8, abs=0.05)


def test_the_breakdown_figure_stacks_only_stages_not_nested_in_another(run_dir):
    from fastiov_lib.report import figures as plots

    b = analysis.stage_breakdown(*load(run_dir))
    fig = plots.stage_breakdown(b, "caption", source="component stage records")
    labels = {t.get_text() for leg in fig.legends for t in leg.get_texts()}
    assert labels == {"CNI_start", "CNI_nns", "CNI_md", "CNI_ops_and_specs", "CNI_create_pod", "CNI_pod_setup"}
    ax = fig.axes[0]
    bars = [p for p in ax.patches if p.get_height() > 0]
    # 2 pods: too few for a bar (3), so each stage's mean is a point stacked on the ones before it
    assert not bars and {t.get_text() for t in ax.texts} == {"n=2"}
    tops = ax.collections[-1].get_offsets()[:, 1]
    top_of_stack = b.loc[~b["nested"].astype(bool), "mean_ms"].sum()
    assert max(tops) == pytest.approx(top_of_stack)
