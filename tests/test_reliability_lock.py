"""Two artifact processes never drive the same local testbed at once (issue 9, item 9)."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from fastiov_lib.testbeds.local import testbed_lock, workdir

HOLDER = """
import sys, time
from pathlib import Path
from fastiov_lib.testbeds.local import testbed_lock
with testbed_lock.hold(Path(sys.argv[1]), "bench"):
    print("held", flush=True)
    time.sleep(float(sys.argv[2]))
"""


def _holder(work_dir: Path, seconds: float) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(work_dir), str(seconds)], stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def _testbed(tmp_path: Path) -> Path:
    path = tmp_path / "tb.yaml"
    path.write_text(yaml.safe_dump({"name": "lk", "kind": "local", "allow_host_changes": True,
                                    "local": {"work_dir": str(tmp_path / "wd"), "link_prefix": "h9l",
                                              "bridge_name": "h9lbr0", "bridge_subnet": "10.249.100.0/24",
                                              "macvlan_subnet": "10.249.101.0/24",
                                              "hostdev_subnet": "10.249.102.0/24"}}))
    return path


def test_testbed_down_refuses_while_another_process_benches(tmp_path):
    workdir.claim(tmp_path / "wd", "lk")
    holder = _holder(tmp_path / "wd", 60)
    try:
        result = subprocess.run([sys.executable, "-m", "fastiov_lib", "testbed", "down", "--testbed",
                                 str(_testbed(tmp_path))], capture_output=True, text=True, timeout=60,
                                env={**os.environ, testbed_lock.ENV_WAIT: "0.5"})
        assert result.returncode == 2, result.stderr
        assert f"in use by pid {holder.pid} (bench" in result.stderr and "Traceback" not in result.stderr
        assert (tmp_path / "wd" / workdir.MARKER).exists()  # nothing was torn down
    finally:
        holder.kill()
        holder.wait()


def test_a_second_process_waits_for_the_first(tmp_path):
    holder = _holder(tmp_path / "wd", 1.0)
    t0 = time.monotonic()
    with testbed_lock.hold(tmp_path / "wd", "up", wait_s=30):
        waited = time.monotonic() - t0
    holder.wait()
    assert 0.3 < waited < 30


def test_the_lock_is_reentrant_in_a_process_and_its_children(tmp_path):
    with testbed_lock.hold(tmp_path / "wd", "reproduce", wait_s=0):
        with testbed_lock.hold(tmp_path / "wd", "bench", wait_s=0):
            pass
        # a notebook kernel of this reproduce inherits the lock through the environment
        child = subprocess.run([sys.executable, "-c", HOLDER, str(tmp_path / "wd"), "0"], capture_output=True,
                               text=True, timeout=60)
        assert child.returncode == 0 and "held" in child.stdout
    assert testbed_lock.ENV_HELD not in os.environ


def test_lock_file_is_outside_the_work_dir_and_not_the_teams_flock(tmp_path):
    path = testbed_lock.lock_path(tmp_path / "wd")
    assert tmp_path not in path.parents and path != Path("/tmp/testbed.lock")
