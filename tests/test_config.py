"""Config validation: every bad input fails with the file, the key and what was expected."""
from pathlib import Path

import pytest
import yaml

from fastiov_lib.config import (
    REPO_ROOT,
    ConfigError,
    load_profile,
    load_testbed,
    parse_override,
)

GOOD_LOCAL = {"name": "t", "kind": "local", "local": {"work_dir": "/tmp/x"}}
GOOD_FASTIOV = {"name": "h", "kind": "fastiov", "runtime_handler": "kata",
                "fastiov": {"pfs": ["0000:e3:00.0", "0000:e3:00.1"]}}


def write(tmp_path: Path, data, name="tb.yaml") -> Path:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return path


def merged(base: dict, **changes) -> dict:
    out = yaml.safe_load(yaml.safe_dump(base))
    for dotted, value in changes.items():
        node = out
        parts = dotted.split("__")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = value
    return out


def test_committed_testbeds_and_profiles_load():
    assert load_testbed(REPO_ROOT / "testbeds/local.yaml").kind == "local"
    for name in ("smoke", "default", "paper"):
        assert load_profile(name).name == name
    assert load_profile("paper").concurrency == [10, 20, 50, 100, 200]


def test_local_testbed_gets_default_section(tmp_path):
    tb = load_testbed(write(tmp_path, {"name": "x", "kind": "local"}))
    assert tb.local is not None and tb.local.link_prefix == "fiov"


BAD_TESTBEDS = [
    ("unknown top-level key", merged(GOOD_LOCAL, colour="red"), "colour"),
    ("unknown nested key", merged(GOOD_LOCAL, local__wrk_dir="/x"), "local.wrk_dir"),
    ("kind not allowed", merged(GOOD_LOCAL, kind="cloud"), "kind"),
    ("name missing", {k: v for k, v in GOOD_LOCAL.items() if k != "name"}, "name"),
    ("name with spaces", merged(GOOD_LOCAL, name="my host"), "name"),
    ("allow_host_changes not a bool", merged(GOOD_LOCAL, allow_host_changes="perhaps"), "allow_host_changes"),
    ("pool size zero", merged(GOOD_LOCAL, local__hostdev_pool_size=0), "local.hostdev_pool_size"),
    ("pool size not a number", merged(GOOD_LOCAL, local__hostdev_pool_size="many"), "local.hostdev_pool_size"),
    ("subnet not a network", merged(GOOD_LOCAL, local__bridge_subnet="10.0.0.300/24"), "local.bridge_subnet"),
    ("port out of range", merged(GOOD_LOCAL, local__storage_port=70000), "local.storage_port"),
    ("unknown network mode", merged(GOOD_LOCAL, local__network_modes=["bridge", "wifi"]), "local.network_modes.1"),
    ("empty network modes", merged(GOOD_LOCAL, local__network_modes=[]), "local.network_modes"),
    ("link prefix too long", merged(GOOD_LOCAL, local__link_prefix="fastiovlinks"), "local.link_prefix"),
    ("negative timeout", merged(GOOD_LOCAL, local__rpc_timeout_s=-1), "local.rpc_timeout_s"),
    ("cri api unknown", merged(GOOD_LOCAL, cri_api="v2"), "cri_api"),
    ("fastiov without section", {"name": "h", "kind": "fastiov"}, "fastiov"),
    ("pci address malformed", merged(GOOD_FASTIOV, fastiov__pfs=["e3:00.0"]), "fastiov.pfs.0"),
    ("pci function out of range", merged(GOOD_FASTIOV, fastiov__pfs=["0000:e3:00.9"]), "fastiov.pfs.0"),
    ("no PFs", merged(GOOD_FASTIOV, fastiov__pfs=[]), "fastiov.pfs"),
    ("vfs_per_pf zero", merged(GOOD_FASTIOV, fastiov__vfs_per_pf=0), "fastiov.vfs_per_pf"),
    ("vsriov device unknown", {"name": "v", "kind": "vsriov", "vsriov": {"device": "e1000"}}, "vsriov.device"),
]


@pytest.mark.parametrize("label,data,key", BAD_TESTBEDS, ids=[b[0] for b in BAD_TESTBEDS])
def test_bad_testbed_is_rejected_naming_file_and_key(tmp_path, label, data, key):
    path = write(tmp_path, data)
    with pytest.raises(ConfigError) as err:
        load_testbed(path)
    message = str(err.value)
    assert str(path) in message
    assert f"'{key}'" in message
    assert "\n" not in message


def test_testbed_file_missing_is_named(tmp_path):
    with pytest.raises(ConfigError, match="file not found"):
        load_testbed(tmp_path / "nope.yaml")


def test_testbed_not_yaml_names_the_line(tmp_path):
    path = write(tmp_path, "name: x\nkind: [local\n")
    with pytest.raises(ConfigError, match=r"line \d+"):
        load_testbed(path)


def test_testbed_top_level_list_is_rejected(tmp_path):
    with pytest.raises(ConfigError, match="mapping"):
        load_testbed(write(tmp_path, "- a\n- b\n"))


BAD_PROFILES = [
    ("concurrency zero", {"name": "p", "concurrency": [0]}, "concurrency.0"),
    ("empty sweep", {"name": "p", "concurrency": []}, "concurrency"),
    ("repeats zero", {"name": "p", "concurrency": [1], "repeats": 0}, "repeats"),
    ("duplicate concurrency", {"name": "p", "concurrency": [5, 5]}, "(top level)"),
    ("unknown key", {"name": "p", "concurrency": [1], "iterations": 3}, "iterations"),
    ("concurrency as text", {"name": "p", "concurrency": "ten"}, "concurrency"),
    ("bench network unknown", {"name": "p", "concurrency": [1], "bench_network": "wifi"}, "bench_network"),
]


@pytest.mark.parametrize("label,data,key", BAD_PROFILES, ids=[b[0] for b in BAD_PROFILES])
def test_bad_profile_is_rejected_naming_file_and_key(tmp_path, label, data, key):
    path = write(tmp_path, data, "prof.yaml")
    with pytest.raises(ConfigError) as err:
        load_profile(path)
    assert str(path) in str(err.value) and f"'{key}'" in str(err.value)


def test_unknown_profile_name_lists_known_ones():
    with pytest.raises(ConfigError, match="smoke"):
        load_profile("gigantic")


def test_overrides_apply_dotted_keys_and_are_validated(tmp_path):
    path = write(tmp_path, GOOD_LOCAL)
    tb = load_testbed(path, {"local.hostdev_pool_size": 8})
    assert tb.local.hostdev_pool_size == 8
    with pytest.raises(ConfigError, match="local.hostdev_pool_size"):
        load_testbed(path, {"local.hostdev_pool_size": -3})


def test_parse_override_reads_yaml_values():
    assert parse_override("concurrency=[1, 2]") == ("concurrency", [1, 2])
    assert parse_override("interactive=false") == ("interactive", False)
    with pytest.raises(ConfigError, match="key=value"):
        parse_override("no-equals-sign")


def test_project_root_is_found_from_the_working_directory_not_the_install(tmp_path, monkeypatch):
    from fastiov_lib.config import project_root

    proj = tmp_path / "artifact"
    (proj / "notebooks" / "deep").mkdir(parents=True)
    (proj / "binaries_manifest.yaml").write_text("binaries: []\n")
    assert project_root(proj / "notebooks" / "deep") == proj.resolve()
    monkeypatch.setenv("FASTIOV_PROJECT", str(tmp_path / "elsewhere"))
    assert project_root(proj) == (tmp_path / "elsewhere").resolve()
