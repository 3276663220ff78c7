"""Pods on a real host as the original starts them: names, tenants, and the host-network baseline."""
from __future__ import annotations

from fastiov_lib.bench import engine, rounds
from fastiov_lib.config import load_testbed
from fastiov_lib.config import load_profile
from fastiov_lib.cri import CriClient
from fastiov_lib.run.rundir import RunDir
from fastiov_lib.testbeds import backend_for

EXAMPLE = "testbeds/fastiov-e810.example.yaml"


def _round(variant: str, concurrency: int, network: str) -> engine.RoundInfo:
    return engine.RoundInfo(experiment="startup", variant=variant, network=network, runtime_handler="kata",
                            concurrency=concurrency, repeat=0, index=0, total=1, round_id="r1")


def _pods(tmp_path, variant: str, concurrency: int, tenants: int):
    backend = backend_for(load_testbed(EXAMPLE))
    target = backend.pod_target([variant], [concurrency])
    cri = CriClient(tmp_path / "no.sock", api="v1alpha2")  # builds messages; nothing is called
    try:
        return rounds.build_pods(target, cri, RunDir(tmp_path / "run"), _round(variant, concurrency, target.network(variant)), tenants)
    finally:
        cri.close()


def test_pods_are_named_like_the_original_one_based_with_three_digits(tmp_path):
    pods = _pods(tmp_path, "fastiov", 4, tenants=2)
    assert [p.name for p in pods] == ["sandbox-001-001", "sandbox-001-002", "sandbox-002-001", "sandbox-002-002"]
    assert [p.config.metadata.name for p in pods] == [p.name for p in pods]
    assert [p.record["pod_name"] for p in pods] == [p.name for p in pods]


def test_default_tenants_give_one_pod_per_tenant_as_the_original_at_200(tmp_path):
    backend = backend_for(load_testbed(EXAMPLE))
    spec = backend.campaign_specs(load_profile("smoke"), "startup")[0]
    assert spec.tenants == 200
    pods = _pods(tmp_path, "vanilla", 200, tenants=spec.tenants)
    assert pods[0].name == "sandbox-001-001" and pods[-1].name == "sandbox-200-001"
    assert len({p.name for p in pods}) == 200


def test_no_network_baseline_is_host_network_without_a_cni_call(tmp_path):
    host = _pods(tmp_path, "no-network", 2, tenants=2)
    sriov = _pods(tmp_path, "vanilla", 2, tenants=2)
    ns = lambda p: p.config.linux.security_context.namespace_options.network  # noqa: E731
    node, pod = 2, 0  # CRI NamespaceMode: POD = 0, NODE = 2 (the original's network mode 2 = host)
    assert all(p.spec.host_network for p in host) and {ns(p) for p in host} == {node}
    assert not any(p.spec.host_network for p in sriov) and {ns(p) for p in sriov} == {pod}
    assert host[0].record["network"] == "host" and sriov[0].record["network"] == "sriov"
