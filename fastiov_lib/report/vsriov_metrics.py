"""The metrics of the virtual SR-IOV claims (data/claims/vsriov.yaml), each from the run directory.

Each takes the run directory (and the claim's params) and returns a float, or None when the run did
not measure it. They are listed by name in METRICS (report.claims.metrics() gathers every list).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from fastiov_lib.analysis import vsriov_startup as startup
from fastiov_lib.analysis.vsriov import NIC_STEPS, dma_frame, inner_qemu_frame, nic_steps_frame, parallel_frame, vfio_frame
from fastiov_lib.run.rundir import VSRIOV_FILE, read_jsonl


def nic_steps_ok(run_dir: Path) -> float | None:
    """Fraction of the NIC steps (import, prepare_vfs, release_vfs) that succeeded in the guest."""
    n = nic_steps_frame(run_dir)
    n = n[n["step"].isin(NIC_STEPS)]
    return None if n.empty else float(n["ok"].astype(bool).mean())


def vfs_bound_fraction(run_dir: Path) -> float | None:
    """After prepare_vfs: fraction of the PF's VFs the guest kernel shows bound to vfio-pci."""
    records, _ = read_jsonl(Path(run_dir) / VSRIOV_FILE)
    seen = [r.get("report") for r in records if r.get("kind") == "nic_step" and r.get("step") == "observe_after_prepare"
            and isinstance(r.get("report"), dict)]
    vfs = [vf for rep in seen for vf in (rep.get("vfs") or {}).values()]
    if not vfs:
        return None
    return sum(1 for vf in vfs if vf.get("driver") == "vfio-pci") / len(vfs)


def _dma_medians(run_dir: Path, memory: str) -> pd.Series:
    d = dma_frame(run_dir)
    return d[d["memory"] == memory].groupby("mib")["map_ms"].median().sort_index()


def dma_linear_r2(run_dir: Path, memory: str = "untouched") -> float | None:
    """R^2 of a straight line through median MAP_DMA time vs size (None with fewer than 3 sizes)."""
    med = _dma_medians(run_dir, memory)
    if len(med) < 3:
        return None
    x, y = med.index.to_numpy(float), med.to_numpy(float)
    slope, intercept = np.polyfit(x, y, 1)
    resid = y - (slope * x + intercept)
    total = float(((y - y.mean()) ** 2).sum())
    return 1.0 - float((resid ** 2).sum()) / total if total > 0 else None


def dma_prefault_speedup(run_dir: Path, mib: int | str = "max") -> float | None:
    """Median MAP_DMA time of untouched over pre-faulted memory, at the largest (or a given) size."""
    un, pre = _dma_medians(run_dir, "untouched"), _dma_medians(run_dir, "prefaulted")
    common = un.index.intersection(pre.index)
    if common.empty:
        return None
    size = common.max() if mib == "max" else int(mib)
    if size not in common or pre[size] <= 0:
        return None
    return float(un[size] / pre[size])


def vfio_ms(run_dir: Path, operation: str = "open", mode: str = "sequential", stat: str = "median") -> float | None:
    """VFIO open / reset / close time of a VF (ms; median, min or max over the VFs measured)."""
    v = vfio_frame(run_dir)
    v = v[(v["operation"] == operation) & (v["mode"] == mode)]
    if stat not in ("median", "min", "max"):
        raise ValueError(f"vsriov_vfio_ms: stat must be median, min or max, got {stat!r}")
    return None if v.empty else float(getattr(v["ms"], stat)())


def parallel_ratio(run_dir: Path) -> float | None:
    """Wall time of all VFs opened+reset+closed in parallel over the same done one after another,
    at the largest N measured (None below N=2)."""
    p = parallel_frame(run_dir).dropna(subset=["ratio"])
    p = p[p["n"] >= 2]
    if p.empty:
        return None
    return float(p[p["n"] == p["n"].max()]["ratio"].median())


def vf_start_overhead_ms(run_dir: Path, prealloc: bool = False) -> float | None:
    """Median VM start with a VF minus without (ms), at the largest inner-VM memory measured."""
    q = inner_qemu_frame(run_dir)
    q = q[q["rc"] == 0]
    if q.empty:
        return None
    q = q[q["mem_mb"] == q["mem_mb"].max()]
    base, with_vf = ("prealloc", "prealloc+vf") if prealloc else ("plain", "vf")
    med = q.groupby("variant")["ms"].median()
    if base not in med or with_vf not in med:
        return None
    return float(med[with_vf] - med[base])


def vf_start_overhead_ratio(run_dir: Path) -> float | None:
    """The VF's extra VM-start time with untouched memory over that with pre-allocated memory."""
    untouched, prefaulted = vf_start_overhead_ms(run_dir), vf_start_overhead_ms(run_dir, prealloc=True)
    if untouched is None or prefaulted is None or prefaulted <= 0:
        return None
    return untouched / prefaulted


def devset_parallel_ratio(run_dir: Path, devset: str = "shared") -> float | None:
    """N parallel VF device opens' wall time over N sequential ones', with one device-set behaviour."""
    return startup.devset_ratio(run_dir, devset)


def vmstart_slope_ratio_metric(run_dir: Path) -> float | None:
    """Slope of per-VM start latency vs N, vanilla-like over FastIOV-like."""
    return startup.vmstart_slope_ratio(run_dir)


def qemu62_saving_metric(run_dir: Path) -> float | None:
    """The patched QEMU 6.2.0's start saving over stock's DMA-map time of guest RAM."""
    return startup.qemu62_saving_over_dma_map(run_dir)


METRICS = {
    "vsriov_nic_steps_ok": nic_steps_ok,
    "vsriov_vfs_bound_fraction": vfs_bound_fraction,
    "vsriov_dma_linear_r2": dma_linear_r2,
    "vsriov_dma_prefault_speedup": dma_prefault_speedup,
    "vsriov_vfio_ms": vfio_ms,
    "vsriov_parallel_ratio": parallel_ratio,
    "vsriov_vf_start_overhead_ms": vf_start_overhead_ms,
    "vsriov_vf_start_overhead_ratio": vf_start_overhead_ratio,
    "vsriov_devset_parallel_ratio": devset_parallel_ratio,
    "vsriov_vmstart_slope_ratio": vmstart_slope_ratio_metric,
    "vsriov_qemu62_saving_over_dma_map": qemu62_saving_metric,
}
