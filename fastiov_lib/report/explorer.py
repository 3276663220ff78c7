"""Interactive explorer (ipywidgets) for 06_figures: pick a run, an experiment, a variant and a
concurrency level; the CDF, the breakdown and the claims table update in place.

Only for a live Jupyter session (06_figures shows it when `interactive = True`); papermill runs
never build it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import ipywidgets as widgets
from IPython.display import HTML, display

from fastiov_lib.analysis import stats as analysis
from fastiov_lib.report import claims
from fastiov_lib.report import figures as plots
from fastiov_lib.config import REPO_ROOT
from fastiov_lib.run.rundir import PODS_FILE, RUN_FILE

ALL = "all"


def find_run_dirs(results_root: str | Path | None = None) -> list[Path]:
    """Run directories (with run.json or pods.jsonl) directly under results_root (default results/)."""
    root = Path(results_root) if results_root else REPO_ROOT / "results"
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and ((p / RUN_FILE).exists() or (p / PODS_FILE).exists()))


class Explorer:
    """The widgets and the state behind them (one loaded run at a time)."""

    def __init__(self, run_dir: str | Path | None = None, results_root: str | Path | None = None):
        runs = find_run_dirs(results_root)
        if run_dir is not None and Path(run_dir).resolve() not in [r.resolve() for r in runs]:
            runs.insert(0, Path(run_dir))
        if not runs:
            raise FileNotFoundError(f"no run directory under {results_root or REPO_ROOT / 'results'}")
        start = Path(run_dir) if run_dir is not None else runs[0]
        self.run_picker = widgets.Dropdown(options=[(p.name, str(p)) for p in runs], value=str(start),
                                           description="run")
        self.experiment_picker = widgets.Dropdown(description="experiment")
        self.variant_picker = widgets.Dropdown(description="variant")
        self.concurrency_picker = widgets.Dropdown(description="concurrency")
        for w, cls in ((self.run_picker, "fiov-run"), (self.experiment_picker, "fiov-experiment"),
                       (self.variant_picker, "fiov-variant"),
                       (self.concurrency_picker, "fiov-concurrency")):
            w.add_class(cls)
        self.cdf_out = widgets.Output()
        self.breakdown_out = widgets.Output()
        self.claims_out = widgets.Output()
        for w, cls in ((self.cdf_out, "fiov-cdf"), (self.breakdown_out, "fiov-breakdown"),
                       (self.claims_out, "fiov-claims")):
            w.add_class(cls)
        self.run: analysis.Run | None = None
        self._updating = False
        self.run_picker.observe(self._on_run, names="value")
        self.experiment_picker.observe(self._on_experiment, names="value")
        self.variant_picker.observe(self._on_filter, names="value")
        self.concurrency_picker.observe(self._on_filter, names="value")
        self.widget = widgets.VBox([
            widgets.HBox([self.run_picker, self.experiment_picker]),
            widgets.HBox([self.variant_picker, self.concurrency_picker]),
            widgets.HBox([self.cdf_out, self.breakdown_out]),
            self.claims_out,
        ])
        self.load(start)

    # -- state -------------------------------------------------------------------------------------
    def load(self, run_dir: str | Path) -> None:
        """Load a run, reset the pickers to its experiments, variants and levels, and redraw."""
        self.run = analysis.load_run(run_dir)
        experiments = sorted(self.run.pods["experiment"].unique(),
                             key=lambda e: (plots.EXPERIMENT_ORDER + [e]).index(e))
        self._updating = True
        try:
            self.experiment_picker.options = experiments or [ALL]
            self.experiment_picker.value = self.experiment_picker.options[0]
        finally:
            self._updating = False
        self._reset_filters()
        self.draw_claims()

    def _reset_filters(self) -> None:
        pods = self._experiment_pods()
        self._updating = True
        try:
            self.variant_picker.options = [ALL, *plots.variant_order(pods["variant"].astype(str).unique())]
            self.variant_picker.value = ALL
            self.concurrency_picker.options = [ALL, *[str(c) for c in sorted(pods["concurrency"].unique())]]
            self.concurrency_picker.value = ALL
        finally:
            self._updating = False
        self.draw()

    def _experiment_pods(self):
        pods = self.run.pods
        if self.experiment_picker.value not in (None, ALL):
            pods = pods[pods["experiment"] == self.experiment_picker.value]
        return pods

    def selected_pods(self):
        """The run's pods of the chosen experiment, restricted to the chosen variant and concurrency."""
        pods = self._experiment_pods()
        if self.variant_picker.value not in (None, ALL):
            pods = pods[pods["variant"].astype(str) == self.variant_picker.value]
        if self.concurrency_picker.value not in (None, ALL):
            pods = pods[pods["concurrency"] == int(self.concurrency_picker.value)]
        return pods

    def figures(self) -> dict[str, Any]:
        """The CDF and breakdown figures for the current selection."""
        run, pods = self.run, self.selected_pods()
        bd, source = analysis.breakdown(run)
        if self.experiment_picker.value not in (None, ALL):
            bd = bd[bd["experiment"] == self.experiment_picker.value]
        if self.variant_picker.value not in (None, ALL):
            bd = bd[bd["variant"].astype(str) == self.variant_picker.value]
        if self.concurrency_picker.value not in (None, ALL):
            bd = bd[bd["concurrency"] == int(self.concurrency_picker.value)]
        return {"cdf": plots.cdf_per_concurrency(pods, run.caption),
                "breakdown": plots.stage_breakdown(bd, run.caption, source)}

    # -- drawing -----------------------------------------------------------------------------------
    def draw(self) -> None:
        for name, fig in self.figures().items():
            out = self.cdf_out if name == "cdf" else self.breakdown_out
            with out:
                out.clear_output(wait=True)
                display(fig)

    def draw_claims(self) -> None:
        table = claims.evaluate_claims(self.run.path)
        with self.claims_out:
            self.claims_out.clear_output(wait=True)
            display(HTML(table[["claim", "expected", "measured", "verdict"]].to_html(index=False)))

    def _on_run(self, change: dict[str, Any]) -> None:
        self.load(change["new"])

    def _on_experiment(self, change: dict[str, Any]) -> None:
        if not self._updating:
            self._reset_filters()

    def _on_filter(self, change: dict[str, Any]) -> None:
        if not self._updating:
            self.draw()


def explore(run_dir: str | Path | None = None, results_root: str | Path | None = None) -> widgets.VBox:
    """The explorer widget for a Jupyter cell (run_dir is preselected; other runs come from results/)."""
    return Explorer(run_dir, results_root).widget
