"""The headless pipeline, run for real with papermill and a Python kernel on throwaway notebooks."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from fastiov_lib.config import REPO_ROOT
from fastiov_lib.notebook.pipeline import NotebookFailed, UnknownParameter, adopt_outputs, reproduce, run_notebook

LOCAL = REPO_ROOT / "testbeds/local.yaml"


def make_notebook(path: Path, *sources: str, params: str = 'testbed_path = ""\nrun_dir = ""\nprofile = ""') -> Path:
    cells = [new_markdown_cell("# test notebook")]
    p = new_code_cell(params)
    p.metadata["tags"] = ["parameters"]
    cells.append(p)
    cells += [new_code_cell(s) for s in sources]
    nb = new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, str(path))
    return path


def test_pipeline_passes_run_dir_and_testbed_to_each_notebook(tmp_path):
    nb = make_notebook(tmp_path / "01_a.ipynb",
                       "import json, pathlib\n"
                       "pathlib.Path(run_dir, 'seen.json').write_text(json.dumps([testbed_path, profile]))")
    result = reproduce(LOCAL, "smoke", notebooks=[str(nb)], results_root=tmp_path / "results",
                       run_id="ok-run", progress=False)
    seen = json.loads((result.run.path / "seen.json").read_text())
    assert seen == [str(LOCAL), "smoke"]
    assert (result.run.notebooks_dir / "01_a.ipynb").exists()
    info = json.loads(result.run.run_file.read_text())
    assert info["pipeline"]["notebooks"] == {"01_a": "ok"} and info["end_time"]
    assert (result.run.path / "report.md").exists()  # written after the run finished


def test_pipeline_names_notebook_and_cell_when_a_notebook_raises(tmp_path):
    first = make_notebook(tmp_path / "01_a.ipynb", "x = 1")
    second = make_notebook(tmp_path / "02_b.ipynb", "y = 2", "raise ValueError('pods went missing')")
    third = make_notebook(tmp_path / "03_c.ipynb", "z = 3")
    with pytest.raises(NotebookFailed) as err:
        reproduce(LOCAL, "smoke", notebooks=[str(first), str(second), str(third)],
                  results_root=tmp_path / "results", run_id="bad-run", progress=False)
    exc = err.value
    assert exc.notebook == "02_b"
    assert exc.cell_index == 3  # markdown, parameters, y = 2, raise
    assert exc.ename == "ValueError" and "pods went missing" in exc.evalue
    assert "02_b" in str(exc) and "cell 3" in str(exc)
    run_path = tmp_path / "results" / "bad-run"
    assert (run_path / "notebooks" / "01_a.ipynb").exists()  # partial run kept
    assert (run_path / "notebooks" / "02_b.ipynb").exists()
    assert not (run_path / "notebooks" / "03_c.ipynb").exists()
    info = json.loads((run_path / "run.json").read_text())
    assert info["pipeline"]["failure"]["notebook"] == "02_b"
    assert info["pipeline"]["notebooks"] == {"01_a": "ok", "02_b": "failed"}


def test_teardown_runs_even_when_a_notebook_fails(tmp_path):
    bad = make_notebook(tmp_path / "01_a.ipynb", "1/0")
    torn_down = []
    with pytest.raises(NotebookFailed):
        reproduce(LOCAL, "smoke", notebooks=[str(bad)], results_root=tmp_path, run_id="r",
                  teardown=lambda tb: torn_down.append(tb.name), progress=False)
    assert torn_down == ["local"]


def test_undeclared_parameter_is_refused(tmp_path):
    nb = make_notebook(tmp_path / "01_a.ipynb", "x = 1")
    with pytest.raises(UnknownParameter, match="concurency"):
        run_notebook(str(nb), {"concurency": 5}, tmp_path / "out")
    with pytest.raises(UnknownParameter, match="declared by none"):
        reproduce(LOCAL, "smoke", extra={"concurency": 5}, notebooks=[str(nb)], results_root=tmp_path,
                  progress=False)
    assert not any(tmp_path.glob("*/run.json"))  # refused before a run directory was made


def test_notebook_scoped_parameter_reaches_only_its_notebook(tmp_path):
    a = make_notebook(tmp_path / "01_a.ipynb", "open(run_dir + '/a.txt', 'w').write(str(n))",
                      params='run_dir = ""\nn = 1')
    b = make_notebook(tmp_path / "02_b.ipynb", "open(run_dir + '/b.txt', 'w').write(str(n))",
                      params='run_dir = ""\nn = 1')
    result = reproduce(LOCAL, "smoke", extra={"02_b.n": 7}, notebooks=[str(a), str(b)],
                       results_root=tmp_path, run_id="scoped", progress=False)
    assert (result.run.path / "a.txt").read_text() == "1"
    assert (result.run.path / "b.txt").read_text() == "7"


def test_adopted_outputs_keep_default_parameters(tmp_path):
    nb = make_notebook(tmp_path / "01_a.ipynb", "print('measured', 42)", params='run_dir = ""')
    result = reproduce(LOCAL, "smoke", notebooks=[str(nb)], results_root=tmp_path, run_id="adopt",
                       progress=False)
    target = tmp_path / "committed"
    target.mkdir()
    shutil.copy(nb, target)  # outputs are adopted onto the committed notebook of the same code
    [adopted] = adopt_outputs(result.run.path, target)
    cells = nbformat.read(str(adopted), as_version=4).cells
    assert not any("injected-parameters" in c.metadata.get("tags", []) for c in cells)
    assert cells[1].source == 'run_dir = ""'
    assert "measured 42" in cells[2].outputs[0]["text"]


def test_cli_with_broken_testbed_exits_nonzero_naming_the_key_and_creates_nothing(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nkind: local\nlocal:\n  hostdev_pool_size: -4\n")
    results = tmp_path / "results"
    proc = subprocess.run([sys.executable, "-m", "fastiov_lib", "reproduce", "--testbed", str(bad),
                           "--profile", "smoke", "--results", str(results)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "local.hostdev_pool_size" in lines[0] and str(bad) in lines[0]
    assert not results.exists()
