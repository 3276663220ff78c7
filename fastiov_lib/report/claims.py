"""Claims: statements with a metric and a threshold, checked against a run directory.

Claims live in data files (fastiov_lib/data/claims/*.yaml). A metric is a function registered by
name that takes the run directory and returns an Estimate (analysis.intervals: the value, its
interval from resampled rounds and the rounds behind it), an exact value (a count or fraction of
everything the run recorded), or None when the run did not measure it. The verdict
(report.verdicts) is holds / fails / inconclusive from the interval, or not measured; a claim
this run's testbed cannot check says which testbed it needs. Every claim file says how its
thresholds were set (`threshold_from`), and a threshold changed after the data was seen carries
the change and its reason in `history`, shown in the report. `role: check` marks harness checks
(the artifact works as it should), shown apart from the claims about the system.
Each metric module lists its metrics by name in METRICS; `metrics()` gathers those lists.
"""
from __future__ import annotations

import functools
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Literal

import pandas as pd
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from fastiov_lib.analysis import stats as analysis
from fastiov_lib.analysis.intervals import Estimate, as_estimate
from fastiov_lib.config import ConfigError
from fastiov_lib.report import stage_figures, vsriov_metrics
from fastiov_lib.report.verdicts import decide

CLAIMS_DIR = Path(str(resources.files("fastiov_lib") / "data" / "claims"))

Metric = Callable[..., "Estimate | float | None"]
METRICS: dict[str, Metric] = {}  # this module's own (none; tests add theirs)

Verdict = Literal["holds", "fails", "inconclusive", "not measured", "needs a fastiov testbed",
                  "needs a vsriov testbed", "needs a fastiov or vsriov testbed"]


class ThresholdChange(BaseModel):
    """One change of a claim's threshold (or statement), kept in the claim file and shown in the report."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    date: str
    change: str  # e.g. "threshold 0.8 -> 0.5"
    reason: str
    after_seeing_data: bool  # True: the change was made knowing what a run measured


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
    threshold_from: str = ""  # how the threshold was set (the paper's number, a kernel constant, ...)
    unit: str = ""  # "%" shows fractions as percentages; "ms", "pods", "" as is
    published: float | None = None  # the value the source reports, shown beside the threshold
    role: Literal["claim", "check"] = "claim"  # check: a harness check, not a claim about the system
    testbed_kinds: list[Literal["local", "fastiov", "vsriov"]] = Field(min_length=1)
    needs: list[str] = Field(default_factory=list)  # run files it needs (e.g. stages.csv); absent: not applicable
    note: str = ""
    history: list[ThresholdChange] = Field(default_factory=list)

    @model_validator(mode="after")
    def _threshold_shape(self) -> "Claim":
        if self.comparison == "between":
            if not (isinstance(self.threshold, list) and len(self.threshold) == 2):
                raise ValueError("comparison 'between' needs threshold: [low, high]")
        elif isinstance(self.threshold, list):
            raise ValueError(f"comparison {self.comparison!r} needs a single number as threshold")
        return self

    def judge(self, measured: Estimate | float | None) -> tuple[str, str]:
        """The verdict on a metric's result, and why (what decided it, or what would)."""
        return decide(as_estimate(measured), self.comparison, self.threshold)

    def check(self, measured: Estimate | float | None) -> str:
        """The verdict alone (holds, fails, inconclusive, not measured)."""
        return self.judge(measured)[0]

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

    def format_measured(self, measured: Estimate | float | None) -> str:
        """The estimate with its interval and what it rests on, e.g. '65.0% [58.1%, 70.2%] (3 rounds)'."""
        est = as_estimate(measured)
        if est is None or not est.measured:
            return ""
        text = self.format_value(est.value)
        if est.exact:
            return text
        if est.has_interval:
            text += f" [{self.format_value(est.low)}, {self.format_value(est.high)}]"
        rounds = f"{est.rounds} round{'s' if est.rounds != 1 else ''}" if est.rounds else ""
        samples = f"{est.samples} samples" if est.samples and est.samples != est.rounds else ""
        rest = ", ".join(x for x in (rounds, samples) if x)
        return text + (f" ({rest})" if rest else "")

    def expected_text(self) -> str:
        if self.comparison == "between":
            text = f"between {self.format_value(self.threshold[0])} and {self.format_value(self.threshold[1])}"
        else:
            text = f"{self.comparison} {self.format_value(float(self.threshold))}"
        if self.published is not None:
            text += f" (published: {self.format_value(self.published)})"
        return text


class RemovedClaim(BaseModel):
    """A claim taken out of a claims file, with when and why (kept so the reason stays on record)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    date: str
    reason: str


def _read_claims_file(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot read claims: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("claims"), list):
        raise ConfigError(f"{path}: expected a top-level 'claims:' list")
    unknown = sorted(set(data) - {"claims", "removed"})
    if unknown:
        raise ConfigError(f"{path}: unknown top-level key(s) {', '.join(unknown)}; expected claims, removed")
    return data


def _entry_error(path: Path, i: int, entry: Any, err: ValidationError) -> ConfigError:
    first = err.errors()[0]
    key = ".".join(str(p) for p in first["loc"]) or "(entry)"
    cid = entry.get("id") if isinstance(entry, dict) else None
    return ConfigError(f"{path}: claim #{i + 1} ({cid or 'no id'}): key '{key}': {first['msg']}")


def load_claims(paths: list[Path] | None = None) -> list[Claim]:
    """Every claim in the given YAML files (default: all of fastiov_lib/data/claims/*.yaml).

    Raises ConfigError naming the file and the claim on an invalid entry or a duplicate id.
    """
    metrics()  # so that every metric a claim names can be looked up
    files = sorted(CLAIMS_DIR.glob("*.yaml")) if paths is None else [Path(p) for p in paths]
    out: list[Claim] = []
    seen: dict[str, Path] = {}
    for path in files:
        data = _read_claims_file(path)
        for i, entry in enumerate(data["claims"]):
            try:
                claim = Claim.model_validate(entry)
            except ValidationError as err:
                raise _entry_error(path, i, entry, err) from None
            if claim.id in seen:
                raise ConfigError(f"{path}: claim id {claim.id!r} already defined in {seen[claim.id]}")
            seen[claim.id] = path
            out.append(claim)
    return out


def removed_claims(paths: list[Path] | None = None) -> list[RemovedClaim]:
    """The claims taken out of the claim files, with their dates and reasons."""
    files = sorted(CLAIMS_DIR.glob("*.yaml")) if paths is None else [Path(p) for p in paths]
    out = []
    for path in files:
        for i, entry in enumerate(_read_claims_file(path).get("removed") or []):
            try:
                out.append(RemovedClaim.model_validate(entry))
            except ValidationError as err:
                raise _entry_error(path, i, entry, err) from None
    return out


def metrics() -> dict[str, Metric]:
    """Every metric by name: the local and FastIOV-host runs', the virtual SR-IOV host's and the stage
    records' (each module lists its own in METRICS). A metric returns an Estimate for anything
    sampled; a bare number is taken as exact (a count or fraction of everything the run recorded)."""
    from fastiov_lib.report import claim_metrics  # it reads runs through run_for, defined here

    return {**METRICS, **claim_metrics.METRICS, **vsriov_metrics.METRICS, **stage_figures.METRICS}


CLAIM_MAP_FILE = Path(str(resources.files("fastiov_lib") / "data" / "claim_map.yaml"))


@functools.lru_cache(maxsize=1)
def claim_map() -> dict[str, dict[str, str]]:
    """README claim per claim-id prefix, and the figure per README claim (data/claim_map.yaml)."""
    data = yaml.safe_load(CLAIM_MAP_FILE.read_text()) or {}
    return {"readme": dict(data.get("readme", {})), "figure": dict(data.get("figure", {}))}


def readme_claim(claim_id: str) -> str:
    """The README's claim (C1..C11) a claim id belongs to, or ""."""
    return claim_map()["readme"].get(claim_id.split("-", 1)[0], "")


def _mtime_key(run_dir: Path) -> tuple[str, int, int, int]:
    p = Path(run_dir)
    stamps = [(p / f).stat().st_mtime_ns if (p / f).exists() else 0 for f in ("pods.jsonl", "stages.csv", "rounds.jsonl")]
    return str(p.resolve()), stamps[0], stamps[1], stamps[2]


@functools.lru_cache(maxsize=8)
def _cached_run(key: tuple[str, int, int, int]) -> analysis.Run:
    return analysis.load_run(key[0])


def run_for(run_dir: Path) -> analysis.Run:
    """The loaded run (cached while pods.jsonl, stages.csv and rounds.jsonl are unchanged)."""
    return _cached_run(_mtime_key(run_dir))


# --------------------------------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------------------------------

CLAIM_COLUMNS = ["claim", "role", "readme", "statement", "expected", "measured", "verdict", "why", "figure",
                 "source", "note"]


def applicable_claims(kind: str, claims: list[Claim] | None = None) -> list[Claim]:
    """The claims that apply to a testbed kind."""
    return [c for c in (claims if claims is not None else load_claims()) if kind in c.testbed_kinds]


def _needs(claim: Claim) -> str:
    kinds = [k for k in ("fastiov", "vsriov", "local") if k in claim.testbed_kinds]
    return f"needs a {' or '.join(kinds)} testbed"


def evaluate_claim(claim: Claim, run_dir: Path, kind: str) -> dict[str, Any]:
    """One claim checked on a run: expected, measured (estimate, interval, rounds), verdict and why."""
    readme = readme_claim(claim.id)
    row = {"claim": claim.id, "role": claim.role, "readme": readme, "statement": claim.statement,
           "expected": claim.expected_text(), "measured": "", "why": "",
           "figure": claim_map()["figure"].get(readme, ""), "source": claim.source, "note": claim.note}
    if kind not in claim.testbed_kinds:
        return {**row, "verdict": _needs(claim)}
    missing = [need for need in claim.needs if not (run_dir / need).exists()]
    if missing:  # e.g. stages.csv: only the instrumented local testbed writes it
        return {**row, "verdict": f"needs {', '.join(missing)}"}
    fn = metrics().get(claim.metric)
    if fn is None:
        value = None
        row["note"] = f"metric {claim.metric!r} is not registered" + (f"; {claim.note}" if claim.note else "")
    else:
        value = fn(run_dir, **claim.params)
    verdict, why = claim.judge(value)
    return {**row, "verdict": verdict, "why": why, "measured": claim.format_measured(value)}


def evaluate_claims(run_dir: str | Path, claims: list[Claim] | None = None) -> pd.DataFrame:
    """Every claim, checked where the run's testbed kind can check it: expected, measured, verdict, why.

    `measured` is the estimate in the claim's unit with its interval and the rounds behind it ("" when
    the metric returned None: verdict "not measured"); a claim for another kind of testbed has the
    verdict "needs a ... testbed"; a metric that is not registered is reported in `note`.
    """
    run_dir = Path(run_dir)
    kind = run_for(run_dir).testbed_kind
    rows = [evaluate_claim(c, run_dir, kind) for c in (claims if claims is not None else load_claims())]
    return pd.DataFrame(rows, columns=CLAIM_COLUMNS)


def verdicts(table: pd.DataFrame) -> pd.DataFrame:
    """Only claim id and verdict (stable across runs of the same outcome; what nbval compares)."""
    return table[["claim", "verdict"]].reset_index(drop=True)


def threshold_history(claims: list[Claim] | None = None) -> pd.DataFrame:
    """Every recorded change of a threshold, and every removed claim, with dates and reasons."""
    rows = [{"claim": c.id, "date": h.date, "change": h.change, "after seeing data": h.after_seeing_data,
             "reason": h.reason} for c in (claims if claims is not None else load_claims()) for h in c.history]
    rows += [{"claim": r.id, "date": r.date, "change": "removed", "after seeing data": True, "reason": r.reason}
             for r in (removed_claims() if claims is None else [])]
    return pd.DataFrame(rows, columns=["claim", "date", "change", "after seeing data", "reason"])

