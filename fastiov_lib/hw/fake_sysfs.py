"""Generated fake host trees (sysfs, procfs, dev, configs, binaries) for tests and dry-run plans.

A real SR-IOV NIC and IOMMU are the only things this project cannot have, so they are the only
things faked. `build_fake_tree(root, spec)` writes a tree that looks like an SR-IOV host below
`root` (testbeds.fastiov_host.fake_host adds a FastIOV host's configs); `FakeSysfs(root)` is a `nic.SysfsWriter` that, after each write, applies the reaction the
kernel would (writing `sriov_numvfs` creates VF devices and `virtfn<i>` links, `unbind` / `bind` /
`drivers_probe` move the `driver` link, `nr_hugepages` reserves what memory allows) and rejects
what the kernel rejects, with the kernel's errno.
"""
from __future__ import annotations

import errno
import os
import shutil
import stat
import threading
from dataclasses import dataclass, field
from pathlib import Path

from fastiov_lib.hw.pci import format_pci, parse_pci

FAKE_HOST_MARKER = ".fastiov-fake-host"  # says what the tree is to a person who finds it

DEVICES_DIR = "sys/devices/pci0000:00"
DRIVERS_DIR = "sys/bus/pci/drivers"
WRITE_ONLY = ("bind", "unbind", "new_id", "remove_id")


@dataclass
class FakePf:
    """One SR-IOV physical function of the fake host."""

    address: str
    netdev: str
    total_vfs: int = 128
    driver: str | None = "ice"
    vendor: str = "0x8086"
    device: str = "0x1593"  # E810
    vf_device: str = "0x1889"  # E810 adaptive VF
    offset: int | None = None  # None: VF 0 at device+1 of the same bus (E810-like layout)
    stride: int = 1
    sriov_capable: bool = True


@dataclass
class FakeHostSpec:
    """What the fake host looks like; every default is a healthy FastIOV host."""

    pfs: list[FakePf] = field(default_factory=lambda: [FakePf("0000:e3:00.0", "ens1f0"),
                                                        FakePf("0000:e3:00.1", "ens1f1")])
    kernel_release: str = "6.4.0-rc5test"
    cmdline: str = "BOOT_IMAGE=/vmlinuz-6.4.0-rc5test root=/dev/sda1 ro intel_iommu=on iommu=pt"
    cpu_flags: tuple[str, ...] = ("fpu", "vme", "sse2", "vmx", "ept")
    kvm: bool = True
    iommu: bool = True
    hugepages_2m: int = 32768  # currently reserved
    hugepages_max: int = 65536  # what memory allows when more are requested
    modules: tuple[str, ...] = ("kvm", "kvm_intel", "vfio", "vfio_pci", "vfio_iommu_type1", "ice", "iavf", "fastiov")
    fastiov_device: str | None = "dev/dev_fastiov"
    mgmt_netdev: str = "eno1"  # carries the default route on a healthy host
    default_route_netdev: str | None = None  # None: the management netdev
    addressed_netdevs: tuple[str, ...] = ()  # extra interfaces with an IPv4 address (a link route)
    ipv6_netdevs: tuple[str, ...] = ()  # interfaces with a global IPv6 address
    memory_kb: int = 263_000_000
    cgroup: str = "v2"  # v2 (unified), v1 (a cpuset hierarchy) or none
    binaries: dict[str, str] = field(default_factory=lambda: {
        "usr/local/bin/containerd": "containerd github.com/containerd/containerd v1.3.10-fastiov 0000000",
        "opt/kata3/bin/kata-runtime": "kata-runtime  : 3.0.2\n   commit   : fastiov\n   OCI specs: 1.0.2",
        "opt/kata3/bin/containerd-shim-kata-v2": "containerd-shim-kata-v2 3.0.2",
        "opt/kata3/bin/qemu-system-x86_64-fastiov": "QEMU emulator version 6.2.0\nCopyright (c) 2003-2021",
        "opt/kata3/bin/qemu-system-x86_64-noskip": "QEMU emulator version 6.2.0\nCopyright (c) 2003-2021",
        "opt/cni/bin/fastiov": "fastiov CNI plugin",
    })
    links: dict[str, str] = field(default_factory=lambda: {
        "usr/local/bin/containerd-shim-kata3-v2": "/opt/kata3/bin/containerd-shim-kata-v2"})
    data_files: tuple[str, ...] = (
        "opt/kata3/share/fastiov-artifact/vmlinuz-5.19.2-96-fastiov",
        "opt/kata3/share/fastiov-artifact/vmlinuz-5.19.2-96-vanilla",
        "opt/kata3/share/fastiov-artifact/kata-containers-async.img",
        "opt/kata3/share/fastiov-artifact/kata-containers-e810-sync.img",
    )
    configs: bool = True  # fake_host.build_fake_host deploys the runtime configs (containerd, kata, CNI, crictl)
    kata_overrides: dict[str, object] = field(default_factory=dict)  # [hypervisor.qemu] keys to change


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _link(link: Path, target: str) -> None:
    link.parent.mkdir(parents=True, exist_ok=True)
    if link.is_symlink() or link.exists():
        link.unlink()
    os.symlink(target, link)


def _hex_ip(a: int, b: int, c: int, d: int) -> str:
    return f"{d:02X}{c:02X}{b:02X}{a:02X}"  # proc/net/route prints little-endian hex


def build_fake_tree(root: Path, spec: FakeHostSpec | None = None) -> Path:
    """Write a fake SR-IOV host's hardware view below `root` (sysfs, procfs, dev, binaries) and return it.

    The runtime configs a FastIOV host also has are written by testbeds.fastiov_host.fake_host."""
    spec = spec or FakeHostSpec()
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    _write(root / FAKE_HOST_MARKER, "generated by fastiov_lib.hw.fake_sysfs: not a real host\n")
    # procfs
    flags = " ".join(spec.cpu_flags)
    _write(root / "proc/cpuinfo", "".join(
        f"processor\t: {i}\nvendor_id\t: GenuineIntel\nmodel name\t: Fake Xeon Gold 6348\nflags\t\t: {flags}\n\n"
        for i in range(2)))
    _write(root / "proc/cmdline", spec.cmdline + "\n")
    _write(root / "proc/sys/kernel/osrelease", spec.kernel_release + "\n")
    if spec.cgroup == "v2":  # the unified hierarchy's root files (what startup_cpus reads and writes)
        _write(root / "sys/fs/cgroup/cgroup.controllers", "cpuset cpu io memory hugetlb pids\n")
        _write(root / "sys/fs/cgroup/cgroup.subtree_control", "cpu memory pids\n")
    elif spec.cgroup == "v1":
        _write(root / "sys/fs/cgroup/cpuset/cpuset.cpus", "0-111\n")
        _write(root / "sys/fs/cgroup/cpuset/cpuset.mems", "0-1\n")
    _write(root / "proc/modules", "".join(f"{m} 16384 0 - Live 0x0000000000000000\n" for m in spec.modules))
    _write(root / "proc/meminfo", f"MemTotal:       {spec.memory_kb} kB\nHugepagesize:       2048 kB\n")
    route_dev = spec.default_route_netdev or spec.mgmt_netdev
    header = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n"
    lines = [f"{route_dev}\t00000000\t{_hex_ip(192, 168, 1, 1)}\t0003\t0\t0\t100\t00000000\t0\t0\t0",
             f"{spec.mgmt_netdev}\t{_hex_ip(192, 168, 1, 0)}\t00000000\t0001\t0\t0\t100\t00FFFFFF\t0\t0\t0"]
    for i, dev in enumerate(spec.addressed_netdevs):
        lines.append(f"{dev}\t{_hex_ip(10, 20 + i, 0, 0)}\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0")
    _write(root / "proc/net/route", header + "\n".join(lines) + "\n")
    _write(root / "proc/net/if_inet6", "".join(
        f"20010db8000000000000000000000{i:03x} {i + 2:02x} 40 00 80 {dev}\n" for i, dev in enumerate(spec.ipv6_netdevs)))
    # dev
    (root / "dev/vfio").mkdir(parents=True, exist_ok=True)
    _write(root / "dev/vfio/vfio", "")
    if spec.kvm:
        _write(root / "dev/kvm", "")
    if spec.fastiov_device and "fastiov" in spec.modules:
        _write(root / spec.fastiov_device, "")
    # modules, IOMMU, hugepages
    for m in spec.modules:
        (root / "sys/module" / m).mkdir(parents=True, exist_ok=True)
    (root / "sys/class/iommu").mkdir(parents=True, exist_ok=True)
    (root / "sys/kernel/iommu_groups").mkdir(parents=True, exist_ok=True)
    if spec.iommu:
        (root / "sys/class/iommu/dmar0").mkdir(exist_ok=True)
    hp = root / "sys/kernel/mm/hugepages/hugepages-2048kB"
    _write(hp / "nr_hugepages", f"{spec.hugepages_2m}\n")
    _write(hp / "free_hugepages", f"{spec.hugepages_2m}\n")
    _write(root / ".fake_hugepages_max", f"{spec.hugepages_max}\n")
    # PCI
    for drv in ("ice", "iavf", "vfio-pci"):
        if drv in ("vfio-pci",) and "vfio_pci" not in spec.modules:
            continue
        d = root / DRIVERS_DIR / drv
        d.mkdir(parents=True, exist_ok=True)
        for name in WRITE_ONLY:
            _write(d / name, "")
    _write(root / "sys/bus/pci/drivers_probe", "")
    _add_device(root, format_pci(0, 0, 0x1f, 6), "0x8086", "0x15fb", "e1000e", spec.mgmt_netdev)
    for pf in spec.pfs:
        d = _add_device(root, pf.address, pf.vendor, pf.device, pf.driver, pf.netdev)
        if pf.sriov_capable:
            fn = parse_pci(pf.address)[3]
            offset = pf.offset if pf.offset is not None else 8 + 127 * fn  # VF 0 at device 1 + 16*fn, as on an E810
            _write(d / "sriov_totalvfs", f"{pf.total_vfs}\n")
            _write(d / "sriov_numvfs", "0\n")
            _write(d / "sriov_drivers_autoprobe", "1\n")
            _write(d / "sriov_offset", f"{offset}\n")
            _write(d / "sriov_stride", f"{pf.stride}\n")
            _write(d / "sriov_vf_device", f"{pf.vf_device[2:]}\n")
    # runtimes, configs
    for rel, version in spec.binaries.items():
        p = root / rel
        _write(p, "#!/bin/sh\ncat <<'EOF'\n" + version + "\nEOF\n")
        p.chmod(0o755)
    for rel, target in spec.links.items():
        _link(root / rel, target)
    for rel in spec.data_files:
        _write(root / rel, "")
    return root


def _add_device(root: Path, addr: str, vendor: str, device: str, driver: str | None,
                netdev: str | None = None, physfn: str | None = None) -> Path:
    d = root / DEVICES_DIR / addr
    d.mkdir(parents=True, exist_ok=True)
    _write(d / "vendor", vendor + "\n")
    _write(d / "device", device + "\n")
    _write(d / "class", "0x020000\n")
    _write(d / "driver_override", "(null)\n")
    _link(root / "sys/bus/pci/devices" / addr, f"../../../devices/pci0000:00/{addr}")
    group = _next_iommu_group(root)
    (root / "sys/kernel/iommu_groups" / str(group) / "devices").mkdir(parents=True, exist_ok=True)
    _link(d / "iommu_group", f"../../../kernel/iommu_groups/{group}")
    if physfn:
        _link(d / "physfn", f"../{physfn}")
    if netdev:
        (d / "net" / netdev).mkdir(parents=True, exist_ok=True)
        _link(root / "sys/class/net" / netdev, f"../../devices/pci0000:00/{addr}/net/{netdev}")
    if driver:
        _bind(root, addr, driver)
    return d


def _next_iommu_group(root: Path) -> int:
    base = root / "sys/kernel/iommu_groups"
    base.mkdir(parents=True, exist_ok=True)
    used = [int(n) for n in os.listdir(base) if n.isdigit()]
    return max(used, default=-1) + 1


def _bind(root: Path, addr: str, driver: str) -> None:
    _link(root / DEVICES_DIR / addr / "driver", f"../../../bus/pci/drivers/{driver}")
    _link(root / DRIVERS_DIR / driver / addr, f"../../../../devices/pci0000:00/{addr}")


def _unbind(root: Path, addr: str) -> None:
    link = root / DEVICES_DIR / addr / "driver"
    if link.is_symlink():
        drv = os.path.basename(os.readlink(link))
        link.unlink()
        entry = root / DRIVERS_DIR / drv / addr
        if entry.is_symlink():
            entry.unlink()


def _err(code: int, path: Path) -> OSError:
    return OSError(code, os.strerror(code), str(path))


def _int_file(path: Path) -> int:
    """An integer attribute of the fake tree; a tree edited into something else is an I/O error naming
    the file (as a broken device's attribute would be), never a ValueError from inside the kernel."""
    try:
        return int(path.read_bytes()[:64].decode("ascii").strip(), 0)
    except (ValueError, UnicodeDecodeError):
        raise OSError(errno.EIO, f"{os.strerror(errno.EIO)} (not a number in the fake tree)", str(path)) from None


class FakeSysfs:
    """A `nic.SysfsWriter` for a fake tree: validates like the kernel, writes, then reacts."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self._lock = threading.Lock()
        self.log: list[tuple[str, str]] = []  # (path relative to root, value), in order

    def write(self, path: Path, value: str) -> None:
        rel = os.path.relpath(path, self.root)
        if rel.startswith(".."):
            raise _err(errno.EACCES, Path(path))  # a write outside the fake tree would hit the real host
        parts = rel.split(os.sep)
        v = value.strip()
        with self._lock:
            if not os.path.lexists(path):
                raise _err(errno.ENOENT, Path(path))
            self.log.append((rel, value))
            if parts[:4] == ["sys", "bus", "pci", "devices"] and len(parts) == 6:
                self._device_attr(parts[4], parts[5], v, Path(path))
            elif parts[:4] == ["sys", "bus", "pci", "drivers"] and len(parts) == 6 and parts[5] in WRITE_ONLY:
                self._driver_attr(parts[4], parts[5], v, Path(path))
            elif rel == "sys/bus/pci/drivers_probe":
                self._probe(v, Path(path))
            elif parts[:4] == ["sys", "kernel", "mm", "hugepages"] and parts[-1] == "nr_hugepages":
                self._hugepages(v, Path(path))
            else:
                Path(path).write_text(value)

    # -- reactions
    def _dev(self, addr: str) -> Path:
        return self.root / DEVICES_DIR / addr

    def _driver_of(self, addr: str) -> str | None:
        link = self._dev(addr) / "driver"
        return os.path.basename(os.readlink(link)) if link.is_symlink() else None

    def _device_attr(self, addr: str, attr: str, v: str, path: Path) -> None:
        d = self._dev(addr)
        if attr == "sriov_numvfs":
            self._numvfs(addr, v, path)
        elif attr == "sriov_drivers_autoprobe":
            if v not in ("0", "1"):
                raise _err(errno.EINVAL, path)
            (d / attr).write_text(v + "\n")
        elif attr == "driver_override":
            (d / attr).write_text((v or "(null)") + "\n")
        elif attr in ("sriov_totalvfs", "sriov_offset", "sriov_stride", "vendor", "device"):
            raise _err(errno.EACCES, path)  # read-only attributes
        else:
            (d / attr).write_text(v + "\n")

    def _numvfs(self, pf: str, v: str, path: Path) -> None:
        d = self._dev(pf)
        try:
            n = int(v, 0)
        except ValueError:
            raise _err(errno.EINVAL, path) from None
        total = _int_file(d / "sriov_totalvfs")
        cur = _int_file(d / "sriov_numvfs")
        if n < 0 or n > total:
            raise _err(errno.ERANGE, path)
        if n == cur:
            return
        if self._driver_of(pf) is None:
            raise _err(errno.ENOENT, path)  # no PF driver: SR-IOV cannot be configured
        if n != 0 and cur != 0:
            raise _err(errno.EBUSY, path)  # "N VFs already enabled. Disable before enabling M VFs"
        if n == 0:
            for name in sorted(os.listdir(d)):
                if name.startswith("virtfn"):
                    vf = os.path.basename(os.readlink(d / name))
                    _unbind(self.root, vf)
                    (d / name).unlink()
                    (self.root / "sys/bus/pci/devices" / vf).unlink()
                    shutil.rmtree(self._dev(vf))
        else:
            domain, bus, dev, fn = parse_pci(pf)
            rid = (bus << 8) | (dev << 3) | fn
            offset = _int_file(d / "sriov_offset")
            stride = _int_file(d / "sriov_stride")
            vf_id = "0x" + (d / "sriov_vf_device").read_text().strip()
            autoprobe = (d / "sriov_drivers_autoprobe").read_text().strip() == "1"
            vendor = (d / "vendor").read_text().strip()
            for i in range(n):
                r = rid + offset + i * stride
                vf = format_pci(domain, (r >> 8) & 0xFF, (r >> 3) & 0x1F, r & 7)
                _add_device(self.root, vf, vendor, vf_id, None, None, physfn=pf)
                _link(d / f"virtfn{i}", f"../{vf}")
                if autoprobe and (self.root / DRIVERS_DIR / "iavf").is_dir():
                    _bind(self.root, vf, "iavf")
        (d / "sriov_numvfs").write_text(f"{n}\n")

    def _driver_attr(self, drv: str, attr: str, v: str, path: Path) -> None:
        if attr == "unbind":
            if self._driver_of(v) != drv:
                raise _err(errno.ENODEV, path)
            _unbind(self.root, v)
        elif attr == "bind":
            if not self._dev(v).is_dir():
                raise _err(errno.ENODEV, path)
            override = (self._dev(v) / "driver_override").read_text().strip()
            if override not in ("(null)", drv):
                raise _err(errno.ENODEV, path)  # the override forbids this driver
            if self._driver_of(v) is not None:
                raise _err(errno.EBUSY, path)
            _bind(self.root, v, drv)
        # new_id/remove_id: accepted without effect on existing devices here

    def _probe(self, v: str, path: Path) -> None:
        d = self._dev(v)
        if not d.is_dir():
            raise _err(errno.ENODEV, path)
        if self._driver_of(v) is not None:
            return
        override = (d / "driver_override").read_text().strip()
        if override != "(null)":
            drv: str | None = override
        elif (d / "physfn").is_symlink():
            drv = "iavf"
        else:
            drv = "ice"
        if drv and (self.root / DRIVERS_DIR / drv).is_dir():
            _bind(self.root, v, drv)

    def _hugepages(self, v: str, path: Path) -> None:
        try:
            n = int(v, 0)
        except ValueError:
            raise _err(errno.EINVAL, path) from None
        limit = _int_file(self.root / ".fake_hugepages_max")
        got = min(n, limit)  # the kernel reserves what it can and reports that count
        path.write_text(f"{got}\n")
        (path.parent / "free_hugepages").write_text(f"{got}\n")


def is_char_device(path: Path) -> bool:
    try:
        return stat.S_ISCHR(Path(path).stat().st_mode)
    except OSError:
        return False
