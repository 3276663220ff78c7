"""The original harness's method, reproduced: a bash loop backgrounds one client process per pod.

Each pod's subshell takes its start time, runs `crictl_style.py runp`, polls `crictl_style.py
inspectp` every 50 ms until the sandbox is ready, sleeps 100 ms and takes its end time (the
original's per-pod `<start_ms> <end_ms> <latency_ms>` line). What this adds over containerd's own RunPodSandbox duration, and how spread out containerd
saw the requests arrive, are read from containerd's log (harness_overhead.containerd_sandbox_times).
"""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

from google.protobuf import json_format

from fastiov_lib.cri import CriClient, CriError, PodSpec

HERE = Path(__file__).resolve().parent
ROUND_LABEL = "fastiov.harness/round"

# one subshell per pod, as the original's loop; `date +%s%N` is the host's realtime clock, as containerd's log
LOOP = r'''
for i in $(seq 0 $((N - 1))); do
  (
    start=$(date +%s%N)
    id=$("$PY" "$CLIENT" runp "$SOCK" "$API" "$DIR/pod-$i.json" "$HANDLER" 2>>"$DIR/err-$i") || exit 1
    while [ "$("$PY" "$CLIENT" inspectp "$SOCK" "$API" "$id" 2>>"$DIR/err-$i")" != "SANDBOX_READY" ]; do sleep 0.05; done
    sleep 0.1
    echo "$i $id $start $(date +%s%N)" > "$DIR/end-$i"
  ) &
done
wait
'''


def run_round(cri: CriClient, socket: Path, handler: str, concurrency: int, log_file: Path,
              pod_log_root: Path, host_network: bool) -> dict:
    """One round of `concurrency` crictl-style pods; per pod the client latency, containerd's times."""
    from harness_overhead import containerd_sandbox_times  # the one log parser of this benchmark

    round_id = f"crictl-{uuid.uuid4().hex[:8]}"
    offset = log_file.stat().st_size if log_file.exists() else 0
    with tempfile.TemporaryDirectory(prefix="fastiov-crictl-") as tmp:
        d = Path(tmp)
        uids = []
        for i in range(concurrency):
            uid = f"{round_id}-{i}"
            uids.append(uid)
            spec = PodSpec(name=f"crictl-{i}", namespace="test", uid=uid,
                           log_directory=str(pod_log_root / round_id / f"crictl-{i}"),
                           labels={ROUND_LABEL: round_id}, host_network=host_network)
            (d / f"pod-{i}.json").write_text(json_format.MessageToJson(cri.sandbox_config(spec)))
        env = {"PATH": "/usr/bin:/bin", "N": str(concurrency), "PY": sys.executable,
               "CLIENT": str(HERE / "crictl_style.py"), "SOCK": str(socket), "API": cri.api,
               "DIR": str(d), "HANDLER": handler, "PYTHONPATH": str(HERE.parent)}
        proc = subprocess.run(["bash", "-c", LOOP], env=env, capture_output=True, text=True, timeout=600)
        # a pod's client errors (the loop itself always exits 0, as the original's did)
        errors = [line for f in sorted(d.glob("err-*")) for line in f.read_text().splitlines() if line.strip()]
        spans = {}
        for f in d.glob("end-*"):
            i, _sb, t0, t1 = f.read_text().split()
            spans[uids[int(i)]] = (int(t0), int(t1))
    with open(log_file, "rb") as f:
        f.seek(offset)
        times = containerd_sandbox_times(f.read().decode("utf-8", "replace"))
    _remove(cri, round_id)
    pods = []
    for uid in uids:
        logged = times.get(uid)
        if uid in spans and logged is not None:
            t0, t1 = spans[uid]
            pods.append({"client_ms": (t1 - t0) / 1e6, "containerd_ms": (logged[1] - logged[0]) / 1e6,
                         "arrival_ns": logged[0]})
    arrivals = [p["arrival_ns"] for p in pods]
    return {"round_id": round_id, "pods": pods, "failed": concurrency - len(pods),
            "arrival_spread_ms": (max(arrivals) - min(arrivals)) / 1e6 if arrivals else None,
            "stderr": (proc.stderr.strip().splitlines() + errors)[-3:]}


def _remove(cri: CriClient, round_id: str) -> None:
    for sb in cri.list_pod_sandboxes({ROUND_LABEL: round_id}, timeout_s=30):
        try:
            cri.stop_pod_sandbox(sb.id, timeout_s=30)
            cri.remove_pod_sandbox(sb.id, timeout_s=30)
        except CriError as err:
            print(f"crictl-style round {round_id}: sandbox {sb.id[:12]} not removed: {err}", file=sys.stderr)


def summarise(rounds: list[dict]) -> dict:
    """Added latency (client minus containerd) and arrival spread over the rounds of one level."""
    import numpy as np

    added = [p["client_ms"] - p["containerd_ms"] for r in rounds for p in r["pods"]]
    spreads = [r["arrival_spread_ms"] for r in rounds if r["arrival_spread_ms"] is not None]
    pct = (lambda v, q: round(float(np.percentile(v, q)), 3) if v else None)
    return {"rounds": len(rounds), "samples": len(added), "failed": sum(r["failed"] for r in rounds),
            "added_latency_ms_p50": pct(added, 50), "added_latency_ms_p99": pct(added, 99),
            "added_latency_ms_min": round(min(added), 3) if added else None,
            "added_latency_ms_max": round(max(added), 3) if added else None,
            "arrival_spread_ms_per_round": [round(s, 3) for s in spreads],
            "errors": [line for r in rounds for line in r["stderr"]][:5]}
