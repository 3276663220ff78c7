"""A virtual SR-IOV host: a QEMU/TCG guest with an emulated IOMMU and an SR-IOV device.

The real Linux kernel inside the guest creates VFs, binds them to vfio-pci and opens, resets and
DMA-maps them through VFIO; this project's `fastiov_lib.hw.nic` code runs there against the real
sysfs, and QEMUs inside the guest start VMs with VFs (the system's QEMU and, once built, QEMU
6.2.0 stock and with FastIOV's patch).

This module is the testbed's public surface; the work is done by one module per job:
- `image`: host tools, private apt, Debian kernel, QEMU, vfbench, initramfs (all cached in the work dir);
- `vfio_module`: vfio-pci-core built from Debian's linux-source-6.1 with the per-VF device set reverted;
- `qemu62`: QEMU 6.2.0 stock and with 0001-qemu.patch, through the artifact's build code;
- `plans`: what one boot does; `boot`: the outer QEMU's command line and bounded boot;
- `protocol`: the guest's `RESULT` lines; `ktrace`: the guest kernel's trace of VFIO calls;
- `session`: one boot end to end, records appended to `<run>/vsriov.jsonl`.
Emulated hardware (QEMU/TCG): shapes and ratios carry over to real servers, absolute times do not.
"""
from __future__ import annotations

from fastiov_lib.testbeds.vsriov.boot import BootOutcome, boot_guest, device_args, qemu_command
from fastiov_lib.analysis.vsriov import EMULATION_NOTE
from fastiov_lib.run.rundir import VSRIOV_FILE
from fastiov_lib.testbeds.vsriov.common import (DEVICES, GUEST_DIR, DeviceModel, GuestImage, GuestKernel, QemuInstall,
                                                VsriovError)
from fastiov_lib.testbeds.vsriov.image import (HOST_PACKAGES, PrivateApt, SetupStep, _is_static, build_initramfs,
                                               choose_qemu_and_device, clean, compile_vfbench, ensure_host_tools,
                                               fetch_kernel, missing_host_tools, plan_setup, prepare_guest,
                                               qemu_has_device, qemu_version)
from fastiov_lib.testbeds.vsriov.plans import GuestPlan, make_plan
from fastiov_lib.testbeds.vsriov.protocol import GuestResult, ResultParseError, parse_result_line
from fastiov_lib.testbeds.vsriov.session import VsriovResult, console_tail, load_records, run_guest_session

__all__ = [
    "BootOutcome", "boot_guest", "device_args", "qemu_command", "DEVICES", "EMULATION_NOTE", "GUEST_DIR", "VSRIOV_FILE",
    "DeviceModel", "GuestImage", "GuestKernel", "QemuInstall", "VsriovError", "HOST_PACKAGES", "PrivateApt",
    "SetupStep", "_is_static", "build_initramfs", "choose_qemu_and_device", "clean", "compile_vfbench",
    "ensure_host_tools", "fetch_kernel", "missing_host_tools", "plan_setup", "prepare_guest", "qemu_has_device",
    "qemu_version", "GuestPlan", "make_plan", "GuestResult", "ResultParseError", "parse_result_line", "VsriovResult",
    "console_tail", "load_records", "run_guest_session",
]
