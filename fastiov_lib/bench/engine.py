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

import asyncio
import concurrent.futures
import queue
import secrets
import signal
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Protocol, Sequence

import pandas as pd
from tqdm.auto import tqdm

from fastiov_lib.config import Testbed
from fastiov_lib.testbeds import backend_for
from fastiov_lib.testbeds.base import PodTarget, TestbedBackend
from fastiov_lib.testbeds.fastiov_host.backend import FastiovHostError
from fastiov_lib.testbeds.local.backend import LocalBackendError
from fastiov_lib.cri import (CONTAINER_EXITED, AsyncCriClient, ContainerSpec, CriCancelled, CriClient, CriError, CriTimeout,
                  CriUnavailable, PodSpec)
from fastiov_lib.run.rundir import JsonlWriter, PodRecord, RunDir
from fastiov_lib.analysis.pods import pods_frame
from fastiov_lib.analysis.stats import GROUP_SUMMARY_COLUMNS, group_summary

BENCH_LABEL = "fastiov.artifact"
ROUND_LABEL = "fastiov.round"
POD_NAMESPACE = "test"
PROBE_PORT = 9  # discard; nothing listens in the pod, so a reachable pod answers with RST
STATUS_POLL_S = 0.05


class BenchError(RuntimeError):
    """The sweep cannot run as asked (bad parameters, unsupported mode, runtime gone)."""


class BenchInterrupted(KeyboardInterrupt):
    """SIGINT/SIGTERM stopped the sweep; `result` holds what was measured before."""

    def __init__(self, signum: int, result: "SweepResult"):
        super().__init__(f"benchmark interrupted by {signal.Signals(signum).name}")
        self.signum = signum
        self.result = result


@dataclass
class RoundInfo:
    """One round of a sweep, as hooks see it before and after the round."""

    experiment: str
    variant: str
    network: str
    runtime_handler: str
    concurrency: int
    repeat: int
    index: int  # position in the sweep, 0-based
    total: int  # rounds in the sweep
    round_id: str  # unique label of this round's sandboxes
    log_file: Path | None = None  # containerd's log of this round (local testbed)
    counts: dict[str, int] = field(default_factory=dict)  # status -> pods
    leftovers: list[str] = field(default_factory=list)  # what cleanup found after the round
    driver_cpu_ns: int = 0  # CPU time of this process while the round's pods ran
    wall_ns: int = 0
    extra: dict[str, Any] = field(default_factory=dict)  # free for hooks


class RoundHooks(Protocol):
    """Callbacks around each round (a real host switches variants / restarts containerd here)."""

    def before_round(self, round_info: RoundInfo, run: RunDir) -> None: ...

    def after_round(self, round_info: RoundInfo, run: RunDir) -> None: ...


@dataclass
class SweepResult:
    """Records and rounds of one sweep; `message` explains an empty or shortened sweep."""

    testbed: str
    experiment: str
    records: list[PodRecord] = field(default_factory=list)
    rounds: list[RoundInfo] = field(default_factory=list)
    message: str = ""
    interrupted: bool = False
    driver_cpu_s: float = 0.0

    def summary(self) -> pd.DataFrame:
        """summary_table of this sweep's records."""
        return summary_table(self.records)

    def overview(self) -> pd.DataFrame:
        """One row: how many rounds and pods, how many ok, and the message."""
        ok = sum(r.status == "ok" for r in self.records)
        return pd.DataFrame([{"testbed": self.testbed, "experiment": self.experiment, "rounds": len(self.rounds),
                              "pods": len(self.records), "ok": ok, "not ok": len(self.records) - ok,
                              "message": self.message or "done"}])


# ----------------------------------------------------------------------------------------------
# public entry points


def _backend(testbed: Testbed | TestbedBackend) -> TestbedBackend:
    return testbed if isinstance(testbed, TestbedBackend) else backend_for(testbed)


def run_startup_sweep(testbed: Testbed | TestbedBackend, run: RunDir, concurrency: Sequence[int], repeats: int,
                      networks: Sequence[str] | None = None, variants: Sequence[str] | None = None,
                      experiment: str = "startup", timeout_s: float = 120.0,
                      hooks: RoundHooks | None = None, tenants: int = 1) -> SweepResult:
    """Start `concurrency[i]` pods at once, `repeats` times, for each variant (`networks` is an alias).

    On the local testbed the variants are network modes (none, bridge, macvlan, hostdev); on a real
    FastIOV host they name the configurations its round hooks switch between. A testbed that runs
    no pods gives an empty result whose message says why.
    """
    backend = _backend(testbed)
    names = list(variants or networks or [backend.default_variant])
    return _sweep(backend, run, concurrency, repeats, names, experiment, timeout_s, hooks, tenants, app=None)


def run_app_sweep(testbed: Testbed | TestbedBackend, run: RunDir, concurrency: Sequence[int], repeats: int,
                  network: str | None = None, file_mb: int = 4, hooks: RoundHooks | None = None,
                  timeout_s: float = 120.0, tenants: int = 1) -> SweepResult:
    """The app test: each pod runs the workload, which downloads `file_mb` MiB from the storage
    server on the host and hashes it; the completion time per pod is measured.

    The back end says where the storage server listens (locally: the gateway of `network`, which
    must give the host a path to pods: bridge, macvlan or hostdev).
    """
    from fastiov_lib.bench.storage_server import StorageServer, make_input_file

    backend = _backend(testbed)
    if not backend.runs_pods:
        return _empty(backend, "app")
    try:
        endpoint = backend.app_endpoint(network)
    except (LocalBackendError, FastiovHostError) as err:
        raise BenchError(str(err)) from None
    input_file = make_input_file(Path(endpoint.data_dir), file_mb)
    app = {"host": endpoint.host, "port": endpoint.port, "path": f"/download/{input_file.name}", "file_mb": file_mb,
           "size_bytes": input_file.size_bytes}
    try:
        server = StorageServer(endpoint.data_dir, endpoint.host, endpoint.port)
    except OSError as err:
        raise BenchError(f"storage server cannot listen on {endpoint.host}:{endpoint.port} ({err.strerror or err}); "
                         "choose another storage_port in the testbed file") from None
    with server:
        return _sweep(backend, run, concurrency, repeats, [endpoint.network], "app", timeout_s, hooks, tenants,
                      app=app)


def _empty(backend: TestbedBackend, experiment: str) -> SweepResult:
    return SweepResult(backend.name, experiment, message=backend.no_pods_reason())


def _sweep(backend: TestbedBackend, run: RunDir, concurrency: Sequence[int], repeats: int,
           names: list[str], experiment: str,
           timeout_s: float, hooks: RoundHooks | None, tenants: int, app: dict[str, Any] | None) -> SweepResult:
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
        target = backend.pod_target(names, concurrency)
    except (LocalBackendError, FastiovHostError) as err:
        raise BenchError(str(err)) from None
    if app is not None and "workload" not in target.images:
        raise BenchError("no workload image for the app test on this testbed")

    plan = [(v, c, r) for v in names for c in concurrency for r in range(repeats)]
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
    previous = _install_handlers(on_signal)
    cpu0 = time.process_time()
    cri: CriClient | None = None
    runner: _AsyncRunner | None = None
    try:
        cri = CriClient(target.socket, api=target.cri_api, timeout_s=target.rpc_timeout_s)
        runner = _AsyncRunner(target.socket, cri.api, target.rpc_timeout_s)
        if target.cleanup is not None:
            target.cleanup()  # leftovers of an earlier, killed run
        else:
            _remove_sandboxes(cri, {BENCH_LABEL: "bench"}, target.rpc_timeout_s)
        sweep_bar = tqdm(plan, desc=f"{experiment} rounds", unit="round", leave=True)
        for index, (variant, conc, rep) in enumerate(plan):
            if stop.is_set():
                break
            info = RoundInfo(experiment=experiment, variant=variant, network=target.network(variant),
                             runtime_handler=target.handler(variant), concurrency=conc, repeat=rep, index=index,
                             total=len(plan), round_id=f"{experiment}-{variant}-c{conc}-r{rep}-{secrets.token_hex(3)}")
            if hooks is not None:
                hooks.before_round(info, run)
            records = _run_round(target, cri, runner, run, writer, info, stop, force, timeout_s, tenants, app)
            result.records.extend(records)
            result.rounds.append(info)
            if hooks is not None:
                hooks.after_round(info, run)
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


# ----------------------------------------------------------------------------------------------
# one round
#
# The pods of a round are asyncio tasks on one event loop (grpc.aio) that lives in a helper thread
# for the whole sweep, so the caller's thread stays free for signals and this works under Jupyter's
# own event loop. Records go to pods.jsonl through a writer thread, so an fsync never stalls the
# loop while pods are measured.


class _PodTimeout(Exception):
    pass


class _Interrupted(Exception):
    pass


class _AsyncRunner:
    """One event loop in a helper thread for the whole sweep, with one grpc.aio channel to the runtime."""

    def __init__(self, socket_path: Path, api: str, timeout_s: float):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="bench-loop", daemon=True)
        self.thread.start()

        async def make() -> AsyncCriClient:  # a grpc.aio channel belongs to the loop it is made in
            return AsyncCriClient(socket_path, api=api, timeout_s=timeout_s)  # type: ignore[arg-type]

        self.acri = self.submit(make()).result(30)

    def submit(self, coro: Any) -> "concurrent.futures.Future[Any]":
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def close(self) -> None:
        try:
            self.submit(self.acri.close()).result(10)
        except Exception:  # closing is best effort; the loop goes away with the thread below
            pass
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        if not self.thread.is_alive():
            self.loop.close()


@dataclass
class _Pod:
    index: int
    tenant: int
    name: str
    spec: PodSpec
    config: Any
    record: dict[str, Any]
    written: bool = False


def _run_round(target: PodTarget, cri: CriClient, runner: _AsyncRunner, run: RunDir, writer: JsonlWriter,
               info: RoundInfo, stop: threading.Event, force: threading.Event, timeout_s: float, tenants: int,
               app: dict[str, Any] | None) -> list[PodRecord]:
    log_offset = _file_size(target.log_file)
    t_round = time.monotonic_ns()
    pods = _build_pods(target, cri, run, info, tenants)
    done: list[PodRecord] = []
    records: queue.Queue[PodRecord | None] = queue.Queue()
    bar = tqdm(total=info.concurrency, desc=f"{info.variant} c={info.concurrency} r={info.repeat}",
               unit="pod", leave=False)

    write_failed: list[OSError] = []

    def write_records() -> None:
        while (rec := records.get()) is not None:
            try:
                writer.append(rec)
            except OSError as err:  # disk full, I/O error: stop the sweep now, say what is kept
                write_failed[:1] = [err]
                stop.set()
                continue
            done.append(rec)
            bar.update(1)

    finish_lock = threading.Lock()

    def finish(pod: _Pod, status: str, error: str | None) -> None:
        with finish_lock:  # the loop thread, or this one for pods the loop never finished
            if pod.written:
                return
            pod.written = True
            pod.record["status"] = status
            pod.record["error"] = error
            rec = PodRecord(**pod.record)
        records.put(rec)

    writer_thread = threading.Thread(target=write_records, name="pods-writer", daemon=True)
    writer_thread.start()
    cpu0 = time.process_time_ns()
    future = runner.submit(_round_async(pods, target, runner.acri, info, stop, force, timeout_s, app, finish))
    try:
        hard_deadline = time.monotonic() + timeout_s + 60.0
        while not future.done() and time.monotonic() < hard_deadline:
            concurrent.futures.wait([future], timeout=0.05)  # short waits keep signal handlers responsive
        info.driver_cpu_ns = time.process_time_ns() - cpu0
    finally:
        if not future.done():
            force.set()  # the loop cancels what is still pending
            concurrent.futures.wait([future], timeout=10.0)
        stop_seen = stop.is_set()
        for pod in pods:  # a pod the loop never finished (stuck past every deadline, or interrupted)
            finish(pod, "interrupted" if stop_seen else "timeout",
                   "interrupted before the pod finished" if stop_seen else
                   f"no result {timeout_s + 60:.0f} s after release")
        records.put(None)
        writer_thread.join()
        bar.close()
        info.leftovers = _clean_round(target, cri, info)
        info.wall_ns = time.monotonic_ns() - t_round
        info.counts = {}
        for rec in done:
            info.counts[rec.status] = info.counts.get(rec.status, 0) + 1
        if target.log_file is not None:
            info.log_file = _save_log_slice(target.log_file, log_offset, run.logs_dir, info.round_id)
    if write_failed:
        raise write_failed[0]
    if future.done() and not future.cancelled() and future.exception() is not None:
        raise future.exception()
    return sorted(done, key=lambda r: r.pod_index)


async def _round_async(pods: list[_Pod], target: PodTarget, acri: AsyncCriClient, info: RoundInfo,
                       stop: threading.Event, force: threading.Event, timeout_s: float, app: dict[str, Any] | None,
                       finish: Callable[[_Pod, str, str | None], None]) -> None:
    try:  # make sure every channel is connected, so no pod pays for the connection set-up
        await acri.connect(timeout_s=min(target.rpc_timeout_s, 10.0))
    except CriError:
        pass  # the pods will fail with the error themselves
    gate = asyncio.Event()
    # requests built and serialised before the barrier: after it, each task only sends its bytes
    requests = [acri.prepare_run_pod_sandbox(p.config, info.runtime_handler) for p in pods]
    tasks = [asyncio.create_task(_pod_task(p, target, acri, info, gate, stop, timeout_s, app, finish, req))
             for p, req in zip(pods, requests)]
    await asyncio.sleep(0)  # every task now waits at the gate
    gate.set()  # the barrier: all requests released together
    pending = set(tasks)
    deadline = time.monotonic() + timeout_s + 30.0
    while pending:
        _done, pending = await asyncio.wait(pending, timeout=0.05)
        if force.is_set() or time.monotonic() > deadline:
            for t in pending:
                t.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            break


async def _pod_task(pod: _Pod, target: PodTarget, acri: AsyncCriClient, info: RoundInfo, gate: asyncio.Event,
                    stop: threading.Event, timeout_s: float, app: dict[str, Any] | None,
                    finish: Callable[[_Pod, str, str | None], None], request: bytes) -> None:
    rec = pod.record
    status, error = "failed", None
    try:
        await gate.wait()
        rec["t_released_ns"] = t0 = time.monotonic_ns()
        rec["wall_released_ns"] = time.time_ns()
        deadline = t0 + int(timeout_s * 1e9)

        def left() -> float:
            remaining = (deadline - time.monotonic_ns()) / 1e9
            if remaining <= 0:
                raise _PodTimeout()
            return min(remaining, target.rpc_timeout_s)

        sandbox_id = await acri.run_prepared_pod_sandbox(request, pod.index, timeout_s=left(), cancel=stop)
        rec["t_sandbox_returned_ns"] = time.monotonic_ns()
        rec["sandbox_id"] = sandbox_id
        if target.reachable(info.variant):
            ip = await acri.pod_sandbox_ip(sandbox_id, timeout_s=left(), cancel=stop)
            rec["extra"]["pod_ip"] = ip
            if not ip:
                raise CriError("PodSandboxStatus", None, "sandbox is ready but reports no IP address")
            rec["t_network_ready_ns"] = await _wait_reachable(ip, deadline, stop)
        if app is not None:
            status, error = await _run_workload(pod, target, acri, sandbox_id, app, left, stop)
        else:
            status = "ok"
    except (CriCancelled, _Interrupted, asyncio.CancelledError):
        status, error = "interrupted", "interrupted before the pod finished"
    except (CriTimeout, _PodTimeout) as err:
        status, error = "timeout", f"no result within {timeout_s:.0f} s" + (f" ({err})" if str(err) else "")
    except CriUnavailable as err:
        status, error = "failed", f"{err} at {target.socket}"
    except CriError as err:
        status, error = "failed", str(err)
    except Exception as err:  # a pod must always leave a record behind
        status, error = "failed", f"{type(err).__name__}: {err}"
    finally:
        finish(pod, status, error)


def _build_pods(target: PodTarget, cri: CriClient, run: RunDir, info: RoundInfo, tenants: int) -> list[_Pod]:
    per_tenant = -(-info.concurrency // tenants)
    pods = []
    for i in range(info.concurrency):
        tenant, idx = divmod(i, per_tenant)
        name = target.pod_name(tenant + 1, idx + 1) if target.pod_name else f"sandbox-{tenant}-{idx}"
        uid = f"{info.round_id}-{i}"
        log_dir = target.pod_log_root / info.round_id / name
        log_dir.mkdir(parents=True, exist_ok=True)  # the kubelet's job: containerd 1.3 does not create it
        spec = PodSpec(name=name, namespace=POD_NAMESPACE, uid=uid,
                       log_directory=str(log_dir),
                       labels={BENCH_LABEL: "bench", ROUND_LABEL: info.round_id},
                       host_network=target.host_network(info.variant))
        record = {
            "run_id": run.run_id, "testbed": target.testbed_name, "testbed_kind": target.testbed_kind,
            "experiment": info.experiment, "variant": info.variant, "network": info.network,
            "runtime_handler": info.runtime_handler, "concurrency": info.concurrency, "repeat": info.repeat,
            "pod_index": i, "tenant": tenant, "pod_name": name, "status": "interrupted",
            "extra": {"round_id": info.round_id, "uid": uid, "cri_api": cri.api},
        }
        pods.append(_Pod(i, tenant, name, spec, cri.sandbox_config(spec), record))
    return pods


async def _wait_reachable(ip: str, deadline_ns: int, stop: threading.Event) -> int:
    """Monotonic ns at which `ip` first answered a TCP SYN (RST = reachable, nothing listens)."""
    loop = asyncio.get_running_loop()
    while True:
        if stop.is_set():
            raise _Interrupted()
        if time.monotonic_ns() > deadline_ns:
            raise _PodTimeout(f"{ip} never answered from the host")
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.setblocking(False)
            try:
                await asyncio.wait_for(loop.sock_connect(s, (ip, PROBE_PORT)), 0.2)
                return time.monotonic_ns()
            except ConnectionRefusedError:
                return time.monotonic_ns()
            except (OSError, asyncio.TimeoutError):
                pass  # no answer yet (ARP pending, unreachable): try again
        await asyncio.sleep(0.001)


async def _run_workload(pod: _Pod, target: PodTarget, acri: AsyncCriClient, sandbox_id: str, app: dict[str, Any],
                        left: Callable[[], float], stop: threading.Event) -> tuple[str, str | None]:
    rec = pod.record
    spec = ContainerSpec(name="workload", image=target.images["workload"],
                         args=[app["host"], str(app["port"]), app["path"]], log_path="workload.log",
                         labels={BENCH_LABEL: "bench"})
    cid = await acri.create_container(sandbox_id, spec, pod.config, timeout_s=left(), cancel=stop)
    await acri.start_container(cid, timeout_s=left(), cancel=stop)
    rec["t_container_started_ns"] = time.monotonic_ns()
    while True:
        st = await acri.container_status(cid, timeout_s=left(), cancel=stop)
        now_mono, now_wall = time.monotonic_ns(), time.time_ns()
        if st.state == CONTAINER_EXITED:
            break
        if stop.is_set():
            raise _Interrupted()
        await asyncio.sleep(STATUS_POLL_S)
    # the runtime's finish time (wall clock) placed on our monotonic clock: the poll period adds nothing
    rec["t_container_exited_ns"] = now_mono - (now_wall - st.finished_at_ns)
    output = _last_log_line(Path(pod.spec.log_directory) / "workload.log")
    rec["extra"].update({"container_id": cid, "exit_code": st.exit_code, "started_at_wall_ns": st.started_at_ns,
                         "finished_at_wall_ns": st.finished_at_ns, "workload_output": output,
                         "file_mb": app["file_mb"]})
    rec["extra"].update(_parse_workload_output(output))
    if st.exit_code != 0:
        return "failed", f"workload exited with {st.exit_code}: {output or st.reason}"
    if rec["extra"].get("bytes") != app["size_bytes"]:
        return "failed", f"workload read {rec['extra'].get('bytes')} bytes, expected {app['size_bytes']}"
    return "ok", None


def _last_log_line(path: Path) -> str:
    """The last line a container wrote, from its CRI log file (`<time> <stream> <tag> <text>`)."""
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    for line in reversed(lines):
        parts = line.split(" ", 3)
        if len(parts) == 4 and parts[3].strip():
            return parts[3].strip()
    return ""


def _parse_workload_output(line: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in line.split():
        key, _, value = item.partition("=")
        if key == "bytes" and value.isdigit():
            out["bytes"] = int(value)
        elif key == "fnv1a64":
            out["fnv1a64"] = value
        elif key == "http" and value.isdigit():
            out["http_status"] = int(value)
    return out


def _clean_round(target: PodTarget, cri: CriClient, info: RoundInfo) -> list[str]:
    """Stop and remove the round's sandboxes; on the local testbed, check nothing of ours is left."""
    leftovers = _remove_sandboxes(cri, {ROUND_LABEL: info.round_id}, min(target.rpc_timeout_s, 30.0))
    if target.cleanup is not None:
        leftovers += target.cleanup()
    return leftovers


def _remove_sandboxes(cri: CriClient, labels: dict[str, str], timeout_s: float) -> list[str]:
    from concurrent.futures import ThreadPoolExecutor

    try:
        sandboxes = cri.list_pod_sandboxes(labels, timeout_s=timeout_s)
    except CriError as err:
        return [f"could not list sandboxes: {err}"]

    def remove(sb_id: str) -> str | None:
        try:
            cri.stop_pod_sandbox(sb_id, timeout_s=timeout_s)
            cri.remove_pod_sandbox(sb_id, timeout_s=timeout_s)
            return None
        except CriError as err:
            return f"sandbox {sb_id[:12]} not removed: {err}"

    with ThreadPoolExecutor(max_workers=8) as pool:
        return [e for e in pool.map(remove, [s.id for s in sandboxes]) if e]


def _file_size(path: Path | None) -> int:
    try:
        return path.stat().st_size if path is not None else 0
    except OSError:
        return 0


def _save_log_slice(src: Path, offset: int, logs_dir: Path, round_id: str) -> Path | None:
    """Copy what containerd logged during the round to logs/containerd-<round>.log."""
    try:
        logs_dir.mkdir(parents=True, exist_ok=True)
        out = logs_dir / f"containerd-{round_id}.log"
        with open(src, "rb") as fh:
            fh.seek(offset)
            out.write_bytes(fh.read())
        return out
    except OSError:
        return None


# ----------------------------------------------------------------------------------------------
# summary


# one summary table and one latency derivation for the whole artifact: both live in analysis
SUMMARY_COLUMNS = GROUP_SUMMARY_COLUMNS


def summary_table(records: Iterable[PodRecord | dict[str, Any]]) -> pd.DataFrame:
    """analysis.stats.group_summary of these records (the table 06_figures shows for the whole run)."""
    rows = [r.model_dump(mode="json") if isinstance(r, PodRecord) else dict(r) for r in records]
    return group_summary(pods_frame(rows)) if rows else pd.DataFrame(columns=SUMMARY_COLUMNS)
