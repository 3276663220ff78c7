"""stages.csv: the component stage records of a run, written in one place (after each round of a sweep).

The instrumented components' logs (containerd 1.3, kata, fastiov-cni) and QEMU's timelines, collected
under `<run>/logs/` by the back end's round hooks, are parsed, labelled with their round and joined to
their pods, then written atomically to `<run>/stages.csv`, which analysis and report read.
"""
from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from fastiov_lib.analysis.instrumentation import (assign_rounds, join_by_sandbox, parse_instrumentation_dir,
                                                  stages_from_instrumentation)
from fastiov_lib.analysis.pods import ParseReport, read_pods
from fastiov_lib.analysis.qemu_timeline import qemu_stages_dir
from fastiov_lib.run.rundir import STAGES_FILE


def build_stages_csv(run_dir: str | Path) -> tuple[Path | None, ParseReport]:
    """Parse instrumentation logs under run_dir/logs into run_dir/stages.csv (labelled by round).

    Returns (path or None when no record was found, report). The CSV is written atomically.
    """
    run_dir = Path(run_dir)
    df, report = parse_instrumentation_dir(run_dir / "logs")
    qemu, qemu_report = qemu_stages_dir(run_dir / "logs")
    report.merge(qemu_report)
    if df.empty and qemu.empty:
        return None, report
    pods, _ = read_pods(run_dir)
    parts = ([stages_from_instrumentation(df)] if not df.empty else []) + ([qemu] if not qemu.empty else [])
    stages = join_by_sandbox(assign_rounds(pd.concat(parts, ignore_index=True), pods), pods)
    # paths relative to the run dir: a run directory is read wherever it is copied to
    root = run_dir.resolve()
    stages["file"] = [str(Path(f).resolve().relative_to(root)) if Path(f).resolve().is_relative_to(root) else f
                      for f in stages["file"]]
    out = run_dir / STAGES_FILE
    tmp = out.with_suffix(".csv.tmp")
    stages.to_csv(tmp, index=False)
    os.replace(tmp, out)
    return out, report
