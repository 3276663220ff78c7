"""What a set-up FastIOV host has beyond sysfs, written into a generated fake tree.

The component directories, a guest kernel config with the Intel VF driver built in, libcurl's
headers, a Go toolchain and the kernel build's tools and headers: the things `host-check` looks for, so a healthy fake host passes.
"""
from __future__ import annotations

from pathlib import Path

from fastiov_lib.config import Testbed

FAKE_GO = "#!/bin/sh\necho 'go version go1.19.8 linux/amd64'\n"


def _under(root: Path, path: Path | str) -> Path:
    return Path(root) / str(path).lstrip("/")


def write_host_extras(root: Path, testbed: Testbed) -> None:
    """Write the extras of a set-up host below `root` (directories, guest kernel config, headers, go)."""
    from fastiov_lib.testbeds.fastiov_host.log_dirs import component_dirs

    s = testbed.fastiov
    for d, _ in component_dirs(s):
        _under(root, d).mkdir(parents=True, exist_ok=True)
    cfg = _under(root, s.guest_kernel_config) if s.guest_kernel_config else \
        _under(root, s.guest_kernel_vanilla).parent / "config-5.19.2-96"
    cfg.parent.mkdir(parents=True, exist_ok=True)
    cfg.write_text("CONFIG_PCI=y\nCONFIG_VIRTIO_PCI=y\nCONFIG_IAVF=y\nCONFIG_I40EVF=y\n")
    curl = _under(root, "usr/include/x86_64-linux-gnu/curl/curl.h")
    curl.parent.mkdir(parents=True, exist_ok=True)
    curl.write_text("/* fake header of a generated host tree */\n")
    from fastiov_lib.testbeds.fastiov_host.host_checks import KERNEL_BUILD_HEADERS, KERNEL_BUILD_TOOLS

    for rel in [f"usr/bin/{tool}" for tool in KERNEL_BUILD_TOOLS] + list(KERNEL_BUILD_HEADERS):
        _under(root, rel).parent.mkdir(parents=True, exist_ok=True)
        _under(root, rel).write_text("# fake file of a generated host tree\n")
    go = _under(root, "usr/lib/go-1.19/bin/go")
    go.parent.mkdir(parents=True, exist_ok=True)
    go.write_text(FAKE_GO)
    go.chmod(0o755)
