"""The patched QEMU's timeline log (`qemu-<pid>.log`) as stage rows.

Lines read `[<sec>.<usec>] [PID: <pid>] [TID: <tid>] <LEVEL>: <marker>` (CLOCK_MONOTONIC; the
"PID: " labels are optional). A stage runs from a start marker to its end marker in the same
process: `vfio-getdev` -> `vfio-config` is the VF's open (the VFIO device-set lock is held there),
`vfio-mem-ram-map-<region>` -> `vfio-mem-ram-ok-<region>` the DMA map of one RAM section, whose
size the `...-map-<region>-cmd: ... size_mb=N MB` line gives.

This is the vsriov branch's stand-in for the real host's parser (same path, same function names);
the real host's version takes its place when both branches are merged.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Iterable

import pandas as pd

from fastiov_lib.analysis.instrumentation import STAGE_COLUMNS
from fastiov_lib.analysis.pods import ParseReport

_LINE = re.compile(r"^\[(\d+)\.(\d{1,9})\] \[(?:PID: ?)?(\d+)\] \[(?:TID: ?)?(\d+)\] ([A-Z]+): (.*)$")
_STARTS = [
    (re.compile(r"^vfio-getdev$"), "vfio-config"),
    (re.compile(r"^vfio-mem-ram-map-(?P<region>[^\s:]+)$"), "vfio-mem-ram-ok-{region}"),
    (re.compile(r"^realize-start$"), "realize-end"),
]
_SIZE = re.compile(r"^vfio-mem-ram-map-(?P<region>[^\s:]+)-cmd: .*size_mb=(?P<mb>\d+) MB")

VF_OPEN_STAGE = "vfio-getdev..vfio-config"


def dma_map_stage(region: str) -> str:
    """The stage name of the DMA map of one RAM section."""
    return f"vfio-mem-ram-map-{region}..vfio-mem-ram-ok-{region}"


@dataclass(frozen=True)
class Marker:
    """One timeline line: monotonic ns, process, thread, level, message, line number."""

    mono_ns: int
    pid: int
    tid: int
    level: str
    message: str
    line: int


def parse_timeline_lines(lines: Iterable[str], source: str = "<lines>") -> tuple[list[Marker], ParseReport]:
    """The markers of a timeline; blank lines are skipped, other malformed lines reported."""
    report = ParseReport(source)
    markers = []
    for n, raw in enumerate(lines, 1):
        report.lines_read += 1
        line = raw.rstrip("\n")
        if not line.strip():
            continue
        m = _LINE.match(line)
        if not m:
            report.skip(n, "not a QEMU timeline line ([sec.usec] [PID: n] [TID: n] LEVEL: marker)")
            continue
        ns = int(m.group(1)) * 1_000_000_000 + int(m.group(2).ljust(9, "0"))
        markers.append(Marker(ns, int(m.group(3)), int(m.group(4)), m.group(5), m.group(6).strip(), n))
    report.records = len(markers)
    return markers, report


def stages_from_markers(markers: list[Marker], file: str = "", offset_ns: int | None = None,
                        report: ParseReport | None = None) -> pd.DataFrame:
    """Stage rows (STAGE_COLUMNS) for each start marker matched by its end marker in the same process."""
    report = report or ParseReport(file)
    waiting: dict[tuple[int, str], list[tuple[Marker, dict]]] = {}
    sizes: dict[tuple[int, str], int] = {}
    rows = []
    for mk in markers:
        size = _SIZE.match(mk.message)
        if size:
            sizes[(mk.pid, size["region"])] = int(size["mb"])
            continue
        starts = waiting.get((mk.pid, mk.message))
        if starts:
            start, extra = starts.pop(0)
            if "region" in extra and (mk.pid, extra["region"]) in sizes:
                extra["size_mb"] = sizes.pop((mk.pid, extra["region"]))
            wall = (lambda ns: ns + offset_ns if offset_ns is not None else pd.NA)
            rows.append({"component": "qemu", "file": file, "pid": mk.pid, "line": start.line,
                         "subject": f"{start.message}..{mk.message}", "record_id": extra.get("region", ""),
                         "level": start.level, "start_wall_ns": wall(start.mono_ns),
                         "elapsed_ns": mk.mono_ns - start.mono_ns, "log_wall_ns": wall(mk.mono_ns),
                         "extra": json.dumps({"tid": start.tid, "start_mono_ns": start.mono_ns, **extra},
                                             sort_keys=True)})
            continue
        for pattern, end in _STARTS:
            m = pattern.match(mk.message)
            if m:
                region = m.groupdict().get("region")
                waiting.setdefault((mk.pid, end.format(region=region)), []).append(
                    (mk, {"region": region} if region else {}))
                break
    for (pid, end), starts in waiting.items():
        for start, _ in starts:
            report.skip(start.line, f"{start.message} of pid {pid} has no {end}", file)
    df = pd.DataFrame(rows, columns=STAGE_COLUMNS[:11])
    for col in ("start_wall_ns", "log_wall_ns"):
        df[col] = df[col].astype("Int64")
    for col in STAGE_COLUMNS[11:]:
        df[col] = pd.NA
    return df[STAGE_COLUMNS]
