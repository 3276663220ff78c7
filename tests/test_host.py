"""Host checks on generated fake host trees: one healthy host and one tree per typical problem."""
from __future__ import annotations

import pytest

from fastiov_lib.testbeds.fastiov_host import host_checks as host
from fastiov_lib.testbeds import backend_for
from fastiov_lib.testbeds.checks import worst_status
from fastiov_lib.config import load_testbed
from fastiov_lib.testbeds.fastiov_host.fake_host import build_fake_host, spec_for_testbed

EXAMPLE = "testbeds/fastiov-e810.example.yaml"


@pytest.fixture(scope="module")
def testbed():
    return load_testbed(EXAMPLE)


def _checks(tmp_path, testbed, **changes):
    root = build_fake_host(tmp_path / "root", spec_for_testbed(testbed, **changes), testbed)
    tb = testbed.model_copy(update={"sys_root": root})
    return {c.name: c for c in backend_for(tb).checks()}


def test_good_host_passes_every_check(tmp_path, testbed):
    checks = _checks(tmp_path, testbed)
    assert worst_status(checks.values()) == "pass", [c for c in checks.values() if c.status != "pass"]
    assert "variant fastiov" in checks["config.kata"].seen


def test_iommu_off_fails_cmdline_and_sysfs_checks(tmp_path, testbed):
    checks = _checks(tmp_path, testbed, iommu=False, cmdline="BOOT_IMAGE=/vmlinuz ro intel_iommu=off")
    assert checks["iommu.cmdline"].status == "fail" and "intel_iommu=on" in checks["iommu.cmdline"].fix
    assert checks["iommu.active"].status == "fail"
    assert checks["kvm.device"].status == "pass"


def test_missing_hugepages_fail_and_too_few_warn(tmp_path, testbed):
    assert _checks(tmp_path / "a", testbed, hugepages_2m=0)["hugepages.2m"].status == "fail"
    few = _checks(tmp_path / "b", testbed, hugepages_2m=1024)["hugepages.2m"]
    assert few.status == "warn" and "1024" in few.seen


def test_wrong_kernel_fails_and_stock_64_warns(tmp_path, testbed):
    wrong = _checks(tmp_path / "a", testbed, kernel_release="6.1.0-18-amd64")["kernel.release"]
    assert wrong.status == "fail" and "-rc5test" in wrong.fix and "-stock" in wrong.fix
    assert _checks(tmp_path / "b", testbed, kernel_release="6.4.0")["kernel.release"].status == "warn"


def test_the_stock_boot_of_the_campaign_passes_without_the_fastiov_module(tmp_path, testbed):
    checks = _checks(tmp_path, testbed, kernel_release="6.4.0-stock", modules=("kvm", "kvm_intel", "vfio",
                     "vfio_pci", "vfio_iommu_type1", "ice"), fastiov_device=None)
    assert checks["kernel.release"].status == "pass" and "vanilla boot" in checks["kernel.release"].seen
    assert checks["module.fastiov"].status == "pass" and "not used on the stock kernel" in checks["module.fastiov"].seen


def test_missing_modules_and_fastiov_node_fail(tmp_path, testbed):
    checks = _checks(tmp_path, testbed, modules=("kvm", "kvm_intel", "vfio", "vfio_iommu_type1"))
    assert checks["module.vfio_pci"].status == "fail" and checks["module.vfio_pci"].fix == "modprobe vfio_pci"
    assert checks["module.fastiov"].status == "fail" and "insmod" in checks["module.fastiov"].fix
    assert checks["module.vfio"].status == "pass"


def test_wrong_config_key_fails_naming_the_key(tmp_path, testbed):
    checks = _checks(tmp_path, testbed, kata_overrides={"hypervisor.qemu.default_memory": 2048})
    kata = checks["config.kata"]
    assert kata.status == "fail" and "default_memory = 2048 (want 512)" in kata.seen


def test_missing_binaries_and_wrong_versions(tmp_path, testbed):
    spec = spec_for_testbed(testbed)
    bins = dict(spec.binaries)
    bins.pop("usr/local/bin/containerd")
    bins[str(testbed.fastiov.qemu_fastiov).lstrip("/")] = "QEMU emulator version 7.2.0"
    checks = _checks(tmp_path, testbed, binaries=bins, kvm=False, cpu_flags=("fpu", "sse2"))
    assert checks["binary.containerd"].status == "fail"
    assert checks["binary.qemu-fastiov"].status == "warn" and "7.2.0" in checks["binary.qemu-fastiov"].seen
    assert checks["kvm.device"].status == "fail" and checks["cpu.virtualisation"].status == "fail"


def test_host_check_cli_exits_non_zero_on_a_failing_host(tmp_path, testbed, capsys):
    from fastiov_lib.commands.cli import main

    root = build_fake_host(tmp_path / "bad", spec_for_testbed(testbed, iommu=False), testbed)
    assert main(["host-check", "--testbed", EXAMPLE, "--root", str(root)]) == 1
    assert "FAIL  iommu.active" in capsys.readouterr().out
    good = build_fake_host(tmp_path / "good", spec_for_testbed(testbed), testbed)
    assert main(["host-check", "--testbed", EXAMPLE, "--root", str(good)]) == 0


def test_vsriov_checks_need_qemu_but_not_kvm(tmp_path):
    from fastiov_lib.config import Testbed, VsriovSettings

    qemu = tmp_path / "qemu-system-x86_64"
    qemu.write_text("#!/bin/sh\necho 'QEMU emulator version 10.0.2 (Debian 1:10.0.2+ds-1~bpo12+1)'\n")
    qemu.chmod(0o755)
    tb = Testbed(name="v", kind="vsriov", sys_root=tmp_path, vsriov=VsriovSettings(qemu_bin=str(qemu)))
    (tmp_path / "proc").mkdir()
    (tmp_path / "proc/meminfo").write_text("MemTotal: 24000000 kB\nMemAvailable: 16000000 kB\n")
    checks = {c.name: c for c in backend_for(tb).checks()}
    assert checks["vsriov.qemu"].status == "pass" and "10.0.2" in checks["vsriov.qemu"].seen
    assert "igb" in checks["vsriov.device"].seen and checks["vsriov.accel"].status == "pass"
    assert checks["vsriov.memory"].status == "pass"
    missing = Testbed(name="v", kind="vsriov", sys_root=tmp_path,
                      vsriov=VsriovSettings(qemu_bin=str(tmp_path / "absent-qemu")))
    assert {c.name: c for c in backend_for(missing).checks()}["vsriov.qemu"].status == "fail"


def test_example_testbed_documents_every_key_of_a_real_host():
    import yaml

    from fastiov_lib.config import FastiovHostSettings, Testbed, resolve_path

    text = resolve_path(EXAMPLE).read_text()
    data = yaml.safe_load(text)
    assert set(FastiovHostSettings.model_fields) == set(data["fastiov"])
    assert set(Testbed.model_fields) - {"local", "vsriov", "source_path"} == set(data)
    for key in data["fastiov"]:  # each key carries an explanation (a comment on or above its line)
        line = next(i for i, x in enumerate(text.splitlines()) if x.strip().startswith(f"{key}:"))
        here, above = text.splitlines()[line], text.splitlines()[line - 1]
        assert "#" in here or above.strip().startswith("#") or key == "instrumentation_log_dirs", key
