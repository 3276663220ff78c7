"""The vsriov startup experiments without booting the guest: the kernel-trace parser, the guest's raw
blocks, vmstart (real processes), the inner VMs' firmware (a real QEMU), the device-set module's
edit, the plan, and the V10-V13 analysis on a run directory written here."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from fastiov_lib import config
from fastiov_lib.analysis import vsriov_startup as startup
from fastiov_lib.report import claims, vsriov_figures, vsriov_report
from fastiov_lib.report.markdown import write_section
from fastiov_lib.testbeds.vsriov import image as vimage
from fastiov_lib.testbeds.vsriov.common import DEVICES, GuestImage, GuestKernel, QemuInstall, VsriovError
from fastiov_lib.testbeds.vsriov.ktrace import summarize
from fastiov_lib.testbeds.vsriov.plans import make_plan
from fastiov_lib.testbeds.vsriov.protocol import BlockCollector
from fastiov_lib.testbeds.vsriov.vfio_module import REVERT_FROM, REVERT_TO, ModuleBuild

GUEST = Path(vimage.GUEST_DIR)

# three threads open a VF each at once; two wait for the same mutex (one device set), the third
# maps guest RAM for DMA (tracefs text as the guest prints it, monotonic seconds)
TRACE = """\
 qemu-system-x86-101 [000] .....    10.000000: vfio_grp: (vfio_group_fops_unl_ioctl+0x0/0x5e0 [vfio]) cmd=0x3b67
 qemu-system-x86-101 [000] .....    10.000010: vfio_grp_ret: (__x64_sys_ioctl+0x90/0xd0 <- vfio_group_fops_unl_ioctl) ret=0
 qemu-system-x86-101 [000] .....    10.100000: vfio_grp: (vfio_group_fops_unl_ioctl+0x0/0x5e0 [vfio]) cmd=0x3b6a
 qemu-system-x86-102 [001] .....    10.100500: vfio_grp: (vfio_group_fops_unl_ioctl+0x0/0x5e0 [vfio]) cmd=0x3b6a
 qemu-system-x86-102 [001] ...1.    10.100600: contention_begin: 00000000cc9c9b0c (flags=SPIN|MUTEX)
 qemu-system-x86-102 [001] ...2.    10.100700: contention_begin: 00000000cc9c9b0c (flags=MUTEX)
 qemu-system-x86-101 [000] .....    10.210000: vfio_grp_ret: (__x64_sys_ioctl+0x90/0xd0 <- vfio_group_fops_unl_ioctl) ret=5
 qemu-system-x86-102 [001] ...2.    10.210100: contention_end: 00000000cc9c9b0c (ret=0)
 qemu-system-x86-102 [001] .....    10.320500: vfio_grp_ret: (__x64_sys_ioctl+0x90/0xd0 <- vfio_group_fops_unl_ioctl) ret=6
 qemu-system-x86-101 [000] .....    10.400000: vfio_iommu: (vfio_iommu_type1_ioctl+0x0/0x1900 [vfio_iommu_type1]) cmd=0x3b71
 qemu-system-x86-101 [000] .....    10.900000: vfio_iommu_ret: (__x64_sys_ioctl+0x90/0xd0 <- vfio_iommu_type1_ioctl) ret=0
 qemu-system-x86-103 [000] .....    11.000000: vfio_grp: (vfio_group_fops_unl_ioctl+0x0/0x5e0 [vfio]) cmd=0x3b6a
 qemu-system-x86-103 [000] .....    11.100000: vfio_grp_ret: (__x64_sys_ioctl+0x90/0xd0 <- vfio_group_fops_unl_ioctl) ret=-16
CPU:1 [LOST 3 EVENTS]
"""

TIMELINE = """\
[20.969866] [PID: 329] [TID: 329] INFO: qemuInit-start
[21.071415] [PID: 329] [TID: 329] INFO: vfio-mem-ram-map-pc.bios
[21.071492] [PID: 329] [TID: 329] INFO: vfio-mem-ram-map-pc.bios-cmd: iova=0x00ffff0000, size_mb=0 MB, size_kb=64 KB, hva=0x7ffba7000000 [debug mark]
[21.071800] [PID: 329] [TID: 329] INFO: vfio-mem-ram-ok-pc.bios

[21.687846] [PID: 329] [TID: 329] INFO: vfio-getdev
[21.805264] [PID: 329] [TID: 329] INFO: vfio-config
"""


def test_kernel_trace_gives_each_threads_open_time_lock_wait_and_dma_map():
    threads = summarize(TRACE.splitlines())
    a, b, c = threads[101], threads[102], threads[103]
    assert (a.opens, a.open_ns, a.open_lock_wait_ns) == (1, 110_000_000, 0)
    assert (a.dma_maps, a.dma_map_ns) == (1, 500_000_000)
    # the second opener waited once (spin, then sleep: one wait) for the first one's mutex
    assert (b.opens, b.open_ns, b.open_lock_wait_ns) == (1, 220_000_000, 109_500_000)
    assert b.open_locks == {"00000000cc9c9b0c"} and b.record()["open_locks"] == "00000000cc9c9b0c"
    assert c.errors == 1 and c.opens == 1  # a failed open (-EBUSY) is counted as failed, not dropped


def test_guest_blocks_are_kept_verbatim_and_summarised_into_records(tmp_path):
    seen: list[dict] = []
    blocks = BlockCollector(tmp_path, seen.append)
    lines = ["VSRIOV trace begin=vm-vanilla-2-1", *("KTRACE " + ln for ln in TRACE.splitlines()),
             "VSRIOV trace end=vm-vanilla-2-1", "RESULT step name=x rc=0",
             "VSRIOV timeline begin=q62-fastiov-1 file=qemu-329.log", *("TIMELINE " + ln for ln in TIMELINE.splitlines()),
             "VSRIOV timeline end=q62-fastiov-1"]
    taken = [blocks.feed(ln) for ln in lines]
    assert taken.count(False) == 1  # only the RESULT line is left to the caller
    assert (tmp_path / "trace-vm-vanilla-2-1.txt").read_text().splitlines() == TRACE.splitlines()
    assert (tmp_path / "timeline-q62-fastiov-1-qemu-329.log.txt").exists()
    traces = [r for r in seen if r["kind"] == "ktrace_vfio"]
    assert {r["tid"] for r in traces} == {101, 102, 103} and {r["label"] for r in traces} == {"vm-vanilla-2-1"}
    stages = {r["stage"]: r for r in seen if r["kind"] == "qemu_timeline"}
    assert stages["vfio-getdev..vfio-config"]["elapsed_ns"] == 117_418_000
    assert stages["vfio-mem-ram-map-pc.bios..vfio-mem-ram-ok-pc.bios"]["size_mb"] == 0


@pytest.fixture(scope="module")
def vmstart(tmp_path_factory) -> Path:
    if not shutil.which("gcc"):
        pytest.skip("gcc is needed to build the guest's vmstart")
    return vimage.compile_guest_tool(tmp_path_factory.mktemp("work"), "vmstart")


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def test_vmstart_releases_every_vm_together_and_stops_them_all(vmstart):
    script = 'echo booting {VF}; sleep 0.3; echo FASTIOV-VM-UP; sleep 30'
    out = subprocess.run([str(vmstart), "FASTIOV-VM-UP", "20", "vf-a,vf-b,vf-c", "config=test", "--",
                          "sh", "-c", script], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    rows = [dict(kv.split("=", 1) for kv in ln.split()[2:]) for ln in out.stdout.splitlines()
            if ln.startswith("RESULT vmstart ")]
    assert [r["vf"] for r in rows] == ["vf-a", "vf-b", "vf-c"] and {r["config"] for r in rows} == {"test"}
    starts = [int(r["marker_ns"]) for r in rows]
    assert all(300e6 <= s < 3e9 for s in starts) and max(starts) - min(starts) < 1e9  # released together
    assert not any(_alive(int(r["pid"])) for r in rows), "a VM outlived vmstart"


def test_vmstart_reports_a_vm_that_exits_or_hangs_and_leaves_none_behind(vmstart):
    t0 = time.monotonic()
    out = subprocess.run([str(vmstart), "FASTIOV-VM-UP", "1.5", "dies,hangs", "--", "sh", "-c",
                          '[ {VF} = dies ] && { echo no such device {VF}; exit 3; }; exec sleep 60'],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 1 and time.monotonic() - t0 < 10
    status = {ln.split("vf=")[1].split()[0]: ln for ln in out.stdout.splitlines() if ln.startswith("RESULT vmstart ")}
    assert "status=exited" in status["dies"] and "exit_rc=3" in status["dies"]
    assert "status=timeout" in status["hangs"]
    assert "VMOUT i=0 no such device dies" in out.stdout
    pids = [int(ln.split("pid=")[1].split()[0]) for ln in status.values()]
    assert not any(_alive(p) for p in pids)


def test_inner_vm_firmware_prints_the_marker_in_a_real_qemu(tmp_path):
    qemu = shutil.which("qemu-system-x86_64")
    if not qemu:
        pytest.skip("qemu-system-x86_64 not installed (apt package qemu-system-x86)")
    bios = vimage.write_marker_firmware(tmp_path)
    assert bios.stat().st_size == 0x10000 and bios.read_bytes()[0xFFF0] == 0xEA  # far jump at the reset vector
    proc = subprocess.Popen([qemu, "-machine", "q35,accel=tcg", "-m", "32M", "-nodefaults", "-display", "none",
                             "-monitor", "none", "-serial", "stdio", "-bios", str(bios)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        line = proc.stdout.readline().decode(errors="replace")
    finally:
        proc.kill()
        proc.wait(timeout=10)
    assert line.strip() == vimage.MARKER


def test_device_set_revert_edits_exactly_the_upstream_fix(tmp_path):
    kernel = GuestKernel("6.1.0-57-amd64", "linux-image-6.1.0-57-amd64", tmp_path / "vmlinuz", tmp_path)
    (tmp_path / "debs").mkdir()
    (tmp_path / "debs" / "linux-image-6.1.0-57-amd64_6.1.192-3_amd64.deb").write_bytes(b"")
    build = ModuleBuild(kernel, tmp_path, apt=None)
    assert build.version == "6.1.192-3"
    src = build.src / "linux-source-6.1" / "drivers" / "vfio" / "pci" / "vfio_pci_core.c"
    src.parent.mkdir(parents=True)
    src.write_text(f"\tint ret;\n\t{REVERT_FROM}\n\t\tret = vfio_assign_device_set(&vdev->vdev, vdev);\n")
    build.step_edit()
    assert REVERT_TO in src.read_text() and REVERT_FROM not in src.read_text()
    build.step_edit()  # a rerun finds its own edit and leaves it
    src.write_text("\tif (pci_is_root_bus(pdev->bus)) {\n")  # a kernel without the fix: nothing to revert
    with pytest.raises(VsriovError, match="older than 6.1.148"):
        build.step_edit()


def _image(tmp_path: Path, shared: bool) -> GuestImage:
    qemu = QemuInstall(Path("/usr/bin/qemu-system-x86_64"), (10, 0, 2), "test")
    kernel = GuestKernel("6.1.0-57-amd64", "linux-image-6.1.0-57-amd64", tmp_path / "vmlinuz", tmp_path)
    return GuestImage(qemu, DEVICES["igb"], kernel, tmp_path / "initrd", marker_bios=tmp_path / "bios.bin",
                      shared_devset_sha256="ab" * 32 if shared else "")


def test_plan_runs_both_device_set_behaviours_only_with_the_reverted_module(tmp_path, monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: f"/usr/bin/{name}")
    tb = config.Testbed(name="vs", kind="vsriov")
    prof = config.load_profile("default")
    plan = make_plan(tb, prof, DEVICES["igb"], benchmarks=True, image=_image(tmp_path, shared=True))
    assert plan.devsets == ("stock", "shared") and plan.vm_configs == ("vanilla", "fastiov")
    assert plan.vm_counts == (1, 2, 4, 7) and plan.devset_vfs == 7
    args = " ".join(plan.kernel_args(DEVICES["igb"]))
    assert "vs.devsets=stock,shared" in args and "vs.vmcounts=1,2,4,7" in args and len(args) < 1500
    alone = make_plan(tb, prof, DEVICES["igb"], benchmarks=True, image=_image(tmp_path, shared=False))
    assert alone.devsets == ("stock",) and alone.vm_configs == ("fastiov",)
    small = config.Testbed(name="vs", kind="vsriov", vsriov={"guest_memory_mb": 1024})
    with pytest.raises(VsriovError, match="7 concurrent VMs"):
        make_plan(small, prof, DEVICES["igb"], benchmarks=True, image=_image(tmp_path, shared=True))


def _write_run(tmp_path: Path, qemu62: bool = True, reps: int = 3) -> Path:
    run = tmp_path / "run"
    run.mkdir()
    recs: list[dict] = []
    base = {"session_id": "s1", "device": "igb", "qemu_version": "10.0.2", "kernel": "6.1.0-57-amd64"}
    for devset, seq, par in (("stock", 448e6, 134e6), ("shared", 465e6, 482e6)):
        for i, bdf in enumerate(("0000:01:10.0", "0000:01:10.2")):
            recs.append({"kind": "devset_vf", "variant": devset, "bdf": bdf, "group": 5 + i, "virtfn": 1,
                         "parent": "0000:00:01.0", "reset_method": "flr",
                         "expected_set": f"device:{bdf}" if devset == "stock" else "bus:0000:01"})
            recs.append({"kind": "opens_vf", "variant": devset, "mode": "par", "rep": 1, "n": 2, "bdf": bdf,
                         "tid": 500 + i + (10 if devset == "shared" else 0), "open_ns": 120e6 * (1 + i)})
            wait = 110e6 if (devset == "shared" and i == 1) else 0
            # the shared set's trace is labelled per repeat, as the guest does since the modes interleave
            label = f"devset-{devset}-par" + ("-1" if devset == "shared" else "")
            recs.append({"kind": "ktrace_vfio", "label": label, "tid": 500 + i + (10 if devset == "shared" else 0),
                         "opens": 1, "open_ns": 120e6, "open_lock_wait_ns": wait,
                         "open_locks": "00000000cc9c9b0c" if wait else "", "dma_maps": 0, "dma_map_ns": 0})
        for rep in range(1, reps + 1):  # every repeat a little different (ms)
            for mode, wall in (("seq", seq), ("par", par)):
                recs.append({"kind": "opens", "variant": devset, "mode": mode, "rep": rep, "n": 2, "failed": 0,
                             "open_wall_ns": wall + rep * 1e6, "close_wall_ns": wall})
    pid = 600
    for rep in range(1, reps + 1):
        for config_, per_vm in (("vanilla", 900.0), ("fastiov", 300.0)):
            for n in (1, 2, 4):
                for i in range(n):
                    pid += 1
                    # a shared device set: the i-th open waits for i FLRs (100 ms each); per-VF sets: none waits
                    wait = 100e6 * i if config_ == "vanilla" else 0
                    recs.append({"kind": "vmstart", "config": config_,
                                 "devset": "shared" if config_ == "vanilla" else "stock", "rep": rep, "mem_mb": 128,
                                 "n": n, "i": i, "vf": f"vf{i}", "pid": pid, "status": "ok",
                                 "marker_ns": (1000 + per_vm * n + rep) * 1e6, "exit_rc": 0})
                    recs.append({"kind": "ktrace_vfio", "label": f"vm-{config_}-{n}-{rep}", "tid": pid, "opens": 1,
                                 "open_ns": 110e6 + wait + rep * 1e6, "open_lock_wait_ns": wait,
                                 "open_locks": "00000000cc9c9b0c" if wait else "", "dma_maps": 7,
                                 "dma_map_ns": (600e6 if config_ == "vanilla" else 60e6) * n})
        if qemu62:
            for q, start, dma in (("stock", 2700.0, 1900e6), ("fastiov", 750.0, 1e6)):
                pid += 1
                recs.append({"kind": "vmstart", "qemu": q, "rep": rep, "mem_mb": 512, "n": 1, "i": 0, "vf": "vf0",
                             "pid": pid, "status": "ok", "marker_ns": (start + rep) * 1e6, "exit_rc": 0})
                recs.append({"kind": "ktrace_vfio", "label": f"q62-{q}-{rep}", "tid": pid, "opens": 1,
                             "open_ns": 112e6, "open_lock_wait_ns": 0, "open_locks": "", "dma_maps": 3,
                             "dma_map_ns": dma})
        recs.append({"kind": "qemu_timeline", "label": "q62-fastiov-1", "pid": pid, "stage": "vfio-getdev..vfio-config",
                     "region": None, "elapsed_ns": 113e6})
    recs.append({"kind": "session", "status": "ok", "error": None, "boot_s": 4.0, "total_s": 300.0,
                 "qemu_source": "test"})
    with open(run / "vsriov.jsonl", "w") as fh:
        for r in recs:
            fh.write(json.dumps({**base, **r}) + "\n")
    return run


def test_v10_to_v13_are_decided_from_the_run(tmp_path):
    run = _write_run(tmp_path)
    table = vsriov_report.claims_table(run).set_index("claim")
    shared = claims.metrics()["vsriov_devset_parallel_ratio"](run, devset="shared")
    assert shared.value == pytest.approx(484 / 467) and shared.rounds == 3 and shared.has_interval
    assert claims.metrics()["vsriov_devset_parallel_ratio"](run, devset="stock").value == pytest.approx(136 / 450)
    # the i-th of N opens waits i FLRs: the mean open grows by 50 ms per added VM; with per-VF sets by 0
    slope = claims.metrics()["vsriov_vf_open_slope_difference"](run)
    assert slope.value == pytest.approx(50.0) and slope.rounds == 3 and slope.samples == 42
    saving = claims.metrics()["vsriov_qemu62_saving_over_dma_map"](run)
    assert saving.value == pytest.approx((2702 - 752) / 1900) and saving.rounds == 3
    for claim in ("V10-shared-devset-serialises-vf-opens", "V11-per-vf-devsets-overlap-vf-opens",
                  "V12-shared-devset-vf-open-grows-with-n", "V13-patched-qemu-saves-the-ram-dma-map"):
        assert table.loc[claim, "verdict"] == "holds", table.loc[claim]
        assert "(3 rounds" in table.loc[claim, "measured"]
    assert "V7-parallel-vf-resets-overlap" not in table.index  # replaced by V10/V11


def test_with_two_repeats_v10_to_v13_are_inconclusive_not_decided(tmp_path):
    table = vsriov_report.claims_table(_write_run(tmp_path, reps=2)).set_index("claim")
    for claim in ("V10-shared-devset-serialises-vf-opens", "V12-shared-devset-vf-open-grows-with-n",
                  "V13-patched-qemu-saves-the-ram-dma-map"):
        assert table.loc[claim, "verdict"] == "inconclusive" and "2 rounds" in table.loc[claim, "why"]


def test_device_set_evidence_names_the_kernel_behaviour_and_the_shared_lock(tmp_path):
    run = _write_run(tmp_path)
    ev = startup.devset_evidence(run).set_index("devset")
    assert ev.loc["shared", "sets_by_rule"] == 1 and ev.loc["stock", "sets_by_rule"] == 2
    assert ev.loc["shared", "opens_that_waited"] == 1 and ev.loc["shared", "locks_waited_for"] == 1
    assert ev.loc["stock", "opens_that_waited"] == 0
    assert "fix reverted" in ev.loc["shared", "meaning"] and ev.loc["shared", "kernel"] == "6.1.0-57-amd64"
    vfs = startup.devset_vfs_frame(run)
    assert set(vfs[vfs["devset"] == "shared"]["waited_for"]) == {"-", "00000000cc9c9b0c"}


def test_without_qemu62_runs_v13_is_not_measured_and_the_tables_still_build(tmp_path):
    run = _write_run(tmp_path, qemu62=False)
    assert claims.metrics()["vsriov_qemu62_saving_over_dma_map"](run) is None
    table = vsriov_report.claims_table(run).set_index("claim")
    assert table.loc["V13-patched-qemu-saves-the-ram-dma-map", "verdict"] == "not measured"
    tables = vsriov_report.tables(run)
    assert tables["qemu62"].empty and len(tables["concurrent_starts"]) == 6
    figs = vsriov_figures.build_figures(run)
    assert {"vsriov-devset", "vsriov-concurrent-start"} <= set(figs) and "vsriov-qemu62" not in figs


def test_vsriov_figures_draw_for_a_run_with_every_experiment(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    run = _write_run(tmp_path)
    figs = vsriov_figures.build_figures(run)
    assert {"vsriov-devset", "vsriov-concurrent-start", "vsriov-qemu62"} <= set(figs)
    md, paths = write_section(vsriov_report.report_section(run), run)
    assert "device-set lock" in md and "/dev/dev_fastiov" in md and any(p.suffix == ".png" for p in paths)
    assert os.path.exists(run / "figures" / "vsriov-qemu62.png")


def test_qemu62_builds_go_through_the_artifacts_build_code_into_the_work_dir(tmp_path):
    from fastiov_lib.testbeds.vsriov import qemu62

    if not qemu62.SOURCES_DIR.is_dir():
        pytest.skip(f"offline sources not here ({qemu62.SOURCES_DIR})")
    tb = config.Testbed(name="vs", kind="vsriov", vsriov={"work_dir": str(tmp_path / "work")})
    rows = qemu62.plan(tb)
    steps = {(r["component"], r["step"]) for r in rows}
    assert ("qemu", "patch") in steps and ("qemu-noskip", "patch") not in steps  # stock: same tree, no patch
    assert {("qemu", "configure"), ("qemu-noskip", "configure"), ("qemu", "build")} <= steps
    assert all(r["state"] == "to do" for r in rows) and qemu62.binaries(tb) == {}
    assert all(str(tmp_path / "work" / "qemu62") in r.get("what", "") for r in rows if r["step"] == "unpack")
