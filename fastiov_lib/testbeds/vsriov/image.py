"""Preparing the guest: host tools, a private apt, the Debian kernel, QEMU (system or backports), vfbench, the initramfs."""
from __future__ import annotations

import hashlib
import os
import re
import shlex
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

from tqdm.auto import tqdm

from fastiov_lib.config import Testbed, VsriovSettings
from fastiov_lib.testbeds.vsriov.common import (DEVICES, GUEST_DIR, DeviceModel, GuestImage, GuestKernel, QemuInstall,
                                                VsriovError, run_cmd, settings_of)
from fastiov_lib.testbeds.vsriov.initramfs import InitramfsBuilder, InitramfsError, resolve_modules
from fastiov_lib.testbeds.vsriov.private_apt import PrivateApt

HOST_PACKAGES = ("qemu-system-x86", "busybox-static", "gcc", "libc6-dev")

GUEST_MODULES = ("igb", "nvme", "vfio-pci", "vfio_iommu_type1", "virtio_pci", "9pnet_virtio", "9p")
BUSYBOX_APPLETS = ("sh", "mount", "umount", "cat", "echo", "ls", "modprobe", "readlink", "basename", "grep",
                   "poweroff", "dmesg", "tr", "cut", "head", "tail", "sed", "wc", "mkdir", "chroot", "sync",
                   "sleep", "uname", "env", "true", "false", "timeout", "insmod", "rmmod", "kill", "dd", "rm")




@dataclass(frozen=True)
class SetupStep:
    """One set-up step as data (what `prepare_guest` will do); `done` when its output is cached."""

    name: str
    detail: str
    done: bool
    changes_host: bool = False



def qemu_version(binary: str | Path, env: dict[str, str] | None = None) -> tuple[int, int, int] | None:
    """(major, minor, micro) from `qemu-system-x86_64 --version`, or None if it does not run."""
    try:
        out = subprocess.run([str(binary), "--version"], capture_output=True, text=True, timeout=20, env=env)
    except (OSError, subprocess.SubprocessError):
        return None
    m = re.search(r"version (\d+)\.(\d+)(?:\.(\d+))?", out.stdout)
    if out.returncode != 0 or not m:
        return None
    return int(m.group(1)), int(m.group(2)), int(m.group(3) or 0)


def qemu_has_device(qemu: QemuInstall, device: str) -> bool:
    """Whether this QEMU knows `-device <device>` (asks for its properties, boots nothing)."""
    try:
        out = subprocess.run(qemu.base_args() + ["-device", f"{device},help"], capture_output=True, text=True,
                             timeout=20, env=qemu.env())
    except (OSError, subprocess.SubprocessError):
        return False
    return out.returncode == 0 and "not a valid device" not in out.stderr


def missing_host_tools(settings: VsriovSettings) -> list[tuple[str, str]]:
    """(tool, apt package) pairs the set-up needs but cannot find on this host."""
    missing = []
    if not shutil.which(settings.qemu_bin):
        missing.append((settings.qemu_bin, "qemu-system-x86"))
    busybox = shutil.which("busybox")
    if not busybox or not is_static_binary(Path(busybox)):
        missing.append(("busybox (static)", "busybox-static"))
    if not shutil.which("gcc"):
        missing.append(("gcc", "gcc"))
    if not Path("/usr/include/linux/vfio.h").exists():
        missing.append(("/usr/include/linux/vfio.h", "linux-libc-dev"))
    for tool in ("apt-get", "dpkg-deb"):
        if not shutil.which(tool):
            missing.append((tool, "apt"))
    return missing


def is_static_binary(path: Path) -> bool:
    # a dynamically linked ELF has a PT_INTERP segment naming its loader
    try:
        head = path.resolve().read_bytes()[:4096]
    except OSError:
        return False
    return head.startswith(b"\x7fELF") and b"ld-linux" not in head


def ensure_host_tools(testbed: Testbed) -> list[str]:
    """Check (and, if the testbed allows host changes, apt-get install) the host packages.

    Returns the packages installed. Without `allow_host_changes` a missing tool is a VsriovError
    naming the apt command that provides it.
    """
    settings = settings_of(testbed)
    missing = missing_host_tools(settings)
    if not missing:
        return []
    packages = sorted({pkg for _, pkg in missing})
    command = ["apt-get", "install", "-y", "--no-install-recommends", *packages]
    if not testbed.allow_host_changes:
        tools = ", ".join(t for t, _ in missing)
        raise VsriovError(f"missing on this host: {tools}; install with `{shlex.join(command)}` "
                          f"(or set allow_host_changes: true in {testbed.source_path or 'the testbed file'})")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    run_cmd(["apt-get", "-o", "DPkg::Lock::Timeout=600", *command[1:]], 900, "installing host packages", env=env)
    return packages


def _extract_deb(deb: Path, dest: Path) -> None:
    tmp = dest.with_name(dest.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    run_cmd(["dpkg-deb", "-x", str(deb), str(tmp)], 600, f"unpacking {deb.name}")
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)


def fetch_kernel(apt: PrivateApt, work_dir: Path) -> GuestKernel:
    """Debian's current `linux-image-<ver>-amd64` (what `linux-image-amd64` points to), unpacked."""
    pointer = work_dir / "kernel" / "package"
    package = pointer.read_text().strip() if pointer.exists() else ""
    if not package:
        candidates = [d for d in apt.depends("linux-image-amd64") if re.match(r"linux-image-\d", d)]
        if not candidates:
            raise VsriovError("apt-cache depends linux-image-amd64 names no linux-image-<ver> package")
        package = candidates[0]
    version = package.removeprefix("linux-image-")
    root = work_dir / "kernel" / version
    vmlinuz = root / "boot" / f"vmlinuz-{version}"
    if not vmlinuz.exists():
        deb = next(iter(sorted((work_dir / "debs").glob(f"{package}_*.deb"))), None) or \
            apt.download(package, work_dir / "debs")
        _extract_deb(deb, root)
    if not vmlinuz.exists():
        raise VsriovError(f"{package}: no boot/vmlinuz-{version} inside the package")
    pointer.parent.mkdir(parents=True, exist_ok=True)
    pointer.write_text(package + "\n")
    return GuestKernel(version, package, vmlinuz, root / "lib" / "modules" / version)


def fetch_backports_qemu(apt: PrivateApt, work_dir: Path) -> QemuInstall:
    """bookworm-backports' QEMU (>= 8, has igb) unpacked into the work dir; runs with the host's libraries."""
    root = work_dir / "qemu-backports"
    binary = root / "usr" / "bin" / "qemu-system-x86_64"
    if not binary.exists():
        tmp = work_dir / "qemu-backports.partial"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        for pkg in ("qemu-system-x86", "qemu-system-common", "qemu-system-data", "seabios"):
            deb = apt.download(f"{pkg}/bookworm-backports", work_dir / "debs" / "backports")
            run_cmd(["dpkg-deb", "-x", str(deb), str(tmp)], 600, f"unpacking {deb.name}")
        shutil.rmtree(root, ignore_errors=True)
        tmp.rename(root)
    install = QemuInstall(binary, (0, 0, 0), "bookworm-backports (work dir)",
                          (root / "usr/share/qemu", root / "usr/share/seabios"),
                          root / "usr/lib/x86_64-linux-gnu/qemu")
    version = qemu_version(binary, install.env())
    if version is None:
        missing = run_cmd(["ldd", str(binary)], 30, "ldd").stdout
        gone = [ln.split()[0] for ln in missing.splitlines() if "not found" in ln]
        hint = f" (libraries missing: {', '.join(gone)})" if gone else ""
        raise VsriovError(f"{binary} does not run{hint}")
    return QemuInstall(install.binary, version, install.source, install.firmware_dirs, install.module_dir)


def system_qemu(settings: VsriovSettings) -> QemuInstall:
    path = shutil.which(settings.qemu_bin)
    if not path:
        raise VsriovError(f"{settings.qemu_bin!r} not found (apt-get install qemu-system-x86)")
    version = qemu_version(path)
    if version is None:
        raise VsriovError(f"{path} --version failed")
    return QemuInstall(Path(path), version, "system")


def choose_qemu_and_device(testbed: Testbed, apt: PrivateApt | None,
                           log: Callable[[str], None] = lambda _m: None) -> tuple[QemuInstall, DeviceModel, str]:
    """Pick QEMU and the SR-IOV device: igb when a QEMU >= 8 is there or can be fetched, else nvme."""
    settings = settings_of(testbed)
    system = system_qemu(settings)
    if settings.device == "nvme":
        return system, DEVICES["nvme"], "nvme requested"
    if system.version >= (8, 0, 0) and qemu_has_device(system, "igb"):
        return system, DEVICES["igb"], f"system QEMU {system.version_text} has igb"
    try:
        if apt is None:
            raise VsriovError("no apt available to fetch bookworm-backports' QEMU")
        bpo = fetch_backports_qemu(apt, settings.work_dir)
        if not qemu_has_device(bpo, "igb"):
            raise VsriovError(f"{bpo.binary} ({bpo.version_text}) has no igb device")
    except VsriovError as exc:
        if settings.device == "igb":
            raise VsriovError(f"device igb needs QEMU >= 8: {exc}") from None
        log(f"igb unavailable ({exc}); using nvme with QEMU {system.version_text}")
        return system, DEVICES["nvme"], f"auto: igb unavailable ({exc})"
    return bpo, DEVICES["igb"], f"auto: bookworm-backports QEMU {bpo.version_text} has igb"


def compile_guest_tool(work_dir: Path, name: str) -> Path:
    """guest/<name>.c compiled statically (cached by source hash)."""
    src = GUEST_DIR / f"{name}.c"
    digest = hashlib.sha256(src.read_bytes()).hexdigest()[:12]
    out = work_dir / "build" / f"{name}-{digest}"
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(".tmp")
        run_cmd(["gcc", "-O2", "-Wall", "-static", "-pthread", "-o", str(tmp), str(src)], 300, f"compiling {name}.c")
        os.replace(tmp, out)
        for old in out.parent.glob(f"{name}-*"):
            if old != out:
                old.unlink()
    return out


def compile_vfbench(work_dir: Path) -> Path:
    """guest/vfbench.c compiled statically (cached by source hash)."""
    return compile_guest_tool(work_dir, "vfbench")


# where /init finds the reverted module (it loads it in place of the stock vfio-pci-core)
SHARED_DEVSET_MODULE = "lib/vfio-shared-devset/vfio-pci-core.ko"

# The inner VMs' firmware: 16-bit code at the reset vector that prints MARKER on COM1 and halts, so
# "the VM started" is a line on its serial port, as early as a VM can say anything (no guest OS).
MARKER = "FASTIOV-VM-UP"


def write_marker_firmware(work_dir: Path) -> Path:
    """A 64 KiB BIOS image for the inner VMs: prints MARKER on COM1 (0x3f8), then halts forever."""
    code = bytearray(b"\xba\xf8\x03")  # mov dx, 0x3f8
    for ch in (MARKER + "\n").encode():
        code += bytes([0xB0, ch, 0xEE])  # mov al, ch; out dx, al
    code += b"\xf4\xeb\xfd"  # hlt; jmp back to hlt
    image = bytearray(b"\xf4" * 0x10000)
    image[0:len(code)] = code
    image[0xFFF0:0xFFF5] = b"\xea\x00\x00\x00\xf0"  # reset vector: jmp far f000:0000
    out = work_dir / "build" / "marker-bios.bin"
    if not out.exists() or out.read_bytes() != bytes(image):
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(bytes(image))
    return out


def build_initramfs(kernel: GuestKernel, vfbench: Path, busybox: Path, out_dir: Path,
                    init_script: Path = GUEST_DIR / "init.sh", modules: Iterable[str] = GUEST_MODULES,
                    extra_files: dict[str, Path] | None = None) -> Path:
    """Write the guest's initramfs (cached by the hash of its inputs) and return its path.

    Contents: /init, busybox + applet links in /bin, /bin/vfbench, the modules (uncompressed) with
    their dependencies and a modules.dep made by `busybox depmod`, /dev/console.
    """
    modules = tuple(modules)
    key = hashlib.sha256()
    for part in (kernel.version, ",".join(modules), ",".join(BUSYBOX_APPLETS)):
        key.update(part.encode())
    extras = dict(sorted((extra_files or {}).items()))
    for path in (init_script, vfbench, busybox, *extras.values()):
        key.update(hashlib.sha256(path.read_bytes()).digest())
    key.update(",".join(extras).encode())
    out = out_dir / f"initramfs-{kernel.version}-{key.hexdigest()[:12]}.cpio.gz"
    if out.exists():
        return out
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        resolved = resolve_modules(kernel.modules_dir, modules)
    except InitramfsError as exc:
        raise VsriovError(str(exc)) from None
    staging = out_dir / "modules-staging"
    shutil.rmtree(staging, ignore_errors=True)
    mod_root = staging / "lib" / "modules" / kernel.version
    for name, (src, data) in resolved.items():
        rel = src.relative_to(kernel.modules_dir)
        dest = mod_root / rel.parent / (src.name.split(".ko")[0] + ".ko")
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(data)
    for extra in ("modules.builtin", "modules.order", "modules.builtin.modinfo"):
        if (kernel.modules_dir / extra).exists():
            shutil.copy2(kernel.modules_dir / extra, mod_root / extra)
    run_cmd([str(busybox), "depmod", "-b", str(staging), kernel.version], 120, "busybox depmod")
    if not (mod_root / "modules.dep").exists():
        raise VsriovError(f"busybox depmod wrote no modules.dep under {mod_root}")

    img = InitramfsBuilder()
    for d in ("bin", "dev", "proc", "sys", "tmp", "host", "etc"):
        img.add_dir(d)
    img.add_char_device("dev/console", 5, 1)
    img.add_char_device("dev/null", 1, 3, 0o666)
    img.add_file("init", init_script.read_bytes(), 0o755)
    img.add_file("bin/busybox", busybox.read_bytes(), 0o755)
    for applet in BUSYBOX_APPLETS:
        img.add_symlink(f"bin/{applet}", "busybox")
    img.add_file("bin/vfbench", vfbench.read_bytes(), 0o755)
    for dest, path in extras.items():
        parent = dest.rsplit("/", 1)[0] if "/" in dest else ""
        if parent and parent not in ("bin", "lib"):
            img.add_dir(parent)
        img.add_file(dest, path.read_bytes(), 0o755)
    img.add_tree(staging / "lib", "lib")
    img.write(out)
    shutil.rmtree(staging, ignore_errors=True)
    for old in out_dir.glob("initramfs-*.cpio.gz"):  # earlier builds of other inputs
        if old != out:
            old.unlink()
    return out


def plan_setup(testbed: Testbed) -> list[SetupStep]:
    """What `prepare_guest` will do on this host, as data (nothing is fetched or changed)."""
    settings = settings_of(testbed)
    wd = settings.work_dir
    missing = missing_host_tools(settings)
    steps = [
        SetupStep("host packages", "apt-get install " + " ".join(HOST_PACKAGES) if missing else
                  "qemu-system-x86_64, static busybox, gcc present", not missing, changes_host=bool(missing)),
        SetupStep("private apt lists", f"bookworm(+updates, security) and bookworm-backports lists under {wd / 'apt'}",
                  PrivateApt(wd / "apt").fresh),
        SetupStep("guest kernel", f"linux-image-<ver>-amd64 .deb unpacked under {wd / 'kernel'}",
                  (wd / "kernel" / "package").exists()),
    ]
    if settings.device != "nvme":
        steps.append(SetupStep("QEMU >= 8 for igb", f"bookworm-backports QEMU unpacked under {wd / 'qemu-backports'}",
                               (wd / "qemu-backports" / "usr/bin/qemu-system-x86_64").exists()))
    steps += [
        SetupStep("vfbench, vmstart", "guest/vfbench.c and guest/vmstart.c compiled statically",
                  any((wd / "build").glob("vfbench-*")) and any((wd / "build").glob("vmstart-*"))),
    ]
    if settings.shared_devset_module:
        from fastiov_lib.testbeds.vsriov.vfio_module import STEPS

        stamps = wd / "vfio-devset" / "stamps"
        steps.append(SetupStep("vfio-pci-core, shared device set",
                               f"Debian linux-source-6.1 + linux-headers: vfio-pci-core.ko with the per-VF device set "
                               f"reverted ({', '.join(STEPS)}; stamped under {wd / 'vfio-devset'})",
                               all((stamps / f"{s}.done").exists() for s in STEPS)))
    steps.append(SetupStep("initramfs", "busybox + modules + vfbench + vmstart (+ reverted vfio-pci-core) + /init",
                           any((wd / "build").glob("initramfs-*.cpio.gz"))))
    from fastiov_lib.testbeds.vsriov import qemu62

    built = qemu62.binaries(testbed)
    steps.append(SetupStep("QEMU 6.2.0 stock + patched (once, separately)",
                           f"`fastiov-artifact vsriov build-qemu`: the artifact's build code into {qemu62.build_dir(testbed)}"
                           f" (built: {', '.join(built) or 'none'})", len(built) == len(qemu62.VARIANTS)))
    return steps


def prepare_guest(testbed: Testbed, progress: bool = True) -> GuestImage:
    """Fetch and build everything a boot needs (idempotent; cached under the work dir)."""
    settings = settings_of(testbed)
    wd = settings.work_dir
    wd.mkdir(parents=True, exist_ok=True)
    bar = tqdm(total=5, desc="vsriov set-up", disable=not progress, leave=False)
    notes: list[str] = []
    try:
        ensure_host_tools(testbed)
        bar.update()
        apt = PrivateApt(wd / "apt")
        apt.update()
        bar.update()
        kernel = fetch_kernel(apt, wd)
        bar.update()
        qemu, device, note = choose_qemu_and_device(testbed, apt, notes.append)
        bar.update()
        vfbench = compile_vfbench(wd)
        extra = {"bin/vmstart": compile_guest_tool(wd, "vmstart")}
        devset_sha = ""
        if settings.shared_devset_module:
            from fastiov_lib.testbeds.vsriov.vfio_module import build_shared_devset_module

            module = build_shared_devset_module(kernel, wd, apt)
            extra[SHARED_DEVSET_MODULE] = module.path
            devset_sha = module.sha256
        busybox = Path(shutil.which("busybox") or "/bin/busybox").resolve()
        initramfs = build_initramfs(kernel, vfbench, busybox, wd / "build", extra_files=extra)
        bar.update()
    finally:
        bar.close()
    return GuestImage(qemu, device, kernel, initramfs, note, write_marker_firmware(wd), devset_sha)


def clean(testbed: Testbed, keep_downloads: bool = True) -> list[Path]:
    """Remove built artefacts (and, unless keep_downloads, the downloaded .debs and apt lists)."""
    wd = settings_of(testbed).work_dir
    targets = [wd / "build", wd / "qemu-backports.partial", wd / "vfio-devset"]
    if not keep_downloads:
        targets += [wd / "debs", wd / "apt", wd / "kernel", wd / "qemu-backports"]
    removed = []
    for t in targets:
        if t.exists():
            shutil.rmtree(t)
            removed.append(t)
    return removed
