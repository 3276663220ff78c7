"""NIC set-up on the reactive fake sysfs: discovery, VF creation, binding, hugepages, every guard."""
from __future__ import annotations

import json
import os
import stat

import pytest

from fastiov_lib.hw import nic
from fastiov_lib.config import load_testbed
from fastiov_lib.hw.fake_sysfs import FakePf, FakeHostSpec, FakeSysfs
from fastiov_lib.testbeds.fastiov_host.fake_host import build_fake_host, spec_for_testbed
from fastiov_lib.hw.nic import GuardError, NicError
from fastiov_lib.hw.host_steps import HostChangesNotAllowed

PF0, PF1 = "0000:e3:00.0", "0000:e3:00.1"
EXAMPLE = "testbeds/fastiov-e810.example.yaml"


@pytest.fixture
def root(tmp_path):
    return build_fake_host(tmp_path / "root", FakeHostSpec(configs=False))


def test_discovers_sriov_pfs_with_their_netdevs(root):
    pfs = {p.address: p for p in nic.discover_pfs(root)}
    assert set(pfs) == {PF0, PF1}  # the management NIC has no sriov_totalvfs
    assert pfs[PF0].total_vfs == 128 and pfs[PF0].netdevs == ["ens1f0"] and pfs[PF0].driver == "ice"


def test_prepare_vfs_creates_binds_and_times_them(root):
    fs = FakeSysfs(root)
    rep = nic.prepare_vfs(root, PF1, 20, writer=fs, threads=4, fastiov_device="/dev/dev_fastiov")
    assert rep.vfs == nic.list_vfs(root, PF1) and len(rep.vfs) == 20
    assert rep.vfs[0] == "0000:e3:11.0" and rep.vfs[8] == "0000:e3:12.0"  # read from the virtfn links
    assert set(rep.drivers.values()) == {"vfio-pci"}
    assert all(nic.current_driver(root, vf) == "vfio-pci" for vf in rep.vfs)
    events = [t["event"] for t in rep.timings]
    assert events.count("create_vfs") == 1 and events.count("bind_vf") == 20 and "bind_all" in events
    # autoprobe was switched off before the VFs appeared, so no host VF driver grabbed them
    first = [p for p, _ in fs.log[:2]]
    assert first == [f"sys/bus/pci/devices/{PF1}/sriov_drivers_autoprobe", f"sys/bus/pci/devices/{PF1}/sriov_numvfs"]
    assert not any("iavf/unbind" in p for p, _ in fs.log)
    assert rep.skipped and "not a character device" in rep.skipped[0]["reason"]


def test_prepare_is_idempotent_and_changes_a_count_via_zero(root):
    fs = FakeSysfs(root)
    nic.prepare_vfs(root, PF0, 4, writer=fs)
    n = len(fs.log)
    again = nic.prepare_vfs(root, PF0, 4, writer=fs)
    assert len(fs.log) == n and again.skipped[0]["what"] == "create VFs"
    nic.prepare_vfs(root, PF0, 6, writer=fs)
    writes = [(p.rsplit("/", 1)[-1], v) for p, v in fs.log[n:] if p.endswith("sriov_numvfs")]
    assert writes == [("sriov_numvfs", "0"), ("sriov_numvfs", "6")]


def test_vfs_taken_by_the_host_driver_are_unbound_first(root):
    fs = FakeSysfs(root)
    rep = nic.prepare_vfs(root, PF0, 3, writer=fs, autoprobe_off=False)
    assert any(p == "sys/bus/pci/drivers/iavf/unbind" for p, _ in fs.log)
    assert set(rep.drivers.values()) == {"vfio-pci"}


def test_plan_lists_every_write_and_matches_apply(root):
    planned = nic.plan_pf_writes(root, PF0, 5)
    fs = FakeSysfs(root)
    nic.prepare_vfs(root, PF0, 5, writer=fs)
    assert sorted((os.path.relpath(w.path, root), w.value) for w in planned) == sorted(fs.log)  # threads reorder binds
    assert [os.path.relpath(w.path, root) for w in planned[:2]] == [p for p, _ in fs.log[:2]]
    assert nic.plan_pf_writes(root, PF0, 5) == []


def test_release_vfs_undoes_everything(root):
    fs = FakeSysfs(root)
    nic.prepare_vfs(root, PF0, 4, writer=fs)
    vfs = nic.list_vfs(root, PF0)
    rep = nic.release_vfs(root, PF0, writer=fs)
    assert nic.list_vfs(root, PF0) == [] and not any((root / "sys/bus/pci/devices" / vf).exists() for vf in vfs)
    assert (root / f"sys/bus/pci/devices/{PF0}/sriov_drivers_autoprobe").read_text().strip() == "1"
    assert any(t["event"] == "disable_vfs" for t in rep.timings)


def test_guard_refuses_pf_carrying_the_default_route(tmp_path):
    root = build_fake_host(tmp_path, FakeHostSpec(configs=False, default_route_netdev="ens1f0"))
    fs = FakeSysfs(root)
    with pytest.raises(GuardError, match="ens1f0 carries the default route"):
        nic.prepare_vfs(root, PF0, 2, writer=fs)
    assert fs.log == []


def test_guard_refuses_pf_with_an_address_in_use(tmp_path):
    root = build_fake_host(tmp_path, FakeHostSpec(configs=False, addressed_netdevs=("ens1f1",), ipv6_netdevs=("ens1f0",)))
    fs = FakeSysfs(root)
    with pytest.raises(GuardError, match="ens1f1 has an IPv4 address in use"):
        nic.prepare_vfs(root, PF1, 2, writer=fs)
    with pytest.raises(GuardError, match="ens1f0 has a global IPv6 address"):
        nic.prepare_vfs(root, PF0, 2, writer=fs)
    assert fs.log == []


def test_guard_refuses_more_vfs_than_totalvfs(root):
    fs = FakeSysfs(root)
    with pytest.raises(GuardError, match="numvfs 129 is above sriov_totalvfs 128"):
        nic.prepare_vfs(root, PF0, 129, writer=fs)
    assert fs.log == []
    # and the fake kernel itself refuses it like the real one (ERANGE)
    with pytest.raises(OSError) as err:
        fs.write(root / f"sys/bus/pci/devices/{PF0}/sriov_numvfs", "129")
    assert err.value.errno == 34


def test_guard_refuses_a_device_that_is_not_sriov_capable(tmp_path):
    root = build_fake_host(tmp_path, FakeHostSpec(configs=False, pfs=[FakePf(PF0, "ens1f0", sriov_capable=False)]))
    with pytest.raises(GuardError, match="not SR-IOV capable"):
        nic.prepare_vfs(root, PF0, 1, writer=FakeSysfs(root))
    with pytest.raises(GuardError, match="not SR-IOV capable"):
        nic.prepare_vfs(root, "0000:00:1f.6", 1, writer=FakeSysfs(root))
    with pytest.raises(NicError, match="no such PCI device"):
        nic.prepare_vfs(root, "0000:99:00.0", 1, writer=FakeSysfs(root))


def test_apply_without_allow_host_changes_is_refused(tmp_path):
    tb = load_testbed(EXAMPLE)
    root = build_fake_host(tmp_path, spec_for_testbed(tb, configs=False))
    assert tb.allow_host_changes is False
    fs = FakeSysfs(root)
    with pytest.raises(HostChangesNotAllowed, match="allow_host_changes"):
        nic.nic_apply(tb.fastiov, root, tb.allow_host_changes, writer=fs)
    assert fs.log == []


def test_nic_apply_on_a_testbed_records_timings_in_the_run_dir(tmp_path):
    tb = load_testbed(EXAMPLE, overrides={"allow_host_changes": True, "fastiov.vfs_per_pf": 8})
    root = build_fake_host(tmp_path / "root", spec_for_testbed(tb, configs=False, hugepages_2m=0, hugepages_max=20000))
    run = tmp_path / "run"
    reports = nic.nic_apply(tb.fastiov, root, tb.allow_host_changes, run, writer=FakeSysfs(root))
    assert [len(r.vfs) for r in reports] == [8, 8]
    lines = [json.loads(x) for x in (run / nic.NIC_RECORDS_FILE).read_text().splitlines()]
    hp = lines[0]
    assert hp["event"] == "hugepages" and hp["requested"] == 51200 and hp["got"] == 20000 and hp["ok"] is False
    assert sum(1 for x in lines if x["event"] == "create_vfs") == 2
    assert {x["pf"] for x in lines if x["event"] == "bind_vf"} == {PF0, PF1}
    nic.nic_release(tb.fastiov, root, tb.allow_host_changes, run, writer=FakeSysfs(root))
    assert nic.list_vfs(root, PF0) == []


def test_nic_plan_cli_prints_every_sysfs_write_against_a_fake_tree(tmp_path, capsys):
    from fastiov_lib.commands.cli import main

    tb = load_testbed(EXAMPLE)
    root = build_fake_host(tmp_path, spec_for_testbed(tb, configs=False, hugepages_2m=0))
    assert main(["nic", "plan", "--testbed", EXAMPLE, "--root", str(root)]) == 0
    out = capsys.readouterr().out
    assert f"sys/bus/pci/devices/{PF0}/sriov_numvfs" in out and "nr_hugepages" in out
    assert out.count("drivers_probe") == 200 and "ioctl" in out


def test_nic_cli_rehearses_apply_and_release_on_a_generated_tree(tmp_path, capsys):
    from fastiov_lib.commands.cli import main
    from fastiov_lib.config import resolve_path

    testbed = tmp_path / "host.yaml"
    testbed.write_text(resolve_path(EXAMPLE).read_text().replace("allow_host_changes: false", "allow_host_changes: true"))
    root, run = tmp_path / "fake", tmp_path / "run"
    args = ["--testbed", str(testbed), "--root", str(root)]
    assert main(["nic", "fake-tree", *args]) == 0
    assert main(["nic", "apply", *args, "--fake-kernel", "--run-dir", str(run)]) == 0
    out = capsys.readouterr().out
    assert out.count("100 VFs on ['vfio-pci']") == 2 and "dev/vfio/vfio is not a character device" in out
    assert main(["nic", "release", *args, "--fake-kernel", "--run-dir", str(run)]) == 0
    assert nic.list_vfs(root, PF0) == [] and (run / nic.NIC_RECORDS_FILE).is_file()
    assert main(["nic", "fake-tree", "--testbed", str(testbed), "--root", "/"]) == 2


def test_real_host_notebook_steps_act_on_a_fake_fastiov_host(tmp_path):
    from fastiov_lib.config import load_profile
    from fastiov_lib.notebook import steps
    from fastiov_lib.notebook.session import Session
    from fastiov_lib.run.rundir import create_run_dir

    tb = load_testbed(EXAMPLE, overrides={"allow_host_changes": True, "fastiov.vfs_per_pf": 4})
    root = build_fake_host(tmp_path / "root", spec_for_testbed(tb, hugepages_2m=0), tb)
    tb = tb.model_copy(update={"sys_root": root, "results_dir": tmp_path / "results"})
    prof = load_profile("smoke")
    from fastiov_lib.testbeds import backend_for

    session = Session(tb, prof, create_run_dir(tb, prof, run_id="fake-fastiov", facts=backend_for(tb).facts()),
                      backend_for(tb, sysfs_writer=FakeSysfs(root)))
    checks = steps.host_step(session)
    assert dict(zip(checks["summary"]["status"], checks["summary"]["checks"]))["fail"] == 1  # no hugepages yet
    tables = steps.nic_step(session)
    assert len(tables["result"][tables["result"]["vf"] != ""]) == 8
    assert set(tables["result"]["driver"][tables["result"]["vf"] != ""]) == {"vfio-pci"}
    assert (tables["plan_summary"]["writes"].sum() == len(tables["plan"])) and len(tables["timings"]) >= 10
    assert steps.host_step(session)["summary"]["checks"].tolist() == [29, 0, 0]
