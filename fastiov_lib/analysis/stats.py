"""Statistics over run directories: summaries, ECDFs, stage breakdowns, reductions, growth slopes.

Latencies are heavy-tailed, so summaries are medians and percentiles, comparisons come with
bootstrap confidence intervals, and runs from different hosts are not pooled unless asked.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Sequence

import numpy as np
import pandas as pd

from fastiov_lib.analysis.instrumentation import read_stages

from fastiov_lib.analysis.pods import ParseReport, read_pods
from fastiov_lib.run.record import Comparison, RunRecord
from fastiov_lib.run.rundir import RunDir, open_run_dir
from fastiov_lib.safe_files import RECORDS_LIMIT, open_regular

Stat = Literal["mean", "p50", "p90", "p99", "max"]

# Host facts that change results: runs differing in any of them are not pooled by default.
HOST_KEYS = ("hostname", "cpu_model", "cpu_count", "mem_total_kb", "kernel")

# The harness's own phases (used for the breakdown when a run has no component stage records).
PHASES = [
    ("sandbox", "t_released_ns", "t_sandbox_returned_ns"),
    ("network ready", "t_sandbox_returned_ns", "t_network_ready_ns"),
    ("container started", "t_network_ready_ns", "t_container_started_ns"),
    ("container ran", "t_container_started_ns", "t_container_exited_ns"),
]


class PoolingError(ValueError):
    """Runs from different hosts were about to be pooled."""


def _first_guest_record(run_dir: Path) -> dict[str, Any] | None:
    """The first record of a vsriov run's guest measurements (vsriov.jsonl), or None."""
    try:
        with open_regular(Path(run_dir) / "vsriov.jsonl", RECORDS_LIMIT, "vsriov.jsonl") as fh:
            first = json.loads(fh.readline(1 << 20) or "null")
    except (OSError, ValueError):
        return None
    return first if isinstance(first, dict) else None


def _version_token(text: Any) -> str | None:
    """The first version-looking word of a tool's --version line (e.g. 1.6.20~ds1, 7.2.22)."""
    match = re.search(r"\bv?(\d+\.\d+(?:\.\d+)?\S*)", str(text)) if text else None
    return match.group(1) if match else None


@dataclass
class Run:
    """A loaded run directory: its record (run.json), pods and (on a real host) stage records."""

    path: Path
    info: dict[str, Any]  # run.json as written
    pods: pd.DataFrame
    stages: pd.DataFrame | None
    report: ParseReport
    cache: dict[str, Any] = field(default_factory=dict)  # derived tables, computed once per loaded run
    record: RunRecord = None  # type: ignore[assignment]  # the typed run.json; built from `info` when not given

    def __post_init__(self) -> None:
        if self.record is None:
            self.record = RunRecord.model_validate({"run_id": self.path.name, **self.info})

    @property
    def run_id(self) -> str:
        return str(self.info.get("run_id") or self.path.name)

    @property
    def testbed_name(self) -> str:
        name = self.info.get("testbed_name")
        if not name and len(self.pods):
            name = str(self.pods["testbed"].iloc[0])
        return str(name or "unknown")

    @property
    def testbed_kind(self) -> str:
        kind = self.info.get("testbed_kind")
        if not kind and len(self.pods):
            kind = str(self.pods["testbed_kind"].iloc[0])
        return str(kind or "unknown")

    @property
    def caption(self) -> str:
        """The line under every figure: which testbed, kernel and runtime stack made which run."""
        parts = [f"testbed: {self.testbed_name} ({self.testbed_kind})", f"run: {self.run_id}"]
        guest = _first_guest_record(self.path)
        if guest:  # the virtual SR-IOV host: what ran is the guest's kernel under the outer QEMU
            parts += [f"guest kernel {guest.get('kernel', '?')}", f"QEMU {guest.get('qemu_version', '?')} (TCG)"]
            return " · ".join(parts)
        kernel = (self.info.get("host") or {}).get("kernel")
        boots = {(b.get("kernel"), b.get("release")) for b in self.info.get("boots") or [] if b.get("release")}
        if len(boots) > 1:  # a campaign continued after a reboot: each kernel measured its own variants
            parts.append("kernels " + ", ".join(f"{rel} ({name})" if name else rel for name, rel in sorted(
                boots, key=lambda b: (str(b[0]), str(b[1])))))
        elif kernel:
            parts.append(f"kernel {kernel}")
        ran = self.info.get("containerd") or {}  # the containerd the run used, when it recorded one
        version = _version_token(ran.get("version") or (self.info.get("tools") or {}).get("containerd"))
        if version:
            parts.append(f"containerd {version}")
        return " · ".join(parts)

    @property
    def baseline(self) -> str:
        """The reference variant of this run's comparisons (recorded from its testbed's back end)."""
        return self.record.baseline_variant

    @property
    def comparison(self) -> Comparison:
        """The statistic and effect kind of this run's ablation comparison (recorded with the run)."""
        return self.record.comparison


def load_run(run_dir: str | Path | RunDir) -> Run:
    """Load a run directory (run.json, pods.jsonl, stages.csv when present)."""
    rd = run_dir if isinstance(run_dir, RunDir) else open_run_dir(run_dir)
    pods, report = read_pods(rd.path)
    info = rd.read_run_info()
    record = rd.record()
    if record.testbed_kind == "unknown" and len(pods):  # no run.json: its pods still name their testbed
        record = RunRecord.model_validate({"run_id": rd.run_id, **info, "testbed_kind": str(pods["testbed_kind"].iloc[0])})
    return Run(rd.path, info, pods, read_stages(rd.path), report, record=record)


def load_runs(run_dirs: Sequence[str | Path], allow_pooling: bool = False) -> pd.DataFrame:
    """Pods of several runs in one frame (column run_id); refuses runs from different hosts.

    Raises PoolingError naming the differing host fact unless allow_pooling is True.
    """
    runs = [load_run(p) for p in run_dirs]
    if not allow_pooling and len(runs) > 1:
        ref = runs[0].info.get("host") or {}
        for r in runs[1:]:
            host = r.info.get("host") or {}
            for key in HOST_KEYS:
                if ref.get(key) != host.get(key):
                    raise PoolingError(
                        f"{r.path}: host fact {key!r} is {host.get(key)!r}, but {runs[0].path} has "
                        f"{ref.get(key)!r}; pass allow_pooling=True to pool runs from different hosts"
                    )
    frames = []
    for r in runs:
        df = r.pods.copy()
        df["run_id"] = r.run_id
        frames.append(df)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def host_busy_warning(info: dict[str, Any], threshold: float = 0.5) -> str | None:
    """A warning when the 1-minute load per core at the start of the run exceeded `threshold`."""
    host = info.get("host") or {}
    load, cores = host.get("load_avg"), host.get("cpu_count")
    if not load or not cores:
        return None
    per_core = float(load[0]) / float(cores)
    if per_core > threshold:
        return f"host was busy at the start of the run: load {load[0]:.2f} on {cores} cores"
    return None


# --------------------------------------------------------------------------------------------------
# Summaries
# --------------------------------------------------------------------------------------------------

DEFAULT_BY = ("testbed", "experiment", "variant", "concurrency")


def _stat(values: np.ndarray, stat: str) -> float:
    if len(values) == 0:
        return float("nan")
    if stat == "mean":
        return float(np.mean(values))
    if stat == "max":
        return float(np.max(values))
    if stat.startswith("p"):
        return float(np.percentile(values, float(stat[1:])))
    raise ValueError(f"unknown statistic {stat!r}; expected mean, max or pNN")


def _stat_rows(samples: np.ndarray, stat: str) -> np.ndarray:
    """The statistic of each row of a 2-D array of bootstrap samples."""
    if stat == "mean":
        return samples.mean(axis=1)
    if stat == "max":
        return samples.max(axis=1)
    return np.percentile(samples, float(stat[1:]), axis=1)


def summarise(pods: pd.DataFrame, value: str = "startup_ms", by: Sequence[str] = DEFAULT_BY) -> pd.DataFrame:
    """Per group: pods, failures (status != ok), and mean, p50, p90, p99, max of `value` over ok pods.

    Percentiles use linear interpolation between order statistics (numpy's default).
    """
    by = [b for b in by if b in pods.columns]
    cols = [*by, "pods", "failures", "mean_ms", "p50_ms", "p90_ms", "p99_ms", "max_ms"]
    if pods.empty:
        return pd.DataFrame(columns=cols)
    rows = []
    for key, g in pods.groupby(by, sort=True, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        ok = g.loc[g["status"] == "ok", value].dropna().to_numpy(dtype=float)
        row = dict(zip(by, key))
        row.update(pods=len(g), failures=int((g["status"] != "ok").sum()))
        for s in ("mean", "p50", "p90", "p99", "max"):
            row[f"{s}_ms"] = _stat(ok, s)
        rows.append(row)
    return pd.DataFrame(rows, columns=cols)


GROUP_SUMMARY_COLUMNS = ["experiment", "variant", "concurrency", "pods", "ok", "failed", "mean_startup_ms",
                         "p50_startup_ms", "p99_startup_ms", "max_startup_ms", "p50_network_ready_ms",
                         "p50_completion_ms", "p99_completion_ms"]


def group_summary(pods: pd.DataFrame) -> pd.DataFrame:
    """The one summary table (04_bench, 05_ablation, 06_figures, report.md): per experiment, variant and
    concurrency, pods / ok / failed and, over ok pods, startup mean/p50/p99/max, p50 network ready and
    p50/p99 app completion (ms from the release, rounded to 0.1 ms). Empty input, empty table."""
    if pods.empty:
        return pd.DataFrame(columns=GROUP_SUMMARY_COLUMNS)
    rows = []
    for (exp, variant, conc), g in pods.groupby(["experiment", "variant", "concurrency"], sort=True):
        ok = g[g["status"] == "ok"]

        def q(col: str, stat: str) -> float:
            vals = ok[col].dropna().to_numpy(dtype=float) if col in ok else np.array([])
            return round(_stat(vals, stat), 1) if len(vals) else float("nan")

        rows.append({"experiment": exp, "variant": variant, "concurrency": int(conc), "pods": len(g),
                     "ok": len(ok), "failed": len(g) - len(ok),
                     "mean_startup_ms": q("startup_ms", "mean"), "p50_startup_ms": q("startup_ms", "p50"),
                     "p99_startup_ms": q("startup_ms", "p99"), "max_startup_ms": q("startup_ms", "max"),
                     "p50_network_ready_ms": q("network_ready_ms", "p50"),
                     "p50_completion_ms": q("app_completion_ms", "p50"),
                     "p99_completion_ms": q("app_completion_ms", "p99")})
    return pd.DataFrame(rows, columns=GROUP_SUMMARY_COLUMNS)


def ok_values(pods: pd.DataFrame, value: str = "startup_ms") -> pd.DataFrame:
    """Only pods with status ok and a measured `value`."""
    return pods[(pods["status"] == "ok") & pods[value].notna()]


def ecdf(pods: pd.DataFrame, value: str = "startup_ms", by: Sequence[str] = ("variant", "concurrency")) -> pd.DataFrame:
    """Empirical CDF per group: rows (group..., value, ecdf) with ecdf = rank / n, sorted by value."""
    by = list(by)
    ok = ok_values(pods, value)
    frames = []
    for key, g in ok.groupby(by, sort=True):
        key = key if isinstance(key, tuple) else (key,)
        v = np.sort(g[value].to_numpy(dtype=float))
        f = pd.DataFrame({value: v, "ecdf": np.arange(1, len(v) + 1) / len(v)})
        for k, kv in zip(by, key):
            f.insert(0, k, kv)
        frames.append(f)
    if not frames:
        return pd.DataFrame(columns=[*by, value, "ecdf"])
    return pd.concat(frames, ignore_index=True)[[*by, value, "ecdf"]]


# --------------------------------------------------------------------------------------------------
# Stage breakdowns
# --------------------------------------------------------------------------------------------------

BREAKDOWN_COLUMNS = ["experiment", "variant", "concurrency", "stage", "order", "mean_ms", "p99_ms", "share_of_mean", "share_of_p99"]


def phase_breakdown(pods: pd.DataFrame, experiment: str | None = None) -> pd.DataFrame:
    """Breakdown by the harness's own phases (release -> sandbox -> network -> container -> exit).

    Per (experiment, variant, concurrency) and phase: mean and p99 duration over ok pods, and the phase's share
    of the mean (resp. p99) of the total (release -> last phase reached); phases no pod reached
    are left out.
    """
    df = pods if experiment is None else pods[pods["experiment"] == experiment]
    df = df[df["status"] == "ok"]
    rows = []
    for (exp, variant, conc), g in df.groupby(["experiment", "variant", "concurrency"], sort=True):
        durations = {}
        for name, a, b in PHASES:
            d = (g[b].astype("float64") - g[a].astype("float64")) / 1e6
            if d.notna().any():
                durations[name] = d.fillna(0.0)
        if not durations:
            continue
        total = sum(durations.values())
        tm, tp = float(np.mean(total)), float(np.percentile(total, 99))
        for order, (name, d) in enumerate(durations.items()):
            m, p = float(np.mean(d)), float(np.percentile(d, 99))
            rows.append({"experiment": exp, "variant": variant, "concurrency": conc, "stage": name, "order": order,
                         "mean_ms": m, "p99_ms": p,
                         "share_of_mean": m / tm if tm > 0 else np.nan,
                         "share_of_p99": p / tp if tp > 0 else np.nan})
    return pd.DataFrame(rows, columns=BREAKDOWN_COLUMNS)


_CODE_RE = re.compile(r"(\d+(?:-\d+)*)$")


def stage_depth(subject: str) -> int:
    """Nesting depth read from a subject's trailing code: `x1` -> 0, `x4-2` -> 1, `x3-4-1` -> 2.

    The patched components number nested stages this way; a subject without a code has depth 0.
    """
    m = _CODE_RE.search(subject)
    return m.group(1).count("-") if m else 0


def stage_breakdown(stages: pd.DataFrame, pods: pd.DataFrame, depth: int | None = 0) -> pd.DataFrame:
    """Breakdown by component stage records (stages.csv rows labelled with their round).

    Per process (pid, else file) a stage's elapsed times are summed; per (experiment, variant,
    concurrency) the mean and p99 over processes are compared with the mean and p99 startup of that
    group's ok pods. `depth` keeps only subjects of that nesting depth (None keeps all; shares may
    then overlap because nested stages are included in their parents).
    """
    s = stages.dropna(subset=["variant", "concurrency"])
    if depth is not None and not s.empty:
        depths = {subj: stage_depth(subj) for subj in s["subject"].unique()}
        s = s[s["subject"].map(depths) == depth]
    if s.empty:
        return pd.DataFrame(columns=BREAKDOWN_COLUMNS)
    s = s.assign(
        experiment=s["experiment"].fillna("").astype(str) if "experiment" in s.columns else "",
        variant=s["variant"].astype(str),
        concurrency=s["concurrency"].astype(float).astype("int64"),
        proc=np.where(s["pid"].fillna(-1).astype(int) >= 0, s["pid"].astype(str), s["file"].astype(str)),
        elapsed_ms=s["elapsed_ns"].astype(float) / 1e6,
    )
    keys = ["experiment", "variant", "concurrency"]
    per = s.groupby([*keys, "subject", "proc"], sort=False)["elapsed_ms"].sum().reset_index()
    agg = (per.groupby([*keys, "subject"], sort=True)["elapsed_ms"]
           .agg(mean_ms="mean", p99_ms=lambda x: float(np.percentile(x, 99))).reset_index())
    ok = ok_values(pods, "startup_ms").assign(variant=lambda d: d["variant"].astype(str))
    tot = (ok.groupby(["experiment", "variant", "concurrency"])["startup_ms"]
           .agg(t_mean="mean", t_p99=lambda x: float(np.percentile(x, 99))).reset_index())
    # stage records whose round has no experiment label are compared with the pods of any experiment
    tot_any = (ok.groupby(["variant", "concurrency"])["startup_ms"]
               .agg(a_mean="mean", a_p99=lambda x: float(np.percentile(x, 99))).reset_index())
    out = agg.merge(tot, on=keys, how="left").merge(tot_any, on=["variant", "concurrency"], how="left")
    t_mean = out["t_mean"].where(out["experiment"] != "", out["a_mean"])
    t_p99 = out["t_p99"].where(out["experiment"] != "", out["a_p99"])
    first_seen = s.groupby("subject")["start_wall_ns"].min().rank(method="first").astype(int)
    out["stage"] = out["subject"]
    out["order"] = out["subject"].map(first_seen).astype(int)
    out["share_of_mean"] = out["mean_ms"] / t_mean.where(t_mean > 0)
    out["share_of_p99"] = out["p99_ms"] / t_p99.where(t_p99 > 0)
    return out[BREAKDOWN_COLUMNS].sort_values(["experiment", "variant", "concurrency", "order"], ignore_index=True)


def breakdown(run: Run) -> tuple[pd.DataFrame, str]:
    """The run's breakdown and its source: component stages when stages.csv has labelled records,
    else the harness's phases (so a local run still has one)."""
    if "breakdown" not in run.cache:
        run.cache["breakdown"] = _breakdown(run)
    return run.cache["breakdown"]


def _breakdown(run: Run) -> tuple[pd.DataFrame, str]:
    if run.stages is not None:
        df = stage_breakdown(run.stages, run.pods)
        if not df.empty:
            return df, "component stage records in stages.csv"
    return phase_breakdown(run.pods), "harness phases in pods.jsonl"


# --------------------------------------------------------------------------------------------------
# Comparisons and growth
# --------------------------------------------------------------------------------------------------

Kind = Literal["reduction", "increase", "difference"]

COMPARE_COLUMNS = ["concurrency", "baseline", "variant", "stat", "kind", "baseline_ms", "variant_ms",
                   "value", "ci_low", "ci_high", "n_baseline", "n_variant"]


def _effect(b: np.ndarray | float, v: np.ndarray | float, kind: str) -> Any:
    if kind == "reduction":
        return 1.0 - np.divide(v, b)
    if kind == "increase":
        return np.divide(v, b) - 1.0
    if kind == "difference":
        return np.subtract(v, b)
    raise ValueError(f"unknown comparison kind {kind!r}; expected reduction, increase or difference")


def bootstrap_effect(base: np.ndarray, var: np.ndarray, stat: str = "mean", kind: Kind = "reduction",
                     n_boot: int = 2000, ci: float = 0.95, seed: int = 0) -> tuple[float, float, float]:
    """Point estimate and percentile-bootstrap CI of an effect of `var` vs `base` on a statistic.

    Each sample is resampled independently with replacement. reduction = 1 - var/base,
    increase = var/base - 1, difference = var - base (ms).
    """
    base = np.asarray(base, dtype=float)
    var = np.asarray(var, dtype=float)
    if len(base) == 0 or len(var) == 0:
        return (np.nan, np.nan, np.nan)
    point = float(_effect(_stat(base, stat), _stat(var, stat), kind))
    rng = np.random.default_rng(seed)
    bs = _stat_rows(base[rng.integers(0, len(base), (n_boot, len(base)))], stat)
    vs = _stat_rows(var[rng.integers(0, len(var), (n_boot, len(var)))], stat)
    with np.errstate(divide="ignore", invalid="ignore"):
        eff = _effect(bs, vs, kind)
    eff = eff[np.isfinite(eff)]
    if len(eff) == 0:
        return (point, np.nan, np.nan)
    alpha = (1 - ci) / 2
    return (point, float(np.quantile(eff, alpha)), float(np.quantile(eff, 1 - alpha)))


def compare_variants(pods: pd.DataFrame, baseline: str, variants: Sequence[str] | None = None,
                     stat: Stat = "mean", kind: Kind = "reduction", value: str = "startup_ms",
                     experiment: str | None = None, n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Each variant vs `baseline` per concurrency level (both measured there), with a bootstrap CI."""
    df = ok_values(pods if experiment is None else pods[pods["experiment"] == experiment], value)
    variants = [v for v in (variants or sorted(df["variant"].unique())) if v != baseline]
    rows = []
    for conc in sorted(df["concurrency"].unique()):
        at = df[df["concurrency"] == conc]
        b = at.loc[at["variant"] == baseline, value].to_numpy(dtype=float)
        if len(b) == 0:
            continue
        for v in variants:
            x = at.loc[at["variant"] == v, value].to_numpy(dtype=float)
            if len(x) == 0:
                continue
            point, lo, hi = bootstrap_effect(b, x, stat, kind, n_boot, seed=seed)
            rows.append({"concurrency": int(conc), "baseline": baseline, "variant": v, "stat": stat, "kind": kind,
                         "baseline_ms": _stat(b, stat), "variant_ms": _stat(x, stat), "value": point,
                         "ci_low": lo, "ci_high": hi, "n_baseline": len(b), "n_variant": len(x)})
    return pd.DataFrame(rows, columns=COMPARE_COLUMNS)


GROWTH_COLUMNS = ["variant", "stat", "levels", "slope_ms_per_pod", "ci_low", "ci_high"]


def growth_slope(pods: pd.DataFrame, value: str = "startup_ms", stat: Stat = "p50",
                 experiment: str | None = None, n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """How `value` grows with concurrency, per variant: least-squares slope (ms per extra pod) of the
    per-level statistic against the concurrency level, with a bootstrap CI (pods resampled within
    each level). Needs at least two levels; otherwise the slope is NaN."""
    df = ok_values(pods if experiment is None else pods[pods["experiment"] == experiment], value)
    rng = np.random.default_rng(seed)
    rows = []
    for variant, g in df.groupby("variant", sort=True):
        levels = sorted(g["concurrency"].unique())
        samples = [g.loc[g["concurrency"] == c, value].to_numpy(dtype=float) for c in levels]
        if len(levels) < 2:
            rows.append({"variant": variant, "stat": stat, "levels": len(levels), "slope_ms_per_pod": np.nan,
                         "ci_low": np.nan, "ci_high": np.nan})
            continue
        x = np.asarray(levels, dtype=float)
        y = np.array([_stat(s, stat) for s in samples])
        slope = float(np.polyfit(x, y, 1)[0])
        boot = np.column_stack([_stat_rows(s[rng.integers(0, len(s), (n_boot, len(s)))], stat) for s in samples])
        xc = x - x.mean()
        slopes = (boot - boot.mean(axis=1, keepdims=True)) @ xc / (xc @ xc)
        rows.append({"variant": variant, "stat": stat, "levels": len(levels), "slope_ms_per_pod": slope,
                     "ci_low": float(np.quantile(slopes, 0.025)), "ci_high": float(np.quantile(slopes, 0.975))})
    return pd.DataFrame(rows, columns=GROWTH_COLUMNS)


# --------------------------------------------------------------------------------------------------
# Run-level tables
# --------------------------------------------------------------------------------------------------

def round_completeness(pods: pd.DataFrame, expected_levels: dict[str, Sequence[int]] | None = None) -> pd.DataFrame:
    """Per round (experiment, variant, concurrency, repeat): pods recorded vs pods the round started.

    The rounds expected are, per experiment, every variant seen x every concurrency level seen (plus
    `expected_levels[experiment]`, e.g. from the profile) x every repeat seen, so a round that left
    no record at all still shows up, with recorded = 0.
    """
    cols = ["experiment", "variant", "concurrency", "repeat", "recorded", "expected", "complete"]
    if pods.empty:
        return pd.DataFrame(columns=cols)
    # a pod is identified by (tenant, pod_index): the original names pods sandbox-<tenant>-<index>
    ident = pods.assign(_pod=pods["tenant"].astype(str) + "/" + pods["pod_index"].astype(str))
    got = (ident.groupby(["experiment", "variant", "concurrency", "repeat"], sort=True)
           .agg(recorded=("_pod", "nunique")))
    frames = []
    for exp, g in pods.groupby("experiment", sort=True):
        levels = set(g["concurrency"].unique()) | set((expected_levels or {}).get(exp, []))
        index = pd.MultiIndex.from_product([[exp], sorted(g["variant"].unique()), sorted(levels),
                                            sorted(g["repeat"].unique())], names=got.index.names)
        frames.append(got.reindex(index, fill_value=0).reset_index())
    out = pd.concat(frames, ignore_index=True)
    out["expected"] = out["concurrency"]
    out["complete"] = out["recorded"] >= out["expected"]
    return out[cols]


def expected_levels_from_profile(info: dict[str, Any]) -> dict[str, list[int]]:
    """The concurrency levels the run's profile (run.json) asked each experiment for."""
    prof = info.get("profile") or {}
    keys = {"startup": "concurrency", "ablation": "ablation_concurrency", "app": "app_concurrency"}
    return {exp: [int(c) for c in prof.get(key) or []] for exp, key in keys.items()}


def run_summary(run: Run) -> pd.DataFrame:
    """One row describing the run: testbed, experiments, variants, levels, pods, provenance."""
    p = run.pods
    info = run.info
    git = info.get("git") or {}
    return pd.DataFrame([{
        "run id": run.run_id,
        "testbed": run.testbed_name,
        "kind": run.testbed_kind,
        "provenance": info.get("provenance") or ("profile " + str(info.get("profile_name"))
                                                  if info.get("profile_name") else "unknown"),
        "experiments": ", ".join(sorted(p["experiment"].unique())) if len(p) else "",
        "variants": ", ".join(sorted(p["variant"].astype(str).unique())) if len(p) else "",
        "concurrency": ", ".join(str(c) for c in sorted(p["concurrency"].unique())) if len(p) else "",
        "pods": len(p),
        "ok": int((p["status"] == "ok").sum()) if len(p) else 0,
        "not ok": int((p["status"] != "ok").sum()) if len(p) else 0,
        "skipped lines": len(run.report.skipped),
        "stage records": 0 if run.stages is None else len(run.stages),
        "git commit": (git.get("commit") or "")[:12] + (" (dirty)" if git.get("dirty") else ""),
        "start": info.get("start_time"),
        "end": info.get("end_time"),
        "host warning": host_busy_warning(info) or "",
    }])


def summary_shape(run: Run) -> pd.DataFrame:
    """Stable facts about a run for nbval: experiments, groups and pod counts (no ids, no times)."""
    s = summarise(run.pods, by=("experiment", "variant", "concurrency"))
    return s[["experiment", "variant", "concurrency", "pods"]]
