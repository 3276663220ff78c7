"""Stage breakdowns from the instrumented containerd's records (stages.csv): figures, table, claims.

containerd 1.3 + 0001-containerd.patch writes one record per stage of RunPodSandbox with the
sandbox id as record_id; stages.csv joins them to pods (analysis.instrumentation). Here: the
per-pod stage durations, one panel per network mode at a fixed concurrency, each stage's growth
with concurrency (both legible at 3.3 in, a single paper column), how many ok pods have no
record (shown, never dropped), the claims a local instrumented run can check, and the cost of the
instrumentation: its startup against a Debian containerd 1.6 run of the same sweep.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from fastiov_lib.analysis.instrumentation import pods_without_records, read_stages
from fastiov_lib.analysis.intervals import Estimate, exact, round_arrays, round_bootstrap
from fastiov_lib.analysis.pods import read_pods
from fastiov_lib.analysis.samples import min_samples
from fastiov_lib.config import REPO_ROOT
from fastiov_lib.report import figures as plots
from fastiov_lib.report.md_table import md_table
from fastiov_lib.report.section import Section
from fastiov_lib.run.record import RunRecord

COLUMN_IN = 3.3  # a single column of the paper
# RunPodSandbox's stages in the order they run; CNI_md holds the per-plugin ADDs, CNI_pod_setup the setup_*
STAGE_ORDER = ["CNI_nns", "CNI_md_add_lo", "CNI_md_add_cni", "CNI_md", "CNI_ops_and_specs", "CNI_create_pod",
               "CNI_setup_rootdir", "CNI_setup_files", "CNI_setup_timestamp", "CNI_setup_task", "CNI_pod_setup"]
CNI_STAGES = ("CNI_nns", "CNI_md")  # the network's own work (namespace + every CNI ADD)
MARKERS = ("CNI_start",)  # a start marker, not a stage (it lasts a few hundred ns): tables only
ROUND = ["experiment", "variant", "concurrency", "repeat"]


def pod_stages(run_dir: Path) -> pd.DataFrame:
    """One row per (ok pod, stage): variant, concurrency, stage, elapsed_ms, and the pod's startup_ms."""
    stages = read_stages(run_dir)
    pods, _ = read_pods(run_dir)
    if stages is None or pods.empty or "sandbox_id" not in pods.columns:
        return pd.DataFrame(columns=ROUND + ["sandbox_id", "stage", "elapsed_ms", "startup_ms"])
    ok = pods[pods["status"] == "ok"].dropna(subset=["sandbox_id"])
    rec = stages[stages["subject"].astype(str).str.startswith("CNI_")]
    rec = rec.groupby(["record_id", "subject"], as_index=False)["elapsed_ns"].sum()
    df = ok[ROUND + ["sandbox_id", "startup_ms"]].merge(rec, left_on="sandbox_id", right_on="record_id")
    df["elapsed_ms"] = df["elapsed_ns"] / 1e6
    return df.rename(columns={"subject": "stage"})[ROUND + ["sandbox_id", "stage", "elapsed_ms", "startup_ms"]]


def _order(stages: pd.Series) -> list[str]:
    seen = set(stages.astype(str))
    return [s for s in STAGE_ORDER if s in seen] + sorted(seen - set(STAGE_ORDER))


def fixed_concurrency(df: pd.DataFrame) -> int | None:
    """The highest concurrency every network mode of the run has records at."""
    if df.empty:
        return None
    common = set.intersection(*(set(g["concurrency"]) for _, g in df.groupby("variant")))
    return int(max(common)) if common else int(df["concurrency"].max())


def breakdown_by_mode(df: pd.DataFrame, missing: pd.DataFrame, caption: str = "",
                      concurrency: int | None = None) -> Figure:
    """One panel per network mode: the median of each stage and of RunPodSandbox, at one concurrency."""
    conc = concurrency if concurrency is not None else fixed_concurrency(df)
    modes = plots.variant_order(df["variant"].unique()) if not df.empty else []
    with plots.style():
        fig = plots.ReportFigure(figsize=(COLUMN_IN, 0.9 + 1.35 * max(len(modes), 1)), layout="constrained")
        axes = fig.subplots(max(len(modes), 1), 1, squeeze=False, sharex=True).ravel()
        if not modes:
            return plots._empty(fig, axes[0], "no stage records in this run", caption, "Stages")
        order = [s for s in _order(df["stage"]) if s not in MARKERS]
        palette = plots.variant_palette(modes)
        for ax, mode in zip(axes, modes):
            sub = df[(df["variant"] == mode) & (df["concurrency"] == conc)]
            med = sub.groupby("stage")["elapsed_ms"].median().reindex(order)
            total = sub.drop_duplicates("sandbox_id")["startup_ms"].median()
            labels = order + ["RunPodSandbox"]
            values = list(med.fillna(0).to_numpy()) + [total]
            colours = [palette[mode]] * len(order) + ["0.55"]
            ax.barh(labels, values, color=colours)
            ax.invert_yaxis()
            miss = missing[(missing["variant"] == mode) & (missing["concurrency"] == conc)]
            n_ok, n_miss = int(miss["ok_pods"].sum()), int(miss["without_records"].sum())
            ax.set_title(f"{mode}, {conc} pods: {n_ok} ok, {n_miss} without records", fontsize=7)
            ax.tick_params(labelsize=6)
        axes[-1].set_xlabel("median duration per pod (ms)", fontsize=7)
        if caption:
            fig.supxlabel(caption, fontsize=5.5, color="0.35")
        return fig


def growth_with_concurrency(df: pd.DataFrame, caption: str = "") -> Figure:
    """Median of each stage against concurrency, one small panel per network mode (shared axes)."""
    modes = plots.variant_order(df["variant"].unique()) if not df.empty else []
    cols = 2 if len(modes) > 1 else 1
    rows = max(-(-len(modes) // cols), 1)
    with plots.style():
        fig = plots.ReportFigure(figsize=(COLUMN_IN, 1.0 + 1.45 * rows), layout="constrained")
        axes = fig.subplots(rows, cols, squeeze=False, sharex=True, sharey=True).ravel()
        for extra in axes[len(modes):]:
            extra.set_visible(False)
        if not modes:
            return plots._empty(fig, axes[0], "no stage records in this run", caption, "Stages")
        order = [s for s in _order(df["stage"]) if s != "CNI_pod_setup" and s not in MARKERS]
        import seaborn as sns

        colours = dict(zip(order, sns.color_palette("colorblind", len(order))))
        for ax, mode in zip(axes, modes):
            sub = df[df["variant"] == mode]
            med = sub.groupby(["stage", "concurrency"])["elapsed_ms"].agg(["median", "size"]).reset_index()
            for stage in order:
                # a median from enough pods (analysis.samples) on the line; fewer pods as points
                line = med[(med["stage"] == stage) & (med["size"] >= min_samples("median"))].sort_values("concurrency")
                if len(line):
                    ax.plot(line["concurrency"], line["median"], marker="o", ms=2.5, lw=1.0,
                            color=colours[stage], label=stage)
                few = med[(med["stage"] == stage) & (med["size"] < min_samples("median"))]["concurrency"]
                pts = sub[(sub["stage"] == stage) & sub["concurrency"].isin(few)]
                if len(pts):
                    ax.scatter(pts["concurrency"], pts["elapsed_ms"], s=4, marker="x", linewidths=0.6,
                               color=colours[stage], label=None if len(line) else stage)
            ax.set_title(mode, fontsize=7)
            ax.set_yscale("log")
            ax.tick_params(labelsize=6)
        handles, labels = axes[0].get_legend_handles_labels()
        for ax in axes[1:len(modes)]:
            for h, lab in zip(*ax.get_legend_handles_labels()):
                if lab not in labels:
                    handles.append(h)
                    labels.append(lab)
        fig.legend(handles, [lab.replace("CNI_", "") for lab in labels], loc="outside lower center",
                   ncol=3, fontsize=5.5, handlelength=1.2, columnspacing=0.8)
        fig.supylabel(f"median per pod (ms, log; x: pods of a level with < {min_samples('median')})", fontsize=7)
        for ax in axes[max(len(modes) - cols, 0):len(modes)]:
            ax.set_xlabel("concurrent pods", fontsize=6)
        if caption:
            fig.suptitle(caption, fontsize=5.5, color="0.35")
        return fig


def stage_table(df: pd.DataFrame) -> pd.DataFrame:
    """Median ms per (mode, concurrency, stage), stages as columns, with RunPodSandbox and the CNI share."""
    if df.empty:
        return pd.DataFrame()
    t = df.pivot_table(index=["variant", "concurrency"], columns="stage", values="elapsed_ms", aggfunc="median")
    t = t[[c for c in _order(pd.Series(t.columns))]]
    t["RunPodSandbox"] = df.drop_duplicates("sandbox_id").groupby(["variant", "concurrency"])["startup_ms"].median()
    t["cni_share"] = cni_share_table(df).set_index(["variant", "concurrency"])["cni_share"]
    return t.reset_index()


def cni_share_table(df: pd.DataFrame) -> pd.DataFrame:
    """Per mode and concurrency: the median over pods of (CNI_nns + CNI_md) / RunPodSandbox."""
    if df.empty:
        return pd.DataFrame(columns=["variant", "concurrency", "cni_share"])
    cni = df[df["stage"].isin(CNI_STAGES)].groupby("sandbox_id")["elapsed_ms"].sum()
    pods = df.drop_duplicates("sandbox_id").set_index("sandbox_id")[["variant", "concurrency", "startup_ms"]]
    pods["cni_share"] = cni.reindex(pods.index).fillna(0.0) / pods["startup_ms"]
    return pods.groupby(["variant", "concurrency"])["cni_share"].median().reset_index()


# ------------------------------------------------------------------ claims

def stage_record_coverage(run_dir: Path, concurrency_min: int = 1) -> Estimate | None:
    """Fraction of ok pods (in rounds of >= concurrency_min pods) with containerd CNI_* records."""
    stages = read_stages(run_dir)
    pods, _ = read_pods(run_dir)
    if stages is None or pods.empty:
        return None
    m = pods_without_records(stages, pods[pods["concurrency"] >= concurrency_min])
    total = int(m["ok_pods"].sum()) if not m.empty else 0
    return exact(float(m["with_records"].sum() / total), total) if total else None


def cni_share_growth(run_dir: Path, low: str = "none", high: str = "hostdev") -> Estimate | None:
    """Median CNI share of RunPodSandbox in `high` minus that in `low` (highest common concurrency),
    with an interval from resampled rounds."""
    df = pod_stages(Path(run_dir))
    if df.empty or not {low, high} <= set(df["variant"]):
        return None
    both = df[df["variant"].isin([low, high])]
    at = both[both["concurrency"] == fixed_concurrency(both)]
    cni = at[at["stage"].isin(CNI_STAGES)].groupby("sandbox_id")["elapsed_ms"].sum()
    pods = at.drop_duplicates("sandbox_id").set_index("sandbox_id")
    pods = pods.assign(cni_share=cni.reindex(pods.index).fillna(0.0) / pods["startup_ms"])
    groups = {v: round_arrays(pods[pods["variant"] == v], "cni_share") for v in (low, high)}
    if not all(groups.values()):
        return None
    return round_bootstrap(groups, lambda p: float(np.median(p[high]) - np.median(p[low])))


# ------------------------------------------------------------------ the instrumentation's cost

def _record(run_dir: Path) -> RunRecord | None:
    try:
        return RunRecord.model_validate({"run_id": run_dir.name, **json.loads((run_dir / "run.json").read_text())})
    except (OSError, ValueError, TypeError):  # no run.json, not JSON, or not a run record: not a run to compare with
        return None


def containerd_flavour(record: RunRecord) -> str | None:
    """Which containerd a run used (debian or instrumented): recorded by the back end, else what its
    testbed section asked for; None for a testbed without a local containerd."""
    if record.containerd and record.containerd.get("flavour"):
        return str(record.containerd["flavour"])
    local = (record.testbed or {}).get("local")
    return str(local.get("containerd", "debian")) if isinstance(local, dict) else None


def find_debian_run(results_dir: Path, profile: str | None) -> Path | None:
    """The newest run of the Debian containerd with the same profile (else None)."""
    best: tuple[str, Path] | None = None
    for run_json in Path(results_dir).glob("*/run.json"):
        record = _record(run_json.parent)
        if record is None or containerd_flavour(record) != "debian":
            continue
        if profile is None or record.profile_name == profile:
            key = str(record.start_time or run_json.parent.name)
            if best is None or key > best[0]:
                best = (key, run_json.parent)
    return best[1] if best else None


def containerd_comparison(run_dir: Path, debian_dir: Path) -> pd.DataFrame:
    """p50 startup per (experiment, mode, concurrency): instrumented 1.3 vs Debian 1.6, and their ratio."""
    def p50(d: Path) -> pd.Series:
        pods, _ = read_pods(d)
        ok = pods[pods["status"] == "ok"]
        return ok.groupby(["experiment", "variant", "concurrency"])["startup_ms"].median()

    out = pd.concat({"instrumented_1.3_p50_ms": p50(run_dir), "debian_1.6_p50_ms": p50(debian_dir)}, axis=1).dropna()
    out["ratio"] = out["instrumented_1.3_p50_ms"] / out["debian_1.6_p50_ms"]
    return out.reset_index()


def report_section(run_dir: str | Path) -> Section:
    """The report's section on the stage records: stage breakdown, missing records, containerd cost."""
    run_dir = Path(run_dir)
    df = pod_stages(run_dir)
    stages = read_stages(run_dir)
    pods, _ = read_pods(run_dir)
    missing = pods_without_records(stages, pods)
    record = _record(run_dir) or RunRecord(run_id=run_dir.name)
    ctd = record.containerd or {}
    name = record.testbed_name if record.testbed_name != "unknown" else run_dir.name
    caption = f"{name}, {run_dir.name}: containerd {str(ctd.get('version') or '?').split()[-2:][0]}"
    # the per-mode panels compare modes: the ablation's rounds where the run has them
    by_mode = df[df["experiment"] == "ablation"] if (df["experiment"] == "ablation").any() else df
    figs = {"stage_breakdown_by_mode": breakdown_by_mode(by_mode, missing[missing["experiment"].isin(
                by_mode["experiment"].unique())], caption),
            "stage_growth": growth_with_concurrency(df, caption)}
    lines = ["## Stages of RunPodSandbox (the instrumented containerd's records)", "",
             f"containerd: `{ctd.get('version', '?')}`; records joined to pods by sandbox id. "
             "FastIOV's 0001-containerd.patch plus the artifact's own per-pod-netns fix (local only).", ""]
    if not df.empty:
        lines += [md_table(stage_table(df), ".2f"), ""]
    total_ok = int(missing["ok_pods"].sum()) if not missing.empty else 0
    lines += [f"Ok pods without a CNI_* record: {int(missing['without_records'].sum()) if total_ok else 0} "
              f"of {total_ok}.", ""]
    lines += ["![stages by mode](figures/stage_breakdown_by_mode.png)", "",
              "![stage growth](figures/stage_growth.png)", ""]
    debian = find_debian_run(run_dir.parent, record.profile_name) or (REPO_ROOT / "results" / "example-local")
    if (debian / "pods.jsonl").is_file():
        cmp = containerd_comparison(run_dir, debian)
        if not cmp.empty:
            deb_profile = getattr(_record(debian), "profile_name", None)
            lines += ["### The instrumentation's cost: instrumented 1.3 vs Debian 1.6", "",
                      f"Debian run: `{debian.name}` (profile {deb_profile or '?'}; this run: "
                      f"{record.profile_name or '?'}); rows where both have the same experiment, mode and "
                      "concurrency. Different "
                      "containerd versions differ in more than the timing records, so the ratio bounds "
                      "the instrumentation's cost from above.", "", md_table(cmp, ".2f"), ""]
    return Section("\n".join(lines), figs)


METRICS = {"stage_record_coverage": stage_record_coverage, "cni_share_growth": cni_share_growth}
