"""`fastiov-artifact build plan|apply --testbed FILE`: build and install the FastIOV stack."""
from __future__ import annotations

import argparse
from pathlib import Path

STEPS = ("fetch", "verify", "unpack", "patch", "configure", "build", "install")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("build", help="fetch, verify, patch, build and install the FastIOV stack")
    p.add_argument("action", choices=["plan", "apply"], help="plan: every step with source, pin and checksum "
                                                             "status; apply: run them (stamped steps are skipped)")
    p.add_argument("--testbed", required=True, help="testbed YAML file (kind fastiov)")
    p.add_argument("--component", action="append", default=None,
                   help="only this component (repeatable); default: all")
    p.add_argument("--through", default=None, choices=STEPS,
                   help="stop after this step (patch and build change nothing outside the build folder)")
    p.add_argument("--offline", action="store_true", help="use only the download cache")
    p.add_argument("--sources", default=None, metavar="DIR",
                   help="pre-fetched source archives (e.g. ../shared/sources), each verified against the "
                        "manifest's pin before use; implies --offline")
    p.add_argument("--build-dir", default=None, metavar="DIR",
                   help="build (and cache) under DIR instead of the testbed's fastiov.build_dir/cache_dir")
    p.add_argument("--run-dir", default=None, help="write logs and build_provenance.json into RUN_DIR")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from fastiov_lib.config import load_testbed
    from fastiov_lib.hw.host_steps import HostChangesNotAllowed
    from fastiov_lib.testbeds.fastiov_host.build.builder import Builder
    from fastiov_lib.testbeds.fastiov_host.build.components import BuildError
    from fastiov_lib.testbeds.fastiov_host.build.plan_format import format_build_plan
    from fastiov_lib.testbeds.fastiov_host.build.manifest import ManifestError

    tb = load_testbed(args.testbed)
    try:
        if args.sources and not Path(args.sources).is_dir():
            raise BuildError(f"--sources {args.sources}: not a folder")
        builder = Builder(tb, run_path=Path(args.run_dir) if args.run_dir else None, offline=args.offline,
                          sources=Path(args.sources) if args.sources else None,
                          build_dir=Path(args.build_dir).resolve() if args.build_dir else None)
        if args.component:
            for name in args.component:
                builder.component(name)
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
            for patch, files in (r.get("skipped_identical") or {}).items():
                if files:
                    print(f"  {patch}: skipped {len(files)} new-file sections whose file exists identically: "
                          + ", ".join(files[:8]) + (f", ... ({len(files) - 8} more)" if len(files) > 8 else ""))
        return 0
    except (BuildError, ManifestError, HostChangesNotAllowed) as exc:
        print(f"error: {exc}")
        return 1
