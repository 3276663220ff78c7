"""The outer QEMU: its command line, and one boot read to its end with bounded waits and no process left behind."""
from __future__ import annotations

import ctypes
import queue
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Literal

from fastiov_lib.config import VsriovSettings
from fastiov_lib.procs import stop_process_group
from fastiov_lib.testbeds.vsriov.common import DeviceModel, GuestImage, VsriovError
from fastiov_lib.testbeds.vsriov.plans import GuestPlan
from fastiov_lib.testbeds.vsriov.protocol import GuestResult, ResultParseError, parse_result_line

def device_args(device: DeviceModel, max_vfs: int) -> list[str]:
    """The `-device` arguments of the SR-IOV PF behind a PCIe root port."""
    args = ["-device", "pcie-root-port,id=rp0,chassis=1,slot=1"]
    if device.name == "igb":
        return args + ["-device", "igb,bus=rp0,id=pf0"]
    vq, vi = 2 * max_vfs, max_vfs
    return args + ["-device", "nvme-subsys,id=subsys0",
                   "-device", f"nvme,id=pf0,bus=rp0,serial=fastiov0,subsys=subsys0,sriov_max_vfs={max_vfs},"
                              f"sriov_vq_flexible={vq},sriov_vi_flexible={vi},max_ioqpairs={vq + 2},msix_qsize={vi + 2}"]


def qemu_command(image: GuestImage, settings: VsriovSettings, plan: GuestPlan, console_log: Path,
                 share_root: Path | None = Path("/")) -> list[str]:
    """The full QEMU command line: TCG, q35 + intel-iommu, the SR-IOV device, 9p share, two serial ports.

    ttyS0 (kernel console) goes to `console_log`; ttyS1 (the result channel) to QEMU's stdout.
    The host's `share_root` is exported read-only when the plan needs it (None: never).
    """
    if not plan.needs_host_share:
        share_root = None
    append = ["console=ttyS0", "intel_iommu=on", "panic=-1", "rdinit=/init", *plan.kernel_args(image.device)]
    cmd = image.qemu.base_args() + [
        "-accel", "tcg,thread=multi", "-cpu", "max",
        "-machine", "q35,kernel-irqchip=split", "-smp", str(settings.guest_cpus), "-m", f"{settings.guest_memory_mb}M",
        # -mem-prealloc: the host backs all guest RAM up front, so a MAP_DMA of untouched guest
        # memory measures the guest kernel's faulting and zeroing, not QEMU's first touch on the host
        "-mem-prealloc", "-nodefaults", "-display", "none", "-monitor", "none", "-no-reboot",
        "-device", "intel-iommu,intremap=on,caching-mode=on",
        *device_args(image.device, min(settings.max_vfs, image.device.vf_limit)),
        "-serial", f"file:{console_log}", "-serial", "stdio",
        "-kernel", str(image.kernel.vmlinuz), "-initrd", str(image.initramfs),
        "-append", " ".join(append),
    ]
    if share_root is not None:
        cmd += ["-fsdev", f"local,id=hostroot,path={share_root},security_model=none,readonly=on,multidevs=remap",
                "-device", "virtio-9p-pci,fsdev=hostroot,mount_tag=hostroot"]
    return cmd


@dataclass
class BootOutcome:
    """How a boot ended: status, timings, the result lines seen and where the logs are."""

    status: Literal["ok", "failed", "timeout", "interrupted"]
    error: str | None
    boot_s: float | None  # QEMU start -> the guest's `VSRIOV booted` marker
    total_s: float
    results: list[GuestResult] = field(default_factory=list)
    bad_lines: list[str] = field(default_factory=list)
    exit_code: int | None = None


def _set_pdeathsig() -> None:
    # the kernel kills QEMU if the Python process that started it dies (even by SIGKILL)
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def boot_guest(cmd: list[str], *, boot_timeout_s: float, run_timeout_s: float, env: dict[str, str] | None = None,
               on_result: Callable[[GuestResult], None] = lambda _r: None,
               on_line: Callable[[str], None] = lambda _l: None, exit_timeout_s: float = 30.0,
               stderr_log: Path | None = None) -> BootOutcome:
    """Run QEMU, read the guest's result channel (QEMU's stdout) and stop it within bounded times.

    - `boot_timeout_s`: from start until the guest prints `VSRIOV booted`;
    - `run_timeout_s`: from start until it prints `VSRIOV done`;
    - then QEMU must exit (the guest powers off) within `exit_timeout_s`.
    Whatever happens, QEMU's process group is killed in `finally`: no process is left behind.
    """
    t0 = time.monotonic()
    lines: queue.Queue[str | None] = queue.Queue()
    err_fh = open(stderr_log, "ab") if stderr_log else subprocess.DEVNULL
    try:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err_fh, env=env,
                                start_new_session=True, preexec_fn=_set_pdeathsig)
    except OSError as exc:
        if stderr_log:
            err_fh.close()  # type: ignore[union-attr]
        raise VsriovError(f"cannot start {cmd[0]}: {exc}") from None

    def reader() -> None:
        assert proc.stdout is not None
        for raw in proc.stdout:
            lines.put(raw.decode("utf-8", "replace").rstrip("\r\n").replace("\r", ""))
        lines.put(None)

    thread = threading.Thread(target=reader, name="vsriov-serial", daemon=True)
    thread.start()
    outcome = BootOutcome("failed", None, None, 0.0)
    booted = done = False
    done_at = 0.0
    try:
        while True:
            now = time.monotonic() - t0
            if not booted and now > boot_timeout_s:
                outcome.status, outcome.error = "timeout", (
                    f"the guest did not boot within {boot_timeout_s:.0f} s (no 'VSRIOV booted' on its result "
                    f"channel); see the console log")
                break
            if not done and now > run_timeout_s:
                outcome.status, outcome.error = "timeout", (
                    f"the guest did not finish within {run_timeout_s:.0f} s (no 'VSRIOV done'); see the console log")
                break
            if done and now > done_at + exit_timeout_s:
                outcome.status, outcome.error = "timeout", f"the guest did not power off within {exit_timeout_s:.0f} s"
                break
            try:
                line = lines.get(timeout=0.5)
            except queue.Empty:
                continue
            if line is None:  # QEMU closed stdout: it exited (or is about to)
                try:
                    outcome.exit_code = proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    outcome.error = "QEMU closed its output but did not exit within 30 s"
                    break
                if done:
                    outcome.status = "ok"
                else:
                    outcome.error = (f"QEMU exited (code {outcome.exit_code}) before the guest "
                                     f"{'finished' if booted else 'booted'}; see the console and QEMU logs")
                break
            on_line(line)
            if line.startswith("VSRIOV booted"):
                booted = True
                outcome.boot_s = time.monotonic() - t0
            elif line.startswith("VSRIOV done"):
                done = True
                done_at = time.monotonic() - t0
            try:
                result = parse_result_line(line)
            except ResultParseError as exc:
                outcome.bad_lines.append(str(exc))
                continue
            if result is not None:
                outcome.results.append(result)
                on_result(result)
    except KeyboardInterrupt:
        outcome.status, outcome.error = "interrupted", "interrupted"
        raise
    finally:
        stop_process_group(proc)
        if outcome.exit_code is None:
            outcome.exit_code = proc.poll()
        thread.join(timeout=5)
        if proc.stdout:
            proc.stdout.close()
        if stderr_log:
            err_fh.close()  # type: ignore[union-attr]
        outcome.total_s = time.monotonic() - t0
    return outcome


