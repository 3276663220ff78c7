"""What one guest boot does (the plan passed as `vs.*` kernel arguments) and how a profile becomes one."""
from __future__ import annotations

import re
import shutil
import sys
from dataclasses import dataclass

from fastiov_lib.config import REPO_ROOT, Profile, Testbed
from fastiov_lib.testbeds.vsriov.common import DeviceModel, GuestImage, VsriovError, settings_of

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
    # device-set behaviours: "stock" (this kernel: per-VF sets) and "shared" (the reverted module)
    devsets: tuple[str, ...] = ()
    devset_vfs: int = 4
    repeats: int = 2  # device-set opens and concurrent VM starts, each this often
    # concurrent VF-backed VM starts: "vanilla" (shared set, untouched memory), "fastiov" (per-VF, pre-faulted)
    vm_configs: tuple[str, ...] = ()
    vm_counts: tuple[int, ...] = ()
    vm_mem_mb: int = 128
    marker_bios: str = ""
    # QEMU 6.2.0 as the inner QEMU: build directories of the stock and the patched build ("" = skip)
    q62_stock: str = ""
    q62_fastiov: str = ""
    q62_mem_mb: int = 256
    python: str = sys.executable
    repo: str = str(REPO_ROOT)

    @property
    def needs_host_share(self) -> bool:
        """The NIC steps (host Python) and the inner QEMU (host binary) reach the host's / over 9p."""
        return self.nic_steps or bool(self.benchmarks and (self.inner_qemu_mb or self.vm_configs or self.q62_stock
                                                  or self.q62_fastiov))

    def kernel_args(self, device: DeviceModel) -> list[str]:
        args = {
            "device": device.name, "pfid": device.pci_id, "drvmod": device.driver_module,
            "nic": int(self.nic_steps), "nicvfs": self.nic_vfs, "bench": int(self.benchmarks),
            "counts": ",".join(map(str, self.vf_counts)), "sizes": ",".join(map(str, self.dma_sizes_mb)),
            "parallel": int(self.parallel), "dmareps": self.dma_repeats, "share": int(self.needs_host_share),
            "innermem": ",".join(map(str, self.inner_qemu_mb)) if self.benchmarks else "",
            "innerqemu": self.inner_qemu, "innerreps": self.inner_qemu_repeats, "py": self.python, "repo": self.repo,
            "devsets": ",".join(self.devsets) if self.benchmarks else "", "devvfs": self.devset_vfs, "reps": self.repeats,
            "vmcfgs": ",".join(self.vm_configs) if self.benchmarks else "", "vmcounts": ",".join(map(str, self.vm_counts)),
            "vmmem": self.vm_mem_mb, "bios": self.marker_bios, "q62stock": self.q62_stock,
            "q62fastiov": self.q62_fastiov, "q62mem": self.q62_mem_mb,
        }
        for key, value in args.items():
            if re.search(r"\s", str(value)):
                raise VsriovError(f"guest plan: {key}={value!r} contains whitespace (not allowed on a kernel command line)")
        return [f"vs.{k}={v}" for k, v in args.items() if str(v) != ""]



def make_plan(testbed: Testbed, profile: Profile, device: DeviceModel, benchmarks: bool, nic_steps: bool = True,
              image: GuestImage | None = None) -> GuestPlan:
    """The guest plan for a profile: VF counts capped at what the device offers; DMA sizes checked
    against the guest memory; device-set and VM-start experiments as far as the image allows."""
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
    shared = bool(image and image.shared_devset_sha256)
    devsets = (("stock", "shared") if shared else ("stock",)) if benchmarks else ()
    vm_counts = tuple(sorted({min(n, limit) for n in profile.vsriov_vm_counts}))
    vm_qemu = shutil.which(settings.qemu_bin) or ""
    vm_ok = benchmarks and bool(image and image.marker_bios) and bool(vm_qemu)
    vm_configs = (("vanilla", "fastiov") if shared else ("fastiov",)) if vm_ok else ()
    if vm_configs and max(vm_counts) * settings.vm_memory_mb > settings.guest_memory_mb - 768:
        raise VsriovError(f"profile {profile.name!r}: {max(vm_counts)} concurrent VMs of vsriov.vm_memory_mb="
                          f"{settings.vm_memory_mb} need vsriov.guest_memory_mb >= "
                          f"{max(vm_counts) * settings.vm_memory_mb + 768} (have {settings.guest_memory_mb})")
    q62 = dict(image.qemu62) if (image and benchmarks and profile.vsriov_qemu62) else {}
    return GuestPlan(nic_steps=nic_steps, nic_vfs=limit, benchmarks=benchmarks, vf_counts=counts, dma_sizes_mb=sizes,
                     dma_repeats=settings.dma_repeats, inner_qemu_mb=inner, inner_qemu=inner_qemu or vm_qemu,
                     devsets=devsets, devset_vfs=min(limit, max(counts)), repeats=profile.vsriov_repeats,
                     vm_configs=vm_configs, vm_counts=vm_counts, vm_mem_mb=settings.vm_memory_mb,
                     marker_bios=str(image.marker_bios) if image and image.marker_bios else "",
                     q62_stock=str(q62.get("stock", "")), q62_fastiov=str(q62.get("fastiov", "")))


