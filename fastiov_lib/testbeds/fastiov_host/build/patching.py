"""Apply a git-style patch the way the published FastIOV patches need it.

The published patches were made with `git diff` against trees that already held some of the files
they "create" (containerd: 6 dotfiles, QEMU: 368 files), and QEMU's carries git binary hunks that
GNU patch rejects. So a patch is split into its file sections first: a new-file section whose
target already exists with the same content (its blob id from the `index 0000000..<id>` line, or
the hunk text) is skipped and listed; a new file that exists with other content is an error naming
it; the rest goes to `git apply` (atomic: all or nothing, binary hunks included), checked first.
A hunk that does not apply is reported by file and hunk header.
"""
from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from fastiov_lib import sh
from fastiov_lib.testbeds.base import BackendError

_SECTION = re.compile(rb"(?m)^(?=diff --git )")
_HEADER = re.compile(rb"diff --git (\S+) (\S+)\n")
_HUNK = re.compile(rb"(?m)^@@ -\d+(?:,\d+)? \+\d+(?:,\d+)? @@.*$")
_FAILED = re.compile(r"error: patch failed: (.+):(\d+)")
_NOT_APPLY = re.compile(r"error: (.+): (patch does not apply|already exists in working directory|"
                        r"does not exist in index|No such file or directory|does not match index)")


class PatchError(BackendError):
    """A patch does not apply; the message names the patch, file and hunk."""


@dataclass(frozen=True)
class FileSection:
    """One `diff --git` section of a patch: the file it touches and its raw bytes."""

    path: str  # target path after stripping
    new_file: bool
    binary: bool
    new_blob: str  # abbreviated blob id of the post-image ('' if the patch has no index line)
    raw: bytes

    def hunks(self) -> list[str]:
        """The hunk headers of the section (`@@ -a,b +c,d @@ ...`), in order."""
        return [m.group(0).decode(errors="replace") for m in _HUNK.finditer(self.raw)]

    def new_text(self) -> bytes | None:
        """The content a text new-file section creates (None for binary sections)."""
        if self.binary or not self.new_file:
            return None
        parts = self.raw.split(b"\n@@", 1)
        if len(parts) != 2:
            return b""  # an empty new file
        lines = parts[1].split(b"\n", 1)[1].split(b"\n") if b"\n" in parts[1] else []
        content: list[bytes] = []
        for line in lines:
            if line.startswith(b"+"):
                content.append(line[1:] + b"\n")
            elif line.startswith(b"\\ No newline") and content:
                content[-1] = content[-1][:-1]
        return b"".join(content)


@dataclass
class PatchResult:
    """What applying one patch did: files patched, new files skipped because they exist identically."""

    name: str
    applied: list[str] = field(default_factory=list)
    skipped_identical: list[str] = field(default_factory=list)
    binary: list[str] = field(default_factory=list)


def _strip(path: bytes, strip: int) -> str:
    text = path.decode(errors="replace")
    return text.split("/", strip)[-1] if strip else text


def split_sections(patch: bytes, strip: int = 1) -> tuple[bytes, list[FileSection]]:
    """The preamble (mail header, diffstat) and the file sections of a git-style patch."""
    pieces = _SECTION.split(patch)
    sections = []
    for raw in pieces[1:]:
        m = _HEADER.match(raw)
        if m is None:
            raise PatchError(f"malformed section header: {raw[:80]!r}")
        head = raw.split(b"\n@@", 1)[0]
        index = re.search(rb"(?m)^index ([0-9a-f]+)\.\.([0-9a-f]+)", head)
        sections.append(FileSection(
            path=_strip(m.group(2), strip), new_file=bool(re.search(rb"(?m)^new file mode ", head)),
            binary=b"\nGIT binary patch\n" in raw or b"\nBinary files " in raw,
            new_blob=index.group(2).decode() if index else "", raw=raw))
    return pieces[0], sections


def git_blob_id(data: bytes) -> str:
    """The id git gives a blob with this content (sha1 of 'blob <len>\\0' + data)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _exists_identically(sec: FileSection, target: Path) -> bool | None:
    """True/False when the new file's content can be compared with the existing one; None if not."""
    data = target.read_bytes()
    if sec.new_blob and set(sec.new_blob) != {"0"}:
        return git_blob_id(data).startswith(sec.new_blob)
    text = sec.new_text()
    return None if text is None else text == data


def _through_symlink(tree: Path, rel: str) -> bool:
    """Whether a path in the tree passes through a symlinked folder (the patch may replace that link)."""
    p = tree
    for part in Path(rel).parts[:-1]:
        p = p / part
        if p.is_symlink():
            return True
    return False


def filter_patch(name: str, patch: bytes, tree: Path, strip: int = 1) -> tuple[bytes, PatchResult]:
    """The patch without its new-file sections whose file exists identically (listed in the result)."""
    preamble, sections = split_sections(patch, strip)
    result = PatchResult(name)
    if not sections:  # a plain unified diff (diff -u): nothing to filter, git apply takes it whole
        result.applied = [_strip(m.group(1), strip) for m in re.finditer(rb"(?m)^\+\+\+ (\S+)", patch)]
        if not result.applied:
            raise PatchError(f"{name}: no file sections (neither 'diff --git' nor '+++' lines)")
        return patch, result
    kept = [preamble]
    # QEMU's patch deletes symlinks (libvhost-user's include/atomic.h, standard-headers/linux) and
    # creates real files in their place: those exist "identically" only through a link that goes away
    deleted = {sec.path for sec in sections if b"\ndeleted file mode" in sec.raw.split(b"\n---", 1)[0]}
    for sec in sections:
        target = tree / sec.path
        replaced = sec.path in deleted or _through_symlink(tree, sec.path)
        if sec.new_file and not replaced and (target.exists() or target.is_symlink()):
            same = _exists_identically(sec, target) if target.is_file() else False
            if same:
                result.skipped_identical.append(sec.path)
                continue
            raise PatchError(f"{name}: creates {sec.path}, which already exists in {tree} with other content")
        kept.append(sec.raw)
        result.applied.append(sec.path)
        if sec.binary:
            result.binary.append(sec.path)
    return b"".join(kept), result


def _git_env(tree: Path) -> dict[str, str]:
    # git apply inside a subfolder of another repository silently applies nothing; the ceiling stops
    # git from looking above the tree for one
    env = dict(os.environ)
    env["GIT_CEILING_DIRECTORIES"] = str(Path(tree).resolve().parent)
    env.pop("GIT_DIR", None)
    env.pop("GIT_WORK_TREE", None)
    return env


def _explain(name: str, stderr: str, sections: dict[str, FileSection]) -> str:
    m = _FAILED.search(stderr)
    if m:
        path, line = m.group(1), int(m.group(2))
        sec = sections.get(path)
        hunks = sec.hunks() if sec else []
        which = [h for h in hunks if int(re.match(r"@@ -(\d+)", h).group(1)) == line]
        label = (f"hunk #{hunks.index(which[0]) + 1} `{which[0][:80]}`" if which
                 else f"the hunk at line {line}")
        return f"{name}: {path}: {label} does not apply"
    m = _NOT_APPLY.search(stderr)
    if m:
        return f"{name}: {m.group(1)}: {m.group(2)}"
    tail = " | ".join(stderr.strip().splitlines()[-3:])
    return f"{name}: git apply failed: {tail}"


def apply_patch(name: str, patch_file: Path, tree: Path, strip: int = 1, log=None,
                filtered_dir: Path | None = None) -> PatchResult:
    """Apply one patch to `tree` (checked first; atomic); PatchError names file and hunk otherwise."""
    tree = Path(tree)
    filtered, result = filter_patch(name, Path(patch_file).read_bytes(), tree, strip)
    out_dir = Path(filtered_dir) if filtered_dir else tree.parent
    out_dir.mkdir(parents=True, exist_ok=True)
    filtered_path = out_dir / f"{name}.filtered"
    filtered_path.write_bytes(filtered)
    if log is not None:
        for path in result.skipped_identical:
            log.write(f"{name}: skipped (new file exists, identical): {path}\n")
    if not result.applied:
        return result
    _, sections = split_sections(filtered, strip)
    by_path = {sec.path: sec for sec in sections}
    env = _git_env(tree)
    base = ["git", "apply", f"-p{strip}", "--whitespace=nowarn"]
    check = sh.run(base + ["--check", str(filtered_path)], cwd=tree, env=env, check=False, timeout=600,
                   what=f"git apply --check {name}")
    if log is not None:
        log.write(f"$ (cd {tree} && {' '.join(base)} --check {filtered_path})\n{check.stdout}{check.stderr}")
    if check.returncode != 0:
        raise PatchError(_explain(name, check.stderr, by_path) + "; the tree is unchanged")
    res = sh.run(base + [str(filtered_path)], cwd=tree, env=env, check=False, timeout=600,
                 what=f"git apply {name}")
    if log is not None:
        log.write(f"$ (cd {tree} && {' '.join(base)} {filtered_path})\n{res.stdout}{res.stderr}")
    if res.returncode != 0:
        raise PatchError(_explain(name, res.stderr, by_path) + " (after a clean check); the tree is unchanged")
    return result


def revert_patch(name: str, tree: Path, strip: int = 1, filtered_dir: Path | None = None, log=None) -> None:
    """Undo apply_patch (the filtered patch, reversed); used to leave a tree as it was after a failure."""
    filtered_path = (Path(filtered_dir) if filtered_dir else Path(tree).parent) / f"{name}.filtered"
    res = sh.run(["git", "apply", f"-p{strip}", "-R", str(filtered_path)], cwd=tree, env=_git_env(tree),
                 check=False, timeout=600, what=f"git apply -R {name}")
    if log is not None:
        log.write(f"reverted {name}: rc {res.returncode} {res.stderr}\n")


def new_file_text(patch_file: Path, path: str, strip: int = 1) -> str:
    """The text a patch creates at `path` (e.g. QEMU's kata.cfg); PatchError if it creates no such file."""
    _, sections = split_sections(Path(patch_file).read_bytes(), strip)
    for sec in sections:
        if sec.path == path and sec.new_file and not sec.binary:
            return (sec.new_text() or b"").decode()
    raise PatchError(f"{Path(patch_file).name}: creates no text file {path}")
