"""Synthetic run directories for the analysis tests: PodRecords written the way the bench writes them.

The latencies follow a stated model (base per variant + slope x concurrency + noise), so tests know
what the analysis must find.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np

from fastiov_lib.run.rundir import PODS_FILE, RUN_FILE, JsonlWriter, PodRecord

T0 = 1_700_000_000_000_000_000  # wall clock ns of the first release


def write_run(path: Path, *, kind: str = "local", experiment: str = "startup",
              variants: dict[str, float] | None = None, concurrency: Sequence[int] = (1, 4, 8),
              repeats: int = 2, slope_ms: float = 10.0, noise_ms: float = 2.0, seed: int = 0,
              failed: int = 0, drop: int = 0, app: str | None = None, host: dict | None = None,
              append: bool = False, start_ns: int = T0, round_sd_ms: float = 0.0) -> Path:
    """Write pods.jsonl (+ run.json unless appending). `failed` pods per round get status failed,
    `drop` pods of the first round are left out (as if never recorded); `round_sd_ms` shifts every
    pod of a round by one draw (pods of a round share its fate)."""
    variants = variants or {"none": 100.0, "bridge": 150.0}
    rng = np.random.default_rng(seed)
    path.mkdir(parents=True, exist_ok=True)
    if not append:
        info = {"run_id": path.name, "testbed_name": f"test-{kind}", "testbed_kind": kind,
                "profile_name": "test", "host": host or {"hostname": "h1", "cpu_model": "cpu", "cpu_count": 2,
                                                        "mem_total_kb": 1, "kernel": "6.1", "load_avg": [0.1, 0.1, 0.1]},
                "start_time": "2026-01-01T00:00:00+00:00", "end_time": "2026-01-01T00:10:00+00:00"}
        (path / RUN_FILE).write_text(json.dumps(info))
    wall = start_ns
    first = True
    with JsonlWriter(path / PODS_FILE, fsync=False) as w:
        for variant, base in variants.items():
            for c in concurrency:
                for r in range(repeats):
                    shift = rng.normal(0, round_sd_ms) if round_sd_ms else 0.0
                    for i in range(c):
                        if first and i < drop:
                            continue
                        startup = base + slope_ms * c + shift + abs(rng.normal(0, noise_ms))
                        t0 = 10_000_000_000 + wall - start_ns
                        ok = i >= failed
                        rec = dict(
                            run_id=path.name, testbed=f"test-{kind}", testbed_kind=kind, experiment=experiment,
                            variant=variant, network=variant, runtime_handler="runc", concurrency=c, repeat=r,
                            pod_index=i, pod_name=f"p-{variant}-{c}-{r}-{i}", t_released_ns=t0,
                            wall_released_ns=wall, status="ok" if ok else "failed",
                            error=None if ok else "synthetic failure",
                        )
                        if ok:
                            rec["sandbox_id"] = f"sb-{experiment}-{variant}-{c}-{r}-{i}"
                            rec["t_sandbox_returned_ns"] = t0 + int(startup * 1e6)
                            rec["t_network_ready_ns"] = t0 + int((startup + 5) * 1e6)
                            if app:
                                rec["t_container_started_ns"] = t0 + int((startup + 20) * 1e6)
                                rec["t_container_exited_ns"] = t0 + int((startup + 220) * 1e6)
                                rec["extra"] = {"app": app}
                        w.append(PodRecord(**rec))
                    first = False
                    wall += int(2e9)  # next round two seconds later
    return path
