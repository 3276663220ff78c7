"""Real-host round hooks: variant switch, clean-up between rounds, log collection per round."""
from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from fastiov_lib.testbeds.fastiov_host import round_hooks as hostbench

from fastiov_lib.testbeds.fastiov_host import runtime_config
from fastiov_lib.config import load_testbed
from fastiov_lib.hw.fake_sysfs import build_fake_host, spec_for_testbed

EXAMPLE = "testbeds/fastiov-e810.example.yaml"


@dataclass
class _Round:  # the fields of bench.RoundInfo the hooks read
    variant: str
    round_id: str
    index: int = 0
    extra: dict = field(default_factory=dict)


@dataclass
class _Run:
    path: Path

    @property
    def logs_dir(self) -> Path:
        return self.path / "logs"


def test_round_hooks_clean_up_switch_variant_and_collect_logs(tmp_path):
    if os.geteuid() != 0 or not shutil.which("ip"):
        pytest.skip("needs root and iproute2 for a real network namespace")
    restarts = tmp_path / "restarts"
    tb = load_testbed(EXAMPLE, overrides={
        "allow_host_changes": True,
        "fastiov.containerd_restart": ["sh", "-c", f"echo restart >> {restarts}"],
        "fastiov.instrumentation_log_dirs": {"kata": "/var/log/fastiov/kata", "cni": "/var/log/fastiov/cni"},
    })
    root = build_fake_host(tmp_path / "root", spec_for_testbed(tb), tb)
    ipam = root / "var/lib/cni/networks/fastiov-net"
    ipam.mkdir(parents=True)
    for name in ("10.88.0.5", "last_reserved_ip.0", "lock"):
        (ipam / name).write_text("x")
    ns = f"cni-fiovtest-{secrets.token_hex(3)}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        hooks = hostbench.RealHostRoundHooks(
            tb, root=root, netns_prefix="cni-fiovtest-",
            dmesg_cmd=("sh", "-c", "echo 'vfio-pci 0000:e3:01.0: reset'; echo 'eth0 up'"))
        run = _Run(tmp_path / "run")
        info = _Round("vanilla", "startup-vanilla-c2-r0-abc123")
        hooks.before_round(info, run)
        assert ns in info.extra["before_round"]["netns_removed"]
        assert ns not in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        assert sorted(p.name for p in ipam.iterdir()) == ["lock"]
        assert restarts.read_text() == "restart\n"
        assert runtime_config.show_variant(tb, root)["matches"] == "vanilla"
        kata_dir = root / "var/log/fastiov/kata"
        kata_dir.mkdir(parents=True)
        (kata_dir / "cnicmp-4242.log").write_text("record\n")
        hooks.after_round(info, run)
        dest = run.logs_dir / info.round_id
        assert (dest / "kata_logs" / "cnicmp-4242.log").read_text() == "record\n"
        assert not (kata_dir / "cnicmp-4242.log").exists()
        summary = json.loads((dest / "collected.json").read_text())
        assert summary["instrumentation"] == {"cni": 0, "kata": 1}
        assert summary["dmesg_vfio_lines"] == 0  # the same lines were there before the round
        assert json.loads((run.path / "variant.json").read_text())["variant"] == "vanilla"
    finally:
        subprocess.run(["ip", "netns", "delete", ns], capture_output=True)


def test_round_hooks_refuse_without_allow_host_changes_and_plan_is_data(tmp_path):
    tb = load_testbed(EXAMPLE)
    hooks = hostbench.RealHostRoundHooks(tb, root=tmp_path)
    with pytest.raises(PermissionError, match="allow_host_changes"):
        hooks.before_round(_Round("fastiov", "r"), _Run(tmp_path / "run"))
    rows = hostbench.real_host_plan(tb)
    assert {r["when"] for r in rows} == {"before round", "after round"}
    assert any("ip netns delete cni-*" == r["action"] for r in rows)
    assert any(r["target"] == "/var/log/fastiov/kata" for r in rows)
