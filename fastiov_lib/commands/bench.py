"""`fastiov-artifact bench`: run the concurrent startup benchmark (and optionally the app test) into a run dir."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fastiov_lib.config import load_profile, load_testbed

DEFAULT_TESTBED = "testbeds/local.yaml"


def _int_list(text: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected comma-separated integers, e.g. 1,5,10") from None
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"{text!r}: expected positive integers")
    return values


def _str_list(text: str) -> list[str]:
    values = [x.strip() for x in text.split(",") if x.strip()]
    if not values:
        raise argparse.ArgumentTypeError("expected a comma-separated list, e.g. none,bridge")
    return values


def _bench(args: argparse.Namespace) -> int:
    import pandas as pd

    from fastiov_lib.bench import engine as bench
    from fastiov_lib.run.rundir import create_run_dir

    testbed = load_testbed(args.testbed)
    profile = load_profile(args.profile)
    out = Path(args.out).expanduser().resolve()
    run = create_run_dir(testbed, profile, run_id=out.name, results_root=out.parent)
    experiment = args.experiment or ("startup" if len(args.network) == 1 else "ablation")
    results = []
    from fastiov_lib.testbeds import backend_for

    hooks = backend_for(testbed).round_hooks()  # e.g. the instrumented containerd's mode switch + records
    try:
        results.append(bench.run_startup_sweep(testbed, run, args.concurrency, args.repeats,
                                               variants=args.variant or args.network, experiment=experiment,
                                               timeout_s=args.timeout, hooks=hooks))
        if args.app:
            results.append(bench.run_app_sweep(testbed, run, args.app_concurrency or args.concurrency,
                                               args.repeats, network=args.app_network, file_mb=args.app_file_mb,
                                               timeout_s=args.timeout, hooks=hooks))
    except bench.BenchInterrupted as exc:
        print(f"{exc}; records so far are in {run.pods_file}", file=sys.stderr)
        return 130 if exc.signum == 2 else 143
    except bench.BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        run.finish()
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        for res in results:
            if res.message:
                print(res.message)
            print(res.summary().to_string(index=False))
    print(run.path)
    records = [r for res in results for r in res.records]
    # failed/timed-out pods are results too, but a caller (CI) must be able to tell
    return 1 if any(r.status != "ok" for r in records) else 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("bench", help="concurrent pod startup benchmark into a run directory",
                              description=__doc__)
    p.add_argument("--testbed", default=DEFAULT_TESTBED, help=f"testbed YAML (default {DEFAULT_TESTBED})")
    p.add_argument("--profile", default="smoke", help="profile recorded in run.json (default smoke)")
    p.add_argument("--concurrency", type=_int_list, default=[1, 5, 10], help="pods started at once, e.g. 1,5,10")
    p.add_argument("--repeats", type=int, default=3, help="rounds per concurrency level (default 3)")
    p.add_argument("--network", type=_str_list, default=["bridge"],
                   help="local network modes to sweep, e.g. none,bridge,macvlan,hostdev (default bridge)")
    p.add_argument("--variant", type=_str_list, default=None, help="real FastIOV host: variant names")
    p.add_argument("--experiment", choices=["startup", "ablation"], default=None,
                   help="record label (default: startup for one network, ablation for several)")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds per pod before it counts as timeout")
    p.add_argument("--app", action="store_true", help="also run the app test (download + hash per pod)")
    p.add_argument("--app-concurrency", type=_int_list, default=None, help="app test concurrency (default: --concurrency)")
    p.add_argument("--app-network", default="bridge", help="app test network mode (default bridge)")
    p.add_argument("--app-file-mb", type=int, default=4, help="app test input size in MiB (default 4)")
    p.add_argument("--out", required=True, help="run directory to create or extend (pods.jsonl, logs/, run.json)")
    p.set_defaults(func=_bench)
