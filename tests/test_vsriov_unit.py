"""Virtual SR-IOV host, without booting a guest: result parsing, the initramfs builder, module
resolution, bounded boots of guests that hang or die, the analysis and claims on recorded results."""
from __future__ import annotations

import gzip
import json
import lzma
import shutil
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from fastiov_lib.testbeds import backend_for
from fastiov_lib import config

from fastiov_lib.report import claims

from fastiov_lib.testbeds.vsriov import testbed as vsriov

from fastiov_lib.analysis import vsriov as vsriov_analysis
from fastiov_lib.report import vsriov_figures, vsriov_report
from fastiov_lib.report.markdown import write_section
from fastiov_lib.config import REPO_ROOT
from fastiov_lib.run.rundir import create_run_dir, read_jsonl
from fastiov_lib.testbeds.vsriov.initramfs import CpioEntry, InitramfsBuilder, InitramfsError, read_cpio_newc, resolve_modules, \
    write_cpio_newc
from fastiov_lib.testbeds.vsriov.testbed import GuestPlan, ResultParseError, VsriovError, parse_result_line

CLI = [sys.executable, "-m", "fastiov_lib"]


# ---------------------------------------------------------------------------------------------
# result lines
# ---------------------------------------------------------------------------------------------

def test_result_lines_parse_into_typed_fields():
    r = parse_result_line("RESULT numvfs pf=0000:01:00.0 from=0 n=4 errno=0 ns=480316500\r")
    assert r.measurement == "numvfs"
    assert r.fields == {"pf": "0000:01:00.0", "from": 0, "n": 4, "errno": 0, "ns": 480316500}
    assert parse_result_line("RESULT guest kernel=6.1.0-56-amd64 uptime_s=2.59").fields["uptime_s"] == 2.59


def test_json_result_lines_keep_nested_reports():
    r = parse_result_line('RESULT nic_step {"step":"prepare_vfs","ok":true,"report":{"vfs":["a","b"]}}')
    assert r.measurement == "nic_step" and r.fields["report"]["vfs"] == ["a", "b"] and r.fields["ok"] is True


def test_lines_that_are_not_results_are_ignored():
    for line in ("VSRIOV booted uptime=2.5", "", "[    2.1] igb 0000:01:00.0: added", "RESULTS are in"):
        assert parse_result_line(line) is None


@pytest.mark.parametrize("line", ["RESULT numvfs pf", "RESULT bind =3", 'RESULT nic_step {"step": ',
                                  "RESULT nic_step [1, 2]", "RESULT"])
def test_malformed_result_lines_raise_a_clear_error(line):
    with pytest.raises(ResultParseError, match="RESULT"):
        parse_result_line(line)


# ---------------------------------------------------------------------------------------------
# initramfs: cpio newc
# ---------------------------------------------------------------------------------------------

def test_cpio_newc_round_trips_files_links_and_device_nodes():
    entries = [CpioEntry("bin", stat.S_IFDIR | 0o755), CpioEntry("bin/busybox", stat.S_IFREG | 0o755, b"\x7fELF" * 3),
               CpioEntry("bin/sh", stat.S_IFLNK | 0o777, b"busybox"), CpioEntry("dev", stat.S_IFDIR | 0o755),
               CpioEntry("dev/console", stat.S_IFCHR | 0o600, b"", (5, 1)), CpioEntry("init", stat.S_IFREG | 0o755, b"x")]
    import io

    buf = io.BytesIO()
    size = write_cpio_newc(entries, buf)
    assert size == len(buf.getvalue()) and size % 4 == 0
    assert read_cpio_newc(buf.getvalue()) == entries


def test_initramfs_builder_writes_an_archive_the_cpio_tool_lists(tmp_path):
    if not shutil.which("cpio"):
        pytest.skip("the cpio tool is not installed (apt-get install cpio)")
    img = InitramfsBuilder()
    img.add_file("init", b"#!/bin/sh\necho hi\n", 0o755)
    img.add_symlink("bin/sh", "busybox")
    img.add_char_device("dev/console", 5, 1)
    tree = tmp_path / "tree"
    (tree / "kernel/drivers/vfio").mkdir(parents=True)
    (tree / "kernel/drivers/vfio/vfio.ko").write_bytes(b"module")
    img.add_tree(tree, "lib/modules/6.1.0-test")
    out = tmp_path / "initrd.cpio.gz"
    img.write(out)
    listing = subprocess.run(["cpio", "-itv"], input=gzip.decompress(out.read_bytes()), capture_output=True,
                             check=True).stdout.decode()
    names = [line.split()[-1] if "->" not in line else line.split()[-3] for line in listing.splitlines()]
    assert {"init", "bin", "bin/sh", "dev/console", "lib/modules/6.1.0-test/kernel/drivers/vfio/vfio.ko"} <= set(names)
    # parents are listed before their members, as the kernel's unpacker needs
    assert names.index("lib/modules") < names.index("lib/modules/6.1.0-test/kernel/drivers/vfio/vfio.ko")
    assert any(line.startswith("crw") and "dev/console" in line for line in listing.splitlines())


def _fake_module(path: Path, depends: str, xz: bool = True) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    name = path.name.split(".ko")[0]
    body = b"\x7fELF-fake\x00" + f"license=GPL\x00depends={depends}\x00name={name}\x00".encode()
    path.write_bytes(lzma.compress(body) if xz else body)


def test_module_resolution_follows_modinfo_depends_and_skips_builtins(tmp_path):
    mods = tmp_path / "lib/modules/6.1.0-test"
    _fake_module(mods / "kernel/drivers/vfio/pci/vfio-pci.ko.xz", "vfio_pci_core,vfio")
    _fake_module(mods / "kernel/drivers/vfio/pci/vfio-pci-core.ko.xz", "vfio,irqbypass")
    _fake_module(mods / "kernel/drivers/vfio/vfio.ko.xz", "")
    _fake_module(mods / "kernel/virt/lib/irqbypass.ko.xz", "")
    _fake_module(mods / "kernel/drivers/unused/unused.ko.xz", "")
    (mods / "modules.builtin").write_text("kernel/drivers/base/builtin_thing.ko\n")
    got = resolve_modules(mods, ["vfio-pci", "builtin_thing"])
    assert set(got) == {"vfio_pci", "vfio_pci_core", "vfio", "irqbypass"}
    assert got["vfio"][1].startswith(b"\x7fELF")  # decompressed
    with pytest.raises(InitramfsError, match="'no_such_module' not found"):
        resolve_modules(mods, ["no_such_module"])


def test_build_initramfs_packs_init_busybox_vfbench_and_indexed_modules(tmp_path):
    busybox = shutil.which("busybox")
    if not busybox or not vsriov._is_static(Path(busybox)):
        pytest.skip("static busybox not installed (apt-get install busybox-static)")
    root = tmp_path / "kernel"
    mods = root / "lib/modules/6.1.0-test"
    _fake_module(mods / "kernel/drivers/vfio/vfio-pci.ko.xz", "vfio")
    _fake_module(mods / "kernel/drivers/vfio/vfio.ko.xz", "")
    (mods / "modules.builtin").write_text("")
    kernel = vsriov.GuestKernel("6.1.0-test", "linux-image-6.1.0-test", root / "vmlinuz", mods)
    vfbench = tmp_path / "vfbench"
    vfbench.write_bytes(b"\x7fELF-vfbench")
    out = vsriov.build_initramfs(kernel, vfbench, Path(busybox), tmp_path / "build", modules=["vfio-pci"])
    entries = {e.name: e for e in read_cpio_newc(gzip.decompress(out.read_bytes()))}
    assert entries["init"].data == (vsriov.GUEST_DIR / "init.sh").read_bytes()
    assert stat.S_IMODE(entries["init"].mode) == 0o755
    assert entries["bin/vfbench"].data == b"\x7fELF-vfbench"
    assert entries["bin/sh"].data == b"busybox" and stat.S_ISLNK(entries["bin/sh"].mode)
    assert "lib/modules/6.1.0-test/kernel/drivers/vfio/vfio-pci.ko" in entries
    dep = entries["lib/modules/6.1.0-test/modules.dep"].data.decode()
    assert "vfio-pci.ko:" in dep and "vfio.ko" in dep.split("vfio-pci.ko:")[1].splitlines()[0]
    # same inputs: the cached archive is reused
    assert vsriov.build_initramfs(kernel, vfbench, Path(busybox), tmp_path / "build", modules=["vfio-pci"]) == out


# ---------------------------------------------------------------------------------------------
# the guest plan and the QEMU command line
# ---------------------------------------------------------------------------------------------

def _testbed(**settings) -> config.Testbed:
    return config.Testbed(name="vs", kind="vsriov", vsriov=settings or None)


def test_plan_caps_vf_counts_at_the_device_and_checks_dma_sizes_against_guest_memory():
    prof = config.load_profile("smoke", {"vsriov_vf_counts": [1, 4, 16], "vsriov_dma_sizes_mb": [64]})
    plan = vsriov.make_plan(_testbed(), prof, vsriov.DEVICES["igb"], benchmarks=True)
    assert plan.vf_counts == (1, 4, 7) and plan.nic_vfs == 7
    big = config.load_profile("smoke", {"vsriov_dma_sizes_mb": [64, 1900]})
    with pytest.raises(VsriovError, match="guest_memory_mb >= 2284"):
        vsriov.make_plan(_testbed(), big, vsriov.DEVICES["igb"], benchmarks=True)


def test_kernel_arguments_refuse_whitespace():
    with pytest.raises(VsriovError, match="whitespace"):
        GuestPlan(python="/opt/my python/bin/python").kernel_args(vsriov.DEVICES["nvme"])


def test_qemu_command_has_tcg_iommu_sriov_device_and_two_serial_ports(tmp_path):
    qemu = vsriov.QemuInstall(Path("/usr/bin/qemu-system-x86_64"), (7, 2, 0), "system")
    kernel = vsriov.GuestKernel("6.1.0-test", "linux-image-6.1.0-test", tmp_path / "vmlinuz", tmp_path)
    image = vsriov.GuestImage(qemu, vsriov.DEVICES["nvme"], kernel, tmp_path / "initrd")
    cmd = vsriov.qemu_command(image, _testbed(max_vfs=4).vsriov, GuestPlan(), tmp_path / "console.log")
    text = " ".join(cmd)
    assert "-accel tcg,thread=multi" in text and "intel-iommu,intremap=on,caching-mode=on" in text
    assert "sriov_max_vfs=4" in text and "bus=rp0" in text
    assert cmd.count("-serial") == 2 and f"file:{tmp_path / 'console.log'}" in cmd and "stdio" in cmd
    assert "readonly=on" in text and "vs.pfid=1b36:0010" in text
    assert "virtio-9p-pci" not in " ".join(vsriov.qemu_command(image, _testbed().vsriov, GuestPlan(),
                                                               tmp_path / "c.log", share_root=None))


# ---------------------------------------------------------------------------------------------
# bounded boots: fake QEMU-like programs (a shell script standing in for the emulator)
# ---------------------------------------------------------------------------------------------

def _fake_qemu(tmp_path: Path, body: str) -> list[str]:
    script = tmp_path / "fake-qemu.sh"
    script.write_text("#!/bin/sh\n" + textwrap.dedent(body))
    script.chmod(0o755)
    return [str(script)]


def _alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/stat").read_text().split()[2]
    except OSError:
        return False
    return status != "Z"


def test_a_guest_that_prints_nothing_times_out_and_leaves_no_process(tmp_path):
    pidfile = tmp_path / "child.pid"
    # the "guest" starts a child of its own and then hangs without a word
    cmd = _fake_qemu(tmp_path, f"sleep 300 &\necho $! > {pidfile}\nexec sleep 300\n")
    t0 = time.monotonic()
    outcome = vsriov.boot_guest(cmd, boot_timeout_s=2, run_timeout_s=60)
    elapsed = time.monotonic() - t0
    assert outcome.status == "timeout" and "did not boot within 2 s" in outcome.error
    assert elapsed < 20
    child = int(pidfile.read_text())
    deadline = time.monotonic() + 5
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(child), "the fake guest's child process survived"


def test_a_guest_that_boots_but_never_finishes_hits_the_run_timeout(tmp_path):
    cmd = _fake_qemu(tmp_path, "echo 'VSRIOV booted uptime=1'\necho 'RESULT guest device=nvme'\nexec sleep 300\n")
    outcome = vsriov.boot_guest(cmd, boot_timeout_s=10, run_timeout_s=3)
    assert outcome.status == "timeout" and "did not finish within 3 s" in outcome.error
    assert outcome.boot_s is not None and [r.measurement for r in outcome.results] == ["guest"]


def test_a_guest_that_dies_early_is_a_clear_failure(tmp_path):
    cmd = _fake_qemu(tmp_path, "echo 'VSRIOV booted'\necho 'kernel panic' >&2\nexit 3\n")
    log = tmp_path / "qemu.log"
    outcome = vsriov.boot_guest(cmd, boot_timeout_s=10, run_timeout_s=20, stderr_log=log)
    assert outcome.status == "failed" and "exited (code 3) before the guest finished" in outcome.error
    assert "kernel panic" in log.read_text()


def test_results_stream_to_the_callback_and_bad_lines_are_counted(tmp_path):
    cmd = _fake_qemu(tmp_path, """\
        echo 'VSRIOV booted'
        printf 'RESULT numvfs pf=0000:01:00.0 from=0 n=2 errno=0 ns=5\\r\\n'
        echo 'RESULT bind bdf'
        echo 'VSRIOV done'
        """)
    seen = []
    outcome = vsriov.boot_guest(cmd, boot_timeout_s=10, run_timeout_s=20, on_result=seen.append)
    assert outcome.status == "ok" and outcome.exit_code == 0
    assert [r.fields["n"] for r in seen] == [2]
    assert len(outcome.bad_lines) == 1 and "bind" in outcome.bad_lines[0]


def test_real_qemu_with_a_missing_kernel_fails_with_qemus_message(tmp_path):
    qemu = shutil.which("qemu-system-x86_64")
    if not qemu:
        pytest.skip("qemu-system-x86_64 not installed (apt-get install qemu-system-x86)")
    log = tmp_path / "qemu.log"
    cmd = [qemu, "-accel", "tcg", "-nodefaults", "-display", "none", "-monitor", "none", "-serial", "stdio",
           "-kernel", str(tmp_path / "no-such-vmlinuz")]
    outcome = vsriov.boot_guest(cmd, boot_timeout_s=30, run_timeout_s=60, stderr_log=log)
    assert outcome.status == "failed" and "before the guest booted" in outcome.error
    assert "no-such-vmlinuz" in log.read_text()


def test_without_a_qemu_that_has_igb_auto_falls_back_to_nvme_and_igb_is_a_clear_error():
    version = vsriov.qemu_version("qemu-system-x86_64") if shutil.which("qemu-system-x86_64") else None
    if version is None or version >= (8, 0, 0):
        pytest.skip("needs the system's QEMU < 8 (Debian bookworm's 7.2) to check the fallback")
    qemu, device, note = vsriov.choose_qemu_and_device(_testbed(device="auto"), apt=None)
    assert device.name == "nvme" and qemu.source == "system" and "igb unavailable" in note
    with pytest.raises(VsriovError, match="device igb needs QEMU >= 8"):
        vsriov.choose_qemu_and_device(_testbed(device="igb"), apt=None)


def test_a_missing_emulator_is_a_clear_error(tmp_path):
    with pytest.raises(VsriovError, match="cannot start"):
        vsriov.boot_guest([str(tmp_path / "no-qemu")], boot_timeout_s=1, run_timeout_s=1)


def _fake_image(tmp_path: Path, transcript: str) -> vsriov.GuestImage:
    """A guest image whose "QEMU" replays a transcript of the result channel (then hangs or exits)."""
    script = _fake_qemu(tmp_path, transcript)[0]
    kernel = vsriov.GuestKernel("6.1.0-test", "linux-image-6.1.0-test", tmp_path / "vmlinuz", tmp_path)
    return vsriov.GuestImage(vsriov.QemuInstall(Path(script), (10, 0, 2), "test"), vsriov.DEVICES["igb"], kernel,
                             tmp_path / "initrd")


def test_session_keeps_every_result_measured_before_the_guest_hung(tmp_path):
    tb = _testbed(run_timeout_s=3, inner_qemu_memory_mb=[])
    prof = config.load_profile("smoke")
    run = create_run_dir(tb, prof, run_id="hung", results_root=tmp_path, facts=backend_for(tb).facts())
    image = _fake_image(tmp_path, """\
        echo 'VSRIOV booted'
        echo 'VSRIOV phase=bench'
        echo 'VSRIOV round n=2'
        echo 'RESULT numvfs pf=0000:01:00.0 from=0 n=2 errno=0 ns=470000000'
        exec sleep 300
        """)
    with pytest.raises(VsriovError, match="timeout: the guest did not finish within 3 s"):
        vsriov.run_guest_session(tb, run, prof, image=image, nic_steps=False, progress=False)
    records, report = read_jsonl(run.path / vsriov.VSRIOV_FILE)
    assert report.ok
    first, last = records
    assert (first["kind"], first["phase"], first["round_n"], first["n"]) == ("numvfs", "bench", 2, 2)
    assert (last["kind"], last["status"]) == ("session", "timeout") and "3 s" in last["error"]
    assert "VSRIOV round n=2" in (run.logs_dir / f"vsriov-{last['session_id']}-guest.log").read_text()


def test_session_records_the_guest_nic_timings_and_names_a_failed_nic_step(tmp_path):
    tb = _testbed(inner_qemu_memory_mb=[])
    prof = config.load_profile("smoke")
    run = create_run_dir(tb, prof, run_id="nic", results_root=tmp_path, facts=backend_for(tb).facts())
    prepared = {"step": "prepare_vfs", "ok": True, "ns": 5, "report": {"timings": [
        {"event": "create_vfs", "pf": "0000:01:00.0", "duration_ns": 500}]}}
    released = {"step": "release_vfs", "ok": False, "ns": 5, "error": "NicError: sriov_numvfs busy"}
    image = _fake_image(tmp_path, f"""\
        echo 'VSRIOV booted'
        echo 'VSRIOV phase=nic'
        echo 'RESULT nic_step {{"step":"import","ok":true,"ns":1}}'
        echo 'RESULT nic_step {json.dumps(prepared)}'
        echo 'RESULT nic_step {json.dumps(released)}'
        echo 'VSRIOV done'
        """)
    result = vsriov.run_guest_session(tb, run, prof, image=image, benchmarks=False, progress=False,
                                      raise_on_failure=False)
    assert result.status == "failed" and result.error == "NIC step release_vfs failed: NicError: sriov_numvfs busy"
    assert result.nic_steps == {"import": True, "prepare_vfs": True, "release_vfs": False}
    nic_records, _ = read_jsonl(run.path / "nic.jsonl")
    assert nic_records == [{"event": "create_vfs", "pf": "0000:01:00.0", "duration_ns": 500,
                            "source": "vsriov-guest", "session_id": result.session_id}]


# ---------------------------------------------------------------------------------------------
# analysis and claims on recorded results (a vsriov.jsonl written as the session writes it)
# ---------------------------------------------------------------------------------------------

def _write_run(tmp_path: Path, sizes=(64, 128, 256), counts=(1, 4), dma_repeats=3) -> Path:
    run = tmp_path / "run"
    run.mkdir()
    (run / "run.json").write_text(json.dumps({"run_id": "run", "testbed_kind": "vsriov", "testbed_name": "vsriov"}))
    meta = {"session_id": "s1", "device": "igb", "qemu_version": "10.0.2", "kernel": "6.1.0-test"}
    lines = [
        {"kind": "nic_step", "step": "import", "ok": True, "ns": 3e8},
        {"kind": "nic_step", "step": "prepare_vfs", "ok": True, "ns": 6e8},
        {"kind": "nic_step", "step": "observe_after_prepare", "ok": True, "ns": 1e6,
         "report": {"numvfs": 2, "vfs": {"a": {"driver": "vfio-pci"}, "b": {"driver": "vfio-pci"}}}},
        {"kind": "nic_step", "step": "release_vfs", "ok": True, "ns": 2e9},
    ]
    for n in counts:
        bdfs = [f"0000:01:10.{i}" for i in range(n)]
        lines.append({"kind": "numvfs", "round_n": n, "pf": "0000:01:00.0", "from": 0, "n": n, "errno": 0, "ns": 4.7e8 + n * 1e6})
        for i, b in enumerate(bdfs):
            lines.append({"kind": "bind", "round_n": n, "bdf": b, "driver": "vfio-pci", "errno": 0,
                          "unbind_ns": 4e5, "probe_ns": 1.5e6, "total_ns": 1.9e6})
            lines.append({"kind": "vfio_open", "round_n": n, "bdf": b, "group": str(5 + i), "container_ns": 3e5,
                          "set_iommu_ns": 2e5, "device_fd_ns": 1.11e8 + i, "total_ns": 1.12e8})
            lines.append({"kind": "vfio_reset", "round_n": n, "bdf": b, "status": "ok", "ns": 1.1e8})
            if n == counts[0] and i == 0:
                for mib in [m for _ in range(dma_repeats) for m in sizes]:  # sizes interleaved, as the guest maps them
                    lines.append({"kind": "map_dma", "round_n": n, "bdf": b, "mib": mib, "memory": "untouched",
                                  "errno": 0, "populate_ns": 0, "map_ns": mib * 5e6 + 2e7, "unmap_errno": 0, "unmap_ns": 1e6})
                    lines.append({"kind": "map_dma", "round_n": n, "bdf": b, "mib": mib, "memory": "prefaulted",
                                  "errno": 0, "populate_ns": mib * 7e6, "map_ns": mib * 1.4e5, "unmap_errno": 0, "unmap_ns": 1e6})
            lines.append({"kind": "vfio_close", "round_n": n, "bdf": b, "ns": 1.08e8})
        for b in bdfs:
            lines.append({"kind": "parallel_vf", "round_n": n, "n": n, "bdf": b, "error": "none", "start_offset_ns": 1e5,
                          "open_ns": 1.12e8, "reset_ns": 1.1e8, "close_ns": 1.08e8, "end_offset_ns": 3.4e8})
        lines.append({"kind": "parallel", "round_n": n, "n": n, "failed": 0, "wall_ns": 3.4e8})
        lines.append({"kind": "numvfs", "round_n": n, "pf": "0000:01:00.0", "from": n, "n": 0, "errno": 0, "ns": 2e9})
    lines = [{"phase": "bench", **rec} if rec["kind"] != "nic_step" else {"phase": "nic", **rec} for rec in lines]
    # the inner-QEMU phase enables a VF of its own: not part of the VF-enable benchmark
    lines.append({"kind": "numvfs", "phase": "inner_qemu", "from": 0, "n": 1, "errno": 0, "ns": 9e9})
    for rep in (1, 2, 3):
        for variant, ms in (("plain", 1000), ("vf", 2600), ("prealloc", 1800), ("prealloc+vf", 2300)):
            lines.append({"kind": "inner_qemu", "phase": "inner_qemu", "mem_mb": 256, "variant": variant,
                          "repeat": rep, "rc": 0, "ns": (ms + rep) * 1e6})
    lines.append({"kind": "session", "status": "ok", "error": None, "boot_s": 6.1, "total_s": 22.5,
                  "qemu_source": "bookworm-backports (work dir)"})
    with open(run / "vsriov.jsonl", "w") as fh:
        for rec in lines:
            fh.write(json.dumps({**meta, **rec}) + "\n")
        fh.write('{"kind": "numvfs", "trunc')  # an interrupted last line is skipped, not fatal
    return run


def test_frames_are_built_from_the_recorded_lines(tmp_path):
    run = _write_run(tmp_path)
    en = vsriov_analysis.vf_enable_frame(run)
    assert set(en["operation"]) == {"enable", "disable"} and sorted(en["vfs"].unique()) == [1, 4]
    assert len(vsriov_analysis.bind_frame(run)) == 5
    v = vsriov_analysis.vfio_frame(run)
    assert set(v["mode"]) == {"sequential", "parallel"} and set(v["operation"]) == {"open", "reset", "close"}
    p = vsriov_analysis.parallel_frame(run).set_index("n")
    assert p.loc[4, "sequential_ms"] == pytest.approx(4 * (111 + 110 + 108), abs=0.1)
    assert list(vsriov_analysis.dma_frame(run)["mib"].unique()) == [64, 128, 256]
    assert en["ms"].max() < 9000  # the inner-QEMU phase's VF is left out
    q = vsriov_analysis.inner_qemu_frame(run)
    assert len(q) == 12 and set(q["variant"]) == set(vsriov_analysis.INNER_VARIANTS)


def test_vsriov_claims_are_computed_from_the_run(tmp_path):
    run = _write_run(tmp_path)
    table = vsriov_report.claims_table(run).set_index("claim")
    assert table.loc["V5-dma-map-linear-in-memory", "verdict"] == "holds"  # the lines above are exactly linear
    speedup = claims.metrics()["vsriov_dma_prefault_speedup"](run)
    assert speedup.value == pytest.approx((256 * 5e6 + 2e7) / (256 * 1.4e5)) and speedup.rounds == 3
    assert claims.metrics()["vsriov_vfio_ms"](run, operation="reset", stat="min").value == pytest.approx(110)
    extra = claims.metrics()["vsriov_vf_start_overhead_difference"](run)  # (2600 - 1000) - (2300 - 1800)
    assert extra.value == pytest.approx(1100) and extra.rounds == 3 and extra.low <= extra.value <= extra.high
    assert table.loc["V1-nic-steps-run-on-real-kernel", "role"] == "check"
    assert table.loc["V5-dma-map-linear-in-memory", "measured"].startswith("1 [1, 1] (3 rounds")
    # this run has the older micro-benchmarks only; V10-V13 need the startup experiments
    startup_claims = table.index.str.match(r"V1[0-3]-")
    assert set(table[~startup_claims]["verdict"]) == {"holds"}
    assert set(table[startup_claims]["verdict"]) == {"not measured"}


def test_too_few_dma_sizes_or_vfs_are_not_measured_rather_than_guessed(tmp_path):
    run = _write_run(tmp_path, sizes=(64, 128), counts=(1,))
    assert claims.metrics()["vsriov_dma_linear_r2"](run) is None
    (tmp_path / "one").mkdir()
    one = _write_run(tmp_path / "one", dma_repeats=1)  # one map per size: a value, but no interval
    assert vsriov_report.claims_table(one).set_index("claim").loc["V5-dma-map-linear-in-memory", "verdict"] == \
        "inconclusive"
    table = vsriov_report.claims_table(run).set_index("claim")
    assert table.loc["V10-shared-devset-serialises-vf-opens", "verdict"] == "not measured"


def test_claims_file_loads_and_every_metric_is_registered():
    loaded = claims.load_claims([vsriov_report.CLAIMS_FILE])
    assert loaded and all(c.testbed_kinds == ["vsriov"] for c in loaded)
    assert all(c.metric in claims.metrics() for c in loaded)


def test_report_section_writes_png_and_pdf_figures_with_the_emulation_caption(tmp_path):
    run = _write_run(tmp_path)
    md, paths = write_section(vsriov_report.report_section(run), run)
    names = {p.name for p in paths}
    for fig in vsriov_figures.FIGURE_NAMES[:6]:  # the startup figures need the startup experiments
        assert {f"{fig}.png", f"{fig}.pdf"} <= names
    assert all(p.exists() and p.stat().st_size > 0 for p in paths)
    assert "shapes and ratios carry over, absolute times do not" in md
    assert "figures/vsriov-dma.png" in md


def test_report_of_a_vsriov_run_lists_each_claim_once_and_no_empty_pod_figures(tmp_path):
    from fastiov_lib.report import markdown as report

    run = _write_run(tmp_path)
    text = report.write_report(run).read_text()
    assert text.count("| V6-prefaulted-maps-10x-faster |") == 1
    assert "No pods in this run" in text
    assert not (run / "figures" / "startup_vs_concurrency.png").exists()
    assert (run / "figures" / "vsriov-dma.png").exists()


# ---------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------

def test_cli_plan_lists_the_set_up_steps(tmp_path):
    tb = tmp_path / "vs.yaml"
    tb.write_text(f"name: vs\nkind: vsriov\nvsriov:\n  work_dir: {tmp_path / 'work'}\n")
    out = subprocess.run(CLI + ["vsriov", "plan", "--testbed", str(tb)], capture_output=True, text=True,
                         cwd=REPO_ROOT, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "guest kernel" in out.stdout and "initramfs" in out.stdout and "to do" in out.stdout


def test_cli_refuses_a_testbed_of_another_kind(tmp_path):
    out = subprocess.run(CLI + ["vsriov", "up", "--testbed", "testbeds/local.yaml", "--out", str(tmp_path / "r")],
                         capture_output=True, text=True, cwd=REPO_ROOT, timeout=60)
    assert out.returncode == 2 and "expected 'vsriov'" in out.stderr


def test_cli_names_the_unknown_key_of_a_bad_testbed(tmp_path):
    tb = tmp_path / "vs.yaml"
    tb.write_text("name: vs\nkind: vsriov\nvsriov:\n  max_vf: 3\n")
    out = subprocess.run(CLI + ["vsriov", "plan", "--testbed", str(tb)], capture_output=True, text=True,
                         cwd=REPO_ROOT, timeout=60)
    assert out.returncode == 2 and "vsriov.max_vf" in out.stderr and str(tb) in out.stderr


def test_cli_refuses_a_run_directory_name_that_is_not_a_run_id(tmp_path):
    out = subprocess.run(CLI + ["vsriov", "up", "--testbed", "testbeds/vsriov.yaml", "--out", str(tmp_path / "bad id!")],
                         capture_output=True, text=True, cwd=REPO_ROOT, timeout=60)
    assert out.returncode == 2 and "only letters, digits" in out.stderr
    assert not (tmp_path / "bad id!").exists()
