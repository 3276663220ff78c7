"""One round of pods: built before the barrier, released at once, measured, recorded, cleaned up."""
from __future__ import annotations

import asyncio
import concurrent.futures
import queue
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from tqdm.auto import tqdm

from fastiov_lib.testbeds.base import PodTarget
from fastiov_lib.cri import (CONTAINER_EXITED, AsyncCriClient, ContainerSpec, CriCancelled, CriClient, CriError, CriTimeout,
                  CriUnavailable, PodSpec)
from fastiov_lib.run.rundir import JsonlWriter, PodRecord, RunDir

from fastiov_lib.bench.records import BENCH_LABEL, POD_NAMESPACE, PROBE_PORT, ROUND_LABEL, RoundInfo, STATUS_POLL_S

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


class AsyncRunner:
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


def run_round(target: PodTarget, cri: CriClient, runner: AsyncRunner, run: RunDir, writer: JsonlWriter,
               info: RoundInfo, stop: threading.Event, force: threading.Event, timeout_s: float, tenants: int,
               app: dict[str, Any] | None) -> list[PodRecord]:
    log_offset = _file_size(target.log_file)
    t_round = time.monotonic_ns()
    pods = build_pods(target, cri, run, info, tenants)
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
        if not stop.is_set():
            info.sandbox_pids = sandbox_pids(cri, [r.sandbox_id for r in done if r.sandbox_id],
                                             min(target.rpc_timeout_s, 10.0))
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


def build_pods(target: PodTarget, cri: CriClient, run: RunDir, info: RoundInfo, tenants: int) -> list[_Pod]:
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
                         args=[app["host"], str(app["port"]), app["path"], app.get("function", "download-hash")],
                         log_path="workload.log",
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
                         "file_mb": app["file_mb"], "app": app.get("function", "download-hash")})
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
        elif key == "result":
            out["function_result"] = value
        elif key == "compute_ms":
            try:
                out["compute_ms"] = float(value)
            except ValueError:
                pass
    return out


def sandbox_pids(cri: CriClient, sandbox_ids: list[str], timeout_s: float) -> dict[str, int]:
    """The pid each sandbox's runtime reports (QEMU's under kata), asked once the round's pods are
    all done, so the queries add nothing to what was measured; sandboxes that report none are left out."""
    out: dict[str, int] = {}
    for sid in sandbox_ids:
        try:
            pid = cri.sandbox_pid(sid, timeout_s)
        except (CriUnavailable, CriTimeout):
            break  # the runtime is gone or stuck: the other sandboxes would not answer either
        except CriError:
            continue
        if pid is not None:
            out[sid] = pid
    return out


def _clean_round(target: PodTarget, cri: CriClient, info: RoundInfo) -> list[str]:
    """Stop and remove the round's sandboxes; on the local testbed, check nothing of ours is left."""
    leftovers = remove_sandboxes(cri, {ROUND_LABEL: info.round_id}, min(target.rpc_timeout_s, 30.0))
    if target.cleanup is not None:
        leftovers += target.cleanup()
    return leftovers


def remove_sandboxes(cri: CriClient, labels: dict[str, str], timeout_s: float) -> list[str]:
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

