"""Shared pieces of the virtual SR-IOV host: errors, constants, the emulated devices and images, one command runner."""
from __future__ import annotations

import os
import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from fastiov_lib.config import Testbed, VsriovSettings
from fastiov_lib.testbeds.base import BackendError

GUEST_DIR = Path(__file__).resolve().parent / "guest"
DEBIAN_MIRROR = "http://deb.debian.org/debian"
DEBIAN_SECURITY = "http://deb.debian.org/debian-security"
DEBIAN_KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")
HOST_PACKAGES = ("qemu-system-x86", "busybox-static", "gcc", "libc6-dev")

Device = Literal["igb", "nvme"]


@dataclass(frozen=True)
class DeviceModel:
    """An emulated SR-IOV PF: its PCI id (as the guest sees it), guest driver and VF limit."""

    name: Device
    pci_id: str
    driver_module: str
    vf_limit: int  # igb: the 82576 has 7 VFs; nvme: as configured (sriov_max_vfs)
    min_qemu: tuple[int, int]


DEVICES: dict[str, DeviceModel] = {
    "igb": DeviceModel("igb", "8086:10c9", "igb", 7, (8, 0)),
    "nvme": DeviceModel("nvme", "1b36:0010", "nvme", 64, (7, 0)),
}

# Modules /init loads (their dependencies are resolved from the .ko files themselves).
class VsriovError(BackendError):
    """The virtual SR-IOV host could not be set up, booted or completed; the message says why."""



@dataclass(frozen=True)
class QemuInstall:
    """A QEMU binary with how to run it (firmware dirs, module dir) and what it can emulate."""

    binary: Path
    version: tuple[int, int, int]
    source: str  # "system" or "bookworm-backports (work dir)"
    firmware_dirs: tuple[Path, ...] = ()
    module_dir: Path | None = None

    @property
    def version_text(self) -> str:
        return ".".join(map(str, self.version))

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        if self.module_dir is not None:
            env["QEMU_MODULE_DIR"] = str(self.module_dir)
        return env

    def base_args(self) -> list[str]:
        args = [str(self.binary)]
        for d in self.firmware_dirs:
            args += ["-L", str(d)]
        return args


@dataclass(frozen=True)
class GuestKernel:
    version: str  # e.g. 6.1.0-56-amd64
    package: str  # linux-image-6.1.0-56-amd64
    vmlinuz: Path
    modules_dir: Path  # .../lib/modules/<version>


@dataclass(frozen=True)
class GuestImage:
    """Everything a boot needs: QEMU, the device it emulates, kernel and initramfs."""

    qemu: QemuInstall
    device: DeviceModel
    kernel: GuestKernel
    initramfs: Path
    device_note: str = ""  # why `auto` chose this device
    marker_bios: Path | None = None  # the inner VMs' firmware (host path, reached in the guest over 9p)
    shared_devset_sha256: str = ""  # the reverted vfio-pci-core.ko inside the initramfs ("" = none)
    qemu62: tuple[tuple[str, Path], ...] = ()  # (variant, build dir) of the QEMU 6.2.0 builds run as inner QEMU


def run_cmd(cmd: list[str], timeout: float, what: str, env: dict[str, str] | None = None,
         cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=cwd)
    except FileNotFoundError:
        raise VsriovError(f"{what}: {cmd[0]!r} not found") from None
    except subprocess.TimeoutExpired:
        raise VsriovError(f"{what}: `{shlex.join(cmd)}` did not finish within {timeout:.0f} s") from None
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        raise VsriovError(f"{what}: `{shlex.join(cmd)}` exited {proc.returncode}: " + " | ".join(tail))
    return proc



def settings_of(testbed: Testbed) -> VsriovSettings:
    if testbed.vsriov is None:
        raise VsriovError(f"testbed {testbed.name!r} has no 'vsriov:' section (not a virtual SR-IOV host)")
    return testbed.vsriov


