"""A full disk stops the measurement loudly and keeps a valid JSONL (issue 9, item 3)."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from fastiov_lib.run.rundir import JsonlWriter, RecordWriteError, read_jsonl

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tiny tmpfs needs root")


@pytest.fixture()
def tiny_fs(tmp_path):
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)], check=True)
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


@needs_root
def test_writer_stops_on_a_full_disk_and_keeps_valid_jsonl(tiny_fs):
    path = tiny_fs / "pods.jsonl"
    writer = JsonlWriter(path)
    record = {"pod": 0, "payload": "x" * 500}
    written = 0
    with pytest.raises(RecordWriteError) as err:
        for i in range(10_000):
            writer.append({**record, "pod": i})
            written += 1
    message = str(err.value.strerror)
    assert str(path) in message and f"{written} records are kept" in message
    assert "No space left on device" in message
    with pytest.raises(RecordWriteError):  # nothing after the failure is dropped silently
        writer.append(record)
    writer.close()
    records, report = read_jsonl(path)
    assert report.ok and len(records) == written and records[-1]["pod"] == written - 1
    assert path.read_bytes().endswith(b"\n")


def test_writer_fails_loudly_on_dev_full(tmp_path):
    link = tmp_path / "pods.jsonl"
    os.symlink("/dev/full", link)
    writer = JsonlWriter(link)
    with pytest.raises(RecordWriteError, match="0 records are kept"):
        writer.append({"a": 1})
    writer.close()


@needs_root
def test_writer_refuses_a_read_only_folder_naming_it(tiny_fs):
    subprocess.run(["mount", "-o", "remount,ro", str(tiny_fs)], check=True)
    with pytest.raises(RecordWriteError, match=str(tiny_fs / "pods.jsonl")):
        JsonlWriter(tiny_fs / "pods.jsonl")


def test_writer_counts_records_already_in_the_file(tmp_path):
    path = tmp_path / "pods.jsonl"
    with JsonlWriter(path) as w:
        w.append({"a": 1})
        w.append({"a": 2})
    with JsonlWriter(path) as w:
        assert w.records == 2
        w.append({"a": 3})
        assert w.records == 3
