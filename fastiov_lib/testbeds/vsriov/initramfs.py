"""Initramfs images written in Python: cpio "newc" archives and kernel modules with their dependencies."""
from __future__ import annotations

import gzip
import io
import lzma
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable
from fastiov_lib.testbeds.base import BackendError


class InitramfsError(BackendError):
    """An initramfs could not be built (a module missing or in an unsupported format)."""


@dataclass(frozen=True)
class CpioEntry:
    """One member of a newc archive: a directory, a regular file, a symlink or a device node."""

    name: str  # path inside the archive, without a leading '/'
    mode: int  # full st_mode (type bits + permissions)
    data: bytes = b""  # file contents, or the link target for symlinks
    rdev: tuple[int, int] = (0, 0)


def _newc_header(ino: int, entry: CpioEntry, name: bytes) -> bytes:
    fields = [ino, entry.mode, 0, 0, 1 if not stat.S_ISDIR(entry.mode) else 2, 0, len(entry.data), 0, 0,
              entry.rdev[0], entry.rdev[1], len(name) + 1, 0]
    return b"070701" + b"".join(f"{v:08x}".encode() for v in fields)


def _pad4(n: int) -> bytes:
    return b"\0" * ((4 - n % 4) % 4)


def write_cpio_newc(entries: Iterable[CpioEntry], out: io.BufferedIOBase) -> int:
    """Write entries as a cpio 'newc' archive (what the kernel unpacks as initramfs); returns bytes written.

    Parent directories must come before their members; owners are root, mtimes 0 (reproducible).
    """
    written = 0
    ino = 1
    for entry in list(entries) + [CpioEntry("TRAILER!!!", 0)]:
        name = entry.name.lstrip("/").encode()
        if not name:
            raise ValueError("cpio entry with an empty name")
        header = _newc_header(ino if entry.name != "TRAILER!!!" else 0, entry, name)
        chunk = header + name + b"\0"
        chunk += _pad4(len(chunk))
        chunk += entry.data + _pad4(len(entry.data))
        out.write(chunk)
        written += len(chunk)
        ino += 1
    return written


def read_cpio_newc(data: bytes) -> list[CpioEntry]:
    """Parse a newc archive (used to check what the builder wrote)."""
    entries: list[CpioEntry] = []
    pos = 0
    while True:
        if data[pos:pos + 6] != b"070701":
            raise ValueError(f"offset {pos}: not a newc header")
        vals = [int(data[pos + 6 + 8 * i: pos + 14 + 8 * i], 16) for i in range(13)]
        mode, filesize, rmaj, rmin, namesize = vals[1], vals[6], vals[9], vals[10], vals[11]
        name_start = pos + 110
        name = data[name_start:name_start + namesize - 1].decode()
        body = name_start + namesize
        body += (4 - body % 4) % 4
        if name == "TRAILER!!!":
            return entries
        entries.append(CpioEntry(name, mode, data[body:body + filesize], (rmaj, rmin)))
        pos = body + filesize
        pos += (4 - pos % 4) % 4


class InitramfsBuilder:
    """Collects files for the guest's initramfs and writes it as gzip'd cpio newc."""

    def __init__(self) -> None:
        self._entries: dict[str, CpioEntry] = {}

    def _ensure_parents(self, name: str) -> None:
        parts = name.strip("/").split("/")[:-1]
        for i in range(1, len(parts) + 1):
            d = "/".join(parts[:i])
            if d not in self._entries:
                self._entries[d] = CpioEntry(d, stat.S_IFDIR | 0o755)

    def add_dir(self, name: str) -> None:
        name = name.strip("/")
        self._ensure_parents(name)
        self._entries.setdefault(name, CpioEntry(name, stat.S_IFDIR | 0o755))

    def add_file(self, name: str, data: bytes, mode: int = 0o644) -> None:
        name = name.strip("/")
        self._ensure_parents(name)
        self._entries[name] = CpioEntry(name, stat.S_IFREG | mode, data)

    def add_symlink(self, name: str, target: str) -> None:
        name = name.strip("/")
        self._ensure_parents(name)
        self._entries[name] = CpioEntry(name, stat.S_IFLNK | 0o777, target.encode())

    def add_char_device(self, name: str, major: int, minor: int, mode: int = 0o600) -> None:
        name = name.strip("/")
        self._ensure_parents(name)
        self._entries[name] = CpioEntry(name, stat.S_IFCHR | mode, b"", (major, minor))

    def add_tree(self, src: Path, dest: str) -> None:
        """Copy a directory tree (files and symlinks) into the archive below `dest`."""
        for path in sorted(src.rglob("*")):
            rel = f"{dest.strip('/')}/{path.relative_to(src).as_posix()}"
            if path.is_symlink():
                self.add_symlink(rel, os.readlink(path))
            elif path.is_dir():
                self.add_dir(rel)
            else:
                self.add_file(rel, path.read_bytes(), stat.S_IMODE(path.stat().st_mode))

    @property
    def names(self) -> list[str]:
        return sorted(self._entries)

    def write(self, path: Path) -> int:
        """Write the gzip'd archive atomically; returns its size in bytes."""
        tmp = path.with_suffix(path.suffix + ".tmp")
        # sorted: a directory's name sorts before its members, so parents come first
        entries = [self._entries[n] for n in sorted(self._entries)]
        with open(tmp, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=1, mtime=0) as gz:
            write_cpio_newc(entries, gz)
        os.replace(tmp, path)
        return path.stat().st_size


# --------------------------------------------------------------------------------------------
# Kernel modules
# --------------------------------------------------------------------------------------------

def module_name(path: Path) -> str:
    """`vfio-pci.ko.xz` -> `vfio_pci` (the kernel treats '-' and '_' alike)."""
    name = path.name
    for suffix in (".xz", ".zst", ".gz"):
        name = name.removesuffix(suffix)
    return name.removesuffix(".ko").replace("-", "_")


def read_module(path: Path) -> bytes:
    """The uncompressed .ko (busybox's depmod/modprobe want plain ELF files)."""
    data = path.read_bytes()
    if path.name.endswith(".xz"):
        return lzma.decompress(data)
    if path.name.endswith(".gz"):
        return gzip.decompress(data)
    if path.name.endswith(".zst"):
        raise InitramfsError(f"{path}: zstd-compressed modules are not supported (expected .ko or .ko.xz)")
    return data


_DEPENDS_RE = re.compile(rb"(?:^|\x00)depends=([^\x00]*)\x00")


def module_depends(ko: bytes) -> list[str]:
    """The `depends=` entry of a module's .modinfo section (names, '_' normalised)."""
    match = _DEPENDS_RE.search(ko)
    if not match or not match.group(1):
        return []
    return [d.decode().replace("-", "_") for d in match.group(1).split(b",") if d]


def resolve_modules(modules_dir: Path, wanted: Iterable[str]) -> dict[str, tuple[Path, bytes]]:
    """Wanted modules plus everything they depend on: name -> (source path, uncompressed bytes).

    Modules built into the kernel (modules.builtin) are skipped; an unknown module is an error.
    """
    index = {module_name(p): p for p in (modules_dir / "kernel").rglob("*.ko*")}
    builtin = set()
    builtin_file = modules_dir / "modules.builtin"
    if builtin_file.exists():
        builtin = {module_name(Path(line.strip())) for line in builtin_file.read_text().splitlines() if line.strip()}
    out: dict[str, tuple[Path, bytes]] = {}
    todo = [w.replace("-", "_") for w in wanted]
    while todo:
        name = todo.pop()
        if name in out or name in builtin:
            continue
        if name not in index:
            raise InitramfsError(f"kernel module {name!r} not found under {modules_dir / 'kernel'}")
        data = read_module(index[name])
        out[name] = (index[name], data)
        todo.extend(module_depends(data))
    return out


