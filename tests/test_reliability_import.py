"""import-original copies regular files only, never follows links; runc layout; integer ns (issue 9, item 5)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from fastiov_lib.analysis import original
from fastiov_lib.analysis.pods import read_pods


def _layout(root: Path, runtime: str = "kata") -> Path:
    rd = root / "logs" / f"time_{runtime}_04301943" / "con_002"
    rd.mkdir(parents=True)
    rd.joinpath("_pod_000_001.txt").write_text("sb0 1714477380000.123457 1714477381100 1000.000001\n")
    rd.joinpath("_pod_001_001.txt").write_text("sb1 1714477380001 1714477381100 1020\n")
    (rd.parent / "versions.txt").write_text(f"6.4.0-rc5test\ncontainerd v1.3.10\n{runtime}-runtime  : 3.1.3\n")
    return root


def test_import_does_not_follow_links_out_of_its_source_and_survives_loops(tmp_path):
    src = _layout(tmp_path / "orig")
    rd = src / "logs" / "time_kata_04301943"
    os.symlink("/etc", rd / "etc-link")
    os.symlink("/etc/shadow" if Path("/etc/shadow").exists() else "/etc/hostname", rd / "con_002" / "_pod_009_001.txt")
    os.symlink(rd, rd / "loop")
    os.symlink("../con_002", rd / "con_003")
    result = subprocess.run([sys.executable, "-m", "fastiov_lib", "import-original", str(src), "--out",
                             str(tmp_path / "imported")], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr and "symlink" in result.stderr
    copied = [p for p in (tmp_path / "imported").rglob("*")]
    assert not any(p.is_symlink() for p in copied)
    assert not any(p.name in ("shadow", "passwd", "hostname") for p in copied)
    assert sum(p.stat().st_size for p in copied if p.is_file()) < 100_000
    info = json.loads((tmp_path / "imported" / "run.json").read_text())
    assert any("etc-link" in s for s in info["copy_skipped"]) and any("loop" in s for s in info["copy_skipped"])
    pods, _ = read_pods(tmp_path / "imported")
    assert len(pods) == 2  # the linked con_003 and pod file were not read


def test_runc_layout_is_imported_with_its_runtime_and_exact_integer_nanoseconds(tmp_path):
    run, _ = original.import_original_results(_layout(tmp_path / "orig", "runc"), tmp_path / "imported")
    lines = [json.loads(x) for x in run.pods_file.read_text().splitlines()]
    first = next(x for x in lines if x["tenant"] == 0)
    assert first["runtime_handler"] == "runc"
    assert first["t_released_ns"] == 1714477380000123457  # exactly, no float rounding
    assert first["t_sandbox_returned_ns"] - first["t_released_ns"] == 1000000001
    assert first["extra"]["latency_kind"] == "original_total"
    info = run.read_run_info()
    assert info["runtime"]["handlers"] == ["runc"] and "polling and sleep included" in info["latency"]["note"]
    assert info["testbed"]["kernel"] == "6.4.0-rc5test"
