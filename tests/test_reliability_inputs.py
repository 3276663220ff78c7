"""Bad input ends in one line naming file/key/value, a non-zero exit, no traceback, no run dir (items 6, 8)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from fastiov_lib.config import ConfigError, load_profile, load_testbed
from fastiov_lib.hw.pci import PciAddressError, parse_pci


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fastiov_lib", *args], capture_output=True, text=True, timeout=120)


def _one_line_error(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert result.returncode != 0, result
    assert "Traceback" not in result.stderr, result.stderr
    errors = [ln for ln in result.stderr.splitlines() if ln.startswith("error:") or ": error:" in ln]
    assert len(errors) == 1, result.stderr
    for needle in needles:
        assert needle in errors[0], (needle, errors[0])


def _local_file(tmp_path: Path, allow: bool = True, **local) -> Path:
    path = tmp_path / "tb.yaml"
    path.write_text(yaml.safe_dump({"name": "in", "kind": "local", "allow_host_changes": allow,
                                    "local": {"work_dir": str(tmp_path / "wd"), "link_prefix": "h9i",
                                              "bridge_name": "h9ibr0", "bridge_subnet": "10.247.0.0/24",
                                              "macvlan_subnet": "10.247.1.0/24", "hostdev_subnet": "10.247.2.0/24",
                                              **local}}))
    return path


def test_binary_directory_and_huge_testbed_files_are_named(tmp_path):
    binary = tmp_path / "bin.yaml"
    binary.write_bytes(b"\x7fELF\x00\x01\x02")
    _one_line_error(_cli("testbed", "check", "--testbed", str(binary)), str(binary), "binary")
    _one_line_error(_cli("testbed", "check", "--testbed", str(tmp_path)), str(tmp_path), "is a directory")
    latin = tmp_path / "latin.yaml"
    latin.write_bytes(b"name: caf\xe9\n")
    _one_line_error(_cli("testbed", "check", "--testbed", str(latin)), "not UTF-8")
    huge = tmp_path / "huge.yaml"
    with open(huge, "wb") as fh:
        fh.truncate(200 * 1024 * 1024)  # sparse: refused by its size, never read
    _one_line_error(_cli("testbed", "check", "--testbed", str(huge)), str(huge), "larger than")


def test_infinite_and_out_of_range_values_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="rpc_timeout_s"):
        load_testbed(_local_file(tmp_path, rpc_timeout_s=float("inf")))
    (tmp_path / "inf.yaml").write_text("name: x\nkind: local\nlocal:\n  rpc_timeout_s: 1e400\n")
    with pytest.raises(ConfigError, match="rpc_timeout_s"):
        load_testbed(tmp_path / "inf.yaml")
    with pytest.raises(ConfigError, match="concurrency.0"):
        load_profile("smoke", overrides={"concurrency": [10000]})
    with pytest.raises(ConfigError, match="app_file_mb"):
        load_profile("smoke", overrides={"app_file_mb": -1})


def test_pci_address_with_a_trailing_newline_is_refused():
    assert parse_pci("0000:e3:00.0") == (0, 0xE3, 0, 0)
    for bad in ("0000:e3:00.0\n", " 0000:e3:00.0", "0000:e3:00.0x"):
        with pytest.raises(PciAddressError):
            parse_pci(bad)


@pytest.mark.parametrize("args, needle", [
    (["--timeout", "-5"], "--timeout"),
    (["--timeout", "nan"], "--timeout"),
    (["--app-file-mb", "-1"], "--app-file-mb"),
    (["--concurrency", "10000"], "--concurrency"),
    (["--repeats", "0"], "--repeats"),
    (["--network", "wifi"], "wifi"),
])
def test_bench_refuses_bad_values_and_leaves_no_run_directory(tmp_path, args, needle):
    out = tmp_path / "results" / "run1"
    result = _cli("bench", "--testbed", str(_local_file(tmp_path)), "--out", str(out), *args)
    _one_line_error(result, needle)
    assert not out.exists()


def test_bench_on_a_testbed_without_host_changes_is_one_line_and_no_run_dir(tmp_path):
    out = tmp_path / "results" / "run1"
    result = _cli("bench", "--testbed", str(_local_file(tmp_path, allow=False)), "--out", str(out),
                  "--concurrency", "1", "--repeats", "1")
    _one_line_error(result, "allow_host_changes")
    assert not out.exists() and not (tmp_path / "wd").exists()


def test_bench_on_a_run_dir_with_broken_run_json_names_it(tmp_path):
    out = tmp_path / "run1"
    out.mkdir()
    (out / "run.json").write_text("[]")
    _one_line_error(_cli("bench", "--testbed", str(_local_file(tmp_path)), "--out", str(out)),
                    str(out / "run.json"), "JSON object")
    assert (out / "run.json").read_text() == "[]"


def test_run_with_an_unknown_parameter_or_bad_run_id_leaves_nothing(tmp_path):
    results = tmp_path / "results"
    _one_line_error(_cli("run", "02_host", "--testbed", str(_local_file(tmp_path)), "--results", str(results),
                         "-p", "unknown=1"), "unknown")
    _one_line_error(_cli("run", "02_host", "--testbed", str(_local_file(tmp_path)), "--results", str(results),
                         "--run-id", "../x"), "run id '../x'")
    assert not results.exists() or list(results.iterdir()) == []
    assert not (tmp_path / "x").exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="a read-only mount needs root (root ignores file modes)")
def test_bench_into_a_read_only_folder_is_one_line(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k,ro", "tmpfs", str(ro)], check=True)
    try:
        _one_line_error(_cli("bench", "--testbed", str(_local_file(tmp_path)), "--out", str(ro / "run1")),
                        str(ro / "run1"), "Read-only file system")
    finally:
        subprocess.run(["umount", "-l", str(ro)], check=False)


def test_adopt_outputs_on_a_broken_notebook_names_it_and_adopts_nothing(tmp_path):
    nbs = tmp_path / "run" / "notebooks"
    nbs.mkdir(parents=True)
    (nbs / "02_host.ipynb").write_text("{ this is not a notebook")
    _one_line_error(_cli("adopt-outputs", str(tmp_path / "run")), str(nbs / "02_host.ipynb"), "nothing was adopted")
    _one_line_error(_cli("adopt-outputs", str(tmp_path / "nowhere")), "no notebooks/")


def test_debug_shows_the_traceback(tmp_path):
    result = _cli("--debug", "testbed", "check", "--testbed", str(tmp_path))
    assert result.returncode == 2 and "Traceback" in result.stderr and "is a directory" in result.stderr
