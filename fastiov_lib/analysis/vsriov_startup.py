"""The virtual SR-IOV host's startup experiments as frames: the device-set lock, concurrent VM starts, QEMU 6.2.0.

Reads `<run>/vsriov.jsonl` only. Which kernel behaviour each number had is part of every table:
`stock` = the guest's Debian 6.1 vfio-pci-core (has "vfio/pci: Separate SR-IOV VF dev_set": every
VF its own device set), `shared` = the same source rebuilt with that change reverted (VFs share their
bus's set, as on the paper's 6.4-rc5 host). The kernel's own evidence of a shared set is the trace:
the opens that waited, and for which mutex (one address for all = one device set).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from fastiov_lib.analysis.vsriov import load_records, ns_to_ms, of_kind

DEVSET_TEXT = {"stock": "per-VF device sets (this kernel, upstream fix present)",
               "shared": "shared bus device set (fix reverted, the paper's kernel)"}
CONFIG_TEXT = {"vanilla": "vanilla-like: shared device set, untouched guest memory",
               "fastiov": "FastIOV-like: per-VF device sets, pre-faulted guest memory (zeroed before the start)"}


# ------------------------------------------------------------------ the device-set lock

def devset_frame(run_dir: str | Path) -> pd.DataFrame:
    """The same VFs' device opens one after another (seq) and all at once (par), per kernel behaviour."""
    df = of_kind(load_records(run_dir), "opens")
    cols = ["session_id", "kernel", "devset", "mode", "rep", "n", "failed", "open_wall_ms", "close_wall_ms"]
    if df.empty:
        return pd.DataFrame(columns=cols)
    df = df.rename(columns={"variant": "devset"})
    df["open_wall_ms"] = ns_to_ms(df["open_wall_ns"])
    df["close_wall_ms"] = ns_to_ms(df["close_wall_ns"])
    return df.reindex(columns=cols)


def devset_ratio(run_dir: str | Path, devset: str) -> float | None:
    """Median wall time of the N parallel opens over that of the N sequential ones, for one behaviour."""
    df = devset_frame(run_dir)
    df = df[(df["devset"] == devset) & (df["failed"] == 0)]
    par, seq = df[df["mode"] == "par"]["open_wall_ms"], df[df["mode"] == "seq"]["open_wall_ms"]
    if par.empty or seq.empty or not seq.median():
        return None
    return float(par.median() / seq.median())


def devset_vfs_frame(run_dir: str | Path) -> pd.DataFrame:
    """Each VF's device set: by vfio-pci's rule (sysfs facts) and as the kernel showed it (lock waits)."""
    df = load_records(run_dir)
    info = of_kind(df, "devset_vf")
    cols = ["session_id", "kernel", "devset", "bdf", "iommu_group", "parent", "virtfn", "reset_method", "expected_set",
            "parallel_open_ms", "lock_wait_ms", "waited_for"]
    if info.empty:
        return pd.DataFrame(columns=cols)
    info = info.rename(columns={"variant": "devset", "group": "iommu_group"})
    vfs = of_kind(df, "opens_vf")
    trace = of_kind(df, "ktrace_vfio")
    rows = []
    for _, r in info.iterrows():
        row = r.reindex(cols[:9]).to_dict()
        par = vfs[(vfs.get("variant") == r["devset"]) & (vfs.get("mode") == "par") & (vfs.get("bdf") == r["bdf"]) &
                  (vfs["session_id"] == r["session_id"])] if not vfs.empty else vfs
        row["parallel_open_ms"] = float(ns_to_ms(par["open_ns"]).median()) if len(par) else np.nan
        tids = set(par["tid"]) if len(par) else set()
        # one trace per repeat (devset-<set>-par-<rep>); runs before the modes interleaved have one for all
        labels = trace["label"].astype(str) if "label" in trace else pd.Series(dtype=str)
        par_label = (labels == f"devset-{r['devset']}-par") | labels.str.startswith(f"devset-{r['devset']}-par-")
        mine = trace[par_label & trace["tid"].isin(tids) &
                     (trace["session_id"] == r["session_id"])] if not trace.empty and tids else pd.DataFrame()
        row["lock_wait_ms"] = float(ns_to_ms(mine["open_lock_wait_ns"]).sum()) if len(mine) else np.nan
        locks = sorted({a for v in mine.get("open_locks", pd.Series(dtype=str)).fillna("") for a in str(v).split("+") if a})
        row["waited_for"] = "+".join(locks) or "-"
        rows.append(row)
    return pd.DataFrame(rows, columns=cols)


def devset_evidence(run_dir: str | Path) -> pd.DataFrame:
    """Per behaviour: the device sets vfio-pci's rule gives the VFs, and the kernel's trace of the parallel opens."""
    vfs = devset_vfs_frame(run_dir)
    cols = ["devset", "kernel", "vfs", "iommu_groups", "sets_by_rule", "opens_that_waited", "locks_waited_for",
            "parallel_over_sequential", "meaning"]
    if vfs.empty:
        return pd.DataFrame(columns=cols)
    rows = []
    for devset, g in vfs.groupby("devset", sort=False):
        waited = g[g["lock_wait_ms"].fillna(0) > 1.0]
        locks = sorted({a for v in waited["waited_for"] for a in str(v).split("+") if a and a != "-"})
        rows.append({"devset": devset, "kernel": g["kernel"].iloc[0], "vfs": len(g),
                     "iommu_groups": g["iommu_group"].nunique(), "sets_by_rule": g["expected_set"].nunique(),
                     "opens_that_waited": len(waited), "locks_waited_for": len(locks),
                     "parallel_over_sequential": devset_ratio(run_dir, str(devset)),
                     "meaning": DEVSET_TEXT.get(str(devset), str(devset))})
    return pd.DataFrame(rows, columns=cols)


# ------------------------------------------------------------------ concurrent VM starts

def vmstart_frame(run_dir: str | Path) -> pd.DataFrame:
    """Every inner VM of the concurrent-start experiment: start latency, and (kernel trace) VF open,
    its wait for a contended lock, and the DMA map of its RAM."""
    df = load_records(run_dir)
    vms = of_kind(df, "vmstart")
    cols = ["session_id", "kernel", "config", "devset", "n", "rep", "i", "vf", "status", "start_ms", "vf_open_ms",
            "lock_wait_ms", "dma_map_ms", "dma_maps"]
    if vms.empty or "config" not in vms:
        return pd.DataFrame(columns=cols)
    vms = vms[vms["config"].notna()].copy()
    trace = of_kind(df, "ktrace_vfio")
    vms["label"] = "vm-" + vms["config"] + "-" + vms["n"].astype(int).astype(str) + "-" + vms["rep"].astype(int).astype(str)
    if not trace.empty:
        t = trace.rename(columns={"tid": "pid"})[["session_id", "label", "pid", "open_ns", "open_lock_wait_ns",
                                                   "dma_map_ns", "dma_maps"]]
        vms = vms.merge(t, on=["session_id", "label", "pid"], how="left")
    for col in ("open_ns", "open_lock_wait_ns", "dma_map_ns", "dma_maps"):
        if col not in vms:
            vms[col] = np.nan
    vms["start_ms"] = ns_to_ms(vms["marker_ns"]).where(vms["status"] == "ok")
    vms["vf_open_ms"] = ns_to_ms(vms["open_ns"])
    vms["lock_wait_ms"] = ns_to_ms(vms["open_lock_wait_ns"])
    vms["dma_map_ms"] = ns_to_ms(vms["dma_map_ns"])
    return vms.reindex(columns=cols)


def vmstart_summary(run_dir: str | Path) -> pd.DataFrame:
    """Per configuration and N: median start latency per VM and its medians in VF open, lock wait, DMA map."""
    df = vmstart_frame(run_dir)
    cols = ["config", "devset", "n", "vms", "failed", "start_ms", "vf_open_ms", "lock_wait_ms", "dma_map_ms"]
    if df.empty:
        return pd.DataFrame(columns=cols)
    g = df.groupby(["config", "devset", "n"], sort=False)
    out = g[["start_ms", "vf_open_ms", "lock_wait_ms", "dma_map_ms"]].median()
    out["vms"] = g.size()
    out["failed"] = g["status"].apply(lambda s: int((s != "ok").sum()))
    return out.reset_index().reindex(columns=cols)


def vf_open_rounds(run_dir: str | Path) -> dict[tuple[str, int], list[np.ndarray]]:
    """Per (configuration, N): one array per concurrent start (a round) of its VMs' VF open times (ms,
    kernel trace: the wait for the device-set lock included)."""
    df = vmstart_frame(run_dir)
    df = df[(df["status"] == "ok") & df["vf_open_ms"].notna()]
    out: dict[tuple[str, int], list[np.ndarray]] = {}
    for (cfg, n, _rep), g in df.groupby(["config", "n", "rep"], sort=True):
        out.setdefault((str(cfg), int(n)), []).append(g["vf_open_ms"].to_numpy(dtype=float))
    return out


# ------------------------------------------------------------------ QEMU 6.2.0 stock vs patched

def qemu62_frame(run_dir: str | Path) -> pd.DataFrame:
    """QEMU 6.2.0 stock and with 0001-qemu.patch, one VF each: start latency, VF open, DMA map of RAM
    (kernel trace) and, for the patched one, its own timeline's VF open and RAM maps."""
    df = load_records(run_dir)
    vms = of_kind(df, "vmstart")
    cols = ["session_id", "qemu", "rep", "mem_mb", "status", "start_ms", "vf_open_ms", "dma_map_ms", "dma_maps",
            "timeline_vf_open_ms", "timeline_ram_maps"]
    if vms.empty or "qemu" not in vms:
        return pd.DataFrame(columns=cols)
    vms = vms[vms["qemu"].notna()].copy()
    vms["label"] = "q62-" + vms["qemu"] + "-" + vms["rep"].astype(int).astype(str)
    trace = of_kind(df, "ktrace_vfio")
    if not trace.empty:
        vms = vms.merge(trace.rename(columns={"tid": "pid"})[["session_id", "label", "pid", "open_ns", "dma_map_ns",
                                                              "dma_maps"]],
                        on=["session_id", "label", "pid"], how="left")
    tl = of_kind(df, "qemu_timeline")
    if not tl.empty and "region" not in tl:
        tl["region"] = ""
    opens, maps = {}, {}
    if not tl.empty:
        for (sid, label), g in tl.groupby(["session_id", "label"]):
            o = g[g["stage"] == "vfio-getdev..vfio-config"]
            opens[(sid, label)] = float(ns_to_ms(o["elapsed_ns"]).sum()) if len(o) else np.nan
            ram = g[g["stage"].str.startswith("vfio-mem-ram-map-")]
            maps[(sid, label)] = ", ".join(f"{r}:{ns_to_ms(pd.Series([e])).iloc[0]:.1f}ms"
                                           for r, e in zip(ram["region"], ram["elapsed_ns"]) if e > 1e6) or "none > 1 ms"
    for col in ("open_ns", "dma_map_ns", "dma_maps"):
        if col not in vms:
            vms[col] = np.nan
    vms["start_ms"] = ns_to_ms(vms["marker_ns"]).where(vms["status"] == "ok")
    vms["vf_open_ms"] = ns_to_ms(vms["open_ns"])
    vms["dma_map_ms"] = ns_to_ms(vms["dma_map_ns"])
    keys = list(zip(vms["session_id"], vms["label"]))
    vms["timeline_vf_open_ms"] = [opens.get(k, np.nan) for k in keys]
    vms["timeline_ram_maps"] = [maps.get(k, "no timeline log") for k in keys]
    return vms.reindex(columns=cols)


def qemu62_summary(run_dir: str | Path) -> pd.DataFrame:
    """Median start, VF open and DMA map of the stock and the patched QEMU 6.2.0."""
    df = qemu62_frame(run_dir)
    cols = ["qemu", "starts", "failed", "start_ms", "vf_open_ms", "dma_map_ms", "timeline_vf_open_ms"]
    if df.empty:
        return pd.DataFrame(columns=cols)
    g = df.groupby("qemu", sort=False)
    out = g[["start_ms", "vf_open_ms", "dma_map_ms", "timeline_vf_open_ms"]].median()
    out["starts"] = g.size()
    out["failed"] = g["status"].apply(lambda s: int((s != "ok").sum()))
    return out.reset_index().reindex(columns=cols)
