"""`fastiov-artifact reproduce|run|adopt-outputs`: the headless pipeline."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fastiov_lib.config import Testbed, load_profile, load_testbed, parse_override
from fastiov_lib.notebook.pipeline import NOTEBOOK_ORDER, NotebookFailed, adopt_outputs, notebook_path, parameters_for, \
    reproduce, run_notebook
from fastiov_lib.notebook.session import open_existing_run, read_current_run, session_run
from fastiov_lib.testbeds import backend_for

DEFAULT_TESTBED = "testbeds/local.yaml"


def _overrides(items: list[str] | None) -> dict:
    return dict(parse_override(item) for item in items or [])


def _teardown(testbed: Testbed) -> None:
    """The pipeline owns the testbed's lifecycle: tear it down when the run ends, however it ends."""
    backend_for(testbed).down()


def _reproduce(args: argparse.Namespace) -> int:
    try:
        result = reproduce(
            args.testbed, args.profile, _overrides(args.param), run_id=args.run_id,
            notebooks=args.notebooks or NOTEBOOK_ORDER,
            results_root=Path(args.results) if args.results else None,
            teardown=None if args.keep_testbed else _teardown,
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
    # one notebook at a time, as in JupyterLab: 01_build (or --new-run) starts a run, the others
    # reuse the current run while testbed and profile match
    overrides = _overrides(args.param)
    root = Path(args.results) if args.results else testbed.resolve_results_dir()
    if overrides.get("run_dir"):
        run = open_existing_run(str(overrides["run_dir"]))
    elif path.stem == NOTEBOOK_ORDER[-1] and not args.new_run and not args.run_id:
        # the analysis notebook never starts a run of its own: it shows the current one
        run = read_current_run(root)
        if run is None:
            print(f"error: {path.stem}: no current run in {root} (run 01_build first, or pass -p run_dir=DIR)",
                  file=sys.stderr)
            return 2
    else:
        run, _ = session_run(testbed, profile, new_run=args.new_run or path.stem == NOTEBOOK_ORDER[0],
                             run_id=args.run_id, results_root=root)
    standard = {"testbed_path": str(testbed.source_path), "profile": args.profile,
                "run_dir": str(run.path), "interactive": False}
    params = parameters_for(path, standard, {})
    params.update(overrides)
    try:
        out = run_notebook(args.notebook, params, run.notebooks_dir)
    except NotebookFailed as exc:
        print(f"error: {exc}", file=sys.stderr)
        print(run.path)
        return 1
    print(out)
    return 0


def _adopt(args: argparse.Namespace) -> int:
    for path in adopt_outputs(Path(args.run_dir)):
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

    p = sub.add_parser("reproduce", parents=[common], help="run all notebooks in order into a run directory")
    p.add_argument("--notebooks", nargs="+", default=None, help="a subset, in order (default: all six)")
    p.add_argument("--keep-testbed", action="store_true", help="leave the local testbed running afterwards")
    p.set_defaults(func=_reproduce)

    r = sub.add_parser("run", parents=[common], help="run one notebook headless into a run directory")
    r.add_argument("notebook", help="e.g. 04_bench")
    r.add_argument("--new-run", action="store_true",
                   help="start a new run (default: 01_build starts one, the others reuse the current run)")
    r.set_defaults(func=_run)

    a = sub.add_parser("adopt-outputs", help="make a run's executed notebooks the committed expected outputs")
    a.add_argument("run_dir")
    a.set_defaults(func=_adopt)
