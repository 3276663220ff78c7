"""host-check covers what the original's components need, and says whether the kernel has per-VF device sets."""
from __future__ import annotations

import gzip
import socket

import pytest

from fastiov_lib.config import load_testbed
from fastiov_lib.testbeds.fastiov_host.fake_host import build_fake_host, spec_for_testbed
from fastiov_lib.testbeds import backend_for
from fastiov_lib.testbeds.fastiov_host import host_checks as hc
from fastiov_lib.testbeds.fastiov_host import kernel_facts as kf

EXAMPLE = "testbeds/fastiov-e810.example.yaml"
NEW = ["dirs.components", "barrier.port", "guest.vf-driver", "build.libcurl", "build.go", "kernel.vf-devset"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def host(tmp_path):
    tb = load_testbed(EXAMPLE, overrides={"fastiov.barrier_port": _free_port()})
    root = build_fake_host(tmp_path / "root", spec_for_testbed(tb), tb)
    return tb.model_copy(update={"sys_root": root}), root


def _by_name(tb):
    return {c.name: c for c in backend_for(tb).checks()}


def test_a_set_up_host_passes_the_new_checks(host):
    tb, root = host
    checks = _by_name(tb)
    assert {n: checks[n].status for n in NEW} == dict.fromkeys(NEW, "pass")
    assert "does not carry" in checks["kernel.vf-devset"].seen  # the paper's 6.4-rc5 kernel


def test_missing_dirs_busy_port_module_vf_driver_no_curl_no_go_are_reported(host):
    tb, root = host
    (root / "tmp/pod_test").rmdir()
    holder = socket.socket()
    holder.bind(("127.0.0.1", tb.fastiov.barrier_port))
    holder.listen()
    cfg = root / "opt/kata3/share/fastiov-artifact/config-5.19.2-96"
    cfg.write_text("CONFIG_IAVF=m\n")
    (root / "usr/include/x86_64-linux-gnu/curl/curl.h").unlink()
    (root / "usr/lib/go-1.19/bin/go").write_text("#!/bin/sh\necho 'go version go1.12.17 linux/amd64'\n")
    try:
        checks = _by_name(tb)
    finally:
        holder.close()
    assert checks["dirs.components"].status == "warn" and "/tmp/pod_test" in checks["dirs.components"].seen
    assert checks["barrier.port"].status == "fail" and "in use" in checks["barrier.port"].seen
    assert checks["guest.vf-driver"].status == "fail" and "CONFIG_IAVF=m" in checks["guest.vf-driver"].seen
    assert checks["build.libcurl"].status == "fail" and "libcurl4-openssl-dev" in checks["build.libcurl"].fix
    assert checks["build.go"].status == "fail" and "need >= 1.19" in checks["build.go"].seen


def test_guest_vf_driver_is_read_from_an_uncompressed_vmlinux_without_a_config(host):
    tb, root = host
    (root / "opt/kata3/share/fastiov-artifact/config-5.19.2-96").unlink()
    kernel = root / str(tb.fastiov.guest_kernel_vanilla).lstrip("/")
    kernel.write_bytes(b"\x7fELF" + b"\0" * 64 + b"iavf_probe\0")
    assert hc.check_guest_vf_driver(root, tb.fastiov).status == "pass"
    kernel.write_bytes(b"\x7fELF" + b"\0" * 64 + b"virtio_net\0")
    assert hc.check_guest_vf_driver(root, tb.fastiov).status == "fail"


@pytest.mark.parametrize("release, proc_version, expected, how", [
    ("6.4.0-rc5test", "Linux version 6.4.0-rc5test (gcc) #1 SMP", False, "version"),  # the paper's host
    ("6.1.0-40-amd64", "Linux version 6.1.0-40-amd64 #1 SMP PREEMPT_DYNAMIC Debian 6.1.153-1 (2025-09-20)", True, "version"),
    ("6.1.0-37-amd64", "Linux version 6.1.0-37-amd64 #1 SMP PREEMPT_DYNAMIC Debian 6.1.140-1 (2025-05-22)", False, "version"),
    ("6.16.0", "", True, "version"),
    ("6.18.44-fc-v1098", "Linux version 6.18.44-fc-v1098 (builder@sandboxing)", True, "version"),
    ("6.12.30", "", None, "unknown"),
])
def test_vf_devset_change_is_decided_by_version_and_says_how(release, proc_version, expected, how):
    fact = kf.decide(release, proc_version)
    assert (fact.carries_change, fact.how) == (expected, how)
    line = kf.vf_devset_line(fact)
    assert release in line and ("gone here even without FastIOV" in line) == bool(expected)


def test_a_changelog_naming_the_change_decides_before_the_version(tmp_path):
    (tmp_path / "proc/sys/kernel").mkdir(parents=True)
    (tmp_path / "proc/sys/kernel/osrelease").write_text("6.1.0-37-amd64\n")
    (tmp_path / "proc/version").write_text("Linux version 6.1.0-37-amd64 Debian 6.1.140-1\n")
    assert kf.vf_devset_fact(tmp_path).carries_change is False
    doc = tmp_path / "usr/share/doc/linux-image-6.1.0-37-amd64"
    doc.mkdir(parents=True)
    with gzip.open(doc / "changelog.Debian.gz", "wt") as fh:
        fh.write("  - vfio/pci: Separate SR-IOV VF dev_set\n")
    fact = kf.vf_devset_fact(tmp_path)
    assert fact.carries_change is True and fact.how == "changelog"


def test_the_run_records_the_kernel_fact_for_the_report(host):
    tb, root = host
    facts = backend_for(tb).describe()
    assert facts["vf_devset"]["carries_change"] is False
    assert "does not carry" in kf.vf_devset_line(facts["vf_devset"])
    assert "not recorded" in kf.vf_devset_line(None)


def test_a_run_without_real_host_set_up_has_no_kernel_line(tmp_path):
    assert kf.vf_devset_line_for_run(tmp_path) is None
