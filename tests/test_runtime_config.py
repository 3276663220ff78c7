"""Runtime configs from templates and variant switching with tomlkit (only intended keys change)."""
from __future__ import annotations

import json
import shutil
import tomllib
from pathlib import Path

import pytest

from fastiov_lib.testbeds.fastiov_host import runtime_config as rc
from fastiov_lib.config import load_testbed
from fastiov_lib.testbeds.fastiov_host.fake_host import build_fake_host, spec_for_testbed
from fastiov_lib.hw.host_steps import HostChangesNotAllowed

EXAMPLE = "testbeds/fastiov-e810.example.yaml"
UPSTREAM = Path("/work/shared/fixtures/upstream-artifact")
KATA = UPSTREAM / "kata-containers_configuration-qemu-3.toml"


def _flat(data, prefix=()):
    out = {}
    for k, v in data.items():
        if isinstance(v, dict):
            out.update(_flat(v, prefix + (k,)))
        else:
            out[prefix + (k,)] = v
    return out


@pytest.fixture
def host(tmp_path):
    tb = load_testbed(EXAMPLE, overrides={"allow_host_changes": True})
    root = build_fake_host(tmp_path / "root", spec_for_testbed(tb), tb)
    return tb.model_copy(update={"sys_root": root}), root


@pytest.mark.skipif(not KATA.is_file(), reason="upstream artifact fixtures not present")
@pytest.mark.parametrize("name", list(rc.VARIANTS))
def test_switching_the_upstream_kata_config_changes_only_the_variant_keys(tmp_path, name):
    s = load_testbed(EXAMPLE).fastiov
    path = tmp_path / "configuration-qemu-3.toml"
    shutil.copy(KATA, path)
    before_text = path.read_text()
    keys = rc.kata_keys(rc.VARIANTS[name], s)
    changes = rc.edit_kata_config(path, keys, tmp_path / "backup")
    before, after = _flat(tomllib.loads(before_text)), _flat(tomllib.loads(path.read_text()))
    changed = {k for k in set(before) | set(after) if before.get(k) != after.get(k)}
    assert changed <= set(keys) and {tuple(c["key"].split(".")) for c in changes} == changed
    assert all(after[k] == v for k, v in keys.items())
    # comments and layout are kept: every commented-out alternative line is still there
    comments = lambda t: [line for line in t.splitlines() if line.lstrip().startswith("#")]  # noqa: E731
    assert comments(path.read_text()) == comments(before_text)
    assert len(path.read_text().splitlines()) == len(before_text.splitlines())
    backups = list((tmp_path / "backup").rglob("configuration-qemu-3.toml"))
    assert backups and backups[0].read_text() == before_text


@pytest.mark.skipif(not KATA.is_file(), reason="upstream artifact fixtures not present")
def test_variant_round_trip_on_the_upstream_config_is_byte_stable(tmp_path):
    s = load_testbed(EXAMPLE).fastiov
    a, b = tmp_path / "a.toml", tmp_path / "b.toml"
    shutil.copy(KATA, a)
    shutil.copy(KATA, b)
    rc.edit_kata_config(a, rc.kata_keys(rc.VARIANTS["vanilla"], s), tmp_path / "bk")
    for name in ("fastiov", "ipvtap", "only-async-driver", "vanilla"):
        rc.edit_kata_config(b, rc.kata_keys(rc.VARIANTS[name], s), tmp_path / "bk")
    assert a.read_text() == b.read_text()


def test_set_variant_edits_verifies_backs_up_and_records(host, tmp_path):
    tb, root = host
    run = tmp_path / "run"
    plan = rc.plan_variant(tb, "vanilla")
    switched = {"hypervisor.qemu.path", "hypervisor.qemu.kernel", "hypervisor.qemu.image",
                "hypervisor.qemu.enable_hugepages"}  # no preallocation without FastIOV's QEMU
    assert {r["target"].rsplit("[", 1)[-1].rstrip("]") for r in plan if r["action"] == "edit"} == switched
    res = rc.set_variant(tb, "vanilla", run)
    assert {c["key"] for c in res.changes} == switched
    assert rc.show_variant(tb)["matches"] == "vanilla"
    assert json.loads((run / rc.VARIANT_FILE).read_text())["variant"] == "vanilla"
    assert any("stock 6.4" in w for w in res.warnings)  # the fake host runs the patched kernel
    res = rc.set_variant(tb, "ipvtap", run)
    conf = json.loads((root / "etc/cni/net.d" / rc.CNI_CONFLIST).read_text())
    assert conf["plugins"][0]["type"] == "ipvlan" and conf["plugins"][0]["master"] == "ens1f0"
    assert rc.show_variant(tb)["matches"] == "ipvtap"
    assert len((run / "variants.jsonl").read_text().splitlines()) == 2
    assert rc.set_variant(tb, "ipvtap").changes == []  # idempotent


def test_variant_set_is_refused_without_allow_host_changes(host):
    tb, root = host
    kata = root / "etc/kata-containers/configuration-qemu-3.toml"
    before = kata.read_text()
    with pytest.raises(HostChangesNotAllowed):
        rc.set_variant(tb.model_copy(update={"allow_host_changes": False}), "vanilla")
    assert kata.read_text() == before


def test_unknown_variant_and_broken_kata_config_give_clear_errors(host):
    tb, root = host
    with pytest.raises(rc.VariantError, match="unknown variant 'turbo'; known: vanilla, fastiov"):
        rc.set_variant(tb, "turbo")
    kata = root / "etc/kata-containers/configuration-qemu-3.toml"
    kata.write_text("[hypervisor.qemu\npath = 1\n")
    with pytest.raises(rc.VariantError, match="configuration-qemu-3.toml: not valid TOML"):
        rc.set_variant(tb, "vanilla")


def test_templates_render_valid_configs_from_the_testbed():
    s = load_testbed(EXAMPLE).fastiov
    ctd = tomllib.loads(rc.render_containerd_config(s))
    kata = ctd["plugins"]["io.containerd.grpc.v1.cri"]["containerd"]["runtimes"]["kata"]
    assert kata["runtime_type"] == "io.containerd.kata3.v2"
    assert kata["options"]["ConfigPath"] == str(s.kata_config)
    conf = json.loads(rc.render_conflist(s, "sriov"))
    assert conf["plugins"][0]["type"] == "fastiov-e810" and conf["plugins"][0]["capabilities"]["tenantPodIndex"]
    assert "unix:///run/containerd/containerd.sock" in rc.render_crictl(s)


def test_deploy_configs_writes_backs_up_and_is_idempotent(host):
    tb, root = host
    ctd = root / "etc/containerd/config.toml"
    ctd.write_text("# the host's own config\nversion = 2\n")
    results = rc.deploy_configs(tb, backup_dir=root / "bk")
    done = {Path(r["target"]).name: r for r in results}
    assert done["config.toml"]["status"] == "done"
    assert Path(done["config.toml"]["backup"]).read_text().startswith("# the host's own config")
    assert {r["status"] for r in rc.deploy_configs(tb, backup_dir=root / "bk")} == {"skipped"}
