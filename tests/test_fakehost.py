"""The reactive fake sysfs behaves like the kernel's file protocol (and refuses what it refuses)."""
from __future__ import annotations

import errno
import os

import pytest
from fastiov_lib.hw.fake_sysfs import FakeHostSpec, FakePf, FakeSysfs
from fastiov_lib.testbeds.fastiov_host.fake_host import build_fake_host, spec_for_testbed
from fastiov_lib.config import load_testbed

PF = "0000:e3:00.0"


@pytest.fixture
def fake(tmp_path):
    root = build_fake_host(tmp_path, FakeHostSpec(configs=False))
    return root, FakeSysfs(root)


def _dev(root, addr):
    return root / "sys/bus/pci/devices" / addr


def test_writing_numvfs_creates_vf_devices_and_virtfn_links(fake):
    root, fs = fake
    fs.write(_dev(root, PF) / "sriov_numvfs", "3")
    links = sorted(n for n in os.listdir(_dev(root, PF)) if n.startswith("virtfn"))
    assert links == ["virtfn0", "virtfn1", "virtfn2"]
    vf = os.path.basename(os.readlink(_dev(root, PF) / "virtfn0"))
    assert vf == "0000:e3:01.0" and (_dev(root, vf) / "physfn").is_symlink()
    assert (_dev(root, vf) / "device").read_text().strip() == "0x1889"
    assert os.path.basename(os.readlink(_dev(root, vf) / "driver")) == "iavf"  # autoprobe is on by default
    assert (root / "sys/bus/pci/drivers/iavf" / vf).is_symlink()


def test_kernel_refusals_have_the_kernels_errno(fake, tmp_path):
    root, fs = fake
    fs.write(_dev(root, PF) / "sriov_numvfs", "2")
    with pytest.raises(OSError) as busy:
        fs.write(_dev(root, PF) / "sriov_numvfs", "4")
    assert busy.value.errno == errno.EBUSY
    with pytest.raises(OSError) as ro:
        fs.write(_dev(root, PF) / "sriov_totalvfs", "4")
    assert ro.value.errno == errno.EACCES
    with pytest.raises(OSError) as nodev:
        fs.write(root / "sys/bus/pci/drivers/vfio-pci/unbind", "0000:e3:01.0")  # bound to iavf, not vfio-pci
    assert nodev.value.errno == errno.ENODEV
    with pytest.raises(OSError) as outside:
        fs.write(tmp_path.parent / "elsewhere", "1")
    assert outside.value.errno == errno.EACCES


def test_unbind_override_and_probe_move_the_driver_link(fake):
    root, fs = fake
    fs.write(_dev(root, PF) / "sriov_numvfs", "1")
    vf = "0000:e3:01.0"
    fs.write(_dev(root, vf) / "driver_override", "vfio-pci")
    with pytest.raises(OSError):
        fs.write(root / "sys/bus/pci/drivers/iavf/bind", vf)  # already bound
    fs.write(root / "sys/bus/pci/drivers/iavf/unbind", vf)
    assert not (_dev(root, vf) / "driver").exists()
    fs.write(root / "sys/bus/pci/drivers_probe", vf)
    assert os.path.basename(os.readlink(_dev(root, vf) / "driver")) == "vfio-pci"
    fs.write(_dev(root, PF) / "sriov_numvfs", "0")
    assert not _dev(root, vf).exists() and not (root / "sys/bus/pci/drivers/vfio-pci" / vf).exists()


def test_pf_without_a_driver_cannot_enable_sriov(tmp_path):
    root = build_fake_host(tmp_path, FakeHostSpec(configs=False, pfs=[FakePf(PF, "ens1f0", driver=None)]))
    with pytest.raises(OSError) as err:
        FakeSysfs(root).write(_dev(root, PF) / "sriov_numvfs", "1")
    assert err.value.errno == errno.ENOENT


def test_hugepages_reserve_only_what_memory_allows(tmp_path):
    root = build_fake_host(tmp_path, FakeHostSpec(configs=False, hugepages_2m=0, hugepages_max=100))
    nr = root / "sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages"
    FakeSysfs(root).write(nr, "500")
    assert nr.read_text().strip() == "100"


def test_spec_for_testbed_follows_the_testbed_file(tmp_path):
    tb = load_testbed("testbeds/fastiov-e810.example.yaml")
    spec = spec_for_testbed(tb)
    assert [p.address for p in spec.pfs] == list(tb.fastiov.pfs)
    assert [p.netdev for p in spec.pfs] == list(tb.fastiov.pf_netdevs)
    root = build_fake_host(tmp_path, spec, tb)
    assert (root / "etc/kata-containers/configuration-qemu-3.toml").is_file()
    with pytest.raises(KeyError, match="no field"):
        spec_for_testbed(tb, colour="red")
