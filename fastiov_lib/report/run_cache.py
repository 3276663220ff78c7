"""Loaded runs, cached while their records are unchanged: every metric of a claims table reads the same run."""
from __future__ import annotations

import functools
from pathlib import Path

from fastiov_lib.analysis import stats as analysis


def _mtime_key(run_dir: Path) -> tuple[str, int, int, int]:
    p = Path(run_dir)
    stamps = [(p / f).stat().st_mtime_ns if (p / f).exists() else 0 for f in ("pods.jsonl", "stages.csv", "rounds.jsonl")]
    return str(p.resolve()), stamps[0], stamps[1], stamps[2]


@functools.lru_cache(maxsize=8)
def _cached_run(key: tuple[str, int, int, int]) -> analysis.Run:
    return analysis.load_run(key[0])


def run_for(run_dir: Path) -> analysis.Run:
    """The loaded run (cached while pods.jsonl, stages.csv and rounds.jsonl are unchanged)."""
    return _cached_run(_mtime_key(run_dir))
