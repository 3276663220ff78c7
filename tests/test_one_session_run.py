"""One session, one run: 01 starts a run, 02-05 reuse it while testbed and profile match, 06 shows it."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import nbformat
import papermill
import pytest

from fastiov_lib.config import REPO_ROOT, load_profile, load_testbed
from fastiov_lib.notebook import session as nbsession
from local_testbed_support import needs_local_testbed

NOTEBOOKS = REPO_ROOT / "notebooks"


def _testbed(tmp_path: Path):
    return load_testbed(REPO_ROOT / "testbeds" / "local.yaml").model_copy(update={"results_dir": tmp_path})


def test_later_notebooks_reuse_the_run_the_first_started(tmp_path):
    tb, prof = _testbed(tmp_path), load_profile("smoke")
    first, why = nbsession.session_run(tb, prof, new_run=True)
    assert why == "new run (asked for)"
    again, why = nbsession.session_run(tb, prof)
    assert again.path == first.path and why == "current run (reused)"
    assert json.loads((tmp_path / "current-run.json").read_text())["run_id"] == first.run_id


def test_a_different_profile_starts_a_new_run_and_says_why(tmp_path):
    tb = _testbed(tmp_path)
    first, _ = nbsession.session_run(tb, load_profile("smoke"), new_run=True)
    other, why = nbsession.session_run(tb, load_profile("default"))
    assert other.path != first.path
    assert why.startswith("new run (profile 'smoke' != 'default'")
    # the new run is now the current one
    assert nbsession.read_current_run(tmp_path).path == other.path


def test_a_pointer_to_a_deleted_run_is_ignored(tmp_path):
    tb, prof = _testbed(tmp_path), load_profile("smoke")
    first, _ = nbsession.session_run(tb, prof, new_run=True)
    shutil.rmtree(first.path)
    assert nbsession.read_current_run(tmp_path) is None
    second, why = nbsession.session_run(tb, prof)
    assert second.path.is_dir() and why == "new run (no current run)"


def test_figures_notebook_falls_back_to_the_example_only_without_a_current_run(tmp_path):
    run, why = nbsession.analysis_run("", results_root=tmp_path)
    assert run.run_id == "example-local" and why.startswith("no current run")
    mine, _ = nbsession.session_run(_testbed(tmp_path), load_profile("smoke"), new_run=True)
    run, why = nbsession.analysis_run("", results_root=tmp_path)
    assert run.path == mine.path and why == "current run of this session"
    assert list(nbsession.which_run(run, why)["run id"]) == [mine.run_id]


def _run_ids_in(results: Path) -> set[str]:
    return {p.name for p in results.iterdir() if (p / "run.json").is_file()} if results.is_dir() else set()


@pytest.mark.slow
@needs_local_testbed
def test_stepping_through_the_notebooks_with_defaults_makes_one_run_that_06_shows(tmp_path):
    """As JupyterLab would: each notebook in its own kernel, default parameters, in order."""
    results = REPO_ROOT / "results"
    pointer = nbsession.current_run_file(results)
    saved = pointer.read_text() if pointer.exists() else None
    before = _run_ids_in(results)
    made: set[str] = set()
    try:
        for name in ("01_build", "02_host", "03_nic", "04_bench", "05_ablation", "06_figures"):
            papermill.execute_notebook(str(NOTEBOOKS / f"{name}.ipynb"), str(tmp_path / f"{name}.ipynb"),
                                       cwd=str(NOTEBOOKS), kernel_name="python3", progress_bar=False)
            made = _run_ids_in(results) - before
        assert len(made) == 1, f"expected one run directory, got {sorted(made)}"
        (run_id,) = made
        run = results / run_id
        pods = [json.loads(line) for line in (run / "pods.jsonl").read_text().splitlines() if line.strip()]
        assert {p["experiment"] for p in pods} == {"startup", "app", "ablation"}
        shown = nbformat.read(str(tmp_path / "06_figures.ipynb"), as_version=4)
        first_table = next(c for c in shown.cells if c.cell_type == "code" and "analysis_run" in c.source)
        text = "".join(o.get("data", {}).get("text/plain", "") for o in first_table.outputs)
        assert run_id in text and "current run of this session" in text
    finally:
        for run_id in made:
            shutil.rmtree(results / run_id, ignore_errors=True)
        if saved is None:
            pointer.unlink(missing_ok=True)
        else:
            pointer.write_text(saved)


def test_running_06_alone_without_a_current_run_says_what_to_do(tmp_path):
    import subprocess
    import sys

    res = subprocess.run([sys.executable, "-m", "fastiov_lib", "run", "06_figures", "--profile", "smoke",
                          "--results", str(tmp_path)], capture_output=True, text=True, timeout=120, cwd=REPO_ROOT)
    assert res.returncode == 2
    assert "no current run" in res.stderr and "run 01_build first" in res.stderr
    assert "Traceback" not in res.stderr and not any(tmp_path.iterdir())
