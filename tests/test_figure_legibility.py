"""Figures fit for a paper: one colour per variant everywhere, legible at one column (3.3 in) and full width."""
from __future__ import annotations

import matplotlib.colors as mcolors
import pytest
from matplotlib.text import Text

from fastiov_lib.analysis import stats as analysis
from fastiov_lib.report import figures as plots
from fastiov_lib.report import markdown as report
from synthetic_runs import write_run


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    path = tmp_path_factory.mktemp("legible") / "r"
    write_run(path, variants={"none": 80.0, "bridge": 150.0, "hostdev": 200.0}, concurrency=(1, 5, 10, 50),
              repeats=2)
    write_run(path, experiment="ablation", variants={"none": 80.0, "bridge": 150.0, "macvlan": 120.0,
                                                     "hostdev": 200.0},
              concurrency=(10, 20), repeats=2, append=True, start_ns=2 * 10**18)
    write_run(path, experiment="app", variants={"bridge": 300.0, "hostdev": 350.0}, concurrency=(2, 5),
              app="compress", append=True, start_ns=3 * 10**18)
    return analysis.load_run(path)


def _texts(fig):
    """Every visible piece of text a reader has to read (tick labels, labels, legends, notes)."""
    fig.canvas.draw()
    return [t for t in fig.findobj(Text) if t.get_visible() and t.get_text().strip()]


@pytest.mark.parametrize("width", [plots.COLUMN_WIDTH, plots.FULL_WIDTH])
@pytest.mark.parametrize("name", list(report.FIGURES))
def test_every_figure_is_legible_at_column_and_full_width(run, name, width):
    fig = report.figure(run, name, width=width)
    assert fig.get_figwidth() == pytest.approx(width)
    assert fig.get_figheight() <= 9.0  # one page, not a sheet
    small = [(t.get_text(), t.get_fontsize()) for t in _texts(fig) if t.get_fontsize() < plots.MIN_FONT_PT]
    assert not small, f"{name} at {width} in: text under {plots.MIN_FONT_PT} pt: {small[:5]}"
    ticks = [t for ax in fig.axes for t in ax.get_xticklabels() + ax.get_yticklabels() if t.get_text()]
    assert ticks and min(t.get_fontsize() for t in ticks) >= plots.MIN_FONT_PT


def test_a_variant_has_the_same_colour_in_every_figure_and_run():
    assert plots.variant_colour("hostdev") == plots.variant_palette(["none", "hostdev"])["hostdev"] \
        == plots.variant_palette(["hostdev", "bridge", "macvlan", "vanilla"])["hostdev"]
    names = ["none", "bridge", "macvlan", "hostdev", "vanilla", "fastiov", "only-devset", "only-skip-dma",
             "only-guest-kernel", "only-async-driver"]
    colours = [mcolors.to_hex(plots.variant_colour(n)) for n in names]
    assert len(set(colours)) == len(names)  # the variants one figure can hold are told apart


def test_an_unknown_variant_gets_a_stable_colour_of_its_own():
    a = plots.variant_colour("my-new-variant")
    assert a == plots.variant_colour("my-new-variant")
    assert mcolors.to_hex(a) not in {mcolors.to_hex(c) for c in plots.VARIANT_COLOURS.values()}


def test_hostdev_lines_and_bars_share_its_colour(run):
    want = mcolors.to_hex(plots.variant_colour("hostdev"))
    line = report.figure(run, "startup_vs_concurrency")
    labelled = {ln.get_label(): mcolors.to_hex(ln.get_color()) for ln in line.axes[0].get_lines()}
    assert labelled["hostdev median"] == want
    bars = report.figure(run, "ablation")
    legend = {t.get_text(): h for t, h in zip(bars.axes[0].get_legend().get_texts(),
                                              bars.axes[0].get_legend().legend_handles)}
    assert mcolors.to_hex(legend["hostdev"].get_facecolor()) == want


def test_startup_band_is_labelled_max_when_there_are_too_few_pods_for_a_p99(run):
    fig = report.figure(run, "startup_vs_concurrency")
    labels = [ln.get_label() for ln in fig.axes[0].get_lines()]
    assert "bridge max" in labels and not any(lab.endswith("p99") for lab in labels)
    notes = [t.get_text() for t in fig.axes[0].texts]
    assert "n=2" in notes and "n=100" in notes  # pods per point: 1 pod x 2 rounds, 50 x 2


def test_startup_cdf_is_log_x_with_a_colour_per_level(run):
    fig = report.figure(run, "startup_cdf")
    ax = fig.axes[0]
    assert ax.get_xscale() == "log"
    colours = {mcolors.to_hex(ln.get_color()) for ln in ax.get_lines()}
    assert len(colours) == 4  # four concurrency levels


def test_app_completion_has_a_panel_per_level_comparing_modes_with_mean_and_p99(run):
    fig = report.figure(run, "app_completion")
    panels = [ax for ax in fig.axes if ax.get_visible() and ax.get_title()]
    assert [ax.get_title() for ax in panels] == ["2 concurrent pods", "5 concurrent pods"]
    assert [t.get_text() for t in panels[0].get_xticklabels()] == ["bridge", "hostdev"]
    # 4 and 10 pods per mode: a mean, but a p99 needs 100 pods (analysis.samples): only the pods show it
    assert [t.get_text() for t in panels[0].get_legend().get_texts()] == ["mean"]
    many = write_run(run.path.parent / "app-many", experiment="app", variants={"bridge": 300.0}, concurrency=(100,),
                     repeats=1, app="compress")
    fig = report.figure(analysis.load_run(many), "app_completion")
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == ["mean", "p99"]
