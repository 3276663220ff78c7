"""`fastiov-artifact variant set NAME | show | list | deploy --testbed FILE`: which stack the pods run on."""
from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("variant", help="switch between vanilla SR-IOV, FastIOV, single optimisations "
                                              "and network baselines (edits the kata config)")
    p.add_argument("action", choices=["set", "show", "list", "plan", "deploy", "rounds", "restore-cni"],
                   help="rounds: what the benchmark does before the run, around every round and after it; "
                        "restore-cni: put back the network configs `set`/`deploy` moved to oldconfs/")
    p.add_argument("name", nargs="?", default=None, help="variant name (for set/plan/deploy)")
    p.add_argument("--testbed", required=False, help="testbed YAML file (kind fastiov)")
    p.add_argument("--root", default=None, help="files below this root instead of the testbed's sys_root")
    p.add_argument("--run-dir", default=None, help="record the active variant in RUN_DIR")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from fastiov_lib.testbeds.fastiov_host import runtime_config as rc
    from fastiov_lib.config import ConfigError, load_testbed
    from fastiov_lib.hw.host_steps import HostChangesNotAllowed, format_plan, require_host_changes
    from fastiov_lib.testbeds.fastiov_host.cni_conf import CniConfError

    if args.action == "list":
        print(format_plan(rc.variant_table()))
        return 0
    if not args.testbed:
        raise ConfigError("--testbed FILE is required for this action")
    tb = load_testbed(args.testbed)
    root = Path(args.root) if args.root else None
    try:
        if args.action == "rounds":
            from fastiov_lib.testbeds.fastiov_host.round_hooks import real_host_plan

            print(format_plan(real_host_plan(tb)))
            return 0
        if args.action == "restore-cni":
            from fastiov_lib.testbeds.fastiov_host.cni_conf import restore_moved

            require_host_changes(tb.allow_host_changes, "variant restore-cni", str(tb.source_path or ""))
            restored = restore_moved(tb.fastiov, root or tb.sys_root)
            print("\n".join(f"restored {r}" for r in restored) or "nothing to restore")
            return 0
        if args.action == "show":
            print(json.dumps(rc.show_variant(tb, root), indent=2))
            return 0
        if not args.name:
            raise rc.VariantError(f"variant {args.action} needs a NAME; known: {', '.join(rc.VARIANTS)}")
        if args.action == "plan":
            print(format_plan(rc.plan_variant(tb, args.name, root)))
            return 0
        if args.action == "deploy":
            for r in rc.deploy_configs(tb, root, variant=args.name):
                print(f"{r['status']:<8} {r['target']}")
            return 0
        res = rc.set_variant(tb, args.name, Path(args.run_dir) if args.run_dir else None, root)
        for c in res.changes:
            print(f"{c['key']}: {c['old']!r} -> {c['new']!r}")
        print(f"variant {res.variant} active ({len(res.changes)} keys changed; backup in {res.backup_dir})")
        for moved in res.moved_aside:
            print(f"moved aside (sorted before the artifact's conflist): {moved}")
        for w in res.warnings:
            print(f"warning: {w}")
        return 0
    except (rc.VariantError, HostChangesNotAllowed, CniConfError) as exc:
        print(f"error: {exc}")
        return 1
