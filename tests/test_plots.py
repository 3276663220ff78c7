"""Figure smoke tests: every plot function returns a labelled Figure with a caption and saves PNG + PDF."""
from __future__ import annotations

import pytest
from matplotlib.figure import Figure

from fastiov_lib.analysis import stats as analysis

from fastiov_lib.report import figures as plots
from synthetic_runs import write_run

CAPTION = "testbed: test (local) · run: r1"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    path = tmp_path_factory.mktemp("runs") / "r1"
    write_run(path, variants={"bridge": 100.0}, concurrency=(1, 5, 10), repeats=2)
    write_run(path, experiment="ablation", variants={"none": 80.0, "bridge": 120.0, "hostdev": 105.0},
              concurrency=(4,), repeats=2, append=True, start_ns=2 * 10**18)
    write_run(path, experiment="app", variants={"bridge": 100.0}, concurrency=(3,), app="compress",
              append=True, start_ns=3 * 10**18)
    return analysis.load_run(path)


def texts(fig: Figure) -> str:
    parts = [t.get_text() for t in fig.texts]
    for ax in fig.axes:
        parts += [ax.get_xlabel(), ax.get_ylabel(), ax.get_title()] + [t.get_text() for t in ax.texts]
    if fig._supxlabel is not None:
        parts.append(fig._supxlabel.get_text())
    return "\n".join(parts)


def figures(run):
    startup = run.pods[run.pods["experiment"] == "startup"]
    bd, source = analysis.breakdown(run)
    return {
        "startup_vs_concurrency": plots.startup_vs_concurrency(startup, CAPTION),
        "cdf": plots.cdf_per_concurrency(startup, CAPTION),
        "breakdown": plots.stage_breakdown(bd, CAPTION, source),
        "ablation": plots.ablation_bars(analysis.compare_variants(run.pods, "none", kind="difference",
                                                                 experiment="ablation"), CAPTION),
        "app": plots.app_completion(run.pods, CAPTION),
    }


def test_every_plot_has_units_and_the_caption(run):
    for name, fig in figures(run).items():
        assert isinstance(fig, Figure), name
        text = texts(fig)
        assert CAPTION in text, name
        assert "(ms)" in text, name  # the latency axis states its unit
        assert fig.axes[0].has_data(), name


def test_plots_draw_one_line_per_variant_and_level(run):
    startup = run.pods[run.pods["experiment"] == "startup"]
    fig = plots.startup_vs_concurrency(startup, CAPTION)
    labels = [line.get_label() for line in fig.axes[0].get_lines()]
    assert labels == ["bridge median", "bridge max"]  # too few pods per level for a p99
    cdf = plots.cdf_per_concurrency(startup, CAPTION)
    assert len(cdf.axes[0].get_lines()) == 3


def test_empty_data_gives_an_explaining_figure_not_an_error(run):
    empty = run.pods.iloc[0:0]
    for fig in (plots.startup_vs_concurrency(empty, CAPTION), plots.cdf_per_concurrency(empty, CAPTION),
                plots.stage_breakdown(analysis.phase_breakdown(empty), CAPTION),
                plots.ablation_bars(analysis.compare_variants(empty, "none"), CAPTION),
                plots.app_completion(run.pods[run.pods["experiment"] == "startup"], CAPTION)):
        assert "no " in texts(fig) or "needs" in texts(fig)
        assert CAPTION in texts(fig)


def test_save_figure_writes_png_and_pdf(run, tmp_path):
    fig = plots.startup_vs_concurrency(run.pods, CAPTION)
    paths = plots.save_figure(fig, tmp_path / "figs", "startup")
    assert [p.suffix for p in paths] == [".png", ".pdf"]
    assert paths[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert paths[1].read_bytes()[:5] == b"%PDF-"


def test_variant_colours_are_stable_across_figures():
    assert plots.variant_order(["fastiov", "zeta", "vanilla", "none"]) == ["none", "vanilla", "fastiov", "zeta"]
    assert plots.variant_palette(["fastiov", "vanilla"]) == plots.variant_palette(["vanilla", "fastiov"])
