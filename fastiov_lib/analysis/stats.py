"""Statistics over run directories: the loaded run, summaries, ECDFs, stage breakdowns.

Latencies are heavy-tailed, so summaries are medians and percentiles, each shown only from its
minimum number of samples (analysis.samples); comparisons and growth slopes come with intervals
from resampled rounds (analysis.comparisons); runs from different hosts are not pooled unless asked.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Sequence

import numpy as np
import pandas as pd

from fastiov_lib.analysis.comparisons import (  # noqa: F401  (the names callers know from stats)
    COMPARE_COLUMNS, GROWTH_COLUMNS, Kind, compare_variants, growth_slope, ok_values, variant_effect)
from fastiov_lib.analysis.instrumentation import read_stages
from fastiov_lib.analysis.pod_breakdown import BREAKDOWN_COLUMNS, pod_breakdown, sandbox_pid_map
from fastiov_lib.analysis.pods import ParseReport, read_pods
from fastiov_lib.analysis.samples import stat_or_nan
from fastiov_lib.run.record import Comparison, RunRecord
from fastiov_lib.run.rounds import read_rounds, sandbox_pids
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


def summarise(pods: pd.DataFrame, value: str = "startup_ms", by: Sequence[str] = DEFAULT_BY) -> pd.DataFrame:
    """Per group: pods, failures (status != ok), n (ok pods with a value) and mean, p50, p90, p99,
    max of `value` over them, each NaN below its minimum sample count (p99: 100 pods).

    Percentiles use linear interpolation between order statistics (numpy's default).
    """
    by = [b for b in by if b in pods.columns]
    cols = [*by, "pods", "failures", "n", "mean_ms", "p50_ms", "p90_ms", "p99_ms", "max_ms"]
    if pods.empty:
        return pd.DataFrame(columns=cols)
    rows = []
    for key, g in pods.groupby(by, sort=True, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        ok = g.loc[g["status"] == "ok", value].dropna().to_numpy(dtype=float)
        row = dict(zip(by, key))
        row.update(pods=len(g), failures=int((g["status"] != "ok").sum()), n=len(ok))
        for s in ("mean", "p50", "p90", "p99", "max"):
            row[f"{s}_ms"] = stat_or_nan(ok, s)
        rows.append(row)
    return pd.DataFrame(rows, columns=cols)


GROUP_SUMMARY_COLUMNS = ["experiment", "variant", "concurrency", "pods", "ok", "failed", "mean_startup_ms",
                         "p50_startup_ms", "p99_startup_ms", "max_startup_ms", "p50_network_ready_ms",
                         "p50_completion_ms", "p99_completion_ms"]


def group_summary(pods: pd.DataFrame) -> pd.DataFrame:
    """The one summary table (04_bench, 05_ablation, 06_figures, report.md): per experiment, variant and
    concurrency, pods / ok / failed and, over ok pods, startup mean/p50/p99/max, p50 network ready and
    p50/p99 app completion (ms from the release, rounded to 0.1 ms), each empty below its minimum
    sample count (p99: 100 pods; analysis.samples). Empty input, empty table."""
    if pods.empty:
        return pd.DataFrame(columns=GROUP_SUMMARY_COLUMNS)
    rows = []
    for (exp, variant, conc), g in pods.groupby(["experiment", "variant", "concurrency"], sort=True):
        ok = g[g["status"] == "ok"]

        def q(col: str, stat: str) -> float:
            vals = ok[col].dropna().to_numpy(dtype=float) if col in ok else np.array([])
            return round(stat_or_nan(vals, stat), 1)

        rows.append({"experiment": exp, "variant": variant, "concurrency": int(conc), "pods": len(g),
                     "ok": len(ok), "failed": len(g) - len(ok),
                     "mean_startup_ms": q("startup_ms", "mean"), "p50_startup_ms": q("startup_ms", "p50"),
                     "p99_startup_ms": q("startup_ms", "p99"), "max_startup_ms": q("startup_ms", "max"),
                     "p50_network_ready_ms": q("network_ready_ms", "p50"),
                     "p50_completion_ms": q("app_completion_ms", "p50"),
                     "p99_completion_ms": q("app_completion_ms", "p99")})
    return pd.DataFrame(rows, columns=GROUP_SUMMARY_COLUMNS)


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

def phase_breakdown(pods: pd.DataFrame, experiment: str | None = None) -> pd.DataFrame:
    """Breakdown by the harness's own phases (release -> sandbox -> network -> container -> exit).

    Per (experiment, variant, concurrency) and phase: mean and p99 duration over ok pods, and the
    phase's share of the mean (resp. p99) of the total (release -> last phase reached); phases no
    pod reached are left out. The phases follow one another, so none is nested; p99 values are NaN
    below their minimum sample count.
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
        total = sum(durations.values()).to_numpy(dtype=float)
        tm, tp = float(np.mean(total)), stat_or_nan(total, "p99")
        for order, (name, d) in enumerate(durations.items()):
            m, p = float(np.mean(d)), stat_or_nan(d.to_numpy(dtype=float), "p99")
            rows.append({"experiment": exp, "variant": variant, "concurrency": conc, "component": "harness",
                         "stage": name, "parent": "", "nested": False, "order": order, "pods": len(g),
                         "rounds": int(g["repeat"].nunique()), "mean_ms": m, "p99_ms": p,
                         "startup_mean_ms": tm, "startup_p99_ms": tp,
                         "share_of_mean": m / tm if tm > 0 else np.nan,
                         "share_of_p99": p / tp if tp > 0 else np.nan})
    return pd.DataFrame(rows, columns=BREAKDOWN_COLUMNS)


def stage_breakdown(stages: pd.DataFrame, pods: pd.DataFrame, sandbox_pids: pd.DataFrame | None = None) -> pd.DataFrame:
    """Breakdown by component stage records: each record joined to its pod, a stage summed per pod,
    then summarised over the pods of each (experiment, variant, concurrency) and compared with the
    same pods' startup (analysis.pod_breakdown). `nested` marks stages inside another stage: only
    the others may be stacked."""
    return pod_breakdown(stages, pods, sandbox_pids)


def breakdown(run: Run) -> tuple[pd.DataFrame, str]:
    """The run's breakdown and its source: component stages when stages.csv has labelled records,
    else the harness's phases (so a local run still has one)."""
    if "breakdown" not in run.cache:
        run.cache["breakdown"] = _breakdown(run)
    return run.cache["breakdown"]


def _breakdown(run: Run) -> tuple[pd.DataFrame, str]:
    if run.stages is not None:
        rounds, _ = read_rounds(run.path)
        df = stage_breakdown(run.stages, run.pods, sandbox_pid_map(run.path, sandbox_pids(rounds)))
        if not df.empty:
            return df, "component stage records in stages.csv"
    return phase_breakdown(run.pods), "harness phases in pods.jsonl"


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
