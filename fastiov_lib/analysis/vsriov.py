"""The virtual SR-IOV host's results (`<run>/vsriov.jsonl`) as frames: VF enable, bind, VFIO, DMA, inner VMs.

Everything here reads only the run directory. The numbers come from emulated hardware (QEMU/TCG):
the kernel code paths are real, so shapes and ratios carry over to a real server; absolute times
do not (page zeroing and device emulation under TCG are 50-100x slower than on hardware).
Its figures, claims and report section are in `fastiov_lib.report.vsriov_figures` and `vsriov_report`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fastiov_lib.run.rundir import VSRIOV_FILE, read_jsonl

EMULATION_NOTE = "emulated hardware (QEMU/TCG): shapes and ratios carry over, absolute times do not"
NIC_STEPS = ("import", "prepare_vfs", "release_vfs")


def ns_to_ms(series: pd.Series) -> pd.Series:
    """Nanosecond values (numbers or numeric text) in milliseconds; anything else NaN."""
    return pd.to_numeric(series, errors="coerce") / 1e6


def load_records(run_dir: str | Path) -> pd.DataFrame:
    """Every record of vsriov.jsonl as one DataFrame (columns: kind, session_id, device, ...)."""
    records, _report = read_jsonl(Path(run_dir) / VSRIOV_FILE)
    return pd.DataFrame(records)


def of_kind(df: pd.DataFrame, kind: str, phase: str | None = None) -> pd.DataFrame:
    """Records of one kind (and, when given, of one phase of the guest's run: nic, bench, inner_qemu)."""
    if df.empty or "kind" not in df:
        return pd.DataFrame()
    keep = df["kind"] == kind
    if phase is not None and "phase" in df:
        keep &= df["phase"] == phase
    return df[keep].dropna(axis=1, how="all").reset_index(drop=True)


def sessions_frame(run_dir: str | Path) -> pd.DataFrame:
    """One row per guest boot: device, QEMU, kernel, status, boot and total seconds."""
    s = of_kind(load_records(run_dir), "session")
    cols = ["session_id", "device", "qemu_version", "qemu_source", "kernel", "status", "error", "boot_s", "total_s"]
    return s.reindex(columns=cols)


def nic_steps_frame(run_dir: str | Path) -> pd.DataFrame:
    """The NIC steps fastiov_lib.hw.nic ran inside the guest: step, ok, ms, error."""
    n = of_kind(load_records(run_dir), "nic_step")
    if n.empty:
        return pd.DataFrame(columns=["session_id", "step", "ok", "ms", "error"])
    n = n.reindex(columns=["session_id", "step", "ok", "ns", "error"])
    n["ms"] = ns_to_ms(n.pop("ns"))
    return n[["session_id", "step", "ok", "ms", "error"]]


def vf_enable_frame(run_dir: str | Path) -> pd.DataFrame:
    """Writes to sriov_numvfs: operation (enable 0->N / disable N->0), vfs, ms, errno."""
    v = of_kind(load_records(run_dir), "numvfs", "bench")
    if v.empty:
        return pd.DataFrame(columns=["session_id", "device", "operation", "vfs", "ms", "errno"])
    v["operation"] = np.where(v["n"] > 0, "enable", "disable")
    v["vfs"] = np.where(v["n"] > 0, v["n"], v["from"]).astype(int)
    v["ms"] = ns_to_ms(v["ns"])
    return v[["session_id", "device", "operation", "vfs", "ms", "errno"]]


def bind_frame(run_dir: str | Path) -> pd.DataFrame:
    """Per-VF bind to vfio-pci (driver_override + drivers_probe): unbind, probe and total ms."""
    b = of_kind(load_records(run_dir), "bind", "bench")
    if b.empty:
        return pd.DataFrame(columns=["session_id", "device", "round_n", "bdf", "driver", "errno", "unbind_ms",
                                     "probe_ms", "total_ms"])
    for col in ("unbind", "probe", "total"):
        b[f"{col}_ms"] = ns_to_ms(b[f"{col}_ns"])
    b["round_n"] = pd.to_numeric(b["round_n"]).astype("Int64")
    return b[["session_id", "device", "round_n", "bdf", "driver", "errno", "unbind_ms", "probe_ms", "total_ms"]]


def vfio_frame(run_dir: str | Path) -> pd.DataFrame:
    """VFIO open / reset / close per VF, long format: mode (sequential, parallel), n, operation, ms."""
    df = load_records(run_dir)
    rows: list[dict[str, Any]] = []
    for _, r in of_kind(df, "vfio_open", "bench").iterrows():
        if pd.notna(r.get("device_fd_ns")):
            rows.append({"session_id": r["session_id"], "mode": "sequential", "n": r["round_n"], "bdf": r["bdf"],
                         "operation": "open", "ms": r["device_fd_ns"] / 1e6})
    for _, r in of_kind(df, "vfio_reset", "bench").iterrows():
        if r.get("status") == "ok":
            rows.append({"session_id": r["session_id"], "mode": "sequential", "n": r["round_n"], "bdf": r["bdf"],
                         "operation": "reset", "ms": r["ns"] / 1e6})
    for _, r in of_kind(df, "vfio_close", "bench").iterrows():
        rows.append({"session_id": r["session_id"], "mode": "sequential", "n": r["round_n"], "bdf": r["bdf"],
                     "operation": "close", "ms": r["ns"] / 1e6})
    for _, r in of_kind(df, "parallel_vf", "bench").iterrows():
        if r.get("error", "none") != "none":
            continue
        for op in ("open", "reset", "close"):
            if r[f"{op}_ns"] >= 0:
                rows.append({"session_id": r["session_id"], "mode": "parallel", "n": r["n"], "bdf": r["bdf"],
                             "operation": op, "ms": r[f"{op}_ns"] / 1e6})
    out = pd.DataFrame(rows, columns=["session_id", "mode", "n", "bdf", "operation", "ms"])
    out["n"] = pd.to_numeric(out["n"]).astype("Int64")
    return out


def parallel_frame(run_dir: str | Path) -> pd.DataFrame:
    """N VFs opened+reset+closed at once vs one after another: wall ms of each and their ratio.

    A ratio near 1/N means the kernel overlaps the VFs' resets; near 1 means it serialises them.
    """
    df = load_records(run_dir)
    par = of_kind(df, "parallel", "bench")
    if par.empty:
        return pd.DataFrame(columns=["session_id", "n", "parallel_ms", "sequential_ms", "ratio"])
    seq = vfio_frame(run_dir)
    seq = seq[seq["mode"] == "sequential"]
    rows = []
    for _, r in par.iterrows():
        mine = seq[(seq["session_id"] == r["session_id"]) & (seq["n"] == r["n"])]
        per_vf = mine.groupby("bdf")["ms"].sum()  # open + reset + close of each VF
        sequential = float(per_vf.sum()) if len(per_vf) == r["n"] else np.nan
        rows.append({"session_id": r["session_id"], "n": int(r["n"]), "parallel_ms": r["wall_ns"] / 1e6,
                     "sequential_ms": sequential, "ratio": (r["wall_ns"] / 1e6) / sequential if sequential else np.nan})
    return pd.DataFrame(rows)


def dma_frame(run_dir: str | Path) -> pd.DataFrame:
    """VFIO_IOMMU_MAP_DMA per size and memory state (untouched, prefaulted): map, unmap, populate ms."""
    d = of_kind(load_records(run_dir), "map_dma", "bench")
    if d.empty:
        return pd.DataFrame(columns=["session_id", "device", "mib", "memory", "map_ms", "unmap_ms", "populate_ms"])
    d = d[d["errno"] == 0].copy()
    d["mib"] = d["mib"].astype(int)
    for col in ("map", "unmap", "populate"):
        d[f"{col}_ms"] = ns_to_ms(d[f"{col}_ns"])
    return d[["session_id", "device", "mib", "memory", "map_ms", "unmap_ms", "populate_ms"]].reset_index(drop=True)


INNER_VARIANTS = ["plain", "vf", "prealloc", "prealloc+vf"]


def inner_qemu_frame(run_dir: str | Path) -> pd.DataFrame:
    """A QEMU started inside the guest (as Kata starts one): memory, variant (plain, vf, prealloc,
    prealloc+vf), repeat, exit code and wall ms from exec to exit (`-S`, then `quit`)."""
    q = of_kind(load_records(run_dir), "inner_qemu", "inner_qemu")
    if q.empty:
        return pd.DataFrame(columns=["session_id", "mem_mb", "variant", "repeat", "rc", "ms"])
    q["ms"] = ns_to_ms(q["ns"])
    q["mem_mb"] = q["mem_mb"].astype(int)
    return q.reindex(columns=["session_id", "mem_mb", "variant", "repeat", "rc", "ms"])


def summary_table(run_dir: str | Path) -> pd.DataFrame:
    """One row per micro-benchmark: what, condition, samples, median ms (emulated hardware)."""
    rows: list[dict[str, Any]] = []
    en = vf_enable_frame(run_dir)
    for (op, vfs), g in en[en["errno"] == 0].groupby(["operation", "vfs"]):
        rows.append({"benchmark": f"VF {op}", "condition": f"{vfs} VFs", "samples": len(g), "median_ms": g["ms"].median()})
    b = bind_frame(run_dir)
    if not b.empty:
        rows.append({"benchmark": "bind to vfio-pci", "condition": "per VF", "samples": len(b),
                     "median_ms": b["total_ms"].median()})
    v = vfio_frame(run_dir)
    for (mode, op), g in v.groupby(["mode", "operation"], sort=False):
        rows.append({"benchmark": f"VFIO {op}", "condition": mode, "samples": len(g), "median_ms": g["ms"].median()})
    p = parallel_frame(run_dir)
    for _, r in p.iterrows():
        rows.append({"benchmark": "VFIO open+reset+close, all VFs", "condition": f"{r['n']} in parallel",
                     "samples": 1, "median_ms": r["parallel_ms"]})
    d = dma_frame(run_dir)
    for (mib, mem), g in d.groupby(["mib", "memory"]):
        rows.append({"benchmark": "MAP_DMA", "condition": f"{mib} MiB {mem}", "samples": len(g),
                     "median_ms": g["map_ms"].median()})
    q = inner_qemu_frame(run_dir)
    q = q[q["rc"] == 0]
    for (mem, variant), g in q.groupby(["mem_mb", "variant"]):
        rows.append({"benchmark": "VM start (QEMU in the guest)", "condition": f"{mem} MiB {variant}",
                     "samples": len(g), "median_ms": g["ms"].median()})
    return pd.DataFrame(rows, columns=["benchmark", "condition", "samples", "median_ms"])
