"""The paper's two host kernels, which variant needs which, and which one this host has booted.

Vanilla SR-IOV (and every variant without FastIOV's host side) is measured on stock Linux 6.4, where
VFs on a bus share one VFIO device set; FastIOV's host-side variants need 6.4-rc5 with
`0001-linux.patch` (`-rc5test`) and the `fastiov` module. One booted kernel serves one group of
variants, so the evaluation is a campaign of two boots (bench.campaign). The stock kernel is built
from `linux-vanilla-src` (tag v6.4) with `EXTRAVERSION = <stock_kernel_suffix>`, so both kernels are
recognised by their release (`uname -r`).
"""
from __future__ import annotations

from pathlib import Path

from fastiov_lib.config import FastiovHostSettings
from fastiov_lib.testbeds.base import KernelInfo

STOCK, PATCHED = "stock", "patched"
BOOT_ORDER = (STOCK, PATCHED)  # the vanilla baselines first, as a fresh host boots its own kernel anyway


def _release(root: Path) -> str:
    try:
        return (Path(root) / "proc/sys/kernel/osrelease").read_text().strip()
    except OSError:
        return ""


def kernel_infos(s: FastiovHostSettings) -> dict[str, KernelInfo]:
    """The two kernels: what each is, how it is recognised, how to get into it from the other."""
    after_boot = ("fastiov-artifact host-check --testbed T --profile P (kernel, hugepages, VFs)",
                  "fastiov-artifact nic apply --testbed T (hugepages, VFs, vfio-pci; VFs do not survive a reboot)")
    return {
        STOCK: KernelInfo(
            STOCK, "stock Linux 6.4: VFs on a bus share one VFIO device set (the paper's vanilla SR-IOV host)",
            f"uname -r ends with {s.stock_kernel_suffix}",
            ("fastiov-artifact build apply --testbed T --component linux-vanilla (once; installs the kernel)",
             f"reboot into 6.4.0{s.stock_kernel_suffix} (select it in the boot loader)", *after_boot)),
        PATCHED: KernelInfo(
            PATCHED, "Linux 6.4-rc5 with 0001-linux.patch and the fastiov module: per-VF device sets, lazy DMA "
                     "mapping registration (FastIOV's host side)",
            f"uname -r ends with {s.expected_kernel_suffix}",
            ("fastiov-artifact build apply --testbed T --component linux (once; installs the kernel)",
             f"reboot into 6.4.0{s.expected_kernel_suffix} (select it in the boot loader)",
             "fastiov-artifact build apply --testbed T --component fastiov-module (builds and loads fastiov.ko "
             "on this kernel; again after every reboot)", *after_boot)),
    }


def kernel_for_variant(variant_host_kernel: str) -> str:
    """The kernel a variant's `host_kernel` flavour needs (vanilla -> stock, fastiov -> patched)."""
    return PATCHED if variant_host_kernel == "fastiov" else STOCK


def booted_kernel(s: FastiovHostSettings, root: Path) -> str | None:
    """Which of the two kernels runs below `root` (None: neither, or not readable)."""
    release = _release(root)
    if release and release.endswith(s.expected_kernel_suffix):
        return PATCHED
    if release and s.stock_kernel_suffix and release.endswith(s.stock_kernel_suffix):
        return STOCK
    return None


def kernel_release(root: Path) -> str:
    """`uname -r` of the kernel below `root` ("" if not readable)."""
    return _release(root)
