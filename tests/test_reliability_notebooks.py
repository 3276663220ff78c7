"""Notebook parameters and adopted outputs (issue 21, items 1, 12, 18): a parameter of the wrong type is
refused before a run directory exists; adopt-outputs never replaces an edit or another notebook's code."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_output

from fastiov_lib.config import REPO_ROOT
from fastiov_lib.notebook import session as nbsession
from fastiov_lib.notebook.parameters import ParameterTypeError

from test_reliability_config_values import one_line_error


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fastiov_lib", *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})})


@pytest.mark.parametrize("param, needle", [
    ("testbed_path=42", "'testbed_path': expected text, got 42"),  # item 12
    ("profile=[1,2]", "'profile': expected text, got [1, 2]"),  # item 12
    ("interactive=maybe", "'interactive': expected True or False"),  # item 18
    ("new_run=maybe", "'new_run': expected True or False"),  # item 18
])
def test_run_refuses_a_parameter_of_the_wrong_type_and_leaves_no_run_or_pointer(tmp_path, param, needle):
    results = tmp_path / "results"
    one_line_error(_cli("run", "02_host", "--results", str(results), "-p", param), "02_host.ipynb", needle)
    assert not results.exists()  # no run directory, no current-run.json


def test_reproduce_refuses_a_parameter_of_the_wrong_type_before_anything_runs(tmp_path):
    results = tmp_path / "results"
    one_line_error(_cli("reproduce", "--results", str(results), "--notebooks", "02_host", "06_figures",
                        "-p", "06_figures.interactive=maybe"), "06_figures.ipynb", "'interactive'", "'maybe'")
    assert not results.exists()


def test_the_notebooks_library_calls_check_types_edited_by_hand_in_jupyterlab():
    with pytest.raises(ParameterTypeError, match="'new_run': expected True or False .*got 'maybe'"):
        nbsession.open_session("testbeds/local.yaml", "smoke", new_run="maybe")  # type: ignore[arg-type]
    with pytest.raises(ParameterTypeError, match="'run_dir': expected text, got 3"):
        nbsession.analysis_run(3)  # type: ignore[arg-type]


# ---------------------------------------------------------------- adopt-outputs (item 1)

@pytest.fixture()
def checkout(tmp_path):
    """A throwaway git checkout of the project's notebooks (FASTIOV_PROJECT points the CLI at it)."""
    repo = tmp_path / "repo"
    (repo / "notebooks").mkdir(parents=True)
    shutil.copy(REPO_ROOT / "binaries_manifest.yaml", repo)
    for name in ("02_host", "04_bench", "06_figures"):
        shutil.copy(REPO_ROOT / "notebooks" / f"{name}.ipynb", repo / "notebooks")
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "notebooks"], check=True)
    return repo


def _executed(run: Path, name: str, source: Path, marker: str) -> Path:
    """An executed copy as papermill writes it: an injected parameters cell and fresh outputs."""
    nb = nbformat.read(str(source), as_version=4)
    injected = new_code_cell('run_dir = "/x"')
    injected.metadata["tags"] = ["injected-parameters"]
    nb.cells.insert(1, injected)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = [new_output("stream", name="stdout", text=f"{marker}\n")]
    (run / "notebooks").mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, str(run / "notebooks" / f"{name}.ipynb"))
    return run / "notebooks" / f"{name}.ipynb"


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.glob("*.ipynb"))}


def test_adopt_refuses_to_replace_an_uncommitted_edit_of_a_code_cell(tmp_path, checkout):
    run = tmp_path / "20261203-090000-local-smoke"
    for name in ("02_host", "04_bench"):
        _executed(run, name, checkout / "notebooks" / f"{name}.ipynb", "measured")
    edited = checkout / "notebooks" / "04_bench.ipynb"
    nb = nbformat.read(str(edited), as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    code[-1].source += "\nprint('my edit')"
    nbformat.write(nb, str(edited))
    before = _snapshot(checkout / "notebooks")
    line = one_line_error(_cli("adopt-outputs", str(run), env={"FASTIOV_PROJECT": str(checkout)}),
                          str(edited), "uncommitted edits", "nothing was adopted")
    assert "cell" in line
    assert _snapshot(checkout / "notebooks") == before  # 02_host was not adopted either


def test_adopt_refuses_a_run_notebook_holding_another_notebooks_code(tmp_path, checkout):
    run = tmp_path / "20261203-090000-local-smoke"
    _executed(run, "02_host", checkout / "notebooks" / "02_host.ipynb", "measured")
    _executed(run, "04_bench", checkout / "notebooks" / "06_figures.ipynb", "measured")  # 06's file as 04
    before = _snapshot(checkout / "notebooks")
    one_line_error(_cli("adopt-outputs", str(run), env={"FASTIOV_PROJECT": str(checkout)}),
                   str(run / "notebooks" / "04_bench.ipynb"), "does not match", "re-run it")
    assert _snapshot(checkout / "notebooks") == before


def test_adopt_refuses_a_failed_notebook_and_one_without_a_committed_twin(tmp_path, checkout):
    run = tmp_path / "20261203-090000-local-smoke"
    failed = _executed(run, "02_host", checkout / "notebooks" / "02_host.ipynb", "measured")
    nb = nbformat.read(str(failed), as_version=4)
    nb.cells[-1].outputs = [new_output("error", ename="RuntimeError", evalue="boom", traceback=[])]
    nbformat.write(nb, str(failed))
    env = {"FASTIOV_PROJECT": str(checkout)}
    one_line_error(_cli("adopt-outputs", str(run), env=env), "RuntimeError: boom", "failed")
    failed.unlink()
    _executed(run, "07_extra", checkout / "notebooks" / "02_host.ipynb", "measured")
    one_line_error(_cli("adopt-outputs", str(run), env=env), "no committed notebook")


def test_adopt_takes_only_outputs_when_the_code_matches(tmp_path, checkout):
    run = tmp_path / "20261203-090000-local-smoke"
    for name in ("02_host", "04_bench"):
        _executed(run, name, checkout / "notebooks" / f"{name}.ipynb", "measured in the run")
    result = _cli("adopt-outputs", str(run), env={"FASTIOV_PROJECT": str(checkout)})
    assert result.returncode == 0, result.stderr
    nb = nbformat.read(str(checkout / "notebooks" / "04_bench.ipynb"), as_version=4)
    assert not any("injected-parameters" in c.metadata.get("tags", []) for c in nb.cells)
    assert all(c.outputs[0]["text"] == "measured in the run\n" for c in nb.cells if c.cell_type == "code")
    status = subprocess.run(["git", "-C", str(checkout), "diff", "--stat"], capture_output=True, text=True).stdout
    assert "04_bench.ipynb" in status and not list((checkout / "notebooks").glob(".*.tmp"))
    json.loads((checkout / "notebooks" / "04_bench.ipynb").read_text())
