"""Offline sources (`--sources DIR`): pre-fetched archives, each verified against the manifest's pin.

The folder itself is never trusted: an archive is used only if the manifest names it as an offline
copy of an entry and it matches that copy's pin, either the sha256 of the archive file or the git
tree id of its unpacked top folder (computed with a throw-away git index outside the tree, so the
tree does not become a git checkout). Patches are found in the folder or inside the original
artifact's archive (`patches/<name>`) and checked by their sha256 from series.yaml.
"""
from __future__ import annotations

import os
import shutil
import tarfile
import tempfile
from pathlib import Path

from fastiov_lib import sh
from fastiov_lib.testbeds.fastiov_host.build.manifest import (
    BinaryEntry,
    ChecksumMismatch,
    ManifestError,
    OfflineCopy,
    PatchEntry,
    sha256_file,
)


def git_tree_id(folder: Path, scratch: Path) -> str:
    """The git tree id of a folder's content (`git add -A -f && git write-tree`), without touching it."""
    git_dir = Path(scratch) / "tree-id.git"
    shutil.rmtree(git_dir, ignore_errors=True)
    env = {**os.environ, "GIT_DIR": str(git_dir), "GIT_WORK_TREE": str(folder),
           "GIT_INDEX_FILE": str(git_dir / "index"), "GIT_CONFIG_NOSYSTEM": "1", "HOME": str(scratch)}
    try:
        sh.run(["git", "init", "-q"], env=env, cwd=scratch, what="git init (tree id)", error=ManifestError)
        sh.run(["git", "-c", "core.autocrlf=false", "-c", "core.fileMode=true", "add", "-A", "-f", "."],
               env=env, cwd=folder, timeout=900, what=f"git add (tree id of {folder})", error=ManifestError)
        return sh.output(["git", "write-tree"], env=env, cwd=folder, timeout=300,
                         what=f"git write-tree ({folder})", error=ManifestError)
    finally:
        shutil.rmtree(git_dir, ignore_errors=True)


def offline_copy(entry: BinaryEntry, sources: Path) -> tuple[OfflineCopy, Path]:
    """The first offline copy of `entry` present in `sources` (ManifestError naming what was looked for)."""
    for copy in entry.offline:
        path = Path(sources) / copy.file
        if path.is_file():
            return copy, path
    wanted = ", ".join(c.file for c in entry.offline) or "(the manifest names no offline copy)"
    raise ManifestError(f"{entry.name}: no offline copy in {sources}; looked for {wanted}")


def check_archive_sha(entry: BinaryEntry, copy: OfflineCopy, path: Path) -> str:
    """Verify an offline archive by its sha256 where the manifest pins one; returns the status."""
    if not copy.sha256:
        return "checked after unpacking (tree id)"
    actual = sha256_file(path)
    if actual != copy.sha256:
        raise ChecksumMismatch(path, copy.sha256, actual, entry.name)
    return "sha256 verified"


def unpack_offline(entry: BinaryEntry, copy: OfflineCopy, archive: Path, dest: Path, scratch: Path,
                   log=None) -> dict[str, str]:
    """Unpack an offline archive's top folder into `dest` (which must not exist); verify its tree id."""
    dest = Path(dest)
    scratch = Path(scratch)
    scratch.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="unpack-", dir=scratch))
    try:
        sh.run(["tar", "-xf", str(archive), "-C", str(work)], timeout=900, what=f"unpack {archive.name}",
               error=ManifestError)
        top = work / copy.top
        if not top.is_dir():
            found = ", ".join(sorted(p.name for p in work.iterdir()))
            raise ManifestError(f"{entry.name}: {archive} has no top folder {copy.top!r} (found: {found})")
        info = {"archive": str(archive), "file": copy.file}
        if copy.tree:
            tree = git_tree_id(top, scratch)
            if log is not None:
                log.write(f"{entry.name}: tree id of {archive.name}/{copy.top}: {tree}\n")
            if tree != copy.tree:
                raise ManifestError(f"{entry.name}: {archive}: tree id {tree} does not match the pinned "
                                    f"tree {copy.tree} (commit {copy.commit or '?'}); archive not used")
            info.update(tree=tree, verification="tree id verified")
        if copy.sha256:
            info.update(sha256=copy.sha256, verification=info.get("verification", "sha256 verified"))
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(top, dest)
        return info
    finally:
        shutil.rmtree(work, ignore_errors=True)


def fetch_patch_offline(patch: PatchEntry, sources: Path, dest_dir: Path, container: str | None,
                        container_top: str | None) -> Path:
    """Copy a patch from `sources` (loose, or inside the artifact archive) to dest_dir; check sha256."""
    dest_dir = Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    dest = dest_dir / patch.cache_name()
    loose = Path(sources) / patch.name
    tmp = dest.with_name(dest.name + ".part")
    if loose.is_file():
        shutil.copyfile(loose, tmp)
    elif container and (Path(sources) / container).is_file():
        member = f"{container_top}/patches/{patch.name}" if container_top else f"patches/{patch.name}"
        try:
            with tarfile.open(Path(sources) / container) as tar:
                fh = tar.extractfile(member)
                if fh is None:
                    raise KeyError(member)
                tmp.write_bytes(fh.read())
        except KeyError:
            raise ManifestError(f"{patch.name}: not in {sources} and not in {container} "
                                f"(looked for {member})") from None
    else:
        raise ManifestError(f"{patch.name}: not in {sources} (neither {patch.name} nor {container or 'an archive'})")
    if patch.sha256:
        actual = sha256_file(tmp)
        if actual != patch.sha256:
            tmp.unlink()
            raise ChecksumMismatch(dest, patch.sha256, actual, patch.name)
    os.replace(tmp, dest)
    return dest
