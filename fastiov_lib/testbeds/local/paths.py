"""The local testbed's names, paths and records: modes, work-dir layout, link names, addresses.

Shared by the other local-testbed modules (network, containerd, images, cleanup); no side effects.
"""
from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Any


from fastiov_lib.config import Testbed
from fastiov_lib.testbeds.base import BackendError


LOCAL_MODES = ("none", "bridge", "macvlan", "hostdev")


PROBED_MODES = ("none", "bridge", "macvlan", "hostdev", "ipvlan")


IMAGE_PROGRAMS = {"pause": "pause.c", "workload": "workload.c"}


IMAGE_TAG = "1"


IMAGES_SRC = Path(__file__).resolve().parent / "images"


CNI_CACHE_DIR = Path("/var/lib/cni/results")  # libcni's cache; containerd 1.6 cannot move it


REQUIRED_PLUGINS = {"none": ["loopback"], "bridge": ["bridge", "host-local"],
                    "macvlan": ["macvlan", "host-local"], "hostdev": ["host-device", "host-local"],
                    "ipvlan": ["ipvlan", "host-local"]}


class LocalTestbedError(BackendError):
    """The local testbed cannot be set up or used; the message says what is missing and how to fix it."""


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
    instrumented: bool = False  # the paper's containerd 1.3 (instrumented.py) instead of Debian's

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
        if self.instrumented:  # 1.3's /run/netns, bound here inside its mount namespace
            return self.work_dir / "netns"
        # where containerd 1.6 mounts pod network namespaces with netns_mounts_under_state_dir
        return self.state / "io.containerd.grpc.v1.cri" / "netns"

    @property
    def cni_cache_dir(self) -> Path:
        # libcni's cache: 1.3 runs with /var/lib/cni bound into the work dir; 1.6 cannot move it
        return self.work_dir / "var-lib-cni" / "results" if self.instrumented else CNI_CACHE_DIR


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


def _local(testbed: Testbed):
    if testbed.local is None:
        raise LocalTestbedError(f"testbed {testbed.name!r} has no 'local:' section (not a local testbed)")
    return testbed.local


def paths_for(testbed: Testbed) -> LocalPaths:
    return LocalPaths(Path(_local(testbed).work_dir), instrumented=_local(testbed).containerd == "instrumented")


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


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _own_link_names(testbed: Testbed) -> set[str]:
    """Every host link name this testbed's config gives its links (bridges, macvlan pair, pool)."""
    loc = _local(testbed)
    pool = {n for i in range(loc.hostdev_pool_size) for n in pool_link_names(testbed, i)}
    return pool | set(_link_names(testbed).values())
