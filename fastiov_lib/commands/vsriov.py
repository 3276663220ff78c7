"""`fastiov-artifact vsriov plan|setup|up|bench|clean`: the virtual SR-IOV host (QEMU/TCG guest)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fastiov_lib.config import load_profile, load_testbed
from fastiov_lib.run.rundir import create_run_dir
from fastiov_lib.testbeds import backend_for

DEFAULT_TESTBED = "testbeds/vsriov.yaml"


def _run_dir(args: argparse.Namespace, testbed, profile):
    facts = backend_for(testbed).facts()
    if args.out:
        out = Path(args.out).expanduser().resolve()
        return create_run_dir(testbed, profile, run_id=out.name, results_root=out.parent, facts=facts)
    return create_run_dir(testbed, profile, facts=facts)


def _session(args: argparse.Namespace, benchmarks: bool) -> int:
    from fastiov_lib.testbeds.vsriov import testbed as vsriov

    testbed = load_testbed(args.testbed)
    if testbed.vsriov is None:
        print(f"error: {testbed.source_path}: not a virtual SR-IOV host: kind expected 'vsriov'", file=sys.stderr)
        return 2
    profile = load_profile(args.profile)
    try:
        run = _run_dir(args, testbed, profile)
    except ValueError as exc:  # a run id with characters a run directory may not have
        print(f"error: --out {args.out}: {exc}", file=sys.stderr)
        return 2
    reason = "failed"
    try:
        result = vsriov.run_guest_session(testbed, run, profile, benchmarks=benchmarks,
                                          progress=not args.quiet, raise_on_failure=False)
        reason = "completed" if result.ok else "failed"
    except vsriov.VsriovError as exc:
        print(f"error: {exc}", file=sys.stderr)
        print(run.path)
        return 1
    except KeyboardInterrupt as exc:  # SIGINT or SIGTERM (the CLI raises both alike)
        reason = f"interrupted by {str(exc) or 'SIGINT'}"
        raise
    finally:
        run.finish(reason)
    for key, value in result.summary().items():
        print(f"{key:>14}: {value}")
    if result.ok and benchmarks:
        from fastiov_lib.analysis.vsriov import summary_table
        from fastiov_lib.report.vsriov_report import claims_table

        print()
        print(summary_table(run.path).to_string(index=False))
        print()
        print(claims_table(run.path).to_string(index=False))
    if not result.ok:
        print(f"error: {result.error} (console log: {result.console_log})", file=sys.stderr)
    print(run.path)
    return 0 if result.ok else 1


def _plan(args: argparse.Namespace) -> int:
    from fastiov_lib.testbeds.vsriov import testbed as vsriov

    testbed = load_testbed(args.testbed)
    for step in vsriov.plan_setup(testbed):
        flag = "done" if step.done else ("HOST CHANGE" if step.changes_host else "to do")
        print(f"{flag:>11}  {step.name}: {step.detail}")
    return 0


def _setup(args: argparse.Namespace) -> int:
    from fastiov_lib.testbeds.vsriov import testbed as vsriov

    testbed = load_testbed(args.testbed)
    try:
        image = vsriov.prepare_guest(testbed, progress=not args.quiet)
    except vsriov.VsriovError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"device: {image.device.name} ({image.device_note})")
    print(f"qemu: {image.qemu.binary} {image.qemu.version_text} ({image.qemu.source})")
    print(f"kernel: {image.kernel.package} ({image.kernel.vmlinuz})")
    print(f"initramfs: {image.initramfs}")
    return 0


def _build_qemu(args: argparse.Namespace) -> int:
    from fastiov_lib.testbeds.vsriov import qemu62
    from fastiov_lib.testbeds.vsriov.common import VsriovError

    testbed = load_testbed(args.testbed)
    sources = Path(args.sources).expanduser().resolve() if args.sources else None
    try:
        if args.plan:
            for row in qemu62.plan(testbed, sources):
                print(f"{row['state']:>6}  {row['component']:<12} {row['step']:<9} {row.get('what', '')}")
            return 0
        built = qemu62.ensure_built(testbed, sources=sources)
    except VsriovError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for variant, path in built.items():
        print(f"{variant}: {path}")
    return 0


def _clean(args: argparse.Namespace) -> int:
    from fastiov_lib.testbeds.vsriov import testbed as vsriov

    testbed = load_testbed(args.testbed)
    for path in vsriov.clean(testbed, keep_downloads=not args.all):
        print(f"removed {path}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("vsriov", help="virtual SR-IOV host: boot a QEMU guest, run the NIC steps and micro-benchmarks")
    actions = parser.add_subparsers(dest="vsriov_action", metavar="ACTION", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--testbed", default=DEFAULT_TESTBED, help="testbed YAML of kind vsriov (default: %(default)s)")
    run_opts = argparse.ArgumentParser(add_help=False)
    run_opts.add_argument("--profile", default="smoke", help="smoke, default, paper or a profile YAML (default: %(default)s)")
    run_opts.add_argument("--out", help="run directory to create or resume (default: results/<new run id>)")
    run_opts.add_argument("--quiet", action="store_true", help="no progress bars")
    up = actions.add_parser("up", parents=[common, run_opts],
                            help="set up, boot the guest and run the NIC steps (fastiov_lib.hw.nic) in it")
    up.set_defaults(func=lambda a: _session(a, benchmarks=False))
    bench = actions.add_parser("bench", parents=[common, run_opts],
                               help="as `up`, plus the micro-benchmarks (VF enable, bind, VFIO open/reset, MAP_DMA)")
    bench.set_defaults(func=lambda a: _session(a, benchmarks=True))
    setup = actions.add_parser("setup", parents=[common], help="fetch and build everything a boot needs, boot nothing")
    setup.add_argument("--quiet", action="store_true", help="no progress bars")
    setup.set_defaults(func=_setup)
    plan = actions.add_parser("plan", parents=[common], help="show the set-up steps and which are done")
    plan.set_defaults(func=_plan)
    bq = actions.add_parser("build-qemu", parents=[common],
                            help="build QEMU 6.2.0 stock and with 0001-qemu.patch into the work dir (once, ~15 min)")
    bq.add_argument("--sources", help="offline source archives (default: ../shared/sources when present)")
    bq.add_argument("--plan", action="store_true", help="show the build steps and which are done, build nothing")
    bq.set_defaults(func=_build_qemu)
    clean = actions.add_parser("clean", parents=[common], help="remove built images (and with --all the downloads)")
    clean.add_argument("--all", action="store_true", help="also remove downloaded .debs, apt lists, kernel, QEMU")
    clean.set_defaults(func=_clean)
