"""Concurrent pod-startup benchmark: barrier-released CRI requests, monotonic timestamps per phase.

One *round* starts `concurrency` pods at once: every request is built first, then one asyncio task
per pod waits at a gate and calls RunPodSandbox (grpc.aio) the moment the gate opens (the original
harness launched pods from a shell loop, spreading the "concurrent" starts over the loop; threads
would contend for the GIL and add ~10 ms per call at 50 pods, an event loop adds ~2 ms). Each pod's
record (results.PodRecord) is appended to the run's pods.jsonl as soon as that pod is finished, so
an interrupted run keeps everything it measured. Timestamps are `time.monotonic_ns()` of this
process, taken around the measured operation, never rounded; no fixed sleeps, no polling bias:

- t_released_ns         the barrier opened for this pod (just before the RunPodSandbox call)
- t_sandbox_returned_ns RunPodSandbox returned (sandbox ready: runc started pause, CNI done)
- t_network_ready_ns    the pod's IP answered a TCP SYN from the host (RST or accept), in modes where
                        the host has a path to the pod (local: bridge, macvlan, hostdev; not none)
- t_container_started_ns / t_container_exited_ns   app test: StartContainer returned / the workload
                        exited (the runtime's finished_at, mapped onto the monotonic clock, so the
                        status poll period adds no error)

Between rounds every sandbox of the round is stopped and removed, and on the local testbed the
runner checks that no network namespace, pod link, IPAM allocation or pool loan of ours is left
(forcing a cleanup and recording what it found if so). containerd's log of each round is saved
under the run's logs/. SIGINT/SIGTERM stop the round: no new call is made, calls in flight return
(each has a deadline; a second signal cuts them off), finished pods keep their records, the others
are recorded `interrupted`, every sandbox is removed, then BenchInterrupted is raised.

The same runner drives a real FastIOV host (kind `fastiov`): runtime handler `kata`, CRI chosen by
the runtime (v1alpha2 on containerd 1.3), `variants` instead of local network modes, and
`RoundHooks` for what happens around each round there (switching the variant, restarting
containerd, collecting component logs).
"""
from __future__ import annotations

import secrets
import signal
import threading
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from tqdm.auto import tqdm

from fastiov_lib.config import Testbed
from fastiov_lib.testbeds import backend_for
from fastiov_lib.testbeds.base import BackendError, TestbedBackend
from fastiov_lib.cri import (CriClient, CriError)
from fastiov_lib.run.rundir import JsonlWriter, RunDir

from fastiov_lib.bench.records import (  # the names callers know from the engine
    BENCH_LABEL, POD_NAMESPACE, ROUND_LABEL, SUMMARY_COLUMNS, BenchError, BenchInterrupted, RoundHooks, RoundInfo,
    SweepResult, summary_table,
)
from fastiov_lib.bench.round_log import RoundLog, record_order
from fastiov_lib.bench.round_order import cells_of, new_seed, plan_rounds
from fastiov_lib.bench.rounds import AsyncRunner, remove_sandboxes, run_round

# ----------------------------------------------------------------------------------------------
# public entry points


def _backend(testbed: Testbed | TestbedBackend) -> TestbedBackend:
    return testbed if isinstance(testbed, TestbedBackend) else backend_for(testbed)


def run_startup_sweep(testbed: Testbed | TestbedBackend, run: RunDir, concurrency: Sequence[int], repeats: int,
                      networks: Sequence[str] | None = None, variants: Sequence[str] | None = None,
                      experiment: str = "startup", timeout_s: float = 120.0,
                      hooks: RoundHooks | None = None, tenants: int = 1, seed: int | None = None,
                      boot_group: str = "", cells: Sequence[tuple[str, int]] | None = None) -> SweepResult:
    """Start `concurrency[i]` pods at once, `repeats` times, for each variant (`networks` is an alias).

    On the local testbed the variants are network modes (none, bridge, macvlan, hostdev); on a real
    FastIOV host they name the configurations its round hooks switch between (all of one boot:
    `boot_group`). The rounds run in shuffled blocks (round_order), with `seed` or a fresh one, and
    the order is kept in run.json. `cells` ((variant, concurrency) pairs) replaces every variant at
    every level where variants run at different levels. A testbed that runs no pods gives an empty
    result whose message says why.
    """
    backend = _backend(testbed)
    names = list(variants or networks or [backend.default_variant])
    cells = list(cells) if cells is not None else None
    if cells:
        names = list(dict.fromkeys(v for v, _ in cells))
        concurrency = sorted({int(c) for _, c in cells})
    return _sweep(backend, run, concurrency, repeats, names, experiment, timeout_s, hooks, tenants, app=None,
                  seed=seed, boot_group=boot_group, cells=cells)


def run_app_sweep(testbed: Testbed | TestbedBackend, run: RunDir, concurrency: Sequence[int], repeats: int,
                  network: str | None = None, file_mb: int = 4, hooks: RoundHooks | None = None,
                  timeout_s: float = 120.0, tenants: int = 1, function: str = "download-hash",
                  seed: int | None = None) -> SweepResult:
    """The app test: each pod runs one function of the workload image (bench.app_functions), which
    downloads its input (about `file_mb` MiB) from the storage server on the host and computes on
    it; the completion time per pod is measured.

    The back end says where the storage server listens (locally: the gateway of `network`, which
    must give the host a path to pods: bridge, macvlan or hostdev).
    """
    from fastiov_lib.bench.app_functions import UnknownFunction, make_function_input
    from fastiov_lib.bench.storage_server import StorageServer

    backend = _backend(testbed)
    if not backend.runs_pods:
        return _empty(backend, "app")
    try:
        endpoint = backend.app_endpoint(network)
    except BackendError as err:
        raise BenchError(str(err)) from None
    try:
        input_file = make_function_input(Path(endpoint.data_dir), function, file_mb)
    except UnknownFunction as err:
        raise BenchError(str(err)) from None
    app = {"host": endpoint.host, "port": endpoint.port, "path": f"/download/{input_file.name}", "file_mb": file_mb,
           "size_bytes": input_file.size_bytes, "function": function}
    try:
        server = StorageServer(endpoint.data_dir, endpoint.host, endpoint.port)
    except OSError as err:
        raise BenchError(f"storage server cannot listen on {endpoint.host}:{endpoint.port} ({err.strerror or err}); "
                         "choose another storage_port in the testbed file") from None
    with server:
        return _sweep(backend, run, concurrency, repeats, [endpoint.network], "app", timeout_s, hooks, tenants,
                      app=app, seed=seed)


def _empty(backend: TestbedBackend, experiment: str) -> SweepResult:
    return SweepResult(backend.name, experiment, message=backend.no_pods_reason())


def _sweep(backend: TestbedBackend, run: RunDir, concurrency: Sequence[int], repeats: int,
           names: list[str], experiment: str,
           timeout_s: float, hooks: RoundHooks | None, tenants: int, app: dict[str, Any] | None,
           seed: int | None = None, boot_group: str = "",
           cells: list[tuple[str, int]] | None = None) -> SweepResult:
    if not backend.runs_pods:
        return _empty(backend, experiment)
    concurrency = [int(c) for c in concurrency]
    if not concurrency or any(c < 1 for c in concurrency):
        raise BenchError(f"concurrency must be a non-empty list of positive integers, got {concurrency}")
    if repeats < 1:
        raise BenchError(f"repeats must be at least 1, got {repeats}")
    if tenants < 1:
        raise BenchError(f"tenants must be at least 1, got {tenants}")
    try:
        if cells:  # each variant checked at the levels it runs at (a pool may serve only the lower ones)
            for v in dict.fromkeys(v for v, _ in cells):
                target = backend.pod_target([v], sorted({int(c) for w, c in cells if w == v}))
        else:
            target = backend.pod_target(names, concurrency)
    except BackendError as err:
        raise BenchError(str(err)) from None
    if app is not None and "workload" not in target.images:
        raise BenchError("no workload image for the app test on this testbed")
    try:  # a real host measures vanilla and FastIOV on different boots: refuse the wrong one up front
        backend.check_kernel(names)
    except BackendError as err:
        raise BenchError(str(err)) from None
    kernel, release = backend.booted_kernel(), backend.kernel_release()

    seed = new_seed() if seed is None else int(seed)
    plan = plan_rounds(cells or cells_of(names, concurrency), repeats, seed)
    result = SweepResult(backend.name, experiment)
    stop = threading.Event()
    force = threading.Event()
    got: dict[str, int] = {}

    def on_signal(signum: int, _frame: Any) -> None:
        # first signal: start nothing new and let calls in flight return (containerd 1.6 can leak a
        # sandbox's shim and netns when its client cancels RunPodSandbox mid-call); second: cut them off
        if stop.is_set():
            force.set()
        got.setdefault("signum", signum)
        stop.set()

    writer = JsonlWriter(run.pods_file)  # before the handlers: a refused file leaves signals as they were
    try:
        round_log = RoundLog(run, seed, boot_group)
        record_order(run, experiment, plan, seed, boot_group)
    except OSError:
        writer.close()
        raise
    previous = _install_handlers(on_signal)
    cpu0 = time.process_time()
    cri: CriClient | None = None
    runner: AsyncRunner | None = None
    try:
        cri = CriClient(target.socket, api=target.cri_api, timeout_s=target.rpc_timeout_s)
        runner = AsyncRunner(target.socket, cri.api, target.rpc_timeout_s)
        if target.cleanup is not None:
            target.cleanup()  # leftovers of an earlier, killed run
        else:
            remove_sandboxes(cri, {BENCH_LABEL: "bench"}, target.rpc_timeout_s)
        sweep_bar = tqdm(plan, desc=f"{experiment} rounds", unit="round", leave=True)
        for planned in plan:
            if stop.is_set():
                break
            variant, conc, rep = planned.variant, planned.concurrency, planned.repeat
            info = RoundInfo(experiment=experiment, variant=variant, network=target.network(variant),
                             runtime_handler=target.handler(variant), concurrency=conc, repeat=rep,
                             index=planned.order_index, total=len(plan),
                             round_id=f"{experiment}-{variant}-c{conc}-r{rep}-{secrets.token_hex(3)}",
                             kernel=kernel, kernel_release=release)
            if hooks is not None:
                hooks.before_round(info, run)
            round_log.begin(info)
            records = run_round(target, cri, runner, run, writer, info, stop, force, timeout_s, tenants, app)
            result.records.extend(records)
            result.rounds.append(info)
            if hooks is not None:
                hooks.after_round(info, run)
            round_log.end(info, records)
            sweep_bar.update(1)
            if not target.runtime_alive():
                result.message = (f"containerd stopped during round {info.round_id}; its pods are recorded as "
                                  f"failed; see {target.log_file}. The sweep ended early.")
                break
            if records and all(r.status == "failed" and r.error and "not reachable" in r.error for r in records):
                result.message = f"the runtime at {target.socket} did not answer in round {info.round_id}; sweep ended"
                break
        sweep_bar.close()
    except CriError as err:
        raise BenchError(f"{target.socket}: {err}") from None
    finally:
        if hooks is not None and hasattr(hooks, "close"):
            hooks.close()  # a real host's barrier server lives for the sweep, whatever happens
        writer.close()
        round_log.close()
        if runner is not None:
            runner.close()
        if cri is not None:
            cri.close()
        _restore_handlers(previous)
        result.driver_cpu_s = time.process_time() - cpu0
    if "signum" in got:
        result.interrupted = True
        result.message = f"interrupted by {signal.Signals(got['signum']).name}; unfinished pods recorded as interrupted"
        raise BenchInterrupted(got["signum"], result)
    return result


def _install_handlers(handler: Callable[[int, Any], None]) -> dict[int, Any]:
    if threading.current_thread() is not threading.main_thread():
        return {}
    previous = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        previous[sig] = signal.getsignal(sig)
        signal.signal(sig, handler)
    return previous


def _restore_handlers(previous: dict[int, Any]) -> None:
    for sig, handler in previous.items():
        signal.signal(sig, handler)


__all__ = ["BENCH_LABEL", "POD_NAMESPACE", "ROUND_LABEL", "SUMMARY_COLUMNS", "BenchError", "BenchInterrupted",
           "RoundHooks", "RoundInfo", "SweepResult", "run_app_sweep", "run_startup_sweep", "summary_table"]
