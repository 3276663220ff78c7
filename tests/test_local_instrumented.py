"""The paper's instrumented containerd 1.3 on the local testbed: build, config, pods, records, cleanup.

The build is the real one (release/1.3 + 0001-containerd.patch + our per-pod-netns fix, Debian's
Go); it is shared with testbeds/local-instrumented.yaml's build folder so it runs once per machine.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from fastiov_lib.analysis.instrumentation import join_by_sandbox, pods_without_records
from fastiov_lib.config import REPO_ROOT, Testbed  # noqa: F401  (Testbed: type of the fixtures)
from fastiov_lib.cri import CriClient
from fastiov_lib.testbeds.local import cleanup as local_cleanup
from fastiov_lib.testbeds.local import instrumented
from fastiov_lib.testbeds.local import testbed as local_testbed

from local_testbed_support import make_testbed, needs_local_testbed, our_links, write_testbed_yaml

SOURCES = (REPO_ROOT / ".." / "shared" / "sources").resolve()
SHARED_BUILD = Path("/var/tmp/fastiov-local-instrumented/build")  # the yaml's work_dir/build
PREFIX = "fti"
OCTET = 247

needs_build_inputs = pytest.mark.skipif(
    not (SOURCES / "containerd-release-1.3-1c5970efbdd8.tar.xz").is_file() or not Path("/usr/lib/go-1.19/bin/go").is_file(),
    reason="needs ../shared/sources (offline upstream archives) and Debian's golang-1.19-go")


def _instrumented(work_dir: Path, build_dir: Path | None = SHARED_BUILD, pool: int = 8) -> Testbed:
    tb = make_testbed(work_dir, PREFIX, OCTET, pool_size=pool)
    data = tb.model_dump(mode="json", exclude={"source_path"})
    data["cri_api"] = "v1alpha2"
    data["local"].update(containerd="instrumented", sources_dir=str(SOURCES),
                         build_dir=str(build_dir) if build_dir else None)
    return Testbed.model_validate(data)


def test_the_config_is_containerd_1_3s_version_1_format_with_one_cni_dir(tmp_path):
    tb = _instrumented(tmp_path / "tb")
    text = local_testbed.containerd_config(tb, ["none", "bridge", "hostdev"])
    assert "version = 2" not in text and "[plugins.cri]" in text and "io.containerd.grpc.v1.cri" not in text
    assert "restrict_oom_score_adj = true" in text
    assert f'conf_dir = "{instrumented.active_conf_dir(tb)}"' in text
    assert f'path = "{tmp_path / "tb" / "containerd" / "opt"}"' in text  # not /opt/containerd
    for handler in ("runc-none", "runc-bridge", "runc-hostdev"):
        assert f"[plugins.cri.containerd.runtimes.{handler}]" in text


def test_containerd_runs_in_its_own_mount_namespace_with_binds_under_the_work_dir(tmp_path):
    tb = _instrumented(tmp_path / "tb", build_dir=tmp_path / "build")
    (tmp_path / "build" / "bin").mkdir(parents=True)
    (tmp_path / "build" / "bin" / "containerd").write_text("")
    argv = instrumented.launch_argv(tb, local_testbed.paths_for(tb))
    assert argv[:4] == ["unshare", "--mount", "--propagation", "private"]
    assert "bash" not in argv and "-c" not in argv
    pairs = [(argv[i + 1], argv[i + 2]) for i, a in enumerate(argv) if a == "--bind"]
    assert {dst for _, dst in pairs} == {"/home", "/run/containerd", "/run/netns", "/var/lib/cni"}
    assert all(src.startswith(str(tmp_path / "tb")) for src, _ in pairs)
    assert argv[-3:] == [str(tmp_path / "build" / "bin" / "containerd"), "--config",
                         str(local_testbed.paths_for(tb).config)]


def test_records_are_copied_once_per_round_and_a_half_written_line_waits(tmp_path):
    tb = _instrumented(tmp_path / "tb")
    rec = instrumented.records_dir(tb)
    rec.mkdir(parents=True)
    line = '2026-12-02T05:12:16.1+00:00\tINFO\tCNI_nns\t{"record_id": "%s", "start_t": "2026-12-02T05:12:16.1+00:00", "elapsed_ns": 5}\n'
    (rec / "cnicmp-20261202051216.log").write_text(line % "a" + (line % "b")[:30])
    first = instrumented.collect_records(tb, tmp_path / "logs", "r1")
    assert first.read_text() == line % "a"
    with open(rec / "cnicmp-20261202051216.log", "a") as fh:
        fh.write((line % "b")[30:])
    assert instrumented.collect_records(tb, tmp_path / "logs", "r2").read_text() == line % "b"
    assert instrumented.collect_records(tb, tmp_path / "logs", "r3") is None


def test_records_are_joined_to_pods_by_sandbox_id_and_pods_without_one_are_counted():
    pods = pd.DataFrame({"experiment": ["ablation"] * 3, "variant": ["bridge", "bridge", "hostdev"],
                         "concurrency": [2, 2, 1], "repeat": [0, 0, 0], "status": ["ok", "ok", "ok"],
                         "sandbox_id": ["s1", "s2", "s3"]})
    stages = pd.DataFrame({"record_id": ["s1", "s3", "start"], "subject": ["CNI_md", "CNI_nns", "CNI_x"],
                           "experiment": [pd.NA] * 3, "variant": ["hostdev", pd.NA, pd.NA],
                           "concurrency": [pd.NA] * 3, "repeat": [pd.NA] * 3})
    joined = join_by_sandbox(stages, pods)
    assert list(joined["variant"][:2]) == ["bridge", "hostdev"]  # the sandbox id wins over a time window
    assert pd.isna(joined["variant"][2])
    missing = pods_without_records(joined, pods).set_index("variant")
    assert missing.loc["bridge", "without_records"] == 1 and missing.loc["hostdev", "without_records"] == 0


def test_the_local_scope_applies_the_same_patch_series_as_the_real_host(tmp_path):
    if not (SOURCES / "containerd-release-1.3-1c5970efbdd8.tar.xz").is_file():
        pytest.skip(f"no offline upstream sources at {SOURCES}")
    tb = _instrumented(tmp_path / "tb", build_dir=tmp_path / "build")
    rows = instrumented._builder(tb).apply(through="patch")
    patch_row = next(r for r in rows if r["step"] == "patch")
    assert patch_row["patches"] == ["0001-containerd.patch", "0002-containerd-tenant-capability-args.patch",
                                    "0003-containerd-per-pod-netns.patch"]
    tree = tmp_path / "build/containerd/src/gopath/src/github.com/containerd/containerd"
    assert "DoUseCNIPool bool = false" in (tree / "cnicmp/cnipool/pool.go").read_text()
    assert 'cni.WithCapability("tenantID"' in (tree / "vendor/github.com/containerd/cri/pkg/server/sandbox_run.go").read_text()


# ------------------------------------------------------------------ for real (root, containerd)

@pytest.fixture(scope="module")
def itb(tmp_path_factory):
    if os.geteuid() != 0:
        pytest.skip("needs root")
    from fastiov_lib.config import load_testbed

    # the shared build lives in testbeds/local-instrumented.yaml's work dir: own it before building there
    instrumented._claim_work_dir(load_testbed(REPO_ROOT / "testbeds" / "local-instrumented.yaml"))
    tb = _instrumented(tmp_path_factory.mktemp("instr") / "tb")
    yield tb
    local_testbed.down(tb)


@pytest.fixture(scope="module")
def ihandle(itb):
    return local_testbed.ensure_up(itb)  # builds the containerd first if the shared build has not


@needs_local_testbed
@needs_build_inputs
@pytest.mark.slow
def test_v1alpha2_pods_in_every_network_mode_at_concurrency_have_records(itb, ihandle, tmp_path):
    from fastiov_lib.bench.sweeps import run_profile_sweep
    from fastiov_lib.config import load_profile
    from fastiov_lib.report.stage_figures import pod_stages
    from fastiov_lib.run.rundir import create_run_dir
    from fastiov_lib.testbeds import backend_for

    with CriClient(ihandle.socket, api="v1alpha2", timeout_s=10) as cri:
        v = cri.version()
    assert v.api == "v1alpha2" and v.runtime_version.startswith("v1.3.10-fastiov-local")
    profile = load_profile("smoke").model_copy(update={"ablation_networks": ["none", "bridge", "macvlan", "hostdev"],
                                                       "ablation_concurrency": [4]})
    run = create_run_dir(itb, profile, results_root=tmp_path, facts=backend_for(itb).facts())
    result = run_profile_sweep(backend_for(itb), run, profile, "ablation")
    assert {r.status for r in result.records} == {"ok"}
    df = pod_stages(run.path)
    assert set(df["variant"]) == {"none", "bridge", "macvlan", "hostdev"}
    assert df["sandbox_id"].nunique() == len(result.records) == 16
    by_mode = df.groupby("variant")["stage"].apply(set)
    assert "CNI_md_add_cni" in by_mode["hostdev"] and "CNI_md_add_cni" in by_mode["bridge"]
    assert "CNI_md" not in by_mode["none"]  # host network: no CNI call at all
    assert local_testbed.pod_leftovers(itb) == []
    assert not Path("/home/cni").exists()  # the records' hard-coded path stayed in the work dir


@needs_local_testbed
@needs_build_inputs
@pytest.mark.slow
def test_an_interrupted_round_with_the_instrumented_containerd_leaves_nothing_behind(itb, ihandle, tmp_path):
    yaml_path = write_testbed_yaml(itb, tmp_path / "testbed.yaml")
    driver = subprocess.Popen([sys.executable, "-m", "fastiov_lib", "bench", "--testbed", str(yaml_path),
                               "--concurrency", "8", "--repeats", "3", "--network", "bridge,hostdev",
                               "--out", str(tmp_path / "run")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        with CriClient(ihandle.socket, api="v1alpha2", timeout_s=10) as cri:
            while not cri.list_pod_sandboxes() and time.monotonic() < deadline:
                assert driver.poll() is None, "driver ended before any sandbox existed"
                time.sleep(0.02)
        driver.send_signal(signal.SIGKILL)
    finally:
        driver.wait(10)
    assert local_testbed.pod_leftovers(itb), "the kill should have left pods behind"
    out = subprocess.run([sys.executable, "-m", "fastiov_lib", "testbed", "cleanup", "--testbed", str(yaml_path)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert local_testbed.pod_leftovers(itb) == []
    with CriClient(ihandle.socket, api="v1alpha2", timeout_s=10) as cri:
        assert cri.list_pod_sandboxes() == []
    assert all(p.in_host_netns for p in local_testbed.hostdev_pool(itb))
    p = local_testbed.paths_for(itb)
    assert not any(p.netns_dir.iterdir())
    # a down stops containerd; its mount namespace and every netns mount go with its last process
    local_testbed.down(itb)
    assert our_links(PREFIX) == [] and not local_cleanup.mounts_under(p.work_dir)
    assert instrumented.binary(itb).is_file()  # the build stays for the next bring-up


# ------------------------------------------------------------------ the real host's containerd behaviour, for real

@pytest.fixture
def live(itb):
    """The instrumented testbed up (again: the interruption test above takes it down)."""
    return local_testbed.ensure_up(itb)


def _reset_mode(itb, socket: Path) -> None:
    """Back to the bridge mode whatever a test left in the one conf_dir."""
    marker = instrumented.active_conf_dir(itb).parent / instrumented.ACTIVE_MODE_FILE
    marker.unlink(missing_ok=True)
    instrumented.activate_mode(itb, local_testbed.conflist_for(itb, "bridge"), "bridge", socket)


@needs_local_testbed
@needs_build_inputs
@pytest.mark.slow
def test_tenant_args_reach_the_cni_plugin_as_strings_and_concurrent_pods_get_their_own_netns(itb, live, tmp_path):
    """patches 0002 (fastiov-cni reads tenantID/tenantPodIndex as strings) and 0003 (a netns per pod)."""
    import json
    from concurrent.futures import ThreadPoolExecutor

    from fastiov_lib.cri import PodSpec

    p = local_testbed.paths_for(itb)
    seen = tmp_path / "cni-add-stdin.jsonl"
    recorder = p.cni_bin / f"{PREFIX}-tenantrec"  # records what a CNI ADD gets, then is the bridge plugin
    recorder.write_text(f'#!/bin/sh\nin=$(cat)\n[ "$CNI_COMMAND" = ADD ] && printf \'%s\\n\' "$in" >> {seen}\n'
                        f'printf \'%s\' "$in" | exec {p.cni_bin}/bridge\n')
    recorder.chmod(0o755)
    conf = local_testbed.conflist_for(itb, "bridge")
    conf["plugins"][0].update(type=recorder.name, capabilities={"tenantID": True, "tenantPodIndex": True})
    instrumented.activate_mode(itb, conf, "tenant-recorder", live.socket)
    pods = [PodSpec("sandbox-003-002", "test", "u1", log_directory=str(tmp_path / "l1")),
            PodSpec("free-name", "test", "u2", log_directory=str(tmp_path / "l2"),
                    annotations={"fastiov.tenant-id": "0007", "fastiov.tenant-pod-index": "1"}),
            PodSpec("no-tenant", "test", "u3", log_directory=str(tmp_path / "l3"))]
    ids: list[str] = []
    with CriClient(live.socket, api="v1alpha2", timeout_s=60) as cri:
        try:
            with ThreadPoolExecutor(3) as pool:  # at once: with the published pool's shared netns only one succeeds
                ids = list(pool.map(lambda pod: cri.run_pod_sandbox(cri.sandbox_config(pod), "runc-bridge"), pods))
            ips = {cri.pod_sandbox_status(i).ip for i in ids}
        finally:
            for i in ids:
                cri.stop_pod_sandbox(i)
                cri.remove_pod_sandbox(i)
            recorder.unlink()
            _reset_mode(itb, live.socket)
    assert len(ips) == 3 and "" not in ips
    configs = [json.loads(line).get("runtimeConfig", {}) for line in seen.read_text().splitlines()]
    runtime = {rc.get("tenantID"): rc for rc in configs}
    assert runtime["3"] == {"tenantID": "3", "tenantPodIndex": "2"}  # strings, leading zeros dropped
    assert runtime["7"] == {"tenantID": "7", "tenantPodIndex": "1"}
    assert None in runtime and runtime[None] == {}  # neither name nor annotations: no tenant args
    assert all(isinstance(v, str) for r in runtime.values() for v in r.values())


@needs_local_testbed
@needs_build_inputs
@pytest.mark.slow
def test_containerd_1_3_loads_only_the_first_conflist_until_the_shadowing_one_is_moved_aside(itb, live, tmp_path):
    """What the real host's variant switch relies on: Status reloads, the first file wins, oldconfs/ restores."""
    import json

    from fastiov_lib.config import FastiovHostSettings
    from fastiov_lib.testbeds.fastiov_host import cni_conf

    conf_dir = instrumented.active_conf_dir(itb)
    for old in conf_dir.glob("*.conflist"):
        old.unlink()
    ours = local_testbed.conflist_for(itb, "bridge")
    ours["name"] = "fti-artifact-net"
    ours_text = json.dumps(ours, indent=2)
    (conf_dir / "10-fastiov-artifact.conflist").write_text(ours_text)
    shadow = {**ours, "name": "containerd-net"}  # what cri-containerd-cni's tarball installs
    (conf_dir / "10-containerd-net.conflist").write_text(json.dumps(shadow))
    s = FastiovHostSettings(pfs=["0000:e3:00.0"], cni_conf_dir=conf_dir)
    try:
        with pytest.raises(cni_conf.CniConfError, match="active network is 'containerd-net'.*10-containerd-net.conflist"):
            cni_conf.reload_and_verify(live.socket, "v1alpha2", ours_text, conf_dir)
        results = cni_conf.move_aside_step(s, Path("/"), "10-fastiov-artifact.conflist").apply(True, tmp_path / "bk")
        assert [r.status for r in results] == ["done"]
        assert (tmp_path / "bk" / str(conf_dir / "10-containerd-net.conflist").lstrip("/")).is_file()
        assert cni_conf.reload_and_verify(live.socket, "v1alpha2", ours_text, conf_dir) == "fti-artifact-net"
        # a variant's new conflist under the same name: loaded on the next Status, as the round hooks do
        other = json.dumps({**ours, "name": "fti-other-variant"})
        (conf_dir / "10-fastiov-artifact.conflist").write_text(other)
        assert cni_conf.reload_and_verify(live.socket, "v1alpha2", other, conf_dir) == "fti-other-variant"
        assert cni_conf.restore_moved(s, Path("/")) == [str(conf_dir / "10-containerd-net.conflist")]
        assert json.loads((conf_dir / "10-containerd-net.conflist").read_text())["name"] == "containerd-net"
        assert not (conf_dir / "oldconfs" / cni_conf.MOVED_RECORD).exists()
    finally:
        (conf_dir / "10-containerd-net.conflist").unlink(missing_ok=True)
        (conf_dir / "10-fastiov-artifact.conflist").unlink(missing_ok=True)
        _reset_mode(itb, live.socket)


@needs_build_inputs
@pytest.mark.slow
def test_the_real_host_containerd_config_is_read_by_containerd_1_3_with_the_originals_settings(itb, tmp_path):
    import tomllib

    from fastiov_lib.testbeds.fastiov_host.runtime_config import render_containerd_config
    from fastiov_lib.config import load_testbed

    host = load_testbed(REPO_ROOT / "testbeds" / "fastiov-e810.example.yaml")
    cfg = tmp_path / "config.toml"
    cfg.write_text(render_containerd_config(host.fastiov))
    dump = subprocess.run([str(instrumented.ensure_built(itb)), "--config", str(cfg), "config", "dump"],
                          capture_output=True, text=True, timeout=60)
    assert dump.returncode == 0, dump.stderr
    data = tomllib.loads(dump.stdout)
    cri = data["plugins"]["io.containerd.grpc.v1.cri"]
    assert data["oom_score"] == 0 and cri["stats_collect_period"] == 10 and cri["restrict_oom_score_adj"] is False
    assert cri["cni"]["max_conf_num"] == 1 and cri["cni"]["conf_dir"] == "/etc/cni/net.d"
    assert cri["containerd"]["runtimes"]["kata"]["runtime_type"] == "io.containerd.kata3.v2"


@needs_local_testbed
@needs_build_inputs
@pytest.mark.slow
def test_the_real_hosts_pod_images_are_built_from_c_and_imported_without_a_registry(itb, live, tmp_path):
    from fastiov_lib.config import load_testbed
    from fastiov_lib.testbeds.fastiov_host.build.builder import Builder
    from fastiov_lib.testbeds.fastiov_host.build.pod_images import POD_IMAGES, pod_images_component

    host = load_testbed(REPO_ROOT / "testbeds" / "fastiov-e810.example.yaml",
                        overrides={"allow_host_changes": True, "fastiov.containerd_socket": str(live.socket),
                                   "fastiov.containerd_restart": ["true"]})  # the testbed's containerd runs already
    builder = Builder(host, components=[pod_images_component()], build_dir=tmp_path / "bd", root=Path("/"))
    rows = builder.apply()
    assert [(r["step"], r["status"]) for r in rows] == [("build", "done"), ("install", "done")]
    with CriClient(live.socket, api="v1alpha2", timeout_s=30) as cri:
        assert all(cri.image_present(ref) for ref in POD_IMAGES.values())
    assert [r["status"] for r in builder.apply()] == ["skipped (stamp)", "skipped (stamp)"]
