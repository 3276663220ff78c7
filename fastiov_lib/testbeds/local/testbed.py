"""The `local` testbed: a private containerd + runc + CNI plugins that the artifact runs on this machine.

This module is its API (readiness checks, bring-up, and the parts' public calls in `__all__`); one job each:
`paths` (names, work-dir layout, records), `network` (modes, conflists, links, hostdev pool),
`containerd` (config and process; Debian's 1.6 or the instrumented 1.3 of `instrumented`),
`images` (pause and workload images), `cleanup` (pod leftovers, teardown).

Everything lives under `testbed.local.work_dir`:

    containerd/config.toml  root/  state/  containerd.sock  containerd.pid  containerd.log
    runc/                   runc's state (so a cleanup without containerd can still find containers)
    cni/bin/                the Debian CNI plugins (symlinks) + `fastiov-pool`, our host-device wrapper
    cni/net.d/<mode>/       one conflist per network mode
    cni/ipam/               host-local IPAM state;  cni/pool/  which pool link is lent to which pod
    images/                 the pause and workload images as OCI tarballs, built from C with gcc -static
    pod-logs/  storage/     container logs; the app test's storage directory

One containerd serves every network mode: each mode has its own runtime handler
(`<runtime_handler>-<mode>`, e.g. `runc-bridge`) whose `cni_conf_dir` holds that mode's conflist
(containerd 1.6 supports per-runtime CNI config), so switching modes needs no restart. Network
namespaces are mounted under containerd's state dir (`netns_mounts_under_state_dir`), so all of
them are ours. Host links all start with `link_prefix`:

- `none`:    no pod network at all: the sandbox shares the host's network namespace (CRI
             NamespaceMode NODE), so no netns is made and no CNI plugin runs, the analogue of the
             paper's no-network baseline. (containerd 1.6 rejects a pod network whose result has no
             eth0 address, so a loopback-only conflist cannot express "none".) Network readiness
             is not measured in this mode.
- `bridge`:  the `bridge` plugin on `bridge_name`, gateway = first address of `bridge_subnet`
             (the bridge is created up front so the app test's storage server can bind to it).
- `macvlan`: children of the veth `<prefix>mv0`; its peer `<prefix>mv1` stays on the host with the
             first address of `macvlan_subnet`, which gives the host a path to the pods (a host
             cannot reach macvlan children through the parent link itself).
- `hostdev`: a pool of veth pairs `<prefix>d<i>` / `<prefix>h<i>`. `fastiov-pool` lends one free
             `d` end per pod to the `host-device` plugin, which moves it into the pod (the local
             analogue of handing a VF to a pod); the `h` peers stay on the host, enslaved to the
             bridge `<prefix>hbr` that holds the first address of `hostdev_subnet` (like VF
             representors on a switch), so the host reaches the pods.
- `ipvlan` is probed and reported; the kernels this was written on do not support it.
"""
from __future__ import annotations

import fcntl
import os
import platform
import shutil
from pathlib import Path

from fastiov_lib import sh
from fastiov_lib.config import Testbed
from fastiov_lib.testbeds.checks import Check
from fastiov_lib.testbeds.local import address_plan, instrumented, testbed_lock, workdir
from fastiov_lib.testbeds.local.cleanup import cleanup, down, pod_leftovers
from fastiov_lib.testbeds.local.containerd import (containerd_config, containerd_pid, prepare_work_dir,
                                                   start_containerd, stop_containerd)
from fastiov_lib.testbeds.local.images import build_images
from fastiov_lib.testbeds.local.network import (conflist_for, create_hostdev_pool, host_links, hostdev_pool,
                                                probe_network_modes, run_ip, setup_links)
from fastiov_lib.testbeds.local.paths import (LOCAL_MODES, REQUIRED_PLUGINS, CleanupReport, LocalTestbedError,
                                              LocalTestbedHandle, gateway_for, image_ref, local_settings,
                                              own_link_names, paths_for)

# the local testbed's API in one import (the back end, the commands and the tests use these)
__all__ = [
    "LOCAL_MODES", "CleanupReport", "LocalTestbedError", "LocalTestbedHandle", "build_images", "cleanup",
    "conflist_for", "containerd_config", "containerd_pid", "create_hostdev_pool", "down", "ensure_up", "gateway_for",
    "hostdev_pool", "image_ref", "local_checks", "paths_for", "pod_leftovers", "probe_network_modes",
]


def local_checks(testbed: Testbed) -> list[Check]:
    """Readiness of this machine for the local testbed (02_host on `local`): pass/warn/fail + fix."""
    loc = local_settings(testbed)
    checks: list[Check] = []
    root = os.geteuid() == 0
    checks.append(Check("root", "pass" if root else "fail", f"euid {os.geteuid()}",
                        "run as root (containerd, network namespaces and links need it)"))
    checks.append(Check("kernel", "pass" if platform.system() == "Linux" else "fail",
                        f"{platform.system()} {platform.release()}", "the local testbed needs Linux"))
    apt_fix = "apt-get install containerd runc containernetworking-plugins gcc libc6-dev iproute2 util-linux"
    for label, binary in [("containerd", loc.containerd_bin), ("ctr", loc.ctr_bin), ("runc", loc.runc_bin),
                          ("containerd-shim-runc-v2", "containerd-shim-runc-v2"), ("gcc", "gcc"),
                          ("ip (iproute2)", "ip"), ("flock", "flock"), ("umount", "umount")]:
        path = shutil.which(binary)
        seen = path or "not found"
        if path and label in ("containerd", "runc"):
            out = sh.run([path, "--version"], check=False, error=LocalTestbedError).stdout.splitlines()
            seen = f"{path}: {out[0] if out else '?'}"
        checks.append(Check(f"binary {label}", "pass" if path else "fail", seen, apt_fix))
    libc_a = (sh.run(["gcc", "-print-file-name=libc.a"], check=False, error=LocalTestbedError).stdout.strip()
              if shutil.which("gcc") else "")
    checks.append(Check("static libc (gcc -static)", "pass" if libc_a.startswith("/") else "fail",
                        libc_a or "gcc missing", "apt-get install libc6-dev"))
    for plugin in sorted({x for m in LOCAL_MODES for x in REQUIRED_PLUGINS[m]}):
        path = Path(loc.cni_bin_dir) / plugin
        checks.append(Check(f"CNI plugin {plugin}", "pass" if path.exists() else "fail", str(path),
                            "apt-get install containernetworking-plugins (or set local.cni_bin_dir)"))
    cgroup = "v2 (unified)" if Path("/sys/fs/cgroup/cgroup.controllers").exists() else "v1 (or hybrid)"
    checks.append(Check("cgroups", "pass", cgroup))
    current = Path("/proc/self/oom_score_adj").read_text().strip()
    lower = sh.run(["sh", "-c", f"echo {int(current) - 1} > /proc/self/oom_score_adj"], check=False,
                   error=LocalTestbedError)
    checks.append(Check("oom_score_adj", "pass",
                        ("lowering it is not permitted here" if lower.returncode else "lowering it is permitted")
                        + "; our containerd config sets restrict_oom_score_adj = true, so runc never tries "
                        "(otherwise: \"can't get final child's PID from pipe\")"))
    if root:
        name = f"{loc.link_prefix}-check"
        run_ip("netns", "del", name, check=False)
        r = run_ip("netns", "add", name, check=False)
        run_ip("netns", "del", name, check=False)
        checks.append(Check("network namespaces", "pass" if r.returncode == 0 else "fail",
                            "ip netns add/del works" if r.returncode == 0 else r.stderr.strip(),
                            "the kernel needs CONFIG_NET_NS and the process CAP_SYS_ADMIN"))
        for ms in probe_network_modes(testbed):
            wanted = ms.mode in loc.network_modes
            status = "pass" if ms.supported else ("fail" if wanted else "warn")
            used = "" if wanted else " (not used by this testbed)"
            path = "host can reach pods" if ms.host_path else "no host path to the pod"
            checks.append(Check(f"network mode {ms.mode}", status,
                                f"{'supported' if ms.supported else 'unsupported'}{used}: {ms.reason}; {path}",
                                f"drop {ms.mode!r} from local.network_modes, or use a kernel with it"))
        checks.extend(_subnet_checks(testbed))
    pid = containerd_pid(testbed)
    checks.append(Check("local containerd", "pass",
                        f"running (pid {pid})" if pid else "not running (started by `fastiov-artifact testbed up`)"))
    return checks


def _subnet_checks(testbed: Testbed) -> list[Check]:
    return address_plan.checks(testbed, own_link_names(testbed)) + [workdir.check(paths_for(testbed).work_dir)]


def ensure_up(testbed: Testbed) -> LocalTestbedHandle:
    """Bring the local testbed up, reusing what is already there (idempotent).

    Writes configs and conflists, creates the host links of every supported mode (and the hostdev
    pool), starts containerd unless ours is running (restarting it if its config changed), builds
    and imports the images if containerd lacks them.
    """
    loc = local_settings(testbed)
    if not testbed.allow_host_changes:
        raise LocalTestbedError(f"testbed {testbed.name!r}: allow_host_changes is false; the local testbed "
                                "creates links, namespaces and a containerd (set allow_host_changes: true)")
    if os.geteuid() != 0:
        raise LocalTestbedError("the local testbed needs root (containerd, network namespaces, links)")
    needed = ("unshare", "mount") if loc.containerd == "instrumented" else (loc.containerd_bin,)
    for binary in (*needed, loc.ctr_bin, loc.runc_bin, "gcc", "ip", "flock"):
        if shutil.which(binary) is None:
            raise LocalTestbedError(f"{binary}: not found; apt-get install containerd runc "
                                    "containernetworking-plugins gcc libc6-dev iproute2 util-linux")
    p = paths_for(testbed)
    address_plan.require_free(testbed, own_link_names(testbed))  # before anything changes
    existing = set(host_links())
    if workdir.claim(p.work_dir, testbed.name) == "adopted":  # made before markers: its links are ours
        workdir.record_links(p.work_dir, existing & own_link_names(testbed))
    if p.instrumented:
        instrumented.ensure_built(testbed)  # stamped: nothing to do after 01_build
    # one bring-up at a time (a notebook and a CLI call must not start two containerds)
    with testbed_lock.hold(p.work_dir, "testbed up"), open(p.work_dir / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        modes = probe_network_modes(testbed)
        changed = prepare_work_dir(testbed, modes)
        usable = [m.mode for m in modes if m.supported and m.mode in loc.network_modes and m.mode in LOCAL_MODES]
        setup_links(testbed, usable)
        if changed and containerd_pid(testbed) is not None:
            stop_containerd(testbed)
        pid = start_containerd(testbed)
        images = build_images(testbed, import_images=True)
    wanted = [m for m in modes if m.mode in loc.network_modes or m.mode == "ipvlan"]
    return LocalTestbedHandle(testbed, paths_for(testbed), pid, tuple(wanted), tuple(images))
