"""The stage breakdown per pod: every component record joined to its pod, nesting from the records' own times.

A stage's time is only comparable with a pod's startup when both belong to the same pod. The
components say which pod a record belongs to in different ways:

- containerd (0001-containerd.patch): `record_id` is the sandbox id;
- fastiov-cni: `record_id` is CNI's ContainerID, which is the sandbox id;
- kata's shim: one process per sandbox writes `cnicmp-<pid>.log`; most of its records carry the
  sandbox id (`s.id`), others a label (`start`, `test`): a process whose records name exactly one
  sandbox gives all its records to that sandbox;
- QEMU's timeline (`qemu-<pid>.log`) names no sandbox: under kata the pid a sandbox reports to
  containerd (PodSandboxStatus) is its QEMU's (the shim returns the hypervisor's pid), and the
  bench records that pid per sandbox in rounds.jsonl (`sandbox_pids`), so (round, pid) finds the pod.

Records of no known pod are counted, never guessed. Per pod a stage's records are summed (a stage
may run more than once per pod: one `CNI_md_add_cni` per plugin), a pod that has records of a
component but none of one of its stages counts 0 for that stage, and only then is a stage
summarised over the pods of a group and compared with the startup of the same pods.

Nesting comes from the records' own intervals: stage B is inside stage A when, in every pod that
has both, each B record lies within an A record (`CNI_md_add_cni` within `CNI_md`, `CNI_setup_task`
within `CNI_pod_setup`, kata's `..4-2` within `..4`, QEMU's `vfio-getdev..vfio-config` within
`realize`); its parent is the tightest such stage. A component that runs inside another (the CNI
plugin and the shim inside containerd's RunPodSandbox, QEMU inside the shim) is nested when that
one has records for the same pods, even where clocks cannot be compared. Only stages without a
parent are ever stacked: their per-pod sum cannot exceed the pod's startup.
"""
from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fastiov_lib.analysis.intervals import ROUND_KEYS, Estimate, round_bootstrap, statistic
from fastiov_lib.analysis.samples import enough, min_samples

# the `component` column of stages.csv: folder names of the original's logs and the names the
# rehearsal writes, mapped to one name each
COMPONENT_NAMES = {"containerd": "containerd", "kata": "kata", "qemu": "qemu",
                   "cni": "fastiov-cni", "fastiov-cni": "fastiov-cni", "fastiov_cni": "fastiov-cni"}
# which component runs inside which (outermost first): containerd's RunPodSandbox calls the CNI
# plugins and starts the shim; the shim starts QEMU
OUTER = {"fastiov-cni": ("containerd",), "kata": ("containerd",), "qemu": ("kata", "containerd")}
COMPONENT_ORDER = ["containerd", "fastiov-cni", "kata", "qemu"]
CONTAINS_TOLERANCE_NS = 50_000  # the same wall clock: zap's start_t plus a monotonic elapsed
QEMU_TOLERANCE_NS = 2_000_000  # QEMU's CLOCK_MONOTONIC mapped to wall time at collection

JOIN_COLUMNS = ["sandbox_id", "joined_by"]
POD_STAGE_COLUMNS = [*ROUND_KEYS, "sandbox_id", "component", "stage", "elapsed_ms", "startup_ms"]
NESTING_COLUMNS = ["component", "stage", "parent_component", "parent", "nested", "evidence"]
BREAKDOWN_COLUMNS = ["experiment", "variant", "concurrency", "component", "stage", "parent", "nested", "order",
                     "pods", "rounds", "mean_ms", "p99_ms", "startup_mean_ms", "startup_p99_ms",
                     "share_of_mean", "share_of_p99"]


def component_name(value: Any) -> str:
    """One name per component (`cni` -> `fastiov-cni`); unknown names stay as they are."""
    text = "" if value is None or (isinstance(value, float) and math.isnan(value)) else str(value)
    return COMPONENT_NAMES.get(text, text)


def _round_id_of(file: Any) -> str:
    """The round folder of a collected log: logs/<round_id>/<component>_logs/<file>."""
    parts = Path(str(file)).parts
    if "logs" in parts:
        i = parts.index("logs")
        if i + 2 < len(parts):
            return parts[i + 1]
    return ""


def _pod_round_ids(pods: pd.DataFrame) -> pd.Series:
    extras = pods["extra"] if "extra" in pods.columns else pd.Series([{}] * len(pods), index=pods.index)
    return pd.Series([e.get("round_id", "") if isinstance(e, dict) else "" for e in extras], index=pods.index)


def join_records(stages: pd.DataFrame, pods: pd.DataFrame, sandbox_pids: pd.DataFrame | None = None) -> pd.DataFrame:
    """stages.csv rows with the pod each belongs to (`sandbox_id`) and how that was found (`joined_by`).

    `sandbox_pids` (round_id, sandbox_id, pid): the pid each sandbox reported (QEMU's under kata).
    Records of no known pod keep an empty sandbox_id and joined_by.
    """
    out = stages.copy()
    out["component"] = [component_name(c) for c in out["component"]] if "component" in out else ""
    out["sandbox_id"] = pd.Series([None] * len(out), index=out.index, dtype="object")
    out["joined_by"] = ""
    if out.empty or pods.empty or "sandbox_id" not in pods.columns:
        return out
    known = set(pods["sandbox_id"].dropna().astype(str))
    rid = out["record_id"].astype("string").fillna("")
    hit = rid.isin(known).to_numpy()
    out.loc[hit, "sandbox_id"] = rid[hit].astype(str).to_numpy()
    out.loc[hit, "joined_by"] = "record id"
    # the shim: one process per sandbox, the sandbox named by some of its records
    pid = pd.to_numeric(out.get("pid"), errors="coerce").fillna(-1).astype("int64")
    shim = (out["component"] == "kata").to_numpy() & (pid >= 0).to_numpy()
    if shim.any():
        proc = out["file"].astype(str) + "#" + pid.astype(str)
        named = out[shim & hit].groupby(proc[shim & hit])["sandbox_id"].agg(lambda s: sorted(set(s)))
        owner = {p: ids[0] for p, ids in named.items() if len(ids) == 1}
        take = shim & ~hit & proc.map(owner).notna().to_numpy()
        out.loc[take, "sandbox_id"] = proc[take].map(owner).to_numpy()
        out.loc[take, "joined_by"] = "shim process"
    # QEMU: the pid each sandbox reported in its round
    if sandbox_pids is not None and not sandbox_pids.empty:
        qemu = (out["component"] == "qemu").to_numpy() & (out["sandbox_id"].isna()).to_numpy()
        if qemu.any():
            owner = {(str(r), int(p)): str(s) for r, s, p in
                     zip(sandbox_pids["round_id"], sandbox_pids["sandbox_id"], sandbox_pids["pid"])}
            keys = [(_round_id_of(f), int(p)) for f, p in zip(out.loc[qemu, "file"], pid[qemu])]
            found = [owner.get(k) for k in keys]
            idx = out.index[qemu]
            got = [i for i, s in zip(idx, found) if s is not None]
            out.loc[got, "sandbox_id"] = [s for s in found if s is not None]
            out.loc[got, "joined_by"] = "QEMU pid"
    return out


def join_summary(joined: pd.DataFrame) -> pd.DataFrame:
    """Per component: records, how many were joined to a pod and how, and how many were not."""
    cols = ["component", "records", "joined", "by record id", "by shim process", "by QEMU pid", "not joined"]
    if joined.empty:
        return pd.DataFrame(columns=cols)
    rows = []
    for comp, g in joined.groupby("component", sort=False):
        by = g["joined_by"].value_counts()
        rows.append({"component": comp, "records": len(g), "joined": int(g["sandbox_id"].notna().sum()),
                     "by record id": int(by.get("record id", 0)), "by shim process": int(by.get("shim process", 0)),
                     "by QEMU pid": int(by.get("QEMU pid", 0)), "not joined": int(g["sandbox_id"].isna().sum())})
    out = pd.DataFrame(rows, columns=cols)
    return out.sort_values("component", key=lambda s: s.map(_component_rank), ignore_index=True)


def _component_rank(c: str) -> int:
    return COMPONENT_ORDER.index(c) if c in COMPONENT_ORDER else len(COMPONENT_ORDER)


# --------------------------------------------------------------------------------------------------
# nesting
# --------------------------------------------------------------------------------------------------

def _intervals(joined: pd.DataFrame) -> pd.DataFrame:
    """Joined records as (sandbox_id, component, stage, clock, start, end) with ns relative to a base."""
    j = joined[joined["sandbox_id"].notna()]
    if j.empty:
        return pd.DataFrame(columns=["sandbox_id", "component", "stage", "clock", "start", "end"])
    wall = pd.to_numeric(j["start_wall_ns"], errors="coerce") if "start_wall_ns" in j else pd.Series(np.nan, j.index)
    mono = pd.Series(np.nan, index=j.index)
    if "extra" in j.columns:  # QEMU's own clock, for stages of one QEMU without a wall time
        for i, extra, comp in zip(j.index, j["extra"], j["component"]):
            if comp == "qemu" and isinstance(extra, str) and "start_mono_ns" in extra:
                try:
                    mono[i] = float(json.loads(extra)["start_mono_ns"])
                except (ValueError, KeyError, TypeError):
                    pass
    elapsed = pd.to_numeric(j["elapsed_ns"], errors="coerce").astype(float)
    has_wall = wall.notna()
    base_w = float(wall[has_wall].min()) if has_wall.any() else 0.0
    base_m = float(mono.min()) if mono.notna().any() else 0.0
    start = np.where(has_wall, wall.astype(float) - base_w, mono - base_m)
    out = pd.DataFrame({"sandbox_id": j["sandbox_id"].astype(str), "component": j["component"],
                        "stage": j["subject"].astype(str), "clock": np.where(has_wall, "wall", "mono"),
                        "start": start, "end": start + elapsed.to_numpy()})
    return out[np.isfinite(out["start"]) & np.isfinite(out["end"])].reset_index(drop=True)


def _code_parent(stage: str, stages: set[str]) -> str | None:
    """The trailing-code rule of the patched components: `x4-2` is inside `x4`."""
    head, sep, _ = stage.rpartition("-")
    return head if sep and head in stages and head[-1:].isdigit() else None


def stage_nesting(joined: pd.DataFrame) -> pd.DataFrame:
    """For every (component, stage) of the joined records: its parent stage (the tightest stage that
    contains each of its records in every pod that has both), and whether it is nested at all."""
    recs = _intervals(joined)
    keys = (joined[joined["sandbox_id"].notna()][["component", "subject"]].drop_duplicates()
            .rename(columns={"subject": "stage"}).astype(str))
    if keys.empty:
        return pd.DataFrame(columns=NESTING_COLUMNS)
    parents: dict[tuple[str, str], tuple[str, str, str]] = {}
    if not recs.empty:
        recs["rid"] = np.arange(len(recs))
        recs["dur"] = recs["end"] - recs["start"]
        pairs = recs.merge(recs, on=["sandbox_id", "clock"], suffixes=("_b", "_a"))
        pairs = pairs[(pairs["component_a"] != pairs["component_b"]) | (pairs["stage_a"] != pairs["stage_b"])]
        qemu_pair = (pairs["component_a"] == "qemu") ^ (pairs["component_b"] == "qemu")
        tol = np.where(qemu_pair, QEMU_TOLERANCE_NS, CONTAINS_TOLERANCE_NS)
        pairs = pairs.assign(inside=(pairs["start_a"] - tol <= pairs["start_b"]) & (pairs["end_b"] <= pairs["end_a"] + tol))
        per_rec = pairs.groupby(["rid_b", "component_b", "stage_b", "component_a", "stage_a"], sort=False)["inside"].any()
        always = per_rec.groupby(level=["component_b", "stage_b", "component_a", "stage_a"]).all()
        dur = recs.groupby(["component", "stage"])["dur"].median()
        for (cb, sb, ca, sa), ok in always.items():
            if not ok:
                continue
            db, da = dur[(cb, sb)], dur[(ca, sa)]
            # identical intervals contain each other: the longer (else the later-named) one is the parent
            if da < db or (da == db and (ca, sa) < (cb, sb)):
                continue
            best = parents.get((cb, sb))
            if best is None or da < dur[(best[0], best[1])]:
                parents[(cb, sb)] = (ca, sa, "intervals")
    present = {c: set(keys.loc[keys["component"] == c, "stage"]) for c in keys["component"].unique()}
    pods_of = joined[joined["sandbox_id"].notna()].groupby("component")["sandbox_id"].agg(lambda s: set(s.astype(str)))
    rows = []
    for comp, stage in keys.itertuples(index=False):
        parent = parents.get((comp, stage))
        if parent is None:
            code = _code_parent(stage, present.get(comp, set()))
            if code is not None:
                parent = (comp, code, "trailing code")
        nested, evidence = parent is not None, parent[2] if parent else ""
        if not nested:  # a component inside another that has records for the same pods
            mine = pods_of.get(comp, set())
            outer = [o for o in OUTER.get(comp, ()) if mine & pods_of.get(o, set())]
            if outer:
                nested, evidence = True, f"runs inside {outer[0]}"
        rows.append({"component": comp, "stage": stage, "parent_component": parent[0] if parent else "",
                     "parent": parent[1] if parent else "", "nested": nested, "evidence": evidence})
    return pd.DataFrame(rows, columns=NESTING_COLUMNS)


# --------------------------------------------------------------------------------------------------
# per pod, then over pods
# --------------------------------------------------------------------------------------------------

def pod_stage_durations(joined: pd.DataFrame, pods: pd.DataFrame) -> pd.DataFrame:
    """One row per (ok pod, component, stage): the stage's time in that pod (its records summed; 0
    where the pod has records of that component but none of this stage) and the pod's startup."""
    ok = pods[(pods["status"] == "ok") & pods["sandbox_id"].notna()] if "sandbox_id" in pods else pods.iloc[0:0]
    j = joined[joined["sandbox_id"].notna()]
    if ok.empty or j.empty:
        return pd.DataFrame(columns=POD_STAGE_COLUMNS)
    ok = ok.drop_duplicates("sandbox_id")
    per = (j.assign(elapsed_ms=pd.to_numeric(j["elapsed_ns"], errors="coerce") / 1e6, stage=j["subject"].astype(str))
           .groupby(["sandbox_id", "component", "stage"], sort=False)["elapsed_ms"].sum().reset_index())
    per = per.merge(ok[[*ROUND_KEYS, "sandbox_id", "startup_ms"]], on="sandbox_id")
    if per.empty:
        return pd.DataFrame(columns=POD_STAGE_COLUMNS)
    frames = []
    group = ["experiment", "variant", "concurrency"]
    for (comp, *_), g in per.groupby(["component", *group], sort=False):
        # every pod with this component's records x every stage of it seen in the group
        wide = g.pivot_table(index="sandbox_id", columns="stage", values="elapsed_ms", aggfunc="sum").fillna(0.0)
        long = wide.stack().rename("elapsed_ms").reset_index()
        long["component"] = comp
        frames.append(long.merge(ok[[*ROUND_KEYS, "sandbox_id", "startup_ms"]], on="sandbox_id"))
    out = pd.concat(frames, ignore_index=True)
    out["variant"] = out["variant"].astype(str)
    return out[POD_STAGE_COLUMNS]


def _order(joined: pd.DataFrame) -> dict[tuple[str, str], int]:
    """Stages in the order they run: median start within the pod, components outermost first."""
    recs = _intervals(joined)
    if recs.empty:
        keys = joined[["component", "subject"]].drop_duplicates()
        return {(c, s): i for i, (c, s) in enumerate(keys.itertuples(index=False))}
    recs["rel"] = recs["start"] - recs.groupby(["sandbox_id", "clock"])["start"].transform("min")
    med = recs.groupby(["component", "stage"])["rel"].median().reset_index()
    med["rank"] = med["component"].map(_component_rank)
    med = med.sort_values(["rank", "rel", "stage"])
    return {(c, s): i for i, (c, s) in enumerate(zip(med["component"], med["stage"]))}


def summarise_over_pods(per_pod: pd.DataFrame, nesting: pd.DataFrame,
                        order: dict[tuple[str, str], int] | None = None) -> pd.DataFrame:
    """Per (experiment, variant, concurrency, component, stage): pods and rounds behind it, mean and
    p99 over pods of the per-pod time, the same pods' mean and p99 startup, and the shares.

    p99 values are NaN below the minimum sample count (samples.enough)."""
    if per_pod.empty:
        return pd.DataFrame(columns=BREAKDOWN_COLUMNS)
    nest = nesting.set_index(["component", "stage"]) if not nesting.empty else None
    rows = []
    keys = ["experiment", "variant", "concurrency", "component", "stage"]
    for (exp, variant, conc, comp, stage), g in per_pod.groupby(keys, sort=False):
        x = g["elapsed_ms"].to_numpy(dtype=float)
        t = g["startup_ms"].to_numpy(dtype=float)
        n = len(x)
        p99_ok = enough(n, "p99")
        mean, p99 = float(np.mean(x)), float(np.percentile(x, 99)) if p99_ok else math.nan
        t_mean, t_p99 = float(np.mean(t)), float(np.percentile(t, 99)) if p99_ok else math.nan
        info = nest.loc[(comp, stage)] if nest is not None and (comp, stage) in nest.index else None
        rows.append({"experiment": exp, "variant": variant, "concurrency": int(conc), "component": comp,
                     "stage": stage, "parent": (info["parent"] if info is not None else ""),
                     "nested": bool(info["nested"]) if info is not None else False,
                     "order": (order or {}).get((comp, stage), 0), "pods": n,
                     "rounds": int(g["repeat"].nunique()), "mean_ms": mean, "p99_ms": p99,
                     "startup_mean_ms": t_mean, "startup_p99_ms": t_p99,
                     "share_of_mean": mean / t_mean if t_mean > 0 else math.nan,
                     "share_of_p99": p99 / t_p99 if p99_ok and t_p99 > 0 else math.nan})
    out = pd.DataFrame(rows, columns=BREAKDOWN_COLUMNS)
    return out.sort_values(["experiment", "variant", "concurrency", "order"], ignore_index=True)


def pod_breakdown(stages: pd.DataFrame, pods: pd.DataFrame,
                  sandbox_pids: pd.DataFrame | None = None) -> pd.DataFrame:
    """The whole path: join, per pod, nesting, over pods (BREAKDOWN_COLUMNS)."""
    joined = join_records(stages, pods, sandbox_pids)
    per_pod = pod_stage_durations(joined, pods)
    if per_pod.empty:
        return pd.DataFrame(columns=BREAKDOWN_COLUMNS)
    return summarise_over_pods(per_pod, stage_nesting(joined), _order(joined))


def stage_share_estimate(per_pod: pd.DataFrame, stage: str, share: str = "share_of_mean",
                         component: str | None = None) -> Estimate:
    """A stage's share of the startup of the same pods (mean over mean, or p99 over p99), with an
    interval from resampled rounds. `per_pod` holds one group's rows of pod_stage_durations."""
    g = per_pod[per_pod["stage"] == stage]
    if component is not None:
        g = g[g["component"] == component]
    if g.empty:
        return Estimate(math.nan, note=f"no {stage} records")
    stat = "p99" if share == "share_of_p99" else "mean"
    rounds = [r[["elapsed_ms", "startup_ms"]].to_numpy(dtype=float) for _, r in g.groupby("repeat", sort=True)]

    def ratio(p: dict[str, np.ndarray]) -> float:
        x = p["pods"]
        return statistic(x[:, 0], stat) / statistic(x[:, 1], stat)

    est = round_bootstrap({"pods": rounds}, ratio)
    if not enough(len(g), stat):
        return replace(est, low=math.nan, high=math.nan, note=f"{stat} needs >= {min_samples(stat)} pods, has {len(g)}")
    return est


VM_PIDS_FILE = "vm-pids.json"  # logs/<round>/qemu/: {QEMU pid: sandbox id}, from kata's /run/vc/vm/<id>/pid


def sandbox_pid_map(run_dir: str | Path, from_rounds: pd.DataFrame | None = None) -> pd.DataFrame:
    """(round_id, sandbox_id, pid) from every source a run has: the pid each sandbox reported to the
    bench (rounds.jsonl, given as `from_rounds`) and the QEMU pid files a real host's round hooks
    copy (logs/<round>/qemu/vm-pids.json). Unreadable files are skipped (the records stay unjoined)."""
    rows = []
    for path in sorted(Path(run_dir).glob(f"logs/*/qemu/{VM_PIDS_FILE}")):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(data, dict):
            rows += [(path.parent.parent.name, str(sid), int(pid)) for pid, sid in data.items()
                     if str(pid).isdigit() and isinstance(sid, str)]
    files = pd.DataFrame(rows, columns=["round_id", "sandbox_id", "pid"])
    parts = [f for f in (from_rounds, files) if f is not None and not f.empty]
    return pd.concat(parts, ignore_index=True).drop_duplicates() if parts else files
