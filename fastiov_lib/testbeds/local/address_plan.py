"""The local testbed's address plan, checked before anything changes on the host.

The bridge, macvlan and hostdev subnets must not overlap each other, nor any route or address the
host already has (our own links excepted): a subnet equal to the host's LAN would put the gateway
address on our bridge and cut the machine off. `testbed up` refuses naming the conflict; `testbed
check` reports the same conflicts as FAIL.
"""
from __future__ import annotations

import json
from ipaddress import IPv4Network
from typing import Any

from fastiov_lib import sh
from fastiov_lib.config import ConfigError, Testbed
from fastiov_lib.testbeds.checks import Check
from fastiov_lib.testbeds.base import BackendError

SUBNET_MODES = ("bridge", "macvlan", "hostdev")


class AddressPlanError(ConfigError, BackendError):
    """A subnet of the testbed overlaps another one or something the host already uses."""


def planned_subnets(testbed: Testbed) -> dict[str, IPv4Network]:
    """The subnets of the network modes this testbed uses, by mode."""
    loc = testbed.local
    return {m: getattr(loc, f"{m}_subnet") for m in SUBNET_MODES if m in loc.network_modes}


def host_networks(own_links: set[str]) -> list[tuple[IPv4Network, str]]:
    """IPv4 routes and addresses of this host (`ip -j`), with a label, skipping our own links."""
    out: list[tuple[IPv4Network, str]] = []
    routes: list[dict[str, Any]] = json.loads(sh.output(["ip", "-j", "-4", "route", "show", "table", "main"],
                                                        what="reading the host's routes") or "[]")
    for r in routes:
        dst, dev = r.get("dst"), r.get("dev")
        if dst in (None, "default") or dev in own_links:
            continue
        out.append((IPv4Network(dst if "/" in dst else f"{dst}/32", strict=False), f"route {dst} dev {dev}"))
    links: list[dict[str, Any]] = json.loads(sh.output(["ip", "-j", "-4", "addr", "show"],
                                                       what="reading the host's addresses") or "[]")
    for link in links:
        if link.get("ifname") in own_links:
            continue
        for a in link.get("addr_info", []):
            if a.get("family") == "inet" and a.get("local"):
                net = IPv4Network(f"{a['local']}/{a.get('prefixlen', 32)}", strict=False)
                out.append((net, f"address {a['local']}/{a.get('prefixlen', 32)} on {link.get('ifname')}"))
    return out


def conflicts(subnets: dict[str, IPv4Network], host: list[tuple[IPv4Network, str]]) -> dict[str, list[str]]:
    """Per mode: what its subnet overlaps (the other modes' subnets first, then the host's)."""
    out: dict[str, list[str]] = {m: [] for m in subnets}
    modes = list(subnets)
    for i, a in enumerate(modes):
        for b in modes[i + 1:]:
            if subnets[a].overlaps(subnets[b]):
                out[a].append(f"local.{b}_subnet {subnets[b]}")
                out[b].append(f"local.{a}_subnet {subnets[a]}")
    for mode, net in subnets.items():
        out[mode] += [label for hnet, label in host if hnet.overlaps(net)]
    return out


def checks(testbed: Testbed, own_links: set[str]) -> list[Check]:
    """One check per used subnet: pass if free, fail naming what it overlaps."""
    subnets = planned_subnets(testbed)
    found = conflicts(subnets, host_networks(own_links))
    return [Check(f"subnet {m}", "fail" if found[m] else "pass",
                  f"{subnets[m]} overlaps {'; '.join(found[m])}" if found[m] else f"{subnets[m]} is free",
                  f"choose another local.{m}_subnet in {testbed.source_path or 'the testbed file'}")
            for m in subnets]


def require_free(testbed: Testbed, own_links: set[str]) -> None:
    """Raise AddressPlanError naming the first conflict (nothing on the host is changed)."""
    for check in checks(testbed, own_links):
        if check.status == "fail":
            raise AddressPlanError(f"{testbed.source_path or testbed.name}: local.{check.name.split()[1]}_subnet "
                                   f"{check.seen}; nothing was changed. {check.fix}")
