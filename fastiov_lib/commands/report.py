"""`fastiov-artifact report RUN_DIR` and `fastiov-artifact import-original SRC --out RUN_DIR`."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _report(args: argparse.Namespace) -> int:
    import matplotlib

    matplotlib.use("Agg")  # a terminal has no display; figures go to files
    from fastiov_lib.report.claims import evaluate_claims
    from fastiov_lib.report.markdown import write_report
    from fastiov_lib.run.rundir import open_run_dir

    try:
        run = open_run_dir(args.run_dir)
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out = write_report(run.path)
    table = evaluate_claims(run.path)
    counts = table["verdict"].value_counts()
    print(f"{out}")
    print(f"figures: {run.figures_dir}")
    print("claims: " + ", ".join(f"{counts.get(v, 0)} {v}" for v in ("holds", "fails", "inconclusive", "not measured")))
    return 0


def _import_original(args: argparse.Namespace) -> int:
    from fastiov_lib.analysis.original import import_original_results

    try:
        run, report = import_original_results(args.src, args.out, variant=args.variant, network=args.network)
    except (FileNotFoundError, FileExistsError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(report.summary())
    for source, line, reason in report.skipped[:20]:
        print(f"  skipped {source} line {line}: {reason}", file=sys.stderr)
    if len(report.skipped) > 20:
        print(f"  ... and {len(report.skipped) - 20} more", file=sys.stderr)
    print(run.path)
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("report", help="write figures/ and report.md for a run directory")
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="a results/<run-id>/ directory")
    p.set_defaults(func=_report)

    q = subparsers.add_parser("import-original",
                              help="turn the original artifact's logs/time_kata_*/ results into a run directory")
    q.add_argument("src", type=Path, metavar="SRC",
                   help="the original logs/ folder, its parent, or one time_kata_<MMDDHHMM> folder")
    q.add_argument("--out", type=Path, required=True, metavar="RUN_DIR", help="new run directory to create")
    q.add_argument("--variant", default="original",
                   help="name of the configuration the original scripts measured (e.g. vanilla or fastiov)")
    q.add_argument("--network", default="sriov", help="network of the measured pods (default: sriov)")
    q.set_defaults(func=_import_original)
