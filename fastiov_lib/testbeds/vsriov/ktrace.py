"""The guest kernel's trace of VFIO calls (tracefs text) turned into per-process time in device open and DMA map.

The guest's /init puts kprobes on `vfio_group_fops_unl_ioctl` (the device open is its
VFIO_GROUP_GET_DEVICE_FD: vfio-pci takes the device set's mutex there and resets the function)
and on `vfio_iommu_type1_ioctl` (VFIO_IOMMU_MAP_DMA: pinning, and for untouched memory faulting
and zeroing, the guest RAM), plus the `lock:contention_begin/end` events, with the monotonic clock.
Per thread, calls do not nest, so a return belongs to the thread's last entry. The contended lock
addresses during the opens are the kernel's own evidence of which opens shared one mutex.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Iterable

VFIO_GROUP_GET_DEVICE_FD = 0x3B6A  # _IO(VFIO_TYPE, VFIO_BASE + 6)
VFIO_IOMMU_MAP_DMA = 0x3B71  # _IO(VFIO_TYPE, VFIO_BASE + 13)

_LINE = re.compile(r"^\s*(?P<comm>.+?)-(?P<pid>\d+)\s+\[(?P<cpu>\d+)\]\s+(?:\S+\s+)?(?P<ts>\d+\.\d+):\s+"
                   r"(?P<event>[\w]+):\s*(?P<rest>.*)$")
_CMD = re.compile(r"\bcmd=(0x[0-9a-fA-F]+|\d+)")
_RET = re.compile(r"\bret=(-?\d+|0x[0-9a-fA-F]+)")


@dataclass(frozen=True)
class TraceEvent:
    """One tracefs line: thread, CLOCK_MONOTONIC time in ns, event name and its text."""

    comm: str
    tid: int
    ts_ns: int
    event: str
    rest: str


def parse_trace_line(line: str) -> TraceEvent | None:
    """One tracefs text line as an event, or None for anything else (headers, lost-event notes)."""
    m = _LINE.match(line.rstrip())
    if not m:
        return None
    sec, _, frac = m.group("ts").partition(".")
    ts_ns = int(sec) * 1_000_000_000 + int((frac + "000000000")[:9])
    return TraceEvent(m.group("comm").strip(), int(m.group("pid")), ts_ns, m.group("event"), m.group("rest"))


@dataclass
class ThreadVfio:
    """What one thread spent in VFIO calls, from the kernel's trace."""

    tid: int
    comm: str
    opens: int = 0
    open_ns: int = 0
    open_start_ns: int | None = None  # monotonic ns of its first device open
    open_end_ns: int | None = None
    open_lock_wait_ns: int = 0  # contended-lock waits inside its device opens
    open_locks: set[str] = field(default_factory=set)  # addresses of the locks it waited for there
    dma_maps: int = 0
    dma_map_ns: int = 0
    errors: int = 0

    def record(self) -> dict[str, object]:
        """A flat record (lock addresses joined by '+')."""
        return {"tid": self.tid, "comm": self.comm, "opens": self.opens, "open_ns": self.open_ns,
                "open_start_mono_ns": self.open_start_ns, "open_end_mono_ns": self.open_end_ns,
                "open_lock_wait_ns": self.open_lock_wait_ns, "open_locks": "+".join(sorted(self.open_locks)),
                "dma_maps": self.dma_maps, "dma_map_ns": self.dma_map_ns, "errors": self.errors}


def _int(text: str) -> int:
    return int(text, 16) if text.lower().startswith("0x") else int(text)


def summarize(lines: Iterable[str]) -> dict[int, ThreadVfio]:
    """Per thread id: device opens, their lock waits and the DMA maps, from tracefs text lines."""
    threads: dict[int, ThreadVfio] = {}
    pending: dict[tuple[int, str], tuple[int, int]] = {}  # (tid, probe) -> (cmd, entry ts)
    waiting: dict[int, tuple[int, str]] = {}  # tid -> (contention start, lock address)
    in_open: dict[int, bool] = {}
    for line in lines:
        ev = parse_trace_line(line)
        if ev is None:
            continue
        t = threads.setdefault(ev.tid, ThreadVfio(ev.tid, ev.comm))
        if ev.event in ("vfio_grp", "vfio_iommu"):
            m = _CMD.search(ev.rest)
            cmd = _int(m.group(1)) if m else -1
            pending[(ev.tid, ev.event)] = (cmd, ev.ts_ns)
            if ev.event == "vfio_grp" and cmd == VFIO_GROUP_GET_DEVICE_FD:
                in_open[ev.tid] = True
                if t.open_start_ns is None:
                    t.open_start_ns = ev.ts_ns
        elif ev.event in ("vfio_grp_ret", "vfio_iommu_ret"):
            probe = ev.event.removesuffix("_ret")
            if (ev.tid, probe) not in pending:
                continue
            cmd, start = pending.pop((ev.tid, probe))
            m = _RET.search(ev.rest)
            failed = bool(m) and _int(m.group(1)) < 0
            if probe == "vfio_grp" and cmd == VFIO_GROUP_GET_DEVICE_FD:
                t.opens += 1
                t.open_ns += ev.ts_ns - start
                t.open_end_ns = ev.ts_ns
                t.errors += failed
                in_open[ev.tid] = False
            elif probe == "vfio_iommu" and cmd == VFIO_IOMMU_MAP_DMA:
                t.dma_maps += 1
                t.dma_map_ns += ev.ts_ns - start
                t.errors += failed
        elif ev.event == "contention_begin":
            if ev.tid not in waiting:  # a mutex first spins, then sleeps: one wait, two begin events
                waiting[ev.tid] = (ev.ts_ns, ev.rest.split()[0] if ev.rest else "?")
        elif ev.event == "contention_end" and ev.tid in waiting:
            start, lock = waiting.pop(ev.tid)
            if in_open.get(ev.tid):
                t.open_lock_wait_ns += ev.ts_ns - start
                t.open_locks.add(lock)
    return threads
