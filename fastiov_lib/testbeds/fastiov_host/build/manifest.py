"""binaries_manifest.yaml and patches/series.yaml: load, validate, fetch with resume, verify sha256.

Downloads go into a cache directory (resumed with HTTP Range after an interruption). A known
sha256 must match (else ChecksumMismatch naming file, expected and actual); an unknown one is
recorded in the cache's lock file on first download and reported as "pinned on first use", after
which it is enforced like a known one. Offline mode uses only the cache.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote, urlparse

import requests
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from fastiov_lib.config import REPO_ROOT, ConfigError, read_yaml_mapping
from fastiov_lib.testbeds.base import BackendError

BINARIES_MANIFEST = REPO_ROOT / "binaries_manifest.yaml"
PATCH_SERIES = REPO_ROOT / "patches" / "series.yaml"
LOCK_FILE = "manifest.lock.json"
PINNED_ON_FIRST_USE = "pinned on first use"
_SHA_PATTERN = r"^[0-9a-f]{64}$"
_CHUNK = 1 << 16


class ManifestError(BackendError):
    """A manifest file is missing or invalid, or a fetch failed; the message names file and key."""


class ChecksumMismatch(ManifestError):
    """A downloaded or cached file does not have the expected sha256."""

    def __init__(self, path: Path, expected: str, actual: str, name: str = ""):
        self.path, self.expected, self.actual = Path(path), expected, actual
        super().__init__(f"{path}: sha256 mismatch for {name or path.name}: expected {expected}, actual {actual}")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class GitSource(_Strict):
    """A source pinned in git: a tag or branch, and the commit where known."""

    repo: str  # clone URL
    ref: str  # tag or branch
    commit: str | None = Field(default=None, pattern=r"^[0-9a-f]{40}$")  # None: pinned on first use
    subdir: str | None = None  # the component lives in this folder of the repository
    tree: str | None = Field(default=None, pattern=r"^[0-9a-f]{40}$")  # git tree id of that commit


class OfflineCopy(_Strict):
    """A pre-fetched archive of an entry for `--sources DIR`, pinned here (the folder is not trusted)."""

    file: str  # file name inside the sources folder
    top: str  # its single top-level folder
    sha256: str | None = Field(default=None, pattern=_SHA_PATTERN)  # of the archive file
    tree: str | None = Field(default=None, pattern=r"^[0-9a-f]{40}$")  # git tree id of the top folder
    commit: str | None = Field(default=None, pattern=r"^[0-9a-f]{40}$")  # the commit that tree belongs to
    note: str = ""

    @model_validator(mode="after")
    def _pinned(self) -> "OfflineCopy":
        if not (self.sha256 or self.tree):
            raise ValueError("an offline copy needs 'sha256' (of the archive) or 'tree' (git tree id)")
        return self


class BinaryEntry(_Strict):
    """One prebuilt binary, image, toolchain or source archive the build uses."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")
    role: str
    version: str
    kind: Literal["archive", "binary", "image", "toolchain", "source"] = "archive"
    url: str | None = None  # http(s):// or file://
    git: GitSource | None = None
    provided_by: str | None = None  # e.g. "the authors' external folder (binaries/)"
    sha256: str | None = Field(default=None, pattern=_SHA_PATTERN)
    size: int | None = Field(default=None, gt=0)
    filename: str | None = None  # name in the cache (default: last URL path segment)
    offline: list[OfflineCopy] = Field(default_factory=list)  # copies usable with --sources DIR

    @model_validator(mode="after")
    def _one_origin(self) -> "BinaryEntry":
        origins = [x for x in (self.url, self.git, self.provided_by) if x]
        if len(origins) != 1:
            raise ValueError("exactly one of 'url', 'git' or 'provided_by' is required")
        return self

    def cache_name(self) -> str:
        if self.filename:
            return self.filename
        if self.url:
            return Path(unquote(urlparse(self.url).path)).name or self.name
        return self.name


class BinariesManifest(_Strict):
    version: Literal[1]
    entries: list[BinaryEntry] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique(self) -> "BinariesManifest":
        names = [e.name for e in self.entries]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"duplicate entry names: {', '.join(dup)}")
        return self

    def get(self, name: str) -> BinaryEntry:
        for e in self.entries:
            if e.name == name:
                return e
        raise ManifestError(f"binaries manifest: no entry named {name!r}")


class PatchEntry(_Strict):
    """One patch of the series: what it applies to, where it comes from, how it is pinned."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")  # the patch file name
    component: str
    upstream: str  # the source it applies to, e.g. "containerd/containerd"
    pin: str  # the tag/branch/commit of that source
    url: str | None = None  # the patch at the upstream artifact's commit
    file: str | None = None  # or: the artifact's own patch, a file in patches/ (never FastIOV's)
    only_for: list[Literal["fastiov", "local"]] = Field(default_factory=lambda: ["fastiov", "local"])
    sha256: str | None = Field(default=None, pattern=_SHA_PATTERN)
    size: int | None = Field(default=None, gt=0)
    strip: int = Field(1, ge=0, le=5)
    directory: str = "."  # where in the source tree `patch` runs
    note: str = ""

    @model_validator(mode="after")
    def _one_origin(self) -> "PatchEntry":
        if (self.url is None) == (self.file is None):
            raise ValueError("exactly one of 'url' (upstream patch) or 'file' (our own, in patches/) is required")
        return self

    def cache_name(self) -> str:
        return self.name

    def own_path(self) -> Path | None:
        """The artifact's own patch file in patches/ (None for an upstream patch)."""
        return PATCH_SERIES.parent / self.file if self.file else None


class PatchSeries(_Strict):
    version: Literal[1]
    artifact_repo: str
    artifact_commit: str = Field(pattern=r"^[0-9a-f]{40}$")
    artifact_source: str | None = None  # binaries_manifest entry whose archive holds patches/<name>
    patches: list[PatchEntry] = Field(min_length=1)

    def for_component(self, component: str, scope: str = "fastiov") -> list[PatchEntry]:
        """The patches of a component for one testbed scope ('fastiov' real host, 'local' testbed)."""
        return [p for p in self.patches if p.component == component and scope in p.only_for]

    def get(self, name: str) -> PatchEntry:
        for p in self.patches:
            if p.name == name:
                return p
        raise ManifestError(f"patch series: no patch named {name!r}")


def _format_error(path: Path, err: ValidationError, data: Any) -> str:
    problems = []
    for e in err.errors()[:5]:
        loc = list(e["loc"])
        # name list items by their 'name' so the key reads entries[cri-containerd-cni].sha256
        parts: list[str] = []
        node = data
        for p in loc:
            if isinstance(p, int) and isinstance(node, list) and p < len(node):
                label = node[p].get("name") if isinstance(node[p], dict) else None
                parts[-1] = f"{parts[-1]}[{label or p}]" if parts else f"[{p}]"
                node = node[p]
            else:
                parts.append(str(p))
                node = node.get(p) if isinstance(node, dict) else None
        msg = "unknown key (check its spelling)" if e["type"] == "extra_forbidden" else e["msg"]
        problems.append(f"key '{'.'.join(parts) or '(top level)'}': {msg}")
    more = f" (+{len(err.errors()) - 5} more)" if len(err.errors()) > 5 else ""
    return f"{path}: " + "; ".join(problems) + more


def _load(path: Path, model: type[BaseModel]) -> Any:
    path = Path(path)
    try:
        data = read_yaml_mapping(path)
    except ConfigError as exc:
        raise ManifestError(str(exc)) from None
    try:
        return model.model_validate(data)
    except ValidationError as err:
        raise ManifestError(_format_error(path, err, data)) from None


def load_binaries_manifest(path: Path | str = BINARIES_MANIFEST) -> BinariesManifest:
    """Load and validate binaries_manifest.yaml (ManifestError names the file and key)."""
    return _load(Path(path), BinariesManifest)


def load_patch_series(path: Path | str = PATCH_SERIES) -> PatchSeries:
    """Load and validate patches/series.yaml (ManifestError names the file and key)."""
    return _load(Path(path), PatchSeries)


# ------------------------------------------------------------------ cache and lock

def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_lock(cache_dir: Path) -> dict[str, Any]:
    p = Path(cache_dir) / LOCK_FILE
    if not p.is_file():
        return {}
    try:
        return json.loads(p.read_text())
    except json.JSONDecodeError as exc:
        raise ManifestError(f"{p}: lock file is not JSON ({exc.msg}, line {exc.lineno}); "
                            "delete it to pin again") from None


def _write_lock(cache_dir: Path, lock: dict[str, Any]) -> None:
    p = Path(cache_dir) / LOCK_FILE
    tmp = p.with_suffix(".tmp")
    tmp.write_text(json.dumps(lock, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, p)


def checksum_status(name: str, sha256: str | None, cache_dir: Path | None) -> str:
    """'pinned in manifest', 'pinned on first use' (lock has it) or 'unknown (pinned on first download)'."""
    if sha256:
        return "pinned in manifest"
    if cache_dir is not None and name in read_lock(cache_dir):
        return PINNED_ON_FIRST_USE
    return "unknown (pinned on first download)"


class FetchResult(BaseModel):
    """Where a fetched file is, its checksum, and how that checksum is known."""

    name: str
    path: Path
    sha256: str
    size: int
    status: Literal["verified", "pinned on first use"]
    source: Literal["download", "cache"]
    resumed_from: int = 0


def _download(url: str, part: Path, timeout: float, session: requests.Session) -> int:
    """Download `url` into `part`, resuming from its current size; returns the byte offset resumed from."""
    start = part.stat().st_size if part.exists() else 0
    # identity: the bytes on disk must be the file itself, whatever compression the server offers
    headers = {"Accept-Encoding": "identity", **({"Range": f"bytes={start}-"} if start else {})}
    with session.get(url, headers=headers, stream=True, timeout=timeout) as resp:
        if resp.status_code == 416:  # we already have every byte
            return start
        if resp.status_code not in (200, 206):
            raise ManifestError(f"{url}: HTTP {resp.status_code} {resp.reason}")
        mode = "ab"
        if start and resp.status_code == 200:  # server ignored Range: start again
            start, mode = 0, "wb"
        with open(part, mode) as fh:
            for chunk in resp.iter_content(_CHUNK):
                fh.write(chunk)
            fh.flush()
            os.fsync(fh.fileno())
        expected_len = resp.headers.get("Content-Length")
        if expected_len is not None and part.stat().st_size - start < int(expected_len):
            raise ManifestError(f"{url}: connection closed after {part.stat().st_size} bytes (will resume)")
    return start


def fetch(name: str, url: str, cache_dir: Path, sha256: str | None = None, size: int | None = None,
          filename: str | None = None, offline: bool = False, retries: int = 3, timeout: float = 60.0,
          session: requests.Session | None = None) -> FetchResult:
    """Fetch `url` into the cache (resuming partial downloads) and verify it.

    A known sha256 must match; an unknown one is taken from the lock file, or recorded there on
    first download ("pinned on first use"). Offline: only the cache is used (ManifestError if absent).
    """
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    dest = cache_dir / (filename or Path(unquote(urlparse(url).path)).name or name)
    lock = read_lock(cache_dir)
    expected = sha256 or (lock.get(name) or {}).get("sha256")
    source: Literal["download", "cache"] = "cache"
    resumed = 0
    if not dest.exists():
        if offline:
            raise ManifestError(f"{name}: offline mode and {dest} is not in the cache (fetch it once online)")
        source = "download"
        part = dest.with_name(dest.name + ".part")
        parsed = urlparse(url)
        if parsed.scheme == "file":
            shutil.copyfile(unquote(parsed.path), part)
        elif parsed.scheme in ("http", "https"):
            session = session or requests.Session()
            last: Exception | None = None
            for attempt in range(retries + 1):
                try:
                    resumed = _download(url, part, timeout, session)
                    last = None
                    break
                except (requests.RequestException, ManifestError) as exc:
                    last = exc  # the bytes received so far stay in .part for the next attempt
            if last is not None:
                have = part.stat().st_size if part.exists() else 0
                raise ManifestError(f"{name}: download of {url} failed after {retries + 1} attempts "
                                    f"({have} bytes kept in {part}, rerun to resume): {last}") from last
        else:
            raise ManifestError(f"{name}: unsupported URL scheme in {url!r} (http, https or file)")
        if size is not None and part.stat().st_size != size:
            actual = part.stat().st_size
            if actual > size:
                part.unlink()
            raise ManifestError(f"{name}: {url}: got {actual} bytes, manifest says size {size}")
        actual_sha = sha256_file(part)
        if expected and actual_sha != expected:
            part.unlink()  # a wrong file is not resumable
            raise ChecksumMismatch(dest, expected, actual_sha, name)
        os.replace(part, dest)
    actual_sha = sha256_file(dest)
    if expected and actual_sha != expected:
        raise ChecksumMismatch(dest, expected, actual_sha, name)
    status: Literal["verified", "pinned on first use"] = "verified" if sha256 else PINNED_ON_FIRST_USE
    if not sha256 and name not in lock:
        lock[name] = {"sha256": actual_sha, "size": dest.stat().st_size, "url": url,
                      "pinned_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                      "status": PINNED_ON_FIRST_USE}
        _write_lock(cache_dir, lock)
    return FetchResult(name=name, path=dest, sha256=actual_sha, size=dest.stat().st_size, status=status,
                       source=source, resumed_from=resumed)


def fetch_entry(entry: BinaryEntry | PatchEntry, cache_dir: Path, offline: bool = False,
                **kwargs: Any) -> FetchResult:
    """Fetch a manifest or series entry (URL entries only; git sources are cloned by build)."""
    url = entry.url
    if isinstance(entry, PatchEntry) and entry.file:
        url = entry.own_path().as_uri()
        cached = Path(cache_dir) / entry.cache_name()
        if entry.sha256 and cached.is_file() and sha256_file(cached) != entry.sha256:
            # the cache holds an earlier version of our own patch: the repository's file is the truth
            cached.unlink()
    if not url:
        origin = getattr(entry, "provided_by", None) or "a git source (cloned by the build)"
        raise ManifestError(f"{entry.name}: no URL to fetch; it comes from {origin}")
    return fetch(entry.name, url, cache_dir, entry.sha256, entry.size, entry.cache_name(), offline, **kwargs)


def record_git_pin(cache_dir: Path, name: str, repo: str, ref: str, commit: str,
                   expected: str | None = None) -> str:
    """Check a cloned commit against the manifest's pin, or record it on first use; returns status."""
    if expected:
        if commit != expected:
            raise ManifestError(f"{name}: {repo} {ref} is at commit {commit}, manifest pins {expected}")
        return "pinned in manifest"
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    lock = read_lock(cache_dir)
    pinned = (lock.get(name) or {}).get("commit")
    if pinned and pinned != commit:
        raise ManifestError(f"{name}: {repo} {ref} moved to {commit}; pinned on first use at {pinned} "
                            f"({Path(cache_dir) / LOCK_FILE})")
    if not pinned:
        lock[name] = {"commit": commit, "repo": repo, "ref": ref, "status": PINNED_ON_FIRST_USE,
                      "pinned_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
        _write_lock(cache_dir, lock)
    return PINNED_ON_FIRST_USE


def manifest_table(manifest: BinariesManifest, cache_dir: Path | None = None) -> list[dict[str, Any]]:
    """Rows: name, role, version, origin, checksum status (for notebooks and the CLI)."""
    rows = []
    for e in manifest.entries:
        origin = e.url or (f"git {e.git.repo} @ {e.git.commit or e.git.ref}" if e.git else e.provided_by)
        rows.append({"name": e.name, "kind": e.kind, "role": e.role, "version": e.version, "origin": origin,
                     "sha256": checksum_status(e.name, e.sha256 if not e.git else e.git.commit, cache_dir)
                     if not e.provided_by else (e.sha256 and "pinned in manifest") or "provided by the authors",
                     "size": e.size})
    return rows
