"""A generated fake FastIOV host: the hardware tree of hw.fake_sysfs plus the host's runtime configs and extras.

Tests, the NIC command's `fake-tree` and the real host's example plans run against it (a real SR-IOV
NIC and IOMMU are the only things this project fakes).
"""
from __future__ import annotations

from pathlib import Path

from fastiov_lib.config import Testbed
from fastiov_lib.hw.fake_sysfs import FakeHostSpec, FakePf, build_fake_tree
from fastiov_lib.testbeds.fastiov_host import runtime_config
from fastiov_lib.testbeds.fastiov_host.fake_extras import write_host_extras


def spec_for_testbed(testbed: Testbed, **changes: object) -> FakeHostSpec:
    """A healthy fake host matching a fastiov testbed file (its PFs, paths, expected kernel)."""
    s = testbed.fastiov
    spec = FakeHostSpec()
    if s is not None:
        spec.pfs = [FakePf(pf, s.pf_netdevs[i] if i < len(s.pf_netdevs) else f"ens1f{i}",
                           total_vfs=max(128, s.vfs_per_pf)) for i, pf in enumerate(s.pfs)]
        spec.kernel_release = "6.4.0" + s.expected_kernel_suffix
        spec.cmdline = f"BOOT_IMAGE=/vmlinuz-{spec.kernel_release} ro intel_iommu=on iommu=pt"
        spec.hugepages_2m = s.hugepages_2m
        spec.hugepages_max = max(spec.hugepages_max, s.hugepages_2m)
        spec.fastiov_device = str(s.fastiov_device).lstrip("/")
        bins = {
            str(s.qemu_fastiov).lstrip("/"): "QEMU emulator version 6.2.0",
            str(s.qemu_vanilla).lstrip("/"): "QEMU emulator version 6.2.0",
            str(s.kata_prefix / "bin/kata-runtime").lstrip("/"): "kata-runtime  : 3.0.2",
            str(s.kata_prefix / "bin/containerd-shim-kata-v2").lstrip("/"): "containerd-shim-kata-v2 3.0.2",
            "usr/local/bin/containerd": "containerd github.com/containerd/containerd v1.3.10-fastiov 0000000",
            str(s.cni_bin_dir / "fastiov").lstrip("/"): "fastiov CNI plugin",
        }
        spec.binaries = bins
        spec.links = {"usr/local/bin/containerd-shim-kata3-v2": str(s.kata_prefix / "bin/containerd-shim-kata-v2")}
        spec.data_files = tuple(str(p).lstrip("/") for p in (s.guest_kernel_fastiov, s.guest_kernel_vanilla,
                                                             s.image_async, s.image_sync))
    for key, value in changes.items():
        if not hasattr(spec, key):
            raise KeyError(f"FakeHostSpec has no field {key!r}")
        setattr(spec, key, value)
    return spec


def build_fake_host(root: Path, spec: FakeHostSpec | None = None, testbed: Testbed | None = None) -> Path:
    """Write a fake FastIOV host below `root` and return it: the hardware tree, then (unless
    `spec.configs` is off) the runtime configs, with `testbed`'s paths, and its log dirs and build tools."""
    spec = spec or FakeHostSpec()
    root = build_fake_tree(root, spec)
    if spec.configs:
        runtime_config.deploy_fake_configs(root, testbed, spec.kata_overrides)
        if testbed is not None and testbed.fastiov is not None:  # log dirs, guest kernel config, build tools
            write_host_extras(root, testbed)
    return root
