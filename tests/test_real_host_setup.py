"""A real FastIOV host's set-up as the original had it (issue 18 items 1-5, 12): the conflist containerd
really loads, the vanilla QEMU, the containerd settings, kata-static's files left alone, startup CPUs.

Against generated fake trees; what needs a real containerd 1.3 is in test_local_instrumented.py,
what needs the upstream trees in test_build_offline_sources.py.
"""
from __future__ import annotations

import json
import tomllib
from ipaddress import IPv4Interface
from pathlib import Path

import pytest

from fastiov_lib.commands.cli import main
from fastiov_lib.config import REPO_ROOT, load_testbed
from fastiov_lib.testbeds.fastiov_host.fake_host import build_fake_host, spec_for_testbed
from fastiov_lib.testbeds.fastiov_host import cni_conf, runtime_config
from fastiov_lib.testbeds.fastiov_host.build import component_table, components
from fastiov_lib.testbeds.fastiov_host.build.builder import Builder
from fastiov_lib.testbeds.fastiov_host.build.manifest import fetch_entry, load_patch_series, sha256_file
from fastiov_lib.testbeds.fastiov_host.startup_cpus import confine_overhead, startup_cpus_step

EXAMPLE = REPO_ROOT / "testbeds" / "fastiov-e810.example.yaml"
ORIGINAL = Path(REPO_ROOT).parent / "shared" / "fixtures" / "upstream-artifact"
SHADOW = '{"cniVersion": "0.3.1", "name": "containerd-net", "plugins": [{"type": "bridge"}]}'


@pytest.fixture
def host(tmp_path):
    tb = load_testbed(EXAMPLE, overrides={"allow_host_changes": True})
    root = build_fake_host(tmp_path / "root", spec_for_testbed(tb), tb)
    return tb.model_copy(update={"sys_root": root}), root


def _conf_dir(root: Path) -> Path:
    return root / "etc/cni/net.d"


# ------------------------------------------------------------------ the conflist containerd 1.3 loads

def test_host_check_fails_naming_a_conflist_that_sorts_before_the_artifacts(host, tmp_path, capsys):
    tb, root = host
    (_conf_dir(root) / "10-containerd-net.conflist").write_text(SHADOW)
    rc = main(["host-check", "--testbed", str(EXAMPLE), "--root", str(root)])
    out = capsys.readouterr().out
    assert rc == 1
    line = next(ln for ln in out.splitlines() if "config.cni" in ln)
    assert line.startswith("FAIL") and "/etc/cni/net.d/10-containerd-net.conflist sorts before 10-fastiov-artifact" in line
    (_conf_dir(root) / "10-containerd-net.conflist").unlink()
    (_conf_dir(root) / "05-other.conf").write_text(SHADOW)  # a .conf counts too (go-cni reads .conf, .conflist, .json)
    (_conf_dir(root) / "99-later.conflist").write_text(SHADOW)  # sorts after ours: never loaded, fine
    checks = {c.name: c for c in __import__("fastiov_lib.testbeds", fromlist=["backend_for"]).backend_for(tb).checks()}
    assert checks["config.cni"].status == "fail" and "05-other.conf" in checks["config.cni"].seen


def test_host_check_passes_when_the_artifacts_conflist_is_first_and_fails_when_it_is_missing(host):
    from fastiov_lib.testbeds.fastiov_host.host_checks import check_cni_conf_dir

    tb, root = host
    (_conf_dir(root) / "99-later.conflist").write_text(SHADOW)
    check = check_cni_conf_dir(root, tb.fastiov)
    assert check.status == "pass" and "1 later file" in check.seen
    (_conf_dir(root) / runtime_config.CNI_CONFLIST).unlink()
    check = check_cni_conf_dir(root, tb.fastiov)
    assert check.status == "fail" and "10-fastiov-artifact.conflist missing; containerd loads /etc/cni/net.d/99-later" in check.seen


def test_variant_set_moves_a_shadowing_conflist_aside_with_a_backup_and_restore_puts_it_back(host, tmp_path, capsys):
    tb, root = host
    shadow = _conf_dir(root) / "10-containerd-net.conflist"
    shadow.write_text(SHADOW)
    rows = runtime_config.plan_variant(tb, "vanilla", root)
    assert any(r["action"] == "move" and r["target"] == str(shadow) for r in rows)
    assert shadow.exists()  # planning changes nothing
    res = runtime_config.set_variant(tb, "vanilla", root=root, backup_dir=tmp_path / "bk")
    assert res.moved_aside == [str(shadow)] and not shadow.exists()
    assert (_conf_dir(root) / "oldconfs/10-containerd-net.conflist").read_text() == SHADOW
    assert (tmp_path / "bk" / str(shadow).lstrip("/")).read_text() == SHADOW
    moved = cni_conf.moved_files(_conf_dir(root))
    assert [m["name"] for m in moved] == ["10-containerd-net.conflist"] and moved[0]["from"] == str(shadow)
    assert cni_conf.loaded_first(_conf_dir(root)).name == runtime_config.CNI_CONFLIST
    # idempotent: a second switch has nothing to move
    assert runtime_config.set_variant(tb, "fastiov", root=root, backup_dir=tmp_path / "bk").moved_aside == []
    yaml_path = tmp_path / "tb.yaml"
    yaml_path.write_text(EXAMPLE.read_text().replace("allow_host_changes: false", "allow_host_changes: true"))
    assert main(["variant", "restore-cni", "--testbed", str(yaml_path), "--root", str(root)]) == 0
    assert f"restored {shadow}" in capsys.readouterr().out and shadow.read_text() == SHADOW
    assert cni_conf.moved_files(_conf_dir(root)) == []


def test_restore_puts_back_only_what_it_moved_and_names_what_it_cannot(host):
    tb, root = host
    shadow = _conf_dir(root) / "10-containerd-net.conflist"
    shadow.write_text(SHADOW)
    cni_conf.move_aside(shadow)
    shadow.write_text('{"name": "someone elses"}')  # something else took its place since
    with pytest.raises(cni_conf.CniConfError, match="10-containerd-net.conflist exists again"):
        cni_conf.restore_moved(tb.fastiov, root)
    assert json.loads(shadow.read_text())["name"] == "someone elses"
    assert len(cni_conf.moved_files(_conf_dir(root))) == 1  # still recorded, still in oldconfs/
    shadow.unlink()
    assert cni_conf.restore_moved(tb.fastiov, root) == [str(shadow)]
    with pytest.raises(cni_conf.CniConfError, match="exists with other content"):
        (_conf_dir(root) / "oldconfs/10-containerd-net.conflist").write_text("{}")
        cni_conf.move_aside(shadow)


def test_deploying_the_configs_moves_shadowing_conflists_aside(host, tmp_path):
    tb, root = host
    (_conf_dir(root) / "10-containerd-net.conflist").write_text(SHADOW)
    results = runtime_config.deploy_configs(tb, root, tmp_path / "bk")
    assert any(r["action"] == "move" and r["status"] == "done" for r in results)
    assert cni_conf.shadowing(_conf_dir(root), runtime_config.CNI_CONFLIST) == []


def test_the_loaded_network_is_read_from_containerds_verbose_status():
    ours = runtime_config.render_conflist(runtime_config._settings(None), "sriov")

    def info(*confs: str) -> dict[str, str]:
        nets = [{"Config": {"Name": "cni-loopback", "Source": "{}"}, "IFName": "lo"}]
        nets += [{"Config": {"Name": json.loads(c)["name"], "Source": c}, "IFName": "eth0"} for c in confs]
        return {"cniconfig": json.dumps({"PluginConfDir": "/etc/cni/net.d", "Networks": nets})}

    assert cni_conf.check_loaded(info(ours), ours, Path("/nonexistent")) == "fastiov-net"
    with pytest.raises(cni_conf.CniConfError, match="active network is 'containerd-net', not 'fastiov-net'"):
        cni_conf.check_loaded(info(SHADOW), ours, Path("/nonexistent"))
    with pytest.raises(cni_conf.CniConfError, match="loaded no network config"):
        cni_conf.check_loaded(info(), ours, Path("/nonexistent"))
    with pytest.raises(cni_conf.CniConfError, match="no 'cniconfig'"):
        cni_conf.check_loaded({}, ours, Path("/nonexistent"))


def test_every_variants_conflist_has_its_own_network_name():
    s = runtime_config._settings(None)
    names = {net: json.loads(runtime_config.render_conflist(s, net))["name"] for net in ("sriov", "ipvtap", "none")}
    assert len(set(names.values())) == 3  # so the loaded network tells which variant's conflist is active


# ------------------------------------------------------------------ vanilla's QEMU, our patches

def test_vanilla_qemu_is_the_patched_qemu_with_the_skip_reverted_and_a_stock_build_stays_available(tmp_path):
    series = load_patch_series()
    tb = load_testbed(EXAMPLE)
    builder = Builder(tb, build_dir=tmp_path / "bd")
    patches = lambda name: [r["what"].split()[3] for r in builder.plan()  # noqa: E731
                            if r["component"] == name and r["step"] == "patch"]
    assert patches("qemu") == ["0001-qemu.patch"]
    assert patches("qemu-noskip") == ["0001-qemu.patch", "0004-qemu-noskip-maps-guest-ram.patch"]
    stock = component_table.qemu_component("qemu-stock", "stock", "/x", flavour="stock")
    plain = Builder(tb, build_dir=tmp_path / "bd", components=[stock]).plan()
    assert not [r for r in plain if r["step"] == "patch"]  # 0001 only read for kata.cfg's options
    own = series.get("0004-qemu-noskip-maps-guest-ram.patch")
    text = own.own_path().read_text()
    assert own.sha256 == sha256_file(own.own_path()) and "-    if (vfio_listener_region_add_skip_mem0(section)) {" in text
    assert tb.fastiov.qemu_vanilla.name == "qemu-system-x86_64-noskip"
    with pytest.raises(components.BuildError, match="flavour 'patched'"):
        component_table.qemu_component("q", "q", "/x", flavour="patched")  # type: ignore[arg-type]


def test_our_patches_apply_to_the_real_host_and_the_local_testbed_alike():
    series = load_patch_series()
    for scope in ("fastiov", "local"):
        assert [p.name for p in series.for_component("containerd", scope)] == [
            "0001-containerd.patch", "0002-containerd-tenant-capability-args.patch", "0003-containerd-per-pod-netns.patch"]
    for p in series.patches:
        if p.file:
            assert p.sha256 == sha256_file(p.own_path()) and p.size == p.own_path().stat().st_size, p.name
    tenant = series.get("0002-containerd-tenant-capability-args.patch").own_path().read_text()
    assert "func sandboxTenant(config *runtime.PodSandboxConfig) (string, string, bool)" in tenant
    assert "fix_metadb" in series.get("0003-containerd-per-pod-netns.patch").own_path().read_text()  # not needed


def test_an_outdated_cached_copy_of_our_own_patch_is_replaced_by_the_repositorys(tmp_path):
    entry = load_patch_series().get("0003-containerd-per-pod-netns.patch")
    (tmp_path / entry.cache_name()).write_text("an earlier version of the patch\n")
    res = fetch_entry(entry, tmp_path)  # our own patches are copied from patches/, never downloaded
    assert res.sha256 == entry.sha256 and (tmp_path / entry.cache_name()).read_bytes() == entry.own_path().read_bytes()


# ------------------------------------------------------------------ containerd settings, kata-static, CPUs

def test_containerd_config_carries_the_originals_settings():
    if not (ORIGINAL / "containerd_config.toml").is_file():
        pytest.skip(f"no fixture of the original's containerd config in {ORIGINAL}")
    original = tomllib.loads((ORIGINAL / "containerd_config.toml").read_text())
    ours = tomllib.loads(runtime_config.render_containerd_config(load_testbed(EXAMPLE).fastiov))
    assert ours["oom_score"] == original["oom_score"] == 0
    o_cri, cri = original["plugins"]["io.containerd.grpc.v1.cri"], ours["plugins"]["io.containerd.grpc.v1.cri"]
    for key in ("stats_collect_period", "restrict_oom_score_adj", "disable_tcp_service", "stream_server_address",
                "stream_server_port", "enable_selinux", "max_container_log_line_size", "max_concurrent_downloads"):
        assert cri[key] == o_cri[key], key
    # the one deliberate difference: a pause image built here and imported, so an offline host pulls nothing
    assert o_cri["sandbox_image"] == "registry.k8s.io/pause:3.8" and cri["sandbox_image"] == "fastiov.local/fiov-pause:1"
    assert cri["cni"]["max_conf_num"] == o_cri["cni"]["max_conf_num"] == 1


# the files kata-static 3.1.3 ships below opt/kata that an artifact install could hit
KATA_STATIC_FILES = ["bin/qemu-system-x86_64", "bin/containerd-shim-kata-v2", "bin/kata-runtime",
                     "share/kata-containers/kata-containers.img", "share/kata-containers/kata-containers-initrd.img",
                     "share/kata-containers/vmlinux.container", "share/kata-containers/vmlinuz.container",
                     "share/kata-containers/vmlinux-5.19.2-96", "share/kata-containers/vmlinuz-5.19.2-96",
                     "share/defaults/kata-containers/configuration-qemu.toml", "libexec/virtiofsd"]


def _kata_static_tree(build_dir: Path) -> Path:
    tree = build_dir / "kata-static" / "src"
    for rel in KATA_STATIC_FILES:
        (tree / "opt/kata" / rel).parent.mkdir(parents=True, exist_ok=True)
        (tree / "opt/kata" / rel).write_text("kata-static\n")
    return tree


def test_the_artifacts_qemu_kernels_and_images_never_overwrite_kata_statics_files(tmp_path):
    tb = load_testbed(EXAMPLE)
    s = tb.fastiov
    tree = _kata_static_tree(tmp_path / "bd")
    for path in (s.qemu_fastiov, s.qemu_vanilla, s.guest_kernel_fastiov, s.guest_kernel_vanilla, s.image_async,
                 s.image_sync):
        assert components.kata_static_file(path, s.kata_prefix, tree) is None, path
    old = load_testbed(EXAMPLE, overrides={"fastiov.qemu_fastiov": "/opt/kata3/bin/qemu-system-x86_64"})
    builder = Builder(old, build_dir=tmp_path / "bd")
    check = builder.component("qemu").install[0]
    with pytest.raises(components.BuildError, match="qemu-system-x86_64 is kata-static's own file"):
        check.call(builder, builder.component("qemu"), None)
    ok = Builder(tb, build_dir=tmp_path / "bd")
    assert "not one of kata-static's files" in ok.component("qemu").install[0].call(ok, ok.component("qemu"), None)


@pytest.mark.parametrize("layout", ["v1", "v2"])
def test_startup_cpus_confine_katas_overhead_cgroup_as_set_startup_cpu_sh(tmp_path, layout):
    tb = load_testbed(EXAMPLE)
    root = build_fake_host(tmp_path / "root", spec_for_testbed(tb, cgroup=layout), tb)
    plan = startup_cpus_step(root, 12).plan()
    assert plan[-1]["value"] == "0-11" and plan[-1]["target"].endswith("kata_overhead/cpuset.cpus")
    done = confine_overhead(root, 12)
    group = root / "sys/fs/cgroup" / ("cpuset" if layout == "v1" else "") / "kata_overhead"
    assert (group / "cpuset.cpus").read_text() == "0-11" and done["before"] == ""
    if layout == "v1":
        assert (group / "cpuset.mems").read_text() == "0-1"  # the parent's memory nodes
    else:
        assert "cpuset" in (root / "sys/fs/cgroup/cgroup.subtree_control").read_text()
    again = confine_overhead(root, 12)
    assert {a["status"] for a in again["actions"]} == {"skipped"}  # idempotent
    bare = build_fake_host(tmp_path / "bare", spec_for_testbed(tb, cgroup="none"), tb)
    with pytest.raises(RuntimeError, match="neither cgroup v2 nor a v1 cpuset"):
        startup_cpus_step(bare, 12)


# ------------------------------------------------------------------ the two host kernels' builds (item 8)

def test_the_fastiov_module_waits_for_the_patched_kernel_and_its_stamps_know_the_running_kernel(tmp_path):
    tb = load_testbed(EXAMPLE, overrides={"allow_host_changes": True})
    root = build_fake_host(tmp_path / "root", spec_for_testbed(tb, kernel_release="6.4.0-stock"), tb)
    tb = tb.model_copy(update={"sys_root": root})
    comps = component_table.fastiov_components(tb.fastiov)
    module = next(c for c in comps if c.name == "fastiov-module")
    builder = Builder(tb, build_dir=tmp_path / "bd", components=[c for c in comps if c.name in ("linux", module.name)],
                      root=root)
    builder.components = [module]  # the full component list is fastiov-module alone here
    rows = builder.apply()  # a full build on the stock kernel: the module waits, nothing else is blocked
    assert rows == [{"component": "fastiov-module", "step": "all",
                     "status": "skipped: needs the patched kernel booted (this host runs 6.4.0-stock); reboot "
                               "into it, then `build apply --component fastiov-module`"}]
    with pytest.raises(components.BuildError, match="fastiov-module: needs the patched kernel booted"):
        builder.apply(only=["fastiov-module"])
    key = lambda step: builder._step_key(module, step)  # noqa: E731
    before = (key("build"), key("install"))
    (root / "proc/sys/kernel/osrelease").write_text("6.4.0-rc5test\n")
    assert key("build") != before[0]  # built again for another kernel
    build_key = key("build")
    (root / "proc/sys/kernel/random").mkdir(parents=True, exist_ok=True)
    (root / "proc/sys/kernel/random/boot_id").write_text("a-new-boot\n")
    assert key("build") == build_key and key("install") != before[1]  # loaded again after every boot


def test_host_kernels_build_from_the_running_config_without_the_distributions_signing_keys():
    tb = load_testbed(EXAMPLE)
    comps = {c.name: c for c in component_table.fastiov_components(tb.fastiov)}
    for name, suffix in (("linux", "-rc5test"), ("linux-vanilla", "-stock")):
        c = comps[name]
        argv = [cmd.argv for cmd in c.configure]
        assert argv[1] == ("scripts/config", "--set-str", "SYSTEM_TRUSTED_KEYS", "",
                           "--set-str", "SYSTEM_REVOCATION_KEYS", "")
        assert argv[2] == ("make", "olddefconfig") and c.edits[0].what == f"Makefile: EXTRAVERSION = {suffix}"
        assert c.edits[0].apply("VERSION = 6\nEXTRAVERSION = -rc5\n", type("C", (), {"settings": tb.fastiov})) \
            == f"VERSION = 6\nEXTRAVERSION = {suffix}\n"
    assert comps["linux-vanilla"].source == "linux-vanilla-src"


def test_host_check_names_the_missing_kernel_build_packages(tmp_path):
    from fastiov_lib.testbeds.fastiov_host.host_checks import check_kernel_build_deps

    check = check_kernel_build_deps(tmp_path)  # an empty tree has none of them
    assert check.status == "warn" and "flex, bison, bc, dwarves, libelf-dev, libssl-dev" in check.seen
    for rel in ("usr/bin/flex", "usr/bin/bison", "usr/bin/bc", "usr/bin/pahole", "usr/include/gelf.h",
                "usr/include/openssl/opensslv.h"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("")
    assert check_kernel_build_deps(tmp_path).status == "pass"


def test_the_storage_address_must_be_the_pods_gateway_on_a_named_interface():
    from fastiov_lib.testbeds.fastiov_host.storage_address import check_storage_address

    s = load_testbed(EXAMPLE).fastiov
    assert check_storage_address(s, "10.88.0.0/16").status == "pass"
    bad = s.model_copy(update={"storage_address": IPv4Interface("10.88.0.7/16")})
    assert "not 10.88.0.1, the address host-local IPAM keeps back" in check_storage_address(bad, "10.88.0.0/16").seen
    away = s.model_copy(update={"storage_address": IPv4Interface("192.168.1.1/24")})
    assert "outside the pods' subnet" in check_storage_address(away, "10.88.0.0/16").seen
    assert check_storage_address(s.model_copy(update={"storage_address": None}), "10.88.0.0/16").status == "warn"


def test_the_vanilla_guest_kernel_is_built_like_fastiovs_without_its_patch(tmp_path):
    tb = load_testbed(EXAMPLE)
    rows = [r for r in Builder(tb, build_dir=tmp_path / "bd").plan() if r["component"].startswith("guest-kernel")]
    steps = {(r["component"], r["step"]) for r in rows}
    assert ("guest-kernel", "patch") in steps and ("guest-kernel-vanilla", "patch") not in steps
    vanilla = [r["what"] for r in rows if r["component"] == "guest-kernel-vanilla"]
    assert "./build-kernel.sh -v 5.19.2 -k kata-linux-5.19.2-96-vanilla setup" in vanilla  # its own kernel tree
    assert any(w.endswith(str(tb.fastiov.guest_kernel_vanilla)) and "bzImage" in w for w in vanilla)
    assert any(w.endswith(f"{tb.fastiov.guest_kernel_vanilla}.config") for w in vanilla)  # host-check reads it
