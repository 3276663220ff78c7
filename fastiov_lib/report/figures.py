"""Figures (seaborn): one function per paper figure; each takes a DataFrame and returns a Figure.

Every figure has axis labels with units and a caption line naming the testbed and run, and looks
the same inline in JupyterLab and in the PDF (fixed size, one style, colour-blind palette).
"""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Sequence

import io
import zlib

import matplotlib
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from fastiov_lib.analysis import stats as analysis
from fastiov_lib.analysis.samples import enough, min_samples, stat_or_nan

FULL_WIDTH = 7.0  # inches: a full-width (two-column) figure of a paper
COLUMN_WIDTH = 3.3  # inches: one column of a two-column paper
FIGSIZE = (FULL_WIDTH, 4.2)
MIN_FONT_PT = 7.0  # the smallest text a figure may have at either width
EXPERIMENT_ORDER = ["startup", "ablation", "app"]
# variants the paper names, in the order the paper discusses them; others follow alphabetically
KNOWN_ORDER = ["none", "no-network", "bridge", "ipvtap", "macvlan", "ipvlan", "hostdev", "sriov",
               "vanilla", "original", "fastiov", "only-devset", "only-skip-dma", "only-guest-kernel",
               "only-async-driver"]
# p99 needs enough samples to mean something (analysis.samples); below it the band reaches to the max and says so
MIN_SAMPLES_FOR_P99 = min_samples("p99")

_CB = sns.color_palette("colorblind", 10)
# One colour per variant for every figure of every run: a variant keeps its colour whatever else
# the run holds (no-network variants grey, the local modes cool, SR-IOV warm, FastIOV red).
VARIANT_COLOURS: dict[str, tuple[float, float, float]] = {
    "none": _CB[7], "no-network": _CB[7],
    "bridge": _CB[0], "ipvtap": _CB[9], "macvlan": _CB[4], "ipvlan": _CB[9],
    "hostdev": _CB[2], "sriov": _CB[5],
    "vanilla": _CB[1], "original": _CB[6], "fastiov": _CB[3],
    "only-devset": sns.color_palette("dark", 10)[3], "only-skip-dma": sns.color_palette("pastel", 10)[3],
    "only-guest-kernel": sns.color_palette("muted", 10)[8], "only-async-driver": sns.color_palette("dark", 10)[1],
}
# unknown variant names: a colour from this list chosen by a hash of the name (stable across runs)
_FALLBACK = [c for c in sns.color_palette("dark", 10) + sns.color_palette("pastel", 10)
             if c not in VARIANT_COLOURS.values()]


@contextmanager
def style() -> Iterator[None]:
    """The artifact's one plotting style (scoped: does not change the caller's rcParams)."""
    with sns.axes_style("whitegrid"), sns.plotting_context("paper", font_scale=1.0), \
            matplotlib.rc_context({"figure.dpi": 110, "savefig.dpi": 200, "pdf.fonttype": 42,
                                   "axes.titleweight": "bold", "legend.frameon": False,
                                   "xtick.labelsize": 8, "ytick.labelsize": 8, "axes.labelsize": 8.5,
                                   "axes.titlesize": 9, "legend.fontsize": 7.5, "legend.title_fontsize": 7.5,
                                   "figure.titlesize": 10}):
        yield


def variant_order(variants: Sequence[str]) -> list[str]:
    """Variants in a stable order (the paper's order first, then alphabetical)."""
    uniq = list(dict.fromkeys(str(v) for v in variants))
    known = [v for v in KNOWN_ORDER if v in uniq]
    return known + sorted(v for v in uniq if v not in known)


def variant_colour(variant: str) -> tuple[float, float, float]:
    """The fixed colour of a variant (VARIANT_COLOURS; unknown names get a stable hashed fallback)."""
    if variant in VARIANT_COLOURS:
        return VARIANT_COLOURS[variant]
    return _FALLBACK[zlib.crc32(variant.encode()) % len(_FALLBACK)]


def variant_palette(variants: Sequence[str]) -> dict[str, tuple[float, float, float]]:
    """Each variant's fixed colour (the same in every figure and every run)."""
    return {v: variant_colour(v) for v in variant_order(variants)}


class ReportFigure(Figure):
    """A matplotlib Figure that shows itself as PNG in Jupyter (it is made without pyplot)."""

    def _repr_png_(self) -> bytes:
        buf = io.BytesIO()
        self.savefig(buf, format="png", bbox_inches="tight")
        return buf.getvalue()


def _new_figure(ncols: int = 1, width: float | None = None, share: bool = False,
                share_y: bool | None = None) -> tuple[Figure, np.ndarray]:
    """A figure with `ncols` panels: at full width one row up to 3, then rows of 3 (4 panels = 2 x 2);
    at column width (<= 3.5 in) one panel per row up to 2 panels, then rows of 2."""
    w = width or FIGSIZE[0]
    narrow = w <= 3.5
    cols = _panels_per_row(w, ncols)
    rows = -(-ncols // cols)
    if narrow:
        h = 2.6 if rows == 1 else (2.1 if cols == 1 else 1.9) * rows + 0.6
    else:
        h = FIGSIZE[1] if rows == 1 else 3.0 * rows + 0.6
    # not through pyplot: no global figure registry, nothing shown twice inline, nothing to close
    fig = ReportFigure(figsize=(w, h), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False, sharex=share,
                        sharey=share if share_y is None else share_y).ravel()
    for extra in axes[ncols:]:
        extra.set_visible(False)
    return fig, axes[:ncols]


def _panels_per_row(width: float, n: int) -> int:
    if width <= 3.5:
        return 1 if n <= 2 else 2
    return n if n <= 3 else (2 if n == 4 else 3)


def _cols(fig: Figure, n: int) -> int:
    """Panels per row of a figure made by _new_figure."""
    return _panels_per_row(fig.get_figwidth(), n)


def _caption(fig: Figure, caption: str) -> None:
    if caption:
        fig.get_layout_engine().set(h_pad=0.08)
        fig.supxlabel(caption, fontsize=7, color="0.35", fontweight="normal", wrap=True)


def _empty(fig: Figure, ax: Axes, message: str, caption: str, title: str) -> Figure:
    ax.set_axis_off()
    ax.text(0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes, fontsize=9, color="0.3",
            wrap=True)
    ax.set_title(title)
    _caption(fig, caption)
    return fig


def _maybe_log_x(ax: Axes, levels: Sequence[int]) -> None:
    levels = sorted(set(int(x) for x in levels))
    if levels and levels[0] > 0 and levels[-1] / levels[0] >= 10:
        ax.set_xscale("log")
    ax.set_xticks(levels)
    ax.set_xticklabels([str(x) for x in levels])
    ax.minorticks_off()


def startup_vs_concurrency(pods: pd.DataFrame, caption: str = "", value: str = "startup_ms",
                           experiment: str | None = "startup", width: float = FULL_WIDTH) -> Figure:
    """Startup latency vs concurrency per variant: median line, band up to the p99 (dashed) where every
    level has >= MIN_SAMPLES_FOR_P99 pods, else up to the max (dotted, labelled so); n per point.
    A level with fewer pods than a median needs shows its pods as points instead."""
    with style():
        fig, (ax,) = _new_figure(width=width)
        df = pods if experiment is None or experiment not in set(pods.get("experiment", [])) \
            else pods[pods["experiment"] == experiment]
        s = analysis.summarise(df, value=value, by=("variant", "concurrency"))
        s = s[s["n"] > 0]
        title = "Pod startup latency vs concurrency"
        if s.empty:
            return _empty(fig, ax, "no successful pods to plot", caption, title)
        upper = "p99" if int(s.loc[s["p50_ms"].notna(), "n"].min() if s["p50_ms"].notna().any() else 0) \
            >= MIN_SAMPLES_FOR_P99 else "max"
        pal = variant_palette(s["variant"])
        ok = analysis.ok_values(df, value)
        few_seen = False
        for v in variant_order(s["variant"]):
            g = s[s["variant"] == v].sort_values("concurrency")
            c = pal[v]
            line = g[g["p50_ms"].notna()]
            if len(line):
                ax.plot(line["concurrency"], line["p50_ms"], marker="o", ms=4, color=c, label=f"{v} median")
                ax.fill_between(line["concurrency"], line["p50_ms"], line[f"{upper}_ms"], color=c, alpha=0.18,
                                linewidth=0)
                ax.plot(line["concurrency"], line[f"{upper}_ms"], ls="--" if upper == "p99" else ":", lw=1, color=c,
                        label=f"{v} {upper}")
            for x, n in zip(g.loc[g["p50_ms"].isna(), "concurrency"], g.loc[g["p50_ms"].isna(), "n"]):
                pts = ok.loc[(ok["variant"] == v) & (ok["concurrency"] == x), value].to_numpy(float)
                ax.scatter(np.full(len(pts), x), pts, s=10, color=c, marker="x", linewidths=0.8,
                           label=f"{v} pods (too few for a median)" if not few_seen else None)
                few_seen = True
            for x, y, n in zip(g["concurrency"], g["p50_ms"].fillna(g["max_ms"]), g["n"]):
                ax.annotate(f"n={int(n)}", (x, y), textcoords="offset points", xytext=(3, -9), fontsize=7,
                            color=c)
        _maybe_log_x(ax, s["concurrency"])
        ax.set_xlabel("concurrent pods")
        ax.set_ylabel("startup latency (ms)")
        ax.set_ylim(bottom=0)
        ax.set_title(title if width > 3.5 else "Startup vs concurrency")
        why = (f"band: median to p99" if upper == "p99"
               else f"band: median to max (p99 needs >= {MIN_SAMPLES_FOR_P99} pods per point)")
        if width > 3.5:
            ax.legend(title=why, ncols=2 if s["variant"].nunique() > 2 else 1, loc="upper left")
        else:  # below the panel: inside it would hide the lines at one column
            fig.legend(*ax.get_legend_handles_labels(), title=why, ncols=2, loc="outside lower center")
        _caption(fig, caption)
        return fig


def cdf_per_concurrency(pods: pd.DataFrame, caption: str = "", value: str = "startup_ms",
                        variants: Sequence[str] | None = None, experiment: str | None = None,
                        width: float = FULL_WIDTH) -> Figure:
    """Empirical CDF of startup latency (log x), one line per concurrency level (distinct colours),
    one panel per variant."""
    df = pods if experiment is None else pods[pods["experiment"] == experiment]
    e = analysis.ecdf(df, value=value, by=("variant", "concurrency"))
    chosen = variant_order(variants if variants is not None else e["variant"].unique())[:4]
    with style():
        fig, axes = _new_figure(max(len(chosen), 1), width=width, share=True)
        title = "CDF of pod startup latency"
        if e.empty or not chosen:
            return _empty(fig, axes[0], "no successful pods to plot", caption, title)
        levels = sorted(e["concurrency"].unique())
        # qualitative colours: neighbouring levels must not look alike
        level_colours = sns.color_palette("colorblind", 10) + sns.color_palette("dark", 10)
        pal = {c: level_colours[i % len(level_colours)] for i, c in enumerate(levels)}
        styles = ["-", "--", "-.", ":"]
        for ax, v in zip(axes, chosen):
            g = e[e["variant"] == v]
            for i, c in enumerate(levels):
                gc = g[g["concurrency"] == c]
                if len(gc):
                    ax.step(np.r_[gc[value].iloc[0], gc[value]], np.r_[0, gc["ecdf"]], where="post",
                            color=pal[c], ls=styles[i % len(styles)], lw=1.3, label=str(c))
            ax.set_title(v)
            ax.set_ylim(0, 1.02)
            ax.set_xscale("log")
        positive = e.loc[e[value] > 0, value]
        if len(positive):  # limits once all panels are drawn (the panels share the x axis)
            axes[0].set_xlim(float(positive.min()) * 0.8, float(positive.max()) * 1.25)
        cols = _cols(fig, len(axes))
        for i, ax in enumerate(axes):
            if i >= len(axes) - cols:
                ax.set_xlabel("startup latency (ms), log scale")
            if i % cols == 0:
                ax.set_ylabel("fraction of pods")
        handles, labels = axes[0].get_legend_handles_labels()
        for ax in axes[1:]:
            for h, lab in zip(*ax.get_legend_handles_labels()):
                if lab not in labels:
                    handles.append(h)
                    labels.append(lab)
        order = sorted(range(len(labels)), key=lambda k: int(labels[k]))
        fig.legend([handles[k] for k in order], [labels[k] for k in order], title="concurrent pods",
                   loc="outside right upper" if width > 3.5 else "outside lower center",
                   ncols=1 if width > 3.5 else min(len(labels), 5))
        fig.suptitle(title, fontweight="bold")
        _caption(fig, caption)
        return fig


def stage_breakdown(breakdown: pd.DataFrame, caption: str = "", source: str = "",
                    max_stages: int = 8, width: float = FULL_WIDTH) -> Figure:
    """Stacked bars of the mean time per pod in each stage: one panel per (experiment,) variant, one
    bar per concurrency level, n pods above each bar.

    `breakdown` is analysis.breakdown()/phase_breakdown()/stage_breakdown() output. Only stages
    that are not nested in another (column `nested`) are stacked, so a bar never counts a time
    twice; with more than `max_stages` stages the smallest are merged into "other". A level with
    fewer pods than a bar needs shows each stage's mean as a point, not a bar.
    """
    title = "Where startup time goes"
    b = breakdown.copy()
    if "nested" in b.columns:
        b = b[~b["nested"].astype(bool)]
    if b.empty:
        with style():
            fig, (ax,) = _new_figure(width=width)
            return _empty(fig, ax, "no stage or phase records", caption, title)
    if "experiment" not in b.columns:
        b["experiment"] = ""
    if "pods" not in b.columns:
        b["pods"] = np.nan
    many_exp = b["experiment"].nunique() > 1
    top = b.groupby("stage")["mean_ms"].sum().sort_values(ascending=False)
    keep = set(top.index[:max_stages])
    b.loc[~b["stage"].isin(keep), "stage"] = "other"
    stage_order = list(b.sort_values("order").drop_duplicates("stage")["stage"])
    if "other" in stage_order:
        stage_order = [st for st in stage_order if st != "other"] + ["other"]
    vorder = {v: i for i, v in enumerate(variant_order(b["variant"].astype(str)))}
    eorder = {e: i for i, e in enumerate(EXPERIMENT_ORDER)}
    panels = (b[["experiment", "variant"]].drop_duplicates()
              .assign(vo=lambda d: d["variant"].astype(str).map(vorder),
                      eo=lambda d: d["experiment"].map(eorder).fillna(len(eorder)))
              .sort_values(["eo", "experiment", "vo"])[["experiment", "variant"]].itertuples(index=False))
    panels = list(panels)[:6]
    colours = dict(zip(stage_order, sns.color_palette("Set2", len(stage_order))))
    if "other" in colours:
        colours["other"] = (0.75, 0.75, 0.75)
    few_seen = False
    with style():
        # panels share the time axis; each has its own concurrency levels
        fig, axes = _new_figure(len(panels), width=width, share=False, share_y=True)
        cols = _cols(fig, len(axes))
        for i, (ax, (exp, variant)) in enumerate(zip(axes, panels)):
            g = b[(b["experiment"] == exp) & (b["variant"] == variant)]
            table = g.pivot_table(index="concurrency", columns="stage", values="mean_ms", aggfunc="sum") \
                .reindex(columns=stage_order).fillna(0.0).sort_index()
            n = g.groupby("concurrency")["pods"].max().reindex(table.index)
            x = np.arange(len(table))
            full = np.array([enough(k, "bar") if pd.notna(k) else True for k in n])
            bottom = np.zeros(len(table))
            for stage in stage_order:
                if table[stage].any():
                    h = table[stage].to_numpy()
                    ax.bar(x[full], h[full], bottom=bottom[full], color=colours[stage], label=stage,
                           edgecolor="white", linewidth=0.5, width=0.7)
                    if (~full).any():  # too few pods for a bar: the stage's mean per pod as a point
                        ax.scatter(x[~full], (bottom + h)[~full], color=colours[stage], s=14, zorder=3,
                                   edgecolors="0.2", linewidths=0.4, label=None if full.any() else stage)
                        few_seen = True
                    bottom += h
            for xi, top_y, k in zip(x, bottom, n):
                if pd.notna(k):
                    ax.annotate(f"n={int(k)}", (xi, top_y), textcoords="offset points", xytext=(0, 2), ha="center",
                                fontsize=7, color="0.3")
            ax.set_xticks(x)
            ax.set_xticklabels([str(c) for c in table.index])
            pad = max(0.0, (3 - len(table)) / 2)  # one or two bars stay bar-sized, centred
            ax.set_xlim(-0.5 - pad, len(table) - 0.5 + pad)
            ax.grid(axis="x", visible=False)
            ax.set_title(f"{exp} · {variant}" if many_exp else str(variant))
            ax.set_xlabel("concurrent pods")
            if i % cols == 0:
                ax.set_ylabel("mean time per pod (ms)")
        seen: dict[str, Any] = {}
        for ax in axes:
            for h, lab in zip(*ax.get_legend_handles_labels()):
                seen.setdefault(lab, h)
        labels = [st for st in stage_order if st in seen]
        fig.legend([seen[lab] for lab in labels], labels,
                   title=f"points: fewer than {min_samples('bar')} pods" if few_seen else None,
                   loc="outside right upper" if width > 3.5 else "outside lower center",
                   ncols=1 if width > 3.5 else 2)
        fig.suptitle(title, fontweight="bold")
        if source:
            caption = f"{caption} · from {source}, stages nested in another left out" if caption \
                else f"from {source}, stages nested in another left out"
        _caption(fig, caption)
        return fig


def ablation_bars(comparison: pd.DataFrame, caption: str = "", width: float = FULL_WIDTH) -> Figure:
    """Bars: each variant's effect vs the baseline per concurrency, with whiskers of the 95% interval from
    resampled rounds (hatched, no whisker, where a level has too few rounds for one).

    `comparison` is analysis.compare_variants() output: a reduction or increase is drawn in %,
    a difference in ms.
    """
    with style():
        fig, (ax,) = _new_figure(width=width)
        if comparison.empty:
            return _empty(fig, ax, "needs a baseline and at least one other variant\nmeasured at the same concurrency",
                          caption, "Effect of each variant vs the baseline")
        c = comparison.copy()
        kind, stat, base = c["kind"].iloc[0], c["stat"].iloc[0], c["baseline"].iloc[0]
        scale = 100.0 if kind in ("reduction", "increase") else 1.0
        unit = "%" if scale == 100.0 else "ms"
        label = {"reduction": f"{stat} startup reduction vs {base} ({unit})",
                 "increase": f"{stat} startup increase vs {base} ({unit})",
                 "difference": f"{stat} startup added over {base} ({unit})"}[kind]
        variants = variant_order(c["variant"])
        levels = sorted(c["concurrency"].unique())
        pal = variant_palette(list(variants))
        no_ci = False
        fig_width = width
        width = 0.8 / max(len(variants), 1)
        for i, v in enumerate(variants):
            g = c[c["variant"] == v].set_index("concurrency").reindex(levels)
            x = np.arange(len(levels)) + (i - (len(variants) - 1) / 2) * width
            y = g["value"].to_numpy() * scale
            err = np.vstack([y - g["ci_low"].to_numpy() * scale, g["ci_high"].to_numpy() * scale - y])
            has_ci = np.isfinite(err).all(axis=0)
            ax.bar(x, y, width=width * 0.95, color=pal[v], label=v,
                   hatch=["" if h else "///" for h in has_ci], edgecolor="white", linewidth=0)
            ax.errorbar(x[has_ci], y[has_ci], yerr=np.abs(err[:, has_ci]), fmt="none", ecolor="0.2", capsize=3, lw=1)
            no_ci = no_ci or not has_ci.all()
        ax.axhline(0, color="0.3", lw=0.8)
        ax.grid(axis="x", visible=False)
        ax.set_xticks(np.arange(len(levels)))
        rounds = c.groupby("concurrency")[["rounds_baseline", "rounds_variant"]].min().min(axis=1) \
            if "rounds_variant" in c.columns else pd.Series(dtype=float)
        ax.set_xticklabels([f"{x}\n{int(rounds[x])} rounds" if x in rounds.index else str(x) for x in levels])
        ax.set_xlabel("concurrent pods (fewest rounds of a variant)")
        ax.set_ylabel(label)
        ax.set_title(f"Effect of each variant vs {base} (95% CI, rounds resampled)" if fig_width > 3.5
                     else f"Effect vs {base} (95% CI)")
        title = "hatched: no interval (< 3 rounds)" if no_ci else None
        if fig_width > 3.5:
            ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), title=title)
        else:
            ax.legend(loc="upper left", ncols=2, title=title)
        _caption(fig, caption)
        return fig


def app_completion(pods: pd.DataFrame, caption: str = "", width: float = FULL_WIDTH) -> Figure:
    """App completion time (release -> container exit): one panel per concurrency level, the network
    modes (variants) side by side, every pod as a dot, the mean (diamond) and p99 (bar) marked."""
    df = pods[(pods["experiment"] == "app") & (pods["status"] == "ok")].dropna(subset=["app_completion_ms"]) \
        if "experiment" in pods.columns else pods.iloc[0:0]
    title = "App completion time (release to container exit)"
    if df.empty:
        with style():
            fig, (ax,) = _new_figure(width=width)
            return _empty(fig, ax, "no completed app pods in this run", caption, title)
    df = df.assign(app=df["app"].replace("", "app") if "app" in df.columns else "app")
    levels = sorted(int(c) for c in df["concurrency"].unique())
    order = variant_order(df["variant"])
    pal = variant_palette(order)
    apps = sorted(df["app"].unique())
    rng = np.random.default_rng(0)  # the same run is drawn the same way
    with style():
        fig, axes = _new_figure(len(levels), width=width, share_y=True)
        for ax, level in zip(axes, levels):
            at = df[df["concurrency"] == level]
            slot = 0
            ticks, ticklabels = [], []
            for app in apps:
                for v in order:
                    x = at.loc[(at["app"] == app) & (at["variant"] == v), "app_completion_ms"].to_numpy(float)
                    if len(x):
                        jitter = rng.uniform(-0.15, 0.15, len(x))
                        ax.scatter(slot + jitter, x, s=8, color=pal[v], alpha=0.55, linewidths=0)
                        if enough(len(x), "mean"):  # below the minimum only the pods themselves
                            ax.scatter([slot], [x.mean()], marker="D", s=28, color=pal[v], edgecolors="0.1",
                                       linewidths=0.6, zorder=3, label="mean")
                        if enough(len(x), "p99"):
                            ax.hlines(stat_or_nan(x, "p99"), slot - 0.3, slot + 0.3, color="0.1", lw=1.4,
                                      zorder=3, label="p99")
                        ticks.append(slot)
                        ticklabels.append(v if len(apps) == 1 else f"{app}\n{v}")
                        slot += 1
                slot += 0.5
            ax.set_xticks(ticks)
            ax.set_xticklabels(ticklabels)
            ax.set_xlim(-0.7, (max(ticks) if ticks else 0) + 0.7)
            ax.grid(axis="x", visible=False)
            ax.set_title(f"{level} concurrent pods")
        # once every panel is drawn (they share the time axis)
        axes[0].set_ylim(0, float(df["app_completion_ms"].max()) * 1.08)
        cols = _cols(fig, len(axes))
        for i, ax in enumerate(axes):
            if i % cols == 0:
                ax.set_ylabel("completion time (ms)")
        handles, labels = axes[0].get_legend_handles_labels()
        keep = {lab: h for h, lab in zip(handles, labels)}
        axes[0].legend([keep[k] for k in ("mean", "p99") if k in keep], [k for k in ("mean", "p99") if k in keep],
                       loc="lower right")
        fig.suptitle(title if width > 3.5 else "App completion time", fontweight="bold")
        _caption(fig, caption)
        return fig


def median_bars_with_points(ax: Axes, df: pd.DataFrame, x: str, y: str, hue: str,
                            order: Sequence[str] | None = None, hue_order: Sequence[str] | None = None) -> bool:
    """Every sample as a point, and the median of each (x, hue) group as a bar only where the group
    has enough samples for a median (analysis.samples: 5). Returns True when some group has too few."""
    med = df.groupby([x, hue], sort=False)[y].agg(["median", "size"]).reset_index()
    few = bool((med["size"] < min_samples("median")).any())
    med["median"] = med["median"].where(med["size"] >= min_samples("median"))
    sns.barplot(med, x=x, y="median", hue=hue, order=order, hue_order=hue_order, errorbar=None, ax=ax, alpha=0.85)
    sns.stripplot(df, x=x, y=y, hue=hue, order=order, hue_order=hue_order, dodge=True, size=4, edgecolor="0.15",
                  linewidth=0.6, legend=False, ax=ax)  # coloured as the bars: the groups stay apart without them
    legend = ax.get_legend()
    if legend is not None and few:
        legend.set_title(f"bars: median of >= {min_samples('median')}; points: every sample")
    return few


def save_figure(fig: Figure, out_dir: str | Path, name: str) -> list[Path]:
    """Save as <name>.png and <name>.pdf in out_dir; returns both paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"{name}.png", out / f"{name}.pdf"]
    with style():
        for p in paths:
            fig.savefig(p, bbox_inches="tight", metadata={"CreationDate": None} if p.suffix == ".pdf" else None)
    return paths
