"""The testbed back-end interface: everything that differs between the local, virtual and real hosts.

The benchmark runner, the notebook steps, the commands and the report hold a `TestbedBackend` and
ask it; none of them reads a testbed's kind (`fastiov_lib.testbeds.backend_for` does, once).
Tables a step returns for a notebook are pandas DataFrames keyed by name.
"""
from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar, ContextManager, Literal, Protocol, Sequence

from fastiov_lib.run.record import BackendFacts, Comparison

if TYPE_CHECKING:  # imported for annotations only: the back ends import these packages themselves
    import pandas as pd

    from fastiov_lib.config import Profile, Testbed
    from fastiov_lib.run.rundir import RunDir
    from fastiov_lib.testbeds.checks import Check

Experiment = Literal["startup", "ablation", "app"]
Tables = dict[str, "pd.DataFrame"]


@dataclass
class PodTarget:
    """Where and how the runner starts pods: the CRI endpoint and, per variant, handler and network."""

    testbed_name: str
    testbed_kind: str
    socket: Path
    cri_api: str
    rpc_timeout_s: float
    pod_log_root: Path
    handler: Callable[[str], str]  # variant -> runtime handler
    network: Callable[[str], str]  # variant -> network label recorded with each pod
    host_network: Callable[[str], bool]  # variant -> pod shares the host netns (no CNI call)
    reachable: Callable[[str], bool]  # variant -> the host can reach the pod's IP (network-ready probe)
    log_file: Path | None = None  # the runtime's log, sliced per round into the run's logs/
    cleanup: Callable[[], list[str]] | None = None  # removes leftovers of ours; returns what it found
    runtime_alive: Callable[[], bool] = lambda: True
    images: dict[str, str] = field(default_factory=dict)  # role (pause, workload) -> image reference
    pod_name: Callable[[int, int], str] | None = None  # (tenant, index), both 1-based -> sandbox name


@dataclass(frozen=True)
class SweepSpec:
    """One sweep the runner performs: these variants at these concurrency levels, `repeats` times.

    All variants of one spec run on the same booted host kernel (`kernel`, None = whatever runs):
    rounds may be interleaved within a spec, never across specs of different kernels."""

    experiment: str
    variants: tuple[str, ...]
    concurrency: tuple[int, ...]
    repeats: int
    tenants: int = 1
    kernel: str | None = None
    functions: tuple[str, ...] = ()  # app test: the serverless functions, one sweep each


@dataclass(frozen=True)
class KernelInfo:
    """A host kernel a campaign boots: what it is, how the booted one is recognised, how to get into it."""

    name: str
    description: str
    recognised_by: str
    how_to_boot: tuple[str, ...]  # the steps between boots, in order
    in_place: bool = False  # switched without a reboot (e.g. a module swap in a rehearsal)


@dataclass
class SweepPlan:
    """The sweeps of a profile's experiment on a testbed, and what was left out and why."""

    specs: list[SweepSpec] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class AppEndpoint:
    """Where the app test's storage server listens and which folder it serves."""

    host: str
    port: int
    data_dir: Path
    network: str  # the variant (network) the app pods use


class BackendError(RuntimeError):
    """A back end cannot do what it was asked (the testbed is not up, a component failed, a setting is
    wrong); the message says which and what to do. Every back end's errors derive from it, so the
    runner, the notebooks and the commands catch this one class."""


class WrongKernel(BackendError):
    """A variant was asked for on a host kernel it is not measured on; names both."""


class NoPodsOnTestbed(BackendError):
    """The testbed starts no pods (the virtual SR-IOV host measures VF set-up instead)."""


class RoundHooksLike(Protocol):
    """What the runner calls around each round (see fastiov_lib.bench.engine.RoundHooks)."""

    def before_round(self, round_info: Any, run: "RunDir") -> None: ...

    def after_round(self, round_info: Any, run: "RunDir") -> None: ...


class TestbedBackend(ABC):
    """One testbed kind's answers to what differs per testbed."""

    kind: ClassVar[str]
    description: ClassVar[str]
    runs_pods: ClassVar[bool] = True
    baseline_variant: ClassVar[str]  # what the ablation and claims compare against
    default_variant: ClassVar[str] = ""  # what a sweep runs when no variant is named
    comparison: ClassVar[tuple[str, str]] = ("p50", "difference")  # (statistic, effect kind) of the ablation

    def __init__(self, testbed: "Testbed"):
        self.testbed = testbed

    @property
    def name(self) -> str:
        return self.testbed.name

    # ---- readiness, build, NIC (02, 01, 03)
    @abstractmethod
    def checks(self) -> list["Check"]:
        """Readiness checks of this testbed, run for real."""

    @abstractmethod
    def build(self, run: "RunDir") -> Tables:
        """What 01_build does here for real; tables named by what they show (at least `done`)."""

    @abstractmethod
    def prepare_nic(self, run: "RunDir", profile: "Profile") -> Tables:
        """What 03_nic does here for real (`result`, `timings`, and any measurements)."""

    # ---- lifetime
    def up(self) -> str:
        """Bring the testbed up (idempotent); returns an account of what runs."""
        return f"testbed {self.name!r} ({self.description}): nothing to bring up here"

    def down(self) -> tuple[str, bool]:
        """Tear down what `up` started: (account, everything went well)."""
        return f"testbed {self.name!r}: nothing to tear down", True

    def cleanup(self) -> tuple[str, bool]:
        """Remove pod leftovers after a killed benchmark: (account, nothing is left)."""
        return f"testbed {self.name!r}: nothing to clean up", True

    def exclusive(self, what: str) -> ContextManager[None]:
        """Held while one process drives this testbed (up, bench, down); a second one waits or is refused."""
        return contextlib.nullcontext()

    # ---- pods
    def pod_target(self, variants: Sequence[str], concurrency: Sequence[int]) -> PodTarget:
        """The CRI endpoint and per-variant settings for a sweep over `variants` at `concurrency`."""
        raise NoPodsOnTestbed(self.no_pods_reason())

    def round_hooks(self) -> RoundHooksLike | None:
        """Callbacks around each round (variant switching, log collection), or None."""
        return None

    def sweep_plan(self, profile: "Profile", experiment: Experiment) -> SweepPlan:
        """The sweeps of `experiment` that `profile` asks for on this testbed."""
        return SweepPlan(notes=[self.no_pods_reason()])

    def app_endpoint(self, network: str | None) -> AppEndpoint:
        """Where the app test's storage server listens on this testbed."""
        raise NoPodsOnTestbed(self.no_pods_reason())

    # ---- the host kernels of a campaign (a real host measures vanilla and FastIOV on different boots)
    def campaign_specs(self, profile: "Profile", experiment: str) -> list[SweepSpec]:
        """Every sweep of `experiment` over all boots (sweep_plan gives the booted kernel's share)."""
        return self.sweep_plan(profile, experiment).specs  # type: ignore[arg-type]

    def kernels(self) -> dict[str, KernelInfo]:
        """The host kernels variants need, by name ({}: every variant runs on whatever kernel runs)."""
        return {}

    def kernel_for_variant(self, variant: str) -> str | None:
        """The kernel a variant is measured on (None: any)."""
        return None

    def booted_kernel(self) -> str | None:
        """Which of `kernels()` runs now (None: none of them, or the testbed has none)."""
        return None

    def kernel_release(self) -> str:
        """The release of the kernel pods run on (recorded with every round)."""
        import platform

        return platform.release()

    def check_kernel(self, variants: Sequence[str]) -> None:
        """WrongKernel unless every variant's kernel is the booted one."""
        booted = self.booted_kernel()
        for v in variants:
            need = self.kernel_for_variant(v)
            if need is not None and need != booted:
                info = self.kernels().get(need)
                raise WrongKernel(
                    f"variant {v!r} is measured on the {need} kernel ({info.description if info else need}); "
                    f"this host runs {self.kernel_release() or 'an unknown kernel'}"
                    f" ({'the ' + booted + ' kernel' if booted else 'neither kernel of the campaign'}); "
                    f"reboot as `fastiov-artifact campaign plan` says, then continue the same run directory")

    def round_needs(self, experiment: str, variant: str, concurrency: int) -> dict[str, int]:
        """What one round needs from the host (e.g. hugepages_2m, vfs)."""
        return {}

    def capacity(self, live: bool = False) -> dict[str, int]:
        """What the host offers against round_needs: as the testbed file sets it up, or (live) as it is now."""
        return {}

    def estimated_round_s(self, experiment: str, variant: str, concurrency: int) -> float:
        """A rough wall time of one round, for the campaign plan (not a measurement)."""
        return 5.0 + 0.05 * concurrency

    def no_pods_reason(self) -> str:
        """Why this testbed starts no pods ("" where it does)."""
        return ""

    # ---- the real host's view, shown on every testbed (01-03; elsewhere: fastiov_host.examples.ExampleRealHost)
    @abstractmethod
    def real_host_testbed(self) -> "Testbed":
        """The real-host testbed whose build and NIC plans the notebooks show."""

    @abstractmethod
    def real_host_checks(self) -> tuple[list["Check"], str]:
        """The real host's readiness checks and where they were run."""

    @abstractmethod
    def real_host_nic_plan(self) -> list[dict[str, str]]:
        """The real host's NIC set-up as plan rows."""

    # ---- provenance
    def describe(self) -> dict[str, Any]:
        """Facts about this testbed's runtime stack for run.json (versions, paths)."""
        return {"kind": self.kind, "name": self.name}

    def facts(self) -> BackendFacts:
        """What a run made here records about its testbed (run.json): kind, baseline, comparison, describe()."""
        statistic, effect = self.comparison
        return BackendFacts(kind=self.kind, baseline_variant=self.baseline_variant,
                            comparison=Comparison(statistic=statistic, effect=effect), described=self.describe())
