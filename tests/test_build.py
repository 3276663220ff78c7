"""The build pipeline on a real tiny source tree: git apply, make, stamps, resume, provenance."""
from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import pytest

from fastiov_lib.testbeds.fastiov_host.build import builder as build

from fastiov_lib.testbeds.fastiov_host.build import components, manifest, plan_format
from fastiov_lib.testbeds.fastiov_host.build.builder import Builder
from fastiov_lib.testbeds.fastiov_host.build.components import BuildError, Component, SourceEdit, cmd
from fastiov_lib import config
from fastiov_lib.config import FastiovHostSettings, load_testbed
from fastiov_lib.hw.host_steps import HostChangesNotAllowed

MAKEFILE = """VERSION = 1
EXTRAVERSION =
all: hello
hello: hello.c
\tcc -o hello hello.c
"""
HELLO = '#include <stdio.h>\nint main(void) { puts("hello plain"); return 0; }\n'


def _tree_digest(tree: Path) -> dict[str, str]:
    return {str(p.relative_to(tree)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(tree.rglob("*")) if p.is_file()}


@pytest.fixture
def project(tmp_path):
    """A release tarball, a real patch made with diff, and manifest/series files pointing at them."""
    src = tmp_path / "upstream" / "hello-1.0"
    src.mkdir(parents=True)
    (src / "Makefile").write_text(MAKEFILE)
    (src / "hello.c").write_text(HELLO)
    new = tmp_path / "upstream" / "hello-new"
    new.mkdir()
    (new / "Makefile").write_text(MAKEFILE)
    (new / "hello.c").write_text(HELLO.replace("hello plain", "hello fastiov"))
    diff = subprocess.run(["diff", "-u", "hello-1.0/hello.c", "hello-new/hello.c"], cwd=tmp_path / "upstream",
                          capture_output=True, text=True)
    patch = tmp_path / "0001-hello.patch"
    patch.write_text(diff.stdout)
    bad = tmp_path / "0002-bad.patch"
    bad.write_text(diff.stdout.replace("hello plain", "text that is not there"))
    tarball = tmp_path / "hello-1.0.tar.gz"
    subprocess.run(["tar", "-czf", str(tarball), "-C", str(tmp_path / "upstream"), "hello-1.0"], check=True)
    (tmp_path / "binaries.yaml").write_text(
        f"version: 1\nentries:\n  - name: hello-src\n    role: test source\n    version: '1.0'\n"
        f"    kind: source\n    url: file://{tarball}\n")
    sha = hashlib.sha256(patch.read_bytes()).hexdigest()
    (tmp_path / "series.yaml").write_text(
        f"version: 1\nartifact_repo: local\nartifact_commit: {'a' * 40}\npatches:\n"
        f"  - name: 0001-hello.patch\n    component: hello\n    upstream: hello\n    pin: '1.0'\n"
        f"    url: file://{patch}\n    sha256: {sha}\n    strip: 1\n")
    root = tmp_path / "root"
    root.mkdir()
    settings = FastiovHostSettings(pfs=["0000:e3:00.0"], build_dir=tmp_path / "build", cache_dir=tmp_path / "cache",
                                   build_jobs=1)
    testbed = config.Testbed(name="t", kind="fastiov", allow_host_changes=True, sys_root=root, fastiov=settings)
    return tmp_path, testbed


def _component(gate: Path | None = None, pre: tuple = ()) -> Component:
    return Component(
        "hello", "tiny C program", "hello-src",
        edits=(SourceEdit("Makefile: EXTRAVERSION = -rc5test", "Makefile",
                          lambda text, ctx: components.set_makefile_extraversion(text, ctx.settings.expected_kernel_suffix)),),
        configure=(cmd("test", "-f", "Makefile"),),
        build=pre + ((cmd("test", "-e", str(gate)),) if gate else ()) + (cmd("make"),),
        install=(cmd("install", "-D", "-m", "0755", "hello", "{root}/usr/local/bin/hello"),))


def _builder(tmp_path: Path, testbed: config.Testbed, comp: Component, run: Path | None = None, series: str = "series.yaml"):
    return Builder(testbed, run_path=run, components=[comp],
                   manifest=manifest.load_binaries_manifest(tmp_path / "binaries.yaml"),
                   series=manifest.load_patch_series(tmp_path / series))


def test_build_pipeline_patches_builds_and_installs_a_real_tree(project):
    tmp_path, testbed = project
    run = tmp_path / "run"
    b = _builder(tmp_path, testbed, _component(), run)
    assert {r["state"] for r in b.plan()} == {"to do"}
    results = b.apply()
    assert [r["step"] for r in results] == list(build.STEPS)
    out = subprocess.run([str(testbed.sys_root / "usr/local/bin/hello")], capture_output=True, text=True)
    assert out.stdout.strip() == "hello fastiov"
    tree = testbed.fastiov.build_dir / "hello" / "src"
    assert "EXTRAVERSION = -rc5test" in (tree / "Makefile").read_text()
    for step in build.STEPS:
        assert (run / "logs" / "build" / "hello" / f"{step}.log").is_file()
    prov = json.loads((run / build.PROVENANCE_FILE).read_text())
    steps = prov["components"]["hello"]["steps"]
    assert steps["fetch"]["source"]["status"] == manifest.PINNED_ON_FIRST_USE
    assert steps["verify"]["patches"][0]["status"] == "verified"
    assert steps["patch"]["patches"] == ["0001-hello.patch"] and steps["patch"]["edits"]
    assert "make" in prov["toolchain"] and prov["toolchain"]["patch"].startswith("GNU patch")
    assert {r["state"] for r in b.plan()} == {"done"}
    again = b.apply()
    assert {r["status"] for r in again} == {"skipped (stamp)"}


def test_patch_that_does_not_apply_leaves_the_tree_as_it_was(project):
    tmp_path, testbed = project
    series = (tmp_path / "series.yaml").read_text()
    bad = tmp_path / "0002-bad.patch"
    series += (f"  - name: 0002-bad.patch\n    component: hello\n    upstream: hello\n    pin: '1.0'\n"
               f"    url: file://{bad}\n    strip: 1\n")
    (tmp_path / "series-bad.yaml").write_text(series)
    b = _builder(tmp_path, testbed, _component(), series="series-bad.yaml")
    b.apply(through="unpack")
    tree = testbed.fastiov.build_dir / "hello" / "src"
    before = _tree_digest(tree)
    with pytest.raises(BuildError, match="(?s)0002-bad.patch does not apply.*tree left as it was"):
        b.apply(through="patch")
    assert _tree_digest(tree) == before  # 0001 was applied, then rolled back; no edit written
    assert not (testbed.fastiov.build_dir / "hello" / ".stamps" / "patch").exists()


def test_interrupted_build_resumes_from_the_failed_step(project):
    tmp_path, testbed = project
    gate = tmp_path / "allow-build"
    comp = _component(gate=gate)
    b = _builder(tmp_path, testbed, comp, tmp_path / "run")
    with pytest.raises(BuildError, match=r"hello build: .* exited with 1; log: .*build\.log"):
        b.apply()
    done = {r["step"]: r["state"] for r in b.plan()}
    assert done["configure"] == "done" and done["build"] == "to do"
    gate.write_text("")
    results = {r["step"]: r["status"] for r in b.apply()}
    # a second `git apply` of an applied patch would fail: skipping proves the stamps work
    assert results["patch"] == "skipped (stamp)" and results["unpack"] == "skipped (stamp)"
    assert results["build"] == "done" and results["install"] == "done"


def test_install_needs_allow_host_changes_but_build_does_not(project):
    tmp_path, testbed = project
    locked = testbed.model_copy(update={"allow_host_changes": False})
    b = _builder(tmp_path, locked, _component())
    with pytest.raises(HostChangesNotAllowed, match="allow_host_changes"):
        b.apply()
    assert not (testbed.fastiov.build_dir / "hello" / "src").exists()  # refused before any step ran
    b.apply(through="build")
    assert (testbed.fastiov.build_dir / "hello" / "src" / "hello").is_file()
    assert not (testbed.sys_root / "usr/local/bin/hello").exists()


def test_hand_edits_are_code():
    text = 'package utils\n// busPrefix = "0000:aa:"\nvar (\n\tbusPrefix     = "0000:65:"\n\tnumVFs        = 200\n)\n'
    prefix = components.cni_bus_prefix(["0000:e3:00.0", "0000:e3:00.1"])
    assert prefix == "0000:e3:"
    out = components.set_cni_bus_prefix(text, prefix, 200)
    assert '\tbusPrefix     = "0000:e3:"' in out and '// busPrefix = "0000:aa:"' in out
    assert components.set_cni_bus_prefix(text, prefix, 64).count("numVFs        = 64") == 1
    with pytest.raises(BuildError, match="one PCI bus"):
        components.cni_bus_prefix(["0000:e3:00.0", "0000:17:00.0"])
    with pytest.raises(BuildError, match="EXTRAVERSION"):
        components.set_makefile_extraversion("VERSION = 6\n", "-rc5test")
    assert "EXTRAVERSION = -rc5test\n" in components.set_makefile_extraversion("VERSION = 6\nEXTRAVERSION = -rc5\n", "-rc5test")


def test_real_host_plan_lists_every_component_with_source_pin_and_checksum():
    tb = load_testbed("testbeds/fastiov-e810.example.yaml")
    rows = build.build_plan(tb)
    comps = {r["component"] for r in rows}
    assert {"cri-containerd-cni", "kata-static", "containerd", "kata", "linux", "fastiov-module", "qemu",
            "guest-kernel", "guest-image", "fastiov-cni", "runtime-configs"} <= comps
    by_what = {r["what"]: r for r in rows}
    assert by_what["get patch 0001-qemu.patch"]["checksum"] == "pinned in manifest"
    assert by_what["get patch 0001-linux.patch"]["checksum"].startswith("unknown")
    assert any("busPrefix = \"0000:e3:\"" in r["what"] for r in rows)
    assert any("EXTRAVERSION = -rc5test" in r["what"] for r in rows)
    assert all(r["host change"] == "yes" for r in rows if r["step"] == "install")
    text = plan_format.format_build_plan(rows)
    assert "== linux" in text and "release/1.3" in text


def test_build_interrupted_by_ctrl_c_resumes_without_redoing_finished_steps(project):
    tmp_path, testbed = project
    gate = tmp_path / "no-interrupt"
    # the build command sends SIGINT to the builder (as Ctrl-C would) unless the gate exists
    comp = _component(pre=(cmd("sh", "-c", f"test -e {gate} || (kill -INT $PPID; sleep 5)"),))
    b = _builder(tmp_path, testbed, comp, tmp_path / "run")
    with pytest.raises(KeyboardInterrupt):
        b.apply()
    states = {r["step"]: r["state"] for r in b.plan()}
    assert states["patch"] == "done" and states["build"] == "to do" and states["install"] == "to do"
    gate.write_text("")
    results = {r["step"]: r["status"] for r in b.apply()}
    assert results["patch"] == "skipped (stamp)" and results["build"] == "done"
    out = subprocess.run([str(testbed.sys_root / "usr/local/bin/hello")], capture_output=True, text=True)
    assert out.stdout.strip() == "hello fastiov"


def test_git_sources_are_cloned_at_the_ref_and_pinned_on_first_use(project):
    tmp_path, testbed = project
    repo = tmp_path / "gitrepo"
    repo.mkdir()
    git = lambda *a: subprocess.run(["git", "-C", str(repo), *a], check=True, capture_output=True, text=True)  # noqa: E731
    git("init", "-q")
    (repo / "Makefile").write_text(MAKEFILE)
    (repo / "hello.c").write_text(HELLO)
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@example.org", "commit", "-q", "-m", "v1")
    git("tag", "v1")
    commit = git("rev-parse", "HEAD").stdout.strip()
    (tmp_path / "binaries.yaml").write_text(
        "version: 1\nentries:\n  - name: hello-src\n    role: test\n    version: v1\n    kind: source\n"
        f"    git: {{repo: 'file://{repo}', ref: v1, commit: null}}\n")
    b = _builder(tmp_path, testbed, _component(), tmp_path / "run")
    results = b.apply(through="build")
    verify = next(r for r in results if r["step"] == "verify")
    assert verify["source"] == {"commit": commit, "status": manifest.PINNED_ON_FIRST_USE}
    lock = manifest.read_lock(testbed.fastiov.cache_dir)
    assert lock["hello-src"]["commit"] == commit
    with pytest.raises(manifest.ManifestError, match="moved to"):
        manifest.record_git_pin(testbed.fastiov.cache_dir, "hello-src", f"file://{repo}", "v1", "f" * 40)
    with pytest.raises(manifest.ManifestError, match="manifest pins"):
        manifest.record_git_pin(testbed.fastiov.cache_dir, "x", "r", "v1", commit, expected="e" * 40)


def test_a_changed_input_reruns_only_the_steps_that_use_it(project):
    tmp_path, testbed = project
    comp = Component("hello", "tiny C program", "hello-src", build=(cmd("make", "-j{jobs}"),))
    _builder(tmp_path, testbed, comp).apply(through="build")
    more_jobs = testbed.model_copy(update={"fastiov": testbed.fastiov.model_copy(update={"build_jobs": 2})})
    states = {r["step"]: r["state"] for r in _builder(tmp_path, more_jobs, comp).plan()}
    assert states == {"fetch": "done", "verify": "done", "unpack": "done", "patch": "done", "build": "to do"}
