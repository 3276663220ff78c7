"""A full disk stops the benchmark at once, keeping every record written so far (issue 9, item 3)."""
from __future__ import annotations

import os
import subprocess

import pytest

from fastiov_lib.testbeds import backend_for
from fastiov_lib.bench import engine
from fastiov_lib.config import load_profile
from fastiov_lib.run.rundir import RecordWriteError, create_run_dir, read_jsonl
from fastiov_lib.testbeds.local import testbed as local_testbed

from local_testbed_support import make_testbed, needs_local_testbed, our_links

PREFIX = "h9e"


@pytest.fixture()
def tiny_results(tmp_path):
    mnt = tmp_path / "results"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)], check=True)
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


@pytest.mark.slow
@needs_local_testbed
def test_bench_stops_at_once_when_the_disk_fills_and_keeps_valid_records(tmp_path, tiny_results):
    tb = make_testbed(tmp_path / "wd", PREFIX, 239, pool_size=2, modes=("none",))
    try:
        run = create_run_dir(tb, load_profile("smoke"), run_id="full", results_root=tiny_results, facts=backend_for(tb).facts())
        with pytest.raises(RecordWriteError) as err:
            engine.run_startup_sweep(tb, run, [10], 40, variants=["none"], timeout_s=60)
        records, report = read_jsonl(run.pods_file)
        assert report.ok and 0 < len(records) < 400  # valid JSONL up to the failure, the sweep stopped early
        assert f"{len(records)} records are kept" in err.value.strerror and str(run.pods_file) in err.value.strerror
        rounds = {r["repeat"] for r in records}
        assert max(rounds) < 39  # later rounds were never started
        assert local_testbed.pod_leftovers(tb) == []  # the round's sandboxes were removed all the same
    finally:
        local_testbed.down(tb)
    assert our_links(PREFIX) == []
