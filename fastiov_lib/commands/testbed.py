"""`fastiov-artifact testbed up|down|cleanup|check --testbed FILE`: the local testbed's lifecycle."""
from __future__ import annotations

import argparse
import sys

from ..checks import format_checks, worst_status
from ..config import load_testbed

DEFAULT_TESTBED = "testbeds/local.yaml"


def _load_local(path: str):
    testbed = load_testbed(path)
    if testbed.kind != "local":
        print(f"error: {testbed.source_path}: testbed kind is {testbed.kind!r}; `testbed` manages the "
              "'local' kind only (a real host is prepared with the notebooks 01-03)", file=sys.stderr)
        return None
    return testbed


def _up(args: argparse.Namespace) -> int:
    from .. import local_testbed

    testbed = _load_local(args.testbed)
    if testbed is None:
        return 2
    try:
        handle = local_testbed.ensure_up(testbed)
    except local_testbed.LocalTestbedError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"containerd pid {handle.pid}, socket {handle.socket}")
    for mode in handle.modes:
        state = "supported" if mode.supported else "unsupported"
        handler = handle.runtime_handler(mode.mode) if mode.supported else "-"
        print(f"  network {mode.mode:8} {state:11} runtime handler {handler:14} {mode.reason}")
    for image in handle.images:
        print(f"  image {image.ref}  {image.manifest_digest[:19]}  imported={image.imported}")
    return 0


def _report(report) -> None:
    for row in report.as_rows():
        if row["count"]:
            print(f"  {row['what']:14} {row['count']:4}  {row['items']}")
    if not report.removed_anything and not report.errors:
        print("  nothing to remove")


def _down(args: argparse.Namespace) -> int:
    from .. import local_testbed

    testbed = _load_local(args.testbed)
    if testbed is None:
        return 2
    report = local_testbed.down(testbed)
    _report(report)
    return 1 if report.errors else 0


def _cleanup(args: argparse.Namespace) -> int:
    from .. import local_testbed

    testbed = _load_local(args.testbed)
    if testbed is None:
        return 2
    report = local_testbed.cleanup(testbed)
    _report(report)
    left = local_testbed.pod_leftovers(testbed) if local_testbed.paths_for(testbed).work_dir.exists() else []
    for item in left:
        print(f"  still present: {item}", file=sys.stderr)
    return 1 if report.errors or left else 0


def _check(args: argparse.Namespace) -> int:
    from .. import local_testbed

    testbed = _load_local(args.testbed)
    if testbed is None:
        return 2
    checks = local_testbed.local_checks(testbed)
    print(format_checks(checks))
    return 1 if worst_status(checks) == "fail" else 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("testbed", help="bring the local testbed up, tear it down, clean up after pods",
                                   description=__doc__)
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    for name, func, text in [
        ("up", _up, "start the private containerd, write CNI configs, create links and the hostdev pool, "
                    "build and import the images (idempotent)"),
        ("down", _down, "remove everything: pods, containerd, links, pool, the work directory"),
        ("cleanup", _cleanup, "remove pod leftovers (sandboxes, netns, pod links, IPAM state), e.g. after "
                              "the benchmark was killed; the testbed itself stays up"),
        ("check", _check, "which binaries, kernel features and network modes this machine has"),
    ]:
        p = sub.add_parser(name, help=text, description=text)
        p.add_argument("--testbed", default=DEFAULT_TESTBED, help=f"testbed YAML (default {DEFAULT_TESTBED})")
        p.set_defaults(func=func)
