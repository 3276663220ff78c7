"""How much latency and CPU the benchmark harness itself adds to what it measures.

For every pod, the client-observed RunPodSandbox duration (t_sandbox_returned_ns - t_released_ns,
taken by fastiov_lib.bench.engine around the gRPC call) is compared with containerd's own duration for the
same sandbox: the time between its "RunPodSandbox for <metadata>" and "... returns sandbox id" log
lines (matched by the pod's uid). The difference is what the harness adds: request and reply
(de)serialisation on both sides, the unix-socket round trip, gRPC scheduling in containerd before
the CRI handler runs, and the driver thread's wait for the GIL. The original harness added a fixed
100 ms sleep plus up to 50 ms of polling to every sample.

For scale, `idle_version_rpc_ms_*` is the latency of the same number of simultaneous Version RPCs
(no work in containerd): the floor of client + transport + dispatch at that concurrency.

Also reported: the driver's CPU time per pod (process CPU time of this Python process while the
round's pods ran, divided by the pods), and at concurrency 50 whether every pod was recorded.

It starts a private local testbed (own work dir, link prefix and subnets, so it does not disturb a
testbed that is already up), runs the rounds and tears the testbed down again.

    sudo .venv/bin/python benchmarks/harness_overhead.py --out benchmarks/results/harness_overhead.json
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import statistics
import sys
import tempfile
import time
from ipaddress import IPv4Network
from pathlib import Path

import numpy as np

from fastiov_lib.testbeds import backend_for
from fastiov_lib.bench import engine as bench

from fastiov_lib.testbeds.local import testbed as local_testbed
from fastiov_lib.config import load_profile, load_testbed
from fastiov_lib.run.provenance import host_facts, tool_versions
from fastiov_lib.run.rundir import create_run_dir

_LOG_RE = re.compile(r'^time="(?P<time>[^"]+)".*msg="RunPodSandbox for &PodSandboxMetadata\{[^}]*'
                     r'Uid:(?P<uid>[^,]+),[^}]*\}(?P<returns> returns sandbox id)?')


def _parse_time_ns(text: str) -> int:
    """RFC 3339 with up to 9 fractional digits (containerd/logrus) -> Unix ns (datetime keeps only us)."""
    main, _, rest = text.partition(".")
    frac = re.match(r"\d*", rest).group(0)
    tz = rest[len(frac):] or "Z"
    base = dt.datetime.fromisoformat(main + (tz if tz != "Z" else "+00:00"))
    return int(base.timestamp()) * 1_000_000_000 + int((frac + "000000000")[:9])


def containerd_sandbox_times(log_text: str) -> dict[str, tuple[int, int]]:
    """uid -> (start, return) Unix ns of containerd's RunPodSandbox log lines."""
    starts: dict[str, int] = {}
    out: dict[str, tuple[int, int]] = {}
    for line in log_text.splitlines():
        m = _LOG_RE.match(line)
        if not m:
            continue
        t = _parse_time_ns(m.group("time"))
        if m.group("returns"):
            if m.group("uid") in starts:
                out[m.group("uid")] = (starts[m.group("uid")], t)
        else:
            starts[m.group("uid")] = t
    return out


def _private_testbed(path: str, network: str, work_dir: Path):
    base = load_testbed(path)
    loc = base.local.model_copy(update={
        "work_dir": work_dir, "link_prefix": "fhb", "bridge_name": "fhbbr0",
        "bridge_subnet": IPv4Network("10.233.0.0/16"), "macvlan_subnet": IPv4Network("10.234.0.0/16"),
        "hostdev_subnet": IPv4Network("10.235.0.0/16"), "hostdev_pool_size": 64, "storage_port": 5133,
        "network_modes": [network],
    })
    return base.model_copy(update={"name": "local-harness", "local": loc, "allow_host_changes": True})


def rpc_floor(socket_path: Path, api: str, concurrency: int, batches: int = 20) -> list[float]:
    """ms per call of `concurrency` simultaneous Version RPCs from one event loop, as the benchmark
    issues its calls: what transport and client cost when the runtime has nothing else to do."""
    import asyncio

    from fastiov_lib.cri import AsyncCriClient

    async def go() -> list[float]:
        acri = AsyncCriClient(socket_path, api=api, timeout_s=30)  # type: ignore[arg-type]
        await acri.version()
        out: list[float] = []

        async def one() -> float:
            t = time.monotonic_ns()
            await acri.version()
            return (time.monotonic_ns() - t) / 1e6

        for _ in range(batches):
            out += await asyncio.gather(*[one() for _ in range(concurrency)])
        await acri.close()
        return out

    return asyncio.run(go())


def _pct(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 4) if values else None


def measure(testbed, network: str, levels: list[tuple[int, int]], run_root: Path, warmup: int = 2) -> list[dict]:
    results = []
    profile = load_profile("smoke")
    if warmup:  # first calls pay for lazy imports and channel set-up; measured like pyperf's warm-ups, not kept
        run = create_run_dir(testbed, profile, run_id="harness-warmup", results_root=run_root, facts=backend_for(testbed).facts())
        bench.run_startup_sweep(testbed, run, [1], warmup, networks=[network], experiment="harness-warmup")
    for conc, rounds in levels:
        run = create_run_dir(testbed, profile, run_id=f"harness-c{conc}", results_root=run_root, facts=backend_for(testbed).facts())
        sweep = bench.run_startup_sweep(testbed, run, [conc], rounds, networks=[network], experiment="harness")
        added: list[float] = []
        request_leg: list[float] = []
        reply_leg: list[float] = []
        client: list[float] = []
        server: list[float] = []
        unmatched = 0
        spreads: list[float] = []
        for rnd in sweep.rounds:
            times = containerd_sandbox_times(rnd.log_file.read_text()) if rnd.log_file else {}
            arrivals = [times[r.extra["uid"]][0] for r in sweep.records
                        if r.extra.get("round_id") == rnd.round_id and r.extra.get("uid") in times]
            if arrivals:  # how simultaneous the starts were, as containerd saw them arrive
                spreads.append(round((max(arrivals) - min(arrivals)) / 1e6, 3))
            for rec in sweep.records:
                if rec.extra.get("round_id") != rnd.round_id or rec.status != "ok":
                    continue
                logged = times.get(rec.extra["uid"])
                if logged is None:
                    unmatched += 1
                    continue
                ns = logged[1] - logged[0]
                c_ns = rec.t_sandbox_returned_ns - rec.t_released_ns
                # the same host clock on both sides: split the added time into its two legs
                request_leg.append((logged[0] - rec.wall_released_ns) / 1e6)
                reply_leg.append((rec.wall_released_ns + c_ns - logged[1]) / 1e6)
                client.append(c_ns / 1e6)
                server.append(ns / 1e6)
                added.append((c_ns - ns) / 1e6)
        cpu_ns = sum(r.driver_cpu_ns for r in sweep.rounds)
        floor = rpc_floor(local_testbed.paths_for(testbed).socket, sweep.records[0].extra["cri_api"], conc)
        statuses: dict[str, int] = {}
        for rec in sweep.records:
            statuses[rec.status] = statuses.get(rec.status, 0) + 1
        results.append({
            "concurrency": conc,
            "rounds": rounds,
            "pods": len(sweep.records),
            "pods_expected": conc * rounds,
            "statuses": statuses,
            "samples": len(added),
            "unmatched_in_log": unmatched,
            "added_latency_ms_p50": _pct(added, 50),
            "added_latency_ms_p99": _pct(added, 99),
            "added_latency_ms_mean": round(statistics.fmean(added), 4) if added else None,
            "added_latency_ms_max": round(max(added), 4) if added else None,
            "request_leg_ms_p50": _pct(request_leg, 50),
            "request_leg_ms_p99": _pct(request_leg, 99),
            "reply_leg_ms_p50": _pct(reply_leg, 50),
            "reply_leg_ms_p99": _pct(reply_leg, 99),
            "arrival_spread_ms_per_round": spreads,
            "idle_version_rpc_ms_p50": _pct(floor, 50),
            "idle_version_rpc_ms_p99": _pct(floor, 99),
            "client_runpodsandbox_ms_p50": _pct(client, 50),
            "containerd_runpodsandbox_ms_p50": _pct(server, 50),
            "driver_cpu_ms_per_pod": round(cpu_ns / 1e6 / max(len(sweep.records), 1), 4),
            "driver_cpu_ms_per_pod_incl_cleanup": round(sweep.driver_cpu_s * 1e3 / max(len(sweep.records), 1), 4),
        })
        r = results[-1]
        print(f"c={conc:3} pods={r['pods']:4}/{r['pods_expected']} added p50={r['added_latency_ms_p50']} ms "
              f"p99={r['added_latency_ms_p99']} ms (request leg p50 {r['request_leg_ms_p50']}, reply leg p50 "
              f"{r['reply_leg_ms_p50']}) cpu/pod={r['driver_cpu_ms_per_pod']} ms", file=sys.stderr)
    return results


def measure_crictl_style(testbed, handler: str, levels: list[tuple[int, int]], network: str = "none") -> list[dict]:
    """The original harness's method (crictl_rounds.py) at each level, on the same containerd."""
    from crictl_rounds import run_round, summarise

    from fastiov_lib.cri import CriClient

    paths = local_testbed.paths_for(testbed)
    out = []
    with CriClient(paths.socket, api="auto", timeout_s=60) as cri:
        for conc, rounds in levels:
            # the local testbed's `none` pods share the host's network namespace (as the artifact's do)
            got = [run_round(cri, paths.socket, handler, conc, paths.log_file, paths.pod_logs, network == "none")
                   for _ in range(rounds)]
            out.append({"concurrency": conc, **summarise(got)})
            r = out[-1]
            print(f"crictl-style c={conc:3} added p50={r['added_latency_ms_p50']} ms p99={r['added_latency_ms_p99']} ms "
                  f"arrival spread {r['arrival_spread_ms_per_round']} ms failed={r['failed']}", file=sys.stderr)
    return out


def comparison(results: list[dict], crictl: list[dict]) -> list[dict]:
    """One row per concurrency: what each client adds over containerd, the Version floor, the spreads."""
    by_c = {r["concurrency"]: r for r in crictl}
    rows = []
    for r in results:
        c = by_c.get(r["concurrency"], {})
        floor = r["idle_version_rpc_ms_p50"]
        rows.append({
            "concurrency": r["concurrency"],
            "artifact_added_ms_p50": r["added_latency_ms_p50"],
            "artifact_added_ms_p99": r["added_latency_ms_p99"],
            "version_floor_ms_p50": floor,
            "artifact_over_floor_p50": round(r["added_latency_ms_p50"] / floor, 2) if floor else None,
            "artifact_arrival_spread_ms_max": max(r["arrival_spread_ms_per_round"], default=None),
            "crictl_style_added_ms_p50": c.get("added_latency_ms_p50"),
            "crictl_style_added_ms_p99": c.get("added_latency_ms_p99"),
            "crictl_style_arrival_spread_ms_max": max(c.get("arrival_spread_ms_per_round") or [], default=None),
            "containerd_runpodsandbox_ms_p50": r["containerd_runpodsandbox_ms_p50"],
        })
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="JSON file to write")
    parser.add_argument("--testbed", default="testbeds/local.yaml", help="local testbed YAML to derive from")
    parser.add_argument("--network", default="none", choices=list(local_testbed.LOCAL_MODES),
                        help="network mode of the pods (default none: the cheapest sandbox)")
    parser.add_argument("--levels", default="1:30,10:5,50:3",
                        help="concurrency:rounds pairs (default 1:30,10:5,50:3)")
    parser.add_argument("--work-dir", default="/var/tmp/fastiov-harness", help="private testbed work dir")
    parser.add_argument("--warmup", type=int, default=2, help="warm-up rounds at concurrency 1, not reported")
    parser.add_argument("--crictl-levels", default="1:5,10:3,50:2",
                        help="concurrency:rounds of the crictl-style client (the original's method; '' = skip)")
    args = parser.parse_args(argv)
    levels = [tuple(int(x) for x in item.split(":")) for item in args.levels.split(",")]
    crictl_levels = [tuple(int(x) for x in item.split(":")) for item in args.crictl_levels.split(",") if item]
    testbed = _private_testbed(args.testbed, args.network, Path(args.work_dir))
    started = time.time()
    load_before = list(os.getloadavg())
    try:
        handle = local_testbed.ensure_up(testbed)
        with tempfile.TemporaryDirectory(prefix="fastiov-harness-") as tmp:
            results = measure(testbed, args.network, levels, Path(tmp), args.warmup)
        crictl = measure_crictl_style(testbed, handle.runtime_handler(args.network), crictl_levels, args.network)
    finally:
        local_testbed.down(testbed)
    doc = {
        "benchmark": "harness_overhead",
        "description": "client-observed RunPodSandbox minus containerd's logged duration for the same "
                       "sandbox; driver CPU per pod",
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "duration_s": round(time.time() - started, 1),
        "network": args.network,
        "warmup_rounds": args.warmup,
        "runtime_handler": handle.runtime_handler(args.network),
        "machine": {**host_facts().model_dump(), "tools": tool_versions()},
        # the machine is shared: other work running at the same time inflates the tails
        "load_avg_before": load_before,
        "load_avg_after": list(os.getloadavg()),
        "results": results,
        "crictl_style": crictl,
        "comparison": comparison(results, crictl),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=2) + "\n")
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
