"""The `local` testbed: a private containerd + runc + CNI plugins that the artifact runs on this machine.

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

import errno
import fcntl
import hashlib
import json
import os
import platform
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Any

import tomlkit

from fastiov_lib.testbeds.checks import Check
from fastiov_lib.testbeds.local import address_plan, testbed_lock, workdir
from fastiov_lib.testbeds.local.oci_image import write_oci_image
from fastiov_lib.config import Testbed

LOCAL_MODES = ("none", "bridge", "macvlan", "hostdev")
PROBED_MODES = ("none", "bridge", "macvlan", "hostdev", "ipvlan")
IMAGE_PROGRAMS = {"pause": "pause.c", "workload": "workload.c"}
IMAGE_TAG = "1"
IMAGES_SRC = Path(__file__).resolve().parent / "images"
CNI_CACHE_DIR = Path("/var/lib/cni/results")  # libcni's cache; containerd 1.6 cannot move it
REQUIRED_PLUGINS = {"none": ["loopback"], "bridge": ["bridge", "host-local"],
                    "macvlan": ["macvlan", "host-local"], "hostdev": ["host-device", "host-local"],
                    "ipvlan": ["ipvlan", "host-local"]}


class LocalTestbedError(RuntimeError):
    """The local testbed cannot be set up or used; the message says what is missing and how to fix it."""


# ----------------------------------------------------------------------------------------------
# records


@dataclass(frozen=True)
class ModeSupport:
    """Whether this host can run pods in one network mode, and why not if it cannot."""

    mode: str
    supported: bool
    reason: str
    host_path: bool  # the host can reach the pod's address (so network readiness is measurable)


@dataclass(frozen=True)
class ImageInfo:
    """An image built from C source and (if containerd is up) imported into it."""

    name: str
    ref: str
    source: Path
    tarball: Path
    manifest_digest: str
    size_bytes: int
    imported: bool


@dataclass(frozen=True)
class PoolLink:
    """One veth pair of the hostdev pool: `device` is lent to a pod, `peer` stays on the host."""

    index: int
    device: str
    peer: str
    in_host_netns: bool
    lent_to: str | None  # container id of the pod holding it, if any


@dataclass
class CleanupReport:
    """What a cleanup removed, by category; a second cleanup in a row reports nothing removed."""

    sandboxes: list[str] = field(default_factory=list)
    processes: list[int] = field(default_factory=list)
    netns: list[str] = field(default_factory=list)
    links: list[str] = field(default_factory=list)
    ipam_files: list[str] = field(default_factory=list)
    cache_files: list[str] = field(default_factory=list)
    mounts: list[str] = field(default_factory=list)
    pool_repaired: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def removed_anything(self) -> bool:
        return any([self.sandboxes, self.processes, self.netns, self.links, self.ipam_files,
                    self.cache_files, self.mounts, self.pool_repaired])

    def as_rows(self) -> list[dict[str, Any]]:
        """One row per category, for a table."""
        return [{"what": k, "count": len(v), "items": ", ".join(map(str, v[:8])) + (" ..." if len(v) > 8 else "")}
                for k, v in self.__dict__.items()]


@dataclass(frozen=True)
class LocalPaths:
    """Every path the local testbed uses, derived from its work_dir."""

    work_dir: Path

    @property
    def containerd_dir(self) -> Path:
        return self.work_dir / "containerd"

    @property
    def config(self) -> Path:
        return self.containerd_dir / "config.toml"

    @property
    def root(self) -> Path:
        return self.containerd_dir / "root"

    @property
    def state(self) -> Path:
        return self.containerd_dir / "state"

    @property
    def socket(self) -> Path:
        return self.containerd_dir / "containerd.sock"

    @property
    def pid_file(self) -> Path:
        return self.containerd_dir / "containerd.pid"

    @property
    def log_file(self) -> Path:
        return self.containerd_dir / "containerd.log"

    @property
    def runc_root(self) -> Path:
        return self.work_dir / "runc"

    @property
    def cni_bin(self) -> Path:
        return self.work_dir / "cni" / "bin"

    def cni_conf_dir(self, mode: str) -> Path:
        return self.work_dir / "cni" / "net.d" / mode

    @property
    def ipam_dir(self) -> Path:
        return self.work_dir / "cni" / "ipam"

    @property
    def pool_dir(self) -> Path:
        return self.work_dir / "cni" / "pool"

    @property
    def images_dir(self) -> Path:
        return self.work_dir / "images"

    @property
    def pod_logs(self) -> Path:
        return self.work_dir / "pod-logs"

    @property
    def storage_dir(self) -> Path:
        return self.work_dir / "storage"

    @property
    def netns_dir(self) -> Path:
        # where containerd 1.6 mounts pod network namespaces with netns_mounts_under_state_dir
        return self.state / "io.containerd.grpc.v1.cri" / "netns"


@dataclass(frozen=True)
class LocalTestbedHandle:
    """A running local testbed: where its containerd listens and how each network mode is reached."""

    testbed: Testbed
    paths: LocalPaths
    pid: int
    modes: tuple[ModeSupport, ...]
    images: tuple[ImageInfo, ...]

    @property
    def socket(self) -> Path:
        return self.paths.socket

    @property
    def log_file(self) -> Path:
        return self.paths.log_file

    def image_ref(self, name: str) -> str:
        return image_ref(self.testbed, name)

    def supported_modes(self) -> list[str]:
        return [m.mode for m in self.modes if m.supported]

    def mode(self, mode: str) -> ModeSupport:
        for m in self.modes:
            if m.mode == mode:
                return m
        raise LocalTestbedError(f"network mode {mode!r} is not one of this testbed's modes "
                                f"({', '.join(m.mode for m in self.modes)}); see local.network_modes")

    def runtime_handler(self, mode: str) -> str:
        return runtime_handler_for(self.testbed, mode)

    def gateway(self, mode: str) -> IPv4Address | None:
        return gateway_for(self.testbed, mode)


# ----------------------------------------------------------------------------------------------
# names and addresses


def _local(testbed: Testbed):
    if testbed.local is None:
        raise LocalTestbedError(f"testbed {testbed.name!r} has no 'local:' section (not a local testbed)")
    return testbed.local


def paths_for(testbed: Testbed) -> LocalPaths:
    return LocalPaths(Path(_local(testbed).work_dir))


def runtime_handler_for(testbed: Testbed, mode: str) -> str:
    """The runtime handler whose CNI config is `mode` (e.g. runc-bridge)."""
    return f"{testbed.runtime_handler}-{mode}"


def network_name(testbed: Testbed, mode: str) -> str:
    return f"{_local(testbed).link_prefix}-{mode}"


def image_ref(testbed: Testbed, name: str) -> str:
    return f"fastiov.local/{_local(testbed).link_prefix}-{name}:{IMAGE_TAG}"


def _subnet(testbed: Testbed, mode: str) -> IPv4Network | None:
    loc = _local(testbed)
    return {"bridge": loc.bridge_subnet, "macvlan": loc.macvlan_subnet, "hostdev": loc.hostdev_subnet}.get(mode)


def gateway_for(testbed: Testbed, mode: str) -> IPv4Address | None:
    """The host's address in a mode's subnet (None for `none`)."""
    net = _subnet(testbed, mode)
    return None if net is None else net.network_address + 1


def _link_names(testbed: Testbed) -> dict[str, str]:
    p = _local(testbed).link_prefix
    return {"bridge": _local(testbed).bridge_name, "mv_parent": f"{p}mv0", "mv_host": f"{p}mv1",
            "hostdev_bridge": f"{p}hbr"}


def pool_link_names(testbed: Testbed, index: int) -> tuple[str, str]:
    p = _local(testbed).link_prefix
    return f"{p}d{index}", f"{p}h{index}"


# ----------------------------------------------------------------------------------------------
# small process / ip helpers


def _run(cmd: list[str], check: bool = True, timeout: float = 60, input: str | None = None
         ) -> subprocess.CompletedProcess[str]:
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, input=input)
    except FileNotFoundError:
        raise LocalTestbedError(f"{cmd[0]}: command not found (install it; see README set-up)") from None
    except subprocess.TimeoutExpired:
        raise LocalTestbedError(f"{' '.join(cmd)}: no answer after {timeout:.0f} s") from None
    if check and proc.returncode != 0:
        raise LocalTestbedError(f"{' '.join(cmd)} failed ({proc.returncode}): {(proc.stderr or proc.stdout).strip()}")
    return proc


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return _run(["ip", *args], check=check)


def _links() -> dict[str, dict[str, Any]]:
    """Links of the host network namespace, by name (`ip -j -d link`)."""
    out = _run(["ip", "-j", "-d", "link", "show"]).stdout
    return {link["ifname"]: link for link in json.loads(out or "[]")}


def _link_exists(name: str) -> bool:
    return _ip("link", "show", "dev", name, check=False).returncode == 0


def _ensure_addr(dev: str, addr: str) -> None:
    proc = _ip("addr", "add", addr, "dev", dev, check=False)
    if proc.returncode != 0 and "File exists" not in proc.stderr and "Address already assigned" not in proc.stderr:
        raise LocalTestbedError(f"ip addr add {addr} dev {dev}: {proc.stderr.strip()}")


def _delete_link(name: str) -> bool:
    return _ip("link", "del", "dev", name, check=False).returncode == 0


# ----------------------------------------------------------------------------------------------
# probing what this host can do


def probe_network_modes(testbed: Testbed) -> list[ModeSupport]:
    """Try each local network mode's kernel features with throw-away links; report, never raise.

    Modes probed: none, bridge, macvlan (over a veth parent), hostdev (veth moved to a netns) and
    ipvlan. Links are named `<prefix>p*` and deleted again.
    """
    loc = _local(testbed)
    p = loc.link_prefix
    plugins = Path(loc.cni_bin_dir)
    results: list[ModeSupport] = []
    if os.geteuid() != 0:
        return [ModeSupport(m, False, "needs root", m in ("bridge", "macvlan", "hostdev")) for m in PROBED_MODES]
    veth_a, veth_b, netns = f"{p}pv0", f"{p}pv1", f"{p}-probe"
    _delete_link(veth_a)
    veth = _ip("link", "add", veth_a, "type", "veth", "peer", "name", veth_b, check=False)
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
                r = _ip("link", "add", f"{p}pb", "type", "bridge", check=False)
                _delete_link(f"{p}pb")
                results.append(ModeSupport(mode, r.returncode == 0, "bridge links work" if r.returncode == 0
                                           else f"cannot create a bridge: {r.stderr.strip()}", True))
            elif veth.returncode != 0:
                results.append(ModeSupport(mode, False, f"cannot create veth pairs: {veth.stderr.strip()}",
                                           mode != "ipvlan"))
            elif mode in ("macvlan", "ipvlan"):
                kind = ["macvlan", "mode", "bridge"] if mode == "macvlan" else ["ipvlan", "mode", "l2"]
                r = _ip("link", "add", f"{p}p{mode[0]}", "link", veth_a, "type", *kind, check=False)
                _delete_link(f"{p}p{mode[0]}")
                ok = r.returncode == 0
                why = (f"{mode} over a veth parent works" if ok else
                       f"kernel refuses {mode} links: {r.stderr.strip() or 'unknown error'}")
                results.append(ModeSupport(mode, ok, why, mode == "macvlan"))
            elif mode == "hostdev":
                # its own pair: deleting the netns below destroys the pair moved into it
                hd_a, hd_b = f"{p}ph0", f"{p}ph1"
                _delete_link(hd_a)
                _ip("netns", "del", netns, check=False)
                r = _ip("link", "add", hd_a, "type", "veth", "peer", "name", hd_b, check=False)
                if r.returncode == 0:
                    r = _ip("netns", "add", netns, check=False)
                ok = r.returncode == 0 and _ip("link", "set", hd_b, "netns", netns, check=False).returncode == 0
                _ip("netns", "del", netns, check=False)
                _delete_link(hd_a)
                results.append(ModeSupport(mode, ok, "veth ends can be moved into a netns" if ok else
                                           f"cannot move a link into a network namespace: {r.stderr.strip()}", True))
    finally:
        _delete_link(veth_a)
        _delete_link(veth_b)
    return results


def local_checks(testbed: Testbed) -> list[Check]:
    """Readiness of this machine for the local testbed (02_host on `local`): pass/warn/fail + fix."""
    loc = _local(testbed)
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
            out = _run([path, "--version"], check=False).stdout.splitlines()
            seen = f"{path}: {out[0] if out else '?'}"
        checks.append(Check(f"binary {label}", "pass" if path else "fail", seen, apt_fix))
    libc_a = _run(["gcc", "-print-file-name=libc.a"], check=False).stdout.strip() if shutil.which("gcc") else ""
    checks.append(Check("static libc (gcc -static)", "pass" if libc_a.startswith("/") else "fail",
                        libc_a or "gcc missing", "apt-get install libc6-dev"))
    for plugin in sorted({x for m in LOCAL_MODES for x in REQUIRED_PLUGINS[m]}):
        path = Path(loc.cni_bin_dir) / plugin
        checks.append(Check(f"CNI plugin {plugin}", "pass" if path.exists() else "fail", str(path),
                            "apt-get install containernetworking-plugins (or set local.cni_bin_dir)"))
    cgroup = "v2 (unified)" if Path("/sys/fs/cgroup/cgroup.controllers").exists() else "v1 (or hybrid)"
    checks.append(Check("cgroups", "pass", cgroup))
    current = Path("/proc/self/oom_score_adj").read_text().strip()
    lower = _run(["sh", "-c", f"echo {int(current) - 1} > /proc/self/oom_score_adj"], check=False)
    checks.append(Check("oom_score_adj", "pass",
                        ("lowering it is not permitted here" if lower.returncode else "lowering it is permitted")
                        + "; our containerd config sets restrict_oom_score_adj = true, so runc never tries "
                        "(otherwise: \"can't get final child's PID from pipe\")"))
    if root:
        name = f"{loc.link_prefix}-check"
        _ip("netns", "del", name, check=False)
        r = _ip("netns", "add", name, check=False)
        _ip("netns", "del", name, check=False)
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
    return address_plan.checks(testbed, _own_link_names(testbed))


# ----------------------------------------------------------------------------------------------
# images (built from C with gcc -static, written by oci_image, imported with ctr)


def _build_one(testbed: Testbed, name: str) -> tuple[Path, Path, str]:
    """Compile one program (if its source changed) and write its OCI tarball; returns (source, tarball, digest)."""
    p = paths_for(testbed)
    p.images_dir.mkdir(parents=True, exist_ok=True)
    src = IMAGES_SRC / IMAGE_PROGRAMS[name]
    src_sha = hashlib.sha256(src.read_bytes()).hexdigest()
    tarball = p.images_dir / f"{name}.tar"
    stamp = p.images_dir / f"{name}.json"
    ref = image_ref(testbed, name)
    if tarball.exists() and stamp.exists():
        info = json.loads(stamp.read_text())
        if info.get("source_sha256") == src_sha and info.get("ref") == ref:
            return src, tarball, info["manifest_digest"]
    binary = p.images_dir / name
    proc = _run(["gcc", "-static", "-O2", "-D_GNU_SOURCE", "-Wall", "-o", str(binary), str(src)], check=False,
                timeout=120)
    if proc.returncode != 0:
        raise LocalTestbedError(f"gcc -static {src} failed (is libc6-dev installed?):\n{proc.stderr.strip()}")
    digest = write_oci_image(binary, name, ref, tarball)
    stamp.write_text(json.dumps({"source_sha256": src_sha, "ref": ref, "manifest_digest": digest}) + "\n")
    return src, tarball, digest


def build_images(testbed: Testbed, import_images: bool = True) -> list[ImageInfo]:
    """Build the pause and workload images from C (gcc -static) as OCI tarballs (01_build on `local`).

    With `import_images`, the local containerd is started if needed and the images are imported
    (`ctr images import`) unless it already has them. Rebuilds only when a C source changed.
    """
    loc = _local(testbed)
    p = paths_for(testbed)
    built = {name: _build_one(testbed, name) for name in IMAGE_PROGRAMS}
    present: dict[str, bool] = {name: False for name in IMAGE_PROGRAMS}
    if import_images:
        if containerd_pid(testbed) is None:
            _prepare_work_dir(testbed, probe_network_modes(testbed))
            start_containerd(testbed)
        from fastiov_lib.cri import CriClient

        with CriClient(p.socket, api="auto", timeout_s=loc.rpc_timeout_s) as cri:
            for name, (_src, tarball, digest) in built.items():
                ref = image_ref(testbed, name)
                if not _image_matches(cri, ref, digest):
                    _run([loc.ctr_bin, "-a", str(p.socket), "-n", "k8s.io", "images", "import",
                          "--snapshotter", "overlayfs", str(tarball)], timeout=300)
                present[name] = cri.image_present(ref)
                if not present[name]:
                    raise LocalTestbedError(f"imported {tarball} but containerd does not list {ref}")
    return [ImageInfo(name, image_ref(testbed, name), src, tarball, digest, tarball.stat().st_size, present[name])
            for name, (src, tarball, digest) in built.items()]


def _image_matches(cri: Any, ref: str, digest: str) -> bool:
    """containerd has `ref` and it is the manifest we built (a changed source means a re-import)."""
    digests = cri.image_digests(ref)
    return digests is not None and (not digests or any(d.endswith(digest) for d in digests))


# ----------------------------------------------------------------------------------------------
# CNI and containerd configuration


_POOL_PLUGIN = r"""#!/bin/sh
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
    net = _subnet(testbed, mode)
    names = _link_names(testbed)

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


def containerd_config(testbed: Testbed, modes: list[str]) -> str:
    """containerd 1.6 config.toml (version 2) for the private instance: own root/state/socket, one
    runtime handler per network mode, restrict_oom_score_adj, netns under the state dir."""
    loc = _local(testbed)
    p = paths_for(testbed)
    runc = shutil.which(loc.runc_bin) or loc.runc_bin
    cri_id = "io.containerd.grpc.v1.cri"

    def runtime(mode: str) -> dict[str, Any]:
        return {"runtime_type": "io.containerd.runc.v2", "cni_conf_dir": str(p.cni_conf_dir(mode)),
                "cni_max_conf_num": 1,
                "options": {"BinaryName": runc, "Root": str(p.runc_root), "SystemdCgroup": False}}

    default_mode = "bridge" if "bridge" in modes else modes[0]
    runtimes = {runtime_handler_for(testbed, m): runtime(m) for m in modes}
    runtimes[testbed.runtime_handler] = runtime(default_mode)
    doc = {
        "version": 2,
        "root": str(p.root),
        "state": str(p.state),
        "oom_score": 0,
        "disabled_plugins": ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
                             "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper",
                             "io.containerd.internal.v1.opt", "io.containerd.tracing.processor.v1.otlp",
                             "io.containerd.internal.v1.tracing"],
        "grpc": {"address": str(p.socket)},
        "ttrpc": {"address": str(p.socket) + ".ttrpc"},
        "debug": {"level": "info"},
        "metrics": {"address": ""},
        "plugins": {
            cri_id: {
                "sandbox_image": image_ref(testbed, "pause"),
                "restrict_oom_score_adj": True,
                "netns_mounts_under_state_dir": True,
                "stream_server_address": "127.0.0.1",
                "stream_server_port": "0",
                "enable_selinux": False,
                "max_container_log_line_size": 16384,
                "containerd": {"snapshotter": "overlayfs", "default_runtime_name": testbed.runtime_handler,
                               "runtimes": runtimes},
                "cni": {"bin_dir": str(p.cni_bin), "conf_dir": str(p.cni_conf_dir(default_mode)),
                        "max_conf_num": 1},
            },
        },
    }
    header = "# containerd config of the FastIOV artifact's local testbed (generated by fastiov_lib.testbeds.local.testbed)\n"
    return header + tomlkit.dumps(doc)


def _write_if_changed(path: Path, text: str, mode: int | None = None) -> bool:
    if path.exists() and path.read_text() == text:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    if mode is not None:
        os.chmod(tmp, mode)
    os.replace(tmp, path)
    return True


def _prepare_work_dir(testbed: Testbed, modes: list[ModeSupport]) -> bool:
    """Write CNI bin dir, conflists and containerd config; returns True if the containerd config changed."""
    loc = _local(testbed)
    p = paths_for(testbed)
    workdir.claim(p.work_dir, testbed.name)  # refuses a folder the testbed did not create
    for d in (p.work_dir, p.containerd_dir, p.cni_bin, p.ipam_dir, p.pool_dir / "used", p.images_dir, p.pod_logs,
              p.storage_dir, p.runc_root):
        d.mkdir(parents=True, exist_ok=True)
    src_dir = Path(loc.cni_bin_dir)
    if not src_dir.is_dir():
        raise LocalTestbedError(f"CNI plugin dir {src_dir} (local.cni_bin_dir) does not exist: "
                                "apt-get install containernetworking-plugins")
    for plugin in src_dir.iterdir():
        link = p.cni_bin / plugin.name
        if not link.is_symlink() or os.readlink(link) != str(plugin):
            link.unlink(missing_ok=True)
            link.symlink_to(plugin)
    _write_if_changed(p.cni_bin / "fastiov-pool",
                      _POOL_PLUGIN.replace("@STATE@", str(p.pool_dir)).replace("@HOSTDEV@", str(src_dir / "host-device")),
                      0o755)
    usable = [m.mode for m in modes if m.supported and m.mode in loc.network_modes and m.mode in LOCAL_MODES]
    if not usable:
        raise LocalTestbedError(f"none of local.network_modes {loc.network_modes} is supported here: "
                                + "; ".join(f"{m.mode}: {m.reason}" for m in modes))
    for mode in usable:
        conf_dir = p.cni_conf_dir(mode)
        conf_dir.mkdir(parents=True, exist_ok=True)
        _write_if_changed(conf_dir / f"10-{network_name(testbed, mode)}.conflist",
                          json.dumps(conflist_for(testbed, mode), indent=2) + "\n")
    return _write_if_changed(p.config, containerd_config(testbed, usable))


# ----------------------------------------------------------------------------------------------
# host links


def _setup_links(testbed: Testbed, modes: list[str]) -> None:
    names = _link_names(testbed)
    before = set(_links())
    try:
        _setup_links_now(testbed, modes, names)
    finally:  # down removes exactly the links recorded as created here
        workdir.record_links(paths_for(testbed).work_dir, set(_links()) - before)


def _setup_links_now(testbed: Testbed, modes: list[str], names: dict[str, str]) -> None:
    if "bridge" in modes:
        br = names["bridge"]
        if not _link_exists(br):
            _ip("link", "add", br, "type", "bridge")
        _ensure_addr(br, f"{gateway_for(testbed, 'bridge')}/{_subnet(testbed, 'bridge').prefixlen}")
        _ip("link", "set", br, "up")
    if "macvlan" in modes:
        parent, host = names["mv_parent"], names["mv_host"]
        if not _link_exists(parent):
            _delete_link(host)
            _ip("link", "add", parent, "type", "veth", "peer", "name", host)
        _ensure_addr(host, f"{gateway_for(testbed, 'macvlan')}/{_subnet(testbed, 'macvlan').prefixlen}")
        _ip("link", "set", parent, "up")
        _ip("link", "set", host, "up")
    if "hostdev" in modes:
        create_hostdev_pool(testbed)


def create_hostdev_pool(testbed: Testbed) -> list[PoolLink]:
    """Create (or complete) the hostdev pool: `hostdev_pool_size` veth pairs (03_nic on `local`).

    Idempotent: existing pairs are kept, missing ones created, half pairs replaced. The `h` peers are
    enslaved to `<prefix>hbr`, which holds the host's address in hostdev_subnet.
    """
    loc = _local(testbed)
    if not testbed.allow_host_changes:
        raise LocalTestbedError(f"testbed {testbed.name!r}: allow_host_changes is false; creating the hostdev "
                                "pool adds links to this host (set allow_host_changes: true)")
    p = paths_for(testbed)
    names = _link_names(testbed)
    before = set(_links())
    try:
        _create_pool_now(testbed, loc, p, names)
    finally:
        workdir.record_links(p.work_dir, set(_links()) - before)
    return hostdev_pool(testbed)


def _create_pool_now(testbed: Testbed, loc: Any, p: LocalPaths, names: dict[str, str]) -> None:
    hbr = names["hostdev_bridge"]
    if not _link_exists(hbr):
        _ip("link", "add", hbr, "type", "bridge")
    _ensure_addr(hbr, f"{gateway_for(testbed, 'hostdev')}/{_subnet(testbed, 'hostdev').prefixlen}")
    _ip("link", "set", hbr, "up")
    links = _links()
    (p.pool_dir / "used").mkdir(parents=True, exist_ok=True)
    for i in range(loc.hostdev_pool_size):
        dev, peer = pool_link_names(testbed, i)
        if dev in links and peer in links:
            pass
        elif _pool_device_lent(p, dev):
            continue  # inside a running pod right now; its peer is still on the host
        else:
            _delete_link(dev)
            _delete_link(peer)
            _ip("link", "add", dev, "type", "veth", "peer", "name", peer)
        if links.get(peer, {}).get("master") != hbr:
            _ip("link", "set", peer, "master", hbr)
        _ip("link", "set", peer, "up")
    wanted = [pool_link_names(testbed, i)[0] for i in range(loc.hostdev_pool_size)]
    _write_if_changed(p.pool_dir / "links", "\n".join(wanted) + "\n")


def _pool_device_lent(p: LocalPaths, dev: str) -> bool:
    return (p.pool_dir / "used" / dev).exists()


def hostdev_pool(testbed: Testbed) -> list[PoolLink]:
    """The pool's links as they are now: which are on the host and which are lent to a pod."""
    loc = _local(testbed)
    p = paths_for(testbed)
    links = _links()
    out = []
    for i in range(loc.hostdev_pool_size):
        dev, peer = pool_link_names(testbed, i)
        used = p.pool_dir / "used" / dev
        out.append(PoolLink(i, dev, peer, dev in links, used.read_text().strip() if used.exists() else None))
    return out


# ----------------------------------------------------------------------------------------------
# containerd process


def containerd_pid(testbed: Testbed) -> int | None:
    """PID of *our* containerd (from its PID file, checked against /proc), or None."""
    p = paths_for(testbed)
    try:
        pid = int(p.pid_file.read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if _is_our_process(pid, str(p.config)) else None


def _is_our_process(pid: int, marker: str) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    if stat.rsplit(")", 1)[1].split()[0] == "Z":
        try:  # our own child that already exited: reap it
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
        return False
    return marker in cmdline


def start_containerd(testbed: Testbed) -> int:
    """Start the private containerd (own session, log to containerd.log) and wait until CRI answers."""
    from fastiov_lib.cri import CriClient, CriError

    loc = _local(testbed)
    p = paths_for(testbed)
    pid = containerd_pid(testbed)
    if pid is not None:
        return pid
    binary = shutil.which(loc.containerd_bin)
    if binary is None:
        raise LocalTestbedError(f"{loc.containerd_bin}: not found; apt-get install containerd")
    p.socket.unlink(missing_ok=True)
    with open(p.log_file, "ab") as log:
        log.write(f"--- fastiov_lib: starting containerd at {time.strftime('%Y-%m-%dT%H:%M:%S%z')}\n".encode())
        log.flush()
        proc = subprocess.Popen([binary, "--config", str(p.config)], stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True, close_fds=True)
    p.pid_file.write_text(f"{proc.pid}\n")
    deadline = time.monotonic() + loc.start_timeout_s
    last = ""
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise LocalTestbedError(f"containerd exited with {proc.returncode} during start-up; "
                                    f"last lines of {p.log_file}:\n{_tail(p.log_file)}")
        if p.socket.exists():
            try:
                with CriClient(p.socket, api="auto", timeout_s=2.0) as cri:
                    cri.version()
                    cri.list_pod_sandboxes()
                return proc.pid
            except CriError as err:
                last = str(err)
        time.sleep(0.05)
    stop_containerd(testbed)
    raise LocalTestbedError(f"containerd did not answer on {p.socket} within {loc.start_timeout_s:.0f} s "
                            f"({last}); see {p.log_file}:\n{_tail(p.log_file)}")


def stop_containerd(testbed: Testbed, timeout_s: float = 15.0) -> int | None:
    """Stop our containerd by the PID it was started with (SIGTERM, then SIGKILL); returns that PID."""
    p = paths_for(testbed)
    pid = containerd_pid(testbed)
    if pid is None:
        p.pid_file.unlink(missing_ok=True)
        return None
    _terminate(pid, str(p.config), timeout_s)
    p.pid_file.unlink(missing_ok=True)
    return pid


def _terminate(pid: int, marker: str, timeout_s: float) -> None:
    for sig, wait in ((signal.SIGTERM, timeout_s), (signal.SIGKILL, 5.0)):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if not _is_our_process(pid, marker):
                return
            time.sleep(0.05)


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _our_shims(p: LocalPaths) -> list[int]:
    """containerd-shim processes serving our socket (they outlive a killed containerd)."""
    marker = str(p.socket)
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            cmd = (d / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if cmd and b"containerd-shim" in cmd[0] and marker.encode() in cmd:
            out.append(int(d.name))
    return out


# ----------------------------------------------------------------------------------------------
# lifecycle


def ensure_up(testbed: Testbed) -> LocalTestbedHandle:
    """Bring the local testbed up, reusing what is already there (idempotent).

    Writes configs and conflists, creates the host links of every supported mode (and the hostdev
    pool), starts containerd unless ours is running (restarting it if its config changed), builds
    and imports the images if containerd lacks them.
    """
    loc = _local(testbed)
    if not testbed.allow_host_changes:
        raise LocalTestbedError(f"testbed {testbed.name!r}: allow_host_changes is false; the local testbed "
                                "creates links, namespaces and a containerd (set allow_host_changes: true)")
    if os.geteuid() != 0:
        raise LocalTestbedError("the local testbed needs root (containerd, network namespaces, links)")
    for binary in (loc.containerd_bin, loc.ctr_bin, loc.runc_bin, "gcc", "ip", "flock"):
        if shutil.which(binary) is None:
            raise LocalTestbedError(f"{binary}: not found; apt-get install containerd runc "
                                    "containernetworking-plugins gcc libc6-dev iproute2 util-linux")
    p = paths_for(testbed)
    address_plan.require_free(testbed, _own_link_names(testbed))  # before anything changes
    existing = set(_links())
    if workdir.claim(p.work_dir, testbed.name) == "adopted":  # made before markers: its links are ours
        workdir.record_links(p.work_dir, existing & _own_link_names(testbed))
    # one bring-up at a time (a notebook and a CLI call must not start two containerds)
    with testbed_lock.hold(p.work_dir, "testbed up"), open(p.work_dir / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        modes = probe_network_modes(testbed)
        changed = _prepare_work_dir(testbed, modes)
        usable = [m.mode for m in modes if m.supported and m.mode in loc.network_modes and m.mode in LOCAL_MODES]
        _setup_links(testbed, usable)
        if changed and containerd_pid(testbed) is not None:
            stop_containerd(testbed)
        pid = start_containerd(testbed)
        images = build_images(testbed, import_images=True)
    wanted = [m for m in modes if m.mode in loc.network_modes or m.mode == "ipvlan"]
    return LocalTestbedHandle(testbed, paths_for(testbed), pid, tuple(wanted), tuple(images))


def cleanup(testbed: Testbed, timeout_s: float = 30.0) -> CleanupReport:
    """Remove every pod leftover of the local testbed; safe after a SIGKILL of the driver, harmless twice.

    With our containerd running, its sandboxes are stopped and removed through CRI (which tears
    down their networks). Without it, the shims and runc containers under our runc root are
    killed and the mounts and network namespaces under the work dir released. Then any pod veth
    still on our bridges, IPAM allocations, CNI cache entries and stale pool loans are removed and
    the hostdev pool is repaired. Standing infrastructure (containerd, bridges, pool, images) stays;
    `down` removes that too.
    """
    loc = _local(testbed)
    p = paths_for(testbed)
    report = CleanupReport()
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
    names = _link_names(testbed)
    links = _links()
    for name, link in links.items():
        if link.get("master") in (names["bridge"],) and link.get("linkinfo", {}).get("info_kind") == "veth":
            if _delete_link(name):
                report.links.append(name)
    if p.ipam_dir.exists():
        for f in sorted(p.ipam_dir.glob("*/*")):
            if f.name in ("lock",) or f.name.startswith("last_reserved_ip"):
                continue
            f.unlink(missing_ok=True)
            report.ipam_files.append(str(f.relative_to(p.ipam_dir)))
    for mode in LOCAL_MODES:
        for f in sorted(CNI_CACHE_DIR.glob(f"{network_name(testbed, mode)}-*")):
            f.unlink(missing_ok=True)
            report.cache_files.append(f.name)
    used = p.pool_dir / "used"
    if used.exists():
        for f in sorted(used.iterdir()):
            f.unlink(missing_ok=True)
            report.pool_repaired.append(f"{f.name} returned to the pool")
    if "hostdev" in loc.network_modes and _link_exists(names["hostdev_bridge"]):
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
                in_flight = (p.netns_dir.is_dir() and any(p.netns_dir.iterdir())) or bool(_our_shims(p))
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
        listing = _run(["runc", "--root", str(runc_ns), "list", "-q"], check=False).stdout.split()
        for cid in listing:
            state = _run(["runc", "--root", str(runc_ns), "state", cid], check=False)
            try:
                pid = int(json.loads(state.stdout).get("pid", 0))
            except (ValueError, json.JSONDecodeError):
                pid = 0
            _run(["runc", "--root", str(runc_ns), "kill", cid, "KILL"], check=False)
            _run(["runc", "--root", str(runc_ns), "delete", "-f", cid], check=False)
            if pid:
                report.processes.append(pid)
    for pid in _our_shims(p):
        _terminate(pid, str(p.socket), 5.0)
        report.processes.append(pid)


def _mounts_under(root: Path) -> list[str]:
    out = []
    prefix = str(root).rstrip("/") + "/"
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        mnt = line.split()[4].replace("\\040", " ")
        if mnt.startswith(prefix):
            out.append(mnt)
    return sorted(set(out), key=len, reverse=True)


def _release_mounts(p: LocalPaths, report: CleanupReport, keep_root: bool) -> None:
    for mnt in _mounts_under(p.work_dir):
        r = _run(["umount", "-l", mnt], check=False)
        (report.mounts.append(mnt) if r.returncode == 0 else report.errors.append(f"umount {mnt}: {r.stderr.strip()}"))


def _release_netns(p: LocalPaths, report: CleanupReport) -> None:
    if not p.netns_dir.is_dir():
        return
    for ns in sorted(p.netns_dir.iterdir()):
        _run(["umount", "-l", str(ns)], check=False)
        try:
            ns.unlink()
            report.netns.append(ns.name)
        except OSError as err:
            if err.errno != errno.ENOENT:
                report.errors.append(f"netns {ns}: {err}")


def pod_leftovers(testbed: Testbed) -> list[str]:
    """What pods of the local testbed left behind (should be empty after a round's cleanup)."""
    p = paths_for(testbed)
    names = _link_names(testbed)
    out: list[str] = []
    if p.netns_dir.is_dir():
        out += [f"netns {ns.name}" for ns in p.netns_dir.iterdir()]
    links = _links()
    out += [f"link {n} on {l['master']}" for n, l in links.items()
            if l.get("master") == names["bridge"] and l.get("linkinfo", {}).get("info_kind") == "veth"]
    if p.ipam_dir.is_dir():
        out += [f"ipam {f.parent.name}/{f.name}" for f in p.ipam_dir.glob("*/*")
                if f.name != "lock" and not f.name.startswith("last_reserved_ip")]
    if (p.pool_dir / "used").is_dir():
        out += [f"pool link {f.name} lent" for f in (p.pool_dir / "used").iterdir()]
    for mode in LOCAL_MODES:
        out += [f"cni cache {f.name}" for f in CNI_CACHE_DIR.glob(f"{network_name(testbed, mode)}-*")]
    return out


def down(testbed: Testbed) -> CleanupReport:
    """Tear the local testbed down completely: pods, containerd, links, pool, mounts, the work dir."""
    p = paths_for(testbed)
    if not workdir.require_owned(p.work_dir):  # nothing of ours here: touch nothing
        return CleanupReport()
    with testbed_lock.hold(p.work_dir, "testbed down"):
        return _down_now(testbed, p)


def _own_link_names(testbed: Testbed) -> set[str]:
    """Every host link name this testbed's config gives its links (bridges, macvlan pair, pool)."""
    loc = _local(testbed)
    pool = {n for i in range(loc.hostdev_pool_size) for n in pool_link_names(testbed, i)}
    return pool | set(_link_names(testbed).values())


def _down_now(testbed: Testbed, p: LocalPaths) -> CleanupReport:
    report = cleanup(testbed)
    pid = stop_containerd(testbed)
    if pid:
        report.processes.append(pid)
    if p.work_dir.exists():
        _kill_orphans(p, report)
        _release_netns(p, report)
        _release_mounts(p, report, keep_root=False)
    recorded = workdir.recorded_links(p.work_dir) & _own_link_names(testbed)
    for name in _links():
        if name in recorded:  # only links recorded as created by the testbed
            if _delete_link(name):
                report.links.append(name)
    for mode in LOCAL_MODES:
        for f in CNI_CACHE_DIR.glob(f"{network_name(testbed, mode)}-*"):
            f.unlink(missing_ok=True)
            report.cache_files.append(f.name)
    if p.work_dir.exists():
        if _mounts_under(p.work_dir):
            report.errors.append(f"mounts remain under {p.work_dir}; not removing it")
        else:
            try:
                workdir.remove(p.work_dir)
            except OSError as err:
                report.errors.append(f"removing {p.work_dir}: {err}")
    return report
