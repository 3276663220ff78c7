"""Importing the original artifact's results (logs/time_kata_*/con_*/_pod_*.txt) into a run directory."""
from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fastiov_lib.run.rundir import PODS_FILE, RUN_FILE, PodRecord, RunDir
from fastiov_lib.analysis.pods import ParseReport

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

