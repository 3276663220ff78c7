"""Every testbed back end answers the same interface the same way (local, vsriov, a fake-sysfs FastIOV host)."""
from __future__ import annotations

import os

import pandas as pd
import pytest

from fastiov_lib.testbeds import backend_for
from fastiov_lib.config import load_profile, load_testbed
from fastiov_lib.hw.fake_sysfs import FakeSysfs, build_fake_host, spec_for_testbed
from fastiov_lib.run.rundir import create_run_dir
from fastiov_lib.testbeds import backend_class, backend_classes, backend_for
from fastiov_lib.testbeds.base import NoPodsOnTestbed, PodTarget, SweepPlan, TestbedBackend
from fastiov_lib.testbeds.checks import Check

from local_testbed_support import make_testbed, needs_local_testbed, our_links

EXAMPLE = "testbeds/fastiov-e810.example.yaml"
EXPERIMENTS = ("startup", "ablation", "app")
PREFIX = "fcb"


@pytest.fixture(scope="module")
def local_backend(tmp_path_factory):
    tb = make_testbed(tmp_path_factory.mktemp("contract") / "tb", PREFIX, 249, pool_size=2)
    backend = backend_for(tb)
    yield backend
    if os.geteuid() == 0:
        backend.down()
        assert our_links(PREFIX) == []


@pytest.fixture()
def fake_host(tmp_path):
    tb = load_testbed(EXAMPLE, overrides={"allow_host_changes": True, "fastiov.vfs_per_pf": 2})
    root = build_fake_host(tmp_path / "root", spec_for_testbed(tb, hugepages_2m=0), tb)
    tb = tb.model_copy(update={"sys_root": root, "results_dir": tmp_path / "results"})
    return backend_for(tb, sysfs_writer=FakeSysfs(root))


@pytest.fixture()
def vsriov_backend(tmp_path):
    return backend_for(load_testbed("testbeds/vsriov.yaml",
                                    overrides={"vsriov.work_dir": str(tmp_path / "vs")}))


def _check_common(backend: TestbedBackend) -> None:
    """What every back end must answer without touching the host."""
    assert backend_class(backend.kind) is type(backend)
    assert backend.describe()["kind"] == backend.kind and backend.describe()["name"] == backend.name
    checks = backend.checks()
    assert checks and all(isinstance(c, Check) and c.status in ("pass", "warn", "fail") for c in checks)
    prof = load_profile("smoke")
    for experiment in EXPERIMENTS:
        plan = backend.sweep_plan(prof, experiment)
        assert isinstance(plan, SweepPlan)
        if backend.runs_pods:
            assert plan.specs and all(s.experiment == experiment and s.variants and s.concurrency for s in plan.specs)
        else:
            assert not plan.specs and plan.notes == [backend.no_pods_reason()]
    real_checks, where = backend.real_host_checks()
    assert real_checks and where
    rows = backend.real_host_nic_plan()
    assert rows and {"step", "action", "target", "value", "why"} <= set(rows[0])


def test_every_testbed_kind_has_exactly_one_back_end():
    assert sorted(backend_classes()) == ["fastiov", "local", "vsriov"]
    with pytest.raises(KeyError, match="unknown testbed kind 'cloud'"):
        backend_class("cloud")


def test_the_fake_fastiov_host_answers_the_interface(fake_host, tmp_path):
    _check_common(fake_host)
    target = fake_host.pod_target(["vanilla", "fastiov"], [2])
    assert isinstance(target, PodTarget) and target.handler("vanilla") == fake_host.testbed.runtime_handler
    assert fake_host.round_hooks() is not None and fake_host.baseline_variant == "vanilla"
    prof = load_profile("smoke")
    run = create_run_dir(fake_host.testbed, prof, run_id="contract", results_root=tmp_path, facts=backend_for(fake_host.testbed).facts())
    tables = fake_host.prepare_nic(run, prof)
    vfs = tables["result"][tables["result"]["vf"] != ""]
    assert set(tables) >= {"result", "timings"} and len(vfs) == 4  # 2 PFs x 2 VFs, bound for real
    assert set(vfs["driver"]) == {"vfio-pci"}


def test_the_virtual_sriov_host_answers_the_interface_and_says_it_has_no_pods(vsriov_backend, tmp_path):
    _check_common(vsriov_backend)
    assert not vsriov_backend.runs_pods and "no pods" in vsriov_backend.no_pods_reason()
    with pytest.raises(NoPodsOnTestbed):
        vsriov_backend.pod_target(["none"], [1])
    prof = load_profile("smoke")
    run = create_run_dir(vsriov_backend.testbed, prof, run_id="contract", results_root=tmp_path, facts=backend_for(vsriov_backend.testbed).facts())
    assert isinstance(vsriov_backend.build(run)["done"], pd.DataFrame)


@needs_local_testbed
def test_the_local_testbed_answers_the_interface(local_backend, tmp_path):
    _check_common(local_backend)
    assert "containerd pid" in local_backend.up()
    target = local_backend.pod_target(["none", "bridge"], [1, 2])
    assert target.host_network("none") and not target.host_network("bridge")
    assert target.runtime_alive() and set(target.images) == {"pause", "workload"}
    assert local_backend.app_endpoint("bridge").network == "bridge"
    text, ok = local_backend.cleanup()
    assert ok, text
