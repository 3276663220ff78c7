"""`fastiov-artifact testbed up|down|cleanup|check --testbed FILE`: a testbed's lifecycle, through its back end."""
from __future__ import annotations

import argparse
import sys

from fastiov_lib.config import load_testbed
from fastiov_lib.testbeds import backend_for
from fastiov_lib.testbeds.checks import format_checks, worst_status

DEFAULT_TESTBED = "testbeds/local.yaml"


def _up(args: argparse.Namespace) -> int:
    from fastiov_lib.testbeds.local.testbed import LocalTestbedError

    backend = backend_for(load_testbed(args.testbed))
    try:
        print(backend.up())
    except LocalTestbedError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


def _down(args: argparse.Namespace) -> int:
    text, ok = backend_for(load_testbed(args.testbed)).down()
    print(text)
    return 0 if ok else 1


def _cleanup(args: argparse.Namespace) -> int:
    text, ok = backend_for(load_testbed(args.testbed)).cleanup()
    print(text)
    return 0 if ok else 1


def _check(args: argparse.Namespace) -> int:
    checks = backend_for(load_testbed(args.testbed)).checks()
    print(format_checks(checks))
    return 1 if worst_status(checks) == "fail" else 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("testbed", help="bring the local testbed up, tear it down, clean up after pods",
                                   description=__doc__)
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    for name, func, text in [
        ("up", _up, "local: start the private containerd, write CNI configs, create links and the hostdev pool, "
                    "build and import the images (idempotent)"),
        ("down", _down, "local: remove everything it created: pods, containerd, links, pool, the work directory"),
        ("cleanup", _cleanup, "remove pod leftovers (sandboxes, netns, pod links, IPAM state), e.g. after "
                              "the benchmark was killed; the testbed itself stays up"),
        ("check", _check, "this testbed's readiness checks (binaries, kernel features, network modes)"),
    ]:
        p = sub.add_parser(name, help=text, description=text)
        p.add_argument("--testbed", default=DEFAULT_TESTBED, help=f"testbed YAML (default {DEFAULT_TESTBED})")
        p.set_defaults(func=func)
