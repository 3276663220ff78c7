"""Instrumentation records of the patched components (zap console lines) and stages.csv built from them."""
from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd

from fastiov_lib.run.rundir import STAGES_FILE
from fastiov_lib.analysis.pods import ParseReport, read_pods
from fastiov_lib.safe_files import LOG_LIMIT, RECORDS_LIMIT, open_regular

STAGE_COLUMNS = [
    "component", "file", "pid", "line", "subject", "record_id", "level",
    "start_wall_ns", "elapsed_ns", "log_wall_ns", "extra",
    "experiment", "variant", "concurrency", "repeat",
]

ZAP_LEVELS = frozenset({"DEBUG", "INFO", "WARN", "ERROR", "DPANIC", "PANIC", "FATAL"})



_TIME_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:?\d{2})$")
_PROC_FILE_RE = re.compile(r"^(?P<component>[A-Za-z_]+?)-(?P<id>\d+)\.log$")

INSTRUMENTATION_COLUMNS = ["component", "file", "pid", "line", "time", "level", "subject", "record_id",
                           "start_t", "elapsed_ns", "extra"]


def _to_utc(values: list[str]) -> pd.Series:
    # zap's ISO8601 encoder writes +0800, RFC3339Nano writes +08:00; pandas' ISO8601 path takes both
    # pandas may pick a coarser unit from the strings; stages.csv stores ns, so fix the unit
    return pd.to_datetime(pd.Series(values, dtype="object"), format="ISO8601", utc=True,
                          errors="coerce").dt.as_unit("ns")


# The canonical zap console line: time, level, optional logger/caller, subject, then the JSON fields
# in the order the patched components write them. Lines of exactly this shape take this fast path;
# every other line goes through the careful field-by-field parser below.
_FAST_RE = re.compile(
    r'(\d{4}-\d\d-\d\dT[^\t"]+)\t([A-Z]+)\t(?:[^\t]*\t)?([^\t{]*)\t'
    r'\{"record_id": ?"([^"\\]*)", ?"start_t": ?"([^"\\]+)", ?"elapsed_ns": ?(\d+)(.*)\}')
_DECODE = json.JSONDecoder().decode
_RAW_DECODE = json.JSONDecoder().raw_decode


def _parse_zap_slow(line: str) -> tuple[str, str, str, str, str, int, str] | str:
    """One zap console record field by field: the record's fields, or the reason it is not one."""
    parts = line.split("\t")
    if len(parts) < 4:
        return f"expected at least 4 tab-separated fields, got {len(parts)}"
    t, level, subject, blob = parts[0], parts[1], parts[-2], parts[-1]
    if not _TIME_RE.match(t):
        return f"first field is not an RFC3339 time: {t[:40]!r}"
    if level not in ZAP_LEVELS:
        return f"unknown level {level[:20]!r}"
    if not blob.startswith("{"):
        return "last field is not a JSON object"
    try:
        fields = _DECODE(blob)
    except ValueError:
        return "JSON fields are not valid JSON (truncated line?)"
    if not isinstance(fields, dict):
        return "JSON fields are not an object"
    el = fields.pop("elapsed_ns", None)
    if type(el) is not int:
        if isinstance(el, str) and el.isdigit():
            el = int(el)
        else:
            return "missing or non-integer elapsed_ns"
    if el < 0:
        return "negative elapsed_ns"
    st = fields.pop("start_t", None)
    if not isinstance(st, str) or not _TIME_RE.match(st):
        return "missing or malformed start_t"
    rid = fields.pop("record_id", "")
    return t, level, subject, str(rid), st, el, (json.dumps(fields, sort_keys=True) if fields else "")


_ZAP_FIELDS = ("time", "level", "subject", "record_id", "start_t", "elapsed_ns", "extra")


def _zap_rows(lines: Iterable[str], report: ParseReport) -> tuple[list[list], list[int]]:
    """Column lists (in _ZAP_FIELDS order) and line numbers of the records in zap console lines.

    Canonical lines take a single-regex fast path; every other line is parsed field by field.
    """
    cols: list[list] = [[] for _ in _ZAP_FIELDS]
    t_, l_, s_, r_, st_, el_, ex_ = (c.append for c in cols)
    numbers: list[int] = []
    num_ = numbers.append
    fast = _FAST_RE.fullmatch
    raw_decode = _RAW_DECODE
    levels_ok = ZAP_LEVELS
    n = 0
    for n, line in enumerate(lines, start=1):
        line = line.rstrip("\r\n")
        m = fast(line)
        if m is not None:
            t, level, subject, rid, st, el, rest = m.groups()
            extra = ""
            ok = level in levels_ok
            if ok and rest:
                ok = rest[0] == ","
                if ok:
                    extra = "{" + rest[1:].lstrip() + "}"
                    try:
                        obj, end = raw_decode(extra)
                        ok = end == len(extra) and type(obj) is dict
                    except ValueError:
                        ok = False
            if ok:
                t_(t), l_(level), s_(subject), r_(rid), st_(st), el_(int(el)), ex_(extra), num_(n)
                continue
        if not line.strip():
            continue
        got = _parse_zap_slow(line)
        if isinstance(got, str):
            report.skip(n, got)
            continue
        for append, value in zip((t_, l_, s_, r_, st_, el_, ex_), got):
            append(value)
        num_(n)
    report.lines_read += n
    return cols, numbers


def _zap_frame(cols: list[list], numbers: list[int], component: list[str] | str, file: list[str] | str,
               pid: list[int] | int, report: ParseReport) -> pd.DataFrame:
    """The tidy frame of parsed records; rows whose times are not real timestamps are reported."""
    t, level, subject, rid, st, el, extra = cols
    df = pd.DataFrame({
        "component": component,
        "file": file,
        "pid": pid,
        "line": np.asarray(numbers, dtype="int64"),
        "time": _to_utc(t),
        "level": level,
        "subject": subject,
        "record_id": rid,
        "start_t": _to_utc(st),
        "elapsed_ns": np.asarray(el, dtype="int64"),
        "extra": extra,
    }, index=pd.RangeIndex(len(numbers)), columns=INSTRUMENTATION_COLUMNS)
    # times that look like RFC3339 but are not real dates (month 13, hour 25) are found here
    bad = df["time"].isna() | df["start_t"].isna()
    if bad.any():
        for src, number, t_bad in zip(df.loc[bad, "file"], df.loc[bad, "line"], df.loc[bad, "time"].isna()):
            report.skip(int(number), "time is not a valid RFC3339 timestamp" if t_bad
                        else "start_t is not a valid RFC3339 timestamp", src)
        report.skipped.sort(key=lambda item: (item[0], item[1]))
        df = df[~bad].reset_index(drop=True)
    report.records = len(df)
    return df


def parse_instrumentation_lines(lines: Iterable[str], source: str = "<lines>", component: str = "",
                                pid: int | None = None) -> tuple[pd.DataFrame, ParseReport]:
    """Parse zap console records `<time>\\t<LEVEL>\\t[<logger/caller>\\t]<subject>\\t{json}`.

    The JSON must be an object with an integer `elapsed_ns` and an RFC3339 `start_t`; `record_id`
    is kept as given; any other keys go to `extra` (a JSON object as text, "" when none). Foreign,
    malformed and truncated lines are reported with their line numbers.
    """
    report = ParseReport(source)
    cols, numbers = _zap_rows(lines, report)
    return _zap_frame(cols, numbers, component, source, pid if pid is not None else -1, report), report


def _component_and_pid(path: Path) -> tuple[str, int | None]:
    m = _PROC_FILE_RE.match(path.name)
    parent = path.parent.name
    component = parent[:-5] if parent.endswith("_logs") else ""
    if m:
        ident = m.group("id")
        # cnicmp-<pid>.log is one process; <component>-<YYYYmmddHHMMSS>.log is a concatenation
        if len(ident) == 14 and ident.startswith(("19", "20")):
            return component or m.group("component"), None
        return component or m.group("component"), int(ident)
    return component or path.stem, None


def parse_instrumentation_file(path: str | Path) -> tuple[pd.DataFrame, ParseReport]:
    """One instrumentation log file; component and pid are taken from its name and folder."""
    path = Path(path)
    component, pid = _component_and_pid(path)
    with open_regular(path, LOG_LIMIT, "instrumentation log") as fh:
        return parse_instrumentation_lines(fh, str(path), component, pid)


def parse_instrumentation_dir(logs_dir: str | Path, pattern: str = "*.log") -> tuple[pd.DataFrame, ParseReport]:
    """Every instrumentation file under `logs_dir` (recursively) in one frame, with one report.

    Files without a single record whose names are not instrumentation names (containerd's log
    slices, notes) are not reported; an instrumentation file full of bad lines is."""
    logs_dir = Path(logs_dir)
    report = ParseReport(str(logs_dir))
    cols: list[list] = [[] for _ in _ZAP_FIELDS]
    numbers: list[int] = []
    components: list[str] = []
    files: list[str] = []
    pids: list[int] = []
    for path in sorted(logs_dir.rglob(pattern)):
        if not path.is_file():
            continue
        rep = ParseReport(str(path))
        with open_regular(path, LOG_LIMIT, "instrumentation log") as fh:
            file_cols, file_numbers = _zap_rows(fh, rep)
        k = len(file_numbers)
        # other logs kept in logs/ (containerd's, round notes) are not instrumentation: leave them
        # out unless their name says they are (cnicmp-<pid>.log, <component>_logs/)
        if not k and not (path.name.startswith("cnicmp-") or path.parent.name.endswith("_logs")):
            continue
        component, pid = _component_and_pid(path)
        for acc, part in zip(cols, file_cols):
            acc += part
        numbers += file_numbers
        components += [component] * k
        files += [str(path)] * k
        pids += [pid if pid is not None else -1] * k
        report.lines_read += rep.lines_read
        report.skipped += rep.skipped
    df = _zap_frame(cols, numbers, components, files, pids, report)
    return df, report


def stages_from_instrumentation(df: pd.DataFrame) -> pd.DataFrame:
    """Instrumentation records as stages.csv rows (round columns left empty; see assign_rounds)."""
    out = pd.DataFrame({
        "component": df["component"],
        "file": df["file"],
        "pid": df["pid"],
        "line": df["line"],
        "subject": df["subject"],
        "record_id": df["record_id"],
        "level": df["level"],
        "start_wall_ns": df["start_t"].astype("int64") if len(df) else pd.Series(dtype="int64"),
        "elapsed_ns": df["elapsed_ns"],
        "log_wall_ns": df["time"].astype("int64") if len(df) else pd.Series(dtype="int64"),
        "extra": df["extra"],
    })
    for col in ("experiment", "variant", "concurrency", "repeat"):
        out[col] = pd.NA
    return out[STAGE_COLUMNS]


def assign_rounds(stages: pd.DataFrame, pods: pd.DataFrame) -> pd.DataFrame:
    """Label each stage record with the round (experiment, variant, concurrency, repeat) whose time window holds it.

    A round's window runs from its first release to its last sandbox return (wall clock, from
    `wall_released_ns` + startup). Rounds run one after another, so windows do not overlap;
    a record outside every window keeps empty round columns.
    """
    stages = stages.copy()
    if stages.empty or pods.empty or pods["wall_released_ns"].isna().all():
        return stages
    p = pods.dropna(subset=["wall_released_ns"]).copy()
    p["wall_end"] = p["wall_released_ns"].astype("float64") + p["startup_ms"].fillna(0) * 1e6
    win = (p.groupby(["experiment", "variant", "concurrency", "repeat"])
            .agg(lo=("wall_released_ns", "min"), hi=("wall_end", "max")).reset_index()
            .sort_values("lo"))
    starts = stages["start_wall_ns"].astype("float64").to_numpy()
    idx = np.searchsorted(win["lo"].astype("float64").to_numpy(), starts, side="right") - 1
    inside = (idx >= 0) & (starts <= win["hi"].to_numpy()[np.clip(idx, 0, None)])
    for col in ("experiment", "variant", "concurrency", "repeat"):
        vals = win[col].to_numpy()[np.clip(idx, 0, None)]
        stages[col] = pd.Series(np.where(inside, vals, None), index=stages.index, dtype="object")
    return stages


def join_by_sandbox(stages: pd.DataFrame, pods: pd.DataFrame) -> pd.DataFrame:
    """Label records whose record_id is a pod's sandbox id (containerd's CNI_* records) with that
    pod's round; this wins over the time window, which only labels records of no known pod."""
    if stages.empty or pods.empty or "sandbox_id" not in pods.columns:
        return stages
    cols = ["experiment", "variant", "concurrency", "repeat"]
    by_id = pods.dropna(subset=["sandbox_id"]).drop_duplicates("sandbox_id").set_index("sandbox_id")[cols]
    hit = stages["record_id"].isin(by_id.index)
    if not hit.any():
        return stages
    stages = stages.copy()
    for col in cols:
        stages[col] = stages[col].astype("object")
        stages.loc[hit, col] = by_id.loc[stages.loc[hit, "record_id"], col].to_numpy()
    return stages


def pods_without_records(stages: pd.DataFrame | None, pods: pd.DataFrame,
                         subject_prefix: str = "CNI_") -> pd.DataFrame:
    """Per round (experiment, variant, concurrency, repeat): ok pods, those with a record, those without."""
    cols = ["experiment", "variant", "concurrency", "repeat"]
    ok = pods[pods["status"] == "ok"].dropna(subset=["sandbox_id"]) if not pods.empty else pods
    if ok.empty:
        return pd.DataFrame(columns=cols + ["ok_pods", "with_records", "without_records"])
    have = set()
    if stages is not None and not stages.empty:
        have = set(stages.loc[stages["subject"].astype(str).str.startswith(subject_prefix), "record_id"].astype(str))
    ok = ok.assign(has=ok["sandbox_id"].astype(str).isin(have))
    out = ok.groupby(cols, dropna=False).agg(ok_pods=("has", "size"), with_records=("has", "sum")).reset_index()
    out["without_records"] = out["ok_pods"] - out["with_records"]
    return out


def build_stages_csv(run_dir: str | Path) -> tuple[Path | None, ParseReport]:
    """Parse instrumentation logs under run_dir/logs into run_dir/stages.csv (labelled by round).

    Returns (path or None when no record was found, report). The CSV is written atomically.
    """
    run_dir = Path(run_dir)
    df, report = parse_instrumentation_dir(run_dir / "logs")
    from fastiov_lib.analysis.qemu_timeline import qemu_stages_dir  # a real host's QEMU timelines

    qemu, qemu_report = qemu_stages_dir(run_dir / "logs")
    report.merge(qemu_report)
    if df.empty and qemu.empty:
        return None, report
    pods, _ = read_pods(run_dir)
    parts = ([stages_from_instrumentation(df)] if not df.empty else []) + ([qemu] if not qemu.empty else [])
    stages = join_by_sandbox(assign_rounds(pd.concat(parts, ignore_index=True), pods), pods)
    # paths relative to the run dir: a run directory is read wherever it is copied to
    root = run_dir.resolve()
    stages["file"] = [str(Path(f).resolve().relative_to(root)) if Path(f).resolve().is_relative_to(root) else f
                      for f in stages["file"]]
    out = run_dir / STAGES_FILE
    tmp = out.with_suffix(".csv.tmp")
    stages.to_csv(tmp, index=False)
    os.replace(tmp, out)
    return out, report


def read_stages(run_dir: str | Path) -> pd.DataFrame | None:
    """stages.csv of a run directory, or None when the run has no component stage records."""
    path = Path(run_dir) / STAGES_FILE
    if not path.is_file():
        return None
    with open_regular(path, RECORDS_LIMIT, "stage records file") as fh:
        df = pd.read_csv(fh, dtype={"extra": "string", "variant": "string", "experiment": "string"},
                         keep_default_na=True)
    missing = [c for c in ("subject", "elapsed_ns") if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: missing column(s) {', '.join(missing)}; expected {', '.join(STAGE_COLUMNS)}")
    return df if len(df) else None


# --------------------------------------------------------------------------------------------------
# containerd's own log (logfmt), plain or inside a journald dump
# --------------------------------------------------------------------------------------------------

