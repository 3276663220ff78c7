"""The local default profile compares no network, bridge and hostdev at every startup level."""
from __future__ import annotations

from fastiov_lib.config import REPO_ROOT, load_profile, load_testbed
from fastiov_lib.testbeds import backend_for


def _plan(profile, pool=64):
    tb = load_testbed(REPO_ROOT / "testbeds" / "local.yaml")
    tb = tb.model_copy(update={"local": tb.local.model_copy(update={"hostdev_pool_size": pool})})
    return backend_for(tb).sweep_plan(profile, "startup")


def test_default_profile_sweeps_none_bridge_and_hostdev_at_every_level():
    prof = load_profile("default")
    plan = _plan(prof)
    assert [(s.variants, s.concurrency) for s in plan.specs] == [
        ((m,), tuple(prof.concurrency)) for m in ("none", "bridge", "hostdev")]


def test_hostdev_levels_beyond_its_pool_are_left_out_and_named():
    plan = _plan(load_profile("default"), pool=10)
    hostdev = next(s for s in plan.specs if s.variants == ("hostdev",))
    assert hostdev.concurrency == (1, 5, 10)
    assert any("hostdev skipped at concurrency [20, 50]" in n for n in plan.notes)


def test_smoke_keeps_its_single_bench_network():
    assert [s.variants for s in _plan(load_profile("smoke")).specs] == [("bridge",)]
