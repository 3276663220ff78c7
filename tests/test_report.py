"""report.md + figures/ from a run directory, and the `report` / `import-original` commands."""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest

import fastiov_lib
from fastiov_lib.report import markdown as report
from synthetic_runs import T0, write_run
from test_logs import make_original

FIGURES = ["startup_vs_concurrency", "startup_cdf", "stage_breakdown", "ablation", "app_completion"]
CLI = [sys.executable, "-m", "fastiov_lib.commands.cli"]


def local_run(path: Path) -> Path:
    write_run(path, variants={"bridge": 100.0}, concurrency=(1, 4, 8), repeats=2)
    write_run(path, experiment="ablation", variants={"none": 90.0, "bridge": 130.0, "hostdev": 110.0},
              concurrency=(4,), repeats=2, append=True, start_ns=2 * 10**18)
    write_run(path, experiment="app", variants={"bridge": 100.0}, concurrency=(2,), app="compress",
              append=True, start_ns=3 * 10**18)
    return path


def test_report_writes_every_figure_and_the_claims_table(tmp_path):
    run = local_run(tmp_path / "r1")
    out = report.write_report(run)
    text = out.read_text()
    for name in FIGURES:
        assert (run / "figures" / f"{name}.png").stat().st_size > 10_000
        assert (run / "figures" / f"{name}.pdf").stat().st_size > 1_000
        assert f"figures/{name}.png" in text
    assert "## Claims" in text and "| L1-every-pod-recorded |" in text and "| holds |" in text
    assert "testbed: test-local (local) · run: r1" in text
    assert "harness phases" in text  # a local run has no stages.csv: the breakdown uses the phases


def test_single_figures_and_experiment_summaries_for_the_bench_notebooks(tmp_path):
    from fastiov_lib.analysis import stats as analysis
    run = analysis.load_run(local_run(tmp_path / "r"))
    assert report.figure(run, "ablation").axes[0].get_ylabel().endswith("(ms)")
    s = report.experiment_summary(run, "ablation")
    assert s["variant"].tolist() == ["bridge", "hostdev", "none"] and (s["pods"] == 8).all()
    assert report.experiment_summary(run, "app")["mean_ms"].iloc[0] > 200  # completion, not startup (4 pods: no p50)
    with pytest.raises(KeyError, match="known: startup_vs_concurrency"):
        report.figure(run, "nope")


def test_report_builds_stages_from_instrumentation_logs(tmp_path):
    run = write_run(tmp_path / "host", kind="fastiov", variants={"vanilla": 800.0}, concurrency=(2,), repeats=1,
                    noise_ms=0.0, slope_ms=0.0)
    ts = pd.Timestamp(T0 + 50_000_000, tz="UTC").isoformat().replace("+00:00", "Z")
    logs_dir = run / "logs" / "kata_logs"
    logs_dir.mkdir(parents=True)
    # one shim process per pod: a record naming its sandbox, and one labelled "start" (joined through the process)
    for i, (pid, el) in enumerate(((11, 300_000_000), (12, 500_000_000))):
        sid = f"sb-startup-vanilla-2-0-{i}"
        (logs_dir / f"cnicmp-{pid}.log").write_text(
            f'{ts}\tINFO\tCNI_kata_create_sandbox2\t{{"record_id": "{sid}", "start_t": "{ts}", "elapsed_ns": 1000}}\n'
            f'{ts}\tINFO\tCNI_startSandbox3\t{{"record_id": "start", "start_t": "{ts}", "elapsed_ns": {el}}}\n')
    text = report.write_report(run).read_text()
    assert (run / "stages.csv").exists()
    assert "component stage records" in text and "CNI_startSandbox3" in text
    assert "| 400.0 |" in text  # mean of 300 and 500 ms


def test_report_adds_sections_of_optional_modules(tmp_path, monkeypatch):
    from fastiov_lib.report import figures as plots
    from fastiov_lib.report import registry
    from fastiov_lib.report.section import ReportItem, Section, holds

    def probe_section(run):
        fig = plots.ReportFigure(figsize=(2, 2))
        fig.subplots().plot([1, 2], [1, 2])
        return Section("## Probe section\nmeasured 3 things\n", {"probe": fig})

    probe = ReportItem("probe", lambda run: holds(run, "vsriov.jsonl"), section=probe_section)
    monkeypatch.setattr(registry, "ITEMS", [*registry.ITEMS[:-1], probe, registry.ITEMS[-1]])
    run = write_run(tmp_path / "r", variants={"none": 50.0}, concurrency=(1,), repeats=1)
    assert "Probe section" not in report.write_report(run).read_text()  # no vsriov.jsonl: not asked
    (run / "vsriov.jsonl").write_text("")
    text = report.write_report(run).read_text()
    assert "## Probe section" in text and "![probe](figures/probe.png)" in text
    assert (run / "figures" / "probe.pdf").exists()


def test_cli_imports_original_results_and_reports_on_them(tmp_path):
    src = make_original(tmp_path / "orig", broken=True)
    dest = tmp_path / "imported"
    imp = subprocess.run([*CLI, "import-original", str(src), "--out", str(dest), "--variant", "vanilla"],
                         capture_output=True, text=True, timeout=120)
    assert imp.returncode == 0, imp.stderr
    assert "30 records" in imp.stdout and "no result line" in imp.stderr
    rep = subprocess.run([*CLI, "report", str(dest)], capture_output=True, text=True, timeout=120)
    assert rep.returncode == 0, rep.stderr
    assert "claims:" in rep.stdout
    text = (dest / "report.md").read_text()
    assert "imported from original layout" in text and "original-artifact (fastiov)" in text
    assert all((dest / "figures" / f"{n}.pdf").exists() for n in FIGURES)
    again = subprocess.run([*CLI, "import-original", str(src), "--out", str(dest)], capture_output=True,
                           text=True, timeout=120)
    assert again.returncode == 2 and "not empty" in again.stderr


def test_cli_report_names_a_directory_that_is_not_a_run(tmp_path):
    res = subprocess.run([*CLI, "report", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and str(tmp_path) in res.stderr and "not a run directory" in res.stderr
