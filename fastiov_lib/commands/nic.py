"""`fastiov-artifact nic plan|apply|release|fake-tree --testbed FILE [--root DIR]`: VFs for passthrough."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("nic", help="SR-IOV NIC set-up: hugepages, VFs, vfio-pci binding")
    p.add_argument("action", choices=["plan", "apply", "release", "fake-tree"],
                   help="plan: print every sysfs write; apply: make them (allow_host_changes); release: undo; "
                        "fake-tree: write a generated fake host tree for the testbed at --root (to rehearse)")
    p.add_argument("--testbed", required=True, help="testbed YAML file (kind fastiov)")
    p.add_argument("--root", default=None, help="sysfs/procfs root instead of the testbed's sys_root "
                                                "(e.g. a tree made with `nic fake-tree`)")
    p.add_argument("--run-dir", default=None, help="append timing records to RUN_DIR/nic.jsonl")
    p.add_argument("--fake-kernel", action="store_true",
                   help="--root is a tree made by `nic fake-tree`: its files react as the kernel would")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from fastiov_lib.hw import nic
    from fastiov_lib.config import load_testbed
    from fastiov_lib.hw.host_steps import HostChangesNotAllowed, format_plan

    tb = load_testbed(args.testbed)
    root = Path(args.root) if args.root else None
    run_dir = Path(args.run_dir) if args.run_dir else None
    if args.action == "fake-tree":
        if root is None or root.resolve() == Path("/"):
            print("error: fake-tree needs --root pointing at a new directory, not /", file=sys.stderr)
            return 2
        from fastiov_lib.hw.fake_sysfs import build_fake_host, spec_for_testbed

        build_fake_host(root, spec_for_testbed(tb, hugepages_2m=0), tb)
        print(f"fake host tree for {tb.name} written to {root} (apply/release there react like the kernel)")
        return 0
    writer = None
    if args.fake_kernel:
        if root is None:
            print("error: --fake-kernel needs --root (a tree made by `nic fake-tree`)", file=sys.stderr)
            return 2
        from fastiov_lib.hw.fake_sysfs import FakeSysfs

        writer = FakeSysfs(root)
    try:
        if args.action == "plan":
            rows = nic.nic_plan(tb, root)
            print(format_plan(rows))
            problems = nic.nic_guard_problems(tb, root)
            print(f"\n{len(rows)} actions" + ("; REFUSED by guards:\n  " + "\n  ".join(problems) if problems else ""))
            return 1 if problems else 0
        if args.action == "apply":
            for r in nic.nic_apply(tb, run_dir, root, writer):
                create = [t["duration_ns"] for t in r.timings if t["event"] == "create_vfs"]
                print(f"{r.pf}: {len(r.vfs)} VFs on {sorted(set(map(str, r.drivers.values())))}"
                      + (f", created in {create[0] / 1e6:.1f} ms" if create else "")
                      + "".join(f"\n  skipped {s['what']}: {s['reason']}" for s in r.skipped))
            return 0
        for r in nic.nic_release(tb, run_dir, root, writer):
            print(f"{r.pf}: released {len(r.vfs)} VFs")
        return 0
    except (nic.NicError, HostChangesNotAllowed) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
