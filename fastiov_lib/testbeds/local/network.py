"""The local testbed's pod networks: probing the modes, conflists, host links, the hostdev pool."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any


from fastiov_lib import sh
from fastiov_lib.config import Testbed
from fastiov_lib.testbeds.local import workdir
from fastiov_lib.testbeds.local.paths import (LOCAL_MODES, LocalPaths, LocalTestbedError, ModeSupport, PROBED_MODES,
                                              PoolLink, REQUIRED_PLUGINS, gateway_for, host_link_names,
                                              local_settings, mode_subnet, network_name, paths_for, pool_link_names,
                                              write_if_changed)


def run_ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return sh.run(["ip", *args], check=check, error=LocalTestbedError)


def host_links() -> dict[str, dict[str, Any]]:
    """Links of the host network namespace, by name (`ip -j -d link`)."""
    out = sh.run(["ip", "-j", "-d", "link", "show"], error=LocalTestbedError).stdout
    return {link["ifname"]: link for link in json.loads(out or "[]")}


def link_exists(name: str) -> bool:
    return run_ip("link", "show", "dev", name, check=False).returncode == 0


def _ensure_addr(dev: str, addr: str) -> None:
    proc = run_ip("addr", "add", addr, "dev", dev, check=False)
    if proc.returncode != 0 and "File exists" not in proc.stderr and "Address already assigned" not in proc.stderr:
        raise LocalTestbedError(f"ip addr add {addr} dev {dev}: {proc.stderr.strip()}")


def delete_link(name: str) -> bool:
    return run_ip("link", "del", "dev", name, check=False).returncode == 0


def probe_network_modes(testbed: Testbed) -> list[ModeSupport]:
    """Try each local network mode's kernel features with throw-away links; report, never raise.

    Modes probed: none, bridge, macvlan (over a veth parent), hostdev (veth moved to a netns) and
    ipvlan. Links are named `<prefix>p*` and deleted again.
    """
    loc = local_settings(testbed)
    p = loc.link_prefix
    plugins = Path(loc.cni_bin_dir)
    results: list[ModeSupport] = []
    if os.geteuid() != 0:
        return [ModeSupport(m, False, "needs root", m in ("bridge", "macvlan", "hostdev")) for m in PROBED_MODES]
    veth_a, veth_b, netns = f"{p}pv0", f"{p}pv1", f"{p}-probe"
    delete_link(veth_a)
    veth = run_ip("link", "add", veth_a, "type", "veth", "peer", "name", veth_b, check=False)
    try:
        for mode in PROBED_MODES:
            missing = [x for x in REQUIRED_PLUGINS[mode] if not (plugins / x).exists()]
            if missing:
                results.append(ModeSupport(mode, False, f"CNI plugin(s) {', '.join(missing)} missing in {plugins}",
                                           mode != "none"))
                continue
            if mode == "none":
                results.append(ModeSupport(mode, True, "host network namespace, no CNI", False))
            elif mode == "bridge":
                r = run_ip("link", "add", f"{p}pb", "type", "bridge", check=False)
                delete_link(f"{p}pb")
                results.append(ModeSupport(mode, r.returncode == 0, "bridge links work" if r.returncode == 0
                                           else f"cannot create a bridge: {r.stderr.strip()}", True))
            elif veth.returncode != 0:
                results.append(ModeSupport(mode, False, f"cannot create veth pairs: {veth.stderr.strip()}",
                                           mode != "ipvlan"))
            elif mode in ("macvlan", "ipvlan"):
                kind = ["macvlan", "mode", "bridge"] if mode == "macvlan" else ["ipvlan", "mode", "l2"]
                r = run_ip("link", "add", f"{p}p{mode[0]}", "link", veth_a, "type", *kind, check=False)
                delete_link(f"{p}p{mode[0]}")
                ok = r.returncode == 0
                why = (f"{mode} over a veth parent works" if ok else
                       f"kernel refuses {mode} links: {r.stderr.strip() or 'unknown error'}")
                results.append(ModeSupport(mode, ok, why, mode == "macvlan"))
            elif mode == "hostdev":
                # its own pair: deleting the netns below destroys the pair moved into it
                hd_a, hd_b = f"{p}ph0", f"{p}ph1"
                delete_link(hd_a)
                run_ip("netns", "del", netns, check=False)
                r = run_ip("link", "add", hd_a, "type", "veth", "peer", "name", hd_b, check=False)
                if r.returncode == 0:
                    r = run_ip("netns", "add", netns, check=False)
                ok = r.returncode == 0 and run_ip("link", "set", hd_b, "netns", netns, check=False).returncode == 0
                run_ip("netns", "del", netns, check=False)
                delete_link(hd_a)
                results.append(ModeSupport(mode, ok, "veth ends can be moved into a netns" if ok else
                                           f"cannot move a link into a network namespace: {r.stderr.strip()}", True))
    finally:
        delete_link(veth_a)
        delete_link(veth_b)
    return results


POOL_PLUGIN = r"""#!/bin/sh
# fastiov-pool: a CNI plugin that lends one free link of the local hostdev pool to a pod and
# delegates to the host-device plugin (the local analogue of the FastIOV CNI plugin handing a VF
# to a pod). The pool is the file links (one name per line); used/<link> holds the container id
# holding it. Generated by fastiov_lib.testbeds.local.testbed; do not edit.
set -u
STATE="@STATE@"
HOSTDEV="@HOSTDEV@"
conf=$(cat)
case "${CNI_COMMAND:-}" in
ADD)
  exec 9>"$STATE/lock"
  flock 9
  dev=""
  for cand in $(cat "$STATE/links"); do
    if [ ! -e "$STATE/used/$cand" ]; then dev="$cand"; break; fi
  done
  if [ -z "$dev" ]; then
    printf '{"cniVersion":"0.4.0","code":11,"msg":"hostdev pool exhausted","details":"every link in %s is lent to a pod"}\n' "$STATE/links"
    exit 1
  fi
  printf '%s\n' "$CNI_CONTAINERID" > "$STATE/used/$dev"
  flock -u 9
  if printf '%s' "$conf" | sed "s/@POOL_DEVICE@/$dev/" | "$HOSTDEV"; then exit 0; fi
  rc=$?
  rm -f "$STATE/used/$dev"
  exit $rc
  ;;
DEL)
  dev=""
  for f in "$STATE"/used/*; do
    [ -e "$f" ] || continue
    if [ "$(cat "$f")" = "$CNI_CONTAINERID" ]; then dev=$(basename "$f"); break; fi
  done
  [ -n "$dev" ] || exit 0
  printf '%s' "$conf" | sed "s/@POOL_DEVICE@/$dev/" | "$HOSTDEV" || exit $?
  rm -f "$STATE/used/$dev"
  ;;
*)
  printf '%s' "$conf" | sed "s/@POOL_DEVICE@/unused/" | exec "$HOSTDEV"
  ;;
esac
"""


def conflist_for(testbed: Testbed, mode: str) -> dict[str, Any]:
    """The CNI conflist of one network mode (as a dict)."""
    p = paths_for(testbed)
    net = mode_subnet(testbed, mode)
    names = host_link_names(testbed)

    def ipam(gateway: bool) -> dict[str, Any]:
        rng: dict[str, Any] = {"subnet": str(net), "rangeStart": str(net.network_address + 2),
                               "rangeEnd": str(net.broadcast_address - 1)}
        if gateway:
            rng["gateway"] = str(net.network_address + 1)
        return {"type": "host-local", "dataDir": str(p.ipam_dir), "ranges": [[rng]]}

    if mode == "none":
        plugin: dict[str, Any] = {"type": "loopback"}
    elif mode == "bridge":
        plugin = {"type": "bridge", "bridge": names["bridge"], "isGateway": True, "ipMasq": False,
                  "hairpinMode": False, "ipam": ipam(True)}
    elif mode == "macvlan":
        plugin = {"type": "macvlan", "master": names["mv_parent"], "mode": "bridge", "ipam": ipam(False)}
    elif mode == "hostdev":
        plugin = {"type": "fastiov-pool", "device": "@POOL_DEVICE@", "ipam": ipam(False)}
    else:
        raise LocalTestbedError(f"network mode {mode!r} has no conflist on the local testbed "
                                f"(local modes: {', '.join(LOCAL_MODES)})")
    return {"cniVersion": "0.4.0", "name": network_name(testbed, mode), "plugins": [plugin]}


def setup_links(testbed: Testbed, modes: list[str]) -> None:
    names = host_link_names(testbed)
    before = set(host_links())
    try:
        _setup_links_now(testbed, modes, names)
    finally:  # down removes exactly the links recorded as created here
        workdir.record_links(paths_for(testbed).work_dir, set(host_links()) - before)


def _setup_links_now(testbed: Testbed, modes: list[str], names: dict[str, str]) -> None:
    if "bridge" in modes:
        br = names["bridge"]
        if not link_exists(br):
            run_ip("link", "add", br, "type", "bridge")
        _ensure_addr(br, f"{gateway_for(testbed, 'bridge')}/{mode_subnet(testbed, 'bridge').prefixlen}")
        run_ip("link", "set", br, "up")
    if "macvlan" in modes:
        parent, host = names["mv_parent"], names["mv_host"]
        if not link_exists(parent):
            delete_link(host)
            run_ip("link", "add", parent, "type", "veth", "peer", "name", host)
        _ensure_addr(host, f"{gateway_for(testbed, 'macvlan')}/{mode_subnet(testbed, 'macvlan').prefixlen}")
        run_ip("link", "set", parent, "up")
        run_ip("link", "set", host, "up")
    if "hostdev" in modes:
        create_hostdev_pool(testbed)


def create_hostdev_pool(testbed: Testbed) -> list[PoolLink]:
    """Create (or complete) the hostdev pool: `hostdev_pool_size` veth pairs (03_nic on `local`).

    Idempotent: existing pairs are kept, missing ones created, half pairs replaced. The `h` peers are
    enslaved to `<prefix>hbr`, which holds the host's address in hostdev_subnet.
    """
    loc = local_settings(testbed)
    if not testbed.allow_host_changes:
        raise LocalTestbedError(f"testbed {testbed.name!r}: allow_host_changes is false; creating the hostdev "
                                "pool adds links to this host (set allow_host_changes: true)")
    p = paths_for(testbed)
    names = host_link_names(testbed)
    before = set(host_links())
    try:
        _create_pool_now(testbed, loc, p, names)
    finally:
        workdir.record_links(p.work_dir, set(host_links()) - before)
    return hostdev_pool(testbed)


def _create_pool_now(testbed: Testbed, loc: Any, p: LocalPaths, names: dict[str, str]) -> None:
    hbr = names["hostdev_bridge"]
    if not link_exists(hbr):
        run_ip("link", "add", hbr, "type", "bridge")
    _ensure_addr(hbr, f"{gateway_for(testbed, 'hostdev')}/{mode_subnet(testbed, 'hostdev').prefixlen}")
    run_ip("link", "set", hbr, "up")
    links = host_links()
    (p.pool_dir / "used").mkdir(parents=True, exist_ok=True)
    for i in range(loc.hostdev_pool_size):
        dev, peer = pool_link_names(testbed, i)
        if dev in links and peer in links:
            pass
        elif _pool_device_lent(p, dev):
            continue  # inside a running pod right now; its peer is still on the host
        else:
            delete_link(dev)
            delete_link(peer)
            run_ip("link", "add", dev, "type", "veth", "peer", "name", peer)
        if links.get(peer, {}).get("master") != hbr:
            run_ip("link", "set", peer, "master", hbr)
        run_ip("link", "set", peer, "up")
    wanted = [pool_link_names(testbed, i)[0] for i in range(loc.hostdev_pool_size)]
    write_if_changed(p.pool_dir / "links", "\n".join(wanted) + "\n")


def _pool_device_lent(p: LocalPaths, dev: str) -> bool:
    return (p.pool_dir / "used" / dev).exists()


def hostdev_pool(testbed: Testbed) -> list[PoolLink]:
    """The pool's links as they are now: which are on the host and which are lent to a pod."""
    loc = local_settings(testbed)
    p = paths_for(testbed)
    links = host_links()
    out = []
    for i in range(loc.hostdev_pool_size):
        dev, peer = pool_link_names(testbed, i)
        used = p.pool_dir / "used" / dev
        out.append(PoolLink(i, dev, peer, dev in links, used.read_text().strip() if used.exists() else None))
    return out
