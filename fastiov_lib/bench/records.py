"""What a sweep produces and how it is labelled: rounds, results, hooks, the summary table."""
from __future__ import annotations

import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Protocol

import pandas as pd

from fastiov_lib.run.rundir import PodRecord, RunDir
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
    sandbox_pids: dict[str, int] = field(default_factory=dict)  # sandbox id -> pid its runtime reported
    extra: dict[str, Any] = field(default_factory=dict)  # free for hooks
    kernel: str | None = None  # which of the testbed's campaign kernels ran the round (None: not applicable)
    kernel_release: str = ""  # uname -r of the kernel the round's pods ran on


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
# summary


# one summary table and one latency derivation for the whole artifact: both live in analysis
SUMMARY_COLUMNS = GROUP_SUMMARY_COLUMNS


def summary_table(records: Iterable[PodRecord | dict[str, Any]]) -> pd.DataFrame:
    """analysis.stats.group_summary of these records (the table 06_figures shows for the whole run)."""
    rows = [r.model_dump(mode="json") if isinstance(r, PodRecord) else dict(r) for r in records]
    return group_summary(pods_frame(rows)) if rows else pd.DataFrame(columns=SUMMARY_COLUMNS)
