"""CI's smoke reproduction on the instrumented containerd: build (or reuse) it, run every notebook.

About 4 min on 2 cores (plus about 2 min for the containerd build on a fresh machine); marked slow,
and run in CI (`make test` runs the slow tests too).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from fastiov_lib.config import REPO_ROOT

from local_testbed_support import needs_local_testbed

needs_go = pytest.mark.skipif(not Path("/usr/lib/go-1.19/bin/go").is_file(),
                              reason="needs Debian's golang-1.19-go to build the instrumented containerd")


@needs_local_testbed
@needs_go
@pytest.mark.slow
def test_smoke_reproduction_with_the_instrumented_containerd_records_every_ok_pods_stages(tmp_path):
    out = subprocess.run([sys.executable, "-m", "fastiov_lib", "reproduce", "--testbed",
                          str(REPO_ROOT / "testbeds" / "local-instrumented.yaml"), "--profile", "smoke",
                          "--results", str(tmp_path)], capture_output=True, text=True, timeout=1500,
                         cwd=REPO_ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    run = Path(out.stdout.strip().splitlines()[-1])
    info = json.loads((run / "run.json").read_text())
    assert info["containerd"]["flavour"] == "instrumented"
    assert "containerd-cnicmp" in info["containerd"]["version"] and "v1.3.10-fastiov-local" in info["containerd"]["version"]
    assert info["containerd"]["source"]["commit"] == "1c5970efbdd8bc864a34baa60c0b382434d4d7c2"
    pods = pd.read_json(run / "pods.jsonl", lines=True)
    stages = pd.read_csv(run / "stages.csv")
    ok = pods[pods["status"] == "ok"]
    have = set(stages.loc[stages["subject"].str.startswith("CNI_"), "record_id"])
    assert ok["sandbox_id"].isin(have).mean() >= 0.99
    for mode in ("bridge", "hostdev"):
        big = ok[(ok["variant"] == mode) & (ok["concurrency"] >= 4)]
        assert len(big) >= 4 and big["sandbox_id"].isin(have).mean() >= 0.99, mode
        cni = stages[(stages["variant"] == mode) & (stages["subject"] == "CNI_md_add_cni")]
        assert set(big["sandbox_id"]) <= set(cni["record_id"]), mode
    for name in ("stage_breakdown_by_mode", "stage_growth"):
        assert (run / "figures" / f"{name}.png").stat().st_size > 10_000
    report = (run / "report.md").read_text()
    assert "Ok pods without a CNI_* record: 0 of" in report
    assert "| L9-stage-records-for-ok-pods |" in report and "| L11-cni-share-grows-none-to-hostdev |" in report
