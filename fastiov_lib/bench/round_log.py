"""The per-round record of a sweep: rounds.jsonl (model: run.rounds.RoundRecord) and the order in run.json."""
from __future__ import annotations

import os
import time
from typing import Any, Sequence

from fastiov_lib.bench.records import RoundInfo
from fastiov_lib.bench.round_order import PlannedRound, order_record
from fastiov_lib.run.rounds import ROUNDS_FILE, RoundRecord
from fastiov_lib.run.rundir import JsonlWriter, PodRecord, RunDir

ROUND_ORDERS_KEY = "round_orders"  # run.json: one entry per sweep (experiment, seed, order)


def _load() -> list[float] | None:
    try:
        return [round(x, 3) for x in os.getloadavg()]
    except OSError:
        return None


def record_order(run: RunDir, experiment: str, plan: list[PlannedRound], seed: int | None,
                 boot_group: str = "") -> None:
    """Add this sweep's planned order and seed to run.json (before its first round runs)."""
    orders = [o.model_dump(mode="json") for o in run.record().round_orders]
    orders.append(order_record(experiment, plan, seed, boot_group))
    run.update_record(**{ROUND_ORDERS_KEY: orders})


class RoundLog:
    """Appends one RoundRecord per round to the run's rounds.jsonl (fsynced, as pods.jsonl)."""

    def __init__(self, run: RunDir, seed: int | None, boot_group: str = ""):
        self.run = run
        self.seed = seed
        self.boot_group = boot_group
        self.writer = JsonlWriter(run.path / ROUNDS_FILE)
        self._start: dict[str, tuple[int, list[float] | None]] = {}

    def begin(self, info: RoundInfo) -> None:
        """Note the wall time and the host's load just before the round's pods are released."""
        self._start[info.round_id] = (time.time_ns(), _load())

    def end(self, info: RoundInfo, records: Sequence[PodRecord]) -> RoundRecord:
        """Append the finished round: labels, order, times, load before and after, kernel, pids."""
        wall_start, load_before = self._start.pop(info.round_id, (time.time_ns(), None))
        rec = RoundRecord(
            run_id=self.run.run_id, experiment=info.experiment, variant=info.variant,
            concurrency=info.concurrency, repeat=info.repeat, order_index=info.index, sweep_seed=self.seed,
            round_id=info.round_id, boot_group=self.boot_group, wall_start_ns=wall_start,
            wall_end_ns=time.time_ns(), load_before=load_before, load_after=_load(), cpu_count=os.cpu_count(),
            kernel=info.kernel, kernel_release=info.kernel_release or os.uname().release, pods=len(records),
            counts=dict(info.counts),
            sandbox_pids=dict(info.sandbox_pids), extra=_jsonable(info.extra))
        self.writer.append(rec)
        return rec

    def close(self) -> None:
        self.writer.close()


def _jsonable(extra: dict[str, Any]) -> dict[str, Any]:
    import json

    return json.loads(json.dumps(extra, default=str))
