"""The deployed kata config holds the original's keys; the variants switch what its variant files switch."""
from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
import tomlkit

from fastiov_lib.config import load_testbed
from fastiov_lib.testbeds.fastiov_host import runtime_config as rc

EXAMPLE = "testbeds/fastiov-e810.example.yaml"
UPSTREAM = Path(__file__).resolve().parents[1].parent / "shared/fixtures/upstream-artifact"
if not UPSTREAM.is_dir():  # a worktree beside the shared folder's parent
    UPSTREAM = Path("/work/shared/fixtures/upstream-artifact")
BASE, FAST, IPVTAP = (UPSTREAM / f"kata-containers_configuration-qemu-3{x}.toml" for x in ("", "-fastiov", "-ipvtap"))
needs_original = pytest.mark.skipif(not BASE.is_file(), reason="the original artifact's config files are not present")

# REFERENCE.md: keys every original variant file sets that kata-static's default lacks
BASE_KEYS = [("hypervisor", "qemu", "virtio_fs_daemon"), ("hypervisor", "qemu", "valid_virtio_fs_daemon_paths"),
             ("hypervisor", "qemu", "hotplug_vfio_on_root_bus"), ("hypervisor", "qemu", "pcie_root_port"),
             ("runtime", "vfio_mode"), ("hypervisor", "qemu", "shared_fs"), ("hypervisor", "qemu", "cpu_features"),
             ("runtime", "sandbox_cgroup_only"), ("runtime", "disable_guest_seccomp"),
             ("hypervisor", "qemu", "machine_type"), ("hypervisor", "qemu", "default_vcpus"),
             ("agent", "kata", "debug_console_enabled")]


def _get(data, key):
    return rc.read_toml_value(data, key)


def _rendered(variant: str, root: Path) -> dict:
    tb = load_testbed(EXAMPLE)
    files = rc.rendered_configs(tb, root, variant)
    return tomllib.loads(files[root / str(tb.fastiov.kata_config).lstrip("/")])


@needs_original
@pytest.mark.parametrize("variant", list(rc.VARIANTS))
def test_every_variant_carries_the_original_base_keys_with_the_original_values(variant, tmp_path):
    ours, original = _rendered(variant, tmp_path), tomllib.loads(BASE.read_text())
    for key in BASE_KEYS:
        assert _get(ours, key) == _get(original, key), ".".join(key)
        # the same in the original's other variant files: these are not what a variant switches
        assert _get(tomllib.loads(FAST.read_text()), key) == _get(original, key)


@needs_original
def test_hugepages_memory_and_network_keys_switch_as_in_the_original_variant_files(tmp_path):
    base, fast, ipvtap = (tomllib.loads(p.read_text()) for p in (BASE, FAST, IPVTAP))
    hp = ("hypervisor", "qemu", "enable_hugepages")
    assert _get(_rendered("vanilla", tmp_path), hp) is _get(base, hp) is False
    assert _get(_rendered("fastiov", tmp_path), hp) is _get(fast, hp) is True  # FastIOV QEMU needs preallocation
    assert _get(_rendered("only-skip-dma", tmp_path), hp) is True
    mem = ("hypervisor", "qemu", "default_memory")
    assert {_get(_rendered(v, tmp_path), mem) for v in ("vanilla", "fastiov", "ipvtap", "no-network")} == {
        _get(base, mem)} == {512}
    assert _get(_rendered("vanilla-2g", tmp_path), mem) == 2048
    model, netns = ("runtime", "internetworking_model"), ("runtime", "disable_new_netns")
    got = _rendered("no-network", tmp_path)
    assert (_get(got, model), _get(got, netns)) == (_get(base, model), _get(base, netns)) == ("none", True)
    for v in ("vanilla", "fastiov"):  # a VF needs kata's network set-up: as the original's fastiov file (unset)
        got = _rendered(v, tmp_path)
        assert (_get(got, model), _get(got, netns)) == ("none", False) and _get(fast, netns) is None
    got = _rendered("ipvtap", tmp_path)
    assert _get(got, model) == _get(ipvtap, model) == "tcfilter"
    assert not _get(got, netns) and _get(ipvtap, netns) is None  # absent there = kata's default false


@needs_original
def test_image_and_kernel_switch_between_async_and_sync_guests(tmp_path):
    s = load_testbed(EXAMPLE).fastiov
    img, kern = ("hypervisor", "qemu", "image"), ("hypervisor", "qemu", "kernel")
    assert "asyncRtnl" in _get(tomllib.loads(BASE.read_text()), img)
    assert "e810-sync" in _get(tomllib.loads(FAST.read_text()), img)
    assert _get(_rendered("only-async-driver", tmp_path), img) == str(s.image_async)
    assert _get(_rendered("vanilla", tmp_path), img) == str(s.image_sync)
    assert _get(_rendered("only-guest-kernel", tmp_path), kern) == str(s.guest_kernel_fastiov)
    assert _get(_rendered("vanilla", tmp_path), kern) == str(s.guest_kernel_vanilla)


def test_both_qemus_are_valid_hypervisor_paths_so_kata_accepts_either_variant(tmp_path):
    s = load_testbed(EXAMPLE).fastiov
    for v in ("vanilla", "fastiov"):
        got = _rendered(v, tmp_path)
        assert _get(got, ("hypervisor", "qemu", "path")) in _get(got, ("hypervisor", "qemu", "valid_hypervisor_paths"))
    assert sorted(_get(got, ("hypervisor", "qemu", "valid_hypervisor_paths"))) == sorted(
        [str(s.qemu_fastiov), str(s.qemu_vanilla)])


def test_a_kata_static_default_gets_the_base_keys_and_keeps_its_comments(tmp_path):
    tb = load_testbed(EXAMPLE)
    default = rc.kata_static_default(tb.fastiov, tmp_path)
    default.parent.mkdir(parents=True)
    doc = tomlkit.parse('[hypervisor.qemu]\n# kata-static comment\npath = "/opt/kata/bin/qemu"\n'
                        'enable_hugepages = false\n[runtime]\ninternetworking_model = "tcfilter"\n')
    default.write_text(tomlkit.dumps(doc))
    text = rc.rendered_configs(tb, tmp_path, "fastiov")[tmp_path / str(tb.fastiov.kata_config).lstrip("/")]
    got = tomllib.loads(text)
    assert "# kata-static comment" in text
    for key, value in rc.all_kata_keys(rc.VARIANTS["fastiov"], tb.fastiov).items():
        assert _get(got, key) == value, ".".join(key)
    assert _get(got, ("hypervisor", "qemu", "virtio_fs_daemon")) == "/opt/kata3/libexec/virtiofsd"


def test_no_network_pods_use_the_host_network_and_keep_the_sriov_conflist():
    s = load_testbed(EXAMPLE).fastiov
    assert rc.VARIANTS["no-network"].network == "host"
    assert rc.render_conflist(s, "host") == rc.render_conflist(s, "sriov")
