"""containerd's own log (logfmt, or journald lines): RunPodSandbox spans per sandbox."""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pandas as pd

from fastiov_lib.analysis.pods import ParseReport
from fastiov_lib.safe_files import LOG_LIMIT, open_regular

_JOURNAL_PREFIX_RE = re.compile(r"^[A-Z][a-z]{2} [ \d]\d \d{2}:\d{2}:\d{2} (?P<host>\S+) (?P<unit>[^\s\[:]+)(\[(?P<pid>\d+)\])?: ")
_LOGFMT_RE = re.compile(r'([A-Za-z0-9_.\-]+)=("(?:[^"\\]|\\.)*"|\S*)')
_META_RE = re.compile(r"PodSandboxMetadata\{Name:(?P<name>[^,]*),Uid:(?P<uid>[^,]*),Namespace:(?P<ns>[^,]*),Attempt:(?P<attempt>\d+)")
_SANDBOX_ID_RE = re.compile(r'returns sandbox id \\?"(?P<id>[0-9a-f]{8,64})\\?"')
_FAILED_ID_RE = re.compile(r'sandbox \\?"(?P<id>[0-9a-f]{64})\\?"')

CONTAINERD_COLUMNS = ["line", "unit", "pid", "time", "level", "msg", "event", "pod_name", "uid", "namespace",
                      "attempt", "sandbox_id", "error"]


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == '"' and value[-1] == '"':
        try:
            return json.loads(value)
        except ValueError:
            return value[1:-1]
    return value


def parse_logfmt(text: str) -> dict[str, str]:
    """key=value pairs of one logfmt line (quoted values unescaped)."""
    return {k: _unquote(v) for k, v in _LOGFMT_RE.findall(text)}


def parse_containerd_lines(lines: Iterable[str], source: str = "<lines>",
                           units: tuple[str, ...] = ("containerd",)) -> tuple[pd.DataFrame, ParseReport]:
    """containerd log records (every logfmt line), with RunPodSandbox start/end/failure picked out.

    Journald-wrapped lines (`Mon DD HH:MM:SS host unit[pid]: ...`) are unwrapped; lines of other
    units (kvm, kata, kernel...) are reported as foreign. `event` is `run_start`, `run_end`,
    `run_failed` or "" for other messages.
    """
    report = ParseReport(source)
    rows: list[dict[str, Any]] = []
    n = 0
    for n, line in enumerate(lines, start=1):
        line = line.rstrip("\r\n")
        if not line.strip() or line.startswith("-- "):
            continue  # blank lines and journalctl's "-- Logs begin ..." banners carry no record
        unit, pid = "", None
        m = _JOURNAL_PREFIX_RE.match(line)
        if m:
            unit, pid = m.group("unit"), int(m.group("pid")) if m.group("pid") else None
            if unit not in units:
                report.skip(n, f"foreign journald unit {unit!r}")
                continue
            line = line[m.end():]
        if not line.startswith("time="):
            report.skip(n, "not a logfmt record (no leading time=)")
            continue
        if (line.count('"') - line.count('\\"')) % 2:
            report.skip(n, "unterminated quoted value (truncated line?)")
            continue
        kv = parse_logfmt(line)
        if "msg" not in kv or "level" not in kv:
            report.skip(n, "logfmt record without level= or msg= (truncated?)")
            continue
        msg = kv["msg"]
        event = name = uid = ns = sid = ""
        attempt = None
        if msg.startswith("RunPodSandbox for "):
            meta = _META_RE.search(msg)
            if meta:
                name, uid, ns = meta.group("name"), meta.group("uid"), meta.group("ns")
                attempt = int(meta.group("attempt"))
            if "returns sandbox id" in msg:
                event = "run_end"
                sm = _SANDBOX_ID_RE.search(msg)
                sid = sm.group("id") if sm else ""
            elif "failed" in msg:
                event = "run_failed"
                fm = _FAILED_ID_RE.search(kv.get("error", ""))
                sid = fm.group("id") if fm else ""
            else:
                event = "run_start"
        rows.append({
            "line": n, "unit": unit, "pid": pid, "time": kv.get("time", ""), "level": kv["level"],
            "msg": msg, "event": event, "pod_name": name, "uid": uid, "namespace": ns, "attempt": attempt,
            "sandbox_id": sid, "error": kv.get("error", ""),
        })
    report.lines_read = n
    report.records = len(rows)
    df = pd.DataFrame(rows, columns=CONTAINERD_COLUMNS)
    bad_time = pd.to_datetime(df["time"], format="ISO8601", utc=True, errors="coerce").dt.as_unit("ns")
    for number in df.loc[bad_time.isna(), "line"]:
        report.skip(int(number), "time= is not an RFC3339 timestamp")
    df["time"] = bad_time
    df = df[bad_time.notna()].reset_index(drop=True)
    report.records = len(df)
    return df, report


def parse_containerd_log(path: str | Path, units: tuple[str, ...] = ("containerd",)) -> tuple[pd.DataFrame, ParseReport]:
    """containerd's log file or a `journalctl` dump containing it."""
    path = Path(path)
    with open_regular(path, LOG_LIMIT, "containerd log") as fh:
        return parse_containerd_lines(fh, str(path), units)


def run_pod_sandbox_spans(df: pd.DataFrame) -> pd.DataFrame:
    """RunPodSandbox start/end per pod (name, uid, namespace, attempt): start, end, outcome, duration_ms.

    A start without an end or failure has outcome "open"; an end or failure without a start has
    NaN duration (the log began mid-call).
    """
    ev = df[df["event"] != ""]
    cols = ["pod_name", "uid", "namespace", "attempt", "sandbox_id", "start", "end", "outcome", "duration_ms"]
    if ev.empty:
        return pd.DataFrame(columns=cols)
    out = []
    for (name, uid, ns, attempt), g in ev.groupby(["pod_name", "uid", "namespace", "attempt"], sort=True, dropna=False):
        starts = g[g["event"] == "run_start"]["time"]
        ends = g[g["event"].isin(["run_end", "run_failed"])]
        start = starts.min() if len(starts) else pd.NaT
        if len(ends):
            last = ends.sort_values("time").iloc[-1]
            end, outcome, sid = last["time"], ("ok" if last["event"] == "run_end" else "failed"), last["sandbox_id"]
        else:
            end, outcome, sid = pd.NaT, "open", ""
        dur = (end - start).total_seconds() * 1e3 if pd.notna(start) and pd.notna(end) else np.nan
        out.append({"pod_name": name, "uid": uid, "namespace": ns, "attempt": attempt, "sandbox_id": sid,
                    "start": start, "end": end, "outcome": outcome, "duration_ms": dur})
    return pd.DataFrame(out, columns=cols)

