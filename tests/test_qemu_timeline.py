"""QEMU timeline logs (the patched QEMU's qemu-<pid>.log) become stage records the claims read."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from fastiov_lib.analysis import qemu_timeline as qt
from fastiov_lib.analysis.instrumentation import STAGE_COLUMNS, build_stages_csv, read_stages
from fastiov_lib.report import claim_metrics, claims

from synthetic_runs import T0, write_run

# lines in the real format: CLOCK_MONOTONIC sec.usec, "[PID: n] [TID: n] INFO: marker", some after a blank line
TIMELINE = """\
[5000.100000] [PID: 77] [TID: 77] INFO: qemuInit-start
[5000.200000] [PID: 77] [TID: 77] INFO: vfio-mem-ram-init-dimm1
[5000.200500] [PID: 77] [TID: 77] INFO: vfio-mem-ram-map-dimm1
[5000.200600] [PID: 77] [TID: 77] INFO: vfio-mem-ram-map-dimm1-cmd: iova=0x0000000000, size_mb=512 MB, size_kb=524288 KB, hva=0x7f00 [debug mark]
[5000.260500] [PID: 77] [TID: 77] INFO: vfio-mem-ram-ok-dimm1
[5000.300000] [PID: 77] [TID: 77] INFO: vfio-mem-ram-map-mem0
[5000.310000] [PID: 77] [TID: 77] INFO: vfio-mem-ram-ok-mem0

[5000.400000] [PID: 77] [TID: 77] INFO: realize-start
[5000.400100] [PID: 77] [TID: 77] INFO: vfio-getdev
[5000.650100] [PID: 77] [TID: 77] INFO: vfio-config
[5000.700000] [PID: 77] [TID: 77] INFO: realize-end
[5000.900000] [PID: 77] [TID: 77] INFO: qemuInit-end
"""


def _rows(text: str, offset=None):
    markers, report = qt.parse_timeline_lines(text.splitlines(True), "qemu-77.log")
    return qt.stages_from_markers(markers, "qemu-77.log", offset, report), report


def test_timeline_markers_pair_into_vf_open_and_dma_map_stages_with_exact_durations():
    df, report = _rows(TIMELINE, offset=0)
    assert list(df.columns) == STAGE_COLUMNS and report.ok
    got = dict(zip(df["subject"], df["elapsed_ns"]))
    assert got[qt.VF_OPEN_STAGE] == 250_000_000  # vfio-getdev -> vfio-config
    assert got[qt.dma_map_stage("dimm1")] == 60_000_000 and got[qt.dma_map_stage("mem0")] == 10_000_000
    assert got["realize-start..realize-end"] == 300_000_000 and got["qemuInit-start..qemuInit-end"] == 800_000_000
    ram = df[df["subject"] == qt.dma_map_stage("dimm1")].iloc[0]
    assert json.loads(ram["extra"])["size_mb"] == 512 and ram["record_id"] == "dimm1" and ram["pid"] == 77
    assert set(df["component"]) == {"qemu"} and ram["start_wall_ns"] == 5_000_200_500_000


def test_two_vfs_of_one_vm_pair_in_order_and_a_cut_log_is_reported():
    text = ("[10.000001] [PID: 5] [TID: 5] INFO: vfio-getdev\n[10.100001] [PID: 5] [TID: 5] INFO: vfio-config\n"
            "[10.200001] [PID: 5] [TID: 5] INFO: vfio-getdev\n[10.500001] [PID: 5] [TID: 5] INFO: vfio-config\n"
            "[10.600001] [PID: 5] [TID: 5] INFO: vfio-getdev\n"
            "garbage line\n")
    df, report = _rows(text, offset=0)
    assert list(df["elapsed_ns"]) == [100_000_000, 300_000_000]
    reasons = [r for _, _, r in report.skipped]
    assert any("not a QEMU timeline line" in r for r in reasons)
    assert any("vfio-getdev of pid 5 has no vfio-config" in r for r in reasons)


def test_without_clock_offset_the_wall_times_stay_empty_and_say_why(tmp_path):
    (tmp_path / "qemu-77.log").write_text(TIMELINE)
    df, report = qt.parse_timeline_file(tmp_path / "qemu-77.log")
    assert df["start_wall_ns"].isna().all() and len(df) == 5
    assert any("clock.json" in r for _, _, r in report.skipped)


def _run_with_qemu_logs(tmp_path: Path) -> Path:
    run = write_run(tmp_path / "run", kind="fastiov", variants={"vanilla": 1000.0}, concurrency=(2,), repeats=1,
                    noise_ms=0.0, slope_ms=0.0)
    qdir = run / "logs" / "startup-vanilla-c2-r0-abc" / "qemu"
    qdir.mkdir(parents=True)
    # the round's window starts at T0; QEMU's monotonic 5000.1 s is T0 + 50 ms in wall time
    (qdir / "clock.json").write_text(json.dumps({"realtime_minus_monotonic_ns": T0 - 5_000_050_000_000}))
    (qdir / "qemu-77.log").write_text(TIMELINE)
    (qdir / "qemu-78.log").write_text(TIMELINE.replace("PID: 77", "PID: 78").replace("5000.650100", "5000.450100"))
    # the pid each sandbox reported at the end of its round (the bench's rounds.jsonl): QEMU's under kata
    (run / "rounds.jsonl").write_text(json.dumps(
        {"run_id": "run", "experiment": "startup", "variant": "vanilla", "concurrency": 2, "repeat": 0, "order_index": 0,
         "round_id": "startup-vanilla-c2-r0-abc", "wall_start_ns": T0,
         "sandbox_pids": {"sb-startup-vanilla-2-0-0": 77, "sb-startup-vanilla-2-0-1": 78}}) + "\n")
    return run


def test_stages_csv_carries_qemu_stages_labelled_with_their_round(tmp_path):
    run = _run_with_qemu_logs(tmp_path)
    out, report = build_stages_csv(run)
    assert out is not None and report.ok
    st = read_stages(run)
    q = st[st["component"] == "qemu"]
    assert len(q) == 10 and set(q["variant"]) == {"vanilla"} and set(q["concurrency"]) == {2}


def test_paper_stage_claims_evaluate_on_the_real_qemu_marker_names(tmp_path):
    run = _run_with_qemu_logs(tmp_path)
    build_stages_csv(run)
    # pods take 1000 ms; VF opens took 250 and 50 ms (mean 150 ms), the RAM map 60 ms, the image map 10 ms
    share = claim_metrics.stage_share(run, stage=qt.VF_OPEN_STAGE, concurrency=2)
    assert share.value == pytest.approx(0.15) and share.samples == 2 and share.rounds == 1
    assert claim_metrics.stage_share(run, stage=qt.dma_map_stage("dimm1"), concurrency=2).value == pytest.approx(0.06)
    stages = {c.id: c.params.get("stage") for c in claims.load_claims([claims.CLAIMS_DIR / "paper.yaml"])}
    assert stages["P11-vf-open-share"] == qt.VF_OPEN_STAGE == stages["P18-vf-open-share-p99"]
    assert stages["P12-dma-map-guest-ram-share"] == qt.dma_map_stage("dimm1")
    assert stages["P19-dma-map-image-share"] == qt.dma_map_stage("mem0")
    assert not any(s in ("vfio_device_open", "vfio_dma_map_ram") for s in stages.values())
