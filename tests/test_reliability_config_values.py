"""Testbed and profile values, round two (issue 21, items 5, 9, 16, 20, 21, 22, 25): every number has
an upper bound and a strict type, a key given twice is refused, names are one folder name, subnets
hold the pods, and only a regular file is read as a testbed."""
from __future__ import annotations

import os
import subprocess
import sys
import typing
from pathlib import Path

import annotated_types
import pytest
import yaml
from pydantic import BaseModel

from fastiov_lib import config
from fastiov_lib.config import ConfigError, load_profile, load_testbed


def _cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fastiov_lib", *args], capture_output=True, text=True,
                          timeout=timeout)


def one_line_error(result: subprocess.CompletedProcess[str], *needles: str) -> str:
    """The one `error:` line of a refused command (non-zero exit, no traceback), holding every needle."""
    assert result.returncode != 0, result
    assert "Traceback" not in result.stderr, result.stderr
    errors = [ln for ln in result.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1, result.stderr
    for needle in needles:
        assert needle in errors[0], (needle, errors[0])
    return errors[0]


def _numeric_leaves(annotation: typing.Any, metadata: list[typing.Any], where: str):
    """(where, python type, constraints) for every int/float inside a field's annotation."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        inner, *extra = typing.get_args(annotation)
        found = []
        for item in extra:
            found.extend(getattr(item, "metadata", [item]))
        yield from _numeric_leaves(inner, [*metadata, *found], where)
    elif origin in (list, tuple, set, typing.Union, dict) or str(origin) == "<class 'types.UnionType'>":
        args = typing.get_args(annotation)
        for i, arg in enumerate(args):
            if origin is dict and i == 0:
                continue
            yield from _numeric_leaves(arg, [] if origin is not typing.Union else metadata, where)
    elif isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield from _model_leaves(annotation)
    elif annotation in (int, float):
        yield where, annotation, metadata


def _model_leaves(model: type[BaseModel], prefix: str = ""):
    for name, field in model.model_fields.items():
        yield from _numeric_leaves(field.annotation, list(field.metadata), f"{prefix}{model.__name__}.{name}")


def test_every_number_of_a_testbed_or_profile_has_an_upper_bound_and_refuses_a_bool():
    leaves = [*_model_leaves(config.Testbed), *_model_leaves(config.Profile)]
    assert len(leaves) > 30  # the walk found the numbers (ports, timeouts, sizes, lists of levels)
    unbounded = [where for where, _, meta in leaves
                 if not any(isinstance(m, (annotated_types.Le, annotated_types.Lt)) for m in meta)]
    assert unbounded == []
    lax = [where for where, _, meta in leaves if not any(getattr(m, "strict", False) for m in meta)]
    assert lax == []


@pytest.mark.parametrize("key, value, needle", [
    ("hostdev_pool_size", 100_000_000_000, "less than or equal to 1024"),  # item 5
    ("rpc_timeout_s", 1e308, "less than or equal to 86400"),  # item 9
    ("hostdev_pool_size", True, "valid integer, got True"),  # item 20
    ("start_timeout_s", "30", "valid number, got '30'"),
])
def test_testbed_numbers_out_of_range_or_of_another_type_are_refused_naming_key_and_value(tmp_path, key, value,
                                                                                         needle):
    path = tmp_path / "tb.yaml"
    path.write_text(yaml.safe_dump({"name": "n", "kind": "local", "local": {key: value}}))
    with pytest.raises(ConfigError) as err:
        load_testbed(path)
    assert str(path) in str(err.value) and f"local.{key}" in str(err.value) and needle in str(err.value)


def test_a_huge_pool_size_is_refused_by_down_at_once_without_growing_memory(tmp_path):
    path = tmp_path / "tb.yaml"
    path.write_text("name: n\nkind: local\nallow_host_changes: true\nlocal:\n"
                    f"  work_dir: {tmp_path / 'wd'}\n  hostdev_pool_size: 100000000000\n")
    for action in ("check", "down", "cleanup"):
        one_line_error(_cli("testbed", action, "--testbed", str(path)), str(path), "hostdev_pool_size")


def test_yaml_floats_without_a_dot_are_numbers():
    assert config.load_yaml("a: 1e3\nb: 2\nc: 1.5e-3") == {"a": 1000.0, "b": 2, "c": 0.0015}


def test_a_key_given_twice_is_refused_naming_both_lines(tmp_path):  # item 16
    profile = tmp_path / "p.yaml"
    profile.write_text("name: twice\nconcurrency: [1]\nrepeats: 1\nrepeats: 1000\n")
    with pytest.raises(ConfigError, match=r"p.yaml: line 4 .*duplicate key 'repeats' \(first given on line 3\)"):
        load_profile(profile)
    testbed = tmp_path / "tb.yaml"
    testbed.write_text("name: n\nkind: local\nlocal:\n  work_dir: /var/tmp/a\n  link_prefix: ab\n  work_dir: /\n")
    one_line_error(_cli("testbed", "check", "--testbed", str(testbed)), str(testbed), "duplicate key 'work_dir'")


def test_a_profile_name_that_is_not_one_folder_name_is_refused_naming_the_profile(tmp_path):  # item 22
    profile = tmp_path / "p.yaml"
    profile.write_text('name: "../../escape"\nconcurrency: [1]\n')
    result = _cli("run", "02_host", "--profile", str(profile), "--results", str(tmp_path / "results"))
    line = one_line_error(result, str(profile), "'name'", "../../escape")
    assert "run id" not in line
    assert not (tmp_path / "results").exists()


def test_a_subnet_too_small_for_the_pool_is_refused_when_loaded(tmp_path):  # item 21
    path = tmp_path / "tb.yaml"
    path.write_text(yaml.safe_dump({"name": "n", "kind": "local",
                                    "local": {"hostdev_subnet": "10.212.0.0/28", "hostdev_pool_size": 64}}))
    with pytest.raises(ConfigError, match=r"hostdev_subnet 10.212.0.0/28: room for 13 pod addresses, 64 needed"):
        load_testbed(path)
    path.write_text(yaml.safe_dump({"name": "n", "kind": "local", "local": {"bridge_subnet": "10.210.0.0/30"}}))
    assert load_testbed(path).local.pod_addresses("bridge") == 1  # one pod fits; the bench checks its levels


def test_a_fifo_device_or_link_to_one_as_testbed_file_is_named_as_such(tmp_path):  # item 25
    fifo = tmp_path / "fifo.yaml"
    os.mkfifo(fifo)
    one_line_error(_cli("testbed", "check", "--testbed", str(fifo), timeout=30), str(fifo), "a FIFO",
                   "expected a regular file")
    link = tmp_path / "zero.yaml"
    link.symlink_to("/dev/zero")
    one_line_error(_cli("testbed", "check", "--testbed", str(link), timeout=30), "a character device")
    one_line_error(_cli("testbed", "check", "--testbed", str(tmp_path / "absent.yaml")), "absent.yaml",
                   "file not found")


def test_the_committed_testbeds_and_profiles_still_load():
    for path in sorted((config.REPO_ROOT / "testbeds").glob("*.yaml")):
        assert load_testbed(path).name
    for path in sorted(Path(config.PROFILES_DIR).glob("*.yaml")):
        assert load_profile(path).name == path.stem
