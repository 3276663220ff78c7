"""rounds.jsonl: one line per round of a sweep, appended when the round ends.

What the round was (experiment, variant, concurrency, repeat), where it stood in the sweep's
planned order, when it ran (wall clock), how busy the host was before and after it (load
average), which kernel was booted, the pid each of its sandboxes reported (QEMU's under kata: the
stage breakdown joins QEMU's timeline to pods with it), and whatever the back end's round hooks add.
Round-level statistics resample these rounds; the report shows the load per round.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
from pydantic import BaseModel, ConfigDict, ValidationError

from fastiov_lib.run.rundir import LoadReport, read_jsonl

ROUNDS_FILE = "rounds.jsonl"


class RoundRecord(BaseModel):
    """One round of a sweep, as appended to rounds.jsonl."""

    model_config = ConfigDict(extra="allow")

    run_id: str
    experiment: str
    variant: str
    concurrency: int
    repeat: int
    order_index: int  # position in the sweep's planned order (0-based)
    sweep_seed: int | None = None  # the seed of that order (None: not shuffled)
    round_id: str
    boot_group: str = ""  # variants that share a boot (a real host's kernel); "" = one boot
    wall_start_ns: int
    wall_end_ns: int | None = None
    load_before: list[float] | None = None  # 1, 5, 15 min load average
    load_after: list[float] | None = None
    cpu_count: int | None = None
    kernel: str | None = None  # which of a campaign's kernels ran the round (a real host; None elsewhere)
    kernel_release: str = ""  # the booted kernel (uname -r) the round's pods ran on
    pods: int = 0
    counts: dict[str, int] = {}  # status -> pods
    sandbox_pids: dict[str, int] = {}  # sandbox id -> the pid its runtime reported (QEMU's under kata)
    extra: dict[str, Any] = {}  # what the back end's round hooks add


def read_rounds(run_dir: str | Path) -> tuple[list[RoundRecord], LoadReport]:
    """rounds.jsonl of a run directory (empty when the run has none); bad lines are reported."""
    records, report = read_jsonl(Path(run_dir) / ROUNDS_FILE)
    out = []
    for i, obj in enumerate(records, start=1):
        try:
            out.append(RoundRecord.model_validate(obj))
        except ValidationError as exc:
            err = exc.errors()[0]
            key = ".".join(str(p) for p in err["loc"]) or "(record)"
            report.skipped.append((i, f"not a round record: key '{key}': {err['msg']}"))
    return out, report


def rounds_frame(records: list[RoundRecord]) -> pd.DataFrame:
    """Rounds as a table: labels, order, wall times, load per core before and after."""
    cols = ["experiment", "variant", "concurrency", "repeat", "order_index", "round_id", "boot_group",
            "kernel_release", "wall_start_ns", "wall_end_ns", "pods", "load_before", "load_after",
            "load_per_core_before", "load_per_core_after"]
    rows = []
    for r in records:
        cores = r.cpu_count or 0
        rows.append({**{c: getattr(r, c) for c in cols[:11]},
                     "load_before": r.load_before[0] if r.load_before else None,
                     "load_after": r.load_after[0] if r.load_after else None,
                     "load_per_core_before": r.load_before[0] / cores if r.load_before and cores else None,
                     "load_per_core_after": r.load_after[0] / cores if r.load_after and cores else None})
    return pd.DataFrame(rows, columns=cols)


def sandbox_pids(records: list[RoundRecord]) -> pd.DataFrame:
    """(round_id, sandbox_id, pid) for every sandbox whose runtime reported a pid."""
    rows = [(r.round_id, sid, pid) for r in records for sid, pid in r.sandbox_pids.items()]
    return pd.DataFrame(rows, columns=["round_id", "sandbox_id", "pid"])
