"""`fastiov-artifact reproduce|run|adopt-outputs`: the headless pipeline."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fastiov_lib.config import ConfigError, Testbed, load_profile, load_testbed, parse_override
from fastiov_lib.notebook.pipeline import NOTEBOOK_ORDER, NotebookFailed, adopt_outputs, check_parameters, \
    notebook_path, parameters_for, reproduce, run_notebook
from fastiov_lib.notebook.session import open_existing_run, read_current_run, session_run
from fastiov_lib.testbeds import backend_for

DEFAULT_TESTBED = "testbeds/local.yaml"


def _overrides(items: list[str] | None) -> dict:
    return dict(parse_override(item) for item in items or [])


def _teardown(testbed: Testbed) -> None:
    """The pipeline owns the testbed's lifecycle: tear it down when the run ends, however it ends."""
    backend_for(testbed).down()


def _reproduce(args: argparse.Namespace) -> int:
    # held for the whole pipeline (its notebook kernels inherit it), so no other process's `testbed
    # down` or bench interferes, and this run's teardown never hits a testbed another bench is using
    testbed = load_testbed(args.testbed)
    try:
        with backend_for(testbed).exclusive("reproduce"):
            result = reproduce(
                args.testbed, args.profile, _overrides(args.param), run_id=args.run_id,
                notebooks=args.notebooks or NOTEBOOK_ORDER,
                results_root=Path(args.results) if args.results else None,
                teardown=None if args.keep_testbed else _teardown,
                ignore_check_failures=args.ignore_check_failures, extend_foreign=args.extend_foreign,
            )
    except NotebookFailed as exc:
        print(f"error: {exc}", file=sys.stderr)
        print(f"partial output: {exc.output}", file=sys.stderr)
        print(exc.output.parent.parent)
        return 1
    print(result.run.path)
    return 0


def _run(args: argparse.Namespace) -> int:
    testbed = load_testbed(args.testbed)
    profile = load_profile(args.profile)
    path = notebook_path(args.notebook)
    extra = _overrides(args.param)
    check_parameters(path, parameters_for(path, {}, extra))  # before a run directory exists
    root = Path(args.results) if args.results else testbed.resolve_results_dir()
    # one notebook at a time, as in JupyterLab: 01_build (or --new-run) starts a run, the others
    # reuse the current run while testbed and profile match
    if extra.get("run_dir"):
        run, existed = open_existing_run(str(extra["run_dir"])), True
    elif path.stem == NOTEBOOK_ORDER[-1] and not args.new_run and not args.run_id:
        # the analysis notebook never starts a run of its own: it shows the current one
        run, existed = read_current_run(root), True
        if run is None:
            print(f"error: {path.stem}: no current run in {root} (run 01_build first, or pass -p run_dir=DIR)",
                  file=sys.stderr)
            return 2
    else:
        existed = args.run_id is not None and (root / args.run_id).exists()
        run, why = session_run(testbed, profile, new_run=args.new_run or path.stem == NOTEBOOK_ORDER[0],
                               run_id=args.run_id, results_root=root, extend_foreign=args.extend_foreign)
        existed = existed or why == "current run (reused)"
    standard = {"testbed_path": str(testbed.source_path), "profile": args.profile,
                "run_dir": str(run.path), "interactive": False}
    params = parameters_for(path, standard, {})
    params.update(extra)
    reason = "failed"
    try:
        with backend_for(testbed).exclusive(f"run {path.stem}"):
            out = run_notebook(args.notebook, params, run.notebooks_dir)
        reason = "completed"
    except NotebookFailed as exc:
        print(f"error: {exc}", file=sys.stderr)
        print(run.path)
        return 1
    except KeyboardInterrupt as exc:
        reason = f"interrupted by {str(exc) or 'SIGINT'}"
        raise
    finally:
        if not existed and run.discard_if_unused():
            print(f"nothing was run; {run.path} was not kept", file=sys.stderr)
        elif run.path.is_dir():
            run.finish(reason)
    print(out)
    return 0


def _adopt(args: argparse.Namespace) -> int:
    run_dir = Path(args.run_dir)
    if not (run_dir / "notebooks").is_dir():
        raise ConfigError(f"{run_dir}: no notebooks/ folder; expected a run directory made by `reproduce`")
    for path in adopt_outputs(run_dir):  # every notebook checked before the first is written
        print(path)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--testbed", default=DEFAULT_TESTBED, help="testbed YAML (default: %(default)s)")
    common.add_argument("--profile", default="default", help="smoke, default, paper or a profile YAML")
    common.add_argument("-p", "--param", action="append", metavar="KEY=VALUE",
                        help="notebook parameter (NOTEBOOK.KEY=VALUE targets one notebook); repeatable")
    common.add_argument("--run-id", default=None, help="name of the run directory (default: time-testbed-profile)")
    common.add_argument("--results", default=None, help="results root (default: the testbed's results_dir)")
    common.add_argument("--extend-foreign", action="store_true",
                        help="add to an existing run directory of another testbed, profile or host")

    p = sub.add_parser("reproduce", parents=[common], help="run all notebooks in order into a run directory")
    p.add_argument("--notebooks", nargs="+", default=None, help="a subset, in order (default: all six)")
    p.add_argument("--keep-testbed", action="store_true", help="leave the local testbed running afterwards")
    p.add_argument("--ignore-check-failures", action="store_true",
                   help="measure (04, 05) even when 02_host reports a FAIL")
    p.set_defaults(func=_reproduce)

    r = sub.add_parser("run", parents=[common], help="run one notebook headless into a run directory")
    r.add_argument("notebook", help="e.g. 04_bench")
    r.add_argument("--new-run", action="store_true",
                   help="start a new run (default: 01_build starts one, the others reuse the current run)")
    r.set_defaults(func=_run)

    a = sub.add_parser("adopt-outputs", help="make a run's executed notebooks the committed expected outputs")
    a.add_argument("run_dir")
    a.set_defaults(func=_adopt)
