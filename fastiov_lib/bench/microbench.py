"""The in-container micro-benchmarks run in pods: first/second-touch memory and a small file read.

Each pod of a variant runs one `microbench` container (our static C workload, the original's
output wording); its CRI log is parsed (analysis.microbench) and every measurement is appended to
`<run>/microbench.jsonl` as it comes in, so an interrupted run keeps what it measured. Pods are
started one after another through the testbed back end's pod target (handler, network,
host-network flag, pod names) with the same CRI client the round engine uses, and are removed
again whatever happens. On the local testbed `build_local_image` builds and imports the image;
elsewhere the image reference must already be known to the runtime.
"""
from __future__ import annotations

import hashlib
import json
import secrets
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from fastiov_lib import sh
from fastiov_lib.analysis.microbench import MicrobenchRecord, parse_microbench_file
from fastiov_lib.bench.engine import BENCH_LABEL, POD_NAMESPACE
from fastiov_lib.testbeds.local import workdir
from fastiov_lib.config import Testbed
from fastiov_lib.cri import CONTAINER_EXITED, ContainerSpec, CriClient, CriError, PodSpec
from fastiov_lib.run.rundir import RunDir
from fastiov_lib.testbeds.base import TestbedBackend

RECORDS_FILE = "microbench.jsonl"
SOURCE = Path(__file__).resolve().parents[1] / "testbeds/local/images/microbench.c"
POLL_S = 0.05


class MicrobenchError(RuntimeError):
    """The micro-benchmark image could not be built or imported."""


@dataclass
class MicrobenchPod:
    """One pod's run: its name, status, error and the measurements it printed."""

    pod_name: str
    variant: str
    status: str = "interrupted"
    error: str | None = None
    exit_code: int | None = None
    records: list[MicrobenchRecord] = field(default_factory=list)


def build_local_image(testbed: Testbed) -> str:
    """Compile microbench.c (gcc -static), write its OCI image and import it into the local containerd; returns the ref."""
    from fastiov_lib.testbeds.local import testbed as local_testbed
    from fastiov_lib.testbeds.local.oci_image import write_oci_image

    p = local_testbed.paths_for(testbed)
    workdir.claim(p.work_dir, testbed.name)  # the image lives in the work dir: it must be the testbed's own
    p.images_dir.mkdir(parents=True, exist_ok=True)
    ref = local_testbed.image_ref(testbed, "microbench")
    binary, tarball = p.images_dir / "microbench", p.images_dir / "microbench.tar"
    stamp = p.images_dir / "microbench.json"
    src_sha = hashlib.sha256(SOURCE.read_bytes()).hexdigest()
    info = json.loads(stamp.read_text()) if stamp.is_file() else {}
    if info.get("source_sha256") != src_sha or info.get("ref") != ref or not tarball.is_file():
        sh.run(["gcc", "-static", "-O2", "-D_GNU_SOURCE", "-Wall", "-o", str(binary), str(SOURCE)],
               what="micro-benchmark image (needs gcc and libc6-dev)", timeout=120, error=MicrobenchError)
        info = {"source_sha256": src_sha, "ref": ref, "manifest_digest": write_oci_image(binary, "microbench", ref,
                                                                                          tarball)}
        stamp.write_text(json.dumps(info) + "\n")
    with CriClient(p.socket, api="auto", timeout_s=testbed.local.rpc_timeout_s) as cri:
        digests = cri.image_digests(ref)
        if not digests or not any(d.endswith(info["manifest_digest"]) for d in digests):
            sh.run([testbed.local.ctr_bin, "-a", str(p.socket), "-n", "k8s.io", "images", "import",
                    "--snapshotter", "overlayfs", str(tarball)], what="micro-benchmark image import", timeout=300,
                   error=MicrobenchError)
            if not cri.image_present(ref):
                raise MicrobenchError(f"imported {tarball} but containerd does not list {ref}")
    return ref


def _append(path: Path, rows: list[dict]) -> None:
    with open(path, "a", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, default=str) + "\n")
        fh.flush()


def run_microbench(backend: TestbedBackend, run: RunDir, image: str, variant: str, pods: int = 3,
                   mem_bytes: int = 1024, file_path: str = "/microbench", file_bytes: int = 1,
                   timeout_s: float = 60.0) -> list[MicrobenchPod]:
    """Start `pods` pods of `variant` one at a time, each running the micro-benchmark once; records appended."""
    if pods < 1 or mem_bytes < 1 or file_bytes < 1:
        raise ValueError(f"pods, mem_bytes and file_bytes must be positive (got {pods}, {mem_bytes}, {file_bytes})")
    target = backend.pod_target([variant], [1])
    out = Path(run.path) / RECORDS_FILE
    out.parent.mkdir(parents=True, exist_ok=True)
    round_id = f"microbench-{variant}-{secrets.token_hex(3)}"
    results = []
    with CriClient(target.socket, api=target.cri_api, timeout_s=target.rpc_timeout_s) as cri:
        for i in range(pods):
            name = target.pod_name(1, i + 1) if target.pod_name else f"microbench-{i}"
            spec = PodSpec(name=name, namespace=POD_NAMESPACE, uid=f"{round_id}-{i}",
                           log_directory=str(target.pod_log_root / round_id / name),
                           labels={BENCH_LABEL: "bench"}, host_network=target.host_network(variant))
            pod = MicrobenchPod(name, variant)
            results.append(pod)
            _one_pod(cri, target.handler(variant), spec, image, [str(mem_bytes), file_path, str(file_bytes)],
                     pod, timeout_s)
            _append(out, [{"run_id": run.run_id, "round_id": round_id, "variant": variant, "pod_name": name,
                           "status": pod.status, "error": pod.error, **asdict(r)} for r in pod.records]
                    or [{"run_id": run.run_id, "round_id": round_id, "variant": variant, "pod_name": name,
                         "status": pod.status, "error": pod.error}])
    return results


def _one_pod(cri: CriClient, handler: str, spec: PodSpec, image: str, args: list[str], pod: MicrobenchPod,
             timeout_s: float) -> None:
    config = cri.sandbox_config(spec)
    sandbox = None
    deadline = time.monotonic() + timeout_s
    try:
        sandbox = cri.run_pod_sandbox(config, handler, timeout_s=timeout_s)
        cid = cri.create_container(sandbox, ContainerSpec("microbench", image, args=args, log_path="microbench.log",
                                                          labels={BENCH_LABEL: "bench"}), config, timeout_s=timeout_s)
        cri.start_container(cid, timeout_s=timeout_s)
        while (st := cri.container_status(cid, timeout_s=timeout_s)).state != CONTAINER_EXITED:
            if time.monotonic() > deadline:
                pod.status, pod.error = "timeout", f"microbench did not exit within {timeout_s:g} s"
                return
            time.sleep(POLL_S)
        pod.exit_code = st.exit_code
        log = Path(spec.log_directory) / "microbench.log"
        pod.records, report = parse_microbench_file(log) if log.is_file() else ([], None)
        if st.exit_code != 0 or len(pod.records) != 3:
            why = report.skipped[0][2] if report and report.skipped else st.reason
            pod.status, pod.error = "failed", f"exit {st.exit_code}, {len(pod.records)} of 3 measurements ({why})"
        else:
            pod.status = "ok"
    except CriError as err:
        pod.status, pod.error = "failed", str(err)
    finally:
        if sandbox is not None:
            for call in (cri.stop_pod_sandbox, cri.remove_pod_sandbox):
                try:
                    call(sandbox, timeout_s=timeout_s)
                except CriError as err:
                    pod.error = pod.error or f"clean-up: {err}"
