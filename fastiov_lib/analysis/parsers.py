"""Parsers: pod results, the original artifact's result files, instrumentation records, containerd logs.

Every parser returns a tidy DataFrame plus a ParseReport. A malformed, truncated or foreign line is
counted in the report with its line number and a reason; nothing here raises on bad input lines.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pandas as pd
from pydantic import ValidationError

from fastiov_lib.run.rundir import PODS_FILE, RUN_FILE, STAGES_FILE, PodRecord, RunDir, read_jsonl

# Derived per-pod latencies (ms) computed from the raw monotonic ns timestamps of PodRecord.
PHASE_COLUMNS = {
    "startup_ms": ("t_released_ns", "t_sandbox_returned_ns"),
    "network_ready_ms": ("t_released_ns", "t_network_ready_ns"),
    "container_started_ms": ("t_released_ns", "t_container_started_ns"),
    "app_completion_ms": ("t_released_ns", "t_container_exited_ns"),
}

# Columns of stages.csv (one component stage record each; times are wall-clock ns since the epoch).
STAGE_COLUMNS = [
    "component", "file", "pid", "line", "subject", "record_id", "level",
    "start_wall_ns", "elapsed_ns", "log_wall_ns", "extra",
    "experiment", "variant", "concurrency", "repeat",
]

ZAP_LEVELS = frozenset({"DEBUG", "INFO", "WARN", "ERROR", "DPANIC", "PANIC", "FATAL"})


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
        with open(path, encoding="utf-8", errors="replace") as fh:
            numbers = [n for n, line in enumerate(fh, start=1) if line.strip() and n not in bad]
    good: list[dict[str, Any]] = []
    for number, obj in zip(numbers, raw):
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

_ROUND_DIR_RE = re.compile(r"^time_kata_(\d{8})$")
_CON_DIR_RE = re.compile(r"^con_(\d+)$")
_POD_FILE_RE = re.compile(r"^_pod_(\d+)_(\d+)\.txt$")
_NUM_RE = re.compile(r"^-?\d+(\.\d+)?$")

ORIGINAL_COLUMNS = ["round", "concurrency", "tenant", "pod_index", "line_in_file", "file", "pod_id",
                    "start_ms", "end_ms", "latency_ms"]


def _find_round_dirs(src: Path) -> list[Path]:
    if _ROUND_DIR_RE.match(src.name):
        return [src]
    found: list[Path] = []
    for base in (src, src / "logs"):
        if base.is_dir():
            found += [p for p in sorted(base.iterdir()) if p.is_dir() and _ROUND_DIR_RE.match(p.name)]
    return found


def read_versions(path: Path) -> dict[str, str]:
    """versions.txt of the original layout: uname -r, containerd, crictl and kata version lines."""
    out: dict[str, str] = {}
    try:
        lines = [ln.strip() for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return out
    for ln in lines:
        low = ln.lower()
        key = ("crictl" if "crictl" in low else "containerd" if "containerd" in low
               else "kata" if "kata" in low else "kernel" if re.match(r"^\d+\.\d+", ln) else None)
        if key and key not in out:
            out[key] = ln
    out["raw"] = "\n".join(lines)
    return out


def parse_original_layout(src: str | Path) -> tuple[pd.DataFrame, ParseReport, dict[str, dict[str, str]]]:
    """Parse the original scripts' result files under `src` (a logs/ dir, its parent, or one round).

    Returns (one row per result line, report, versions.txt contents per round). A pod file without
    a result line is reported (the pod never wrote one); rows keep the raw epoch-ms numbers.
    """
    src = Path(src)
    report = ParseReport(str(src))
    rows: list[dict[str, Any]] = []
    versions: dict[str, dict[str, str]] = {}
    rounds = _find_round_dirs(src)
    if not rounds:
        report.skip(0, "no time_kata_<MMDDHHMM> directory found")
    for rdir in rounds:
        for vpath in (rdir / "versions.txt", *sorted(rdir.glob("con_*/versions.txt"))):
            if vpath.is_file():
                versions.setdefault(rdir.name, {}).update(read_versions(vpath))
        for cdir in sorted(p for p in rdir.iterdir() if p.is_dir()):
            cm = _CON_DIR_RE.match(cdir.name)
            if not cm:
                continue
            for f in sorted(cdir.iterdir()):
                pm = _POD_FILE_RE.match(f.name)
                if not pm:
                    continue
                rel = f"{rdir.name}/{cdir.name}/{f.name}"
                text = f.read_text(errors="replace")
                # lines end at "\n" only (str.splitlines would also split at form feeds and the like)
                lines = text.split("\n")
                if lines and lines[-1] == "":
                    lines.pop()
                got = 0
                for number, line in enumerate(lines, start=1):
                    line = line.rstrip("\r")
                    report.lines_read += 1
                    if not line.strip():
                        continue
                    parts = line.split()
                    if len(parts) != 4:
                        report.skip(number, f"expected '<pod_id> <start_ms> <end_ms> <latency_ms>', got {len(parts)} fields", rel)
                        continue
                    if not all(_NUM_RE.match(p) for p in parts[1:]):
                        report.skip(number, "start/end/latency are not numbers", rel)
                        continue
                    start, end, lat = (float(p) for p in parts[1:])
                    if lat < 0 or end < start:
                        report.skip(number, "negative latency or end before start", rel)
                        continue
                    got += 1
                    rows.append({
                        "round": rdir.name, "concurrency": int(cm.group(1)), "tenant": int(pm.group(1)),
                        "pod_index": int(pm.group(2)), "line_in_file": number, "file": rel,
                        "pod_id": parts[0], "start_ms": start, "end_ms": end, "latency_ms": lat,
                    })
                if got == 0:
                    report.skip(0, "no result line (the pod never finished or the file was truncated)", rel)
                    rows.append({
                        "round": rdir.name, "concurrency": int(cm.group(1)), "tenant": int(pm.group(1)),
                        "pod_index": int(pm.group(2)), "line_in_file": 0, "file": rel, "pod_id": "",
                        "start_ms": np.nan, "end_ms": np.nan, "latency_ms": np.nan,
                    })
    df = pd.DataFrame(rows, columns=ORIGINAL_COLUMNS)
    report.records = int(df["latency_ms"].notna().sum())
    return df, report, versions


def import_original_results(src: str | Path, dest_run_dir: str | Path, variant: str = "original",
                            network: str = "sriov") -> tuple[RunDir, ParseReport]:
    """Turn the original artifact's results into a run directory (pods.jsonl + run.json + logs/original/).

    Refuses an existing non-empty destination. Written to a temporary sibling first and renamed, so
    a failure leaves nothing half-imported. Timestamps: release = start_ms, sandbox returned =
    start_ms + latency_ms (the original's own latency), both as epoch ns; `variant` names the
    configuration the original scripts measured (the layout does not record it).
    """
    src = Path(src)
    dest = Path(dest_run_dir)
    if not src.exists():
        raise FileNotFoundError(f"{src}: no such file or directory")
    if dest.exists() and any(dest.iterdir()):
        raise FileExistsError(f"{dest}: exists and is not empty; choose a new run directory")
    df, report, versions = parse_original_layout(src)
    if df.empty:
        raise ValueError(f"{src}: no result files of the form logs/time_kata_<MMDDHHMM>/con_<NNN>/_pod_<t>_<i>.txt")
    run_id = dest.name
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{run_id}.", dir=dest.parent))
    try:
        # repeat: the n-th (round, line) of each concurrency level, in time order
        keys = df[["concurrency", "round", "line_in_file"]].drop_duplicates().sort_values(["concurrency", "round", "line_in_file"])
        keys = keys[keys["line_in_file"] > 0]
        keys["repeat"] = keys.groupby("concurrency").cumcount()
        df = df.merge(keys, on=["concurrency", "round", "line_in_file"], how="left")
        df["repeat"] = df["repeat"].fillna(0).astype(int)
        with open(tmp / PODS_FILE, "w", encoding="utf-8") as fh:
            for row in df.itertuples(index=False):
                ok = not np.isnan(row.latency_ms)
                start_ns = int(round(row.start_ms * 1e6)) if ok else None
                rec = PodRecord(
                    run_id=run_id, testbed="original-artifact", testbed_kind="fastiov", experiment="startup",
                    variant=variant, network=network, runtime_handler="kata", concurrency=row.concurrency,
                    repeat=row.repeat, pod_index=row.pod_index, tenant=row.tenant,
                    pod_name=f"sandbox-{row.tenant:03d}-{row.pod_index:03d}",
                    sandbox_id=row.pod_id or None,
                    t_released_ns=start_ns,
                    t_sandbox_returned_ns=start_ns + int(round(row.latency_ms * 1e6)) if ok else None,
                    wall_released_ns=start_ns,
                    status="ok" if ok else "failed",
                    error=None if ok else "no result line in the original pod file",
                    extra={"source_file": row.file, "original_end_ms": None if not ok else row.end_ms,
                           "round": row.round},
                )
                fh.write(json.dumps(rec.model_dump(mode="json"), separators=(",", ":")) + "\n")
        first_versions = next(iter(versions.values()), {})
        info = {
            "run_id": run_id,
            "testbed_name": "original-artifact",
            "testbed_kind": "fastiov",
            "provenance": "imported from original layout",
            "imported_from": str(src.resolve()),
            "rounds": sorted(df["round"].unique().tolist()),
            "versions": versions,
            "host": {"kernel": first_versions.get("kernel")},
            "parse": {"records": report.records, "skipped": len(report.skipped)},
            "start_time": None,
            "end_time": None,
        }
        (tmp / RUN_FILE).write_text(json.dumps(info, indent=2) + "\n")
        logs = tmp / "logs" / "original"
        logs.mkdir(parents=True)
        for rdir in _find_round_dirs(src):
            shutil.copytree(rdir, logs / rdir.name)
        if dest.exists():
            dest.rmdir()
        os.replace(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return RunDir(dest), report


# --------------------------------------------------------------------------------------------------
# Instrumentation records (zap console encoder)
# --------------------------------------------------------------------------------------------------

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
    with open(path, encoding="utf-8", errors="replace") as fh:
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
        with open(path, encoding="utf-8", errors="replace") as fh:
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


def build_stages_csv(run_dir: str | Path) -> tuple[Path | None, ParseReport]:
    """Parse instrumentation logs under run_dir/logs into run_dir/stages.csv (labelled by round).

    Returns (path or None when no record was found, report). The CSV is written atomically.
    """
    run_dir = Path(run_dir)
    df, report = parse_instrumentation_dir(run_dir / "logs")
    if df.empty:
        return None, report
    pods, _ = read_pods(run_dir)
    stages = assign_rounds(stages_from_instrumentation(df), pods)
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
    df = pd.read_csv(path, dtype={"extra": "string", "variant": "string", "experiment": "string"}, keep_default_na=True)
    missing = [c for c in ("subject", "elapsed_ns") if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: missing column(s) {', '.join(missing)}; expected {', '.join(STAGE_COLUMNS)}")
    return df if len(df) else None


# --------------------------------------------------------------------------------------------------
# containerd's own log (logfmt), plain or inside a journald dump
# --------------------------------------------------------------------------------------------------

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
    with open(path, encoding="utf-8", errors="replace") as fh:
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
