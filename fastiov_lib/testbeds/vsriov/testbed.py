"""A virtual SR-IOV host: a QEMU/TCG guest with an emulated IOMMU and an SR-IOV device.

The real Linux kernel inside the guest creates VFs, binds them to vfio-pci and opens, resets and
DMA-maps them through VFIO; this project's `fastiov_lib.hw.nic` code runs there against the real sysfs.

Pieces (all cached under `testbed.vsriov.work_dir`, nothing else on the host changes):
- QEMU: the system's `qemu-system-x86_64` (Debian bookworm: 7.2, NVMe with SR-IOV) and, for the
  `igb` device (Intel 82576 with 7 VFs, QEMU >= 8), bookworm-backports' QEMU fetched with apt into a
  private apt state under the work dir and unpacked with `dpkg-deb -x` (the host's apt sources and
  its installed QEMU stay as they are).
- The guest kernel: Debian's `linux-image-<ver>-amd64` .deb (resolved from `linux-image-amd64`).
- An initramfs written here in Python (cpio newc): busybox-static, the needed kernel modules
  (indexed with `busybox depmod`), `guest/vfbench.c` compiled statically, `guest/init.sh` as /init.
- The project's Python code reaches the guest over a read-only 9p share of the host's `/`; the
  guest chroots into it (with its own /proc, /sys, /dev bound in) and runs the host's interpreter.

Results: the guest prints `RESULT <kind> key=value ...` (or `RESULT <kind> {json}`) lines on its
second serial port; they are parsed and appended to `<run>/vsriov.jsonl` as they arrive.
Emulated hardware (QEMU/TCG): shapes and ratios carry over to real servers, absolute times do not.
"""
from __future__ import annotations

import ctypes
import hashlib
import json
import os
import queue
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Literal

from tqdm.auto import tqdm

from fastiov_lib.config import REPO_ROOT, Profile, Testbed, VsriovSettings
from fastiov_lib.testbeds.vsriov.initramfs import InitramfsBuilder, InitramfsError, resolve_modules
from fastiov_lib.procs import stop_process_group
from fastiov_lib.run.rundir import JsonlWriter, RunDir

if TYPE_CHECKING:
    import pandas as pd

VSRIOV_FILE = "vsriov.jsonl"
GUEST_DIR = Path(__file__).resolve().parent / "guest"
DEBIAN_MIRROR = "http://deb.debian.org/debian"
DEBIAN_SECURITY = "http://deb.debian.org/debian-security"
DEBIAN_KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")
HOST_PACKAGES = ("qemu-system-x86", "busybox-static", "gcc", "libc6-dev")
EMULATION_NOTE = "emulated hardware (QEMU/TCG): shapes and ratios carry over, absolute times do not"

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
GUEST_MODULES = ("igb", "nvme", "vfio-pci", "vfio_iommu_type1", "virtio_pci", "9pnet_virtio", "9p")
BUSYBOX_APPLETS = ("sh", "mount", "umount", "cat", "echo", "ls", "modprobe", "readlink", "basename", "grep",
                   "poweroff", "dmesg", "tr", "cut", "head", "tail", "sed", "wc", "mkdir", "chroot", "sync",
                   "sleep", "uname", "env", "true", "false", "timeout")


class VsriovError(RuntimeError):
    """The virtual SR-IOV host could not be set up, booted or completed; the message says why."""


# --------------------------------------------------------------------------------------------
# Guest results: `RESULT <kind> ...` lines
# --------------------------------------------------------------------------------------------

_RESULT_RE = re.compile(r"^RESULT\s+([A-Za-z_][A-Za-z0-9_]*)(?:\s+(.*))?$")
_INT_RE = re.compile(r"^-?\d+$")
_FLOAT_RE = re.compile(r"^-?(\d+\.\d*|\.\d+|\d+)([eE][-+]?\d+)?$")


@dataclass(frozen=True)
class GuestResult:
    """One measurement line from the guest: its kind (numvfs, bind, vfio_open, ...) and fields."""

    kind: str
    fields: dict[str, Any]


class ResultParseError(ValueError):
    """A line that starts with RESULT but is malformed."""


def _typed(value: str) -> Any:
    if _INT_RE.match(value):
        return int(value)
    if _FLOAT_RE.match(value):
        return float(value)
    return value


def parse_result_line(line: str) -> GuestResult | None:
    """Parse one line of the guest's result channel.

    Returns None for lines that are not results (progress markers, program output); raises
    ResultParseError for a RESULT line whose fields are not `key=value` pairs or valid JSON.
    """
    line = line.strip().replace("\r", "")
    match = _RESULT_RE.match(line)
    if not match:
        if line == "RESULT" or line.startswith(("RESULT ", "RESULT\t")):
            raise ResultParseError(f"not a RESULT line of the form 'RESULT <kind> key=value ...': {line!r}")
        return None
    kind, rest = match.group(1), (match.group(2) or "").strip()
    if rest.startswith("{"):
        try:
            obj = json.loads(rest)
        except json.JSONDecodeError as exc:
            raise ResultParseError(f"RESULT {kind}: invalid JSON ({exc.msg}): {rest[:120]!r}") from None
        if not isinstance(obj, dict):
            raise ResultParseError(f"RESULT {kind}: expected a JSON object, got {type(obj).__name__}")
        return GuestResult(kind, obj)
    fields: dict[str, Any] = {}
    for token in rest.split():
        key, sep, value = token.partition("=")
        if not sep or not key:
            raise ResultParseError(f"RESULT {kind}: field {token!r} is not key=value")
        fields[key] = _typed(value)
    return GuestResult(kind, fields)


# --------------------------------------------------------------------------------------------
# Set-up: host tools, private apt, kernel, QEMU, initramfs
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SetupStep:
    """One set-up step as data (what `prepare_guest` will do); `done` when its output is cached."""

    name: str
    detail: str
    done: bool
    changes_host: bool = False


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


def _run(cmd: list[str], timeout: float, what: str, env: dict[str, str] | None = None,
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
    if not busybox or not _is_static(Path(busybox)):
        missing.append(("busybox (static)", "busybox-static"))
    if not shutil.which("gcc"):
        missing.append(("gcc", "gcc"))
    if not Path("/usr/include/linux/vfio.h").exists():
        missing.append(("/usr/include/linux/vfio.h", "linux-libc-dev"))
    for tool in ("apt-get", "dpkg-deb"):
        if not shutil.which(tool):
            missing.append((tool, "apt"))
    return missing


def _is_static(path: Path) -> bool:
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
    settings = _settings(testbed)
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
    _run(["apt-get", "-o", "DPkg::Lock::Timeout=600", *command[1:]], 900, "installing host packages", env=env)
    return packages


def _settings(testbed: Testbed) -> VsriovSettings:
    if testbed.vsriov is None:
        raise VsriovError(f"testbed {testbed.name!r} has no 'vsriov:' section (not a virtual SR-IOV host)")
    return testbed.vsriov


class PrivateApt:
    """apt-get/apt-cache with their own sources and lists under the work dir.

    Reaches bookworm (+updates, security) and bookworm-backports without touching the host's apt
    configuration; downloads only (nothing is installed from here).
    """

    def __init__(self, root: Path):
        self.root = root
        self.sources = root / "sources.list"
        self.lists = root / "lists"
        self.cache = root / "cache"

    def options(self) -> list[str]:
        return ["-o", f"Dir::Etc::SourceList={self.sources}", "-o", "Dir::Etc::SourceParts=/dev/null",
                "-o", f"Dir::State::Lists={self.lists}", "-o", f"Dir::Cache={self.cache}",
                "-o", "APT::Sandbox::User=root", "-o", "Acquire::Retries=3"]

    def sources_text(self) -> str:
        signed = f" [signed-by={DEBIAN_KEYRING}]" if DEBIAN_KEYRING.exists() else ""
        return "".join([
            f"deb{signed} {DEBIAN_MIRROR} bookworm main\n",
            f"deb{signed} {DEBIAN_MIRROR} bookworm-updates main\n",
            f"deb{signed} {DEBIAN_SECURITY} bookworm-security main\n",
            f"deb{signed} {DEBIAN_MIRROR} bookworm-backports main\n",
        ])

    @property
    def fresh(self) -> bool:
        stamp = self.root / "updated"
        return stamp.exists() and time.time() - stamp.stat().st_mtime < 7 * 86400 and \
            self.sources.exists() and self.sources.read_text() == self.sources_text()

    def update(self, force: bool = False) -> None:
        if self.fresh and not force:
            return
        (self.lists / "partial").mkdir(parents=True, exist_ok=True)
        (self.cache / "archives" / "partial").mkdir(parents=True, exist_ok=True)
        self.sources.write_text(self.sources_text())
        _run(["apt-get", *self.options(), "update"], 600, "apt-get update (private lists for bookworm + backports)")
        (self.root / "updated").touch()

    def depends(self, package: str) -> list[str]:
        out = _run(["apt-cache", *self.options(), "depends", package], 60, f"apt-cache depends {package}")
        return re.findall(r"^\s*Depends:\s*(\S+)", out.stdout, re.M)

    def download(self, spec: str, dest: Path) -> Path:
        """`apt-get download spec` into dest (e.g. `qemu-system-x86/bookworm-backports`); the .deb path."""
        dest.mkdir(parents=True, exist_ok=True)
        name = spec.split("/")[0].split("=")[0]
        before = set(dest.glob(f"{name}_*.deb"))
        _run(["apt-get", *self.options(), "download", spec], 900, f"apt-get download {spec}", cwd=dest)
        debs = sorted(set(dest.glob(f"{name}_*.deb")) - before) or sorted(dest.glob(f"{name}_*.deb"))
        if not debs:
            raise VsriovError(f"apt-get download {spec}: no {name}_*.deb appeared in {dest}")
        return debs[-1]


def _extract_deb(deb: Path, dest: Path) -> None:
    tmp = dest.with_name(dest.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    _run(["dpkg-deb", "-x", str(deb), str(tmp)], 600, f"unpacking {deb.name}")
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
            _run(["dpkg-deb", "-x", str(deb), str(tmp)], 600, f"unpacking {deb.name}")
        shutil.rmtree(root, ignore_errors=True)
        tmp.rename(root)
    install = QemuInstall(binary, (0, 0, 0), "bookworm-backports (work dir)",
                          (root / "usr/share/qemu", root / "usr/share/seabios"),
                          root / "usr/lib/x86_64-linux-gnu/qemu")
    version = qemu_version(binary, install.env())
    if version is None:
        missing = _run(["ldd", str(binary)], 30, "ldd").stdout
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
    settings = _settings(testbed)
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


def compile_vfbench(work_dir: Path) -> Path:
    """guest/vfbench.c compiled statically (cached by source hash)."""
    src = GUEST_DIR / "vfbench.c"
    digest = hashlib.sha256(src.read_bytes()).hexdigest()[:12]
    out = work_dir / "build" / f"vfbench-{digest}"
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(".tmp")
        _run(["gcc", "-O2", "-Wall", "-static", "-pthread", "-o", str(tmp), str(src)], 300, "compiling vfbench.c")
        os.replace(tmp, out)
        for old in out.parent.glob("vfbench-*"):
            if old != out:
                old.unlink()
    return out


def build_initramfs(kernel: GuestKernel, vfbench: Path, busybox: Path, out_dir: Path,
                    init_script: Path = GUEST_DIR / "init.sh", modules: Iterable[str] = GUEST_MODULES) -> Path:
    """Write the guest's initramfs (cached by the hash of its inputs) and return its path.

    Contents: /init, busybox + applet links in /bin, /bin/vfbench, the modules (uncompressed) with
    their dependencies and a modules.dep made by `busybox depmod`, /dev/console.
    """
    modules = tuple(modules)
    key = hashlib.sha256()
    for part in (kernel.version, ",".join(modules), ",".join(BUSYBOX_APPLETS)):
        key.update(part.encode())
    for path in (init_script, vfbench, busybox):
        key.update(hashlib.sha256(path.read_bytes()).digest())
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
    _run([str(busybox), "depmod", "-b", str(staging), kernel.version], 120, "busybox depmod")
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
    img.add_tree(staging / "lib", "lib")
    img.write(out)
    shutil.rmtree(staging, ignore_errors=True)
    for old in out_dir.glob("initramfs-*.cpio.gz"):  # earlier builds of other inputs
        if old != out:
            old.unlink()
    return out


def plan_setup(testbed: Testbed) -> list[SetupStep]:
    """What `prepare_guest` will do on this host, as data (nothing is fetched or changed)."""
    settings = _settings(testbed)
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
        SetupStep("vfbench", "guest/vfbench.c compiled statically", any((wd / "build").glob("vfbench-*"))),
        SetupStep("initramfs", "busybox + modules + vfbench + /init as cpio newc",
                  any((wd / "build").glob("initramfs-*.cpio.gz"))),
    ]
    return steps


def prepare_guest(testbed: Testbed, progress: bool = True) -> GuestImage:
    """Fetch and build everything a boot needs (idempotent; cached under the work dir)."""
    settings = _settings(testbed)
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
        busybox = Path(shutil.which("busybox") or "/bin/busybox").resolve()
        initramfs = build_initramfs(kernel, vfbench, busybox, wd / "build")
        bar.update()
    finally:
        bar.close()
    return GuestImage(qemu, device, kernel, initramfs, note)


# --------------------------------------------------------------------------------------------
# Booting the guest
# --------------------------------------------------------------------------------------------

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


# --------------------------------------------------------------------------------------------
# A session: set-up, one boot with the NIC steps and (optionally) the micro-benchmarks
# --------------------------------------------------------------------------------------------

@dataclass
class VsriovResult:
    """What one guest session did; its measurements are in `<run>/vsriov.jsonl`."""

    session_id: str
    status: Literal["ok", "failed", "timeout", "interrupted"]
    error: str | None
    device: str
    device_note: str
    qemu_version: str
    qemu_source: str
    kernel: str
    boot_s: float | None
    total_s: float
    records: int
    nic_steps: dict[str, bool]  # step -> ok, as reported by the guest
    jsonl: Path
    console_log: Path
    bad_lines: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def to_frame(self) -> "pd.DataFrame":
        """The summary as a one-row DataFrame (what 03_nic shows)."""
        import pandas as pd

        return pd.DataFrame([self.summary()])

    def summary(self) -> dict[str, Any]:
        """A flat dict for a one-row table (no paths)."""
        d = asdict(self)
        for key in ("jsonl", "console_log", "bad_lines"):
            d.pop(key)
        d["nic_steps"] = ", ".join(f"{k}={'ok' if v else 'FAILED'}" for k, v in self.nic_steps.items()) or "-"
        return d


def make_plan(testbed: Testbed, profile: Profile, device: DeviceModel, benchmarks: bool, nic_steps: bool = True) -> GuestPlan:
    """The guest plan for a profile: VF counts capped at what the device offers; DMA sizes checked
    against the guest memory."""
    settings = _settings(testbed)
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


def run_guest_session(testbed: Testbed, run: RunDir, profile: Profile, *, benchmarks: bool = True,
                      nic_steps: bool = True, progress: bool = True, raise_on_failure: bool = True,
                      image: GuestImage | None = None) -> VsriovResult:
    """Set up (cached), boot the guest once, run the NIC steps and the micro-benchmarks, shut down.

    `image` defaults to what `prepare_guest(testbed)` builds (pass one to reuse it across sessions).

    Every guest measurement is appended to `<run>/vsriov.jsonl` as it arrives (kind, session_id,
    device and the guest's fields); a final `session` record says how the boot ended. Logs:
    `<run>/logs/vsriov-<session>-console.log` (kernel), `-guest.log` (result channel), `-qemu.log`.
    Raises VsriovError when the guest fails, hangs or times out (unless raise_on_failure=False).
    """
    settings = _settings(testbed)
    image = image or prepare_guest(testbed, progress=progress)
    plan = make_plan(testbed, profile, image.device, benchmarks, nic_steps)
    session_id = time.strftime("%Y%m%d-%H%M%S") + f"-{os.getpid()}"
    run.logs_dir.mkdir(parents=True, exist_ok=True)
    console_log = run.logs_dir / f"vsriov-{session_id}-console.log"
    guest_log = run.logs_dir / f"vsriov-{session_id}-guest.log"
    qemu_log = run.logs_dir / f"vsriov-{session_id}-qemu.log"
    cmd = qemu_command(image, settings, plan, console_log, share_root=Path("/"))
    meta = {"session_id": session_id, "device": image.device.name, "qemu_version": image.qemu.version_text,
            "kernel": image.kernel.version}
    nic: dict[str, bool] = {}
    writer = JsonlWriter(run.path / VSRIOV_FILE)
    bar = tqdm(desc=f"vsriov guest ({image.device.name})", unit=" results", disable=not progress, leave=False)
    outcome: BootOutcome | None = None
    where: dict[str, Any] = {"phase": "boot", "round_n": None}  # from the guest's VSRIOV markers

    def on_line(line: str) -> None:
        guest_fh.write(line + "\n")
        guest_fh.flush()
        m = re.match(r"VSRIOV (phase|round n)=(\S+)", line)
        if m and m.group(1) == "phase":
            where.update(phase=m.group(2), round_n=None)
            bar.set_postfix_str(m.group(2))
        elif m:
            where["round_n"] = int(m.group(2))
            bar.set_postfix_str(f"{m.group(2)} VFs")

    def on_result(result: GuestResult) -> None:
        record = {"kind": result.kind, **meta, **where, "host_monotonic_ns": time.monotonic_ns()}
        record.update({k: v for k, v in result.fields.items() if k not in ("kind", "session_id")})
        writer.append(record)
        if result.kind == "nic_step":
            nic[str(result.fields.get("step"))] = bool(result.fields.get("ok"))
            _record_nic_timings(run, result, meta)
        bar.update()

    status: str = "interrupted"
    error: str | None = "interrupted"
    try:
        with open(qemu_log, "a") as qlog:
            qlog.write("$ " + shlex.join(cmd) + "\n")
        with open(guest_log, "a", encoding="utf-8") as guest_fh:
            outcome = boot_guest(cmd, boot_timeout_s=settings.boot_timeout_s, run_timeout_s=settings.run_timeout_s,
                                 env=image.qemu.env(), on_result=on_result, on_line=on_line, stderr_log=qemu_log)
        status, error = outcome.status, outcome.error
        if status == "ok":
            error = _check_guest_steps(outcome.results, plan)
            status = "failed" if error else "ok"
    finally:
        bar.close()
        writer.append({"kind": "session", **meta, "status": status, "error": error, "device_note": image.device_note,
                       "qemu_source": image.qemu.source, "boot_s": outcome.boot_s if outcome else None,
                       "total_s": outcome.total_s if outcome else None, "plan": asdict(plan),
                       "bad_lines": len(outcome.bad_lines) if outcome else None,
                       "emulation_note": EMULATION_NOTE})
        writer.close()
    result = VsriovResult(session_id, status, error, image.device.name, image.device_note,  # type: ignore[arg-type]
                          image.qemu.version_text, image.qemu.source, image.kernel.version,
                          outcome.boot_s if outcome else None, outcome.total_s if outcome else 0.0,
                          len(outcome.results) if outcome else 0, nic, run.path / VSRIOV_FILE, console_log,
                          outcome.bad_lines if outcome else [])
    if raise_on_failure and not result.ok:
        tail = console_tail(console_log)
        raise VsriovError(f"vsriov session {session_id}: {status}: {error} (console log: {console_log}"
                          + (f"; it ends with: {tail}" if tail else "") + ")")
    return result


_CONSOLE_WORDS = re.compile(r"Kernel panic|BUG:|Oops|Unable to|not syncing|timed out|error", re.I)


def console_tail(console_log: Path, lines: int = 3) -> str:
    """What the guest's kernel console last said: its last panic/error line (a panic's call trace
    follows it) and the last lines, joined by ' | '."""
    try:
        text = console_log.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    last = [ln.strip() for ln in text[-lines:]]
    alarming = [ln.strip() for ln in text if _CONSOLE_WORDS.search(ln)]
    if alarming and alarming[-1] not in last:
        last = [alarming[-1], "..."] + last
    return " | ".join(last)


def _record_nic_timings(run: RunDir, result: GuestResult, meta: dict[str, Any]) -> None:
    """The guest's NicReport timings go to <run>/nic.jsonl too, as on a real SR-IOV host."""
    report = result.fields.get("report")
    timings = report.get("timings") if isinstance(report, dict) else None
    if not timings:
        return
    from fastiov_lib.hw import nic

    nic.append_records(run.path / nic.NIC_RECORDS_FILE,
                       [{**t, "source": "vsriov-guest", "session_id": meta["session_id"]} for t in timings
                        if isinstance(t, dict)])


def _check_guest_steps(results: list[GuestResult], plan: GuestPlan) -> str | None:
    """A guest that ran to the end may still have failed a step; name the first one."""
    for r in results:
        if r.kind == "step" and r.fields.get("rc") not in (0, None):
            return f"guest step {r.fields.get('name')} exited {r.fields.get('rc')}"
        if r.kind == "pf" and r.fields.get("found") == 0:
            return f"the guest sees no SR-IOV PF with id {r.fields.get('pfid')}"
    if plan.nic_steps:
        steps = {str(r.fields.get("step")): r.fields for r in results if r.kind == "nic_step"}
        for name in ("import", "prepare_vfs", "release_vfs"):
            if name not in steps:
                return f"NIC step {name} did not report"
            if not steps[name].get("ok"):
                return f"NIC step {name} failed: {steps[name].get('error')}"
    if plan.benchmarks and not any(r.kind == "numvfs" for r in results):
        return "the benchmarks reported no numvfs result"
    return None


def load_records(run_dir: Path) -> list[dict[str, Any]]:
    """The records of `<run>/vsriov.jsonl` (a malformed line is skipped, never fatal)."""
    from fastiov_lib.run.rundir import read_jsonl

    records, _report = read_jsonl(Path(run_dir) / VSRIOV_FILE)
    return records


def clean(testbed: Testbed, keep_downloads: bool = True) -> list[Path]:
    """Remove built artefacts (and, unless keep_downloads, the downloaded .debs and apt lists)."""
    wd = _settings(testbed).work_dir
    targets = [wd / "build", wd / "qemu-backports.partial"]
    if not keep_downloads:
        targets += [wd / "debs", wd / "apt", wd / "kernel", wd / "qemu-backports"]
    removed = []
    for t in targets:
        if t.exists():
            shutil.rmtree(t)
            removed.append(t)
    return removed
