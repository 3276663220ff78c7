"""The local testbed behind the back-end interface: a private containerd + runc + CNI on this machine."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, ContextManager, Sequence

import pandas as pd

from fastiov_lib.config import Profile
from fastiov_lib.run.rundir import RunDir
from fastiov_lib.testbeds.base import AppEndpoint, PodTarget, SweepPlan, SweepSpec, Tables, TestbedBackend
from fastiov_lib.testbeds.checks import Check
from fastiov_lib.testbeds.fastiov_host.examples import ExampleRealHost
from fastiov_lib.testbeds.local import instrumented
from fastiov_lib.testbeds.local import testbed as local_testbed
from fastiov_lib.testbeds.base import BackendError


class LocalBackendError(BackendError):
    """A sweep asks for something this local testbed cannot do (mode unknown, unsupported, pool too small)."""


def _require_root(what: str) -> None:
    if os.geteuid() != 0:
        raise local_testbed.LocalTestbedError(
            f"{what} on the local testbed needs root (it runs its own containerd and creates network namespaces "
            f"and links); this process runs as uid {os.geteuid()}: run it as root, e.g. with sudo")


def _frame(rows: list[Any]) -> pd.DataFrame:
    from dataclasses import asdict, is_dataclass

    return pd.DataFrame([asdict(r) if is_dataclass(r) else r for r in rows])


def _report_text(report: local_testbed.CleanupReport) -> str:
    lines = [f"  {row['what']:14} {row['count']:4}  {row['items']}" for row in report.as_rows() if row["count"]]
    if not report.removed_anything and not report.errors:
        lines.append("  nothing to remove")
    return "\n".join(lines)


class LocalBackend(ExampleRealHost, TestbedBackend):
    kind = "local"
    description = "private containerd + runc + CNI on this machine"
    baseline_variant = "none"
    default_variant = "bridge"
    comparison = ("p50", "difference")

    def checks(self) -> list[Check]:
        release = Path(self.testbed.sys_root, "proc/sys/kernel/osrelease")
        try:
            seen = release.read_text().strip()
        except OSError:
            seen = "unknown"
        return list(local_testbed.local_checks(self.testbed)) + [
            Check("kernel.release", "pass", f"{seen} (runc pods need no particular kernel)")]

    def build(self, run: RunDir) -> Tables:
        rows: list[Any] = []
        if instrumented.is_instrumented(self.testbed):
            # the paper's containerd from its pinned source, through the real host's Builder (stamped)
            rows += [{"what": f"containerd 1.3 {r['step']}", "status": r["status"]}
                     for r in instrumented.build(self.testbed, run.path)]
        run.update_record(containerd=instrumented.provenance(self.testbed))
        images = [{"what": f"image {i.ref}", "status": "imported" if i.imported else "present",
                   "digest": i.manifest_digest} for i in local_testbed.build_images(self.testbed)]
        return {"done": _frame(rows + images)}

    def round_hooks(self) -> "InstrumentedRoundHooks | None":
        return InstrumentedRoundHooks(self.testbed) if instrumented.is_instrumented(self.testbed) else None

    def prepare_nic(self, run: RunDir, profile: Profile) -> Tables:
        return {"result": _frame(local_testbed.create_hostdev_pool(self.testbed)),
                "timings": pd.DataFrame(columns=["event", "pf", "duration_ns"])}

    def up(self) -> str:
        handle = local_testbed.ensure_up(self.testbed)
        lines = [f"containerd pid {handle.pid}, socket {handle.socket}"]
        for mode in handle.modes:
            state = "supported" if mode.supported else "unsupported"
            handler = handle.runtime_handler(mode.mode) if mode.supported else "-"
            lines.append(f"  network {mode.mode:8} {state:11} runtime handler {handler:14} {mode.reason}")
        for image in handle.images:
            lines.append(f"  image {image.ref}  {image.manifest_digest[:19]}  imported={image.imported}")
        return "\n".join(lines)

    def exclusive(self, what: str) -> ContextManager[None]:
        from fastiov_lib.testbeds.local import testbed_lock

        _require_root(what)  # before the lock file, whose "Permission denied" would say nothing useful
        return testbed_lock.hold(local_testbed.paths_for(self.testbed).work_dir, what)

    def down(self) -> tuple[str, bool]:
        _require_root("testbed down")
        report = local_testbed.down(self.testbed)
        return _report_text(report), not report.errors

    def cleanup(self) -> tuple[str, bool]:
        _require_root("testbed cleanup")
        report = local_testbed.cleanup(self.testbed)
        text = _report_text(report)
        left = local_testbed.pod_leftovers(self.testbed) if local_testbed.paths_for(self.testbed).work_dir.exists() else []
        text += "".join(f"\n  still present: {item}" for item in left)
        return text, not (report.errors or left)

    def pod_target(self, variants: Sequence[str], concurrency: Sequence[int]) -> PodTarget:
        testbed = self.testbed
        for mode in set(variants) & {"bridge", "macvlan", "hostdev"}:  # before anything starts
            room = testbed.local.pod_addresses(mode)
            if max(concurrency) > room:
                raise LocalBackendError(f"{mode}: concurrency {max(concurrency)} needs as many pod addresses, but "
                                        f"local.{mode}_subnet {getattr(testbed.local, f'{mode}_subnet')} of testbed "
                                        f"{testbed.name!r} holds {room}; use a larger subnet")
        handle = local_testbed.ensure_up(testbed)
        supported = {m.mode: m for m in handle.modes}
        for mode in variants:
            if mode not in local_testbed.LOCAL_MODES:
                raise LocalBackendError(f"network mode {mode!r} is not a local testbed mode "
                                        f"({', '.join(local_testbed.LOCAL_MODES)})")
            ms = supported.get(mode)
            if ms is None:
                raise LocalBackendError(f"network mode {mode!r} is not in local.network_modes of testbed "
                                        f"{testbed.name!r}")
            if not ms.supported:
                raise LocalBackendError(f"network mode {mode!r} is not supported on this host: {ms.reason}")
        pool = testbed.local.hostdev_pool_size
        if "hostdev" in variants and max(concurrency) > pool:
            raise LocalBackendError(f"hostdev: concurrency {max(concurrency)} needs as many pool links, but "
                                    f"local.hostdev_pool_size is {pool}")

        def cleanup() -> list[str]:
            found = local_testbed.pod_leftovers(testbed)
            if found:
                local_testbed.cleanup(testbed)
            return found

        return PodTarget(
            testbed_name=testbed.name, testbed_kind=self.kind, socket=handle.socket, cri_api=testbed.cri_api,
            rpc_timeout_s=testbed.local.rpc_timeout_s, pod_log_root=handle.paths.pod_logs,
            handler=handle.runtime_handler, network=lambda v: v, host_network=lambda v: v == "none",
            reachable=lambda v: supported[v].host_path, log_file=handle.log_file, cleanup=cleanup,
            runtime_alive=lambda: local_testbed.containerd_pid(testbed) is not None,
            images={"pause": handle.image_ref("pause"), "workload": handle.image_ref("workload")},
        )

    def sweep_plan(self, profile: Profile, experiment: str) -> SweepPlan:
        if experiment == "startup":
            # each mode of profile.bench_networks at every level (like the paper's vanilla / FastIOV /
            # no network), hostdev only at levels its pool of links can serve
            plan = SweepPlan()
            for mode in profile.bench_networks or [profile.bench_network]:
                levels = [c for c in profile.concurrency
                          if mode != "hostdev" or c <= self.testbed.local.hostdev_pool_size]
                if len(levels) < len(profile.concurrency):
                    plan.notes.append(f"{mode} skipped at concurrency {sorted(set(profile.concurrency) - set(levels))}"
                                      f" (pool of {self.testbed.local.hostdev_pool_size} links)")
                if levels:
                    plan.specs.append(SweepSpec("startup", (mode,), tuple(levels), profile.repeats))
            return plan
        if experiment == "app":
            return SweepPlan([SweepSpec("app", (profile.bench_network,), tuple(profile.app_concurrency),
                                        profile.app_repeats, functions=tuple(profile.app_functions))])
        return self._ablation_plan(profile)

    def _ablation_plan(self, profile: Profile) -> SweepPlan:
        """Every mode of profile.ablation_networks this host can run; hostdev only where its pool suffices."""
        loc = self.testbed.local
        support = {m.mode: m for m in local_testbed.probe_network_modes(self.testbed)}
        plan = SweepPlan()
        for mode in profile.ablation_networks:
            ms = support.get(mode)
            if mode not in loc.network_modes:
                plan.notes.append(f"{mode} skipped (not in local.network_modes)")
                continue
            if ms is None or not ms.supported:
                plan.notes.append(f"{mode} skipped ({ms.reason if ms is not None else 'not a local network mode'})")
                continue
            levels = list(profile.ablation_concurrency)
            if mode == "hostdev":
                too_many = [c for c in levels if c > loc.hostdev_pool_size]
                levels = [c for c in levels if c <= loc.hostdev_pool_size]
                if too_many:
                    plan.notes.append(f"hostdev skipped at concurrency {too_many} "
                                      f"(pool of {loc.hostdev_pool_size} links)")
                if not levels:
                    continue
            plan.specs.append(SweepSpec("ablation", (mode,), tuple(levels), profile.repeats))
        return plan

    def app_endpoint(self, network: str | None) -> AppEndpoint:
        network = network or "bridge"
        gateway = local_testbed.gateway_for(self.testbed, network)
        if gateway is None:
            raise LocalBackendError(f"the app test needs a pod network the host can serve; {network!r} has none "
                                    "(use bridge, macvlan or hostdev)")
        local_testbed.ensure_up(self.testbed)
        return AppEndpoint(str(gateway), self.testbed.local.storage_port,
                           local_testbed.paths_for(self.testbed).storage_dir, network)


class InstrumentedRoundHooks:
    """Around each round of the instrumented containerd: activate the round's CNI mode (1.3 has one
    conf_dir); afterwards copy its new timing records into the run's logs (the sweep rebuilds stages.csv)."""

    def __init__(self, testbed):
        self.testbed = testbed

    def before_round(self, round_info: Any, run: RunDir) -> None:
        mode = round_info.variant
        conf = local_testbed.conflist_for(self.testbed, mode) if mode != "none" else None
        instrumented.activate_mode(self.testbed, conf, mode, local_testbed.paths_for(self.testbed).socket)
        if run.record().containerd is None:
            run.update_record(containerd=instrumented.provenance(self.testbed))

    def after_round(self, round_info: Any, run: RunDir) -> None:
        instrumented.collect_records(self.testbed, run.logs_dir, round_info.round_id)
