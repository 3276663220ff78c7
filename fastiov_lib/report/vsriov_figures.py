"""Figures of the virtual SR-IOV host's runs (vsriov.jsonl): VF set-up, VFIO, DMA, VM starts, device sets, QEMU 6.2.0.

Each `plot_*` takes the run directory and returns a Figure, or None when the run has no data for it;
every caption names the device, QEMU and guest kernel, and says that the hardware was emulated.
"""
from __future__ import annotations

from pathlib import Path

import seaborn as sns
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from fastiov_lib.analysis.vsriov import (EMULATION_NOTE, INNER_VARIANTS, bind_frame, dma_frame, inner_qemu_frame,
                                         parallel_frame, sessions_frame, vf_enable_frame, vfio_frame)
from fastiov_lib.analysis.vsriov_startup import CONFIG_TEXT, DEVSET_TEXT, devset_frame, qemu62_frame, vmstart_frame
from fastiov_lib.report import figures as plots

FIGURE_NAMES = ("vsriov-vf-enable", "vsriov-bind", "vsriov-vfio", "vsriov-parallel", "vsriov-dma", "vsriov-vm-start",
                "vsriov-devset", "vsriov-concurrent-start", "vsriov-qemu62")
FLR_WAIT_MS = 100.0  # the kernel's sleep after a function-level reset (PCIe: 100 ms)


def figure_caption(run_dir: Path) -> str:
    """The line under every vsriov figure: device, QEMU, guest kernel, run, and that the hardware was emulated."""
    s = sessions_frame(run_dir)
    where = ""
    if not s.empty:
        last = s.iloc[-1]
        where = f"{last['device']} on QEMU {last['qemu_version']}, guest kernel {last['kernel']} · "
    return f"{where}run {Path(run_dir).name} · {EMULATION_NOTE}"


def _finish(fig: Figure, ax: Axes, title: str, caption: str) -> Figure:
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
        fig = plots.ReportFigure(figsize=plots.FIGSIZE)
        ax = fig.subplots()
        sns.lineplot(df, x="vfs", y="ms", hue="operation", style="operation", markers=True, ax=ax,
                     estimator="median", errorbar=None)
        ax.set(xlabel="number of VFs (write to sriov_numvfs)", ylabel="time (ms)")
        ax.set_xticks(sorted(df["vfs"].unique()))
        ax.set_ylim(bottom=0)
        return _finish(fig, ax, "Creating and removing VFs", figure_caption(run_dir))


def plot_bind(run_dir: Path) -> Figure | None:
    """Per-VF bind time to vfio-pci, by the number of VFs of the round."""
    df = bind_frame(run_dir)
    if df.empty:
        return None
    long = df.melt(id_vars=["round_n"], value_vars=["unbind_ms", "probe_ms", "total_ms"], var_name="phase",
                   value_name="ms")
    long["phase"] = long["phase"].str.removesuffix("_ms")
    with plots.style():
        fig = plots.ReportFigure(figsize=plots.FIGSIZE)
        ax = fig.subplots()
        sns.stripplot(long, x="round_n", y="ms", hue="phase", dodge=True, ax=ax)
        ax.set(xlabel="VFs enabled in the round", ylabel="time per VF (ms)")
        ax.set_ylim(bottom=0)
        return _finish(fig, ax, "Binding a VF to vfio-pci (driver_override + drivers_probe)", figure_caption(run_dir))


def plot_vfio(run_dir: Path) -> Figure | None:
    """VFIO open / reset / close per VF, sequential and all VFs in parallel, with the 100 ms FLR wait."""
    df = vfio_frame(run_dir)
    if df.empty:
        return None
    with plots.style():
        fig = plots.ReportFigure(figsize=plots.FIGSIZE)
        ax = fig.subplots()
        sns.boxplot(df, x="operation", y="ms", hue="mode", ax=ax, order=["open", "reset", "close"])
        ax.axhline(FLR_WAIT_MS, ls="--", color="0.3", lw=1)
        ax.annotate("FLR wait (100 ms)", (0.99, FLR_WAIT_MS), xycoords=("axes fraction", "data"), ha="right",
                    va="bottom", fontsize=8)
        ax.set(xlabel="VFIO operation on one VF", ylabel="time (ms)")
        ax.set_ylim(bottom=0)
        return _finish(fig, ax, "VFIO open, reset and close of a VF", figure_caption(run_dir))


def plot_parallel(run_dir: Path) -> Figure | None:
    """N VFs opened+reset+closed one after another vs all at once."""
    df = parallel_frame(run_dir)
    if df.empty:
        return None
    long = df.melt(id_vars=["n"], value_vars=["sequential_ms", "parallel_ms"], var_name="how", value_name="ms")
    long["how"] = long["how"].str.removesuffix("_ms")
    with plots.style():
        fig = plots.ReportFigure(figsize=plots.FIGSIZE)
        ax = fig.subplots()
        sns.lineplot(long, x="n", y="ms", hue="how", style="how", markers=True, ax=ax, errorbar=None)
        ax.set(xlabel="number of VFs", ylabel="total wall time (ms)")
        ax.set_xticks(sorted(df["n"].unique()))
        ax.set_ylim(bottom=0)
        return _finish(fig, ax, "Does the kernel serialise VF open/reset? (sequential vs parallel)", figure_caption(run_dir))


def plot_dma(run_dir: Path) -> Figure | None:
    """MAP_DMA time vs memory size, untouched vs pre-faulted memory (log scale)."""
    df = dma_frame(run_dir)
    if df.empty:
        return None
    with plots.style():
        fig = plots.ReportFigure(figsize=plots.FIGSIZE)
        ax = fig.subplots()
        sns.lineplot(df, x="mib", y="map_ms", hue="memory", style="memory", markers=True, ax=ax,
                     estimator="median", errorbar=None, hue_order=["untouched", "prefaulted"])
        ax.set_yscale("log")
        ax.set(xlabel="memory mapped for DMA (MiB)", ylabel="VFIO_IOMMU_MAP_DMA time (ms, log)")
        ax.set_xticks(sorted(df["mib"].unique()))
        return _finish(fig, ax, "DMA-mapping guest memory: untouched vs pre-faulted", figure_caption(run_dir))


def plot_inner_qemu(run_dir: Path) -> Figure | None:
    """VM start inside the guest, with and without a VF and pre-allocated memory."""
    df = inner_qemu_frame(run_dir)
    df = df[df["rc"] == 0]
    if df.empty:
        return None
    df = df.assign(memory=df["mem_mb"].astype(int).astype(str) + " MiB")
    with plots.style():
        fig = plots.ReportFigure(figsize=plots.FIGSIZE)
        ax = fig.subplots()
        plots.median_bars_with_points(ax, df, "variant", "ms", "memory",
                                      order=[v for v in INNER_VARIANTS if v in set(df["variant"])])
        ax.set(xlabel="QEMU started in the guest (-S, then quit): extra options", ylabel="start to exit (ms)")
        return _finish(fig, ax, "A VM start with and without a VF (QEMU inside the guest)", figure_caption(run_dir))


def plot_devset(run_dir: Path, caption: str = "") -> Figure | None:
    """Wall time of N VF device opens, one after another vs all at once, per device-set behaviour."""
    df = devset_frame(run_dir)
    df = df[df["failed"] == 0]
    if df.empty:
        return None
    df = df.assign(behaviour=df["devset"].map(lambda d: DEVSET_TEXT.get(d, d).replace(" (", "\n(")),
                   how=df["mode"].map({"seq": "one after another", "par": "all at once"}))
    with plots.style():
        fig = plots.ReportFigure(figsize=plots.FIGSIZE)
        ax = fig.subplots()
        plots.median_bars_with_points(ax, df, "behaviour", "open_wall_ms", "how")
        ax.set(xlabel=f"{int(df['n'].max())} VFs, guest kernel {df['kernel'].iloc[0]}",
               ylabel="wall time of the device opens (ms)")
        ax.set_title("The VFIO device-set lock: do VF opens serialise?")
        fig.text(0.01, -0.02, caption, fontsize=7, ha="left", va="top", wrap=True)
        fig.tight_layout()
        return fig


def plot_vmstart(run_dir: Path, caption: str = "") -> Figure | None:
    """Per-VM start latency vs the number of VMs started at once, vanilla-like vs FastIOV-like, with its parts."""
    df = vmstart_frame(run_dir)
    df = df[df["status"] == "ok"]
    if df.empty:
        return None
    df = df.assign(configuration=df["config"].map(lambda c: CONFIG_TEXT.get(c, c)))
    with plots.style():
        fig = plots.ReportFigure(figsize=(plots.FIGSIZE[0] * 1.6, plots.FIGSIZE[1]))
        axes = fig.subplots(1, 2)
        sns.lineplot(df, x="n", y="start_ms", hue="configuration", style="configuration", markers=True,
                     estimator="median", errorbar=None, ax=axes[0])
        sns.stripplot(df, x="n", y="start_ms", hue="configuration", native_scale=True, size=3, legend=False,
                      palette="dark:0.3", ax=axes[0])
        axes[0].set(xlabel="VMs started at once (one VF each)", ylabel="start latency per VM (ms)")
        axes[0].set_ylim(bottom=0)
        parts = df.melt(id_vars=["config", "n"], value_vars=["vf_open_ms", "lock_wait_ms", "dma_map_ms"],
                        var_name="part", value_name="ms").dropna()
        if not parts.empty:
            parts["part"] = parts["config"] + ": " + parts["part"].str.removesuffix("_ms").str.replace("_", " ")
            sns.lineplot(parts, x="n", y="ms", hue="part", style="part", markers=True, estimator="median",
                         errorbar=None, ax=axes[1])
        axes[1].set(xlabel="VMs started at once", ylabel="per VM, guest kernel trace (ms)")
        for ax in axes:
            ax.set_xticks(sorted(df["n"].unique()))
            ax.legend(fontsize=6)
        fig.suptitle("Concurrent VF-backed VM starts (QEMU inside the guest)")
        fig.text(0.01, -0.02, caption, fontsize=7, ha="left", va="top", wrap=True)
        fig.tight_layout()
        return fig


def plot_qemu62(run_dir: Path, caption: str = "") -> Figure | None:
    """QEMU 6.2.0 stock vs with FastIOV's patch: VM start with a VF and the DMA map of its RAM."""
    df = qemu62_frame(run_dir)
    df = df[df["status"] == "ok"]
    if df.empty:
        return None
    long = df.melt(id_vars=["qemu"], value_vars=["start_ms", "dma_map_ms", "vf_open_ms"], var_name="what",
                   value_name="ms").dropna()
    long["what"] = long["what"].map({"start_ms": "VM start", "dma_map_ms": "DMA map (kernel)",
                                     "vf_open_ms": "VF open (kernel)"})
    with plots.style():
        fig = plots.ReportFigure(figsize=plots.FIGSIZE)
        ax = fig.subplots()
        plots.median_bars_with_points(ax, long, "what", "ms", "qemu",
                                      hue_order=[q for q in ("stock", "fastiov") if q in set(long["qemu"])])
        ax.set(xlabel=f"one VF, {int(df['mem_mb'].iloc[0])} MiB guest RAM as backend mem0",
               ylabel="ms (bars: median of >= 5 starts)")
        ax.set_title("QEMU 6.2.0: stock vs FastIOV's patch (no eager DMA map of mem0)")
        fig.text(0.01, -0.02, caption, fontsize=7, ha="left", va="top", wrap=True)
        fig.tight_layout()
        return fig


def build_figures(run_dir: str | Path) -> dict[str, Figure]:
    """Every figure the run has data for, by name (vsriov-*)."""
    run_dir = Path(run_dir)
    text = figure_caption(run_dir)
    makers = dict(zip(FIGURE_NAMES, (plot_vf_enable, plot_bind, plot_vfio, plot_parallel, plot_dma, plot_inner_qemu,
                                     lambda r: plot_devset(r, text),
                                     lambda r: plot_vmstart(r, text),
                                     lambda r: plot_qemu62(r, text))))
    out = {}
    for name, make in makers.items():
        fig = make(run_dir)
        if fig is not None:
            out[name] = fig
    return out
