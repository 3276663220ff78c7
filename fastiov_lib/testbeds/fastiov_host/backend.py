"""The real FastIOV host behind the back-end interface: an SR-IOV NIC, Kata, the patched stack."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Sequence

import pandas as pd

from fastiov_lib.config import Profile
from fastiov_lib.run.rundir import RunDir
from fastiov_lib.testbeds.base import AppEndpoint, KernelInfo, PodTarget, SweepPlan, SweepSpec, Tables, TestbedBackend
from fastiov_lib.testbeds.checks import Check
from fastiov_lib.testbeds.base import BackendError


class FastiovHostError(BackendError):
    """The real host is not set up for what was asked (e.g. no storage interface for the app test)."""


def _interface_address(ifname: str) -> str:
    out = subprocess.run(["ip", "-j", "-4", "addr", "show", "dev", ifname], capture_output=True, text=True)
    try:
        return json.loads(out.stdout)[0]["addr_info"][0]["local"]
    except (ValueError, IndexError, KeyError):
        raise FastiovHostError(f"interface {ifname!r} (fastiov.storage_interface) has no IPv4 address") from None


def original_pod_name(tenant: int, index: int) -> str:
    """The original's sandbox names: `sandbox-<tenant:03d>-<index:03d>`, both 1-based."""
    return f"sandbox-{tenant:03d}-{index:03d}"


class FastiovHostBackend(TestbedBackend):
    kind = "fastiov"
    description = "real SR-IOV host with Kata and the FastIOV stack"
    baseline_variant = "vanilla"
    default_variant = "fastiov"
    comparison = ("mean", "reduction")

    def __init__(self, testbed, sysfs_writer=None):
        super().__init__(testbed)
        # None = the kernel's protocol; tests and `nic --fake-kernel` pass a generated tree's FakeSysfs
        self.sysfs_writer = sysfs_writer

    def checks(self) -> list[Check]:
        from fastiov_lib.testbeds.fastiov_host.host_checks import fastiov_host_checks

        return fastiov_host_checks(self.testbed)

    def build(self, run: RunDir) -> Tables:
        from fastiov_lib.testbeds.fastiov_host.build.builder import Builder

        return {"done": pd.DataFrame(Builder(self.testbed, run_path=run.path).apply())}

    def prepare_nic(self, run: RunDir, profile: Profile) -> Tables:
        from fastiov_lib.hw.nic import nic_apply

        tb = self.testbed
        reports = nic_apply(tb.fastiov, tb.sys_root, tb.allow_host_changes, run.path, self.sysfs_writer,
                            str(tb.source_path or ""))
        result = pd.DataFrame([{"pf": r.pf, "vf": vf, "driver": r.drivers.get(vf)}
                               for r in reports for vf in r.vfs] +
                              [{"pf": r.pf, "vf": "", "driver": f"skipped {x['what']}: {x['reason']}"}
                               for r in reports for x in r.skipped])
        timings = pd.DataFrame([t for r in reports for t in r.timings])
        return {"result": result, "timings": timings}

    def real_host_testbed(self):
        return self.testbed

    def real_host_checks(self) -> tuple[list[Check], str]:
        return self.checks(), "this host"

    def real_host_nic_plan(self) -> list[dict[str, str]]:
        from fastiov_lib.hw.nic import nic_plan

        return nic_plan(self.testbed.fastiov, self.testbed.sys_root)

    def pod_target(self, variants: Sequence[str], concurrency: Sequence[int]) -> PodTarget:
        from fastiov_lib.testbeds.fastiov_host.runtime_config import SANDBOX_IMAGE, VARIANTS, WORKLOAD_IMAGE

        fs = self.testbed.fastiov
        handler = self.testbed.runtime_handler
        net = lambda v: VARIANTS[v].network if v in VARIANTS else "sriov"  # noqa: E731
        return PodTarget(
            testbed_name=self.name, testbed_kind=self.kind, socket=fs.containerd_socket, cri_api=self.testbed.cri_api,
            rpc_timeout_s=fs.rpc_timeout_s, pod_log_root=Path(fs.build_dir).parent / "fastiov-pod-logs",
            handler=lambda v: handler, network=net,
            host_network=lambda v: net(v) == "host",  # the original's no-network baseline: no CNI call at all
            reachable=lambda v: False, images={"workload": WORKLOAD_IMAGE, "pause": SANDBOX_IMAGE},
            pod_name=original_pod_name,
        )

    def describe(self) -> dict:
        """Kind and name, plus whether the kernel already has upstream's per-VF device sets (for the report)."""
        from fastiov_lib.testbeds.fastiov_host.kernel_facts import vf_devset_fact

        return {**super().describe(), "vf_devset": vf_devset_fact(Path(self.testbed.sys_root)).as_dict()}

    def round_hooks(self):
        from fastiov_lib.testbeds.fastiov_host.round_hooks import RealHostRoundHooks

        return RealHostRoundHooks(self.testbed)

    # ---- the campaign: which variant on which kernel (kernels.py), what a round needs
    def kernels(self) -> dict[str, KernelInfo]:
        from fastiov_lib.testbeds.fastiov_host.kernels import kernel_infos

        return kernel_infos(self.testbed.fastiov)

    def kernel_for_variant(self, variant: str) -> str | None:
        from fastiov_lib.testbeds.fastiov_host.kernels import kernel_for_variant
        from fastiov_lib.testbeds.fastiov_host.runtime_config import VARIANTS

        return kernel_for_variant(VARIANTS[variant].host_kernel) if variant in VARIANTS else None

    def booted_kernel(self) -> str | None:
        from fastiov_lib.testbeds.fastiov_host.kernels import booted_kernel

        return booted_kernel(self.testbed.fastiov, Path(self.testbed.sys_root))

    def kernel_release(self) -> str:
        from fastiov_lib.testbeds.fastiov_host.kernels import kernel_release

        return kernel_release(Path(self.testbed.sys_root))

    def round_needs(self, experiment: str, variant: str, concurrency: int) -> dict[str, int]:
        from fastiov_lib.testbeds.fastiov_host.campaign_needs import round_needs

        return round_needs(self.testbed.fastiov, variant, concurrency)

    def capacity(self, live: bool = False) -> dict[str, int]:
        from fastiov_lib.testbeds.fastiov_host.campaign_needs import capacity

        return capacity(self.testbed.fastiov, Path(self.testbed.sys_root) if live else None)

    def estimated_round_s(self, experiment: str, variant: str, concurrency: int) -> float:
        from fastiov_lib.testbeds.fastiov_host.campaign_needs import estimated_round_s

        return estimated_round_s(self.testbed.fastiov, experiment, variant, concurrency)

    def campaign_specs(self, profile: Profile, experiment: str) -> list[SweepSpec]:
        from fastiov_lib.testbeds.fastiov_host.campaign_needs import profile_specs

        return profile_specs(profile, experiment, self.kernel_for_variant, self.testbed.fastiov.tenants)

    def sweep_plan(self, profile: Profile, experiment: str) -> SweepPlan:
        """The booted kernel's share of the profile's sweeps; the other boot's rounds are named in `notes`."""
        specs = self.campaign_specs(profile, experiment)
        booted = self.booted_kernel()
        if booted is None and specs:
            raise FastiovHostError(
                f"this host runs {self.kernel_release() or 'an unknown kernel'}, neither kernel of the campaign "
                f"(stock: *{self.testbed.fastiov.stock_kernel_suffix}, patched: "
                f"*{self.testbed.fastiov.expected_kernel_suffix}); see `fastiov-artifact campaign plan`")
        mine = [s for s in specs if s.kernel in (None, booted)]
        later = [s for s in specs if s.kernel not in (None, booted)]
        notes = []
        for s in later:
            rounds = len(s.concurrency) * s.repeats * len(s.variants) * max(1, len(s.functions))
            notes.append(f"{rounds} {s.experiment} rounds of {', '.join(s.variants)} need the {s.kernel} kernel: "
                         f"after rebooting into it, continue this run directory (campaign plan shows the steps)")
        return SweepPlan(mine, notes)

    def app_endpoint(self, network: str | None) -> AppEndpoint:
        fs = self.testbed.fastiov
        if not fs.storage_interface:
            raise FastiovHostError(f"testbed {self.name!r}: fastiov.storage_interface is not set; the app test "
                                   "needs the address the pods reach the storage server at")
        host = str(fs.storage_address.ip) if fs.storage_address is not None else _interface_address(fs.storage_interface)
        return AppEndpoint(host, fs.storage_port, Path(fs.build_dir).parent / "fastiov-storage",
                           network or self.default_variant)
