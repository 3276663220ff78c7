"""The local testbed: config it writes, images it builds, links it creates, and cleanup that leaves
the machine clean even after the driver or containerd was SIGKILLed. Real containerd, runc, CNI."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest
import tomlkit

from fastiov_lib.testbeds.local import cleanup as local_cleanup
from fastiov_lib.testbeds.local import containerd as local_containerd
from fastiov_lib.testbeds.local import testbed as local_testbed
from fastiov_lib.cri import CriClient, PodSpec

from local_testbed_support import make_testbed, needs_local_testbed, our_links, write_testbed_yaml

PREFIX = "ftl"
OCTET = 250


@pytest.fixture(scope="module")
def testbed(tmp_path_factory):
    tb = make_testbed(tmp_path_factory.mktemp("local") / "tb", PREFIX, OCTET, pool_size=8)
    yield tb
    if os.geteuid() == 0:
        local_testbed.down(tb)


@pytest.fixture(scope="module")
def handle(testbed):
    return local_testbed.ensure_up(testbed)


def _start_pods(handle, modes: list[str]) -> list[str]:
    with CriClient(handle.socket, timeout_s=30) as cri:
        ids = []
        for i, mode in enumerate(modes):
            spec = PodSpec(name=f"left-{i}", namespace="test", uid=f"left-{i}-{time.time_ns()}",
                           host_network=mode == "none")
            ids.append(cri.run_pod_sandbox(cri.sandbox_config(spec), handle.runtime_handler(mode)))
        return ids


def test_containerd_config_is_private_and_restricts_oom_score_adj(tmp_path):
    tb = make_testbed(tmp_path / "w", "ftx", 249)
    doc = tomlkit.parse(local_testbed.containerd_config(tb, ["none", "bridge", "hostdev"]))
    cri = doc["plugins"]["io.containerd.grpc.v1.cri"]
    assert cri["restrict_oom_score_adj"] is True
    assert cri["netns_mounts_under_state_dir"] is True
    for key in ("root", "state"):
        assert str(doc[key]).startswith(str(tmp_path / "w"))
    assert str(doc["grpc"]["address"]).startswith(str(tmp_path / "w"))
    runtimes = cri["containerd"]["runtimes"]
    assert set(runtimes) == {"runc", "runc-none", "runc-bridge", "runc-hostdev"}
    assert runtimes["runc-hostdev"]["cni_conf_dir"].endswith("/cni/net.d/hostdev")
    assert runtimes["runc-bridge"]["options"]["Root"] == str(tmp_path / "w" / "runc")


def test_each_network_mode_has_its_own_conflist(tmp_path):
    tb = make_testbed(tmp_path / "w", "ftx", 249)
    bridge = local_testbed.conflist_for(tb, "bridge")["plugins"][0]
    assert bridge["type"] == "bridge" and bridge["bridge"] == "ftxbr0"
    assert bridge["ipam"]["ranges"][0][0]["subnet"] == "10.249.0.0/24"
    assert bridge["ipam"]["dataDir"].startswith(str(tmp_path / "w"))
    macvlan = local_testbed.conflist_for(tb, "macvlan")["plugins"][0]
    assert macvlan["master"] == "ftxmv0" and macvlan["ipam"]["ranges"][0][0]["rangeStart"] == "10.249.1.2"
    hostdev = local_testbed.conflist_for(tb, "hostdev")["plugins"][0]
    assert hostdev["type"] == "fastiov-pool" and hostdev["ipam"]["ranges"][0][0]["subnet"] == "10.249.2.0/24"
    with pytest.raises(local_testbed.LocalTestbedError, match="ipvlan"):
        local_testbed.conflist_for(tb, "ipvlan")


def test_local_testbed_refuses_to_change_the_host_unless_allowed(tmp_path):
    tb = make_testbed(tmp_path / "w", "ftx", 249).model_copy(update={"allow_host_changes": False})
    with pytest.raises(local_testbed.LocalTestbedError, match="allow_host_changes"):
        local_testbed.ensure_up(tb)


@pytest.mark.skipif(not Path("/usr/bin/gcc").exists(), reason="needs gcc")
def test_images_are_reproducible_oci_layouts(tmp_path):
    tb = make_testbed(tmp_path / "w", "ftx", 249)
    first = {i.name: i for i in local_testbed.build_images(tb, import_images=False)}
    assert set(first) == {"pause", "workload"}
    (tmp_path / "w" / "images" / "pause.json").unlink()  # force a rebuild from source
    again = {i.name: i for i in local_testbed.build_images(tb, import_images=False)}
    assert again["pause"].manifest_digest == first["pause"].manifest_digest
    with tarfile.open(first["pause"].tarball) as tar:
        names = tar.getnames()
        index = json.load(tar.extractfile("index.json"))
        manifest_digest = index["manifests"][0]["digest"]
        assert manifest_digest == first["pause"].manifest_digest
        assert index["manifests"][0]["annotations"]["io.containerd.image.name"] == "fastiov.local/ftx-pause:1"
        manifest = json.load(tar.extractfile(f"blobs/sha256/{manifest_digest.split(':')[1]}"))
        config = json.load(tar.extractfile(f"blobs/sha256/{manifest['config']['digest'].split(':')[1]}"))
    assert "oci-layout" in names
    assert config["config"]["Entrypoint"] == ["/pause"]
    assert len(config["rootfs"]["diff_ids"]) == 1


@needs_local_testbed
def test_probe_reports_every_mode_with_a_reason(testbed):
    modes = {m.mode: m for m in local_testbed.probe_network_modes(testbed)}
    assert set(modes) == {"none", "bridge", "macvlan", "hostdev", "ipvlan"}
    assert modes["none"].supported and not modes["none"].host_path
    assert all(m.reason for m in modes.values())
    assert not [n for n in our_links(PREFIX) if n.startswith(f"{PREFIX}p")]  # probe links are gone
    checks = {c.name: c for c in local_testbed.local_checks(testbed)}
    assert checks["root"].status == "pass"
    for mode, ms in modes.items():
        check = checks[f"network mode {mode}"]
        assert check.status == ("pass" if ms.supported else ("fail" if mode in testbed.local.network_modes else "warn"))


@needs_local_testbed
def test_ensure_up_is_idempotent_and_reuses_our_containerd(testbed, handle):
    again = local_testbed.ensure_up(testbed)
    assert again.pid == handle.pid == local_testbed.containerd_pid(testbed)
    assert {i.name: i.imported for i in again.images} == {"pause": True, "workload": True}
    assert set(again.supported_modes()) >= {"none", "bridge"}
    links = our_links(PREFIX)
    assert f"{PREFIX}br0" in links and f"{PREFIX}hbr" in links


@needs_local_testbed
def test_hostdev_pool_is_created_idempotently_and_repaired(testbed, handle):
    if "hostdev" not in handle.supported_modes():
        pytest.skip("hostdev unsupported on this host")
    pool = local_testbed.create_hostdev_pool(testbed)
    assert len(pool) == 8 and all(p.in_host_netns and p.lent_to is None for p in pool)
    subprocess.run(["ip", "link", "del", "dev", f"{PREFIX}d3"], check=True)  # drops both ends
    repaired = local_testbed.create_hostdev_pool(testbed)
    assert [p.device for p in repaired if p.in_host_netns] == [f"{PREFIX}d{i}" for i in range(8)]
    assert f"{PREFIX}h3" in our_links(PREFIX)


@needs_local_testbed
def test_cleanup_after_sigkill_of_the_driver_leaves_the_machine_clean(testbed, handle, tmp_path):
    yaml_path = write_testbed_yaml(testbed, tmp_path / "testbed.yaml")
    modes = ",".join(m for m in ("bridge", "hostdev") if m in handle.supported_modes())
    driver = subprocess.Popen([sys.executable, "-m", "fastiov_lib", "bench", "--testbed", str(yaml_path),
                               "--concurrency", "8", "--repeats", "3", "--network", modes,
                               "--out", str(tmp_path / "run")],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        with CriClient(handle.socket, timeout_s=10) as cri:
            while not cri.list_pod_sandboxes() and time.monotonic() < deadline:
                assert driver.poll() is None, "driver ended before any sandbox existed"
                time.sleep(0.02)
        driver.send_signal(signal.SIGKILL)
    finally:
        driver.wait(10)
    assert local_testbed.pod_leftovers(testbed), "the kill should have left pods behind"
    out = subprocess.run([sys.executable, "-m", "fastiov_lib", "testbed", "cleanup", "--testbed", str(yaml_path)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert local_testbed.pod_leftovers(testbed) == []
    with CriClient(handle.socket, timeout_s=10) as cri:
        assert cri.list_pod_sandboxes() == []
    assert not local_testbed.cleanup(testbed).removed_anything  # twice is harmless
    assert all(p.in_host_netns for p in local_testbed.hostdev_pool(testbed))


@needs_local_testbed
def test_cleanup_without_containerd_kills_shims_and_releases_mounts(testbed, handle):
    modes = [m for m in ("bridge", "hostdev", "none") if m in handle.supported_modes()]
    _start_pods(handle, modes)
    paths = local_testbed.paths_for(testbed)
    assert local_containerd.our_shims(paths)
    os.kill(local_testbed.containerd_pid(testbed), signal.SIGKILL)
    deadline = time.monotonic() + 10
    while local_testbed.containerd_pid(testbed) is not None and time.monotonic() < deadline:
        time.sleep(0.05)
    report = local_testbed.cleanup(testbed)
    assert report.processes and report.netns
    assert not local_containerd.our_shims(paths)
    assert local_cleanup.mounts_under(paths.work_dir) == []
    assert local_testbed.pod_leftovers(testbed) == []
    # containerd comes back with the dead sandboxes in its database; cleanup removes them through CRI
    local_testbed.ensure_up(testbed)
    local_testbed.cleanup(testbed)
    with CriClient(paths.socket, timeout_s=10) as cri:
        assert cri.list_pod_sandboxes() == []
    assert not local_testbed.cleanup(testbed).removed_anything


@needs_local_testbed
def test_down_removes_every_link_process_and_file(testbed, handle):
    _start_pods(handle, ["bridge"])
    pid = local_testbed.containerd_pid(testbed)
    local_testbed.down(testbed)
    assert our_links(PREFIX) == []
    assert not Path(f"/proc/{pid}").exists() or "containerd" not in Path(f"/proc/{pid}/cmdline").read_text()
    assert not Path(testbed.local.work_dir).exists()
    assert not local_testbed.down(testbed).removed_anything
