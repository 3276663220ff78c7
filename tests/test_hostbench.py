"""Real-host round hooks: what the original's scripts do before the run, around rounds and after it."""
from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests

from fastiov_lib.config import load_testbed
from fastiov_lib.testbeds.fastiov_host.fake_host import build_fake_host, spec_for_testbed
from fastiov_lib.testbeds.fastiov_host import log_dirs
from fastiov_lib.testbeds.fastiov_host import round_hooks as hostbench
from fastiov_lib.testbeds.fastiov_host import runtime_config
from fastiov_lib.testbeds.fastiov_host.barrier_server import port_is_free

EXAMPLE = "testbeds/fastiov-e810.example.yaml"
ORIGINAL_DIRS = ["/tmp/pod_test", "/home/hdcni/cnicmp/logs/cni_logs/tmp", "/home/cni/cnicmp_logs/containerd_logs/tmp",
                 "/home/hdcni/cnicmp/logs/kata_logs/tmp", "/root/ipu/timeline-kata-qemu"]


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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _fake_dmesg(tmp_path: Path) -> tuple[tuple[str, ...], tuple[str, ...], Path]:
    ring = tmp_path / "ring"
    ring.write_text("vfio-pci 0000:e3:01.0: old line from before the round\n")
    return ("cat", str(ring)), ("sh", "-c", f": > {ring}"), ring


def test_round_hooks_set_up_the_run_clean_up_switch_variant_and_slice_logs(tmp_path):
    if os.geteuid() != 0 or not shutil.which("ip"):
        pytest.skip("needs root and iproute2 for a real network namespace")
    restarts = tmp_path / "restarts"
    port = _free_port()
    net_d = tmp_path / "root/etc/cni/net.d"
    tb = load_testbed(EXAMPLE, overrides={
        "allow_host_changes": True, "fastiov.barrier_port": port, "fastiov.log_settle_s": 0,
        "fastiov.storage_address": None,  # tested on a real interface below
        # what containerd would find in its conf dir when it starts
        "fastiov.containerd_restart": ["sh", "-c", f"echo restart >> {restarts}; ls {net_d} >> {restarts}.net.d"],
    })
    root = build_fake_host(tmp_path / "root", spec_for_testbed(tb), tb)
    (net_d / "10-containerd-net.conflist").write_text('{"name": "containerd-net", "plugins": []}')  # cri-containerd-cni's
    for top in ("tmp/pod_test", "home", "root/ipu"):  # a host before its first run: no component dirs
        shutil.rmtree(root / top)
    ipam = root / "var/lib/cni/networks/fastiov-net"
    ipam.mkdir(parents=True)
    for name in ("10.88.0.5", "last_reserved_ip.0", "lock"):
        (ipam / name).write_text("x")
    kata_dir = root / "home/hdcni/cnicmp/logs/kata_logs/tmp"
    kata_dir.mkdir(parents=True)
    (kata_dir / "cnicmp-1.log").write_text("from an earlier run\n")  # not this run's: never collected
    dmesg, clear, ring = _fake_dmesg(tmp_path)
    ns = f"cni-fiovtest-{secrets.token_hex(3)}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    reloads: list[str] = []

    def reload_cni(text: str) -> str:  # a real containerd's reload is tested in test_real_host_containerd
        reloads.append(restarts.read_text())  # the restart ran before it
        return json.loads(text)["name"]

    hooks = hostbench.RealHostRoundHooks(tb, root=root, netns_prefix="cni-fiovtest-", dmesg_cmd=dmesg,
                                         dmesg_clear_cmd=clear, reload_cni=reload_cni)
    run = _Run(tmp_path / "run")
    try:
        info = _Round("vanilla", "startup-vanilla-c2-r0-abc123")
        hooks.before_round(info, run)
        # containerd restarted with the variant's conflist alone in its conf dir, then reloaded once
        assert (tmp_path / "restarts.net.d").read_text().split() == ["10-fastiov-artifact.conflist", "oldconfs"]
        assert reloads == ["restart\n"] and info.extra["before_round"]["cni_network"] == "fastiov-net"
        assert info.extra["before_round"]["variant"]["moved_aside"] == [str(net_d / "10-containerd-net.conflist")]
        for d in ORIGINAL_DIRS:  # the components' hard-coded directories exist before any pod
            assert (root / d.lstrip("/")).is_dir(), d
        # what the patched kata runtime does before each sandbox: GET /barrierVM on the loopback
        assert requests.get(f"http://127.0.0.1:{port}/barrierVM", timeout=5).text == "success"
        assert ns in info.extra["before_round"]["netns_removed"]
        assert ns not in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        assert sorted(p.name for p in ipam.iterdir()) == ["lock"]
        assert restarts.read_text() == "restart\n" and ring.read_text() == ""  # dmesg -C ran
        assert runtime_config.show_variant(tb, root)["matches"] == "vanilla"
        from fastiov_lib.testbeds.fastiov_host.kernel_facts import vf_devset_line_for_run

        assert "does not carry" in vf_devset_line_for_run(run.path)  # the fake host runs 6.4-rc5
        # the round: components append records, one line still being written
        (kata_dir / "cnicmp-4242.log").write_text("kata record\n")
        cd = root / "home/cni/cnicmp_logs/containerd_logs/tmp/cnicmp-20240502134136.log"
        cd.write_text("containerd record 1\npartial")
        qemu = root / "root/ipu/timeline-kata-qemu/qemu-77.log"
        qemu.write_text("[1234.000100] [PID: 77] [TID: 77] INFO: vfio-getdev\n")
        ring.write_text("vfio-pci 0000:e3:01.0: enabling device\neth0 up\n")
        hooks.after_round(info, run)
        dest = run.logs_dir / info.round_id
        assert sorted(p.name for p in (dest / "kata_logs").iterdir()) == ["cnicmp-4242.log"]
        assert (dest / "containerd_logs" / cd.name).read_text() == "containerd record 1\n"
        assert cd.exists() and (kata_dir / "cnicmp-4242.log").exists()  # sliced, not moved from the daemons
        assert (dest / "qemu" / "qemu-77.log").read_text().endswith("INFO: vfio-getdev\n")
        assert "realtime_minus_monotonic_ns" in json.loads((dest / "qemu" / "clock.json").read_text())
        assert (dest / "dmesg-vfio.log").read_text() == "vfio-pci 0000:e3:01.0: enabling device\n"
        summary = json.loads((dest / "collected.json").read_text())
        assert summary["instrumentation"] == {"cni": 0, "containerd": 1, "kata": 1}
        assert summary["qemu"] == 1 and summary["dmesg_vfio_lines"] == 1 and summary["barrier_calls"] == 1
        assert json.loads((run.path / "variant.json").read_text())["variant"] == "vanilla"
        # second round: only what was appended since, containerd not restarted again (once per run)
        with open(cd, "a") as fh:
            fh.write(" line\ncontainerd record 2\n")
        info2 = _Round("vanilla", "startup-vanilla-c2-r1-def456", index=1)
        hooks.before_round(info2, run)
        hooks.after_round(info2, run)
        dest2 = run.logs_dir / info2.round_id
        assert (dest2 / "containerd_logs" / cd.name).read_text() == "partial line\ncontainerd record 2\n"
        assert not (dest2 / "kata_logs").exists() and restarts.read_text() == "restart\n"
    finally:
        hooks.close()
        subprocess.run(["ip", "netns", "delete", ns], capture_output=True)
    assert port_is_free(port)  # the barrier server stopped
    removed, kept = log_dirs.remove_created_dirs(tb, root)
    assert str(kata_dir) not in removed  # it existed before: not ours to remove
    assert str(root / "tmp/pod_test") in removed and any("containerd_logs/tmp" in k for k in kept)


def test_round_hooks_refuse_without_allow_host_changes_and_start_no_server(tmp_path):
    port = _free_port()
    tb = load_testbed(EXAMPLE, overrides={"fastiov.barrier_port": port})
    hooks = hostbench.RealHostRoundHooks(tb, root=tmp_path)
    with pytest.raises(PermissionError, match="allow_host_changes"):
        hooks.before_round(_Round("fastiov", "r"), _Run(tmp_path / "run"))
    assert hooks.barrier is None and port_is_free(port) and not (tmp_path / "tmp/pod_test").exists()


def test_round_hooks_plan_lists_the_run_set_up_every_round_and_the_stop_as_data():
    rows = hostbench.real_host_plan(load_testbed(EXAMPLE))
    assert [r["when"] for r in rows][0] == "before run" and rows[-1]["when"] == "after run"
    assert {r["when"] for r in rows} == {"before run", "before round", "after round", "after run"}
    assert [r["target"] for r in rows if r["action"] == "mkdir -p"] == ORIGINAL_DIRS
    assert any(r["target"] == "127.0.0.1:5005" and "barrier" in r["action"] for r in rows)
    restart = [r["when"] for r in rows if r["target"] == "containerd"]
    assert restart == ["before run"]  # once per run, as the original
    assert any(r["action"] == "dmesg -C" and r["when"] == "before round" for r in rows)
    per_round = hostbench.real_host_plan(load_testbed(EXAMPLE, overrides={"fastiov.containerd_restart_per_round": True}))
    assert [r["when"] for r in per_round if r["target"] == "containerd"] == ["before round"]


def test_log_dir_step_is_a_plan_first_idempotent_and_removes_only_what_it_made(tmp_path):
    tb = load_testbed(EXAMPLE, overrides={"allow_host_changes": True, "fastiov.build_dir": "/build"})
    (tmp_path / "home/cni").mkdir(parents=True)
    step = log_dirs.log_dir_step(tb, tmp_path)
    assert [r["target"] for r in step.plan()] == ORIGINAL_DIRS and not (tmp_path / "tmp/pod_test").exists()
    first = step.apply(True)
    assert [r.status for r in first] == ["done"] * 5
    assert [r.status for r in log_dirs.log_dir_step(tb, tmp_path).apply(True)] == ["skipped"] * 5
    removed, kept = log_dirs.remove_created_dirs(tb, tmp_path)
    assert (tmp_path / "home/cni").is_dir() and not (tmp_path / "home/cni/cnicmp_logs").exists()
    assert not (tmp_path / "tmp").exists() and kept == []
    with pytest.raises(PermissionError):
        log_dirs.log_dir_step(load_testbed(EXAMPLE), tmp_path).apply(False)


def test_log_slicer_follows_a_rotated_file_without_copying_it_twice(tmp_path):
    src, dest = tmp_path / "src", tmp_path / "dest"
    src.mkdir()
    (src / "cnicmp-1.log").write_text("a\nb\n")
    sl = hostbench.LogSlicer(src, "cnicmp-*.log")
    assert sl.copy_new(dest / "r1") == {"cnicmp-1.log": 4}
    os.rename(src / "cnicmp-1.log", src / "cnicmp-1-2024.log")  # lumberjack's rotation renames
    (src / "cnicmp-1.log").write_text("c\n")
    assert sl.copy_new(dest / "r2") == {"cnicmp-1.log": 2}
    assert (dest / "r2" / "cnicmp-1.log").read_text() == "c\n" and not (dest / "r2" / "cnicmp-1-2024.log").exists()


def test_the_engine_stops_the_barrier_server_when_a_sweep_ends_badly(tmp_path):
    from fastiov_lib.bench import engine
    from fastiov_lib.run.rundir import RunDir
    from fastiov_lib.testbeds import backend_for

    port = _free_port()
    tb = load_testbed(EXAMPLE, overrides={
        "allow_host_changes": True, "fastiov.barrier_port": port, "fastiov.log_settle_s": 0,
        "fastiov.containerd_restart": ["true"], "fastiov.rpc_timeout_s": 5, "fastiov.storage_address": None,
        "fastiov.containerd_socket": str(tmp_path / "nobody-listens.sock")})
    root = build_fake_host(tmp_path / "root", spec_for_testbed(tb), tb)
    tb = tb.model_copy(update={"sys_root": root})
    dmesg, clear, _ = _fake_dmesg(tmp_path)
    hooks = hostbench.RealHostRoundHooks(tb, netns_prefix="cni-fiovnone-", dmesg_cmd=dmesg, dmesg_clear_cmd=clear)
    from fastiov_lib.testbeds.fastiov_host.cni_conf import CniConfError

    # no containerd: the round stops before any pod, as it cannot tell which network pods would get
    with pytest.raises(CniConfError, match="nobody-listens.sock: no containerd socket"):
        engine.run_startup_sweep(backend_for(tb), RunDir(tmp_path / "run"), [1], 1, variants=["fastiov"],
                                 hooks=hooks, timeout_s=5)
    assert hooks.barrier is not None and not hooks.barrier.running and port_is_free(port)

    # a containerd that does not answer: every pod fails, and the barrier server stops all the same
    hooks = hostbench.RealHostRoundHooks(tb, netns_prefix="cni-fiovnone-", dmesg_cmd=dmesg, dmesg_clear_cmd=clear,
                                         reload_cni=lambda text: "not checked")
    res = engine.run_startup_sweep(backend_for(tb), RunDir(tmp_path / "run"), [1], 1, variants=["fastiov"],
                                   hooks=hooks, timeout_s=5)
    assert [r.status for r in res.records] == ["failed"] and "did not answer" in res.message
    assert hooks.barrier is not None and not hooks.barrier.running and port_is_free(port)
    assert res.records[0].pod_name == "sandbox-001-001"
    assert (res.rounds[0].kernel, res.rounds[0].kernel_release) == ("patched", "6.4.0-rc5test")  # per round
    collected = json.loads((tmp_path / "run" / "logs" / res.rounds[0].round_id / "collected.json").read_text())
    assert (collected["kernel"], collected["kernel_release"]) == ("patched", "6.4.0-rc5test")


def test_variant_rounds_prints_the_round_plan_for_the_evaluator(capsys):
    from fastiov_lib.commands.cli import main

    assert main(["variant", "rounds", "--testbed", EXAMPLE]) == 0
    out = capsys.readouterr().out
    assert "start barrier server" in out and "/tmp/pod_test" in out and "dmesg -C" in out


def test_the_storage_address_is_added_for_the_run_and_only_what_was_added_is_removed(tmp_path):
    if os.geteuid() != 0 or not shutil.which("ip"):
        pytest.skip("needs root and iproute2 for a real interface")
    from fastiov_lib.testbeds.fastiov_host.storage_address import interface_addresses

    link = f"fiovst{secrets.token_hex(2)}"
    subprocess.run(["ip", "link", "add", link, "type", "veth", "peer", "name", link + "p"], check=True)
    try:
        port = _free_port()
        tb = load_testbed(EXAMPLE, overrides={"allow_host_changes": True, "fastiov.barrier_port": port,
                                              "fastiov.containerd_restart": ["true"],
                                              "fastiov.storage_interface": link,
                                              "fastiov.storage_address": "10.88.0.1/16"})
        root = build_fake_host(tmp_path / "root", spec_for_testbed(tb), tb)
        hooks = hostbench.RealHostRoundHooks(tb, root=root)
        assert any(r["action"].startswith("ip addr add 10.88.0.1/16") for r in hooks.plan())
        done = hooks.start(_Run(tmp_path / "run"))
        assert done["storage_address"] == {"address": "10.88.0.1/16", "added": True}
        assert [str(a) for a in interface_addresses(link)] == ["10.88.0.1/16"]
        backend = __import__("fastiov_lib.testbeds", fromlist=["backend_for"]).backend_for(tb)
        assert backend.app_endpoint("fastiov").host == "10.88.0.1"
        hooks.close()
        assert interface_addresses(link) == []  # it added it, so it removed it
        subprocess.run(["ip", "addr", "add", "10.88.0.1/16", "dev", link], check=True)
        hooks = hostbench.RealHostRoundHooks(tb, root=root)
        assert hooks.start(_Run(tmp_path / "run2"))["storage_address"]["added"] is False
        hooks.close()
        assert [str(a) for a in interface_addresses(link)] == ["10.88.0.1/16"]  # not ours: kept
    finally:
        subprocess.run(["ip", "link", "delete", link], capture_output=True)


def test_the_nic_guard_accepts_the_storage_address_on_a_pf_and_nothing_else(tmp_path):
    from ipaddress import IPv4Network

    from fastiov_lib.hw import nic
    from fastiov_lib.hw.discovery import read_routes, route_network

    tb = load_testbed(EXAMPLE, overrides={"fastiov.storage_address": None})
    root = build_fake_host(tmp_path / "root", spec_for_testbed(tb, addressed_netdevs=("ens1f0",)), tb)
    assert [str(route_network(r)) for r in read_routes(root) if r.iface == "ens1f0"] == ["10.20.0.0/16"]
    assert any("ens1f0 has an IPv4 address in use" in p for p in nic.nic_guard_problems(tb.fastiov, root))
    pods = load_testbed(EXAMPLE, overrides={"fastiov.storage_address": "10.20.0.1/16"})  # that route is its own
    assert not any("ens1f0" in p for p in nic.nic_guard_problems(pods.fastiov, root))
    other = load_testbed(EXAMPLE, overrides={"fastiov.storage_address": "10.88.0.1/16"})  # another net: refused
    assert any("ens1f0 has an IPv4 address in use" in p for p in nic.nic_guard_problems(other.fastiov, root))
    assert route_network(next(r for r in read_routes(root) if r.iface == "ens1f0")).subnet_of(IPv4Network("10.0.0.0/8"))
