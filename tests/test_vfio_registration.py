"""The per-VF VFIO device-set registration: _IO(';', 125) on /dev/vfio/vfio with (bus, device, function)."""
from __future__ import annotations

import os
import stat
import struct

import pytest

from fastiov_lib.config import load_testbed
from fastiov_lib.hw import nic
from fastiov_lib.hw.fake_sysfs import FakeHostSpec, FakeSysfs
from fastiov_lib.testbeds.fastiov_host.fake_host import build_fake_host, spec_for_testbed
from fastiov_lib.hw.nic import NicError

EXAMPLE = "testbeds/fastiov-e810.example.yaml"


def test_request_number_is_linux_io_of_semicolon_125():
    assert nic.REGISTER_VF_IOCTL == 0x3B7D == (ord(";") << 8 | 125)
    s = load_testbed(EXAMPLE).fastiov
    assert s.fastiov_register_ioctl == 0x3B7D and str(s.fastiov_register_device) == "/dev/vfio/vfio"


def test_argument_is_bus_device_function_as_three_native_u32_without_domain():
    buf = nic.register_arg("0000:e3:11.7")
    assert len(buf) == 12 and struct.unpack("@III", buf) == (0xE3, 0x11, 7)
    assert nic.register_arg("0001:e3:11.7") == buf  # the domain is not part of it


def test_registration_issues_the_ioctl_on_a_real_character_device(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("mknod needs root")
    root = build_fake_host(tmp_path / "root", FakeHostSpec(configs=False))
    node = root / "dev/vfio/vfio"
    node.unlink()
    os.mknod(node, stat.S_IFCHR | 0o600, os.makedev(1, 3))  # /dev/null: a real device without this ioctl
    rep = nic.NicReport(pf="0000:e3:00.0", requested_vfs=1)
    with pytest.raises(NicError, match=r"ioctl 0x3b7d for 0000:e3:01.2 \(bus, device, function \(227, 1, 2\)\) "
                                       r"failed: Inappropriate ioctl"):
        nic.register_device_sets(root, ["0000:e3:01.2"], "/dev/vfio/vfio", nic.REGISTER_VF_IOCTL, rep)
    rep2 = nic.NicReport(pf="0000:e3:00.0", requested_vfs=1)
    nic.register_device_sets(root, ["0000:e3:01.2"], "/dev/vfio/vfio", nic.REGISTER_VF_IOCTL, rep2,
                             disabled_reason="kernel 6.1 is not the patched kernel")
    assert rep2.skipped[0]["reason"].startswith("kernel 6.1") and rep2.registered == []


def test_plan_has_one_ioctl_row_per_vf_on_the_vfio_node_between_create_and_bind(tmp_path):
    tb = load_testbed(EXAMPLE)
    root = build_fake_host(tmp_path, spec_for_testbed(tb, configs=False, hugepages_2m=0))
    steps = {st.name: st.plan() for st in nic.nic_steps(tb.fastiov, root)}
    rows = steps["vfs 0000:e3:00.0"]
    ioctl = [r for r in rows if r["action"] == "ioctl"]
    assert len(ioctl) == tb.fastiov.vfs_per_pf and {r["target"] for r in ioctl} == {"/dev/vfio/vfio"}
    assert ioctl[0]["value"] == "0x3b7d (bus, device, function) = (0xe3, 0x1, 0) for 0000:e3:01.0"
    first, last = rows.index(ioctl[0]), rows.index(ioctl[-1])
    assert any("sriov_numvfs" in r["target"] for r in rows[:first])  # after the VFs exist
    assert all("driver_override" not in r["target"] for r in rows[:first]) and "drivers_probe" in rows[last + 1:][-1]["target"]


def test_registration_is_skipped_with_its_reason_on_a_stock_kernel(tmp_path):
    tb = load_testbed(EXAMPLE, overrides={"allow_host_changes": True})
    spec = spec_for_testbed(tb, configs=False)
    spec.kernel_release = "6.1.0-40-amd64"
    root = build_fake_host(tmp_path, spec)
    rows = [r for st in nic.nic_steps(tb.fastiov, root) for r in st.plan() if r["action"] == "ioctl"]
    assert len(rows) == 2 and all("is not the patched *-rc5test kernel" in r["value"] for r in rows)
    reports = nic.nic_apply(tb.fastiov, root, tb.allow_host_changes, writer=FakeSysfs(root))
    assert all(r.registered == [] and "not the patched" in r.skipped[0]["reason"] for r in reports)
    assert all(len(r.vfs) == tb.fastiov.vfs_per_pf for r in reports)  # binding went ahead
