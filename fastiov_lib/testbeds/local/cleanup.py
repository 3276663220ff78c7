"""Removing what pods of the local testbed leave behind (cleanup) and tearing it all down (down)."""
from __future__ import annotations

import errno
import json
import shutil
import time
from pathlib import Path
from typing import Any


from fastiov_lib import sh
from fastiov_lib.config import Testbed
from fastiov_lib.testbeds.local import testbed_lock, workdir
from fastiov_lib.testbeds.local.containerd import our_shims, terminate_process, containerd_pid, stop_containerd
from fastiov_lib.testbeds.local.network import delete_link, link_exists, host_links, create_hostdev_pool, hostdev_pool
from fastiov_lib.testbeds.local.paths import (CleanupReport, LOCAL_MODES, LocalPaths, LocalTestbedError,
                                              host_link_names, local_settings, network_name, own_link_names,
                                              paths_for)


def cleanup(testbed: Testbed, timeout_s: float = 30.0) -> CleanupReport:
    """Remove every pod leftover of the local testbed; safe after a SIGKILL of the driver, harmless twice.

    With our containerd running, its sandboxes are stopped and removed through CRI (which tears
    down their networks). Without it, the shims and runc containers under our runc root are
    killed and the mounts and network namespaces under the work dir released. Then any pod veth
    still on our bridges, IPAM allocations, CNI cache entries and stale pool loans are removed and
    the hostdev pool is repaired. Standing infrastructure (containerd, bridges, pool, images) stays;
    `down` removes that too.
    """
    loc = local_settings(testbed)
    p = paths_for(testbed)
    report = CleanupReport()
    if workdir.adopt_own_layout(p.work_dir, testbed.name):
        workdir.record_links(p.work_dir, set(host_links()) & own_link_names(testbed))
    if not workdir.require_owned(p.work_dir):  # refuses a folder the testbed did not create
        return report
    with testbed_lock.hold(p.work_dir, "testbed cleanup"):
        _cleanup_now(testbed, loc, p, report, timeout_s)
    return report


def _cleanup_now(testbed: Testbed, loc: Any, p: LocalPaths, report: CleanupReport, timeout_s: float) -> None:
    if containerd_pid(testbed) is not None:
        _remove_sandboxes_via_cri(testbed, report, timeout_s)
    else:
        _kill_orphans(p, report)
    _release_netns(p, report)
    if containerd_pid(testbed) is None:
        _release_mounts(p, report, keep_root=False)
    names = host_link_names(testbed)
    links = host_links()
    for name, link in links.items():
        if link.get("master") in (names["bridge"],) and link.get("linkinfo", {}).get("info_kind") == "veth":
            if delete_link(name):
                report.links.append(name)
    if p.ipam_dir.exists():
        for f in sorted(p.ipam_dir.glob("*/*")):
            if f.name in ("lock",) or f.name.startswith("last_reserved_ip"):
                continue
            f.unlink(missing_ok=True)
            report.ipam_files.append(str(f.relative_to(p.ipam_dir)))
    for mode in LOCAL_MODES:
        for f in sorted(p.cni_cache_dir.glob(f"{network_name(testbed, mode)}-*")):
            f.unlink(missing_ok=True)
            report.cache_files.append(f.name)
    used = p.pool_dir / "used"
    if used.exists():
        for f in sorted(used.iterdir()):
            f.unlink(missing_ok=True)
            report.pool_repaired.append(f"{f.name} returned to the pool")
    if "hostdev" in loc.network_modes and link_exists(names["hostdev_bridge"]):
        before = {pl.device for pl in hostdev_pool(testbed) if pl.in_host_netns}
        after = {pl.device for pl in create_hostdev_pool(testbed) if pl.in_host_netns}
        report.pool_repaired.extend(f"{d} recreated" for d in sorted(after - before))


def _remove_sandboxes_via_cri(testbed: Testbed, report: CleanupReport, timeout_s: float,
                              settle_s: float = 10.0) -> None:
    """Stop and remove every sandbox of our containerd, until none is listed and none is in flight.

    A driver killed mid-round leaves RunPodSandbox calls running inside containerd: their sandboxes
    are listed only once created, but their network namespaces and shims exist before that, so
    the loop goes on while either is still there (up to `settle_s`). containerd 1.6 can also leak
    the shim and netns of a RunPodSandbox whose client went away mid-call; whatever is still there
    after the loop belongs to no sandbox and is killed/released by id.
    """
    from concurrent.futures import ThreadPoolExecutor

    from fastiov_lib.cri import CriClient, CriError

    p = paths_for(testbed)
    deadline = time.monotonic() + settle_s
    try:
        with CriClient(p.socket, api=testbed.cri_api, timeout_s=timeout_s) as cri:

            def remove(sb_id: str) -> str | None:
                try:
                    cri.stop_pod_sandbox(sb_id)
                    cri.remove_pod_sandbox(sb_id)
                    return None
                except CriError as err:
                    return f"sandbox {sb_id[:12]}: {err}"

            while True:
                sandboxes = cri.list_pod_sandboxes()
                with ThreadPoolExecutor(max_workers=8) as pool:
                    for sb, err in zip(sandboxes, pool.map(remove, [s.id for s in sandboxes])):
                        if err:
                            report.errors.append(err)
                        else:
                            report.sandboxes.append(f"{sb.name} {sb.id[:12]}")
                in_flight = (p.netns_dir.is_dir() and any(p.netns_dir.iterdir())) or bool(our_shims(p))
                if (not sandboxes and not in_flight) or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
            if not cri.list_pod_sandboxes():
                _kill_orphans(p, report)
    except CriError as err:
        report.errors.append(f"containerd at {p.socket}: {err}")


def _kill_orphans(p: LocalPaths, report: CleanupReport) -> None:
    """Without containerd: kill our runc containers and shims by their ids."""
    runc_ns = p.runc_root / "k8s.io"
    if runc_ns.is_dir():
        listing = sh.run(["runc", "--root", str(runc_ns), "list", "-q"], check=False,
                         error=LocalTestbedError).stdout.split()
        for cid in listing:
            state = sh.run(["runc", "--root", str(runc_ns), "state", cid], check=False, error=LocalTestbedError)
            try:
                pid = int(json.loads(state.stdout).get("pid", 0))
            except (ValueError, json.JSONDecodeError):
                pid = 0
            sh.run(["runc", "--root", str(runc_ns), "kill", cid, "KILL"], check=False, error=LocalTestbedError)
            sh.run(["runc", "--root", str(runc_ns), "delete", "-f", cid], check=False, error=LocalTestbedError)
            if pid:
                report.processes.append(pid)
    for pid in our_shims(p):
        terminate_process(pid, str(p.socket), 5.0)
        report.processes.append(pid)


def mounts_under(root: Path) -> list[str]:
    out = []
    prefix = str(root).rstrip("/") + "/"
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        mnt = line.split()[4].replace("\\040", " ")
        if mnt.startswith(prefix):
            out.append(mnt)
    return sorted(set(out), key=len, reverse=True)


def _release_mounts(p: LocalPaths, report: CleanupReport, keep_root: bool) -> None:
    for mnt in mounts_under(p.work_dir):
        r = sh.run(["umount", "-l", mnt], check=False, error=LocalTestbedError)
        (report.mounts.append(mnt) if r.returncode == 0 else report.errors.append(f"umount {mnt}: {r.stderr.strip()}"))


def _release_netns(p: LocalPaths, report: CleanupReport) -> None:
    if not p.netns_dir.is_dir():
        return
    for ns in sorted(p.netns_dir.iterdir()):
        sh.run(["umount", "-l", str(ns)], check=False, error=LocalTestbedError)
        try:
            ns.unlink()
            report.netns.append(ns.name)
        except OSError as err:
            if err.errno != errno.ENOENT:
                report.errors.append(f"netns {ns}: {err}")


def pod_leftovers(testbed: Testbed) -> list[str]:
    """What pods of the local testbed left behind (should be empty after a round's cleanup)."""
    p = paths_for(testbed)
    names = host_link_names(testbed)
    out: list[str] = []
    if p.netns_dir.is_dir():
        out += [f"netns {ns.name}" for ns in p.netns_dir.iterdir()]
    links = host_links()
    out += [f"link {n} on {l['master']}" for n, l in links.items()
            if l.get("master") == names["bridge"] and l.get("linkinfo", {}).get("info_kind") == "veth"]
    if p.ipam_dir.is_dir():
        out += [f"ipam {f.parent.name}/{f.name}" for f in p.ipam_dir.glob("*/*")
                if f.name != "lock" and not f.name.startswith("last_reserved_ip")]
    if (p.pool_dir / "used").is_dir():
        out += [f"pool link {f.name} lent" for f in (p.pool_dir / "used").iterdir()]
    for mode in LOCAL_MODES:
        out += [f"cni cache {f.name}" for f in p.cni_cache_dir.glob(f"{network_name(testbed, mode)}-*")]
    return out


def down(testbed: Testbed) -> CleanupReport:
    """Tear the local testbed down completely: pods, containerd, links, pool, mounts, the work dir."""
    p = paths_for(testbed)
    if workdir.adopt_own_layout(p.work_dir, testbed.name):  # made before markers: its links are ours
        workdir.record_links(p.work_dir, set(host_links()) & own_link_names(testbed))
    if not workdir.require_owned(p.work_dir):  # nothing of ours here: touch nothing
        return CleanupReport()
    with testbed_lock.hold(p.work_dir, "testbed down"):
        return _down_now(testbed, p)


def _down_now(testbed: Testbed, p: LocalPaths) -> CleanupReport:
    report = cleanup(testbed)
    pid = stop_containerd(testbed)
    if pid:
        report.processes.append(pid)
    if p.work_dir.exists():
        _kill_orphans(p, report)
        _release_netns(p, report)
        _release_mounts(p, report, keep_root=False)
    recorded = workdir.recorded_links(p.work_dir) & own_link_names(testbed)
    for name in host_links():
        if name in recorded:  # only links recorded as created by the testbed
            if delete_link(name):
                report.links.append(name)
    for mode in LOCAL_MODES:
        for f in p.cni_cache_dir.glob(f"{network_name(testbed, mode)}-*"):
            f.unlink(missing_ok=True)
            report.cache_files.append(f.name)
    if p.work_dir.exists():
        if mounts_under(p.work_dir):
            report.errors.append(f"mounts remain under {p.work_dir}; not removing it")
        elif p.instrumented:  # the instrumented containerd's build stays (a rebuild takes minutes), and
            for child in p.work_dir.iterdir():  # the ownership marker with it
                if child.name not in ("build", workdir.MARKER):
                    shutil.rmtree(child, ignore_errors=True) if child.is_dir() else child.unlink()
        else:
            try:
                workdir.remove(p.work_dir)
            except OSError as err:
                report.errors.append(f"removing {p.work_dir}: {err}")
    return report
