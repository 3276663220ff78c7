"""02_host's FAIL stops a reproduce before the measurements unless asked otherwise (issue 9, item 2)."""
from __future__ import annotations

import json

import pytest
import yaml

from fastiov_lib.notebook.pipeline import HostChecksFailed, NotebookFailed, reproduce

from test_reliability_address_plan import _host_route


def _clashing_testbed(tmp_path) -> str:
    path = tmp_path / "tb.yaml"
    path.write_text(yaml.safe_dump({"name": "gate", "kind": "local", "allow_host_changes": True,
                                    "local": {"work_dir": str(tmp_path / "wd"), "link_prefix": "h9g",
                                              "bridge_name": "h9gbr0", "bridge_subnet": _host_route(),
                                              "macvlan_subnet": "10.250.1.0/24", "hostdev_subnet": "10.250.2.0/24",
                                              "network_modes": ["none", "bridge"]}}))
    return str(path)


@pytest.mark.slow
@pytest.mark.skipif(_host_route() is None, reason="this host has no IPv4 route besides the default")
def test_a_failing_host_check_stops_reproduce_before_04(tmp_path):
    with pytest.raises(HostChecksFailed, match=r"subnet bridge: .* overlaps route"):
        reproduce(_clashing_testbed(tmp_path), "smoke", run_id="gate", notebooks=["02_host", "04_bench"],
                  results_root=tmp_path / "results", progress=False, write_report=False)
    info = json.loads((tmp_path / "results" / "gate" / "run.json").read_text())
    assert info["pipeline"]["notebooks"] == {"02_host": "ok"}
    assert "readiness checks failed" in info["pipeline"]["failure"]["error"] and info["end_reason"] == "failed"
    assert not (tmp_path / "wd").exists()
    # asked to go on anyway, 04_bench runs (and its testbed refuses the same subnet, changing nothing)
    with pytest.raises(NotebookFailed, match="04_bench"):
        reproduce(_clashing_testbed(tmp_path), "smoke", run_id="gate2", notebooks=["02_host", "04_bench"],
                  results_root=tmp_path / "results", progress=False, write_report=False, ignore_check_failures=True)
    info = json.loads((tmp_path / "results" / "gate2" / "run.json").read_text())
    assert info["pipeline"]["ignored_check_failures"] and info["pipeline"]["notebooks"]["04_bench"] == "failed"
