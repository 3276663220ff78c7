"""Output of the in-container micro-benchmarks (first/second-touch memory, small file read) as records.

Reads the lines the original's `mem_lat2` / `file_lat2` print and our own `microbench` prints in
the same wording, plain or inside CRI container logs (`<RFC3339Nano> stdout F <line>`, as in the
original's `mem_lat.log`). The summary gives count, mean and std (what the original's
stat_mem_lat.py prints) plus median and p99, per measurement.
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable

import pandas as pd

from fastiov_lib.analysis.pods import ParseReport
from fastiov_lib.safe_files import LOG_LIMIT, open_regular

_CRI_RE = re.compile(r"^(\S+) (stdout|stderr) ([FP]) (.*)$")
_PATTERNS = [
    ("mem_second_touch", re.compile(r"Accessing (\d+) bytes of memory for the second time took ([0-9.]+) seconds")),
    ("mem_first_touch", re.compile(r"Accessing (\d+) bytes of memory took ([0-9.]+) seconds")),
    ("file_read", re.compile(r"Reading (\d+) bytes took ([0-9.]+) seconds")),
]
MEASUREMENTS = tuple(name for name, _ in _PATTERNS)


@dataclass(frozen=True)
class MicrobenchRecord:
    """One measurement: which, how many bytes, its latency in ns, and where it came from."""

    measurement: str  # mem_first_touch, mem_second_touch, file_read
    bytes: int
    latency_ns: int
    log_time: str  # the CRI log's time stamp ("" for plain output)
    source: str
    line: int


def parse_microbench_lines(lines: Iterable[str], source: str = "<lines>") -> tuple[list[MicrobenchRecord], ParseReport]:
    """Records from micro-benchmark output; other lines (and stderr) are reported, blank lines skipped."""
    report = ParseReport(source)
    out = []
    for n, raw in enumerate(lines, 1):
        report.lines_read += 1
        line = raw.rstrip("\n")
        if not line.strip():
            continue
        stamp, text = "", line
        m = _CRI_RE.match(line)
        if m:
            stamp, text = m[1], m[4]
            if m[2] == "stderr":
                report.skip(n, f"stderr: {text[:80]}")
                continue
        for name, pattern in _PATTERNS:
            hit = pattern.search(text)
            if hit:
                out.append(MicrobenchRecord(name, int(hit[1]), round(float(hit[2]) * 1e9), stamp, source, n))
                break
        else:
            report.skip(n, "not a micro-benchmark line (Accessing ... / Reading ... took <s> seconds)")
    report.records = len(out)
    return out, report


def parse_microbench_file(path: str | Path) -> tuple[list[MicrobenchRecord], ParseReport]:
    """One log file (a container's CRI log or saved output)."""
    with open_regular(path, LOG_LIMIT, "micro-benchmark log") as fh:
        return parse_microbench_lines(fh, str(path))


def records_frame(records: Iterable[MicrobenchRecord]) -> pd.DataFrame:
    """The records as a table (one row per measurement)."""
    rows = [asdict(r) for r in records]
    return pd.DataFrame(rows, columns=list(MicrobenchRecord.__dataclass_fields__))


def summarize(records: Iterable[MicrobenchRecord]) -> pd.DataFrame:
    """Per measurement and size: count, mean, std (as the original's stat_mem_lat.py), median and p99, in ns."""
    df = records_frame(records)
    cols = ["measurement", "bytes", "count", "mean_ns", "std_ns", "median_ns", "p99_ns"]
    if df.empty:
        return pd.DataFrame(columns=cols)
    g = df.groupby(["measurement", "bytes"])["latency_ns"]
    out = g.agg(count="count", mean_ns="mean", std_ns=lambda x: float(x.std(ddof=0)), median_ns="median",
                p99_ns=lambda x: float(x.quantile(0.99))).reset_index()
    return out[cols]
