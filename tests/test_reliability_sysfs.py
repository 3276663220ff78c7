"""Odd sysfs contents (issue 21, items 13, 14): a malformed SR-IOV attribute is named with its file
before the first write; kernel files are read bounded, so a link to /dev/zero cannot grow memory."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from fastiov_lib.hw import discovery, nic
from fastiov_lib.hw.fake_sysfs import FakeHostSpec, FakeSysfs, build_fake_host

REPO = Path(__file__).resolve().parent.parent
PF0 = "0000:e3:00.0"
HUGEPAGES = "sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages"


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fastiov_lib", *args], capture_output=True, text=True, timeout=120)


@pytest.fixture()
def fake_host(tmp_path):
    """A testbed file allowing host changes and a fake host tree made by `nic fake-tree`."""
    testbed = tmp_path / "e810.yaml"
    testbed.write_text((REPO / "testbeds/fastiov-e810.example.yaml").read_text()
                       .replace("allow_host_changes: false", "allow_host_changes: true"))
    root = tmp_path / "root"
    result = _cli("nic", "fake-tree", "--testbed", str(testbed), "--root", str(root))
    assert result.returncode == 0, result.stderr
    return testbed, root


@pytest.mark.parametrize("content, needle", [
    (b"7 extra\n", "'7 extra' is not a number"),  # item 14
    (bytes(range(256)) * 4, "binary content"),  # item 13
])
def test_a_malformed_sriov_attribute_stops_nic_apply_before_the_hugepages(fake_host, content, needle):
    testbed, root = fake_host
    attribute = root / "sys/bus/pci/devices" / PF0 / "sriov_numvfs"
    attribute.write_bytes(content)
    before = (root / HUGEPAGES).read_text()
    result = _cli("nic", "apply", "--testbed", str(testbed), "--root", str(root), "--fake-kernel")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    errors = [ln for ln in result.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and str(attribute) in errors[0] and needle in errors[0], result.stderr
    assert (root / HUGEPAGES).read_text() == before  # nothing was applied
    assert not list((root / "sys/bus/pci/devices" / PF0).glob("virtfn*"))


def test_random_bytes_in_sriov_totalvfs_are_named_by_plan_and_discovery(tmp_path):
    root = build_fake_host(tmp_path / "root", FakeHostSpec(configs=False))
    total = root / "sys/bus/pci/devices" / PF0 / "sriov_totalvfs"
    total.write_bytes(b"\xff\xfe\x00garbage\x80")
    with pytest.raises(nic.NicError, match="sriov_totalvfs: binary content"):
        discovery.discover_pfs(root)
    problems = nic.guard_problems(root, PF0, 4)
    assert len(problems) == 1 and str(total) in problems[0]


def test_a_kernel_file_linked_to_dev_zero_reads_as_absent_not_forever(tmp_path):
    root = build_fake_host(tmp_path / "root", FakeHostSpec(configs=False))
    numvfs = root / "sys/bus/pci/devices" / PF0 / "sriov_numvfs"
    numvfs.unlink()
    numvfs.symlink_to("/dev/zero")
    assert discovery.describe_pf(root, PF0).num_vfs == 0  # a device is not read: absent, as the kernel lacks it
    route = root / "proc/net/route"
    route.unlink()
    route.symlink_to("/dev/urandom")
    assert discovery.read_routes(root) == []


def test_the_fake_kernel_answers_a_broken_attribute_with_an_io_error_naming_it(tmp_path):
    root = build_fake_host(tmp_path / "root", FakeHostSpec(configs=False))
    (root / "sys/bus/pci/devices" / PF0 / "sriov_totalvfs").write_text("lots\n")
    with pytest.raises(OSError, match="not a number in the fake tree") as err:
        FakeSysfs(root).write(root / "sys/bus/pci/devices" / PF0 / "sriov_numvfs", "2")
    assert err.value.filename.endswith("sriov_totalvfs")
