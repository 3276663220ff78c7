"""The metrics of the virtual SR-IOV claims (data/claims/vsriov.yaml), each from the run directory.

Each takes the run directory (and the claim's params) and returns an Estimate (analysis.intervals),
an exact value for counts of what the artifact did, or None when the run did not measure it. The
guest's sequential measurements (one VF open, one DMA map, one VM start on its own) are each their
own round; N VMs started together are one round. They are listed by name in METRICS
(report.claims.metrics() gathers every list).
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from fastiov_lib.analysis import vsriov_startup as startup
from fastiov_lib.analysis.intervals import Estimate, exact, own_rounds, round_bootstrap
from fastiov_lib.analysis.vsriov import NIC_STEPS, dma_frame, inner_qemu_frame, nic_steps_frame, vfio_frame
from fastiov_lib.run.rundir import VSRIOV_FILE, read_jsonl


def nic_steps_ok(run_dir: Path) -> Estimate | None:
    """Fraction of the NIC steps (import, prepare_vfs, release_vfs) that succeeded in the guest."""
    n = nic_steps_frame(run_dir)
    n = n[n["step"].isin(NIC_STEPS)]
    return None if n.empty else exact(float(n["ok"].astype(bool).mean()), len(n))


def vfs_bound_fraction(run_dir: Path) -> Estimate | None:
    """After prepare_vfs: fraction of the PF's VFs the guest kernel shows bound to vfio-pci."""
    records, _ = read_jsonl(Path(run_dir) / VSRIOV_FILE)
    seen = [r.get("report") for r in records if r.get("kind") == "nic_step" and r.get("step") == "observe_after_prepare"
            and isinstance(r.get("report"), dict)]
    vfs = [vf for rep in seen for vf in (rep.get("vfs") or {}).values()]
    if not vfs:
        return None
    return exact(sum(1 for vf in vfs if vf.get("driver") == "vfio-pci") / len(vfs), len(vfs))


def _r2(x: np.ndarray, y: np.ndarray) -> float:
    slope, intercept = np.polyfit(x, y, 1)
    total = float(((y - y.mean()) ** 2).sum())
    return 1.0 - float(((y - (slope * x + intercept)) ** 2).sum()) / total if total > 0 else math.nan


def dma_linear_r2(run_dir: Path, memory: str = "untouched") -> Estimate | None:
    """R^2 of a straight line through median MAP_DMA time vs size (None with fewer than 3 sizes);
    every map is its own round."""
    d = dma_frame(run_dir)
    d = d[d["memory"] == memory]
    sizes = sorted(d["mib"].unique())
    if len(sizes) < 3:
        return None
    groups = {str(m): own_rounds(d.loc[d["mib"] == m, "map_ms"]) for m in sizes}
    x = np.asarray(sizes, dtype=float)
    return round_bootstrap(groups, lambda p: _r2(x, np.array([np.median(p[str(m)]) for m in sizes])))


def dma_prefault_speedup(run_dir: Path, mib: int | str = "max") -> Estimate | None:
    """Median MAP_DMA time of untouched over pre-faulted memory, at the largest (or a given) size."""
    d = dma_frame(run_dir)
    common = set(d.loc[d["memory"] == "untouched", "mib"]) & set(d.loc[d["memory"] == "prefaulted", "mib"])
    if not common:
        return None
    size = max(common) if mib == "max" else int(mib)
    if size not in common:
        return None
    at = d[d["mib"] == size]
    groups = {m: own_rounds(at.loc[at["memory"] == m, "map_ms"]) for m in ("untouched", "prefaulted")}
    return round_bootstrap(groups, lambda p: float(np.median(p["untouched"]) / np.median(p["prefaulted"])))


def vfio_ms(run_dir: Path, operation: str = "open", mode: str = "sequential", stat: str = "median") -> Estimate | None:
    """VFIO open / reset / close time of a VF (ms; median, min or max over the VFs measured); every
    operation is its own round."""
    v = vfio_frame(run_dir)
    v = v[(v["operation"] == operation) & (v["mode"] == mode)]
    if stat not in ("median", "min", "max"):
        raise ValueError(f"vsriov_vfio_ms: stat must be median, min or max, got {stat!r}")
    if v.empty:
        return None
    fn = {"median": np.median, "min": np.min, "max": np.max}[stat]
    return round_bootstrap({"ops": own_rounds(v["ms"])}, lambda p: float(fn(p["ops"])))


def _inner_qemu_at_max_memory(run_dir: Path) -> pd.DataFrame:
    q = inner_qemu_frame(run_dir)
    q = q[q["rc"] == 0]
    return q[q["mem_mb"] == q["mem_mb"].max()] if not q.empty else q


def vf_start_overhead_difference(run_dir: Path) -> Estimate | None:
    """The VF's extra VM-start time with untouched memory minus that with pre-allocated memory (ms;
    medians at the largest inner-VM memory; every start is its own round)."""
    q = _inner_qemu_at_max_memory(run_dir)
    names = ("plain", "vf", "prealloc", "prealloc+vf")
    if q.empty or not set(names) <= set(q["variant"]):
        return None
    groups = {n: own_rounds(q.loc[q["variant"] == n, "ms"]) for n in names}

    def difference(p: dict[str, np.ndarray]) -> float:
        untouched = np.median(p["vf"]) - np.median(p["plain"])
        prefaulted = np.median(p["prealloc+vf"]) - np.median(p["prealloc"])
        return float(untouched - prefaulted)

    return round_bootstrap(groups, difference)


def devset_parallel_ratio(run_dir: Path, devset: str = "shared") -> Estimate | None:
    """N parallel VF device opens' wall time over N sequential ones' (medians over repeats), with one
    device-set behaviour; every repeat of either mode is its own round."""
    df = startup.devset_frame(run_dir)
    df = df[(df["devset"] == devset) & (df["failed"] == 0)]
    par, seq = df[df["mode"] == "par"]["open_wall_ms"], df[df["mode"] == "seq"]["open_wall_ms"]
    if par.empty or seq.empty or not seq.median():
        return None
    return round_bootstrap({"par": own_rounds(par), "seq": own_rounds(seq)},
                           lambda p: float(np.median(p["par"]) / np.median(p["seq"])))


def _slope(x: np.ndarray, y: np.ndarray) -> float:
    xc = x - x.mean()
    return float(xc @ (y - y.mean()) / (xc @ xc))


def vf_open_slope_difference(run_dir: Path, high: str = "vanilla", low: str = "fastiov") -> Estimate | None:
    """Least-squares slope of the mean per-VM VF open against N, `high` minus `low` configuration
    (ms per added VM), with an interval from resampled concurrent starts (each start of N VMs a round)."""
    rounds = startup.vf_open_rounds(run_dir)
    ns = sorted({n for (c, n) in rounds if c == high} & {n for (c, n) in rounds if c == low})
    if len(ns) < 2:
        return None
    groups = {f"{c}@{n}": rounds[(c, n)] for c in (high, low) for n in ns}
    x = np.asarray(ns, dtype=float)

    def diff(p: dict[str, np.ndarray]) -> float:
        return (_slope(x, np.array([p[f"{high}@{n}"].mean() for n in ns]))
                - _slope(x, np.array([p[f"{low}@{n}"].mean() for n in ns])))

    return round_bootstrap(groups, diff)


def qemu62_saving_metric(run_dir: Path) -> Estimate | None:
    """The patched QEMU 6.2.0's start saving over stock's DMA-map time of guest RAM (medians); every
    start is its own round."""
    df = startup.qemu62_frame(run_dir)
    df = df[df["status"] == "ok"]
    stock, patched = df[df["qemu"] == "stock"], df[df["qemu"] == "fastiov"]
    if stock.empty or patched.empty or not stock["dma_map_ms"].median() > 0:
        return None
    groups = {"stock": own_rounds(stock["start_ms"]), "fastiov": own_rounds(patched["start_ms"]),
              "map": own_rounds(stock["dma_map_ms"])}
    return round_bootstrap(groups, lambda p: float((np.median(p["stock"]) - np.median(p["fastiov"]))
                                                   / np.median(p["map"])))


METRICS = {
    "vsriov_nic_steps_ok": nic_steps_ok,
    "vsriov_vfs_bound_fraction": vfs_bound_fraction,
    "vsriov_dma_linear_r2": dma_linear_r2,
    "vsriov_dma_prefault_speedup": dma_prefault_speedup,
    "vsriov_vfio_ms": vfio_ms,
    "vsriov_vf_start_overhead_difference": vf_start_overhead_difference,
    "vsriov_devset_parallel_ratio": devset_parallel_ratio,
    "vsriov_vf_open_slope_difference": vf_open_slope_difference,
    "vsriov_qemu62_saving_over_dma_map": qemu62_saving_metric,
}
