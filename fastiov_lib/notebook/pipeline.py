"""Headless pipeline: run the six notebooks in order with papermill into a run directory."""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import nbformat
import papermill
from papermill.exceptions import PapermillExecutionError
from tqdm.auto import tqdm

from fastiov_lib.config import REPO_ROOT, ConfigError, Testbed, load_profile, load_testbed, resolve_path
from fastiov_lib.notebook import adopt
from fastiov_lib.notebook.parameters import (  # noqa: F401 - UnknownParameter re-exported for callers
    ParameterTypeError, UnknownParameter, check_parameters, declared_parameters, declared_type, type_problem,
)
from fastiov_lib.run.rundir import RunDir, create_run_dir
from fastiov_lib.testbeds import backend_for

NOTEBOOKS_DIR = REPO_ROOT / "notebooks"
NOTEBOOK_ORDER = ("01_build", "02_host", "03_nic", "04_bench", "05_ablation", "06_figures")
# Parameters the pipeline passes to every notebook that declares them.
STANDARD_PARAMETERS = ("testbed_path", "profile", "run_dir", "interactive")


class NotebookFailed(Exception):
    """A notebook raised; names the notebook, the cell and the error, and where the partial output is."""

    def __init__(self, notebook: str, cell_index: int | None, cell_source: str, ename: str,
                 evalue: str, output: Path):
        self.notebook, self.cell_index, self.cell_source = notebook, cell_index, cell_source
        self.ename, self.evalue, self.output = ename, evalue, output
        first = cell_source.strip().splitlines()[0] if cell_source.strip() else ""
        where = f"cell {cell_index}" if cell_index is not None else "an unknown cell"
        super().__init__(f"notebook {notebook} failed in {where} ({first!r}): {ename}: {evalue}")


class HostChecksFailed(ConfigError):
    """02_host's readiness checks failed; the pipeline stops before the measurements (04 on)."""


def _failing_checks(testbed: Testbed) -> list[str]:
    return [f"{c.name}: {c.seen}" for c in backend_for(testbed).checks() if c.status == "fail"]


def notebook_path(name: str) -> Path:
    """The path of a notebook given as `04_bench`, `04_bench.ipynb` or a path."""
    p = Path(name)
    if p.suffix == ".ipynb" and p.exists():
        return p.resolve()
    stem = p.name.removesuffix(".ipynb")
    candidate = NOTEBOOKS_DIR / f"{stem}.ipynb"
    if not candidate.exists():
        raise ConfigError(f"notebook {name!r} not found (known: {', '.join(NOTEBOOK_ORDER)})")
    return candidate


def _failed_cell(output: Path, exc: PapermillExecutionError) -> tuple[int | None, str]:
    """Index (0-based, counting every cell) and source of the cell that raised."""
    try:
        nb = nbformat.read(str(output), as_version=4)
    except (OSError, ValueError):
        return exc.cell_index, exc.source or ""
    injected = sum(1 for c in nb.cells if "injected-parameters" in c.get("metadata", {}).get("tags", []))
    # papermill counts cells in the executed copy, which holds its injected parameters cell
    index = exc.cell_index - injected if exc.cell_index is not None else None
    return index, exc.source or ""


def run_notebook(name: str, parameters: dict[str, Any], output_dir: Path,
                 progress: bool = False) -> Path:
    """Execute one notebook with papermill into output_dir; raise NotebookFailed naming the cell."""
    path = notebook_path(name)
    check_parameters(path, parameters)
    output_dir.mkdir(parents=True, exist_ok=True)
    output = output_dir / path.name
    # a signal stops the run between papermill's asyncio tasks; asyncio then logs the tasks it had to
    # drop, with their tracebacks: the interruption itself is recorded in run.json, so keep that quiet
    logging.getLogger("asyncio").setLevel(logging.CRITICAL)
    try:
        papermill.execute_notebook(
            str(path), str(output), parameters=parameters, cwd=str(path.parent),
            kernel_name="python3", progress_bar=progress, log_output=False,
            # the kernel's own log (a TCP-without-encryption warning per start, zmq tracebacks when a
            # signal ends the run) is noise on our stderr; cell errors still come back as messages
            extra_arguments=["--IPKernelApp.log_level=CRITICAL"],
        )
    except PapermillExecutionError as exc:
        index, source = _failed_cell(output, exc)
        raise NotebookFailed(path.stem, index, source, exc.ename, exc.evalue, output) from None
    return output


def parameters_for(path: Path, standard: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """Standard parameters the notebook declares, plus the user's (`nb.key` targets one notebook)."""
    declared = declared_parameters(path)
    params = {k: v for k, v in standard.items() if k in declared}
    for key, value in extra.items():
        target, _, bare = key.rpartition(".")
        if target and target != path.stem:
            continue
        params[bare] = value
    return params


def _check_extra_parameters(notebooks: Sequence[str], extra: dict[str, Any]) -> None:
    """Every `-p` of a pipeline is declared by a notebook it runs, with the type that notebook gives it."""
    declared = {notebook_path(n).stem: declared_parameters(notebook_path(n)) for n in notebooks}
    for key, value in extra.items():
        target, _, bare = key.rpartition(".")
        scope = [target] if target else list(declared)
        if target and target not in declared:
            raise UnknownParameter(f"parameter {key!r}: no notebook {target!r} in this run")
        if not any(bare in declared[n] for n in scope):
            raise UnknownParameter(f"parameter {key!r}: declared by none of {', '.join(scope)}")
        for name in scope:
            if bare in declared[name]:
                problem = type_problem(bare, value, declared_type(str(declared[name][bare].get("default", ""))))
                if problem:
                    raise ParameterTypeError(f"{name}.ipynb: parameter {bare!r}: {problem}")


@dataclass
class PipelineResult:
    run: RunDir
    executed: list[Path]


def reproduce(testbed_path: str | Path, profile: str, extra: dict[str, Any] | None = None,
              run_id: str | None = None, notebooks: Sequence[str] = NOTEBOOK_ORDER,
              results_root: Path | None = None, teardown: Callable[[Testbed], None] | None = None,
              progress: bool = True, write_report: bool = True, ignore_check_failures: bool = False,
              extend_foreign: bool = False) -> PipelineResult:
    """Run the notebooks in order into results/<run-id>/; keep the partial run dir on failure.

    The testbed and profile are validated before anything is created, so a broken config leaves
    no run directory behind. A FAIL among 02_host's checks stops the run before 04_bench unless
    `ignore_check_failures`. SIGINT and SIGTERM (as KeyboardInterrupt) still tear the testbed down
    and close run.json with the reason.
    """
    extra = dict(extra or {})
    testbed = load_testbed(testbed_path)
    prof = load_profile(profile)
    _check_extra_parameters(notebooks, extra)
    run = create_run_dir(testbed, prof, run_id=run_id, results_root=results_root, extend_foreign=extend_foreign,
                         facts=backend_for(testbed).facts())
    # the pipeline's run becomes the current run: 06_figures in JupyterLab shows it afterwards
    from fastiov_lib.notebook.session import write_current_run

    write_current_run(run)
    standard = {
        "testbed_path": str(testbed.source_path or resolve_path(testbed_path)),
        "profile": profile,
        "run_dir": str(run.path),
        "interactive": False,
    }
    executed: list[Path] = []
    status: dict[str, Any] = {"notebooks": {}}
    reason = "failed"
    try:
        bar = tqdm(list(notebooks), desc="notebooks", unit="nb", disable=not progress)
        for name in bar:
            bar.set_postfix_str(name)
            path = notebook_path(name)
            try:
                out = run_notebook(name, parameters_for(path, standard, extra), run.notebooks_dir)
            except NotebookFailed as exc:
                status["notebooks"][path.stem] = "failed"
                status["failure"] = {"notebook": exc.notebook, "cell": exc.cell_index,
                                     "error": f"{exc.ename}: {exc.evalue}", "output": str(exc.output)}
                raise
            status["notebooks"][path.stem] = "ok"
            executed.append(out)
            later = list(notebooks)[list(notebooks).index(name) + 1:]
            if path.stem == "02_host" and any(n.startswith(("04", "05")) for n in later):
                failing = _failing_checks(testbed)
                if failing and not ignore_check_failures:
                    status["failure"] = {"notebook": "02_host", "error": "readiness checks failed: " + "; ".join(failing)}
                    raise HostChecksFailed(f"02_host: {len(failing)} readiness check(s) failed ({'; '.join(failing)}); "
                                           "the measurements were not started. Fix them, or pass "
                                           "--ignore-check-failures to measure anyway")
                status["ignored_check_failures"] = failing
        reason = "completed"
    except KeyboardInterrupt as exc:
        reason = f"interrupted by {str(exc) or 'SIGINT'}"
        status["interrupted"] = reason
        raise
    finally:
        run.update_record(pipeline=status)
        if teardown is not None:
            teardown(testbed)
        run.finish(reason)
    if write_report:
        # written again once run.json is complete (end time, every notebook), and even when
        # 06_figures was not among the notebooks run
        from fastiov_lib.report.markdown import write_report as _write_report

        _write_report(run.path)
    return PipelineResult(run, executed)


def adopt_outputs(run_dir: Path, notebooks_dir: Path = NOTEBOOKS_DIR) -> list[Path]:
    """A run's executed notebooks' outputs become the committed ones (see notebook.adopt)."""
    return adopt.adopt_outputs(run_dir, notebooks_dir)


def pipeline_status(run: RunDir) -> dict[str, Any]:
    """What run.json says about the pipeline (which notebooks ran, which failed)."""
    return json.loads(run.run_file.read_text()).get("pipeline", {}) if run.run_file.exists() else {}
