"""REFERENCE.md's component table: every component a FastIOV host is built from, in build order.

The components themselves (Command, Component, the Python calls of steps) are in `components`;
this module lists them with their sources, commands and install targets for a host's settings.
"""
from __future__ import annotations

from typing import Literal

from fastiov_lib.config import FastiovHostSettings
from fastiov_lib.testbeds.fastiov_host.build.components import (
    CONTAINERD_BUILDTAGS, CONTAINERD_COMMIT, INTEL_VF_FRAGMENT, PATCHES_DIR, BuildError, Component, SourceEdit, call,
    cmd, cni_bus_prefix, configure_qemu, deploy_runtime_configs, install_glob, intel_vf_fragment, keep_kata_static,
    load_fastiov_module, running_kernel_facts, set_cni_bus_prefix, set_makefile_extraversion,
)
from fastiov_lib.testbeds.fastiov_host.build.pod_images import pod_images_component



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
                  None, install=(call(deploy_runtime_configs,
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


def _safe_prefix(settings: FastiovHostSettings) -> str:
    try:
        return cni_bus_prefix(list(settings.pfs))
    except BuildError as exc:
        return f"<{exc}>"
