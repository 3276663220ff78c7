"""What one guest boot does (the plan passed as `vs.*` kernel arguments) and how a profile becomes one."""
from __future__ import annotations

import re
import shutil
import sys
from dataclasses import dataclass

from fastiov_lib.config import REPO_ROOT, Profile, Testbed
from fastiov_lib.testbeds.vsriov.common import DeviceModel, VsriovError, settings_of

@dataclass(frozen=True)
class GuestPlan:
    """What /init does in this boot (passed as `vs.*` kernel arguments)."""

    nic_steps: bool = True
    nic_vfs: int = 2
    benchmarks: bool = False
    vf_counts: tuple[int, ...] = (1,)
    dma_sizes_mb: tuple[int, ...] = (64,)
    parallel: bool = True
    dma_repeats: int = 3  # each size is mapped this often, sizes interleaved (TCG timings are noisy)
    inner_qemu_mb: tuple[int, ...] = ()  # a VMM inside the guest, per memory size; () = skip
    inner_qemu: str = ""  # the host's QEMU binary, run inside the guest through the 9p share
    inner_qemu_repeats: int = 3
    python: str = sys.executable
    repo: str = str(REPO_ROOT)

    @property
    def needs_host_share(self) -> bool:
        """The NIC steps (host Python) and the inner QEMU (host binary) reach the host's / over 9p."""
        return self.nic_steps or bool(self.benchmarks and self.inner_qemu_mb)

    def kernel_args(self, device: DeviceModel) -> list[str]:
        args = {
            "device": device.name, "pfid": device.pci_id, "drvmod": device.driver_module,
            "nic": int(self.nic_steps), "nicvfs": self.nic_vfs, "bench": int(self.benchmarks),
            "counts": ",".join(map(str, self.vf_counts)), "sizes": ",".join(map(str, self.dma_sizes_mb)),
            "parallel": int(self.parallel), "dmareps": self.dma_repeats, "share": int(self.needs_host_share),
            "innermem": ",".join(map(str, self.inner_qemu_mb)) if self.benchmarks else "",
            "innerqemu": self.inner_qemu, "innerreps": self.inner_qemu_repeats, "py": self.python, "repo": self.repo,
        }
        for key, value in args.items():
            if re.search(r"\s", str(value)):
                raise VsriovError(f"guest plan: {key}={value!r} contains whitespace (not allowed on a kernel command line)")
        return [f"vs.{k}={v}" for k, v in args.items() if str(v) != ""]



def make_plan(testbed: Testbed, profile: Profile, device: DeviceModel, benchmarks: bool, nic_steps: bool = True) -> GuestPlan:
    """The guest plan for a profile: VF counts capped at what the device offers; DMA sizes checked
    against the guest memory."""
    settings = settings_of(testbed)
    limit = min(settings.max_vfs, device.vf_limit)
    counts = tuple(sorted({min(n, limit) for n in profile.vsriov_vf_counts}))
    sizes = tuple(profile.vsriov_dma_sizes_mb)
    if benchmarks and max(sizes) > settings.guest_memory_mb - 384:
        raise VsriovError(f"profile {profile.name!r}: vsriov_dma_sizes_mb up to {max(sizes)} MiB needs "
                          f"vsriov.guest_memory_mb >= {max(sizes) + 384} (have {settings.guest_memory_mb})")
    inner = tuple(settings.inner_qemu_memory_mb) if benchmarks else ()
    if inner and max(inner) > settings.guest_memory_mb - 512:
        raise VsriovError(f"vsriov.inner_qemu_memory_mb up to {max(inner)} MiB needs vsriov.guest_memory_mb >= "
                          f"{max(inner) + 512} (have {settings.guest_memory_mb})")
    inner_qemu = (shutil.which(settings.qemu_bin) or "") if inner else ""
    if inner and not inner_qemu:
        raise VsriovError(f"vsriov.inner_qemu_memory_mb is set but {settings.qemu_bin!r} is not on PATH")
    return GuestPlan(nic_steps=nic_steps, nic_vfs=limit, benchmarks=benchmarks, vf_counts=counts, dma_sizes_mb=sizes,
                     dma_repeats=settings.dma_repeats, inner_qemu_mb=inner, inner_qemu=inner_qemu)


