"""A real host's sweeps per boot and what each round needs (hugepages, VFs).

Every experiment of a profile becomes sweeps grouped by the host kernel their variants need (one
`SweepSpec` per experiment and kernel, variants in the profile's order), so the rounds of one boot
can run (and be interleaved) together and the others wait for the reboot.

Hugepages: kata's `enable_hugepages` is on exactly for the variants that run FastIOV's QEMU (its
lazy-mapping path runs only with preallocated guest memory), and then each pod's whole guest RAM
comes from 2 MiB pages: a round of N pods needs N x guest memory / 2 MiB of them. VFs: fastiov-cni
gives tenant n the n-th VF, and pods are spread one per tenant, so an SR-IOV round of N pods needs N
VFs (the ipvtap and no-network baselines need none).
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from fastiov_lib.config import FastiovHostSettings, Profile
from fastiov_lib.testbeds.base import SweepSpec
from fastiov_lib.testbeds.fastiov_host.kernels import BOOT_ORDER
from fastiov_lib.testbeds.fastiov_host.runtime_config import get_variant

HUGEPAGE_MB = 2


def guest_memory_mb(s: FastiovHostSettings, variant: str) -> int:
    """A variant's guest memory (its own, else the testbed's guest_memory_mb)."""
    return get_variant(variant).memory_mb or s.guest_memory_mb


def uses_hugepages(variant: str) -> bool:
    """Whether kata preallocates the variant's guest memory from hugepages (FastIOV's QEMU)."""
    return get_variant(variant).qemu == "fastiov"


def round_needs(s: FastiovHostSettings, variant: str, concurrency: int) -> dict[str, int]:
    """2 MiB hugepages and VFs one round of `concurrency` pods of `variant` needs."""
    hugepages = concurrency * guest_memory_mb(s, variant) // HUGEPAGE_MB if uses_hugepages(variant) else 0
    vfs = concurrency if get_variant(variant).network == "sriov" else 0
    return {"hugepages_2m": hugepages, "vfs": vfs}


def _groups(profile: Profile, experiment: str) -> list[tuple[str, list[str], list[int], int, tuple[str, ...]]]:
    if experiment == "startup":
        out = [("startup", list(profile.variants), list(profile.concurrency), profile.repeats, ())]
        if profile.memory_variants:
            out.append(("memory", list(profile.memory_variants), list(profile.memory_concurrency), profile.repeats, ()))
        return out
    if experiment == "ablation":
        return [("ablation", list(profile.ablation_variants or profile.variants), list(profile.ablation_concurrency),
                 profile.repeats, ())]
    if experiment == "app":
        return [("app", list(profile.app_variants), list(profile.app_concurrency), profile.app_repeats,
                 tuple(profile.app_functions))]
    raise ValueError(f"unknown experiment {experiment!r} (startup, ablation, app)")


def profile_specs(profile: Profile, experiment: str, kernel_of: Callable[[str], str | None],
                  tenants: int) -> list[SweepSpec]:
    """The sweeps of one of the profile's experiments, one per (experiment, kernel), boots in order."""
    specs = []
    for label, variants, levels, repeats, functions in _groups(profile, experiment):
        for v in variants:
            get_variant(v)  # an unknown variant name fails here, naming it
        for kernel in (*BOOT_ORDER, None):
            mine = tuple(v for v in variants if kernel_of(v) == kernel)
            if mine:
                specs.append(SweepSpec(label, mine, tuple(levels), repeats, tenants=tenants, kernel=kernel,
                                       functions=functions))
    return specs


def capacity(s: FastiovHostSettings, root: Path | None = None) -> dict[str, int]:
    """Hugepages, VFs and tenants: as the testbed file sets them up, or (root given) reserved there now."""
    hugepages = s.hugepages_2m
    if root is not None:
        try:
            hugepages = int((Path(root) / "sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages").read_text().strip())
        except (OSError, ValueError):
            hugepages = 0
    return {"hugepages_2m": hugepages, "vfs": len(s.pfs) * s.vfs_per_pf, "tenants": s.tenants}


# Mean startup per pod at 200 concurrent pods, derived from the paper's published figures (REFERENCE.md):
# SR-IOV adds 12.2 s at 200 and vanilla is +305.2% over no network, so no network ~4.0 s, vanilla ~16.2 s,
# FastIOV (+39.1%) ~5.6 s. Per pod: those means / 200. Only the plan's time estimate uses them.
_PER_POD_S = {"host": 4.0 / 200, "ipvtap": 4.0 / 200, "vanilla": 16.2 / 200, "fastiov": 5.6 / 200}
_MEMORY_2G = {"vanilla": 1.605, "fastiov": 1.215}  # the paper's 2 GB increases
APP_FUNCTION_S = 15.0  # a serverless function's run after its pod started (input download + compute)


def estimated_round_s(s: FastiovHostSettings, experiment: str, variant: str, concurrency: int) -> float:
    """A rough round time: hooks (settle, clean-up) + the slowest pod (~1.5x mean) + teardown (+ the app)."""
    v = get_variant(variant)
    kind = "host" if v.network == "host" else "ipvtap" if v.network == "ipvtap" else \
        ("fastiov" if v.qemu == "fastiov" and v.host_kernel == "fastiov" else "vanilla")
    per_pod = _PER_POD_S[kind] * (_MEMORY_2G.get(kind, 1.0) if (v.memory_mb or 0) >= 2048 else 1.0)
    slowest = 1.5 * per_pod * concurrency + 1.0
    return s.log_settle_s + 5.0 + slowest + 0.05 * concurrency + (APP_FUNCTION_S if experiment == "app" else 0.0)
