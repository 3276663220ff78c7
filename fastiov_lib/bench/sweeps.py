"""Profile sweeps: what a profile's experiment asks of a testbed, run through the round engine."""
from __future__ import annotations

from typing import Sequence

from fastiov_lib.bench.engine import SweepResult, run_app_sweep, run_startup_sweep
from fastiov_lib.config import Profile
from fastiov_lib.run.rundir import RunDir
from fastiov_lib.testbeds.base import Experiment, SweepSpec, TestbedBackend


def merge_results(results: Sequence[SweepResult]) -> SweepResult:
    """One SweepResult from several (records and rounds concatenated, messages joined)."""
    first = results[0]
    return SweepResult(first.testbed, first.experiment,
                       records=[r for res in results for r in res.records],
                       rounds=[r for res in results for r in res.rounds],
                       message="; ".join(res.message for res in results if res.message),
                       interrupted=any(res.interrupted for res in results),
                       driver_cpu_s=sum(res.driver_cpu_s for res in results))


def interleaved_blocks(specs: Sequence[SweepSpec]) -> list[list[SweepSpec]]:
    """Specs whose rounds can interleave: the same experiment, boot group, repeats and tenants.

    A back end lists one spec per variant where variants run at different levels (the local
    hostdev pool); those run as one sweep so that their rounds interleave. Variants that need
    another boot (a real host's `kernel`) are in another spec and cannot interleave with these.
    """
    blocks: dict[tuple, list[SweepSpec]] = {}
    for spec in specs:
        key = (spec.experiment, spec.kernel or "", spec.repeats, spec.tenants)
        blocks.setdefault(key, []).append(spec)
    return list(blocks.values())


def run_profile_sweep(backend: TestbedBackend, run: RunDir, profile: Profile, experiment: Experiment,
                      seed: int | None = None) -> SweepResult:
    """Every sweep the back end plans for `experiment` under `profile`, with its round hooks; the
    rounds of every variant that can share a boot run interleaved (bench.round_order)."""
    plan = backend.sweep_plan(profile, experiment)
    hooks = backend.round_hooks()
    results: list[SweepResult] = []
    for block in interleaved_blocks(plan.specs):
        first = block[0]
        cells = [(v, c) for spec in block for v in spec.variants for c in spec.concurrency]
        if experiment == "app":  # one sweep per variant and function (each function has its own input)
            for spec in block:
                for variant in spec.variants:
                    for function in spec.functions or ("download-hash",):
                        results.append(run_app_sweep(backend, run, spec.concurrency, spec.repeats, network=variant,
                                                     file_mb=profile.app_file_mb, timeout_s=profile.pod_timeout_s,
                                                     hooks=hooks, tenants=spec.tenants, function=function,
                                                     seed=seed))
        else:
            results.append(run_startup_sweep(backend, run, [c for _, c in cells], first.repeats,
                                             experiment=first.experiment, timeout_s=profile.pod_timeout_s,
                                             hooks=hooks, tenants=first.tenants, seed=seed,
                                             boot_group=first.kernel or "", cells=cells))
    merged = merge_results(results) if results else SweepResult(backend.name, experiment)
    merged.message = "; ".join([m for m in [merged.message] if m] + plan.notes)
    return merged
