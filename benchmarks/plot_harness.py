"""Figure of harness_overhead.json: what each client adds over containerd, and how spread out its
starts arrived (containerd's log), per concurrency level. Single-column width (3.3 in), 7 pt ticks.

    .venv/bin/python benchmarks/plot_harness.py benchmarks/results/harness_overhead.json
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

# one colour per client, the same in both panels
COLOURS = {"artifact": "#1b9e77", "crictl-style": "#d95f02", "Version floor": "#7570b3"}


def plot(doc: dict, out: Path) -> list[Path]:
    """Two panels (added latency p50 with p99 whiskers; arrival spread per round); PNG and PDF."""
    rows = doc["comparison"]
    levels = [r["concurrency"] for r in rows]
    x = range(len(levels))
    series = {
        "artifact": ([r["artifact_added_ms_p50"] for r in rows], [r["artifact_added_ms_p99"] for r in rows]),
        "crictl-style": ([r["crictl_style_added_ms_p50"] for r in rows], [r["crictl_style_added_ms_p99"] for r in rows]),
        "Version floor": ([r["version_floor_ms_p50"] for r in rows], [None] * len(rows)),
    }
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(3.3, 2.2), constrained_layout=True)
    width = 0.27
    for k, (name, (p50, p99)) in enumerate(series.items()):
        xs = [i + (k - 1) * width for i in x]
        vals = [v if v is not None else 0 for v in p50]
        err = [[0] * len(vals), [(hi - lo) if hi is not None and lo is not None else 0 for lo, hi in zip(vals, p99)]]
        ax1.bar(xs, vals, width, color=COLOURS[name], label=name, yerr=err, capsize=1.5,
                error_kw={"linewidth": 0.6})
    ax1.set_yscale("log")
    ax1.set_xticks(list(x), [str(c) for c in levels])
    ax1.set_xlabel("pods at once", fontsize=7)
    ax1.set_ylabel("added over containerd (ms)", fontsize=7)
    ax1.tick_params(labelsize=7)
    for name, key in (("artifact", "results"), ("crictl-style", "crictl_style")):
        labelled = False
        for r in doc.get(key, []):
            spreads = r.get("arrival_spread_ms_per_round") or []
            if spreads and r["concurrency"] in levels:
                i = levels.index(r["concurrency"])
                # a spread of 0 (one pod) cannot be drawn on a log axis: shown at 0.01 ms
                ax2.scatter([i] * len(spreads), [max(s, 0.01) for s in spreads], s=8, color=COLOURS[name],
                            label=None if labelled else name)
                labelled = True
    ax2.set_yscale("log")
    ax2.set_xticks(list(x), [str(c) for c in levels])
    ax2.set_xlabel("pods at once", fontsize=7)
    ax2.set_ylabel("arrival spread per round (ms)", fontsize=7)
    ax2.tick_params(labelsize=7)
    ax2.set_xlim(-0.5, len(levels) - 0.5)
    handles, labels = ax1.get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=3, fontsize=7, frameon=False)
    load = doc.get("load_avg_before", [None])[0]
    fig.suptitle(f"harness overhead ({doc.get('date', '')[:10]}, load {load:.1f} on "
                 f"{doc.get('machine', {}).get('cpu_count', '?')} cores)" if load is not None else "harness overhead",
                 fontsize=7)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "harness_overhead.png", out / "harness_overhead.pdf"]
    for p in paths:
        fig.savefig(p, dpi=300)
    plt.close(fig)
    return paths


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: plot_harness.py HARNESS_OVERHEAD.json", file=sys.stderr)
        return 2
    src = Path(argv[0])
    try:
        doc = json.loads(src.read_text())
    except (OSError, ValueError) as exc:
        print(f"{src}: cannot read the benchmark JSON ({exc})", file=sys.stderr)
        return 1
    if "comparison" not in doc:
        print(f"{src}: no 'comparison' rows (written by an older harness_overhead.py; run it again)", file=sys.stderr)
        return 1
    for p in plot(doc, src.parent):
        print(p)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
