"""`fastiov-artifact bench`: run the concurrent startup benchmark (and optionally the app test) into a run dir."""
from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

from fastiov_lib.config import MAX_CONCURRENCY, ConfigError, load_profile, load_testbed

DEFAULT_TESTBED = "testbeds/local.yaml"


def _int_list(text: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected comma-separated integers, e.g. 1,5,10") from None
    if not values or any(v < 1 or v > MAX_CONCURRENCY for v in values):
        raise argparse.ArgumentTypeError(f"{text!r}: expected integers from 1 to {MAX_CONCURRENCY}")
    repeated = sorted({v for v in values if values.count(v) > 1})
    if repeated:  # as a profile refuses them: two rounds would both be labelled repeat 0
        raise argparse.ArgumentTypeError(f"{text!r}: {', '.join(map(str, repeated))} given twice; each level once "
                                         "(use --repeats for more rounds)")
    return values


def _bounded(kind: type, low: float, high: float, what: str):
    """An argparse type: a finite number in [low, high]."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r}: expected {what}") from None
        if not low <= value <= high:  # also refuses nan and inf
            raise argparse.ArgumentTypeError(f"{text!r}: expected {what}")
        return value
    return parse


def _check_networks(names: list[str], option: str) -> None:
    from typing import get_args

    from fastiov_lib.config import NetworkMode

    known = get_args(NetworkMode)
    for name in names:
        if name not in known:
            raise ConfigError(f"{option} {name!r}: not a network mode (known: {', '.join(known)})")


def _str_list(text: str) -> list[str]:
    values = [x.strip() for x in text.split(",") if x.strip()]
    if not values:
        raise argparse.ArgumentTypeError("expected a comma-separated list, e.g. none,bridge")
    repeated = sorted({v for v in values if values.count(v) > 1})
    if repeated:
        raise argparse.ArgumentTypeError(f"{text!r}: {', '.join(repeated)} given twice; each once")
    return values


def _bench(args: argparse.Namespace) -> int:
    import pandas as pd

    from fastiov_lib.bench import engine as bench
    from fastiov_lib.run.rundir import create_run_dir

    from fastiov_lib.run.rundir import RecordWriteError
    from fastiov_lib.testbeds import backend_for

    testbed = load_testbed(args.testbed)
    profile = load_profile(args.profile)
    if args.variant is None:
        _check_networks(args.network, "--network")
    _check_networks([args.app_network], "--app-network")
    out = Path(args.out).expanduser().resolve()
    existed = out.exists()
    backend = backend_for(testbed)
    run = create_run_dir(testbed, profile, run_id=out.name, results_root=out.parent,
                         extend_foreign=args.extend_foreign, facts=backend.facts())
    experiment = args.experiment or ("startup" if len(args.network) == 1 else "ablation")
    results = []
    reason = "failed"
    hooks = backend.round_hooks()  # e.g. the instrumented containerd's mode switch + record collection
    try:
        with backend.exclusive("bench"):
            results.append(bench.run_startup_sweep(testbed, run, args.concurrency, args.repeats,
                                                   variants=args.variant or args.network, experiment=experiment,
                                                   timeout_s=args.timeout, hooks=hooks))
            if args.app:
                results.append(bench.run_app_sweep(testbed, run, args.app_concurrency or args.concurrency,
                                                   args.repeats, network=args.app_network, file_mb=args.app_file_mb,
                                                   timeout_s=args.timeout, hooks=hooks))
            reason = "completed"
    except bench.BenchInterrupted as exc:
        reason = f"interrupted by {signal.Signals(exc.signum).name}"
        print(f"{exc}; records so far are in {run.pods_file}", file=sys.stderr)
        return 130 if exc.signum == 2 else 143
    except KeyboardInterrupt as exc:
        reason = f"interrupted by {str(exc) or 'SIGINT'}"
        raise
    except bench.BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except RecordWriteError as exc:
        print(f"error: {exc.strerror}", file=sys.stderr)
        return 1
    finally:
        if not existed and run.discard_if_unused():
            print(f"nothing was measured; {run.path} was not kept", file=sys.stderr)
        elif run.path.is_dir():
            try:
                run.finish(reason)
            except OSError as exc:
                print(f"error: {run.run_file}: could not record the end of the run ({exc.strerror})",
                      file=sys.stderr)
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
    p.add_argument("--repeats", type=_bounded(int, 1, 1000, "an integer from 1 to 1000"), default=3,
                   help="rounds per concurrency level (default 3)")
    p.add_argument("--network", type=_str_list, default=["bridge"],
                   help="local network modes to sweep, e.g. none,bridge,macvlan,hostdev (default bridge)")
    p.add_argument("--variant", type=_str_list, default=None, help="real FastIOV host: variant names")
    p.add_argument("--experiment", choices=["startup", "ablation"], default=None,
                   help="record label (default: startup for one network, ablation for several)")
    p.add_argument("--timeout", type=_bounded(float, 0.1, 86400.0, "seconds, from 0.1 to 86400"), default=120.0,
                   help="seconds per pod before it counts as timeout")
    p.add_argument("--app", action="store_true", help="also run the app test (download + hash per pod)")
    p.add_argument("--app-concurrency", type=_int_list, default=None, help="app test concurrency (default: --concurrency)")
    p.add_argument("--app-network", default="bridge", help="app test network mode (default bridge)")
    p.add_argument("--app-file-mb", type=_bounded(int, 1, 4096, "MiB, an integer from 1 to 4096"), default=4,
                   help="app test input size in MiB (default 4)")
    p.add_argument("--out", required=True, help="run directory to create or extend (pods.jsonl, logs/, run.json); "
                                                "only a run of the same testbed, profile and host is extended")
    p.add_argument("--extend-foreign", action="store_true",
                   help="extend --out even if it holds another testbed's, profile's or host's run")
    p.set_defaults(func=_bench)
