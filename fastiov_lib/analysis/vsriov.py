"""Analysis of the virtual SR-IOV host's results (`<run>/vsriov.jsonl`): tables, figures, claims.

Everything here reads only the run directory. The numbers come from emulated hardware (QEMU/TCG):
the kernel code paths are real, so shapes and ratios carry over to a real server; absolute times
do not (page zeroing and device emulation under TCG are 50-100x slower than on hardware).

What the notebooks call: `tables(run_dir)` (every table by name; 03_nic gets them from the back
end's `prepare_nic` as `vsriov_<name>`), `build_figures(run_dir)` (name -> Figure, only those the
run has data for), `claims_table(run_dir)`; the report calls `report_section(run_dir)`.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure

from fastiov_lib.analysis import vsriov_startup as startup  # also registers the V10-V13 metrics
from fastiov_lib.analysis.intervals import Estimate, exact, own_rounds, round_bootstrap
from fastiov_lib.report import claims
from fastiov_lib.report import figures as plots
from fastiov_lib.run.rundir import read_jsonl
from fastiov_lib.testbeds.vsriov.testbed import EMULATION_NOTE, VSRIOV_FILE

CLAIMS_FILE = claims.CLAIMS_DIR / "vsriov.yaml"
FIGURE_NAMES = ("vsriov-vf-enable", "vsriov-bind", "vsriov-vfio", "vsriov-parallel", "vsriov-dma", "vsriov-vm-start",
                "vsriov-devset", "vsriov-concurrent-start", "vsriov-qemu62")
NIC_STEPS = ("import", "prepare_vfs", "release_vfs")
FLR_WAIT_MS = 100.0  # the kernel's sleep after a function-level reset (PCIe: 100 ms)


def _ms(series: pd.Series) -> pd.Series:
    return pd.to_numeric(series, errors="coerce") / 1e6


def load_records(run_dir: str | Path) -> pd.DataFrame:
    """Every record of vsriov.jsonl as one DataFrame (columns: kind, session_id, device, ...)."""
    records, _report = read_jsonl(Path(run_dir) / VSRIOV_FILE)
    return pd.DataFrame(records)


def _kind(df: pd.DataFrame, kind: str, phase: str | None = None) -> pd.DataFrame:
    """Records of one kind (and, when given, of one phase of the guest's run: nic, bench, inner_qemu)."""
    if df.empty or "kind" not in df:
        return pd.DataFrame()
    keep = df["kind"] == kind
    if phase is not None and "phase" in df:
        keep &= df["phase"] == phase
    return df[keep].dropna(axis=1, how="all").reset_index(drop=True)


def sessions_frame(run_dir: str | Path) -> pd.DataFrame:
    """One row per guest boot: device, QEMU, kernel, status, boot and total seconds."""
    s = _kind(load_records(run_dir), "session")
    cols = ["session_id", "device", "qemu_version", "qemu_source", "kernel", "status", "error", "boot_s", "total_s"]
    return s.reindex(columns=cols)


def nic_steps_frame(run_dir: str | Path) -> pd.DataFrame:
    """The NIC steps fastiov_lib.hw.nic ran inside the guest: step, ok, ms, error."""
    n = _kind(load_records(run_dir), "nic_step")
    if n.empty:
        return pd.DataFrame(columns=["session_id", "step", "ok", "ms", "error"])
    n = n.reindex(columns=["session_id", "step", "ok", "ns", "error"])
    n["ms"] = _ms(n.pop("ns"))
    return n[["session_id", "step", "ok", "ms", "error"]]


def vf_enable_frame(run_dir: str | Path) -> pd.DataFrame:
    """Writes to sriov_numvfs: operation (enable 0->N / disable N->0), vfs, ms, errno."""
    v = _kind(load_records(run_dir), "numvfs", "bench")
    if v.empty:
        return pd.DataFrame(columns=["session_id", "device", "operation", "vfs", "ms", "errno"])
    v["operation"] = np.where(v["n"] > 0, "enable", "disable")
    v["vfs"] = np.where(v["n"] > 0, v["n"], v["from"]).astype(int)
    v["ms"] = _ms(v["ns"])
    return v[["session_id", "device", "operation", "vfs", "ms", "errno"]]


def bind_frame(run_dir: str | Path) -> pd.DataFrame:
    """Per-VF bind to vfio-pci (driver_override + drivers_probe): unbind, probe and total ms."""
    b = _kind(load_records(run_dir), "bind", "bench")
    if b.empty:
        return pd.DataFrame(columns=["session_id", "device", "round_n", "bdf", "driver", "errno", "unbind_ms",
                                     "probe_ms", "total_ms"])
    for col in ("unbind", "probe", "total"):
        b[f"{col}_ms"] = _ms(b[f"{col}_ns"])
    b["round_n"] = pd.to_numeric(b["round_n"]).astype("Int64")
    return b[["session_id", "device", "round_n", "bdf", "driver", "errno", "unbind_ms", "probe_ms", "total_ms"]]


def vfio_frame(run_dir: str | Path) -> pd.DataFrame:
    """VFIO open / reset / close per VF, long format: mode (sequential, parallel), n, operation, ms."""
    df = load_records(run_dir)
    rows: list[dict[str, Any]] = []
    for _, r in _kind(df, "vfio_open", "bench").iterrows():
        if pd.notna(r.get("device_fd_ns")):
            rows.append({"session_id": r["session_id"], "mode": "sequential", "n": r["round_n"], "bdf": r["bdf"],
                         "operation": "open", "ms": r["device_fd_ns"] / 1e6})
    for _, r in _kind(df, "vfio_reset", "bench").iterrows():
        if r.get("status") == "ok":
            rows.append({"session_id": r["session_id"], "mode": "sequential", "n": r["round_n"], "bdf": r["bdf"],
                         "operation": "reset", "ms": r["ns"] / 1e6})
    for _, r in _kind(df, "vfio_close", "bench").iterrows():
        rows.append({"session_id": r["session_id"], "mode": "sequential", "n": r["round_n"], "bdf": r["bdf"],
                     "operation": "close", "ms": r["ns"] / 1e6})
    for _, r in _kind(df, "parallel_vf", "bench").iterrows():
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
    par = _kind(df, "parallel", "bench")
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
    d = _kind(load_records(run_dir), "map_dma", "bench")
    if d.empty:
        return pd.DataFrame(columns=["session_id", "device", "mib", "memory", "map_ms", "unmap_ms", "populate_ms"])
    d = d[d["errno"] == 0].copy()
    d["mib"] = d["mib"].astype(int)
    for col in ("map", "unmap", "populate"):
        d[f"{col}_ms"] = _ms(d[f"{col}_ns"])
    return d[["session_id", "device", "mib", "memory", "map_ms", "unmap_ms", "populate_ms"]].reset_index(drop=True)


INNER_VARIANTS = ["plain", "vf", "prealloc", "prealloc+vf"]


def inner_qemu_frame(run_dir: str | Path) -> pd.DataFrame:
    """A QEMU started inside the guest (as Kata starts one): memory, variant (plain, vf, prealloc,
    prealloc+vf), repeat, exit code and wall ms from exec to exit (`-S`, then `quit`)."""
    q = _kind(load_records(run_dir), "inner_qemu", "inner_qemu")
    if q.empty:
        return pd.DataFrame(columns=["session_id", "mem_mb", "variant", "repeat", "rc", "ms"])
    q["ms"] = _ms(q["ns"])
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


# ------------------------------------------------------------------------------------------------
# Claim metrics (registered by name; each takes the run directory and returns a float or None)
# ------------------------------------------------------------------------------------------------

@claims.register_metric("vsriov_nic_steps_ok")
def nic_steps_ok(run_dir: Path) -> Estimate | None:
    """Fraction of the NIC steps (import, prepare_vfs, release_vfs) that succeeded in the guest."""
    n = nic_steps_frame(run_dir)
    n = n[n["step"].isin(NIC_STEPS)]
    return None if n.empty else exact(float(n["ok"].astype(bool).mean()), len(n))


@claims.register_metric("vsriov_vfs_bound_fraction")
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


@claims.register_metric("vsriov_dma_linear_r2")
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


@claims.register_metric("vsriov_dma_prefault_speedup")
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


@claims.register_metric("vsriov_vfio_ms")
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


@claims.register_metric("vsriov_parallel_ratio")
def parallel_ratio(run_dir: Path) -> float | None:
    """Wall time of all VFs opened+reset+closed in parallel over the same done one after another,
    at the largest N measured (None below N=2)."""
    p = parallel_frame(run_dir).dropna(subset=["ratio"])
    p = p[p["n"] >= 2]
    if p.empty:
        return None
    return float(p[p["n"] == p["n"].max()]["ratio"].median())


def _inner_qemu_at_max_memory(run_dir: Path) -> pd.DataFrame:
    q = inner_qemu_frame(run_dir)
    q = q[q["rc"] == 0]
    return q[q["mem_mb"] == q["mem_mb"].max()] if not q.empty else q


def vf_start_overhead_ms(run_dir: Path, prealloc: bool = False) -> float | None:
    """Median VM start with a VF minus without (ms), at the largest inner-VM memory measured."""
    q = _inner_qemu_at_max_memory(run_dir)
    base, with_vf = ("prealloc", "prealloc+vf") if prealloc else ("plain", "vf")
    med = q.groupby("variant")["ms"].median() if not q.empty else pd.Series(dtype=float)
    if base not in med or with_vf not in med:
        return None
    return float(med[with_vf] - med[base])


@claims.register_metric("vsriov_vf_start_overhead_ratio")
def vf_start_overhead_ratio(run_dir: Path) -> Estimate | None:
    """The VF's extra VM-start time with untouched memory over that with pre-allocated memory
    (medians at the largest inner-VM memory; every start is its own round)."""
    q = _inner_qemu_at_max_memory(run_dir)
    names = ("plain", "vf", "prealloc", "prealloc+vf")
    if q.empty or not set(names) <= set(q["variant"]):
        return None
    groups = {n: own_rounds(q.loc[q["variant"] == n, "ms"]) for n in names}

    def ratio(p: dict[str, np.ndarray]) -> float:
        untouched = np.median(p["vf"]) - np.median(p["plain"])
        prefaulted = np.median(p["prealloc+vf"]) - np.median(p["prealloc"])
        return float(untouched / prefaulted) if prefaulted > 0 else math.nan

    return round_bootstrap(groups, ratio)


def tables(run_dir: str | Path) -> dict[str, pd.DataFrame]:
    """Every vsriov table a notebook shows, by name (03_nic and 06_figures display them inline)."""
    run_dir = Path(run_dir)
    return {"sessions": sessions_frame(run_dir), "nic_steps": nic_steps_frame(run_dir),
            "micro_benchmarks": summary_table(run_dir), "devset_evidence": startup.devset_evidence(run_dir),
            "devset_vfs": startup.devset_vfs_frame(run_dir), "concurrent_starts": startup.vmstart_summary(run_dir),
            "qemu62": startup.qemu62_summary(run_dir), "claims": claims_table(run_dir)}


def claims_table(run_dir: str | Path) -> pd.DataFrame:
    """The virtual SR-IOV claims (data/claims/vsriov.yaml) checked on this run."""
    run_dir = Path(run_dir)
    rows = [claims.evaluate_claim(c, run_dir, "vsriov") for c in claims.load_claims([CLAIMS_FILE])]
    cols = ["claim", "role", "statement", "expected", "measured", "verdict", "why"]
    return pd.DataFrame(rows).reindex(columns=cols)


# ------------------------------------------------------------------------------------------------
# Figures
# ------------------------------------------------------------------------------------------------

def _caption(run_dir: Path) -> str:
    s = sessions_frame(run_dir)
    where = ""
    if not s.empty:
        last = s.iloc[-1]
        where = f"{last['device']} on QEMU {last['qemu_version']}, guest kernel {last['kernel']} · "
    return f"{where}run {Path(run_dir).name} · {EMULATION_NOTE}"


def _finish(fig: Figure, ax: plt.Axes, title: str, caption: str) -> Figure:
    ax.set_title(title)
    fig.text(0.01, -0.02, caption, fontsize=7, ha="left", va="top", wrap=True)
    fig.tight_layout()
    return fig


def plot_vf_enable(run_dir: Path) -> Figure | None:
    """VF enable (0 -> N) and disable (N -> 0) time vs N."""
    df = vf_enable_frame(run_dir)
    df = df[df["errno"] == 0]
    if df.empty:
        return None
    with plots.style():
        fig, ax = plt.subplots(figsize=plots.FIGSIZE)
        sns.lineplot(df, x="vfs", y="ms", hue="operation", style="operation", markers=True, ax=ax,
                     estimator="median", errorbar=None)
        ax.set(xlabel="number of VFs (write to sriov_numvfs)", ylabel="time (ms)")
        ax.set_xticks(sorted(df["vfs"].unique()))
        ax.set_ylim(bottom=0)
        return _finish(fig, ax, "Creating and removing VFs", _caption(run_dir))


def plot_bind(run_dir: Path) -> Figure | None:
    """Per-VF bind time to vfio-pci, by the number of VFs of the round."""
    df = bind_frame(run_dir)
    if df.empty:
        return None
    long = df.melt(id_vars=["round_n"], value_vars=["unbind_ms", "probe_ms", "total_ms"], var_name="phase",
                   value_name="ms")
    long["phase"] = long["phase"].str.removesuffix("_ms")
    with plots.style():
        fig, ax = plt.subplots(figsize=plots.FIGSIZE)
        sns.stripplot(long, x="round_n", y="ms", hue="phase", dodge=True, ax=ax)
        ax.set(xlabel="VFs enabled in the round", ylabel="time per VF (ms)")
        ax.set_ylim(bottom=0)
        return _finish(fig, ax, "Binding a VF to vfio-pci (driver_override + drivers_probe)", _caption(run_dir))


def plot_vfio(run_dir: Path) -> Figure | None:
    """VFIO open / reset / close per VF, sequential and all VFs in parallel, with the 100 ms FLR wait."""
    df = vfio_frame(run_dir)
    if df.empty:
        return None
    with plots.style():
        fig, ax = plt.subplots(figsize=plots.FIGSIZE)
        sns.boxplot(df, x="operation", y="ms", hue="mode", ax=ax, order=["open", "reset", "close"])
        ax.axhline(FLR_WAIT_MS, ls="--", color="0.3", lw=1)
        ax.annotate("FLR wait (100 ms)", (0.99, FLR_WAIT_MS), xycoords=("axes fraction", "data"), ha="right",
                    va="bottom", fontsize=8)
        ax.set(xlabel="VFIO operation on one VF", ylabel="time (ms)")
        ax.set_ylim(bottom=0)
        return _finish(fig, ax, "VFIO open, reset and close of a VF", _caption(run_dir))


def plot_parallel(run_dir: Path) -> Figure | None:
    """N VFs opened+reset+closed one after another vs all at once."""
    df = parallel_frame(run_dir)
    if df.empty:
        return None
    long = df.melt(id_vars=["n"], value_vars=["sequential_ms", "parallel_ms"], var_name="how", value_name="ms")
    long["how"] = long["how"].str.removesuffix("_ms")
    with plots.style():
        fig, ax = plt.subplots(figsize=plots.FIGSIZE)
        sns.lineplot(long, x="n", y="ms", hue="how", style="how", markers=True, ax=ax, errorbar=None)
        ax.set(xlabel="number of VFs", ylabel="total wall time (ms)")
        ax.set_xticks(sorted(df["n"].unique()))
        ax.set_ylim(bottom=0)
        return _finish(fig, ax, "Does the kernel serialise VF open/reset? (sequential vs parallel)", _caption(run_dir))


def plot_dma(run_dir: Path) -> Figure | None:
    """MAP_DMA time vs memory size, untouched vs pre-faulted memory (log scale)."""
    df = dma_frame(run_dir)
    if df.empty:
        return None
    with plots.style():
        fig, ax = plt.subplots(figsize=plots.FIGSIZE)
        sns.lineplot(df, x="mib", y="map_ms", hue="memory", style="memory", markers=True, ax=ax,
                     estimator="median", errorbar=None, hue_order=["untouched", "prefaulted"])
        ax.set_yscale("log")
        ax.set(xlabel="memory mapped for DMA (MiB)", ylabel="VFIO_IOMMU_MAP_DMA time (ms, log)")
        ax.set_xticks(sorted(df["mib"].unique()))
        return _finish(fig, ax, "DMA-mapping guest memory: untouched vs pre-faulted", _caption(run_dir))


def plot_inner_qemu(run_dir: Path) -> Figure | None:
    """VM start inside the guest, with and without a VF and pre-allocated memory."""
    df = inner_qemu_frame(run_dir)
    df = df[df["rc"] == 0]
    if df.empty:
        return None
    df = df.assign(memory=df["mem_mb"].astype(int).astype(str) + " MiB")
    with plots.style():
        fig, ax = plt.subplots(figsize=plots.FIGSIZE)
        sns.barplot(df, x="variant", y="ms", hue="memory", order=[v for v in INNER_VARIANTS if v in set(df["variant"])],
                    estimator="median", errorbar=None, ax=ax)
        sns.stripplot(df, x="variant", y="ms", hue="memory", dodge=True, palette="dark:0.2", size=3, legend=False, ax=ax,
                      order=[v for v in INNER_VARIANTS if v in set(df["variant"])])
        ax.set(xlabel="QEMU started in the guest (-S, then quit): extra options", ylabel="start to exit (ms)")
        return _finish(fig, ax, "A VM start with and without a VF (QEMU inside the guest)", _caption(run_dir))


def build_figures(run_dir: str | Path) -> dict[str, Figure]:
    """Every figure the run has data for, by name (vsriov-*)."""
    run_dir = Path(run_dir)
    caption = _caption(run_dir)
    makers = dict(zip(FIGURE_NAMES, (plot_vf_enable, plot_bind, plot_vfio, plot_parallel, plot_dma, plot_inner_qemu,
                                     lambda r: startup.plot_devset(r, caption),
                                     lambda r: startup.plot_vmstart(r, caption),
                                     lambda r: startup.plot_qemu62(r, caption))))
    out = {}
    for name, make in makers.items():
        fig = make(run_dir)
        if fig is not None:
            out[name] = fig
    return out


def save_figures(run_dir: str | Path) -> list[Path]:
    """Write every figure as PNG and PDF into <run>/figures/; returns the paths."""
    run_dir = Path(run_dir)
    paths: list[Path] = []
    for name, fig in build_figures(run_dir).items():
        paths += plots.save_figure(fig, run_dir / "figures", name)
        plt.close(fig)
    return paths


def _md_table(df: pd.DataFrame) -> str:
    if df.empty:
        return "(none)\n"
    cols = list(df.columns)

    def cell(v: Any) -> str:
        if isinstance(v, float):
            return "" if pd.isna(v) else f"{v:.1f}"
        return str(v).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def report_section(run_dir: str | Path) -> tuple[str, list[Path]]:
    """The report's section on the virtual SR-IOV host: markdown and the figure files it links."""
    run_dir = Path(run_dir)
    paths = save_figures(run_dir)
    nic = nic_steps_frame(run_dir)
    parts = [
        "## Virtual SR-IOV host (emulated hardware)\n",
        f"Measured in a QEMU/TCG guest with an emulated Intel IOMMU and an SR-IOV device: the Linux "
        f"kernel code paths (sriov_numvfs, vfio-pci binding, VFIO open/reset, MAP_DMA) are real, the "
        f"hardware is not. **{EMULATION_NOTE[0].upper() + EMULATION_NOTE[1:]}.**\n",
        "### Guest boots\n", _md_table(sessions_frame(run_dir).drop(columns=["error"])),
        "### NIC steps (fastiov_lib.hw.nic inside the guest)\n",
        _md_table(nic.drop(columns=["session_id"]) if not nic.empty else nic),
        "### Micro-benchmarks (medians)\n", _md_table(summary_table(run_dir)),
        "### The VFIO device-set lock, both behaviours\n",
        "`stock` is the guest's Debian 6.1 vfio-pci-core, which has the upstream fix \"vfio/pci: Separate "
        "SR-IOV VF dev_set\" (every VF its own device set); `shared` is the same source with that change "
        "reverted (VFs share their bus's set, as on the paper's 6.4-rc5 host). The kernel's evidence: how "
        "many parallel opens waited on a contended lock, and on how many distinct locks. On a real host, "
        "`host-check` reports which behaviour its kernel has (`kernel.vf-devset`): with the fix (Linux >= 6.16, "
        "Debian 6.1 >= 6.1.148) vanilla SR-IOV no longer serialises VF opens, so FastIOV's gain there comes "
        "from its other optimisations.\n",
        _md_table(startup.devset_evidence(run_dir)),
        _md_table(startup.devset_vfs_frame(run_dir).drop(columns=["session_id"])),
        "### Concurrent VF-backed VM starts (medians per VM)\n", _md_table(startup.vmstart_summary(run_dir)),
        "### QEMU 6.2.0: stock vs FastIOV's patch\n",
        "The patched QEMU skips the eager DMA map of `mem0`. Without the host module `/dev/dev_fastiov` "
        "nothing maps that RAM later: the VM's device must not do DMA (no lazy mapping). Its timeline "
        "log is parsed with the real host's parser. `fastiov-ram0` is the patched binary with its RAM under "
        "another name, which it maps eagerly: the skip's saving within one binary.\n",
        _md_table(startup.qemu62_summary(run_dir)),
        "Their claims (V1-V6, V8-V13) are in the report's claims table.\n",
    ]
    for p in paths:
        if p.suffix == ".png":
            parts.append(f"![{p.stem}](figures/{p.name})\n")
    return "\n".join(parts), paths
