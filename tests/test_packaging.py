"""The artifact's promises about itself: one dependency truth, the README's commands, CI = the test command."""
import re
import tomllib

import yaml

from fastiov_lib.config import REPO_ROOT

NOTEBOOKS = ["01_build", "02_host", "03_nic", "04_bench", "05_ablation", "06_figures"]


def makefile_recipe(target: str) -> str:
    text = (REPO_ROOT / "Makefile").read_text()
    match = re.search(rf"^{target}:.*\n((?:\t.*\n)+)", text, re.M)
    assert match, f"Makefile has no recipe for {target}"
    return match.group(1)


def test_environment_yml_installs_the_lock_file_and_the_package_through_pip():
    env = yaml.safe_load((REPO_ROOT / "environment.yml").read_text())
    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    pip_sections = [d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d]
    assert pip_sections == [["-r requirements.lock", "-e ."]]  # exact pins first, then the package itself
    python = next(d for d in env["dependencies"] if isinstance(d, str) and d.startswith("python="))
    minimum = pyproject["project"]["requires-python"].removeprefix(">=")
    assert tuple(map(int, python.split("=")[1].split("."))) >= tuple(map(int, minimum.split(".")))
    # no Python library is pinned twice: conda brings only python and pip
    assert {d.split("=")[0] for d in env["dependencies"] if isinstance(d, str)} == {"python", "pip"}


def test_ci_runs_exactly_the_readme_test_command():
    ci = (REPO_ROOT / ".ci/run").read_text()
    assert re.search(r"^make test$", ci, re.M)
    readme = (REPO_ROOT / "README.md").read_text()
    assert "make test" in readme and "make reproduce" in readme
    assert "pytest" in makefile_recipe("test") and "--nbval-lax" in makefile_recipe("test")
    assert "fastiov-artifact reproduce" in makefile_recipe("reproduce")


def test_every_notebook_exists_with_a_parameters_cell_and_no_definitions():
    import nbformat

    for name in NOTEBOOKS:
        nb = nbformat.read(str(REPO_ROOT / "notebooks" / f"{name}.ipynb"), as_version=4)
        assert nb.cells[0].cell_type == "markdown", f"{name}: must open with its description"
        params = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
        assert len(params) == 1, f"{name}: needs exactly one cell tagged 'parameters'"
        assert "interactive" in params[0].source or name != "06_figures"
        for cell in nb.cells:
            if cell.cell_type == "code":
                assert not re.search(r"^\s*(def|class)\s", cell.source, re.M), f"{name}: logic belongs in fastiov_lib"


def test_every_notebook_has_committed_outputs_and_checked_cells():
    import nbformat

    for name in NOTEBOOKS:
        nb = nbformat.read(str(REPO_ROOT / "notebooks" / f"{name}.ipynb"), as_version=4)
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert sum(len(c.outputs) for c in code) > 0, f"{name}: commit a real run's outputs"
        assert any("nbval-check-output" in c.metadata.get("tags", []) for c in code), \
            f"{name}: tag at least one stable output for nbval"
