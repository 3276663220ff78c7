"""Build the FastIOV stack: each component as fetch -> verify -> unpack -> patch -> configure -> build -> install.

A `Builder` turns the component table (components.py) into steps with `plan()` (rows: component,
step, what, source, pin, checksum, state) and `apply()`. Every step writes its own log file; a
finished step leaves a stamp file (keyed by its inputs), so a rerun after an interruption resumes
where it stopped; provenance (sources, checksums, patches, skipped files, hand edits, toolchain
versions, step times) goes to <run>/build_provenance.json. Sources come from upstream, or with
`sources=DIR` from pre-fetched archives verified against the manifest's pins (offline.py). Patches
go through patching.py (identical re-created files skipped and listed, binary hunks applied, a
failure names file and hunk and leaves the tree as it was). Commands are argument lists. Only
`install` changes the host; it runs only with `allow_host_changes: true`.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import shlex
import shutil
import string
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastiov_lib.config import FastiovHostSettings, Testbed
from fastiov_lib.hw.host_steps import require_host_changes
from fastiov_lib.testbeds.fastiov_host.build.component_table import fastiov_components
from fastiov_lib.testbeds.fastiov_host.build.components import TOOLCHAIN_ROOTS, BuildError, Command, Component
from fastiov_lib.testbeds.fastiov_host.build.manifest import (
    BinariesManifest,
    BinaryEntry,
    PatchEntry,
    PatchSeries,
    checksum_status,
    load_binaries_manifest,
    load_patch_series,
)
from fastiov_lib.testbeds.fastiov_host.build.source_steps import SourceSteps, run_logged

STEPS = ("fetch", "verify", "unpack", "patch", "configure", "build", "install")
PROVENANCE_FILE = "build_provenance.json"


@dataclass
class BuildContext:
    """What commands and edits may use: settings (None off a FastIOV host), directories, install root."""

    settings: FastiovHostSettings | None
    build_dir: Path
    cache_dir: Path
    root: Path  # install root: "/" on a real host
    jobs: int
    offline: bool = False
    sources: Path | None = None  # --sources DIR: pre-fetched archives

    def comp_dir(self, name: str) -> Path:
        return self.build_dir / name

    def src_dir(self, comp: Component) -> Path:
        return self.comp_dir(comp.tree_of or comp.name) / "src"

    def work_dir(self, comp: Component) -> Path:
        base = self.src_dir(comp)
        sub = comp.subdir if not comp.tree_of else ""
        return base / sub / comp.work_subdir if (sub or comp.work_subdir) else base

    def variables(self, comp: Component) -> dict[str, str]:
        root = str(self.root).rstrip("/")
        go = TOOLCHAIN_ROOTS.get(comp.toolchain or "")
        out = {"src": str(self.work_dir(comp)), "tree": str(self.src_dir(comp)),
               "build": str(self.comp_dir(comp.name)), "root": root, "jobs": str(self.jobs),
               "go": str(go or ""), "cache": str(self.cache_dir),
               "linux_tree": str(self.build_dir / "linux" / "src"), "kata_tree": str(self.build_dir / "kata" / "src")}
        s = self.settings
        if s is not None:
            out.update({
                "kata_prefix": str(s.kata_prefix), "cni_bin_dir": str(s.cni_bin_dir),
                "qemu_fastiov": str(s.qemu_fastiov), "qemu_vanilla": str(s.qemu_vanilla),
                "guest_kernel_fastiov": str(s.guest_kernel_fastiov), "image_async": str(s.image_async),
                "guest_kernel_vanilla": str(s.guest_kernel_vanilla), "image_sync": str(s.image_sync),
                # the running kernel's config, resolved here rather than by a shell's $(uname -r)
                "kernel_config": str(s.kernel_config or f"/boot/config-{os.uname().release}"),
                "fastiov_module": str(s.fastiov_module_path or "")})
        return out


def _toolchain_versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for tool, args in {"gcc": ["--version"], "make": ["--version"], "patch": ["--version"],
                       "git": ["--version"], "tar": ["--version"], "go": ["version"]}.items():
        path = shutil.which(tool)
        if not path:
            out[tool] = None
            continue
        try:
            res = subprocess.run([path, *args], capture_output=True, text=True, timeout=10)
            out[tool] = (res.stdout or res.stderr).splitlines()[0] if res.returncode == 0 else None
        except (OSError, subprocess.SubprocessError, IndexError):
            out[tool] = None
    return out


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


class Builder(SourceSteps):
    """plan()/apply() over the components, with stamps, per-step logs and provenance."""

    def __init__(self, testbed: Testbed, run_path: Path | None = None,
                 components: list[Component] | None = None, manifest: BinariesManifest | None = None,
                 series: PatchSeries | None = None, offline: bool = False, root: Path | None = None,
                 sources: Path | None = None, build_dir: Path | None = None, cache_dir: Path | None = None,
                 scope: str = "fastiov", jobs: int | None = None):
        s = testbed.fastiov
        if s is None and components is None:
            raise BuildError(f"testbed {testbed.name!r} has no 'fastiov:' section (a real FastIOV host)")
        self.testbed = testbed
        self.scope = scope  # which of our own patches apply: 'fastiov' (real host) or 'local'
        self.root = Path(root or testbed.sys_root)
        if sources is not None and not Path(sources).is_dir():
            raise BuildError(f"--sources {sources}: not a folder")
        bdir = Path(build_dir) if build_dir else Path(s.build_dir)
        cdir = Path(cache_dir) if cache_dir else (bdir / "cache" if build_dir else Path(s.cache_dir))
        self.ctx = BuildContext(settings=s, build_dir=bdir, cache_dir=cdir, root=self.root,
                                jobs=jobs or (s.build_jobs if s else None) or os.cpu_count() or 1,
                                offline=offline or sources is not None,
                                sources=Path(sources).resolve() if sources else None)
        self.components = components if components is not None else fastiov_components(s)
        self.manifest = manifest or load_binaries_manifest()
        self.series = series or load_patch_series()
        self.run_path = Path(run_path) if run_path else None
        names = [c.name for c in self.components]
        for c in self.components:
            if c.source:
                self.manifest.get(c.source)
            for p in c.reads_patches:
                self.series.get(p)
            if c.tree_of and c.tree_of not in names:
                raise BuildError(f"component {c.name}: tree_of {c.tree_of!r} is not a component")

    # -- helpers
    def component(self, name: str) -> Component:
        for c in self.components:
            if c.name == name:
                return c
        raise BuildError(f"no component named {name!r}; known: {', '.join(c.name for c in self.components)}")

    def _entry(self, comp: Component) -> BinaryEntry | None:
        return self.manifest.get(comp.source) if comp.source else None

    def _patches(self, comp: Component) -> list[PatchEntry]:
        names = comp.patch_components if comp.patch_components is not None else (comp.name,)
        return [p for name in names for p in self.series.for_component(name, self.scope)]

    def _fetched_patches(self, comp: Component) -> list[PatchEntry]:
        return self._patches(comp) + [self.series.get(n) for n in comp.reads_patches]

    def patch_file(self, name: str) -> Path:
        """The verified copy of a patch in the cache (after the fetch step)."""
        path = self.ctx.cache_dir / "patches" / self.series.get(name).cache_name()
        if not path.is_file():
            raise BuildError(f"{name}: not in {path.parent} (run the fetch step first)")
        return path

    def variables(self, comp: Component) -> dict[str, str]:
        return self.ctx.variables(comp)

    def _commands(self, comp: Component, step: str) -> tuple[Command, ...]:
        if step == "unpack" and comp.unpack:
            return comp.unpack
        return getattr(comp, step) if step in ("configure", "build", "install") else ()

    def _steps_of(self, comp: Component) -> list[str]:
        """The steps that have something to do for this component."""
        entry = self._entry(comp)
        out = []
        for step in STEPS:
            if step in ("fetch", "verify"):
                has = entry is not None and not entry.provided_by or bool(self._fetched_patches(comp))
            elif step == "unpack":
                has = (entry is not None and not comp.tree_of) or bool(comp.unpack)
            elif step == "patch":
                has = bool(self._patches(comp) or comp.edits)
            else:
                has = bool(self._commands(comp, step))
            if has:
                out.append(step)
        return out

    def _step_key(self, comp: Component, step: str) -> str:
        entry = self._entry(comp)
        parts: list[Any] = [comp.name, step, entry.model_dump(mode="json") if entry else None]
        if step in ("fetch", "verify", "unpack"):
            parts.append(str(self.ctx.sources or ""))
        if step in ("fetch", "verify", "patch"):
            parts.append([p.model_dump(mode="json") for p in self._fetched_patches(comp)])
        if step == "patch":
            parts.append([e.what + e.key(self.ctx) for e in comp.edits])
        parts.append([c.describe() for c in self._commands(comp, step)])
        parts.append(self._used_vars(comp, step))
        if comp.stamp_facts is not None and step in ("configure", "build", "install"):
            parts.append(comp.stamp_facts(self.ctx, step))
        return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]

    def _used_vars(self, comp: Component, step: str) -> list[tuple[str, str]]:
        """The placeholder values a step's commands use (so e.g. a new -j does not force a re-unpack)."""
        texts = [" ".join(c.argv) + c.cwd + "".join(v for _, v in c.env) for c in self._commands(comp, step)]
        texts += [v for _, v in comp.env] if self._commands(comp, step) else []
        if step == "unpack" and not comp.unpack:
            texts.append("{tree}" + comp.subdir)
        names = {f for t in texts for _, f, _, _ in string.Formatter().parse(t) if f}
        v = self.variables(comp)
        return sorted((n, v.get(n, "")) for n in names)

    def _stamp(self, comp: Component, step: str) -> Path:
        return self.ctx.comp_dir(comp.name) / ".stamps" / step

    def _stamped(self, comp: Component, step: str) -> bool:
        p = self._stamp(comp, step)
        try:
            return json.loads(p.read_text()).get("key") == self._step_key(comp, step)
        except (OSError, json.JSONDecodeError):
            return False

    def _log_path(self, comp: Component, step: str) -> Path:
        base = (self.run_path / "logs" / "build") if self.run_path else (self.ctx.comp_dir(comp.name) / "logs")
        return base / comp.name / f"{step}.log"

    # -- plan
    def _source_row(self, comp: Component) -> dict[str, str]:
        entry = self._entry(comp)
        if entry is None:
            return {"source": f"tree of {comp.tree_of}" if comp.tree_of else "(generated)", "pin": "",
                    "checksum": ""}
        if self.ctx.sources is not None and entry.offline:
            copy = entry.offline[0]
            pin = f"tree {copy.tree}" if copy.tree else f"sha256 {copy.sha256}"
            return {"source": str(self.ctx.sources / copy.file), "pin": pin,
                    "checksum": "pinned in manifest (offline copy)"}
        if entry.git:
            status = ("commit pinned in manifest" if entry.git.commit else
                      checksum_status(entry.name, None, self.ctx.cache_dir).replace("unknown", "commit unknown"))
            return {"source": entry.git.repo, "pin": entry.git.commit or entry.git.ref, "checksum": status}
        return {"source": entry.url or entry.provided_by or "", "pin": entry.version,
                "checksum": checksum_status(entry.name, entry.sha256, self.ctx.cache_dir)}

    def _patch_row(self, p: PatchEntry) -> dict[str, str]:
        return {"source": p.file and f"patches/{p.file}" or p.url or "", "pin": f"{p.upstream} {p.pin}",
                "checksum": checksum_status(p.name, p.sha256, self.ctx.cache_dir / "patches")}

    def plan(self) -> list[dict[str, str]]:
        """Every step of every component: what it does, source, pin, checksum status, state."""
        rows = []
        for comp in self.components:
            base = self._source_row(comp)
            v = self.variables(comp)
            for step in self._steps_of(comp):
                state = "done" if self._stamped(comp, step) else "to do"
                for item in self._describe_step(comp, step, v, base):
                    rows.append({"component": comp.name, "step": step, **item, "state": state,
                                 "host change": "yes" if step == "install" else ""})
        return rows

    def _describe_step(self, comp: Component, step: str, v: dict[str, str],
                       base: dict[str, str]) -> list[dict[str, str]]:
        entry = self._entry(comp)
        own = entry is not None and not entry.provided_by
        plain = {**base, "checksum": ""}
        offline = self.ctx.sources is not None and entry is not None and bool(entry.offline)
        if step in ("fetch", "verify"):
            out = []
            if own:
                if step == "fetch":
                    what = (f"use {entry.offline[0].file} from {self.ctx.sources}" if offline else
                            f"git fetch {entry.git.commit or entry.git.ref} into the cache" if entry.git
                            else f"download {entry.cache_name()} into the cache (resumable)")
                else:
                    what = ("sha256 of the offline archive (tree ids are checked while unpacking)" if offline
                            else f"check commit of {entry.name}" if entry.git else f"sha256 of {entry.cache_name()}")
                out.append({"what": what, **base})
            verb = "get patch" if step == "fetch" else "sha256 of patch"
            out += [{"what": f"{verb} {p.name}", **self._patch_row(p)} for p in self._fetched_patches(comp)]
            return out
        if step == "unpack" and not comp.unpack:
            check = " and compare its git tree id with the pin" if offline and entry.offline[0].tree else ""
            return [{"what": f"unpack {entry.name} into {v['tree']}{check}", **plain}]
        if step == "patch":
            out = [{"what": f"git apply -p{p.strip} {p.name} in {p.directory} (checked first; new files that "
                            "exist identically are skipped)", **self._patch_row(p), "checksum": ""}
                   for p in self._patches(comp)]
            return out + [{"what": f"edit {e.what}", **plain} for e in comp.edits]
        return [{"what": self._fill(c.describe(), v), **plain} for c in self._commands(comp, step)]

    @staticmethod
    def _fill(text: str, v: dict[str, str]) -> str:
        try:
            return text.format(**v)
        except (KeyError, IndexError, ValueError) as exc:
            raise BuildError(f"command {text!r}: unknown placeholder {exc}") from None

    # -- apply
    def apply(self, only: list[str] | None = None, through: str | None = None) -> list[dict[str, Any]]:
        """Run the steps (stamped ones are skipped); `through` stops after that step (e.g. 'build')."""
        from tqdm.auto import tqdm

        if through is not None and through not in STEPS:
            raise BuildError(f"unknown step {through!r}; steps: {', '.join(STEPS)}")
        comps = [self.component(n) for n in only] if only else self.components
        last = STEPS.index(through) if through else len(STEPS) - 1
        waiting = self._wrong_kernel(comps, last, explicit=bool(only))
        comps = [c for c in comps if c.name not in waiting]
        work = [(c, s) for c in comps for s in self._steps_of(c) if STEPS.index(s) <= last]
        # a real host's install changes the host; the local testbed installs into its own work dir
        if any(s == "install" for _, s in work) and self.scope == "fastiov":
            require_host_changes(self.testbed.allow_host_changes, "build install",
                                 str(self.testbed.source_path or ""))
        results = [{"component": name, "step": "all", "status": f"skipped: {why}"} for name, why in waiting.items()]
        with tqdm(total=len(work), desc="build", unit="step") as bar:
            for comp, step in work:
                bar.set_postfix_str(f"{comp.name}:{step}")
                results.append(self._run_step(comp, step))
                bar.update(1)
        return results

    def _wrong_kernel(self, comps: list[Component], last: int, explicit: bool) -> dict[str, str]:
        """Components whose build/install needs another booted kernel: name -> why (an error if asked for)."""
        from fastiov_lib.testbeds.fastiov_host.kernels import booted_kernel, kernel_release

        out = {}
        for c in comps:
            if c.needs_booted is None or self.ctx.settings is None or last < STEPS.index("configure"):
                continue
            booted = booted_kernel(self.ctx.settings, self.root)
            if booted != c.needs_booted:
                why = (f"needs the {c.needs_booted} kernel booted (this host runs "
                       f"{kernel_release(self.root) or 'an unknown kernel'}); reboot into it, then "
                       f"`build apply --component {c.name}`")
                if explicit:
                    raise BuildError(f"{c.name}: {why}")
                out[c.name] = why
        return out

    def _run_step(self, comp: Component, step: str) -> dict[str, Any]:
        if self._stamped(comp, step):
            self._provenance(comp, step, {"status": "skipped (stamp)"})
            return {"component": comp.name, "step": step, "status": "skipped (stamp)"}
        if step == "patch" and self._stamp(comp, "patch").exists():
            # patched before with other inputs: start again from a fresh tree
            self._run_step_fresh(comp, "unpack")
        return self._run_step_fresh(comp, step)

    def _run_step_fresh(self, comp: Component, step: str) -> dict[str, Any]:
        log_path = self._log_path(comp, step)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        t0 = time.monotonic()
        started = _now()
        with open(log_path, "a", encoding="utf-8") as log:
            log.write(f"=== {started} {comp.name} {step}\n")
            log.flush()
            info = getattr(self, f"_do_{step}", self._do_commands)(comp, step, log)
        # invalidate later steps: they were made from something that just changed
        for later in STEPS[STEPS.index(step):]:
            self._stamp(comp, later).unlink(missing_ok=True)
        stamp = self._stamp(comp, step)
        stamp.parent.mkdir(parents=True, exist_ok=True)
        stamp.write_text(json.dumps({"key": self._step_key(comp, step), "time": _now()}) + "\n")
        rec = {"status": "done", "started": started, "duration_s": round(time.monotonic() - t0, 3),
               "log": str(log_path), **info}
        self._provenance(comp, step, rec)
        return {"component": comp.name, "step": step, **rec}

    def _env(self, comp: Component, extra: tuple[tuple[str, str], ...] = ()) -> dict[str, str]:
        v = self.variables(comp)
        env = dict(os.environ)
        for k, val in comp.env + extra:
            env[k] = self._fill(val, v)
        if comp.toolchain:
            go = TOOLCHAIN_ROOTS.get(comp.toolchain)
            if go is None or not (go / "bin" / "go").is_file():
                raise BuildError(f"{comp.name}: toolchain {comp.toolchain} not found at {go}/bin/go "
                                 "(install the Debian package golang-1.19-go; see the README's set-up)")
        for key in ("HOME", "GOCACHE"):
            if key in env and key in dict(comp.env):
                Path(env[key]).mkdir(parents=True, exist_ok=True)
        return env

    def run_argv(self, comp: Component, step: str, argv: list[str], cwd: Path | None, log,
                 extra_env: tuple[tuple[str, str], ...] = ()) -> None:
        """Run one argument list with the component's environment, output into the step's log."""
        log.write(f"$ (cd {cwd or '.'} && {shlex.join(argv)})\n")
        log.flush()
        rc = run_logged(argv, cwd, self._env(comp, extra_env), log)
        if rc != 0:
            log.flush()
            tail = "".join(Path(log.name).read_text(errors="replace").splitlines(True)[-15:])
            raise BuildError(f"{comp.name} {step}: `{shlex.join(argv)}` exited with {rc}; log: {log.name}\n{tail}")

    def _run(self, comp: Component, command: Command, log, step: str) -> str:
        if command.call is not None:
            out = command.call(self, comp, log)
            log.write(out + "\n")
            return out
        v = self.variables(comp)
        argv = [self._fill(a, v) for a in command.argv]
        cwd = Path(self._fill(command.cwd, v))
        if not cwd.is_dir():
            raise BuildError(f"{comp.name} {step}: working directory {cwd} does not exist")
        self.run_argv(comp, step, argv, cwd, log, command.env)
        return shlex.join(argv)

    def _do_commands(self, comp: Component, step: str, log) -> dict[str, Any]:
        return {"commands": [self._run(comp, c, log, step) for c in self._commands(comp, step)]}

    def _provenance(self, comp: Component, step: str, rec: dict[str, Any]) -> None:
        if self.run_path is None:
            return
        path = self.run_path / PROVENANCE_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        data = json.loads(path.read_text()) if path.is_file() else {"toolchain": _toolchain_versions(),
                                                                    "components": {}}
        c = data["components"].setdefault(comp.name, {"description": comp.description,
                                                      "source": comp.source, "steps": {}})
        if comp.toolchain:
            go = TOOLCHAIN_ROOTS.get(comp.toolchain)
            c["toolchain"] = {"name": comp.toolchain, "root": str(go or ""),
                              "version": _first_line([str(go / "bin" / "go"), "version"]) if go else None}
        c["steps"][step] = rec
        data["updated"] = _now()
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
        os.replace(tmp, path)


def _first_line(argv: list[str]) -> str | None:
    try:
        res = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    lines = (res.stdout or res.stderr).splitlines()
    return lines[0] if res.returncode == 0 and lines else None


def build_plan(testbed: Testbed, offline: bool = False) -> list[dict[str, str]]:
    """Plan rows for the whole FastIOV stack of a testbed (nothing is fetched or built)."""
    return Builder(testbed, offline=offline).plan()
