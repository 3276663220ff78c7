"""The per-notebook steps: a few lines each, through the testbed back end (never its kind).

Each returns named tables (pandas DataFrames) or a sweep result that the notebook shows inline.
"""
from __future__ import annotations

from typing import Any

import pandas as pd

from fastiov_lib.notebook.session import Session
from fastiov_lib.testbeds.checks import Check

PLAN_COLUMNS = ["step", "action", "target", "value", "why"]


def checks_frame(checks: list[Check]) -> pd.DataFrame:
    """Checks as a table: name, status, seen, fix."""
    return pd.DataFrame([c.as_dict() for c in checks], columns=["name", "status", "seen", "fix"])


def status_counts(checks: list[Check]) -> pd.DataFrame:
    """pass/warn/fail counts (a stable summary for the notebooks)."""
    return pd.DataFrame([{"status": st, "checks": sum(1 for c in checks if c.status == st)}
                         for st in ("pass", "warn", "fail")])


def build_step(session: Session) -> dict[str, pd.DataFrame]:
    """01_build: the real host's build plan (this host's on a real host), then this testbed's build for real.

    Keys: summary, plan, manifest, patches, done.
    """
    from fastiov_lib.testbeds.fastiov_host.build.builder import Builder
    from fastiov_lib.testbeds.fastiov_host.build.plan_format import plan_summary
    from fastiov_lib.testbeds.fastiov_host.build.manifest import manifest_table

    done = session.backend.build(session.run)["done"]
    builder = Builder(session.backend.real_host_testbed())
    rows = builder.plan()
    return {
        "summary": pd.DataFrame(plan_summary(rows)),
        "plan": pd.DataFrame(rows),
        "manifest": pd.DataFrame(manifest_table(builder.manifest, builder.ctx.cache_dir)),
        "patches": pd.DataFrame([{k: v for k, v in p.model_dump().items() if k not in ("url", "note")}
                                 for p in builder.series.patches]),
        "done": done,
    }


def host_step(session: Session) -> dict[str, pd.DataFrame]:
    """02_host: this testbed's readiness checks, and the real host's (on a fake tree unless this is one)."""
    mine = session.backend.checks()
    real, where = session.backend.real_host_checks()
    real_frame = checks_frame(real)
    real_frame.insert(0, "checked on", where)
    return {"checks": checks_frame(mine), "summary": status_counts(mine),
            "real_host_checks": real_frame, "real_host_summary": status_counts(real)}


def _write_kind(target: str) -> str:
    """Short label of a planned write's file (for the plan summary)."""
    name = target.rsplit("/", 1)[-1]
    return "fastiov ioctl" if "fastiov" in name or name == "vfio" else name


def nic_step(session: Session) -> dict[str, pd.DataFrame]:
    """03_nic: the real host's NIC plan, then this testbed's NIC step for real.

    Keys: plan, plan_summary, result, timings (and whatever else the back end measured).
    """
    plan = pd.DataFrame(session.backend.real_host_nic_plan(), columns=PLAN_COLUMNS)
    tables = session.backend.prepare_nic(session.run, session.profile)
    summary = (plan.assign(kind=plan["target"].map(_write_kind))
               .groupby(["step", "kind"], sort=False).size().reset_index(name="writes"))
    return {"plan": plan, "plan_summary": summary, **tables}


def startup_step(session: Session) -> Any:
    """04_bench: the profile's startup sweep."""
    from fastiov_lib.bench.sweeps import run_profile_sweep

    return run_profile_sweep(session.backend, session.run, session.profile, "startup")


def app_step(session: Session) -> Any:
    """04_bench's app test: the profile's app sweep."""
    from fastiov_lib.bench.sweeps import run_profile_sweep

    return run_profile_sweep(session.backend, session.run, session.profile, "app")


def ablation_step(session: Session) -> Any:
    """05_ablation: every variant (network mode locally) the profile names, at its ablation levels."""
    from fastiov_lib.bench.sweeps import run_profile_sweep

    return run_profile_sweep(session.backend, session.run, session.profile, "ablation")
