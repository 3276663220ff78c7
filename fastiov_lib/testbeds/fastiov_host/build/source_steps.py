"""The source steps of a build (fetch, verify, unpack, patch), as a part of Builder of their own.

They need the Builder's context (manifest, pins, offline sources, logs), so they are a mixin.
"""
from __future__ import annotations

import subprocess

import os
import shlex
import shutil
from pathlib import Path

from fastiov_lib.procs import stop_process_group
from typing import Any

from fastiov_lib.testbeds.fastiov_host.build import offline as offline_sources
from fastiov_lib.testbeds.fastiov_host.build.components import BuildError, Component
from fastiov_lib.testbeds.fastiov_host.build.manifest import (
    BinaryEntry,
    ManifestError,
    PatchEntry,
    fetch_entry,
    record_git_pin,
)
from fastiov_lib.testbeds.fastiov_host.build.patching import PatchError, apply_patch, revert_patch


def run_logged(argv: list[str], cwd: Path | None, env: dict[str, str] | None, log) -> int:
    """Run a command with its output into the open log file; on any interruption the command's
    whole process group (make -j children included) is terminated before re-raising."""
    proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        return proc.wait()
    except BaseException:
        stop_process_group(proc, grace_s=5.0, kill_wait_s=5.0)
        raise


def _git_head(repo: Path) -> str:
    return subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True).stdout.strip()


class SourceSteps:
    """fetch / verify / unpack / patch of a component's pinned source (mixed into Builder)."""

    def _do_fetch(self, comp: Component, step: str, log) -> dict[str, Any]:
        info: dict[str, Any] = {}
        entry = self._entry(comp)
        if entry is not None and not entry.provided_by:
            if self.ctx.sources is not None:
                copy, path = offline_sources.offline_copy(entry, self.ctx.sources)
                status = offline_sources.check_archive_sha(entry, copy, path)
                log.write(f"{entry.name}: offline copy {path} ({status})\n")
                info["source"] = {"offline": str(path), "status": status, **copy.model_dump(exclude_none=True)}
            elif entry.git:
                info["source"] = self._git_fetch(entry, log)
            else:
                res = fetch_entry(entry, self.ctx.cache_dir, self.ctx.offline)
                log.write(f"{entry.name}: {res.path} sha256 {res.sha256} ({res.status}, {res.source})\n")
                info["source"] = res.model_dump(mode="json")
        info["patches"] = [self._fetch_patch(p, log) for p in self._fetched_patches(comp)]
        return info

    def _fetch_patch(self, p: PatchEntry, log) -> dict[str, Any]:
        dest = self.ctx.cache_dir / "patches"
        if self.ctx.sources is not None and p.url:
            container = container_top = None
            if self.series.artifact_source:
                art = self.manifest.get(self.series.artifact_source)
                if art.offline:
                    container, container_top = art.offline[0].file, art.offline[0].top
            path = offline_sources.fetch_patch_offline(p, self.ctx.sources, dest, container, container_top)
            log.write(f"{p.name}: from {self.ctx.sources} sha256 verified\n")
            return {"name": p.name, "path": str(path), "sha256": p.sha256, "status": "verified", "source": "offline"}
        res = fetch_entry(p, dest, self.ctx.offline and not p.file)  # our own patches are in the repository
        log.write(f"{p.name}: sha256 {res.sha256} ({res.status})\n")
        return res.model_dump(mode="json")

    def _git_dir(self, entry: BinaryEntry) -> Path:
        return self.ctx.cache_dir / "git" / entry.name

    def _git_fetch(self, entry: BinaryEntry, log) -> dict[str, Any]:
        repo = self._git_dir(entry)
        g = entry.git
        if not (repo / ".git").exists():
            if self.ctx.offline:
                raise ManifestError(f"{entry.name}: offline mode and {repo} is not in the cache "
                                    "(or use --sources DIR)")
            tmp = repo.with_name(repo.name + ".tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
            target = g.commit or g.ref
            for argv in (["git", "init", "-q"], ["git", "remote", "add", "origin", g.repo],
                         ["git", "fetch", "-q", "--depth", "1", "origin", target],
                         ["git", "checkout", "-q", "--detach", "FETCH_HEAD"]):
                rc = run_logged(argv, tmp, None, log)
                if rc != 0:
                    raise BuildError(f"{entry.name}: `{shlex.join(argv)}` failed ({rc}); log: {log.name}")
            os.replace(tmp, repo)
        commit = _git_head(repo)
        log.write(f"{entry.name}: {g.repo} {g.ref} at {commit}\n")
        return {"repo": g.repo, "ref": g.ref, "commit": commit}

    def _do_verify(self, comp: Component, step: str, log) -> dict[str, Any]:
        info: dict[str, Any] = {}
        entry = self._entry(comp)
        if entry is not None and not entry.provided_by:
            if self.ctx.sources is not None:
                copy, path = offline_sources.offline_copy(entry, self.ctx.sources)
                info["source"] = {"offline": str(path), "status": offline_sources.check_archive_sha(entry, copy, path)}
            elif entry.git:
                commit = _git_head(self._git_dir(entry))
                status = record_git_pin(self.ctx.cache_dir, entry.name, entry.git.repo, entry.git.ref,
                                        commit, entry.git.commit)
                info["source"] = {"commit": commit, "status": status}
            else:  # the cached file is hashed again: the cache may have been touched since fetch
                res = fetch_entry(entry, self.ctx.cache_dir, offline=True)
                info["source"] = {"sha256": res.sha256, "status": res.status}
            log.write(f"{entry.name}: {info['source']}\n")
        info["patches"] = []
        for p in self._fetched_patches(comp):
            res = fetch_entry(p.model_copy(update={"url": (self.ctx.cache_dir / "patches" / p.cache_name()).as_uri(),
                                                    "file": None}) if self.ctx.sources and p.url else p,
                              self.ctx.cache_dir / "patches", offline=True)
            info["patches"].append({"name": p.name, "sha256": res.sha256, "status": res.status})
            log.write(f"{p.name}: {res.sha256} {res.status}\n")
        return info

    def _do_unpack(self, comp: Component, step: str, log) -> dict[str, Any]:
        if comp.unpack:
            return self._do_commands(comp, step, log)
        entry = self._entry(comp)
        dest = self.ctx.src_dir(comp)
        tmp = dest.with_name("src.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        inner = tmp / comp.subdir if comp.subdir else tmp
        info: dict[str, Any] = {"tree": str(dest)}
        # an interrupted unpack leaves only src.tmp, which the next unpack removes first
        if self.ctx.sources is not None and entry.offline:
            copy, path = offline_sources.offline_copy(entry, self.ctx.sources)
            tmp.mkdir(parents=True)
            info.update(offline_sources.unpack_offline(entry, copy, path, inner, self.ctx.comp_dir(comp.name) / "tmp", log))
        else:
            inner.mkdir(parents=True)
            if entry.git:
                archive = self.ctx.comp_dir(comp.name) / "tmp" / "source.tar"
                archive.parent.mkdir(parents=True, exist_ok=True)
                self.run_argv(comp, step, ["git", "-C", str(self._git_dir(entry)), "archive", "--format=tar",
                                           "-o", str(archive), "HEAD"], None, log)
                self.run_argv(comp, step, ["tar", "-xf", str(archive), "-C", str(inner)], None, log)
                archive.unlink()
            else:
                argv = ["tar", "-xf", str(self.ctx.cache_dir / entry.cache_name()), "-C", str(inner)]
                self.run_argv(comp, step, argv + (["--strip-components=1"] if comp.strip_top else []), None, log)
        shutil.rmtree(dest, ignore_errors=True)
        os.replace(tmp, dest)
        return info

    def _do_patch(self, comp: Component, step: str, log) -> dict[str, Any]:
        tree = self.ctx.work_dir(comp)
        applied: list[PatchEntry] = []
        skipped: dict[str, list[str]] = {}
        edits: list[str] = []
        scratch = self.ctx.comp_dir(comp.name) / "patches"
        try:
            for p in self._patches(comp):
                where = tree / p.directory
                try:
                    res = apply_patch(p.name, self.patch_file(p.name), where, p.strip, log, scratch)
                except PatchError as exc:
                    raise BuildError(f"{comp.name}: patch {p.name} does not apply to {where}: {exc}; "
                                     f"tree left as it was; log: {log.name}") from None
                applied.append(p)
                skipped[p.name] = res.skipped_identical
            new_texts: dict[Path, str] = {}  # every edit is computed before any file is written
            for e in comp.edits:
                path = tree / e.file
                if not e.create and not path.is_file():
                    raise BuildError(f"{comp.name}: {path}: not found for the edit '{e.what}'")
                try:
                    old = new_texts.get(path, path.read_text() if path.is_file() else "")
                    new_texts[path] = e.apply(old, self.ctx)
                except BuildError as exc:
                    raise BuildError(f"{comp.name}: {path}: {exc}") from None
                edits.append(e.what)
                log.write(f"edit: {path}: {e.what}\n")
            for path, text in new_texts.items():
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(text)
        except BaseException:
            for p in reversed(applied):  # leave the tree as it was
                revert_patch(p.name, tree / p.directory, p.strip, scratch, log)
            raise
        return {"patches": [p.name for p in applied], "skipped_identical": skipped, "edits": edits}

    # -- provenance
