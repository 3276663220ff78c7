"""The harness comparison benchmark's arithmetic and its crictl-style client's command line
(the rounds themselves need containerd: benchmarks/harness_overhead.py runs them)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCH))

import crictl_rounds  # noqa: E402
import harness_overhead  # noqa: E402


def _round(pods, spread):
    return {"pods": [{"client_ms": c, "containerd_ms": d, "arrival_ns": 0} for c, d in pods],
            "failed": 0, "arrival_spread_ms": spread, "stderr": []}


def test_crictl_style_added_latency_is_client_minus_containerd_per_pod():
    got = crictl_rounds.summarise([_round([(150.0, 40.0), (170.0, 50.0)], 110.0), _round([(160.0, 40.0)], 90.0)])
    assert got["samples"] == 3 and got["added_latency_ms_min"] == 110.0 and got["added_latency_ms_max"] == 120.0
    assert got["added_latency_ms_p50"] == 120.0 and got["arrival_spread_ms_per_round"] == [110.0, 90.0]


def test_comparison_puts_the_artifact_against_the_version_floor_and_the_crictl_style_client():
    artifact = [{"concurrency": 10, "added_latency_ms_p50": 3.0, "added_latency_ms_p99": 5.0,
                 "idle_version_rpc_ms_p50": 1.5, "arrival_spread_ms_per_round": [1.2, 3.7],
                 "containerd_runpodsandbox_ms_p50": 40.0}]
    crictl = [{"concurrency": 10, "added_latency_ms_p50": 340.0, "added_latency_ms_p99": 490.0,
               "arrival_spread_ms_per_round": [100.0, 700.0]}]
    row, = harness_overhead.comparison(artifact, crictl)
    assert row["artifact_over_floor_p50"] == 2.0 and row["artifact_arrival_spread_ms_max"] == 3.7
    assert row["crictl_style_added_ms_p50"] == 340.0 and row["crictl_style_arrival_spread_ms_max"] == 700.0


def test_comparison_leaves_levels_the_crictl_style_client_skipped_empty():
    artifact = [{"concurrency": 1, "added_latency_ms_p50": 0.8, "added_latency_ms_p99": 1.2,
                 "idle_version_rpc_ms_p50": 0.0, "arrival_spread_ms_per_round": [],
                 "containerd_runpodsandbox_ms_p50": 40.0}]
    row, = harness_overhead.comparison(artifact, [])
    assert row["crictl_style_added_ms_p50"] is None and row["artifact_over_floor_p50"] is None
    assert row["artifact_arrival_spread_ms_max"] is None


@pytest.mark.parametrize("argv", [[], ["stop", "s", "v1", "x"]])
def test_crictl_style_client_refuses_unknown_commands_with_its_usage(argv):
    proc = subprocess.run([sys.executable, str(BENCH / "crictl_style.py"), *argv], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 2 and proc.stderr.startswith("usage: crictl_style.py runp")


def test_containerd_log_lines_give_each_sandbox_its_arrival_and_return():
    line = ('time="2026-12-02T05:00:00.123456789Z" level=info msg="RunPodSandbox for &PodSandboxMetadata'
            '{Name:crictl-0,Uid:r-0,Namespace:test,Attempt:0,}RETURNS"')
    text = (line.replace("RETURNS", "") + "\n"
            + line.replace(".123456789", ".223456789").replace("RETURNS", ' returns sandbox id \\"5f3a\\"'))
    start, end = harness_overhead.containerd_sandbox_times(text)["r-0"]
    assert end - start == 100_000_000


def test_harness_figure_is_drawn_at_single_column_width(tmp_path):
    import json

    import plot_harness

    rows = [{"concurrency": c, "artifact_added_ms_p50": a, "artifact_added_ms_p99": a * 2,
             "version_floor_ms_p50": a / 2, "crictl_style_added_ms_p50": k, "crictl_style_added_ms_p99": k * 1.5}
            for c, a, k in ((1, 0.8, 150.0), (10, 2.0, 400.0), (50, 6.0, 1200.0))]
    doc = {"comparison": rows, "date": "2026-12-02", "load_avg_before": [3.0], "machine": {"cpu_count": 2},
           "results": [{"concurrency": 10, "arrival_spread_ms_per_round": [1.3, 3.7]}],
           "crictl_style": [{"concurrency": 10, "arrival_spread_ms_per_round": [150.0]}]}
    src = tmp_path / "h.json"
    src.write_text(json.dumps(doc))
    png, pdf = plot_harness.plot(doc, tmp_path)
    assert png.stat().st_size > 10_000 and pdf.exists()
    from matplotlib.image import imread
    assert imread(png).shape[1] == round(3.3 * 300)  # single column at 300 dpi
    old = tmp_path / "old.json"
    old.write_text(json.dumps({"results": []}))
    proc = subprocess.run([sys.executable, str(BENCH / "plot_harness.py"), str(old)], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 1 and "no 'comparison' rows" in proc.stderr


def test_the_bash_loop_runs_one_client_per_pod_polls_and_sleeps_100_ms(tmp_path):
    # the loop is the real one; only the CRI server is stood in for by a client that answers at once
    fake = tmp_path / "client.py"
    fake.write_text("import sys\n"
                    "print('sb-' + sys.argv[4].rsplit('-', 1)[1].split('.')[0] if sys.argv[1] == 'runp' "
                    "else 'SANDBOX_READY')\n")
    env = {"PATH": "/usr/bin:/bin", "N": "4", "PY": sys.executable, "CLIENT": str(fake), "SOCK": "s",
           "API": "v1", "DIR": str(tmp_path), "HANDLER": "h"}
    subprocess.run(["bash", "-c", crictl_rounds.LOOP], env=env, check=True, timeout=60)
    lines = sorted((tmp_path / f"end-{i}").read_text().split() for i in range(4))
    assert [ln[1] for ln in lines] == ["sb-0", "sb-1", "sb-2", "sb-3"]
    assert all(int(end) - int(start) >= 100_000_000 for _i, _sb, start, end in lines)  # the 100 ms sleep
