"""run.json as a typed record: written at creation from the back end's facts, validated on load, older files still read."""
from __future__ import annotations

import json

import pytest

from fastiov_lib.config import REPO_ROOT, load_profile, load_testbed
from fastiov_lib.run.provenance import host_facts
from fastiov_lib.run.record import OLDER_FILE_COMPARISONS, SCHEMA_VERSION, boot_params
from fastiov_lib.run.rundir import RunDir, RunDirError, create_run_dir
from fastiov_lib.testbeds import backend_classes, backend_for


def _local_run(tmp_path, run_id="r1"):
    testbed = load_testbed(REPO_ROOT / "testbeds" / "local.yaml")
    return create_run_dir(testbed, load_profile("smoke"), run_id=run_id, results_root=tmp_path,
                          facts=backend_for(testbed).facts())


def test_a_new_run_records_kind_baseline_and_comparison_from_its_back_end(tmp_path):
    record = _local_run(tmp_path).record()
    backend = backend_for(load_testbed(REPO_ROOT / "testbeds" / "local.yaml"))
    assert record.schema_version == SCHEMA_VERSION
    assert (record.testbed_kind, record.baseline_variant) == (backend.kind, backend.baseline_variant)
    assert (record.comparison.statistic, record.comparison.effect) == backend.comparison
    assert record.testbed_facts["kind"] == backend.kind and record.start_time and record.end_time is None


def test_run_json_keeps_only_the_boot_parameters_that_change_results(tmp_path):
    run = _local_run(tmp_path)
    host = json.loads(run.run_file.read_text())["host"]
    assert "cmdline" not in host and isinstance(host["boot_params"], dict)
    cmdline = ("BOOT_IMAGE=/vmlinuz root=UUID=1234 ro quiet isolcpus=2-3 intel_iommu=on iommu=pt nosmt "
               "hugepagesz=2M console=ttyS0 -- --addr 10.0.0.1:2024 --auth-required isolcpus=9")
    assert boot_params(cmdline) == {"isolcpus": "2-3", "intel_iommu": "on", "iommu": "pt", "nosmt": "",
                                    "hugepagesz": "2M"}


def test_a_known_key_of_the_wrong_type_names_run_json_and_the_key(tmp_path):
    run = _local_run(tmp_path)
    info = json.loads(run.run_file.read_text())
    run.run_file.write_text(json.dumps({**info, "host": "somewhere"}))
    with pytest.raises(RunDirError, match=r"run\.json: key 'host': .*got str 'somewhere'"):
        run.record()


def test_an_invalid_update_writes_nothing(tmp_path):
    run = _local_run(tmp_path)
    before = run.run_file.read_text()
    with pytest.raises(RunDirError, match="key 'comparison"):
        run.update_record(comparison={"statistic": "p42", "effect": "difference"})
    assert run.run_file.read_text() == before
    run.update_record(end_reason="completed", note_from_a_back_end={"any": "value"})
    record = run.record()
    assert record.end_reason == "completed" and record.note_from_a_back_end == {"any": "value"}


def test_the_committed_example_runs_load_with_their_baseline_and_comparison_derived():
    for name, kind, baseline in (("example-local", "local", "none"), ("example-vsriov", "vsriov", "none"),
                                 ("example-local-instrumented", "local", "none")):
        record = RunDir(REPO_ROOT / "results" / name).record()
        assert record.testbed_kind == kind and record.baseline_variant == baseline
        assert record.host.boot_params == {} or "console" not in record.host.boot_params
        assert "cmdline" not in record.host.model_dump()


def test_an_older_run_json_gets_names_kind_and_comparison_from_what_it_holds(tmp_path):
    run = RunDir(tmp_path / "old")
    run.path.mkdir()
    run.run_file.write_text(json.dumps({"testbed": {"name": "e810", "kind": "fastiov"}, "profile": {"name": "paper"},
                                        "host": {"hostname": "h", "cmdline": "ro isolcpus=4 token=secret"}}))
    record = run.record()
    assert (record.run_id, record.testbed_name, record.testbed_kind, record.profile_name) == ("old", "e810", "fastiov", "paper")
    assert record.baseline_variant == "vanilla" and record.comparison.statistic == "mean"
    assert record.host.boot_params == {"isolcpus": "4"} and record.schema_version == 0


def test_the_older_file_table_agrees_with_the_back_ends():
    for kind, cls in backend_classes().items():
        baseline, comparison = OLDER_FILE_COMPARISONS[kind]
        assert (baseline, (comparison.statistic, comparison.effect)) == (cls.baseline_variant, cls.comparison)


def test_host_facts_are_typed():
    facts = host_facts()
    assert facts.cpu_count and facts.kernel and isinstance(facts.boot_params, dict)
