"""Profile sweeps: what a profile's experiment asks of a testbed, run through the round engine."""
from __future__ import annotations

from typing import Sequence

from fastiov_lib.bench.engine import SweepResult, run_app_sweep, run_startup_sweep
from fastiov_lib.config import Profile
from fastiov_lib.run.rundir import RunDir
from fastiov_lib.testbeds.base import Experiment, TestbedBackend


def merge_results(results: Sequence[SweepResult]) -> SweepResult:
    """One SweepResult from several (records and rounds concatenated, messages joined)."""
    first = results[0]
    return SweepResult(first.testbed, first.experiment,
                       records=[r for res in results for r in res.records],
                       rounds=[r for res in results for r in res.rounds],
                       message="; ".join(res.message for res in results if res.message),
                       interrupted=any(res.interrupted for res in results),
                       driver_cpu_s=sum(res.driver_cpu_s for res in results))


def run_profile_sweep(backend: TestbedBackend, run: RunDir, profile: Profile, experiment: Experiment) -> SweepResult:
    """Every sweep the back end plans for `experiment` under `profile`, with its round hooks."""
    plan = backend.sweep_plan(profile, experiment)
    hooks = backend.round_hooks()
    results: list[SweepResult] = []
    for spec in plan.specs:
        if experiment == "app":  # one sweep per variant and function (each function has its own input)
            for variant in spec.variants:
                for function in spec.functions or ("download-hash",):
                    results.append(run_app_sweep(backend, run, spec.concurrency, spec.repeats, network=variant,
                                                 file_mb=profile.app_file_mb, timeout_s=profile.pod_timeout_s,
                                                 hooks=hooks, tenants=spec.tenants, function=function))
        else:
            results.append(run_startup_sweep(backend, run, spec.concurrency, spec.repeats, variants=spec.variants,
                                             experiment=spec.experiment, timeout_s=profile.pod_timeout_s,
                                             hooks=hooks, tenants=spec.tenants))
    merged = merge_results(results) if results else SweepResult(backend.name, experiment)
    merged.message = "; ".join([m for m in [merged.message] if m] + plan.notes)
    return merged
