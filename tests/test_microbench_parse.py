"""The in-container micro-benchmark output (the original's mem_lat / file_lat format) parses into records."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from fastiov_lib.analysis import microbench as mb

UPSTREAM = Path(__file__).resolve().parents[1].parent / "shared/fixtures/upstream-artifact"
if not UPSTREAM.is_dir():
    UPSTREAM = Path("/work/shared/fixtures/upstream-artifact")
SOURCE = Path(__file__).resolve().parents[1] / "fastiov_lib/testbeds/local/images/microbench.c"


@pytest.mark.skipif(not (UPSTREAM / "mem_lat.log").is_file(), reason="the original artifact's logs are not present")
def test_the_original_mem_lat_log_parses_into_first_and_second_touch_records():
    records, report = mb.parse_microbench_file(UPSTREAM / "mem_lat.log")
    assert report.ok and records
    kinds = {r.measurement for r in records}
    assert kinds == {"mem_first_touch", "mem_second_touch"} and {r.bytes for r in records} == {1024}
    first = records[0]
    assert first.latency_ns == 305 and first.log_time.startswith("2024-05-02T13:41:36")
    s = mb.summarize(records).set_index("measurement")
    assert s.loc["mem_first_touch", "mean_ns"] > s.loc["mem_second_touch", "mean_ns"]


def test_cri_log_lines_file_reads_and_junk_are_told_apart():
    lines = ["2024-05-02T13:49:34.790734354+08:00 stdout F Reading 1 bytes took 0.000186084 seconds (excluding overhead).",
             "2024-05-02T13:49:34.790734354+08:00 stderr F open /x: No such file",
             "", "something else"]
    records, report = mb.parse_microbench_lines(lines)
    assert [(r.measurement, r.bytes, r.latency_ns) for r in records] == [("file_read", 1, 186084)]
    assert [line for _, line, _ in report.skipped] == [2, 4]


def test_our_static_workload_prints_what_the_parser_reads(tmp_path):
    binary = tmp_path / "microbench"
    subprocess.run(["gcc", "-static", "-O2", "-D_GNU_SOURCE", "-Wall", "-o", str(binary), str(SOURCE)], check=True)
    runs = []
    for _ in range(5):  # the least of five runs: a busy machine preempts single runs
        out = subprocess.run([str(binary), "4194304", str(SOURCE), "1"], capture_output=True, text=True,
                             check=True).stdout
        records, report = mb.parse_microbench_lines(out.splitlines())
        assert report.ok and [r.measurement for r in records] == ["mem_first_touch", "mem_second_touch", "file_read"]
        runs.append(records)
    first, second, read = runs[0]
    assert first.bytes == second.bytes == 4194304 and read.bytes == 1
    least = lambda i: min(r[i].latency_ns for r in runs)  # noqa: E731
    assert least(0) > least(1) > 0  # 1024 page faults on the first pass only
    assert subprocess.run([str(binary), "0"], capture_output=True).returncode == 2
