"""`fastiov-artifact host-check --testbed FILE [--root DIR] [--profile P]`: readiness checks, non-zero exit on a failure."""
from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("host-check", help="check this host's readiness (kernel, IOMMU, hugepages, "
                                                 "modules, runtimes, configs)")
    p.add_argument("--testbed", required=True, help="testbed YAML file")
    p.add_argument("--root", default=None, help="read sysfs/procfs/files below this root instead of the "
                                                "testbed's sys_root (e.g. a generated fake tree)")
    p.add_argument("--profile", default=None, help="also check what this profile's campaign needs from this host "
                                                   "now (hugepages, VFs, tenants), e.g. paper")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from fastiov_lib.testbeds.checks import format_checks
    from fastiov_lib.config import load_profile, load_testbed
    from fastiov_lib.testbeds import backend_for

    tb = load_testbed(args.testbed)
    profile = load_profile(args.profile) if args.profile else None
    if args.root:
        tb = tb.model_copy(update={"sys_root": Path(args.root)})
    backend = backend_for(tb)
    checks = backend.checks()
    if profile is not None:
        from fastiov_lib.bench.campaign import live_campaign_checks

        checks += live_campaign_checks(backend, profile)
    print(format_checks(checks))
    failed = [c.name for c in checks if c.status == "fail"]
    print(f"\n{len(checks)} checks: {len(checks) - len(failed)} without failure, {len(failed)} failed")
    return 1 if failed else 0
