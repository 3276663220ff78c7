"""Safe file access: read only regular files, with a size bound; write only inside an output folder,
never through a link out of it, by atomic replacement; swap a whole folder so a failed write keeps the
old one. Stdlib only (hw/ uses it, and hw/ also runs inside the vsriov guest).

Every refusal is a `FileRefused` naming the file and what was expected; an OSError from a write
names the file it was writing (a bare "No space left on device" names nothing).
"""
from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat
import tempfile
from pathlib import Path
from typing import Iterator, TextIO

KIB, MIB, GIB = 1 << 10, 1 << 20, 1 << 30
# sysfs attributes and procfs files the artifact reads are a line or a table; 1 MiB bounds a link to
# /dev/zero planted in a fake tree as well as a very long route table
KERNEL_FILE_LIMIT = MIB
# a run directory's files: records are loaded whole (256 MiB of pods.jsonl is some 700,000 pods, far
# beyond any campaign), logs are streamed and only their matching lines kept, run.json is small
RECORDS_LIMIT = 256 * MIB
LOG_LIMIT = 4 * GIB
RUN_JSON_LIMIT = 16 * MIB


class FileRefused(ValueError):
    """A file is not what the artifact reads or writes (a FIFO, a device, too big, a link out of an
    output folder); the message names the file and what was expected."""


def file_kind(mode: int) -> str:
    """What a stat mode is, in words ("a FIFO", "a character device", ...)."""
    for test, name in ((stat.S_ISREG, "a regular file"), (stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket"), (stat.S_ISLNK, "a symbolic link")):
        if test(mode):
            return name
    return "a special file"


def _open_checked(path: Path, limit: int, what: str) -> int:
    """A blocking descriptor of a regular file of at most `limit` bytes; FileRefused otherwise.

    Opened without blocking (a FIFO would wait for a writer forever) and checked on the descriptor,
    so a file swapped for a device between a check and the read is refused too.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            raise FileRefused(f"{path}: file not found") from None
        if exc.errno == errno.ELOOP:
            raise FileRefused(f"{path}: a symbolic link loop, expected a regular file") from None
        raise FileRefused(f"{path}: cannot be read ({exc.strerror})") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise FileRefused(f"{path}: {file_kind(st.st_mode)}, expected a regular file ({what})")
        if st.st_size > limit:
            raise FileRefused(f"{path}: {st.st_size} bytes, larger than the {limit} bytes a {what} may have; "
                              "is this the right file?")
        os.set_blocking(fd, True)
        return fd
    except BaseException:
        os.close(fd)
        raise


def read_regular_bytes(path: str | Path, limit: int, what: str = "file") -> bytes:
    """The bytes of a regular file of at most `limit` bytes; FileRefused for anything else.

    A file that grows past the bound while being read is refused rather than read on (procfs files
    say size 0).
    """
    path = Path(path)
    fd = _open_checked(path, limit, what)
    try:
        chunks, size = [], 0
        while size <= limit:
            chunk = os.read(fd, min(limit + 1 - size, MIB))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > limit:
            raise FileRefused(f"{path}: larger than the {limit} bytes a {what} may have (it grew while read); "
                              "is this the right file?")
        return b"".join(chunks)
    except OSError as exc:
        raise FileRefused(f"{path}: cannot be read ({exc.strerror})") from None
    finally:
        os.close(fd)


def open_regular(path: str | Path, limit: int, what: str = "file", errors: str = "replace") -> TextIO:
    """A regular file of at most `limit` bytes opened for reading UTF-8 text (lines streamed);
    FileRefused for a FIFO, a device, a folder or a larger file."""
    return open(_open_checked(Path(path), limit, what), encoding="utf-8", errors=errors, closefd=True)


def read_regular_text(path: str | Path, limit: int, what: str = "file") -> str:
    """A regular file of at most `limit` bytes as UTF-8 text; FileRefused naming the file otherwise."""
    raw = read_regular_bytes(path, limit, what)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FileRefused(f"{path}: not UTF-8 text (byte {exc.start}), expected a {what}") from None


def read_kernel_text(path: str | Path, limit: int = KERNEL_FILE_LIMIT) -> str | None:
    """A sysfs/procfs file's text, stripped; None when it cannot be read (absent, no permission, not a
    regular file, over the bound). Undecodable bytes stay visible as U+FFFD, for the caller's parser
    to refuse by name."""
    try:
        return read_regular_bytes(path, limit, "kernel file").decode("utf-8", errors="replace").strip()
    except FileRefused:
        return None


# ---------------------------------------------------------------- writing inside an output folder

def _resolved(path: Path) -> Path:
    return Path(os.path.realpath(path))


def check_inside(root: str | Path, path: str | Path) -> Path:
    """`path` (which need not exist) as it lies inside the output folder `root`; FileRefused when a
    link on the way leads out of `root`."""
    root, path = Path(root), Path(path)
    real_root = _resolved(root)
    real = _resolved(path)
    if real != real_root and real_root not in real.parents:
        hop = path
        for candidate in [path, *path.parents]:  # name the link that leads out
            if candidate == root or candidate in root.parents:
                break
            if candidate.is_symlink():
                hop = candidate
        target = os.readlink(hop) if hop.is_symlink() else real
        raise FileRefused(f"{hop}: a link out of {root} (to {target}); the artifact writes only inside its own "
                          "output folder, never through a link: remove the link (or copy the folder)")
    return real


def _named(exc: OSError, path: Path) -> OSError:
    """The same error naming `path` when it names no file."""
    if exc.filename:
        return exc
    return OSError(exc.errno, exc.strerror or str(exc), str(path))


def atomic_write_bytes(path: str | Path, data: bytes, root: str | Path | None = None) -> Path:
    """Replace `path` with `data` whole (temp file in the same folder, fsync, rename).

    A link at `path` itself is replaced, never written through; with `root`, a link on the way that
    leads out of it is refused. On failure the temp file is removed, the old file is untouched, and
    the OSError names `path`.
    """
    path = Path(path)
    if root is not None:
        check_inside(root, path.parent)
    fd, tmp = -1, None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
        os.close(fd)
        fd = -1
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
        tmp = None
    except OSError as exc:
        raise _named(exc, path) from None
    finally:
        if fd >= 0:
            os.close(fd)
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
    return path


def atomic_write_text(path: str | Path, text: str, root: str | Path | None = None) -> Path:
    """atomic_write_bytes for UTF-8 text."""
    return atomic_write_bytes(path, text.encode("utf-8"), root)


def _aside(path: Path) -> Path:
    return path.parent / f".{path.name}.previous"


@contextlib.contextmanager
def replaced_dir(path: str | Path, root: str | Path) -> Iterator[Path]:
    """A fresh, empty `path` inside `root` that replaces the old folder only if the block succeeds.

    The old folder is moved aside first; when the block raises (a full disk, a signal), what it
    wrote is removed and the old folder is put back, so the folder never holds a mix of new and
    stale files. A folder left aside by a killed earlier attempt is restored first. A link at `path`
    is refused: the files would land in someone else's folder.
    """
    path, root = Path(path), Path(root)
    check_inside(root, path.parent)
    if path.is_symlink():
        raise FileRefused(f"{path}: a link (to {os.readlink(path)}); the artifact writes only inside its own output "
                          "folder, never through a link: remove the link (or copy the folder)")
    if path.exists() and not path.is_dir():
        raise FileRefused(f"{path}: {file_kind(path.lstat().st_mode)}, expected a folder")
    aside = _aside(path)
    try:
        if aside.is_dir() and not aside.is_symlink():  # an earlier attempt was killed half-way
            if path.is_dir():
                shutil.rmtree(path)
            os.rename(aside, path)
        if path.is_dir():
            os.rename(path, aside)
        path.mkdir()
    except OSError as exc:
        raise _named(exc, path) from None
    try:
        yield path
    except BaseException as exc:
        shutil.rmtree(path, ignore_errors=True)
        if aside.is_dir():
            with contextlib.suppress(OSError):
                os.rename(aside, path)
        if isinstance(exc, OSError) and not exc.filename:
            raise _named(exc, path) from None
        raise
    shutil.rmtree(aside, ignore_errors=True)
