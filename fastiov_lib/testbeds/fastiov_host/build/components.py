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
from typing import TYPE_CHECKING, Any, Callable, Literal

from fastiov_lib.config import FastiovHostSettings
from fastiov_lib.testbeds.base import BackendError

if TYPE_CHECKING:
    from fastiov_lib.testbeds.fastiov_host.build.builder import Builder

PATCHES_DIR = Path(__file__).resolve().parents[4] / "patches"
DEBIAN_GO = Path("/usr/lib/go-1.19")  # golang-1.19-go; its go.mod needs of kata 3.0.2 are met
TOOLCHAIN_ROOTS = {"go1.19-debian": DEBIAN_GO}
CONTAINERD_COMMIT = "1c5970efbdd8bc864a34baa60c0b382434d4d7c2"
CONTAINERD_BUILDTAGS = "seccomp apparmor no_btrfs"
INTEL_VF_FRAGMENT = "tools/packaging/kernel/configs/fragments/x86_64/fastiov-intel-vf.conf"


class BuildError(BackendError):
    """A build step failed; the message names component, step, command and log file."""


@dataclass(frozen=True)
class Command:
    """A command of a step: an argument list (placeholders allowed per argument), or a Python call."""

    argv: tuple[str, ...] = ()
    cwd: str = "{src}"
    env: tuple[tuple[str, str], ...] = ()
    call: Callable[["Builder", "Component", Any], str] | None = field(default=None, compare=False)
    what: str = ""  # plan text for calls

    def describe(self) -> str:
        # placeholders stay readable ({jobs}, not '{jobs}'); anything else is quoted as a shell would need
        return self.what or " ".join(a if re.fullmatch(r"[\w@%+=:,./{}-]+", a) else shlex.quote(a)
                                     for a in self.argv)


def cmd(*argv: str, cwd: str = "{src}", **env: str) -> Command:
    """An argv command (no shell); `{name}` placeholders are filled per argument."""
    return Command(argv=tuple(argv), cwd=cwd, env=tuple(env.items()))


def call(fn: Callable[["Builder", "Component", Any], str], what: str) -> Command:
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

    def run(builder: "Builder", comp: Component, log: Any) -> str:
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

    def run(builder: "Builder", comp: Component, log: Any) -> str:
        from fastiov_lib.testbeds.fastiov_host.build.patching import new_file_text

        patch = builder.patch_file("0001-qemu.patch")
        opts = kata_cfg_options(new_file_text(patch, "kata.cfg"), replace)
        # newer compilers than the authors' warn where 6.2.0 did not; Debian's meson 1.0 is used
        argv = ["./configure", *opts, "--disable-werror", "--meson=meson"]
        builder.run_argv(comp, "configure", argv, Path(builder.variables(comp)["src"]), log)
        return shlex.join(argv)

    return call(run, "./configure $(options of kata.cfg from 0001-qemu.patch) --disable-werror --meson=meson")


def load_fastiov_module(builder: "Builder", comp: Component, log: Any) -> str:
    from fastiov_lib.testbeds.fastiov_host.host_checks import module_loaded

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

    def run(builder: "Builder", comp: Component, log: Any) -> str:
        s = builder.ctx.settings
        dest = Path(target.format(**builder.variables(comp)))
        tree = builder.ctx.comp_dir("kata-static") / "src"
        shipped = kata_static_file(dest, s.kata_prefix, tree) if s is not None else None
        if shipped is not None:
            raise BuildError(f"{comp.name} install: {dest} is kata-static's own file ({shipped}); give the "
                             "artifact's file a name of its own in the testbed file")
        return f"{dest}: not one of kata-static's files" + ("" if tree.is_dir() else " (kata-static not unpacked)")

    return call(run, f"check that {target} is not a file of kata-static")


def _deploy_runtime_configs(builder: "Builder", comp: Component, log: Any) -> str:
    from fastiov_lib.config import Testbed
    from fastiov_lib.testbeds.fastiov_host import runtime_config

    ctx = builder.ctx
    tb = Testbed(name="build", kind="fastiov", allow_host_changes=True, sys_root=ctx.root, fastiov=ctx.settings)
    results = runtime_config.deploy_configs(tb, ctx.root, ctx.build_dir / "backups")
    return "\n".join(f"{r['status']}: {r['target']}" for r in results)


# ------------------------------------------------------------------ the component table

# everything Go writes stays in the component's build folder (no ~/.cache/go-build, no module cache)
GO_ENV = (("PATH", "{go}/bin:/usr/local/bin:/usr/bin:/bin"), ("GOCACHE", "{build}/gocache"),
          ("HOME", "{build}/home"), ("XDG_CACHE_HOME", "{build}/home/.cache"), ("GOPROXY", "off"),
          ("GOTOOLCHAIN", "local"))


def containerd_component(name: str = "containerd", version: str = "v1.3.10-fastiov",
                         install_dir: str = "{root}/usr/local/bin") -> Component:
    """containerd release/1.3 + the FastIOV timing logs, GOPATH layout, Debian's Go 1.19."""
    return Component(
        name, "containerd release/1.3 with FastIOV timing logs", "containerd-src",
        subdir="gopath/src/github.com/containerd/containerd", toolchain="go1.19-debian",
        env=GO_ENV + (("GO111MODULE", "off"), ("GOPATH", "{tree}/gopath"), ("GOFLAGS", "")),
        # VERSION and REVISION given: the tree is not a git checkout, so `git describe` has nothing
        build=(cmd("make", "binaries", f"BUILDTAGS={CONTAINERD_BUILDTAGS}", f"VERSION={version}",
                   f"REVISION={CONTAINERD_COMMIT}"),),
        install=(install_glob("bin/*", install_dir),))


QemuFlavour = Literal["fastiov", "noskip", "stock"]
QEMU_PATCHES: dict[str, tuple[str, ...]] = {  # flavour -> series components whose patches apply
    "fastiov": ("qemu",),  # 0001-qemu.patch: timeline, fastiov registration, mem0 skip
    "noskip": ("qemu", "qemu-noskip"),  # + 0004: the mem0 skip reverted (the original's -noskip baseline)
    "stock": (),  # QEMU 6.2.0 as released (0001 only read, for kata.cfg's options)
}


def qemu_component(name: str, description: str, target: str, replace: dict[str, str] | None = None,
                   flavour: QemuFlavour = "fastiov") -> Component:
    """QEMU 6.2.0 configured with kata.cfg's options: FastIOV's, the noskip baseline, or stock."""
    if flavour not in QEMU_PATCHES:
        raise BuildError(f"QEMU flavour {flavour!r}: expected one of {', '.join(QEMU_PATCHES)}")
    return Component(name, description, "qemu-src", patch_components=QEMU_PATCHES[flavour],
                     reads_patches=("0001-qemu.patch",) if flavour == "stock" else (),
                     configure=(configure_qemu(replace),),
                     build=(cmd("make", "-j{jobs}"),),
                     install=(keep_kata_static(target),
                              cmd("install", "-D", "-m", "0755", "build/qemu-system-x86_64", target)))


def fastiov_components(settings: FastiovHostSettings) -> list[Component]:
    """REFERENCE.md's component table as build components, in build order."""
    return [
        Component("cri-containerd-cni", "base framework: containerd 1.6.13 + runc + CNI + crictl, unpacked to /",
                  "cri-containerd-cni", strip_top=False,
                  install=(cmd("cp", "-a", "--no-preserve=ownership", ".", "{root}/"),)),
        Component("kata-static", "Kata 3.1.3 static release in {kata_prefix}, shim linked as containerd-shim-kata3-v2",
                  "kata-static", strip_top=False,
                  install=(cmd("mkdir", "-p", "{root}{kata_prefix}"),
                           cmd("cp", "-a", "opt/kata/.", "{root}{kata_prefix}/"),
                           cmd("mkdir", "-p", "{root}/usr/local/bin"),
                           cmd("ln", "-sfn", "{kata_prefix}/bin/containerd-shim-kata-v2",
                               "{root}/usr/local/bin/containerd-shim-kata3-v2"))),
        containerd_component(),
        Component("kata", "kata runtime + shim (tag 3.0.2) with FastIOV changes; guest kernel fragment with iavf",
                  "kata-src", toolchain="go1.19-debian",
                  # -mod=vendor + GOPROXY=off: everything is vendored; the Go version check would download yq
                  env=GO_ENV + (("GOPATH", "{build}/gopath"), ("GOFLAGS", "-mod=vendor")),
                  edits=(SourceEdit("guest kernel fragment: Intel VF driver (iavf)", INTEL_VF_FRAGMENT,
                                    intel_vf_fragment,
                                    lambda ctx: (PATCHES_DIR / "kata-kernel-intel-vf.conf").read_text(),
                                    create=True),),
                  # on make's command line: src/runtime/Makefile assigns it empty, which beats the environment
                  build=(cmd("make", "-C", "src/runtime", "SKIP_GO_VERSION_CHECK=1"),),
                  install=(cmd("install", "-D", "-m", "0755", "src/runtime/containerd-shim-kata-v2",
                               "{root}{kata_prefix}/bin/containerd-shim-kata-v2"),
                           cmd("install", "-D", "-m", "0755", "src/runtime/kata-runtime",
                               "{root}{kata_prefix}/bin/kata-runtime"))),
        host_kernel_component(settings, "linux", "host kernel v6.4-rc5 with decomposed VFIO locking", "linux-src",
                              "expected_kernel_suffix",
                              "reboot into the -rc5test kernel afterwards (destructive: the host restarts); the "
                              "FastIOV variants run on it"),
        host_kernel_component(settings, "linux-vanilla", "stock Linux 6.4 host kernel (VFs share a VFIO device set)",
                              "linux-vanilla-src", "stock_kernel_suffix",
                              "the vanilla variants and the baselines run on it (the campaign's first boot)"),
        Component("fastiov-module", "the fastiov kernel module (device node /dev/dev_fastiov)", None, tree_of="linux",
                  build=(cmd("bash", "make_fastiov.sh"),),
                  install=(call(load_fastiov_module, "insmod {fastiov_module} (unless loaded); check /dev/dev_fastiov"),),
                  needs_booted="patched", stamp_facts=running_kernel_facts,
                  notes="only on the booted patched kernel (a full build skips it elsewhere): built for the running "
                        "kernel, loaded again after every boot; make_fastiov.sh comes with 0001-linux.patch"),
        qemu_component("qemu", "QEMU 6.2.0 with the DMA-mapping skip, configured with the patch's kata.cfg",
                       "{root}{qemu_fastiov}"),
        qemu_component("qemu-noskip", "QEMU 6.2.0 with 0001-qemu.patch minus the mem0 skip (vanilla baseline: "
                       "same timeline markers, guest RAM DMA-mapped eagerly)", "{root}{qemu_vanilla}", flavour="noskip"),
        guest_kernel_component("guest-kernel", "guest kernel 5.19.2 via kata's build-kernel.sh, virtio_ring "
                               "pre-faulting (0001-kata-kernel.patch), iavf", GUEST_KERNEL_DIR, "guest_kernel_fastiov"),
        # the vanilla variants' guest kernel: the same kata build and fragments (iavf), without FastIOV's patch
        guest_kernel_component("guest-kernel-vanilla", "guest kernel 5.19.2 via kata's build-kernel.sh, stock "
                               "(no 0001-kata-kernel.patch), iavf", f"{GUEST_KERNEL_DIR}-vanilla", "guest_kernel_vanilla"),
        Component("guest-image", "guest image with the FastIOV agent (async VF driver init); needs docker",
                  None, tree_of="kata", work_subdir="tools/osbuilder",
                  env=(("USE_DOCKER", "true"), ("SECCOMP", "false"), ("EXTRA_PKGS", "kmod netplan.io")),
                  build=(cmd("./rootfs-builder/rootfs.sh", "-r", "{src}/ubuntu_rootfs", "ubuntu"),
                         cmd("./image-builder/image_builder.sh", "./ubuntu_rootfs")),
                  install=(keep_kata_static("{root}{image_async}"),
                           cmd("install", "-D", "-m", "0644", "kata-containers.img", "{root}{image_async}"))),
        Component("fastiov-cni", "fastiov-cni plugin (Go), busPrefix from the testbed's PF", "fastiov-src",
                  work_subdir="fastiov-cni", toolchain="go1.19-debian",
                  env=GO_ENV + (("GOPATH", "{build}/gopath"),),
                  edits=(SourceEdit(f"config-utils.go: busPrefix = \"{_safe_prefix(settings)}\"",
                                    "fastiov/utils/config-utils.go",
                                    lambda text, ctx: set_cni_bus_prefix(
                                        text, cni_bus_prefix(list(ctx.settings.pfs)),
                                        ctx.settings.vfs_per_pf * len(ctx.settings.pfs)),
                                    lambda ctx: f"{_safe_prefix(ctx.settings)}/{ctx.settings.vfs_per_pf}"),),
                  # its default make runs gofmt and a downloaded golangci-lint first; build only
                  build=(cmd("go", "build", "-o", "build/fastiov", "./cmd/fastiov", GOPROXY="https://proxy.golang.org"),),
                  install=(cmd("install", "-D", "-m", "0755", "build/fastiov", "{root}{cni_bin_dir}/fastiov"),
                           cmd("ln", "-sfn", "fastiov", "{root}{cni_bin_dir}/fastiov-e810")),
                  notes="the conflist's plugin type is fastiov-e810: a link to the fastiov binary; "
                        "its Go modules are not vendored (needs the module proxy)"),
        Component("runtime-configs", "containerd, kata (variant keys), CNI and crictl configs from templates",
                  None, install=(call(_deploy_runtime_configs,
                                      "render templates; write config.toml, kata TOML, conflist, crictl.yaml"),)),
        pod_images_component(),
    ]


# Debian's and Ubuntu's kernel configs name their own signing keys (debian/canonical-certs.pem), which a
# kernel built from upstream sources does not have: the build stops at certs/. Emptied, as upstream's
# own documentation for building with a distribution config says.
DISTRO_KEY_OPTIONS = ("SYSTEM_TRUSTED_KEYS", "SYSTEM_REVOCATION_KEYS")


def host_kernel_component(settings: FastiovHostSettings, name: str, description: str, source: str, suffix_setting: str,
                          notes: str) -> Component:
    """A host kernel from the running kernel's config, with its own EXTRAVERSION (how the campaign tells it)."""
    suffix = lambda ctx: getattr(ctx.settings, suffix_setting)  # noqa: E731
    keys = [a for k in DISTRO_KEY_OPTIONS for a in ("--set-str", k, "")]
    return Component(
        name, f"{description} (EXTRAVERSION from fastiov.{suffix_setting})", source,
        edits=(SourceEdit(f"Makefile: EXTRAVERSION = {getattr(settings, suffix_setting)}", "Makefile",
                          lambda text, ctx: set_makefile_extraversion(text, suffix(ctx)), suffix),),
        configure=(cmd("cp", "{kernel_config}", ".config"), cmd("scripts/config", *keys),
                   cmd("make", "olddefconfig")),
        build=(cmd("make", "-j{jobs}", "bzImage", "modules"),),
        install=(cmd("make", "INSTALL_MOD_PATH={root}", "modules_install"),
                 cmd("make", "INSTALL_PATH={root}/boot", "install")),
        notes=notes)


GUEST_KERNEL_DIR = "kata-linux-5.19.2-96"  # where build-kernel.sh setup puts 5.19.2 (0001-kata-kernel.patch's directory)


def guest_kernel_component(name: str, description: str, kernel_dir: str, target: str) -> Component:
    """A guest kernel built by kata's build-kernel.sh into `kernel_dir` of the kata tree, installed to `target`."""
    k = ("-k", kernel_dir) if kernel_dir != GUEST_KERNEL_DIR else ()  # its default dir: 0001-kata-kernel.patch's
    dest = "{root}{" + target + "}"
    return Component(
        name, description, "guest-linux-src", tree_of="kata", work_subdir="tools/packaging/kernel",
        unpack=(cmd("cp", "{cache}/linux-5.19.2.tar.xz", "."), cmd("./build-kernel.sh", "-v", "5.19.2", *k, "setup")),
        build=(cmd("./build-kernel.sh", "-v", "5.19.2", *k, "build"),),
        install=(keep_kata_static(dest),
                 cmd("install", "-D", "-m", "0644", f"{kernel_dir}/arch/x86/boot/bzImage", dest),
                 # beside the kernel, for host-check's look for the VF driver (CONFIG_IAVF)
                 cmd("install", "-D", "-m", "0644", f"{kernel_dir}/.config", dest + ".config")))


def pod_images_component() -> Component:
    from fastiov_lib.testbeds.fastiov_host.build.pod_images import pod_images_component as make

    return make()


def _safe_prefix(settings: FastiovHostSettings) -> str:
    try:
        return cni_bus_prefix(list(settings.pfs))
    except BuildError as exc:
        return f"<{exc}>"
