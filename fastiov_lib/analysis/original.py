"""Importing the original artifact's results (logs/time_kata_*/con_*/_pod_*.txt) into a run directory."""
from __future__ import annotations

import json
import os
import re
import shutil
import stat
import tempfile
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fastiov_lib.run.rundir import PODS_FILE, RUN_FILE, PodRecord, RunDir
from fastiov_lib.analysis.pods import ParseReport

# time_kata_<MMDDHHMM>/ (Kata runs) and time_runc_<MMDDHHMM>/ (the runc baseline)
_ROUND_DIR_RE = re.compile(r"^time_(kata|runc)_(\d{8})$")
# what the original's latency is: its script's own end - start, polling and sleeps included
LATENCY_KIND = "original_total"
LATENCY_NOTE = ("the original scripts' total per pod (end - start as they logged it, their polling and "
                "sleep included), not a RunPodSandbox time")
_CON_DIR_RE = re.compile(r"^con_(\d+)$")
_POD_FILE_RE = re.compile(r"^_pod_(\d+)_(\d+)\.txt$")
_NUM_RE = re.compile(r"^-?\d+(\.\d+)?$")

ORIGINAL_COLUMNS = ["round", "concurrency", "tenant", "pod_index", "line_in_file", "file", "pod_id",
                    "start_ms", "end_ms", "latency_ms", "start_ns", "latency_ns", "runtime"]


def _real_dir(p: Path) -> bool:
    """A folder that is not reached through a symlink (links are never followed out of the source)."""
    return p.is_dir() and not p.is_symlink()


def _real_file(p: Path) -> bool:
    return p.is_file() and not p.is_symlink()


def _find_round_dirs(src: Path) -> list[Path]:
    if _ROUND_DIR_RE.match(src.name):
        return [src]
    found: list[Path] = []
    for base in (src, src / "logs"):
        if _real_dir(base) or base == src:
            if base.is_dir():
                found += [p for p in sorted(base.iterdir()) if _real_dir(p) and _ROUND_DIR_RE.match(p.name)]
    return found


def round_runtime(round_dir: Path) -> str:
    """The runtime a round directory was measured with (kata or runc), from its name."""
    m = _ROUND_DIR_RE.match(round_dir.name)
    return m.group(1) if m else "kata"


def _ns_of_ms(text: str) -> int:
    """Integer ns of a decimal ms string, exactly (no float maths on timestamps)."""
    return int(Decimal(text) * 1_000_000)


def copy_regular_files(src: Path, dest: Path) -> list[str]:
    """Copy the regular files under src to dest (folders recreated); returns what was skipped and why.

    Symlinks are never followed (so a link to /etc copies nothing of /etc, and a link loop ends
    nowhere); devices, FIFOs and sockets are skipped too.
    """
    skipped: list[str] = []
    for root, dirs, files in os.walk(src, followlinks=False):
        rel_root = Path(root).relative_to(src)
        (dest / rel_root).mkdir(parents=True, exist_ok=True)
        for name in list(dirs):
            if (Path(root) / name).is_symlink():
                skipped.append(f"{rel_root / name}: symlink, not followed")
                dirs.remove(name)
        for name in files:
            path = Path(root) / name
            mode = path.lstat().st_mode
            if stat.S_ISLNK(mode):
                skipped.append(f"{rel_root / name}: symlink, not followed")
            elif not stat.S_ISREG(mode):
                skipped.append(f"{rel_root / name}: not a regular file")
            else:
                shutil.copy2(path, dest / rel_root / name, follow_symlinks=False)
    return skipped


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
        report.skip(0, "no time_kata_<MMDDHHMM> or time_runc_<MMDDHHMM> directory found")
    for rdir in rounds:
        for vpath in (rdir / "versions.txt", *sorted(rdir.glob("con_*/versions.txt"))):
            if _real_file(vpath) and _real_dir(vpath.parent):
                versions.setdefault(rdir.name, {}).update(read_versions(vpath))
        for cdir in sorted(p for p in rdir.iterdir() if p.is_dir()):
            cm = _CON_DIR_RE.match(cdir.name)
            if not cm:
                continue
            if cdir.is_symlink():
                report.skip(0, "symlink, not followed", f"{rdir.name}/{cdir.name}")
                continue
            for f in sorted(cdir.iterdir()):
                pm = _POD_FILE_RE.match(f.name)
                if not pm:
                    continue
                if not _real_file(f):
                    report.skip(0, "not a regular file (symlinks are not followed)", f"{rdir.name}/{cdir.name}/{f.name}")
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
                    try:
                        start, end, lat = (Decimal(p) for p in parts[1:])
                    except InvalidOperation:
                        report.skip(number, "start/end/latency are not numbers", rel)
                        continue
                    if lat < 0 or end < start:
                        report.skip(number, "negative latency or end before start", rel)
                        continue
                    got += 1
                    rows.append({
                        "round": rdir.name, "concurrency": int(cm.group(1)), "tenant": int(pm.group(1)),
                        "pod_index": int(pm.group(2)), "line_in_file": number, "file": rel,
                        "pod_id": parts[0], "start_ms": float(start), "end_ms": float(end), "latency_ms": float(lat),
                        "start_ns": _ns_of_ms(parts[1]), "latency_ns": _ns_of_ms(parts[3]),
                        "runtime": round_runtime(rdir),
                    })
                if got == 0:
                    report.skip(0, "no result line (the pod never finished or the file was truncated)", rel)
                    rows.append({
                        "round": rdir.name, "concurrency": int(cm.group(1)), "tenant": int(pm.group(1)),
                        "pod_index": int(pm.group(2)), "line_in_file": 0, "file": rel, "pod_id": "",
                        "start_ms": np.nan, "end_ms": np.nan, "latency_ms": np.nan,
                        "start_ns": None, "latency_ns": None, "runtime": round_runtime(rdir),
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
        raise ValueError(f"{src}: no result files of the form logs/time_kata_<MMDDHHMM>/con_<NNN>/_pod_<t>_<i>.txt "
                         "(or time_runc_<MMDDHHMM>/)")
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
                start_ns = int(row.start_ns) if ok else None
                rec = PodRecord(
                    run_id=run_id, testbed="original-artifact", testbed_kind="fastiov", experiment="startup",
                    variant=variant, network=network, runtime_handler=row.runtime, concurrency=row.concurrency,
                    repeat=row.repeat, pod_index=row.pod_index, tenant=row.tenant,
                    pod_name=f"sandbox-{row.tenant:03d}-{row.pod_index:03d}",
                    sandbox_id=row.pod_id or None,
                    t_released_ns=start_ns,
                    # the original's total, not RunPodSandbox alone: labelled in extra and run.json
                    t_sandbox_returned_ns=start_ns + int(row.latency_ns) if ok else None,
                    wall_released_ns=start_ns,
                    status="ok" if ok else "failed",
                    error=None if ok else "no result line in the original pod file",
                    extra={"source_file": row.file, "original_end_ms": None if not ok else row.end_ms,
                           "round": row.round, "latency_kind": LATENCY_KIND},
                )
                fh.write(json.dumps(rec.model_dump(mode="json"), separators=(",", ":")) + "\n")
        first_versions = next(iter(versions.values()), {})
        runtimes = sorted(df["runtime"].unique().tolist())
        info = {
            "run_id": run_id,
            "testbed_name": "original-artifact",
            "testbed_kind": "fastiov",
            "provenance": "imported from original layout",
            "imported_from": str(src.resolve()),
            "rounds": sorted(df["round"].unique().tolist()),
            "versions": versions,
            "runtime": {"handlers": runtimes, "kata": first_versions.get("kata"),
                        "containerd": first_versions.get("containerd"), "crictl": first_versions.get("crictl")},
            "testbed": {"kind": "fastiov", "source": "versions.txt of the imported rounds",
                        "kernel": first_versions.get("kernel")},
            "latency": {"kind": LATENCY_KIND, "note": LATENCY_NOTE},
            "host": {"kernel": first_versions.get("kernel")},
            "parse": {"records": report.records, "skipped": len(report.skipped)},
            "start_time": None,
            "end_time": None,
        }
        (tmp / RUN_FILE).write_text(json.dumps(info, indent=2) + "\n")
        logs = tmp / "logs" / "original"
        logs.mkdir(parents=True)
        copy_skipped: list[str] = []
        for rdir in _find_round_dirs(src):
            copy_skipped += [f"{rdir.name}/{item}" for item in copy_regular_files(rdir, logs / rdir.name)]
        for item in copy_skipped:
            report.skip(0, "not copied: " + item.split(": ", 1)[1], item.split(": ", 1)[0])
        info["copy_skipped"] = copy_skipped
        (tmp / RUN_FILE).write_text(json.dumps(info, indent=2) + "\n")
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

