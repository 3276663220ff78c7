"""The explorer's state behind the widgets (the browser test drives the same widgets in JupyterLab)."""
from __future__ import annotations

from fastiov_lib.report import explorer
from synthetic_runs import write_run


def test_explorer_pickers_follow_the_run_and_filter_the_pods(tmp_path, capsys):
    run = write_run(tmp_path / "results" / "r1", variants={"bridge": 100.0}, concurrency=(1, 4), repeats=1)
    write_run(run, experiment="ablation", variants={"none": 90.0, "bridge": 130.0}, concurrency=(4,),
              append=True, start_ns=2 * 10**18)
    other = write_run(tmp_path / "results" / "r2", variants={"hostdev": 80.0}, concurrency=(2,), repeats=1)
    e = explorer.Explorer(run, results_root=tmp_path / "results")
    assert [label for label, _ in e.run_picker.options] == ["r1", "r2"]
    assert e.experiment_picker.value == "startup"
    assert e.variant_picker.options == ("all", "bridge") and e.concurrency_picker.options == ("all", "1", "4")
    assert len(e.selected_pods()) == 5
    e.concurrency_picker.value = "4"
    assert len(e.selected_pods()) == 4
    e.experiment_picker.value = "ablation"
    assert e.variant_picker.options == ("all", "none", "bridge") and e.concurrency_picker.value == "all"
    e.variant_picker.value = "none"
    assert set(e.selected_pods()["variant"]) == {"none"}
    assert [ax.get_title() for ax in e.figures()["cdf"].axes] == ["none"]
    e.run_picker.value = str(other)
    assert e.run.run_id == "r2" and e.variant_picker.options == ("all", "hostdev")
    capsys.readouterr()  # outside a kernel the Output widgets print what they would show
