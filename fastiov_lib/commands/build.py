"""`fastiov-artifact build plan|apply --testbed FILE`: build and install the FastIOV stack."""
from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("build", help="fetch, verify, patch, build and install the FastIOV stack")
    p.add_argument("action", choices=["plan", "apply"], help="plan: every step with source, pin and checksum "
                                                             "status; apply: run them (stamped steps are skipped)")
    p.add_argument("--testbed", required=True, help="testbed YAML file (kind fastiov)")
    p.add_argument("--component", action="append", default=None,
                   help="only this component (repeatable); default: all")
    p.add_argument("--through", default=None, help="stop after this step (e.g. build: no install)")
    p.add_argument("--offline", action="store_true", help="use only the download cache")
    p.add_argument("--run-dir", default=None, help="write logs and build_provenance.json into RUN_DIR")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from fastiov_lib.testbeds.fastiov_host.build.builder import Builder, BuildError, format_build_plan
    from fastiov_lib.config import load_testbed
    from fastiov_lib.testbeds.fastiov_host.build.manifest import ManifestError
    from fastiov_lib.hw.host_steps import HostChangesNotAllowed

    tb = load_testbed(args.testbed)
    try:
        builder = Builder(tb, run_path=Path(args.run_dir) if args.run_dir else None, offline=args.offline)
        if args.action == "plan":
            rows = builder.plan()
            if args.component:
                rows = [r for r in rows if r["component"] in args.component]
            print(format_build_plan(rows))
            todo = sum(1 for r in rows if r["state"] != "done")
            print(f"\n{len({r['component'] for r in rows})} components, {len(rows)} actions, {todo} to do")
            return 0
        for r in builder.apply(only=args.component, through=args.through):
            print(f"{r['component']:<20} {r['step']:<9} {r['status']}")
        return 0
    except (BuildError, ManifestError, HostChangesNotAllowed) as exc:
        print(f"error: {exc}")
        return 1
