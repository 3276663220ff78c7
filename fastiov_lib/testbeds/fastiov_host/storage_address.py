"""The app test's storage server address on the pods' subnet (the original put 10.88.0.1/16 on its PF).

Pods on VFs reach the host only through the NIC, so the storage server must listen on an address of
the pods' subnet on a PF. The run set-up adds `fastiov.storage_address` to `fastiov.storage_interface`
if it is not there yet and, at the end of the run, removes it again only if it added it. The NIC
guard accepts this one route on a PF (hw.discovery.guard_problems' `allowed`). host-local IPAM
reserves the subnet's first address as the gateway, so the storage address must be that one, or
a pod could be given it.
"""
from __future__ import annotations

import json
from ipaddress import IPv4Interface, IPv4Network

from fastiov_lib import sh
from fastiov_lib.config import FastiovHostSettings
from fastiov_lib.testbeds.checks import Check


def interface_addresses(ifname: str) -> list[IPv4Interface]:
    """The IPv4 addresses (with prefix) of an interface, from `ip -j -4 addr show`."""
    res = sh.run(["ip", "-j", "-4", "addr", "show", "dev", ifname], what=f"addresses of {ifname}", timeout=30,
                 check=False, error=RuntimeError)
    if res.returncode != 0:
        raise RuntimeError(f"interface {ifname!r} (fastiov.storage_interface): {res.stderr.strip() or 'not found'}")
    try:
        return [IPv4Interface(f"{a['local']}/{a['prefixlen']}") for link in json.loads(res.stdout or "[]")
                for a in link.get("addr_info", [])]
    except (ValueError, KeyError, TypeError):
        raise RuntimeError(f"`ip -j addr show dev {ifname}` gave no readable addresses") from None


def ensure_storage_address(s: FastiovHostSettings) -> bool:
    """Add storage_address to storage_interface unless it is there; True if it was added (ours to remove)."""
    if s.storage_address is None or not s.storage_interface:
        return False
    if s.storage_address in interface_addresses(s.storage_interface):
        return False
    sh.run(["ip", "addr", "add", str(s.storage_address), "dev", s.storage_interface],
           what="the storage server's address (fastiov.storage_address)", timeout=30, error=RuntimeError)
    return True


def remove_storage_address(s: FastiovHostSettings) -> None:
    """Take storage_address off storage_interface again (only called when ensure_ added it)."""
    sh.run(["ip", "addr", "del", str(s.storage_address), "dev", s.storage_interface],
           what="the storage server's address (fastiov.storage_address)", timeout=30, check=False,
           error=RuntimeError)


def check_storage_address(s: FastiovHostSettings, pod_subnet: str) -> Check:
    """The storage address must be the pods' subnet's gateway address, on a named interface."""
    if s.storage_address is None:
        return Check("app.storage-address", "warn", "no fastiov.storage_address: the app test uses the address "
                     f"{s.storage_interface or '(no storage_interface)'} already has",
                     f"set storage_address to the first address of the pods' subnet {pod_subnet} (e.g. "
                     f"{IPv4Network(pod_subnet).network_address + 1}/{IPv4Network(pod_subnet).prefixlen}) and "
                     "storage_interface to a PF")
    net = IPv4Network(pod_subnet)
    gateway = net.network_address + 1
    problems = []
    if s.storage_address.ip not in net:
        problems.append(f"{s.storage_address} is outside the pods' subnet {pod_subnet}: pods cannot reach it")
    elif s.storage_address.ip != gateway:
        problems.append(f"{s.storage_address.ip} is not {gateway}, the address host-local IPAM keeps back: "
                        "a pod could be given it")
    if not s.storage_interface:
        problems.append("fastiov.storage_interface is not set")
    if problems:
        return Check("app.storage-address", "fail", "; ".join(problems),
                     f"storage_address: {gateway}/{net.prefixlen} on a PF (storage_interface)")
    return Check("app.storage-address", "pass", f"{s.storage_address} on {s.storage_interface} (the pods' gateway "
                 "address; added at run set-up if missing)")
