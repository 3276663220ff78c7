"""SIGTERM behaves like SIGINT in long commands; an inherited ignored SIGINT still stops them (item 7)."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from fastiov_lib.testbeds.local import workdir


def _testbed(tmp_path: Path) -> Path:
    path = tmp_path / "tb.yaml"
    path.write_text(yaml.safe_dump({"name": "sig", "kind": "local", "allow_host_changes": True,
                                    "local": {"work_dir": str(tmp_path / "wd"), "link_prefix": "h9s",
                                              "bridge_name": "h9sbr0", "bridge_subnet": "10.248.0.0/24",
                                              "macvlan_subnet": "10.248.1.0/24", "hostdev_subnet": "10.248.2.0/24",
                                              "network_modes": ["none"]}}))
    return path


@pytest.mark.slow
@pytest.mark.parametrize("sig, ignore_sigint", [(signal.SIGTERM, False), (signal.SIGINT, True)])
def test_reproduce_tears_down_and_closes_run_json_on_a_signal(tmp_path, sig, ignore_sigint):
    workdir.claim(tmp_path / "wd", "sig")  # stands for a testbed that is up: teardown must remove it
    results = tmp_path / "results"

    def ignore() -> None:  # as a shell's background job (`cmd &`) starts: SIGINT ignored
        signal.signal(signal.SIGINT, signal.SIG_IGN)

    proc = subprocess.Popen([sys.executable, "-m", "fastiov_lib", "reproduce", "--testbed", str(_testbed(tmp_path)),
                             "--profile", "smoke", "--results", str(results), "--run-id", "r",
                             "--notebooks", "02_host", "06_figures"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=ignore if ignore_sigint else None)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (results / "r" / "notebooks").exists() and proc.poll() is None:
        time.sleep(0.1)
    time.sleep(1.0)  # papermill is executing 02_host now
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 128 + sig, stderr
    assert "Traceback" not in stderr, stderr
    info = json.loads((results / "r" / "run.json").read_text())
    assert info["end_time"] and info["end_reason"] == f"interrupted by {signal.Signals(sig).name}"
    assert info["pipeline"]["interrupted"] == info["end_reason"]
    assert not (tmp_path / "wd").exists()  # the testbed was torn down
