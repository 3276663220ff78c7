"""Reading the kernel's view of SR-IOV devices: PFs, their VFs and drivers, routes, and the guards
that refuse a NIC carrying the host's traffic (stdlib only: also runs inside the vsriov guest)."""
from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Iterable

from fastiov_lib.hw.pci import PciAddressError, format_pci, parse_pci, pci_dir
from fastiov_lib.safe_files import read_kernel_text


class NicError(PciAddressError):
    """A NIC operation failed or was refused; the message names the device and the file."""


class GuardError(NicError):
    """A guard refused the operation before anything was written."""


@dataclass
class PhysicalFunction:
    """A PCI device that can host VFs, as seen in sysfs."""

    address: str
    total_vfs: int
    num_vfs: int
    driver: str | None
    netdevs: list[str]
    vfs: list[str]
    autoprobe: int | None
    offset: int | None
    stride: int | None


# ---------------------------------------------------------------- reading the kernel's files

def _read(path: Path) -> str | None:
    # bounded, regular files only: a fake tree's /dev/zero link must not grow memory without end
    return read_kernel_text(path)


def _read_int(path: Path) -> int | None:
    text = _read(path)
    if text is None:
        return None
    try:
        return int(text, 0)
    except ValueError:
        return None


def kernel_int(path: Path) -> int | None:
    """An integer attribute as the kernel writes it; None when absent, NicError naming the file and
    its content when it holds anything else (random bytes, `7 extra`): never guessed as 0."""
    text = _read(path)
    if text is None:
        return None
    try:
        return int(text, 0)
    except ValueError:
        if text.isprintable():
            shown = repr(text if len(text) <= 40 else text[:40] + "...")
        else:
            shown = f"binary content ({len(text)} characters)"
        raise NicError(f"{path}: {shown} is not a number (the kernel writes one integer there); "
                       "is this tree a real sysfs?") from None


def current_driver(root: Path, address: str) -> str | None:
    """Name of the driver bound to a device (basename of its `driver` link), or None."""
    link = pci_dir(root, address) / "driver"
    try:
        return os.path.basename(os.readlink(link))
    except OSError:
        return None


def netdevs_of(root: Path, address: str) -> list[str]:
    """Network interfaces the device provides (entries of its `net/` directory)."""
    try:
        return sorted(os.listdir(pci_dir(root, address) / "net"))
    except OSError:
        return []


def list_vfs(root: Path, pf: str) -> list[str]:
    """VF addresses of a PF from its `virtfn<i>` links, ordered by i."""
    d = pci_dir(root, pf)
    found: list[tuple[int, str]] = []
    try:
        names = os.listdir(d)
    except OSError:
        return []
    for name in names:
        if name.startswith("virtfn") and name[6:].isdigit():
            try:
                found.append((int(name[6:]), os.path.basename(os.readlink(d / name))))
            except OSError:
                continue
    return [addr for _, addr in sorted(found)]


def describe_pf(root: Path, pf: str) -> PhysicalFunction:
    """Read a PF's SR-IOV state; NicError if it does not exist or is not SR-IOV capable."""
    parse_pci(pf)
    d = pci_dir(root, pf)
    if not d.exists():
        raise NicError(f"{pf}: no such PCI device ({d} is missing)")
    total = kernel_int(d / "sriov_totalvfs")
    if total is None or total <= 0:
        raise GuardError(f"{pf}: not SR-IOV capable ({d / 'sriov_totalvfs'} is missing or 0)")
    return PhysicalFunction(
        address=pf, total_vfs=total, num_vfs=kernel_int(d / "sriov_numvfs") or 0,
        driver=current_driver(root, pf), netdevs=netdevs_of(root, pf), vfs=list_vfs(root, pf),
        autoprobe=kernel_int(d / "sriov_drivers_autoprobe"), offset=kernel_int(d / "sriov_offset"),
        stride=kernel_int(d / "sriov_stride"),
    )


def discover_pfs(root: Path) -> list[PhysicalFunction]:
    """Every PCI device below `root` with a non-zero `sriov_totalvfs`."""
    base = Path(root) / "sys/bus/pci/devices"
    out: list[PhysicalFunction] = []
    try:
        names = sorted(os.listdir(base))
    except OSError:
        return out
    for name in names:
        if (kernel_int(base / name / "sriov_totalvfs") or 0) > 0:
            out.append(describe_pf(root, name))
    return out


def predict_vf_addresses(pf: PhysicalFunction, count: int) -> list[str]:
    """The addresses the kernel will give VFs 0..count-1 (PF routing id + offset + i*stride).

    Used only to show a plan before the VFs exist; apply() reads the real `virtfn<i>` links.
    """
    if pf.offset is None or pf.stride is None:
        return [f"{pf.address}/virtfn{i}" for i in range(count)]
    domain, bus, dev, fn = parse_pci(pf.address)
    rid = (bus << 8) | (dev << 3) | fn
    out = []
    for i in range(count):
        r = rid + pf.offset + i * pf.stride
        out.append(format_pci(domain, (r >> 8) & 0xFF, (r >> 3) & 0x1F, r & 0x7))
    return out


@dataclass(frozen=True)
class Route:
    iface: str
    destination: str
    gateway: str
    mask: str


def read_routes(root: Path) -> list[Route]:
    """IPv4 routes from `proc/net/route` (hex fields as the kernel prints them)."""
    text = _read(Path(root) / "proc/net/route")
    routes: list[Route] = []
    if not text:
        return routes
    for line in text.splitlines()[1:]:
        parts = line.split()
        if len(parts) >= 8:
            routes.append(Route(parts[0], parts[1], parts[2], parts[7]))
    return routes


def global_ipv6(root: Path) -> dict[str, list[str]]:
    """Non-link-local IPv6 addresses per interface from `proc/net/if_inet6`."""
    text = _read(Path(root) / "proc/net/if_inet6")
    out: dict[str, list[str]] = {}
    for line in (text or "").splitlines():
        parts = line.split()
        if len(parts) >= 6 and parts[3] != "20":  # scope 0x20 = link-local
            out.setdefault(parts[5], []).append(parts[0])
    return out


def route_network(route: Route) -> IPv4Network | None:
    """The destination network of a proc/net/route line (its hex fields are little-endian), or None."""
    try:
        dest = IPv4Address(struct.pack("<I", int(route.destination, 16)))
        mask = IPv4Address(struct.pack("<I", int(route.mask, 16)))
        return IPv4Network(f"{dest}/{mask}", strict=False)
    except (ValueError, struct.error):
        return None


def guard_problems(root: Path, pf: str, num_vfs: int, netdevs: Iterable[str] = (),
                   allowed: Iterable[IPv4Network] = ()) -> list[str]:
    """Reasons to refuse touching `pf` (empty when it is safe): the guards, checked before writing.

    A route into one of the `allowed` networks is not a problem (the app test's storage address on
    the pods' own subnet, which the artifact itself puts on a PF)."""
    allowed = list(allowed)
    try:
        info = describe_pf(root, pf)
    except NicError as exc:
        return [str(exc)]
    problems = []
    if num_vfs < 0:
        problems.append(f"{pf}: numvfs {num_vfs} is negative")
    if num_vfs > info.total_vfs:
        problems.append(f"{pf}: numvfs {num_vfs} is above sriov_totalvfs {info.total_vfs}")
    names = set(info.netdevs) | set(netdevs)
    routes = read_routes(root)
    v6 = global_ipv6(root)
    for name in sorted(names):
        if any(r.iface == name and r.destination == "00000000" and r.mask == "00000000" for r in routes):
            problems.append(f"{pf}: its interface {name} carries the default route "
                            f"(proc/net/route); creating VFs can cut this host off the network")
        elif any(r.iface == name and not any((net := route_network(r)) is not None and net.subnet_of(a)
                                             for a in allowed) for r in routes):
            problems.append(f"{pf}: its interface {name} has an IPv4 address in use (a route in proc/net/route)")
        if name in v6:
            problems.append(f"{pf}: its interface {name} has a global IPv6 address in use (proc/net/if_inet6)")
    return problems
