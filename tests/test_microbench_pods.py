"""The micro-benchmarks run in real pods on the local testbed (containerd, runc, CNI) and parse."""
from __future__ import annotations

import json
import os

import pytest

from fastiov_lib.bench import microbench
from fastiov_lib.config import load_profile
from fastiov_lib.run.rundir import create_run_dir
from fastiov_lib.testbeds import backend_for
from fastiov_lib.testbeds.local import testbed as local_testbed

from local_testbed_support import make_testbed, needs_local_testbed, our_links

PREFIX = "ftm"


@pytest.fixture(scope="module")
def testbed(tmp_path_factory):
    tb = make_testbed(tmp_path_factory.mktemp("micro") / "tb", PREFIX, 247, pool_size=2, modes=("none", "bridge"))
    yield tb
    if os.geteuid() == 0:
        local_testbed.down(tb)
        assert our_links(PREFIX) == []


@needs_local_testbed
@pytest.mark.root
def test_microbench_pods_measure_memory_touch_and_a_file_read_per_pod(testbed, tmp_path):
    backend = backend_for(testbed)
    backend.up()
    image = microbench.build_local_image(testbed)
    assert microbench.build_local_image(testbed) == image  # a second build reuses the import
    run = create_run_dir(testbed, load_profile("smoke"), run_id="micro-run", results_root=tmp_path, facts=backend_for(testbed).facts())
    pods = []
    for variant in ("none", "bridge"):
        pods += microbench.run_microbench(backend, run, image, variant, pods=2, mem_bytes=1 << 20)
    assert [p.status for p in pods] == ["ok"] * 4, [p.error for p in pods]
    for p in pods:
        kinds = {r.measurement: r for r in p.records}
        assert set(kinds) == {"mem_first_touch", "mem_second_touch", "file_read"}
        assert kinds["mem_first_touch"].bytes == 1 << 20 and kinds["file_read"].bytes == 1
        assert kinds["mem_first_touch"].latency_ns > 0 and kinds["mem_first_touch"].log_time  # CRI log lines
    lines = [json.loads(x) for x in (run.path / microbench.RECORDS_FILE).read_text().splitlines()]
    assert len(lines) == 12 and {x["variant"] for x in lines} == {"none", "bridge"}
    assert local_testbed.pod_leftovers(testbed) == []  # every pod removed again
