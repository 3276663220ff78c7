"""Reading pods.jsonl: records to a tidy frame with derived latencies; bad lines counted, never fatal."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import pandas as pd
from pydantic import ValidationError

from fastiov_lib.run.rundir import PODS_FILE, PodRecord, read_jsonl
from fastiov_lib.safe_files import RECORDS_LIMIT, open_regular

# Derived per-pod latencies (ms) computed from the raw monotonic ns timestamps of PodRecord.
PHASE_COLUMNS = {
    "startup_ms": ("t_released_ns", "t_sandbox_returned_ns"),
    "network_ready_ms": ("t_released_ns", "t_network_ready_ns"),
    "container_started_ms": ("t_released_ns", "t_container_started_ns"),
    "app_completion_ms": ("t_released_ns", "t_container_exited_ns"),
}


@dataclass
class ParseReport:
    """What a parser read, kept and skipped; `skipped` holds (source, line number, reason)."""

    source: str
    lines_read: int = 0
    records: int = 0
    skipped: list[tuple[str, int, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.skipped

    def skip(self, line: int, reason: str, source: str | None = None) -> None:
        self.skipped.append((source or self.source, line, reason))

    def merge(self, other: "ParseReport") -> "ParseReport":
        self.lines_read += other.lines_read
        self.records += other.records
        self.skipped.extend(other.skipped)
        return self

    def skipped_frame(self) -> pd.DataFrame:
        """The skipped lines as a table (source, line, reason)."""
        return pd.DataFrame(self.skipped, columns=["source", "line", "reason"])

    def summary(self) -> str:
        text = f"{self.source}: {self.records} records from {self.lines_read} lines"
        if self.skipped:
            first = self.skipped[0]
            text += f", {len(self.skipped)} skipped (first: {first[0]} line {first[1]}: {first[2]})"
        return text


# --------------------------------------------------------------------------------------------------
# pods.jsonl
# --------------------------------------------------------------------------------------------------

POD_FIELDS = list(PodRecord.model_fields)
NS_FIELDS = [c for c in POD_FIELDS if c.endswith("_ns")]
MAX_NS = 2**63 - 1  # int64: what a monotonic or epoch clock in ns can hold
MAX_SPAN_NS = 86_400 * 10**9  # a pod phase of more than a day is a broken record, not a slow pod
# each phase ends after the one it follows (None = not reached)
# (the workload's exit comes from the runtime's clock and may precede StartContainer's return)
PHASE_ORDER = [("t_released_ns", "t_sandbox_returned_ns"), ("t_sandbox_returned_ns", "t_network_ready_ns"),
               ("t_sandbox_returned_ns", "t_container_started_ns"), ("t_released_ns", "t_container_exited_ns")]


def timestamp_problem(obj: dict[str, Any]) -> str | None:
    """Why a pod record's timestamps are impossible (non-integer, out of range, out of order), or None."""
    for key in NS_FIELDS:
        v = obj.get(key)
        if v is None:
            continue
        if isinstance(v, bool) or not isinstance(v, int):
            return f"key '{key}': {v!r} is not an integer number of nanoseconds"
        if not 0 <= v <= MAX_NS:
            return f"key '{key}': {v} is outside 0..2^63-1 ns"
    for start, end in PHASE_ORDER:
        a, b = obj.get(start), obj.get(end)
        if a is None or b is None:
            continue
        if b < a:
            return f"key '{end}' ({b}) precedes '{start}' ({a})"
        if b - a > MAX_SPAN_NS:
            return f"'{start}' to '{end}' spans {(b - a) / 1e9:.3g} s, more than a day"
    return None


def _ms_between(df: pd.DataFrame, start: str, end: str) -> pd.Series:
    a = pd.to_numeric(df[start], errors="coerce")
    b = pd.to_numeric(df[end], errors="coerce")
    return (b - a) / 1e6


def pods_frame(records: Iterable[dict[str, Any]]) -> pd.DataFrame:
    """A DataFrame of validated pod records with the derived latency columns (ms).

    startup_ms = sandbox returned - released; network_ready_ms, container_started_ms and
    app_completion_ms are measured from the release as well (NaN where a phase was not reached).
    `app` names the app-experiment workload (extra["app"], or the local download size) or is "".
    """
    rows = list(records)
    df = pd.DataFrame(rows, columns=None if rows else POD_FIELDS)
    for col in POD_FIELDS:
        if col not in df.columns:
            df[col] = None
    for col in [c for c in POD_FIELDS if c.endswith("_ns")]:
        df[col] = pd.to_numeric(df[col], errors="coerce").astype("Float64")
    for name, (start, end) in PHASE_COLUMNS.items():
        df[name] = _ms_between(df, start, end).astype("float64")
    for col in ("concurrency", "repeat", "pod_index", "tenant"):
        df[col] = pd.to_numeric(df[col], errors="coerce").fillna(0).astype("int64")
    extras = df["extra"] if "extra" in df.columns else pd.Series([{}] * len(df))
    df["app"] = [_app_name(e) for e in extras]
    return df


def _app_name(extra: Any) -> str:
    # a real host names its function (extra["app"]); the local workload downloads a file of file_mb MiB
    if not isinstance(extra, dict):
        return ""
    if extra.get("app"):
        return str(extra["app"])
    if extra.get("file_mb") is not None:
        return f"download {extra['file_mb']} MiB"
    return ""


def read_pods(path: str | Path) -> tuple[pd.DataFrame, ParseReport]:
    """Read pods.jsonl (a file or a run directory) into a DataFrame; invalid lines are reported."""
    path = Path(path)
    if path.is_dir():
        path = path / PODS_FILE
    report = ParseReport(str(path))
    raw, load = read_jsonl(path)
    report.lines_read = load.lines_read
    for number, reason in load.skipped:
        report.skip(number, reason)
    # read_jsonl returns records in file order; recover each record's line number for messages
    bad = {n for n, _ in load.skipped}
    numbers: list[int] = []
    if path.exists():
        with open_regular(path, RECORDS_LIMIT, PODS_FILE) as fh:
            numbers = [n for n, line in enumerate(fh, start=1) if line.strip() and n not in bad]
    good: list[dict[str, Any]] = []
    seen: dict[str, int] = {}  # a record's canonical JSON -> its first line
    for number, obj in zip(numbers, raw):
        # the same pod twice (a copied line, a file concatenated with itself) is one pod, never two:
        # every real record differs at least in its monotonic timestamps and sandbox id
        key = json.dumps(obj, sort_keys=True, separators=(",", ":"))
        if key in seen:
            report.skip(number, f"duplicate of line {seen[key]} (the same pod twice; counted once)")
            continue
        seen[key] = number
        problem = timestamp_problem(obj)
        if problem:
            report.skip(number, f"impossible timestamps: {problem}")
            continue
        try:
            rec = PodRecord.model_validate(obj)
        except ValidationError as exc:
            err = exc.errors()[0]
            key = ".".join(str(p) for p in err["loc"]) or "(record)"
            report.skip(number, f"not a pod record: key '{key}': {err['msg']}")
            continue
        good.append(rec.model_dump())
    report.records = len(good)
    return pods_frame(good), report


# --------------------------------------------------------------------------------------------------
# The original artifact's layout: logs/time_kata_<MMDDHHMM>/con_<NNN>/_pod_<t>_<i>.txt
# --------------------------------------------------------------------------------------------------

