"""Build the FastIOV stack: each component as fetch -> verify -> unpack -> patch -> configure -> build -> install.

A `Builder` turns the component table (REFERENCE.md, "Components and pins") into steps with
`plan()` (rows: component, step, what, source, pin, checksum, state) and `apply()`. Every step
writes its own log file; a finished step leaves a stamp file (keyed by its inputs), so a rerun
after an interruption resumes where it stopped; provenance (sources, checksums, patches, hand
edits, toolchain versions, step times) goes to <run>/build_provenance.json. Patches are applied
with GNU patch, `--dry-run` first; a failure rolls back what was applied, leaving the tree as it
was. The original README's hand edits are code here: `EXTRAVERSION = -rc5test`, the CNI's
`busPrefix` from the testbed's PF address, the kata config keys (via runtime_config).
Only `install` changes the host; it runs only with `allow_host_changes: true`.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import re
import shutil
import string
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from fastiov_lib.procs import stop_process_group
from fastiov_lib.config import FastiovHostSettings, Testbed
from fastiov_lib.testbeds.fastiov_host.build.manifest import (
    BinariesManifest,
    BinaryEntry,
    ManifestError,
    PatchEntry,
    PatchSeries,
    checksum_status,
    fetch_entry,
    load_binaries_manifest,
    load_patch_series,
    record_git_pin,
)
from fastiov_lib.hw.host_steps import require_host_changes

STEPS = ("fetch", "verify", "unpack", "patch", "configure", "build", "install")
PROVENANCE_FILE = "build_provenance.json"


class BuildError(RuntimeError):
    """A build step failed; the message names component, step, command and log file."""


@dataclass(frozen=True)
class Command:
    """A command of a step: a shell line run with bash (set -euo pipefail), or a Python call.

    `{name}` placeholders are filled from the build context (src, root, jobs, go, kata_prefix, ...).
    """

    line: str = ""
    cwd: str = "{src}"
    env: tuple[tuple[str, str], ...] = ()
    call: Callable[["BuildContext", "Component"], str] | None = field(default=None, compare=False)
    what: str = ""  # plan text for calls

    def describe(self) -> str:
        return self.what or self.line


@dataclass(frozen=True)
class SourceEdit:
    """A hand edit of the original README, as code: a text change of one file, after the patches."""

    what: str
    file: str  # relative to the component's folder
    apply: Callable[[str, "BuildContext"], str]  # old text -> new text (BuildError if it cannot)
    key: Callable[["BuildContext"], str] = lambda ctx: ""  # inputs, for the stamp


@dataclass(frozen=True)
class Component:
    """One thing to build or install, with its source and the commands of each step."""

    name: str
    description: str
    source: str | None  # binaries_manifest entry; None = no own source (uses tree_of)
    tree_of: str | None = None  # work in another component's source tree
    subdir: str = ""  # unpack the source into src/<subdir> (e.g. a GOPATH layout)
    work_subdir: str = ""  # the component's own folder inside the tree
    strip_top: bool = True  # drop the archive's single top-level folder
    toolchain: str | None = None  # binaries_manifest entry of a toolchain component
    unpack: tuple[Command, ...] = ()  # replaces the default unpack
    edits: tuple[SourceEdit, ...] = ()
    configure: tuple[Command, ...] = ()
    build: tuple[Command, ...] = ()
    install: tuple[Command, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    notes: str = ""


@dataclass
class BuildContext:
    """What commands and edits may use: settings, directories, install root."""

    settings: FastiovHostSettings
    build_dir: Path
    cache_dir: Path
    root: Path  # install root: "/" on a real host
    jobs: int
    offline: bool = False

    def comp_dir(self, name: str) -> Path:
        return self.build_dir / name

    def src_dir(self, comp: Component) -> Path:
        base = self.comp_dir(comp.tree_of or comp.name) / "src"
        return base

    def work_dir(self, comp: Component) -> Path:
        base = self.src_dir(comp)
        sub = comp.subdir if not comp.tree_of else ""
        return base / sub / comp.work_subdir if (sub or comp.work_subdir) else base

    def variables(self, comp: Component, toolchains: dict[str, Path]) -> dict[str, str]:
        s = self.settings
        root = str(self.root).rstrip("/")
        return {
            "src": str(self.work_dir(comp)), "tree": str(self.src_dir(comp)),
            "build": str(self.comp_dir(comp.name)), "root": root, "jobs": str(self.jobs),
            "go": str(toolchains.get(comp.toolchain or "", "")), "cache": str(self.cache_dir),
            "kata_prefix": str(s.kata_prefix), "cni_bin_dir": str(s.cni_bin_dir),
            "qemu_fastiov": str(s.qemu_fastiov), "qemu_vanilla": str(s.qemu_vanilla),
            "guest_kernel_fastiov": str(s.guest_kernel_fastiov), "image_async": str(s.image_async),
            "kernel_config": str(s.kernel_config or "/boot/config-$(uname -r)"),
            "fastiov_module": str(s.fastiov_module_path or ""),
            "linux_tree": str(self.build_dir / "linux" / "src"), "kata_tree": str(self.build_dir / "kata" / "src"),
        }


# ------------------------------------------------------------------ hand edits as code

def set_makefile_extraversion(text: str, suffix: str) -> str:
    """`EXTRAVERSION = <suffix>` in the text of a kernel's top Makefile (the README's vim edit)."""
    new, n = re.subn(r"^EXTRAVERSION\s*=.*$", f"EXTRAVERSION = {suffix}", text, count=1, flags=re.M)
    if n != 1:
        raise BuildError(f"no 'EXTRAVERSION =' line to set to {suffix}")
    return new


def cni_bus_prefix(pfs: list[str]) -> str:
    """The fastiov-cni's `busPrefix` ("DDDD:BB:") from the PFs' addresses; all must share the bus."""
    prefixes = sorted({pf.rsplit(":", 1)[0] + ":" for pf in pfs})
    if len(prefixes) != 1:
        raise BuildError(f"fastiov-cni supports one PCI bus; the testbed's PFs are on {', '.join(prefixes)}")
    return prefixes[0]


def set_cni_bus_prefix(text: str, prefix: str, num_vfs: int) -> str:
    """Set `busPrefix` (and `numVFs`) in the text of the CNI's config-utils.go (the README's vim edit)."""
    text, n = re.subn(r'^(\s*busPrefix\s*=\s*)"[^"]*"', rf'\g<1>"{prefix}"', text, count=1, flags=re.M)
    if n != 1:
        raise BuildError("no uncommented 'busPrefix = \"...\"' line")
    text, _ = re.subn(r"^(\s*numVFs\s*=\s*)\d+", rf"\g<1>{num_vfs}", text, count=1, flags=re.M)
    return text


def _deploy_runtime_configs(ctx: BuildContext, comp: Component) -> str:
    from fastiov_lib.testbeds.fastiov_host import runtime_config

    tb = Testbed(name="build", kind="fastiov", allow_host_changes=True, sys_root=ctx.root, fastiov=ctx.settings)
    results = runtime_config.deploy_configs(tb, ctx.root, ctx.build_dir / "backups")
    return "\n".join(f"{r['status']}: {r['target']}" for r in results)


# ------------------------------------------------------------------ the component table

def _sh(line: str, cwd: str = "{src}", **env: str) -> Command:
    return Command(line=line, cwd=cwd, env=tuple(env.items()))


GO_PATH = (("PATH", "{go}/bin:/usr/local/bin:/usr/bin:/bin"), ("GOROOT", "{go}"))


def fastiov_components(settings: FastiovHostSettings) -> list[Component]:
    """REFERENCE.md's component table as build components, in build order."""
    return [
        Component("go1.12", "Go 1.12.17 toolchain (containerd 1.3)", "go1.12"),
        Component("go1.20", "Go 1.20.6 toolchain (kata, fastiov-cni)", "go1.20"),
        Component("cri-containerd-cni", "base framework: containerd 1.6.13 + runc + CNI + crictl, unpacked to /",
                  "cri-containerd-cni", strip_top=False,
                  install=(_sh("cp -a --no-preserve=ownership . {root}/"),)),
        Component("kata-static", "Kata 3.1.3 static release in {kata_prefix}, shim linked as containerd-shim-kata3-v2",
                  "kata-static", strip_top=False,
                  install=(_sh("mkdir -p {root}{kata_prefix} && cp -a opt/kata/. {root}{kata_prefix}/"),
                           _sh("mkdir -p {root}/usr/local/bin && ln -sfn {kata_prefix}/bin/containerd-shim-kata-v2 "
                               "{root}/usr/local/bin/containerd-shim-kata3-v2"))),
        Component("containerd", "containerd release/1.3 with FastIOV timing logs", "containerd-src",
                  subdir="gopath/src/github.com/containerd/containerd", toolchain="go1.12",
                  env=GO_PATH + (("GO111MODULE", "off"), ("GOPATH", "{tree}/gopath")),
                  build=(_sh("make"),),
                  install=(_sh("install -d {root}/usr/local/bin && install -m 0755 bin/* {root}/usr/local/bin/"),)),
        Component("kata", "kata runtime + shim (stable-3.0) with FastIOV changes", "kata-src", toolchain="go1.20",
                  env=GO_PATH,
                  build=(_sh("make -C src/runtime"),),
                  install=(_sh("install -D -m 0755 src/runtime/containerd-shim-kata-v2 "
                               "{root}{kata_prefix}/bin/containerd-shim-kata-v2"),
                           _sh("install -D -m 0755 src/runtime/kata-runtime {root}{kata_prefix}/bin/kata-runtime"))),
        Component("linux", "host kernel v6.4-rc5 with decomposed VFIO locking (EXTRAVERSION -rc5test)", "linux-src",
                  edits=(SourceEdit(f"Makefile: EXTRAVERSION = {settings.expected_kernel_suffix}", "Makefile",
                                    lambda text, ctx: set_makefile_extraversion(text, ctx.settings.expected_kernel_suffix),
                                    lambda ctx: ctx.settings.expected_kernel_suffix),),
                  configure=(_sh("cp {kernel_config} .config && make olddefconfig"),),
                  build=(_sh("make -j{jobs} bzImage modules"),),
                  install=(_sh("make INSTALL_MOD_PATH={root} modules_install && make INSTALL_PATH={root}/boot install"),),
                  notes="reboot into the -rc5test kernel afterwards (destructive: the host restarts)"),
        Component("fastiov-module", "the fastiov kernel module (device node /dev/dev_fastiov)", None, tree_of="linux",
                  build=(_sh("bash make_fastiov.sh"),),
                  install=(_sh("test -n '{fastiov_module}' && insmod {fastiov_module} && test -e /dev/dev_fastiov"),),
                  notes="after rebooting into the patched kernel; make_fastiov.sh comes with 0001-linux.patch"),
        Component("qemu", "QEMU 6.2.0 with the DMA-mapping skip, configured with kata's options", "qemu-src",
                  configure=(_sh("bash {kata_tree}/tools/packaging/scripts/configure-hypervisor.sh -s kata-qemu "
                                 "> kata.cfg && eval ./configure \"$(cat kata.cfg)\""),),
                  build=(_sh("make -j{jobs}"),),
                  install=(_sh("install -D -m 0755 build/qemu-system-x86_64 {root}{qemu_fastiov}"),)),
        Component("qemu-noskip", "QEMU 6.2.0 without the FastIOV patch (vanilla baseline)", "qemu-src",
                  configure=(_sh("bash {kata_tree}/tools/packaging/scripts/configure-hypervisor.sh -s kata-qemu "
                                 "> kata.cfg && eval ./configure \"$(cat kata.cfg)\""),),
                  build=(_sh("make -j{jobs}"),),
                  install=(_sh("install -D -m 0755 build/qemu-system-x86_64 {root}{qemu_vanilla}"),)),
        Component("guest-kernel", "guest kernel 5.19.2 via kata's build-kernel.sh, virtio_ring pre-faulting",
                  "guest-linux-src", tree_of="kata", work_subdir="tools/packaging/kernel",
                  unpack=(_sh("cp {cache}/linux-5.19.2.tar.xz . && ./build-kernel.sh -v 5.19.2 setup"),),
                  build=(_sh("./build-kernel.sh -v 5.19.2 build"),),
                  install=(_sh("install -D -m 0644 kata-linux-5.19.2-96/arch/x86/boot/bzImage "
                               "{root}{guest_kernel_fastiov}"),)),
        Component("guest-image", "guest image with the FastIOV agent (async VF driver init); needs docker",
                  None, tree_of="kata", work_subdir="tools/osbuilder",
                  env=(("USE_DOCKER", "true"), ("SECCOMP", "false"), ("EXTRA_PKGS", "kmod netplan.io")),
                  build=(_sh("./rootfs-builder/rootfs.sh -r \"$PWD/ubuntu_rootfs\" ubuntu"),
                         _sh("./image-builder/image_builder.sh ./ubuntu_rootfs")),
                  install=(_sh("install -D -m 0644 kata-containers.img {root}{image_async}"),)),
        Component("fastiov-cni", "fastiov-cni plugin (Go), busPrefix from the testbed's PF", "fastiov-src",
                  work_subdir="fastiov-cni", toolchain="go1.20", env=GO_PATH,
                  edits=(SourceEdit(f"config-utils.go: busPrefix = \"{_safe_prefix(settings)}\"",
                                    "fastiov/utils/config-utils.go",
                                    lambda text, ctx: set_cni_bus_prefix(
                                        text, cni_bus_prefix(list(ctx.settings.pfs)),
                                        ctx.settings.vfs_per_pf * len(ctx.settings.pfs)),
                                    lambda ctx: f"{_safe_prefix(ctx.settings)}/{ctx.settings.vfs_per_pf}"),),
                  build=(_sh("make clean && make"),),
                  install=(_sh("install -D -m 0755 build/fastiov {root}{cni_bin_dir}/fastiov && "
                               "ln -sfn fastiov {root}{cni_bin_dir}/fastiov-e810"),),
                  notes="the conflist's plugin type is fastiov-e810: a link to the fastiov binary"),
        Component("runtime-configs", "containerd, kata (variant keys), CNI and crictl configs from templates",
                  None, install=(Command(call=_deploy_runtime_configs,
                                         what="render templates; write config.toml, kata TOML, conflist, crictl.yaml"),)),
    ]


def _safe_prefix(settings: FastiovHostSettings) -> str:
    try:
        return cni_bus_prefix(list(settings.pfs))
    except BuildError as exc:
        return f"<{exc}>"


# ------------------------------------------------------------------ the builder

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


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


class Builder:
    """plan()/apply() over the components, with stamps, per-step logs and provenance."""

    def __init__(self, testbed: Testbed, run_path: Path | None = None,
                 components: list[Component] | None = None, manifest: BinariesManifest | None = None,
                 series: PatchSeries | None = None, offline: bool = False, root: Path | None = None):
        if testbed.fastiov is None:
            raise BuildError(f"testbed {testbed.name!r} has no 'fastiov:' section (a real FastIOV host)")
        self.testbed = testbed
        s = testbed.fastiov
        self.root = Path(root or testbed.sys_root)
        self.ctx = BuildContext(settings=s, build_dir=Path(s.build_dir), cache_dir=Path(s.cache_dir),
                                root=self.root, jobs=s.build_jobs or os.cpu_count() or 1, offline=offline)
        self.components = components if components is not None else fastiov_components(s)
        self.manifest = manifest or load_binaries_manifest()
        self.series = series or load_patch_series()
        self.run_path = Path(run_path) if run_path else None
        names = [c.name for c in self.components]
        for c in self.components:
            if c.source:
                self.manifest.get(c.source)
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
        return self.series.for_component(comp.name)

    def _toolchains(self) -> dict[str, Path]:
        return {c.source: self.ctx.src_dir(c) for c in self.components
                if c.source and self._entry(c).kind == "toolchain"}

    def _vars(self, comp: Component) -> dict[str, str]:
        return self.ctx.variables(comp, self._toolchains())

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
                has = entry is not None and not entry.provided_by or bool(self._patches(comp))
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
        if step in ("fetch", "verify", "patch"):
            parts.append([p.model_dump(mode="json") for p in self._patches(comp)])
        if step == "patch":
            parts.append([e.what + e.key(self.ctx) for e in comp.edits])
        parts.append([c.describe() for c in self._commands(comp, step)])
        parts.append(self._used_vars(comp, step))
        return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]

    def _used_vars(self, comp: Component, step: str) -> list[tuple[str, str]]:
        """The placeholder values a step's commands use (so e.g. a new -j does not force a re-unpack)."""
        texts = [c.line + c.cwd + "".join(v for _, v in c.env) for c in self._commands(comp, step)]
        texts += [v for _, v in comp.env] if self._commands(comp, step) else []
        if step == "unpack" and not comp.unpack:
            texts.append("{tree}" + comp.subdir)
        names = {f for t in texts for _, f, _, _ in string.Formatter().parse(t) if f}
        v = self._vars(comp)
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
        if entry.git:
            status = ("commit pinned in manifest" if entry.git.commit else
                      checksum_status(entry.name, None, self.ctx.cache_dir).replace("unknown", "commit unknown"))
            return {"source": entry.git.repo, "pin": entry.git.commit or entry.git.ref, "checksum": status}
        return {"source": entry.url or entry.provided_by or "", "pin": entry.version,
                "checksum": checksum_status(entry.name, entry.sha256, self.ctx.cache_dir)}

    def _patch_row(self, p: PatchEntry) -> dict[str, str]:
        return {"source": p.url, "pin": f"{p.upstream} {p.pin}",
                "checksum": checksum_status(p.name, p.sha256, self.ctx.cache_dir / "patches")}

    def plan(self) -> list[dict[str, str]]:
        """Every step of every component: what it does, source, pin, checksum status, state."""
        rows = []
        for comp in self.components:
            base = self._source_row(comp)
            v = self._vars(comp)
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
        if step in ("fetch", "verify"):
            out = []
            if own:
                if step == "fetch":
                    what = (f"git fetch {entry.git.commit or entry.git.ref} into the cache" if entry.git
                            else f"download {entry.cache_name()} into the cache (resumable)")
                else:
                    what = f"check commit of {entry.name}" if entry.git else f"sha256 of {entry.cache_name()}"
                out.append({"what": what, **base})
            verb = "download patch" if step == "fetch" else "sha256 of patch"
            out += [{"what": f"{verb} {p.name}", **self._patch_row(p)} for p in self._patches(comp)]
            return out
        if step == "unpack" and not comp.unpack:
            return [{"what": f"unpack {entry.name} into {v['tree']}", **plain}]
        if step == "patch":
            out = [{"what": f"patch -p{p.strip} < {p.name} in {p.directory} (dry run first)", **self._patch_row(p),
                    "checksum": ""} for p in self._patches(comp)]
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
        work = [(c, s) for c in comps for s in self._steps_of(c) if STEPS.index(s) <= last]
        if any(s == "install" for _, s in work):
            require_host_changes(self.testbed.allow_host_changes, "build install",
                                 str(self.testbed.source_path or ""))
        results = []
        with tqdm(total=len(work), desc="build", unit="step") as bar:
            for comp, step in work:
                bar.set_postfix_str(f"{comp.name}:{step}")
                results.append(self._run_step(comp, step))
                bar.update(1)
        return results

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
        info: dict[str, Any] = {}
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

    def _run(self, comp: Component, cmd: Command, log, step: str) -> str:
        v = self._vars(comp)
        if cmd.call is not None:
            out = cmd.call(self.ctx, comp)
            log.write(out + "\n")
            return out
        line = self._fill(cmd.line, v)
        cwd = Path(self._fill(cmd.cwd, v))
        if not cwd.is_dir():
            raise BuildError(f"{comp.name} {step}: working directory {cwd} does not exist")
        env = dict(os.environ)
        for k, val in comp.env + cmd.env:
            env[k] = self._fill(val, v)
        log.write(f"$ (cd {cwd} && {line})\n")
        log.flush()
        rc = run_logged(["bash", "-c", f"set -euo pipefail\n{line}"], cwd, env, log)
        if rc != 0:
            log.flush()
            tail = "".join(Path(log.name).read_text(errors="replace").splitlines(True)[-15:])
            raise BuildError(f"{comp.name} {step}: `{line}` exited with {rc}; "
                             f"log: {log.name}\n{tail}")
        return line

    def _do_commands(self, comp: Component, step: str, log) -> dict[str, Any]:
        return {"commands": [self._run(comp, c, log, step) for c in self._commands(comp, step)]}

    def _do_fetch(self, comp: Component, step: str, log) -> dict[str, Any]:
        info: dict[str, Any] = {}
        entry = self._entry(comp)
        if entry is not None and not entry.provided_by:
            if entry.git:
                info["source"] = self._git_fetch(entry, log)
            else:
                res = fetch_entry(entry, self.ctx.cache_dir, self.ctx.offline)
                log.write(f"{entry.name}: {res.path} sha256 {res.sha256} ({res.status}, {res.source})\n")
                info["source"] = res.model_dump(mode="json")
        info["patches"] = []
        for p in self._patches(comp):
            res = fetch_entry(p, self.ctx.cache_dir / "patches", self.ctx.offline)
            log.write(f"{p.name}: sha256 {res.sha256} ({res.status})\n")
            info["patches"].append(res.model_dump(mode="json"))
        return info

    def _git_dir(self, entry: BinaryEntry) -> Path:
        return self.ctx.cache_dir / "git" / entry.name

    def _git_fetch(self, entry: BinaryEntry, log) -> dict[str, Any]:
        repo = self._git_dir(entry)
        g = entry.git
        if not (repo / ".git").exists():
            if self.ctx.offline:
                raise ManifestError(f"{entry.name}: offline mode and {repo} is not in the cache")
            tmp = repo.with_name(repo.name + ".tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
            target = g.commit or g.ref
            for line in (["git", "init", "-q"], ["git", "remote", "add", "origin", g.repo],
                         ["git", "fetch", "-q", "--depth", "1", "origin", target],
                         ["git", "checkout", "-q", "--detach", "FETCH_HEAD"]):
                rc = run_logged(line, tmp, None, log)
                if rc != 0:
                    raise BuildError(f"{entry.name}: `{' '.join(line)}` failed ({rc}); log: {log.name}")
            os.replace(tmp, repo)
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True).stdout.strip()
        log.write(f"{entry.name}: {g.repo} {g.ref} at {commit}\n")
        return {"repo": g.repo, "ref": g.ref, "commit": commit}

    def _do_verify(self, comp: Component, step: str, log) -> dict[str, Any]:
        info: dict[str, Any] = {}
        entry = self._entry(comp)
        if entry is not None and not entry.provided_by:
            if entry.git:
                commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=self._git_dir(entry),
                                        capture_output=True, text=True).stdout.strip()
                status = record_git_pin(self.ctx.cache_dir, entry.name, entry.git.repo, entry.git.ref,
                                        commit, entry.git.commit)
                info["source"] = {"commit": commit, "status": status}
            else:  # the cached file is hashed again: the cache may have been touched since fetch
                res = fetch_entry(entry, self.ctx.cache_dir, offline=True)
                info["source"] = {"sha256": res.sha256, "status": res.status}
            log.write(f"{entry.name}: {info['source']}\n")
        info["patches"] = []
        for p in self._patches(comp):
            res = fetch_entry(p, self.ctx.cache_dir / "patches", offline=True)
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
        inner.mkdir(parents=True)
        if entry.git:
            line = f"git -C {self._git_dir(entry)} archive --format=tar HEAD | tar -x -C {inner}"
        else:
            archive = self.ctx.cache_dir / entry.cache_name()
            strip = " --strip-components=1" if comp.strip_top else ""
            line = f"tar -xf {archive} -C {inner}{strip}"
        log.write(f"$ {line}\n")
        log.flush()
        # an interrupted unpack leaves only src.tmp, which the next unpack removes first
        rc = run_logged(["bash", "-c", f"set -euo pipefail\n{line}"], None, None, log)
        if rc != 0:
            shutil.rmtree(tmp, ignore_errors=True)
            raise BuildError(f"{comp.name} unpack: `{line}` exited with {rc}; log: {log.name}")
        shutil.rmtree(dest, ignore_errors=True)
        os.replace(tmp, dest)
        return {"tree": str(dest)}

    def _do_patch(self, comp: Component, step: str, log) -> dict[str, Any]:
        tree = self.ctx.work_dir(comp)
        applied: list[tuple[PatchEntry, Path]] = []
        edits: list[str] = []
        try:
            for p in self._patches(comp):
                pfile = self.ctx.cache_dir / "patches" / p.cache_name()
                where = tree / p.directory
                args = ["patch", f"-p{p.strip}", "--forward", "--batch", "-i", str(pfile), "-d", str(where)]
                dry = subprocess.run(args[:1] + ["--dry-run"] + args[1:], capture_output=True, text=True)
                log.write(f"$ {' '.join(args)} --dry-run\n{dry.stdout}{dry.stderr}")
                if dry.returncode != 0:
                    raise BuildError(f"{comp.name}: patch {p.name} does not apply to {where} "
                                     f"(dry run, -p{p.strip}): {(dry.stdout + dry.stderr).strip()[-600:]}; "
                                     f"tree left as it was; log: {log.name}")
                res = subprocess.run(args, capture_output=True, text=True)
                log.write(f"$ {' '.join(args)}\n{res.stdout}{res.stderr}")
                if res.returncode != 0:
                    raise BuildError(f"{comp.name}: patch {p.name} failed after a clean dry run; log: {log.name}")
                applied.append((p, pfile))
            new_texts: dict[Path, str] = {}  # every edit is computed before any file is written
            for e in comp.edits:
                path = tree / e.file
                if not path.is_file():
                    raise BuildError(f"{comp.name}: {path}: not found for the edit '{e.what}'")
                try:
                    new_texts[path] = e.apply(new_texts.get(path, path.read_text()), self.ctx)
                except BuildError as exc:
                    raise BuildError(f"{comp.name}: {path}: {exc}") from None
                edits.append(e.what)
                log.write(f"edit: {path}: {e.what}\n")
            for path, text in new_texts.items():
                path.write_text(text)
        except BaseException:
            for p, pfile in reversed(applied):  # leave the tree as it was
                subprocess.run(["patch", f"-p{p.strip}", "-R", "--batch", "-i", str(pfile), "-d",
                                str(tree / p.directory)], stdout=log, stderr=subprocess.STDOUT)
                log.write(f"reverted {p.name}\n")
            raise
        return {"patches": [p.name for p, _ in applied], "edits": edits}

    # -- provenance
    def _provenance(self, comp: Component, step: str, rec: dict[str, Any]) -> None:
        if self.run_path is None:
            return
        path = self.run_path / PROVENANCE_FILE
        data = json.loads(path.read_text()) if path.is_file() else {"toolchain": _toolchain_versions(),
                                                                    "components": {}}
        c = data["components"].setdefault(comp.name, {"description": comp.description,
                                                      "source": comp.source, "steps": {}})
        if comp.toolchain:
            tool = self.manifest.get(comp.toolchain)
            c["toolchain"] = {"name": tool.name, "version": tool.version, "root": str(self.ctx.src_dir(
                self.component(comp.toolchain)) if comp.toolchain in {x.name for x in self.components} else "")}
        c["steps"][step] = rec
        data["updated"] = _now()
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
        os.replace(tmp, path)


def format_build_plan(rows: list[dict[str, str]]) -> str:
    """The plan for a terminal: per component its source, pin and checksum status, then its steps."""
    lines: list[str] = []
    current = None
    for r in rows:
        if r["component"] != current:
            current = r["component"]
            lines.append(f"\n== {current}")
        check = f"  [{r['checksum']}]" if r["checksum"] else ""
        src = f"\n       source: {r['source']}  pin: {r['pin']}" if r["step"] == "fetch" else ""
        flag = "  (host change)" if r["host change"] else ""
        lines.append(f"  {r['step']:<9} {r['state']:<5}  {r['what']}{check}{flag}{src}")
    return "\n".join(lines).lstrip("\n")


def build_plan(testbed: Testbed, offline: bool = False) -> list[dict[str, str]]:
    """Plan rows for the whole FastIOV stack of a testbed (nothing is fetched or built)."""
    return Builder(testbed, offline=offline).plan()


def plan_summary(rows: list[dict[str, str]]) -> list[dict[str, Any]]:
    """Per component: number of steps and actions, host-changing actions, checksum statuses seen."""
    out: dict[str, dict[str, Any]] = {}
    for r in rows:
        c = out.setdefault(r["component"], {"component": r["component"], "steps": set(), "actions": 0,
                                            "host changes": 0, "checksums": set()})
        c["steps"].add(r["step"])
        c["actions"] += 1
        c["host changes"] += r["host change"] == "yes"
        if r["checksum"]:
            c["checksums"].add(r["checksum"])
    return [{**c, "steps": len(c["steps"]), "checksums": "; ".join(sorted(c["checksums"]))} for c in out.values()]
