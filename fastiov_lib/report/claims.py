"""Claims: statements with a metric and a threshold, checked against a run directory.

Claims live in data files (fastiov_lib/data/claims/*.yaml). A metric is a function registered by
name that takes the run directory and returns a float, or None when the run did not measure it;
the table shows only what was computed (a None metric gives the verdict "not measured").
Every claim of every file is listed: one this run's testbed cannot check says which testbed it needs.
This module's metrics are registered with `@register_metric("name")`; `metrics()` adds the lists of
the other metric modules.
"""
from __future__ import annotations

import functools
import math
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Literal

import numpy as np
import pandas as pd
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from fastiov_lib.analysis import stats as analysis
from fastiov_lib.config import ConfigError
from fastiov_lib.report import stage_figures, vsriov_metrics

CLAIMS_DIR = Path(str(resources.files("fastiov_lib") / "data" / "claims"))

Metric = Callable[..., "float | None"]
METRICS: dict[str, Metric] = {}

Verdict = Literal["holds", "fails", "not measured", "needs a fastiov testbed", "needs a vsriov testbed",
                  "needs a fastiov or vsriov testbed"]


def register_metric(name: str) -> Callable[[Metric], Metric]:
    """Register `fn(run_dir: Path, **params) -> float | None` under `name` (decorator)."""
    def deco(fn: Metric) -> Metric:
        METRICS[name] = fn
        return fn
    return deco


class Claim(BaseModel):
    """One checkable statement (one entry of a claims YAML file)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    statement: str
    source: str
    metric: str
    params: dict[str, Any] = Field(default_factory=dict)
    comparison: Literal[">=", "<=", ">", "<", "between"]
    threshold: float | list[float]
    unit: str = ""  # "%" shows fractions as percentages; "ms", "pods", "" as is
    published: float | None = None  # the value the source reports, shown beside the threshold
    testbed_kinds: list[Literal["local", "fastiov", "vsriov"]] = Field(min_length=1)
    needs: list[str] = Field(default_factory=list)  # run files it needs (e.g. stages.csv); absent: not applicable
    note: str = ""

    @model_validator(mode="after")
    def _threshold_shape(self) -> "Claim":
        if self.comparison == "between":
            if not (isinstance(self.threshold, list) and len(self.threshold) == 2):
                raise ValueError("comparison 'between' needs threshold: [low, high]")
        elif isinstance(self.threshold, list):
            raise ValueError(f"comparison {self.comparison!r} needs a single number as threshold")
        return self

    def check(self, measured: float | None) -> Verdict:
        if measured is None or (isinstance(measured, float) and math.isnan(measured)):
            return "not measured"
        t = self.threshold
        ok = {">=": lambda: measured >= t, "<=": lambda: measured <= t, ">": lambda: measured > t,
              "<": lambda: measured < t, "between": lambda: t[0] <= measured <= t[1]}[self.comparison]()
        return "holds" if ok else "fails"

    def format_value(self, x: float) -> str:
        """One number in the claim's unit."""
        if self.unit == "%":
            return f"{x * 100:.1f}%"
        if self.unit == "ms":
            return f"{x:.1f} ms"
        if self.unit == "ms/pod":
            return f"{x:.2f} ms/pod"
        if self.unit == "x":
            return f"{x:.2f}x"
        return f"{x:.3g}" + (f" {self.unit}" if self.unit else "")

    def expected_text(self) -> str:
        if self.comparison == "between":
            text = f"between {self.format_value(self.threshold[0])} and {self.format_value(self.threshold[1])}"
        else:
            text = f"{self.comparison} {self.format_value(float(self.threshold))}"
        if self.published is not None:
            text += f" (published: {self.format_value(self.published)})"
        return text


def load_claims(paths: list[Path] | None = None) -> list[Claim]:
    """Every claim in the given YAML files (default: all of fastiov_lib/data/claims/*.yaml).

    Raises ConfigError naming the file and the claim on an invalid entry or a duplicate id.
    """
    metrics()  # so that every metric a claim names can be looked up
    files = sorted(CLAIMS_DIR.glob("*.yaml")) if paths is None else [Path(p) for p in paths]
    out: list[Claim] = []
    seen: dict[str, Path] = {}
    for path in files:
        try:
            data = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"{path}: cannot read claims: {exc}") from None
        entries = (data or {}).get("claims") if isinstance(data, dict) else None
        if not isinstance(entries, list):
            raise ConfigError(f"{path}: expected a top-level 'claims:' list")
        for i, entry in enumerate(entries):
            try:
                claim = Claim.model_validate(entry)
            except ValidationError as err:
                first = err.errors()[0]
                key = ".".join(str(p) for p in first["loc"]) or "(entry)"
                cid = entry.get("id") if isinstance(entry, dict) else None
                raise ConfigError(f"{path}: claim #{i + 1} ({cid or 'no id'}): key '{key}': {first['msg']}") from None
            if claim.id in seen:
                raise ConfigError(f"{path}: claim id {claim.id!r} already defined in {seen[claim.id]}")
            seen[claim.id] = path
            out.append(claim)
    return out


def metrics() -> dict[str, Metric]:
    """Every metric by name: this module's, the virtual SR-IOV host's and the stage records' (each
    module lists its own in METRICS)."""
    return {**METRICS, **vsriov_metrics.METRICS, **stage_figures.METRICS}


CLAIM_MAP_FILE = Path(str(resources.files("fastiov_lib") / "data" / "claim_map.yaml"))


@functools.lru_cache(maxsize=1)
def claim_map() -> dict[str, dict[str, str]]:
    """README claim per claim-id prefix, and the figure per README claim (data/claim_map.yaml)."""
    data = yaml.safe_load(CLAIM_MAP_FILE.read_text()) or {}
    return {"readme": dict(data.get("readme", {})), "figure": dict(data.get("figure", {}))}


def readme_claim(claim_id: str) -> str:
    """The README's claim (C1..C11) a claim id belongs to, or ""."""
    return claim_map()["readme"].get(claim_id.split("-", 1)[0], "")


# --------------------------------------------------------------------------------------------------
# Metrics (local and FastIOV host)
# --------------------------------------------------------------------------------------------------

def _mtime_key(run_dir: Path) -> tuple[str, int, int]:
    p = Path(run_dir)
    stamps = [(p / f).stat().st_mtime_ns if (p / f).exists() else 0 for f in ("pods.jsonl", "stages.csv")]
    return str(p.resolve()), stamps[0], stamps[1]


@functools.lru_cache(maxsize=8)
def _cached_run(key: tuple[str, int, int]) -> analysis.Run:
    return analysis.load_run(key[0])


def run_for(run_dir: Path) -> analysis.Run:
    """The loaded run (cached while pods.jsonl and stages.csv are unchanged)."""
    return _cached_run(_mtime_key(run_dir))


def _select(pods: pd.DataFrame, experiment: str | None) -> pd.DataFrame:
    return pods if experiment is None else pods[pods["experiment"] == experiment]


def _level(pods: pd.DataFrame, concurrency: int | str | None) -> int | None:
    levels = sorted(pods["concurrency"].unique())
    if not levels:
        return None
    if concurrency in (None, "max"):
        return int(levels[-1])
    return int(concurrency) if int(concurrency) in levels else None


@register_metric("complete_rounds_fraction")
def complete_rounds_fraction(run_dir: Path, experiment: str | None = None) -> float | None:
    """Fraction of expected rounds in which every started pod has a record (see round_completeness)."""
    run = run_for(run_dir)
    pods = _select(run.pods, experiment)
    if pods.empty:
        return None
    rc = analysis.round_completeness(pods, analysis.expected_levels_from_profile(run.info))
    return float(rc["complete"].mean())


@register_metric("ok_fraction")
def ok_fraction(run_dir: Path, experiment: str | None = None) -> float | None:
    """Fraction of recorded pods whose status is ok."""
    pods = _select(run_for(run_dir).pods, experiment)
    return None if pods.empty else float((pods["status"] == "ok").mean())


@register_metric("growth_slope_ci_low")
def growth_slope_ci_low(run_dir: Path, variant: str | None = None, experiment: str | None = "startup",
                        stat: str = "p50") -> float | None:
    """Lower end of the 95% bootstrap CI of the startup-vs-concurrency slope (ms per extra pod).

    With no variant given, the variant measured at the most levels. None with fewer than 2 levels.
    """
    pods = _select(run_for(run_dir).pods, experiment)
    g = analysis.growth_slope(pods, stat=stat)
    if g.empty:
        return None
    row = g[g["variant"] == variant] if variant else g.sort_values("levels", ascending=False).head(1)
    if row.empty or row["levels"].iloc[0] < 2:
        return None
    return float(row["ci_low"].iloc[0])


@register_metric("growth_slope")
def growth_slope(run_dir: Path, variant: str | None = None, experiment: str | None = "startup",
                 stat: str = "p50") -> float | None:
    """Least-squares slope of the per-level statistic vs concurrency (ms per extra pod)."""
    pods = _select(run_for(run_dir).pods, experiment)
    g = analysis.growth_slope(pods, stat=stat)
    row = g[g["variant"] == variant] if variant else g.sort_values("levels", ascending=False).head(1)
    if row.empty or row["levels"].iloc[0] < 2:
        return None
    return float(row["slope_ms_per_pod"].iloc[0])


@register_metric("growth_ratio")
def growth_ratio(run_dir: Path, variant: str | None = None, experiment: str | None = "startup",
                 stat: str = "p50") -> float | None:
    """The statistic at the highest concurrency level divided by that at the lowest (one variant:
    the given one, else the variant measured at the most levels). None with fewer than 2 levels."""
    pods = analysis.ok_values(_select(run_for(run_dir).pods, experiment))
    if pods.empty:
        return None
    if variant is None:
        variant = pods.groupby("variant")["concurrency"].nunique().sort_values(ascending=False).index[0]
    g = pods[pods["variant"] == variant]
    levels = sorted(g["concurrency"].unique())
    if len(levels) < 2:
        return None
    lo = analysis._stat(g.loc[g["concurrency"] == levels[0], "startup_ms"].to_numpy(float), stat)
    hi = analysis._stat(g.loc[g["concurrency"] == levels[-1], "startup_ms"].to_numpy(float), stat)
    return hi / lo if lo > 0 else None


def _compare(run_dir: Path, variant: str, baseline: str, stat: str, kind: str, experiment: str | None,
             concurrency: int | str | None, value: str = "startup_ms") -> pd.DataFrame:
    pods = _select(run_for(run_dir).pods, experiment)
    c = analysis.compare_variants(pods, baseline, [variant], stat=stat, kind=kind, value=value, n_boot=200)
    if concurrency is not None and not c.empty:
        level = _level(c, concurrency)
        c = c[c["concurrency"] == level]
    return c


@register_metric("effect")
def effect(run_dir: Path, variant: str, baseline: str, stat: str = "mean", kind: str = "reduction",
           experiment: str | None = None, concurrency: int | str | None = None,
           aggregate: str = "mean", value: str = "startup_ms") -> float | None:
    """`variant` vs `baseline` (reduction/increase as a fraction, difference in ms) on a statistic.

    At one concurrency level (an int, or "max" for the highest level both were measured at), or
    aggregated over every common level with `aggregate` = mean, min or max. None if not measured.
    """
    c = _compare(run_dir, variant, baseline, stat, kind, experiment, concurrency, value)
    if c.empty:
        return None
    return float({"mean": np.mean, "min": np.min, "max": np.max}[aggregate](c["value"]))


@register_metric("effect_ci_low")
def effect_ci_low(run_dir: Path, variant: str, baseline: str, stat: str = "p50", kind: str = "difference",
                  experiment: str | None = None, concurrency: int | str | None = "max",
                  min_pods: int = 1) -> float | None:
    """Lower end of the 95% bootstrap CI of an effect at one concurrency level (None with fewer than
    `min_pods` ok pods in either group: too few to decide on an interval)."""
    c = _compare(run_dir, variant, baseline, stat, kind, experiment, concurrency)
    if c.empty or min(int(c["n_baseline"].iloc[0]), int(c["n_variant"].iloc[0])) < min_pods:
        return None
    return float(c["ci_low"].iloc[0])


@register_metric("effect_ci_low_vs_each")
def effect_ci_low_vs_each(run_dir: Path, variant: str, baselines: list[str], stat: str = "p50",
                          experiment: str | None = None, concurrency: int | str | None = "max",
                          min_pods: int = 1) -> float | None:
    """The smallest lower CI end of `variant` minus each of `baselines` (> 0: above every one of them).

    None when any of them was not measured with enough pods at that level."""
    lows = [effect_ci_low(run_dir, variant, b, stat=stat, kind="difference", experiment=experiment,
                          concurrency=concurrency, min_pods=min_pods) for b in baselines]
    return None if not lows or any(x is None for x in lows) else float(min(lows))


@register_metric("overhead_reduction")
def overhead_reduction(run_dir: Path, variant: str = "fastiov", baseline: str = "vanilla",
                       reference: str = "no-network", stat: str = "mean",
                       experiment: str | None = None) -> float | None:
    """How much of the baseline's overhead over `reference` the variant removes, averaged over levels:
    1 - (variant - reference) / (baseline - reference)."""
    ok_pods = analysis.ok_values(_select(run_for(run_dir).pods, experiment))
    vals = []
    for conc, at in ok_pods.groupby("concurrency"):
        got = {}
        for name in (variant, baseline, reference):
            x = at.loc[at["variant"] == name, "startup_ms"].to_numpy(dtype=float)
            if len(x) == 0:
                break
            got[name] = analysis._stat(x, stat)
        else:
            denom = got[baseline] - got[reference]
            if denom > 0:
                vals.append(1 - (got[variant] - got[reference]) / denom)
    return float(np.mean(vals)) if vals else None


@register_metric("stage_share")
def stage_share(run_dir: Path, stage: str, variant: str = "vanilla", concurrency: int | str | None = "max",
                share: str = "share_of_mean") -> float | None:
    """Share of one component stage (a stages.csv subject) in the startup of a variant at a level."""
    run = run_for(run_dir)
    if run.stages is None:
        return None
    if "stage_breakdown_all_depths" not in run.cache:
        run.cache["stage_breakdown_all_depths"] = analysis.stage_breakdown(run.stages, run.pods, depth=None)
    b = run.cache["stage_breakdown_all_depths"]
    b = b[(b["variant"] == variant) & (b["stage"] == stage)]
    if b.empty:
        return None
    level = _level(b, concurrency)
    b = b[b["concurrency"] == level]
    return None if b.empty else float(b[share].iloc[0])


@register_metric("app_completed_fraction")
def app_completed_fraction(run_dir: Path) -> float | None:
    """Fraction of app-experiment pods that ran their app to the end (status ok, exit recorded)."""
    pods = _select(run_for(run_dir).pods, "app")
    if pods.empty:
        return None
    done = (pods["status"] == "ok") & pods["app_completion_ms"].notna()
    return float(done.mean())


@register_metric("app_effect")
def app_effect(run_dir: Path, variant: str = "fastiov", baseline: str = "vanilla", stat: str = "mean",
               aggregate: str = "min") -> float | None:
    """Reduction of app completion time per app, aggregated over apps (min or max)."""
    pods = _select(run_for(run_dir).pods, "app")
    vals = []
    for _, g in pods.groupby("app"):
        c = analysis.compare_variants(g, baseline, [variant], stat=stat, kind="reduction",
                                      value="app_completion_ms", n_boot=50)
        vals += list(c["value"])
    if not vals:
        return None
    return float({"mean": np.mean, "min": np.min, "max": np.max}[aggregate](vals))


# --------------------------------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------------------------------

CLAIM_COLUMNS = ["claim", "readme", "statement", "expected", "measured", "verdict", "figure", "source", "note"]


def applicable_claims(kind: str, claims: list[Claim] | None = None) -> list[Claim]:
    """The claims that apply to a testbed kind."""
    return [c for c in (claims if claims is not None else load_claims()) if kind in c.testbed_kinds]


def _needs(claim: Claim) -> str:
    kinds = [k for k in ("fastiov", "vsriov", "local") if k in claim.testbed_kinds]
    return f"needs a {' or '.join(kinds)} testbed"


def evaluate_claims(run_dir: str | Path, claims: list[Claim] | None = None) -> pd.DataFrame:
    """Every claim, checked where the run's testbed kind can check it: claim, expected, measured, verdict.

    `measured` is the metric's value formatted in the claim's unit, or "" when the metric returned
    None (verdict "not measured"); a claim for another kind of testbed has the verdict "needs a ...
    testbed"; a metric that is not registered is reported in `note`.
    """
    run_dir = Path(run_dir)
    registry = metrics()
    kind = run_for(run_dir).testbed_kind
    rows = []
    for claim in (claims if claims is not None else load_claims()):
        readme = readme_claim(claim.id)
        row = {"claim": claim.id, "readme": readme, "statement": claim.statement,
               "expected": claim.expected_text(), "measured": "", "figure": claim_map()["figure"].get(readme, ""),
               "source": claim.source, "note": claim.note}
        if kind not in claim.testbed_kinds:
            rows.append({**row, "verdict": _needs(claim)})
            continue
        missing = [need for need in claim.needs if not (run_dir / need).exists()]
        if missing:  # e.g. stages.csv: only the instrumented local testbed writes it
            rows.append({**row, "verdict": f"needs {', '.join(missing)}"})
            continue
        fn = registry.get(claim.metric)
        if fn is None:
            value = None
            row["note"] = f"metric {claim.metric!r} is not registered" + (f"; {claim.note}" if claim.note else "")
        else:
            value = fn(run_dir, **claim.params)
        verdict = claim.check(value)
        rows.append({**row, "verdict": verdict,
                     "measured": "" if verdict == "not measured" else claim.format_value(float(value))})
    return pd.DataFrame(rows, columns=CLAIM_COLUMNS)


def verdicts(table: pd.DataFrame) -> pd.DataFrame:
    """Only claim id and verdict (stable across runs of the same outcome; what nbval compares)."""
    return table[["claim", "verdict"]].reset_index(drop=True)
