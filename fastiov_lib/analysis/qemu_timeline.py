"""QEMU timeline logs of the patched QEMU (`qemu-<pid>.log`) as stage records (stages.csv rows).

Each line is `[<sec>.<usec>] [PID: <pid>] [TID: <tid>] <LEVEL>: <message>`, the time taken from
CLOCK_MONOTONIC (the kernel's clock, as in dmesg). Some lines are preceded by an empty line. A stage
is the time from one marker to the next matching one in the same process:
`vfio-getdev` -> `vfio-config` is the VF's open, where the VFIO device-set lock is held (the
paper's "VF open under the lock"); `vfio-mem-ram-map-<region>` -> `vfio-mem-ram-ok-<region>` is
the DMA map of one RAM section (kata names guest RAM `dimm1` and the image's nvdimm `mem0`).
Wall times come from the `clock.json` the real-host round hooks write beside the copied logs
(realtime minus monotonic at collection); without it the wall columns stay empty and say why.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import pandas as pd

from fastiov_lib.analysis.instrumentation import STAGE_COLUMNS
from fastiov_lib.analysis.pods import ParseReport
from fastiov_lib.safe_files import KIB, LOG_LIMIT, open_regular, read_regular_text

CLOCK_FILE = "clock.json"
_LINE_RE = re.compile(r"^\[(\d+)\.(\d{1,9})\] \[(?:PID: ?)?(\d+)\] \[(?:TID: ?)?(\d+)\] ([A-Z]+): (.*)$")
# (name of the stage family, start marker pattern, end marker template); the group is the region
_PAIRS = [
    (re.compile(r"^vfio-getdev$"), "vfio-config"),
    (re.compile(r"^vfio-mem-ram-map-(?P<region>[^\s:]+)$"), "vfio-mem-ram-ok-{region}"),
    (re.compile(r"^realize-start$"), "realize-end"),
    (re.compile(r"^qemuInit-start$"), "qemuInit-end"),
    (re.compile(r"^preconfig-start$"), "preconfig-end"),
]
_MAP_CMD_RE = re.compile(r"^vfio-mem-ram-map-(?P<region>[^\s:]+)-cmd: .*size_mb=(?P<mb>\d+) MB")

VF_OPEN_STAGE = "vfio-getdev..vfio-config"  # the VF's open under the VFIO device-set lock


def dma_map_stage(region: str) -> str:
    """The stage name of the DMA map of one RAM section (`dimm1` = kata's guest RAM, `mem0` = the image)."""
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
    """Markers of a QEMU timeline; empty lines are skipped silently, anything else malformed is reported."""
    report = ParseReport(source)
    out = []
    for n, raw in enumerate(lines, 1):
        report.lines_read += 1
        line = raw.rstrip("\n")
        if not line.strip():
            continue
        m = _LINE_RE.match(line)
        if not m:
            report.skip(n, "not a QEMU timeline line ([sec.usec] [PID: n] [TID: n] LEVEL: message)")
            continue
        frac_ns = int(m.group(2).ljust(9, "0"))  # the digits are a fraction of a second (QEMU writes usec)
        out.append(Marker(int(m.group(1)) * 1_000_000_000 + frac_ns, int(m.group(3)), int(m.group(4)),
                          m.group(5), m.group(6).strip(), n))
    report.records = len(out)
    return out, report


def stages_from_markers(markers: list[Marker], file: str = "", offset_ns: int | None = None,
                        report: ParseReport | None = None) -> pd.DataFrame:
    """Stage rows (STAGE_COLUMNS) for every start marker matched by its end marker in the same process."""
    report = report or ParseReport(file)
    rows = []
    open_: dict[tuple[int, str], list[tuple[Marker, str, dict]]] = {}  # (pid, end marker) -> starts
    sizes: dict[tuple[int, str], int] = {}
    for mk in markers:
        cmd = _MAP_CMD_RE.match(mk.message)
        if cmd:
            sizes[(mk.pid, cmd["region"])] = int(cmd["mb"])
            continue
        waiting = open_.get((mk.pid, mk.message))
        if waiting:
            start, start_name, extra = waiting.pop(0)
            if "region" in extra and (mk.pid, extra["region"]) in sizes:
                extra["size_mb"] = sizes.pop((mk.pid, extra["region"]))
            rows.append({
                "component": "qemu", "file": file, "pid": mk.pid, "line": start.line,
                "subject": f"{start_name}..{mk.message}", "record_id": extra.get("region", ""), "level": start.level,
                "start_wall_ns": start.mono_ns + offset_ns if offset_ns is not None else pd.NA,
                "elapsed_ns": mk.mono_ns - start.mono_ns,
                "log_wall_ns": mk.mono_ns + offset_ns if offset_ns is not None else pd.NA,
                "extra": json.dumps({"tid": start.tid, "start_mono_ns": start.mono_ns, **extra}, sort_keys=True),
            })
            continue
        for pattern, end in _PAIRS:
            m = pattern.match(mk.message)
            if m:
                region = m.groupdict().get("region")
                extra = {"region": region} if region else {}
                open_.setdefault((mk.pid, end.format(region=region)), []).append((mk, mk.message, extra))
                break
    for (pid, end), starts in open_.items():
        for start, name, _ in starts:
            report.skip(start.line, f"{name} of pid {pid} has no {end} (the VM stopped or the log was cut)", file)
    df = pd.DataFrame(rows, columns=[c for c in STAGE_COLUMNS if c not in ("experiment", "variant", "concurrency",
                                                                               "repeat")])
    for col in ("start_wall_ns", "log_wall_ns"):
        df[col] = df[col].astype("Int64")  # ns stay exact; NA where the clock offset is unknown
    for col in ("experiment", "variant", "concurrency", "repeat"):
        df[col] = pd.NA
    return df[STAGE_COLUMNS]


def _offset(folder: Path) -> int | None:
    try:
        return int(json.loads(read_regular_text(folder / CLOCK_FILE, KIB, CLOCK_FILE))["realtime_minus_monotonic_ns"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def parse_timeline_file(path: str | Path, offset_ns: int | None = None) -> tuple[pd.DataFrame, ParseReport]:
    """One qemu-<pid>.log as stage rows; the clock offset is read from clock.json beside it unless given."""
    path = Path(path)
    offset = offset_ns if offset_ns is not None else _offset(path.parent)
    with open_regular(path, LOG_LIMIT, "QEMU timeline log") as fh:
        markers, report = parse_timeline_lines(fh, str(path))
    if offset is None and markers:
        report.skip(0, f"no {CLOCK_FILE} beside it: CLOCK_MONOTONIC stamps have no wall time (rounds unassigned)")
    return stages_from_markers(markers, str(path), offset, report), report


def qemu_stages_dir(logs_dir: str | Path) -> tuple[pd.DataFrame, ParseReport]:
    """Every `qemu-*.log` under logs_dir (the rounds' qemu/ folders) as stage rows, with one report."""
    logs_dir = Path(logs_dir)
    report = ParseReport(str(logs_dir))
    frames = []
    for path in sorted(logs_dir.rglob("qemu-*.log")):
        if path.is_file():
            df, rep = parse_timeline_file(path)
            report.merge(rep)
            if len(df):
                frames.append(df)
    if not frames:
        return pd.DataFrame(columns=STAGE_COLUMNS), report
    return pd.concat(frames, ignore_index=True), report
