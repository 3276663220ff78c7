"""The build components: REFERENCE.md's component table as data (argument lists, never shell strings).

Each command is an argv tuple whose elements may hold `{name}` placeholders filled from the build
context, or a Python call (globs, reading QEMU's kata.cfg, loading a module). Go components build
with Debian's Go 1.19 (`golang-1.19-go`), with GOPATH, GOCACHE and HOME inside the build folder so
that a build changes nothing outside it.
"""
from __future__ import annotations

import os
import re
import shlex
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

from fastiov_lib.testbeds.base import BackendError
from fastiov_lib.testbeds.checks import module_loaded

PATCHES_DIR = Path(__file__).resolve().parents[4] / "patches"
DEBIAN_GO = Path("/usr/lib/go-1.19")  # golang-1.19-go; its go.mod needs of kata 3.0.2 are met
TOOLCHAIN_ROOTS = {"go1.19-debian": DEBIAN_GO}
CONTAINERD_COMMIT = "1c5970efbdd8bc864a34baa60c0b382434d4d7c2"
CONTAINERD_BUILDTAGS = "seccomp apparmor no_btrfs"
INTEL_VF_FRAGMENT = "tools/packaging/kernel/configs/fragments/x86_64/fastiov-intel-vf.conf"


class BuildError(BackendError):
    """A build step failed; the message names component, step, command and log file."""


class StepRunner(Protocol):
    """What a Python step of a component gets to work with (the Builder running it)."""

    ctx: Any  # the build context: settings, root, build_dir, ...

    def variables(self, comp: "Component") -> dict[str, str]: ...

    def patch_file(self, name: str) -> Path: ...

    def run_argv(self, comp: "Component", step: str, argv: list[str], cwd: Path | None, log: Any) -> Any: ...


@dataclass(frozen=True)
class Command:
    """A command of a step: an argument list (placeholders allowed per argument), or a Python call."""

    argv: tuple[str, ...] = ()
    cwd: str = "{src}"
    env: tuple[tuple[str, str], ...] = ()
    call: Callable[["StepRunner", "Component", Any], str] | None = field(default=None, compare=False)
    what: str = ""  # plan text for calls

    def describe(self) -> str:
        # placeholders stay readable ({jobs}, not '{jobs}'); anything else is quoted as a shell would need
        return self.what or " ".join(a if re.fullmatch(r"[\w@%+=:,./{}-]+", a) else shlex.quote(a)
                                     for a in self.argv)


def cmd(*argv: str, cwd: str = "{src}", **env: str) -> Command:
    """An argv command (no shell); `{name}` placeholders are filled per argument."""
    return Command(argv=tuple(argv), cwd=cwd, env=tuple(env.items()))


def call(fn: Callable[["StepRunner", "Component", Any], str], what: str) -> Command:
    return Command(call=fn, what=what)


@dataclass(frozen=True)
class SourceEdit:
    """A hand edit of the original README, as code: a text change of one file, after the patches."""

    what: str
    file: str  # relative to the component's folder
    apply: Callable[[str, Any], str]  # old text -> new text (BuildError if it cannot)
    key: Callable[[Any], str] = lambda ctx: ""  # inputs, for the stamp
    create: bool = False  # the file is new (old text is "")


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
    toolchain: str | None = None  # binaries_manifest entry of the toolchain (Debian's Go)
    reads_patches: tuple[str, ...] = ()  # patches fetched and verified but not applied (kata.cfg)
    # the series components whose patches apply, in order (None: the component's own name); lets
    # qemu-noskip take 0001-qemu.patch and then its own revert of the mem0 skip
    patch_components: tuple[str, ...] | None = None
    unpack: tuple[Command, ...] = ()  # replaces the default unpack
    edits: tuple[SourceEdit, ...] = ()
    configure: tuple[Command, ...] = ()
    build: tuple[Command, ...] = ()
    install: tuple[Command, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    notes: str = ""
    # the campaign kernel that must run for the build/install steps (the fastiov module is built against
    # and loaded into the patched kernel): a full `build apply` skips the component on another kernel
    needs_booted: str | None = None
    # extra inputs of a step's stamp, e.g. the running kernel (a rebuilt module per kernel, a load per boot)
    stamp_facts: Callable[[Any, str], str] | None = field(default=None, compare=False)


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


def intel_vf_fragment(text: str, ctx: Any) -> str:
    """The guest kernel config fragment with the Intel VF driver (iavf), from patches/."""
    return (PATCHES_DIR / "kata-kernel-intel-vf.conf").read_text()


# ------------------------------------------------------------------ Python calls of steps

def install_glob(pattern: str, dest: str, mode: int = 0o755) -> Command:
    """Install every file matching `pattern` (relative to the work folder) into `dest`."""

    def run(builder: "StepRunner", comp: Component, log: Any) -> str:
        v = builder.variables(comp)
        src = Path(v["src"])
        target = Path(dest.format(**v))
        files = sorted(p for p in src.glob(pattern) if p.is_file())
        if not files:
            raise BuildError(f"{comp.name} install: nothing matches {src / pattern}")
        target.mkdir(parents=True, exist_ok=True)
        for f in files:
            shutil.copy2(f, target / f.name)
            os.chmod(target / f.name, mode)
        return f"installed {', '.join(f.name for f in files)} into {target}"

    return call(run, f"install -m {mode:o} {pattern} {dest}")


def kata_cfg_options(patch_text_cfg: str, replace: dict[str, str] | None = None) -> list[str]:
    """QEMU configure options from the text of the patch's kata.cfg (shell-quoted words), with swaps."""
    opts = shlex.split(patch_text_cfg)
    if not opts or not all(o.startswith("--") for o in opts):
        raise BuildError(f"kata.cfg: expected configure options (--...), got {patch_text_cfg[:80]!r}")
    return [(replace or {}).get(o, o) for o in opts]


def configure_qemu(replace: dict[str, str] | None = None) -> Command:
    """./configure with the options of the kata.cfg that 0001-qemu.patch adds (the authors' set)."""

    def run(builder: "StepRunner", comp: Component, log: Any) -> str:
        from fastiov_lib.testbeds.fastiov_host.build.patching import new_file_text

        patch = builder.patch_file("0001-qemu.patch")
        opts = kata_cfg_options(new_file_text(patch, "kata.cfg"), replace)
        # newer compilers than the authors' warn where 6.2.0 did not; Debian's meson 1.0 is used
        argv = ["./configure", *opts, "--disable-werror", "--meson=meson"]
        builder.run_argv(comp, "configure", argv, Path(builder.variables(comp)["src"]), log)
        return shlex.join(argv)

    return call(run, "./configure $(options of kata.cfg from 0001-qemu.patch) --disable-werror --meson=meson")


def load_fastiov_module(builder: "StepRunner", comp: Component, log: Any) -> str:
    """insmod the fastiov module unless it is loaded already (its device node then present)."""
    settings = builder.ctx.settings
    module = settings.fastiov_module_path if settings else None
    if not module:
        raise BuildError("fastiov-module install: the testbed sets no fastiov.fastiov_module_path")
    device = Path(builder.ctx.root) / str(settings.fastiov_device).lstrip("/")
    if module_loaded(builder.ctx.root, "fastiov") and device.exists():
        return f"fastiov already loaded; {settings.fastiov_device} present"
    builder.run_argv(comp, "install", ["insmod", str(module)], None, log)
    if not device.exists():
        raise BuildError(f"fastiov-module install: {settings.fastiov_device} missing after insmod {module}")
    return f"insmod {module}; {settings.fastiov_device} present"


def running_kernel_facts(ctx: Any, step: str) -> str:
    """What a module's stamp depends on: the kernel it is built for (build), the boot it is loaded in (install)."""
    root = Path(ctx.root)

    def read(rel: str) -> str:
        try:
            return (root / rel).read_text().strip()
        except OSError:
            return ""

    release = read("proc/sys/kernel/osrelease")
    return f"{release} boot {read('proc/sys/kernel/random/boot_id')}" if step == "install" else release


KATA_STATIC_TOP = "opt/kata"  # the release tarball's folder, moved to kata_prefix on install


def kata_static_file(path: Path, kata_prefix: Path, kata_static_tree: Path) -> Path | None:
    """The file of the unpacked kata-static release that installing to `path` would overwrite, if any."""
    try:
        rel = Path(path).relative_to(kata_prefix)
    except ValueError:
        return None
    shipped = Path(kata_static_tree) / KATA_STATIC_TOP / rel
    return shipped if shipped.exists() else None


def keep_kata_static(target: str) -> Command:
    """A check before an install: refuse a target that is one of kata-static's own files."""

    def run(builder: "StepRunner", comp: Component, log: Any) -> str:
        s = builder.ctx.settings
        dest = Path(target.format(**builder.variables(comp)))
        tree = builder.ctx.comp_dir("kata-static") / "src"
        shipped = kata_static_file(dest, s.kata_prefix, tree) if s is not None else None
        if shipped is not None:
            raise BuildError(f"{comp.name} install: {dest} is kata-static's own file ({shipped}); give the "
                             "artifact's file a name of its own in the testbed file")
        return f"{dest}: not one of kata-static's files" + ("" if tree.is_dir() else " (kata-static not unpacked)")

    return call(run, f"check that {target} is not a file of kata-static")


def deploy_runtime_configs(builder: "StepRunner", comp: Component, log: Any) -> str:
    """Deploy the runtime configs (containerd, kata, CNI, crictl) into the build's root, backed up."""
    from fastiov_lib.config import Testbed
    from fastiov_lib.testbeds.fastiov_host import runtime_config

    ctx = builder.ctx
    tb = Testbed(name="build", kind="fastiov", allow_host_changes=True, sys_root=ctx.root, fastiov=ctx.settings)
    results = runtime_config.deploy_configs(tb, ctx.root, ctx.build_dir / "backups")
    return "\n".join(f"{r['status']}: {r['target']}" for r in results)
