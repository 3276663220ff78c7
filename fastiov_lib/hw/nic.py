"""SR-IOV NIC preparation: discover PFs, hugepages, create VFs, bind them to vfio-pci, guards.

Everything goes through the kernel's file protocol below a root path (`/` on a real host, a
generated tree in tests, `/` inside the virtual SR-IOV guest):
- `sys/bus/pci/devices/<PF>/sriov_totalvfs|sriov_numvfs|sriov_drivers_autoprobe|sriov_offset|sriov_stride`
- `sys/bus/pci/devices/<PF>/virtfn<i>` links give the VF addresses (never a hard-coded bus scheme)
- `sys/bus/pci/devices/<VF>/driver_override`, `sys/bus/pci/drivers/<drv>/unbind`, `sys/bus/pci/drivers_probe`
- `sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages`
- `proc/net/route`, `proc/net/if_inet6` for the guards.
Every write goes through a `SysfsWriter`, so a test tree can react to it like the kernel does.

This module runs inside a minimal QEMU guest too: it imports only the standard library and
`fastiov_lib.hw.host_steps` (itself stdlib-only). It takes the settings it needs (the testbed file's
`fastiov:` section, a root, whether host changes are allowed), never a whole testbed.
"""
from __future__ import annotations

import errno
import fcntl
import json
import os
import stat
import struct
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Protocol

from fastiov_lib.hw.pci import PciAddressError, parse_pci, pci_dir
from fastiov_lib.hw.discovery import (  # re-exported: callers use nic.X
    GuardError, NicError, PhysicalFunction, current_driver, describe_pf, discover_pfs, guard_problems,
    kernel_int, list_vfs, predict_vf_addresses,
)
from fastiov_lib.hw.host_steps import Action, HostChangesNotAllowed, Step, require_host_changes
from fastiov_lib.safe_files import read_kernel_text

if TYPE_CHECKING:  # only for type hints: the guest path must not need pydantic models
    from fastiov_lib.config import FastiovHostSettings

NIC_RECORDS_FILE = "nic.jsonl"
HUGEPAGES_2M = "sys/kernel/mm/hugepages/hugepages-2048kB"


class SysfsWriter(Protocol):
    """Writes one value to one sysfs/procfs file (the only way this module changes anything)."""

    def write(self, path: Path, value: str) -> None: ...


class KernelSysfsWriter:
    """The real protocol: open, write the value in one write(2), close; the kernel's errno surfaces."""

    def write(self, path: Path, value: str) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_TRUNC)
        try:
            os.write(fd, value.encode())
        finally:
            os.close(fd)


@dataclass(frozen=True)
class SysfsWrite:
    """One write made (or planned): file, value, why, and how long it took when made."""

    path: str
    value: str
    why: str
    duration_ns: int | None = None


@dataclass
class NicReport:
    """What prepare_vfs / release_vfs did on one PF: VFs, bindings, timings, skipped parts."""

    pf: str
    requested_vfs: int
    vfs: list[str] = field(default_factory=list)
    drivers: dict[str, str | None] = field(default_factory=dict)
    writes: list[SysfsWrite] = field(default_factory=list)
    timings: list[dict[str, Any]] = field(default_factory=list)  # records for nic.jsonl
    registered: list[str] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)  # {"what", "reason"}
    records_file: str | None = None  # when set, each timing is appended here as it is measured

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def timing_rows(self) -> list[dict[str, Any]]:
        return list(self.timings)


# ---------------------------------------------------------------- planning

def plan_hugepages(root: Path, count: int) -> list[SysfsWrite]:
    """The write that sets the 2 MiB hugepage pool to `count` (none if it is already there)."""
    path = Path(root) / HUGEPAGES_2M / "nr_hugepages"
    if kernel_int(path) == count:
        return []
    return [SysfsWrite(str(path), str(count), f"reserve {count} x 2 MiB hugepages for the VMs' memory")]


def plan_pf_writes(root: Path, pf: str, num_vfs: int, driver: str = "vfio-pci",
                   autoprobe_off: bool = True) -> list[SysfsWrite]:
    """Every sysfs write prepare_vfs would make on `pf`, from its current state.

    VF addresses not yet created are predicted from sriov_offset/stride (labelled as such).
    """
    info = describe_pf(root, pf)
    d = pci_dir(root, pf)
    writes: list[SysfsWrite] = []
    if autoprobe_off and info.autoprobe != 0:
        writes.append(SysfsWrite(str(d / "sriov_drivers_autoprobe"), "0",
                                 "keep host VF drivers from grabbing new VFs"))
    if info.num_vfs != num_vfs:
        if info.num_vfs != 0:
            writes.append(SysfsWrite(str(d / "sriov_numvfs"), "0",
                                     f"the kernel refuses a new count while {info.num_vfs} VFs exist"))
        if num_vfs:
            writes.append(SysfsWrite(str(d / "sriov_numvfs"), str(num_vfs), f"create {num_vfs} VFs (timed)"))
        vfs = predict_vf_addresses(info, num_vfs)
        drivers: dict[str, str | None] = {vf: None for vf in vfs}
        predicted = " (address predicted from sriov_offset/stride)"
    else:
        vfs = info.vfs
        drivers = {vf: current_driver(root, vf) for vf in vfs}
        predicted = ""
    for vf in vfs:
        writes.extend(_bind_writes(root, vf, drivers[vf], driver, predicted))
    return writes


def _bind_writes(root: Path, vf: str, cur: str | None, driver: str, note: str = "") -> list[SysfsWrite]:
    if cur == driver:
        return []
    base = Path(root) / "sys/bus/pci"
    writes = [SysfsWrite(str(base / "devices" / vf / "driver_override"), driver,
                         f"only {driver} may claim {vf}{note}")]
    if cur is not None:
        writes.append(SysfsWrite(str(base / "drivers" / cur / "unbind"), vf, f"release {vf} from {cur}"))
    writes.append(SysfsWrite(str(base / "drivers_probe"), vf, f"let the kernel bind {vf} to {driver}"))
    return writes


# ---------------------------------------------------------------- acting

def _timed_write(writer: SysfsWriter, path: Path, value: str, why: str, report: NicReport,
                 lock: threading.Lock | None = None) -> int:
    t0 = time.monotonic_ns()
    try:
        writer.write(Path(path), value)
    except OSError as exc:
        raise NicError(f"writing {value!r} to {path} failed: "
                       f"{errno.errorcode.get(exc.errno or 0, exc.errno)} {exc.strerror}") from exc
    dt = time.monotonic_ns() - t0
    rec = SysfsWrite(str(path), value, why, dt)
    if lock is not None:
        with lock:
            report.writes.append(rec)
    else:
        report.writes.append(rec)
    return dt


def _timing(report: NicReport, event: str, duration_ns: int, **extra: Any) -> None:
    rec = {"event": event, "pf": report.pf, "duration_ns": duration_ns, "wall_ns": time.time_ns(), **extra}
    report.timings.append(rec)
    if report.records_file:
        append_records(Path(report.records_file), [rec])


def allocate_hugepages(root: Path, count: int, writer: SysfsWriter | None = None) -> dict[str, Any]:
    """Set the 2 MiB hugepage pool to `count`; returns requested/got/duration (got may be less)."""
    writer = writer or KernelSysfsWriter()
    path = Path(root) / HUGEPAGES_2M / "nr_hugepages"
    if not path.exists():
        raise NicError(f"{path}: missing (no 2 MiB hugepage support in this kernel)")
    t0 = time.monotonic_ns()
    if kernel_int(path) != count:
        try:
            writer.write(path, str(count))
        except OSError as exc:
            raise NicError(f"writing {count} to {path} failed: {exc.strerror}") from exc
    got = kernel_int(path) or 0
    return {"event": "hugepages", "requested": count, "got": got, "duration_ns": time.monotonic_ns() - t0,
            "wall_ns": time.time_ns(), "ok": got >= count}


def _io(kind: str, nr: int) -> int:
    """Linux's _IO(type, nr): no direction, no size (the argument is passed as a pointer anyway)."""
    return (ord(kind) << 8) | nr


REGISTER_VF_IOCTL = _io(";", 125)  # 0x3B7D: the patched VFIO's "own device set for this VF"


def register_arg(vf: str) -> bytes:
    """The registration ioctl's argument: bus, device, function as three native u32 (no domain)."""
    _domain, bus, dev, fn = parse_pci(vf)
    return struct.pack("@III", bus, dev, fn)


def register_device_sets(root: Path, vfs: list[str], device: Path | str | None,
                         request: int | None, report: NicReport, disabled_reason: str = "") -> None:
    """Register each VF as its own VFIO device set with the patched host kernel (one ioctl per VF).

    The original (`multhd_bind_vfs.py`) issues `_IO(';', 125)` on the VFIO container node
    `/dev/vfio/vfio` with (bus, device, function) as three u32, every VF in turn, before binding.
    A no-op with a recorded reason when registration is disabled, the node is absent or not a
    character device, or no request number is configured; a failing ioctl is an error naming it.
    """
    what = "VFIO per-VF device-set registration"
    if disabled_reason:
        report.skipped.append({"what": what, "reason": disabled_reason})
        return
    if device is None:
        report.skipped.append({"what": what, "reason": "no device node configured"})
        return
    node = Path(root) / str(device).lstrip("/")
    if not node.exists():
        report.skipped.append({"what": what, "reason": f"{node} absent (vfio not loaded)"})
        return
    if not stat.S_ISCHR(node.stat().st_mode):
        report.skipped.append({"what": what, "reason": f"{node} is not a character device"})
        return
    if request is None:
        report.skipped.append({"what": what, "reason": "fastiov_register_ioctl not set in the testbed file"})
        return
    fd = os.open(node, os.O_RDWR)
    try:
        for vf in vfs:
            buf = register_arg(vf)
            t0 = time.monotonic_ns()
            try:
                fcntl.ioctl(fd, request, buf)
            except OSError as exc:
                raise NicError(f"{node}: ioctl {request:#x} for {vf} (bus, device, function "
                               f"{tuple(struct.unpack('@III', buf))}) failed: {exc.strerror}; is this the patched "
                               "host kernel? (set fastiov_register: never to skip the registration)") from exc
            _timing(report, "register_device_set", time.monotonic_ns() - t0, vf=vf)
            report.registered.append(vf)
    finally:
        os.close(fd)


def registration_disabled(root: Path, s: Any) -> str:
    """Why the per-VF registration is skipped on this host ("" = do it), from `fastiov_register`."""
    if s.fastiov_register == "never" or s.fastiov_register_ioctl is None:
        return "fastiov_register is never" if s.fastiov_register == "never" else "fastiov_register_ioctl is null"
    if s.fastiov_register == "always":
        return ""
    release = (read_kernel_text(Path(root) / "proc/sys/kernel/osrelease") or "").strip()
    if release.endswith(s.expected_kernel_suffix):
        return ""
    return (f"kernel {release or 'unknown'} is not the patched *{s.expected_kernel_suffix} kernel "
            "(fastiov_register: auto); a stock VFIO has no such ioctl")


def _bind_one(root: Path, vf: str, driver: str, writer: SysfsWriter, report: NicReport,
              lock: threading.Lock) -> tuple[str, str | None, int]:
    t0 = time.monotonic_ns()
    for w in _bind_writes(root, vf, current_driver(root, vf), driver):
        _timed_write(writer, Path(w.path), w.value, w.why, report, lock)
    got = current_driver(root, vf)
    return vf, got, time.monotonic_ns() - t0


def bind_vfs(root: Path, vfs: list[str], driver: str = "vfio-pci", writer: SysfsWriter | None = None,
             threads: int = 8, report: NicReport | None = None) -> NicReport:
    """Bind VFs to `driver` via driver_override + unbind + drivers_probe, `threads` at a time."""
    writer = writer or KernelSysfsWriter()
    report = report or NicReport(pf="", requested_vfs=len(vfs), vfs=list(vfs))
    if not (Path(root) / "sys/bus/pci/drivers" / driver).is_dir():
        raise NicError(f"driver {driver!r} is not loaded ({Path(root) / 'sys/bus/pci/drivers' / driver} "
                       f"missing); modprobe {driver.replace('-', '_')}")
    lock = threading.Lock()
    t0 = time.monotonic_ns()
    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        results = list(pool.map(lambda vf: _bind_one(root, vf, driver, writer, report, lock), vfs))
    total = time.monotonic_ns() - t0
    wrong = []
    for vf, got, dt in results:
        report.drivers[vf] = got
        _timing(report, "bind_vf", dt, vf=vf, driver=got)
        if got != driver:
            wrong.append(f"{vf} -> {got}")
    _timing(report, "bind_all", total, count=len(vfs), threads=threads)
    if wrong:
        raise NicError(f"after binding, these VFs are not on {driver}: {', '.join(wrong)}")
    return report


def prepare_vfs(root: Path, pf: str, num_vfs: int, driver: str = "vfio-pci", autoprobe_off: bool = True,
                writer: SysfsWriter | None = None, threads: int = 8, netdevs: Iterable[str] = (),
                fastiov_device: Path | str | None = None, register_ioctl: int | None = None,
                records_file: Path | None = None, register_disabled: str = "") -> NicReport:
    """Create `num_vfs` VFs on `pf` (timed) and bind each to `driver`; guards first, idempotent.

    Needs no Testbed: usable on a real host (root "/"), a fake tree, or inside a guest. Raises
    GuardError before any write when the PF carries the default route or an address in use, is not
    SR-IOV capable, or num_vfs exceeds sriov_totalvfs.
    """
    root = Path(root)
    writer = writer or KernelSysfsWriter()
    problems = guard_problems(root, pf, num_vfs, netdevs)
    if problems:
        raise GuardError("; ".join(problems))
    report = NicReport(pf=pf, requested_vfs=num_vfs, records_file=str(records_file) if records_file else None)
    d = pci_dir(root, pf)
    info = describe_pf(root, pf)
    if autoprobe_off and info.autoprobe != 0:
        _timed_write(writer, d / "sriov_drivers_autoprobe", "0", "keep host VF drivers off new VFs", report)
    if info.num_vfs != num_vfs:
        if info.num_vfs != 0:
            dt = _timed_write(writer, d / "sriov_numvfs", "0", "reset the VF count", report)
            _timing(report, "disable_vfs", dt, num_vfs=info.num_vfs)
        if num_vfs:
            dt = _timed_write(writer, d / "sriov_numvfs", str(num_vfs), f"create {num_vfs} VFs", report)
            _timing(report, "create_vfs", dt, num_vfs=num_vfs)
    else:
        report.skipped.append({"what": "create VFs", "reason": f"{num_vfs} VFs already exist"})
    report.vfs = list_vfs(root, pf)
    if len(report.vfs) != num_vfs:
        raise NicError(f"{pf}: asked for {num_vfs} VFs, sysfs shows {len(report.vfs)} virtfn links")
    register_device_sets(root, report.vfs, fastiov_device, register_ioctl, report, register_disabled)
    if report.vfs:
        bind_vfs(root, report.vfs, driver, writer, threads, report)
    return report


def release_vfs(root: Path, pf: str, writer: SysfsWriter | None = None, restore_autoprobe: bool = True,
                records_file: Path | None = None) -> NicReport:
    """Undo prepare_vfs: clear overrides, unbind the VFs, remove them, re-enable autoprobe."""
    root = Path(root)
    writer = writer or KernelSysfsWriter()
    info = describe_pf(root, pf)
    report = NicReport(pf=pf, requested_vfs=0, vfs=info.vfs,
                       records_file=str(records_file) if records_file else None)
    base = root / "sys/bus/pci"
    for vf in info.vfs:
        if (read_kernel_text(base / "devices" / vf / "driver_override") or "(null)") != "(null)":
            _timed_write(writer, base / "devices" / vf / "driver_override", "\n", "clear the override", report)
        cur = current_driver(root, vf)
        if cur is not None:
            _timed_write(writer, base / "drivers" / cur / "unbind", vf, f"release {vf} from {cur}", report)
    if info.num_vfs:
        dt = _timed_write(writer, pci_dir(root, pf) / "sriov_numvfs", "0", "remove the VFs", report)
        _timing(report, "disable_vfs", dt, num_vfs=info.num_vfs)
    if restore_autoprobe and info.autoprobe == 0:
        _timed_write(writer, pci_dir(root, pf) / "sriov_drivers_autoprobe", "1", "kernel default", report)
    return report


def append_records(path: Path, records: Iterable[dict[str, Any]]) -> None:
    """Append JSON lines and flush them to disk (an interrupted run keeps what it measured)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as fh:
        for rec in records:
            fh.write(json.dumps(rec, default=str, separators=(",", ":")) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


# ---------------------------------------------------------------- a host's whole NIC set-up

def nic_steps(s: "FastiovHostSettings", root: Path) -> list[Step]:
    """The NIC set-up of a FastIOV host as plan steps: hugepages, then per PF every write."""
    root = Path(root)
    steps = [Step("hugepages", [Action("write", w.path, w.value, w.why)
                                for w in plan_hugepages(root, s.hugepages_2m)])]
    for pf in s.pfs:
        acts = [Action("write", w.path, w.value, w.why)
                for w in plan_pf_writes(root, pf, s.vfs_per_pf, s.vf_driver)]
        first_bind = sum(1 for a in acts if "/sriov_" in a.target)  # register after create, before bind
        acts[first_bind:first_bind] = register_actions(root, s, pf)
        steps.append(Step(f"vfs {pf}", acts))
    return steps


def register_actions(root: Path, s: Any, pf: str) -> list[Action]:
    """Plan rows of the per-VF registration of one PF: one ioctl per VF, or the reason it is skipped."""
    dev = str(s.fastiov_register_device)
    skip = registration_disabled(root, s)
    if not skip and not (Path(root) / dev.lstrip("/")).exists():
        skip = f"{dev} absent now"
    req = s.fastiov_register_ioctl
    why = "own VFIO device set per VF (patched host kernel), before binding, as multhd_bind_vfs.py"
    if skip:
        return [Action("ioctl", dev, f"skipped: {skip}", why)]
    info = describe_pf(root, pf)
    vfs = info.vfs if info.num_vfs == s.vfs_per_pf else predict_vf_addresses(info, s.vfs_per_pf)
    out = []
    for vf in vfs:
        try:
            _d, bus, devno, fn = parse_pci(vf)
            value = f"{req:#x} (bus, device, function) = ({bus:#x}, {devno:#x}, {fn}) for {vf}"
        except PciAddressError:  # offset/stride unknown: the address exists only after creation
            value = f"{req:#x} (bus, device, function) of {vf}"
        out.append(Action("ioctl", dev, value, why))
    return out


def nic_guard_problems(s: "FastiovHostSettings", root: Path) -> list[str]:
    """Every guard violation of the host's PFs (empty when the NIC set-up is safe to apply)."""
    root = Path(root)
    out: list[str] = []
    # the app test's storage address sits on the pods' subnet, on a PF (the artifact's own): not in use
    allowed = [s.storage_address.network] if s.storage_address is not None else []
    for pf in s.pfs:
        out.extend(guard_problems(root, pf, s.vfs_per_pf, s.pf_netdevs, allowed))
    return out


def nic_plan(s: "FastiovHostSettings", root: Path) -> list[dict[str, str]]:
    """Plan rows (step, action, target, value, why) of the NIC set-up; nothing is written."""
    rows: list[dict[str, str]] = []
    for step in nic_steps(s, root):
        rows.extend(step.plan())
    return rows


def nic_apply(s: "FastiovHostSettings", root: Path, allow_host_changes: bool, run_path: Path | None = None,
              writer: SysfsWriter | None = None, source: str = "") -> list[NicReport]:
    """Hugepages, then create and bind the VFs of every PF; timings appended to <run>/nic.jsonl.

    Refused without `allow_host_changes` (the testbed file `source` says so); all guards are checked
    before the first write.
    """
    require_host_changes(allow_host_changes, "NIC set-up", source)
    root = Path(root)
    problems = nic_guard_problems(s, root)
    if problems:
        raise GuardError("; ".join(problems))
    records_file = Path(run_path) / NIC_RECORDS_FILE if run_path else None
    hp = allocate_hugepages(root, s.hugepages_2m, writer)
    if records_file:
        append_records(records_file, [hp])
    reports = []
    for pf in s.pfs:
        rep = prepare_vfs(root, pf, s.vfs_per_pf, s.vf_driver, True, writer, s.bind_threads,
                          s.pf_netdevs, s.fastiov_register_device, s.fastiov_register_ioctl, records_file,
                          registration_disabled(root, s))
        if records_file and rep.skipped:
            append_records(records_file, [{"event": "skipped", "pf": pf, **sk} for sk in rep.skipped])
        reports.append(rep)
    return reports


def nic_release(s: "FastiovHostSettings", root: Path, allow_host_changes: bool, run_path: Path | None = None,
                writer: SysfsWriter | None = None, source: str = "") -> list[NicReport]:
    """Remove the VFs of every PF again (guarded like nic_apply)."""
    require_host_changes(allow_host_changes, "NIC release", source)
    root = Path(root)
    records_file = Path(run_path) / NIC_RECORDS_FILE if run_path else None
    return [release_vfs(root, pf, writer, records_file=records_file) for pf in s.pfs]


__all__ = [
    "GuardError", "HostChangesNotAllowed", "KernelSysfsWriter", "NicError", "NicReport", "PhysicalFunction",
    "SysfsWrite", "SysfsWriter", "allocate_hugepages", "bind_vfs", "describe_pf", "discover_pfs",
    "guard_problems", "list_vfs", "nic_apply", "nic_plan", "nic_release", "nic_steps", "plan_pf_writes",
    "prepare_vfs", "release_vfs",
]
