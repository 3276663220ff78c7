"""The local testbed only ever deletes what it created (issue 9, item 1)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from fastiov_lib.config import REPO_ROOT, ConfigError, load_testbed
from fastiov_lib.testbeds.local import testbed as local_testbed
from fastiov_lib.testbeds.local import workdir

from local_testbed_support import make_testbed, needs_local_testbed, write_testbed_yaml


def _cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fastiov_lib", *args], capture_output=True, text=True,
                          timeout=120, env={**os.environ, **(env or {})})


def _testbed_file(tmp_path: Path, work_dir: str, name: str = "testbed.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump({"name": "wd", "kind": "local", "allow_host_changes": True,
                                    "local": {"work_dir": work_dir, "link_prefix": "h9w", "bridge_name": "h9wbr0",
                                              "bridge_subnet": "10.243.0.0/24", "macvlan_subnet": "10.243.1.0/24",
                                              "hostdev_subnet": "10.243.2.0/24"}}))
    return path


@pytest.mark.parametrize("where", ["/", "/tmp", "/var/tmp", str(Path.home()), str(REPO_ROOT), str(REPO_ROOT.parent)])
def test_workdir_refuses_system_home_and_repository_folders(where):
    why = workdir.refusal(Path(where))
    assert why is not None and ("is " in why or "contains" in why)
    with pytest.raises(ConfigError, match="refused"):
        workdir.require_owned(Path(where))


def test_testbed_down_keeps_a_users_folder_and_its_files(tmp_path):
    user = tmp_path / "myproject"
    user.mkdir()
    (user / "thesis.tex").write_text("three years of work\n")
    result = _cli("testbed", "down", "--testbed", str(_testbed_file(tmp_path, str(user))))
    assert result.returncode == 2, result
    assert "Traceback" not in result.stderr
    assert str(user) in result.stderr and "did not create it" in result.stderr
    assert (user / "thesis.tex").read_text() == "three years of work\n"
    result = _cli("testbed", "cleanup", "--testbed", str(_testbed_file(tmp_path, str(user))))
    assert result.returncode == 2 and (user / "thesis.tex").exists()


def test_relative_workdir_is_taken_from_the_testbed_files_folder(tmp_path, monkeypatch):
    (tmp_path / "conf").mkdir()
    monkeypatch.chdir(REPO_ROOT)
    tb = load_testbed(_testbed_file(tmp_path / "conf", "myproject"))
    assert tb.local.work_dir == (tmp_path / "conf" / "myproject").resolve()
    user = tmp_path / "conf" / "myproject"
    user.mkdir()
    (user / "notes.txt").write_text("mine")
    result = _cli("testbed", "down", "--testbed", str(tmp_path / "conf" / "testbed.yaml"))
    assert result.returncode == 2 and (user / "notes.txt").read_text() == "mine"


def test_workdir_testbed_dir_and_root_are_refused_by_the_cli(tmp_path):
    for where in ("/", str(Path.home())):
        result = _cli("testbed", "down", "--testbed", str(_testbed_file(tmp_path, where)))
        assert result.returncode == 2 and "refused" in result.stderr and "Traceback" not in result.stderr


def test_claim_marks_a_new_folder_and_refuses_a_foreign_one(tmp_path):
    new = tmp_path / "new"
    assert workdir.claim(new, "t") == "created"
    assert workdir.read_marker(new)["testbed"] == "t"
    assert workdir.claim(new, "t") == "ours"
    empty = tmp_path / "empty"
    empty.mkdir()
    assert workdir.claim(empty, "t") == "created"
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "data.csv").write_text("1,2\n")
    with pytest.raises(ConfigError, match="not empty and was not created by the testbed"):
        workdir.claim(foreign, "t")
    assert not (foreign / workdir.MARKER).exists()
    legacy = tmp_path / "legacy"  # a work dir `testbed up` wrote before markers existed
    (legacy / "containerd").mkdir(parents=True)
    (legacy / "containerd" / "config.toml").write_text("version = 2\n")
    (legacy / "cni").mkdir()
    assert workdir.claim(legacy, "t") == "adopted"
    older = tmp_path / "older"
    (older / "containerd").mkdir(parents=True)
    (older / "containerd" / "config.toml").write_text("version = 2\n")
    assert workdir.adopt_own_layout(older, "t") and workdir.read_marker(older)["adopted"]
    assert not workdir.adopt_own_layout(foreign, "t")


def test_remove_deletes_only_a_marked_folder(tmp_path):
    wd = tmp_path / "wd"
    workdir.claim(wd, "t")
    (wd / "images").mkdir()
    outside = tmp_path / "outside.txt"
    outside.write_text("keep")
    os.symlink(outside, wd / "images" / "link")  # removed as a link, its target stays
    workdir.remove(wd)
    assert not wd.exists() and outside.read_text() == "keep"
    (tmp_path / "other").mkdir()
    with pytest.raises(ConfigError):
        workdir.remove(tmp_path / "other")
    assert (tmp_path / "other").exists()


@needs_local_testbed
def test_down_removes_only_the_links_it_recorded(tmp_path):
    tb = make_testbed(tmp_path / "wd", "h9r", 244, modes=("none", "bridge"))
    p = local_testbed.paths_for(tb)
    workdir.claim(p.work_dir, tb.name)
    subprocess.run(["ip", "link", "add", "h9rbr0", "type", "bridge"], check=True)  # as if `up` made it
    subprocess.run(["ip", "link", "add", "h9rhbr", "type", "bridge"], check=True)  # someone else's
    try:
        workdir.record_links(p.work_dir, {"h9rbr0"})
        report = local_testbed.down(tb)
        assert "h9rbr0" in report.links and "h9rhbr" not in report.links
        assert not Path("/sys/class/net/h9rbr0").exists() and Path("/sys/class/net/h9rhbr").exists()
        assert not p.work_dir.exists()
    finally:
        for name in ("h9rbr0", "h9rhbr"):
            subprocess.run(["ip", "link", "del", name], capture_output=True)


def test_marker_is_json_naming_the_testbed(tmp_path):
    workdir.claim(tmp_path / "wd", "name-x")
    data = json.loads((tmp_path / "wd" / workdir.MARKER).read_text())
    assert data["owner"] == "fastiov-artifact" and data["testbed"] == "name-x" and data["links"] == []


def test_testbed_check_reports_a_foreign_work_dir(tmp_path):
    user = tmp_path / "myproject"
    user.mkdir()
    (user / "thesis.tex").write_text("x")
    assert workdir.check(user).status == "fail" and "not created by the testbed" in workdir.check(user).seen
    assert workdir.check(Path("/")).status == "fail"
    assert workdir.check(tmp_path / "new").status == "pass"
