"""Address plans are checked before anything changes (issue 9, item 2)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from ipaddress import IPv4Network
from pathlib import Path

import pytest
import yaml

from fastiov_lib.config import ConfigError, load_testbed
from fastiov_lib.testbeds.local import address_plan


def _host_route() -> str | None:
    """A non-default IPv4 route of this host that is not one of a testbed's (any will do)."""
    routes = json.loads(subprocess.run(["ip", "-j", "-4", "route", "show", "table", "main"], capture_output=True,
                                       text=True).stdout or "[]")
    for r in routes:
        if r.get("dst") not in (None, "default") and not str(r.get("dev", "")).startswith(("fiov", "ftb", "h9")):
            return r["dst"] if "/" in r["dst"] else f"{r['dst']}/32"
    return None


def _testbed_file(tmp_path: Path, **local) -> Path:
    data = {"name": "ap", "kind": "local", "allow_host_changes": True,
            "local": {"work_dir": str(tmp_path / "wd"), "link_prefix": "h9a", "bridge_name": "h9abr0",
                      "bridge_subnet": "10.245.0.0/24", "macvlan_subnet": "10.245.1.0/24",
                      "hostdev_subnet": "10.245.2.0/24", **local}}
    path = tmp_path / "testbed.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_subnets_that_overlap_each_other_are_refused_when_the_file_is_loaded(tmp_path):
    with pytest.raises(ConfigError, match=r"bridge_subnet 10.245.1.0/24 overlaps macvlan_subnet"):
        load_testbed(_testbed_file(tmp_path, bridge_subnet="10.245.1.0/24"))
    # a mode the testbed does not use may keep any subnet
    load_testbed(_testbed_file(tmp_path, macvlan_subnet="10.245.0.0/24", network_modes=["none", "bridge", "hostdev"]))


def test_conflicts_name_the_other_mode_and_the_host_route():
    subnets = {"bridge": IPv4Network("10.9.0.0/16"), "macvlan": IPv4Network("10.9.3.0/24"),
               "hostdev": IPv4Network("10.20.0.0/24")}
    host = [(IPv4Network("10.20.0.0/16"), "route 10.20.0.0/16 dev eth1")]
    found = address_plan.conflicts(subnets, host)
    assert found["bridge"] == ["local.macvlan_subnet 10.9.3.0/24"]
    assert found["macvlan"] == ["local.bridge_subnet 10.9.0.0/16"]
    assert found["hostdev"] == ["route 10.20.0.0/16 dev eth1"]


def test_own_links_are_not_conflicts():
    nets = address_plan.host_networks(own_links=set())
    mine = {label.split()[-1] for _, label in nets if label.startswith("route")}
    assert not any(label.endswith(tuple(mine)) for _, label in address_plan.host_networks(own_links=mine)
                   if label.startswith("route"))


@pytest.mark.skipif(_host_route() is None, reason="this host has no IPv4 route besides the default")
def test_testbed_check_fails_and_up_refuses_a_subnet_on_a_host_route(tmp_path):
    route = _host_route()
    path = _testbed_file(tmp_path, bridge_subnet=route)
    tb = load_testbed(path)
    checks = {c.name: c for c in address_plan.checks(tb, set())}
    assert checks["subnet bridge"].status == "fail" and route in checks["subnet bridge"].seen
    assert checks["subnet macvlan"].status == "pass"
    up = subprocess.run([sys.executable, "-m", "fastiov_lib", "testbed", "up", "--testbed", str(path)],
                        capture_output=True, text=True, timeout=60)
    assert up.returncode == 2 and route in up.stderr and "nothing was changed" in up.stderr, up.stderr
    assert "Traceback" not in up.stderr
    assert not (tmp_path / "wd").exists()  # refused before anything was created
    assert not Path("/sys/class/net/h9abr0").exists()
