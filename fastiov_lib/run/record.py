"""The run record (run.json) as a typed model: what a run's analysis needs to know about how it was made.

Written when the run directory is created, from what the testbed's back end tells its creator (kind,
baseline variant, comparison) plus provenance (git, lock file, packages, tools, host facts); the
back end and the benchmark add to it as they go (containerd facts, round orders, end time).
Analysis and report read this record and never ask a back end.

Known keys are typed; unknown keys are kept as they are (extra="allow"), so a newer or an older
writer's run.json still loads. Files from before `schema_version` existed (version 0) get what
can be derived from what they hold (see `_from_older_file`).
"""
from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

# 1: typed record with baseline_variant, comparison, boot_params (no raw boot command line)
SCHEMA_VERSION = 1

Statistic = Literal["mean", "p50", "p90", "p99", "max"]
EffectKind = Literal["reduction", "increase", "difference"]

# Kernel boot parameters that change what a benchmark measures (CPU isolation, power states,
# IOMMU and DMA, huge pages, side-channel mitigations, preemption): run.json keeps these and drops
# the rest of /proc/cmdline, which on a hosted machine carries the provider's own settings
# (init paths, ports, tokens) and says nothing about the result (pyperf keeps a similar short list).
RESULT_BOOT_PARAMS = frozenset({
    "isolcpus", "nohz_full", "rcu_nocbs", "rcu_nocb_poll", "irqaffinity", "maxcpus", "nr_cpus", "nosmt", "nohz",
    "mitigations", "spectre_v2", "pti", "nopti", "threadirqs", "preempt",
    "intel_pstate", "processor.max_cstate", "intel_idle.max_cstate", "idle", "cpufreq.default_governor",
    "iommu", "intel_iommu", "amd_iommu", "iommu.passthrough", "iommu.strict", "pci", "vfio_iommu_type1.allow_unsafe_interrupts",
    "hugepages", "hugepagesz", "default_hugepagesz", "transparent_hugepage", "init_on_alloc", "init_on_free",
})


def boot_params(cmdline: str) -> dict[str, str]:
    """The result-changing parameters of a kernel command line (flags map to ""); nothing after `--`."""
    out: dict[str, str] = {}
    for word in cmdline.split():
        if word == "--":  # what follows goes to init, not to the kernel
            break
        key, _, value = word.partition("=")
        if key in RESULT_BOOT_PARAMS:
            out[key] = value
    return out


class Comparison(BaseModel):
    """How the ablation compares each variant with the baseline: a statistic and the kind of effect."""

    model_config = ConfigDict(frozen=True)

    statistic: Statistic
    effect: EffectKind


class BackendFacts(BaseModel):
    """What the creator of a run knows from the testbed's back end (run/ imports no back end)."""

    model_config = ConfigDict(frozen=True)

    kind: str
    baseline_variant: str
    comparison: Comparison
    described: dict[str, Any] = Field(default_factory=dict)  # the back end's describe(): runtime stack facts


class HostFacts(BaseModel):
    """Facts about the measuring host that change results (runs of different hosts are not pooled)."""

    model_config = ConfigDict(extra="allow")

    hostname: str | None = None
    kernel: str | None = None
    machine: str | None = None
    cpu_count: int | None = None
    cpu_model: str | None = None
    python: str | None = None
    load_avg: list[float] | None = None
    mem_total_kb: int | None = None
    governor: str | None = None
    boot_params: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _no_raw_cmdline(cls, data: Any) -> Any:
        # older run.json files copied /proc/cmdline whole: keep only what changes results
        if isinstance(data, dict) and "cmdline" in data:
            data = dict(data)
            raw = data.pop("cmdline")
            if "boot_params" not in data and isinstance(raw, str):
                data["boot_params"] = boot_params(raw)
        return data


class GitState(BaseModel):
    """The commit the run's code came from and which tracked files differed from it."""

    model_config = ConfigDict(extra="allow")

    commit: str | None = None
    dirty: bool | None = None
    dirty_files: list[str] = Field(default_factory=list)
    notebook_outputs_changed: list[str] = Field(default_factory=list)


class PythonLock(BaseModel):
    """The lock file the Python environment was installed from."""

    model_config = ConfigDict(extra="allow")

    file: str
    sha256: str | None = None


class RoundOrder(BaseModel):
    """The planned order of one sweep's rounds and the seed it was drawn with (None: as given)."""

    model_config = ConfigDict(extra="allow")

    experiment: str
    seed: int | None = None
    boot_group: str = ""
    design: str = ""
    rounds: list[tuple[str, int, int]] = Field(default_factory=list)  # (variant, concurrency, repeat)


class RunRecord(BaseModel):
    """run.json: how a run was made. Known keys typed, any other key kept as written."""

    model_config = ConfigDict(extra="allow")

    schema_version: int = 0  # files written before the field existed are version 0
    run_id: str
    testbed_name: str = "unknown"
    testbed_kind: str = "unknown"
    testbed: dict[str, Any] | None = None  # the testbed file as loaded (config.Testbed, dumped)
    testbed_file: str | None = None
    testbed_facts: dict[str, Any] = Field(default_factory=dict)  # the back end's account of its runtime stack
    profile_name: str | None = None
    profile: dict[str, Any] | None = None
    baseline_variant: str = "none"  # what the ablation and the claims compare against
    comparison: Comparison = Comparison(statistic="p50", effect="difference")
    host: HostFacts = Field(default_factory=HostFacts)
    git: GitState = Field(default_factory=GitState)
    python_lock: PythonLock | None = None
    python_packages: dict[str, str | None] = Field(default_factory=dict)
    tools: dict[str, str | None] = Field(default_factory=dict)
    containerd: dict[str, Any] | None = None  # the containerd a back end ran (version, flavour, binary)
    start_time: str | None = None
    end_time: str | None = None
    end_reason: str | None = None
    round_orders: list[RoundOrder] = Field(default_factory=list)  # one per sweep, before its first round
    extended_by: list[dict[str, Any]] = Field(default_factory=list)

    @model_validator(mode="before")
    @classmethod
    def _from_older_file(cls, data: Any) -> Any:
        return _from_older_file(data) if isinstance(data, dict) else data

    def to_json(self) -> dict[str, Any]:
        """The record as run.json holds it (extra keys included, in JSON types)."""
        return self.model_dump(mode="json")


# What the back ends declared for their kind when run.json did not yet record it (schema version 0):
# the committed example runs and any run made before the typed record. New runs record their own
# (tests/test_run_record.py checks that this table agrees with the back ends).
OLDER_FILE_COMPARISONS: dict[str, tuple[str, Comparison]] = {
    "local": ("none", Comparison(statistic="p50", effect="difference")),
    "vsriov": ("none", Comparison(statistic="p50", effect="difference")),
    "fastiov": ("vanilla", Comparison(statistic="mean", effect="reduction")),
}


def _name_of(section: Any) -> Any:
    return section.get("name") if isinstance(section, dict) else section if isinstance(section, str) else None


def _from_older_file(data: dict[str, Any]) -> dict[str, Any]:
    """Fill what a version-0 run.json left out from what it holds: names from the testbed and profile
    sections, the kind from the testbed section, baseline and comparison from the kind."""
    if data.get("schema_version", 0) >= 1:
        return data
    data = dict(data)
    testbed = data.get("testbed")
    if not data.get("testbed_name") and _name_of(testbed):
        data["testbed_name"] = _name_of(testbed)
    if not data.get("testbed_kind") and isinstance(testbed, dict) and testbed.get("kind"):
        data["testbed_kind"] = testbed["kind"]
    if not data.get("profile_name") and _name_of(data.get("profile")):
        data["profile_name"] = _name_of(data.get("profile"))
    if isinstance(testbed, str):  # a bare name in the oldest files
        data["testbed"] = {"name": testbed}
    if isinstance(data.get("profile"), str):
        data["profile"] = {"name": data["profile"]}
    older = OLDER_FILE_COMPARISONS.get(str(data.get("testbed_kind")))
    if older:
        data.setdefault("baseline_variant", older[0])
        data.setdefault("comparison", older[1])
    for key in ("git", "host"):  # written as null when they could not be collected
        if data.get(key) is None:
            data.pop(key, None)
    return data


def validation_problem(err: ValidationError) -> str:
    """The first problem of a validation error as one line: the key and what was expected."""
    first = err.errors()[0]
    key = ".".join(str(p) for p in first["loc"]) or "(top level)"
    got = first.get("input")
    seen = f" (got {type(got).__name__} {str(got)[:40]!r})" if not isinstance(got, (dict, list)) else ""
    more = f" (+{len(err.errors()) - 1} more problems)" if len(err.errors()) > 1 else ""
    return f"key '{key}': {first['msg']}{seen}{more}"
