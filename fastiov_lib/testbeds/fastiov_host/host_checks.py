"""Host readiness checks: CPU virtualisation, KVM, IOMMU, kernel, hugepages, modules, runtimes, configs.

Every check reads through `testbed.sys_root` (procfs, sysfs, dev, and the installed binaries and
config files below it), so tests run them against generated fake trees. Each returns a
`checks.Check`: pass / warn / fail, what was seen, and how to fix it.
"""
from __future__ import annotations

import os
import re
import shutil
import tomllib
from pathlib import Path
from typing import Any

import yaml

from fastiov_lib.testbeds.checks import Check, check_kvm_device, module_loaded, read_text, under, version_of
from fastiov_lib.config import FastiovHostSettings, Testbed

REQUIRED_MODULES = ("vfio", "vfio_pci", "vfio_iommu_type1")








# ------------------------------------------------------------------ generic checks

def check_cpu_virtualisation(root: Path) -> Check:
    text = read_text(under(root, "proc/cpuinfo")) or ""
    flags = set()
    for line in text.splitlines():
        if line.startswith("flags"):
            flags.update(line.split(":", 1)[1].split())
    found = sorted(flags & {"vmx", "svm"})
    if found:
        return Check("cpu.virtualisation", "pass", f"CPU flag {found[0]} present")
    return Check("cpu.virtualisation", "fail", "no vmx/svm flag in /proc/cpuinfo",
                 "enable Intel VT-x / AMD-V in the firmware set-up")




def check_iommu_cmdline(root: Path) -> Check:
    cmdline = (read_text(under(root, "proc/cmdline")) or "").split()
    on = [a for a in cmdline if a in ("intel_iommu=on", "amd_iommu=on")]
    off = [a for a in cmdline if a in ("intel_iommu=off", "amd_iommu=off", "iommu=off")]
    if on and not off:
        extra = " with iommu=pt" if "iommu=pt" in cmdline else " (iommu=pt not set: host DMA is translated too)"
        return Check("iommu.cmdline", "pass" if "iommu=pt" in cmdline else "warn", f"{on[0]}{extra}",
                     "" if "iommu=pt" in cmdline else "add iommu=pt to the kernel command line")
    d = under(root, "sys/class/iommu")
    if not off and d.is_dir() and os.listdir(d):
        return Check("iommu.cmdline", "warn", "no intel_iommu=on/amd_iommu=on, but an IOMMU is active "
                     "(kernel default)", "add intel_iommu=on iommu=pt to be explicit")
    return Check("iommu.cmdline", "fail", f"kernel command line has {' '.join(off) or 'no intel_iommu=on'}",
                 "add intel_iommu=on iommu=pt to GRUB_CMDLINE_LINUX, update-grub, reboot")


def check_iommu_active(root: Path) -> Check:
    d = under(root, "sys/class/iommu")
    units = sorted(os.listdir(d)) if d.is_dir() else []
    if units:
        return Check("iommu.active", "pass", f"{len(units)} IOMMU unit(s): {', '.join(units[:4])}")
    return Check("iommu.active", "fail", "/sys/class/iommu is empty: the IOMMU is off",
                 "enable VT-d in the firmware and intel_iommu=on on the kernel command line")


def check_kernel_release(root: Path, s: FastiovHostSettings) -> Check:
    """Which of the campaign's two kernels runs (stock 6.4 for the vanilla variants, -rc5test for FastIOV's)."""
    from fastiov_lib.testbeds.fastiov_host.kernels import PATCHED, STOCK, booted_kernel

    release = (read_text(under(root, "proc/sys/kernel/osrelease")) or "").strip()
    booted = booted_kernel(s, root)
    if booted == PATCHED:
        return Check("kernel.release", "pass", f"{release}: the patched FastIOV host kernel (the campaign's "
                     "FastIOV boot)")
    if booted == STOCK:
        return Check("kernel.release", "pass", f"{release}: the stock 6.4 kernel (the campaign's vanilla boot)")
    fix = (f"build components linux-vanilla and linux, then reboot into 6.4.0{s.stock_kernel_suffix} (vanilla "
           f"variants) or 6.4.0{s.expected_kernel_suffix} (FastIOV's); `campaign plan` lists the steps")
    if release.startswith("6.4"):
        return Check("kernel.release", "warn", f"{release}: a 6.4 kernel, but neither *{s.stock_kernel_suffix} nor "
                     f"*{s.expected_kernel_suffix}: 04/05 run no variant on it", fix)
    return Check("kernel.release", "fail", f"{release or 'unknown'}: neither kernel of the campaign", fix)


def check_hugepages(root: Path, wanted: int) -> Check:
    nr = (read_text(under(root, "sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages")) or "").strip()
    if not nr.isdigit():
        return Check("hugepages.2m", "fail", "no 2 MiB hugepage pool in sysfs", "a kernel with HUGETLBFS")
    n = int(nr)
    seen = f"{n} x 2 MiB reserved ({n * 2 // 1024} GiB), want {wanted}"
    if n >= wanted:
        return Check("hugepages.2m", "pass", seen)
    return Check("hugepages.2m", "fail" if n == 0 else "warn", seen,
                 "fastiov-artifact nic apply (reserves them), or echo N > .../nr_hugepages")




def check_modules(root: Path) -> list[Check]:
    out = []
    for m in REQUIRED_MODULES:
        if module_loaded(root, m):
            out.append(Check(f"module.{m}", "pass", "loaded"))
        else:
            out.append(Check(f"module.{m}", "fail", "not loaded", f"modprobe {m}"))
    return out


def check_fastiov_module(root: Path, s: FastiovHostSettings) -> Check:
    from fastiov_lib.testbeds.fastiov_host.kernels import STOCK, booted_kernel

    loaded = module_loaded(root, "fastiov")
    if booted_kernel(s, root) == STOCK and not loaded:
        return Check("module.fastiov", "pass", "not used on the stock kernel (vanilla variants); the patched boot "
                     "loads it (build apply --component fastiov-module)")
    node = under(root, s.fastiov_device).exists()
    if loaded and node:
        return Check("module.fastiov", "pass", f"loaded, {s.fastiov_device} present")
    if s.fastiov_module_path is None:
        return Check("module.fastiov", "warn", "no fastiov_module_path in the testbed: module not used here",
                     "only the vanilla variants can run; build component fastiov-module for FastIOV")
    seen = "loaded but " + f"{s.fastiov_device} missing" if loaded else "not loaded"
    return Check("module.fastiov", "fail", seen, f"insmod {s.fastiov_module_path} (after booting *{s.expected_kernel_suffix})")


def _binary_check(name: str, path: Path, shown: Path, args: list[str], expect: str, fix: str) -> Check:
    if not path.exists():
        return Check(name, "fail", f"{shown} missing", fix)
    version = version_of(path, args)
    if version is None:
        return Check(name, "fail", f"{shown} does not run with {' '.join(args)}", fix)
    if not re.search(expect, version):
        return Check(name, "warn", f"{shown}: {version} (expected {expect})", fix)
    return Check(name, "pass", f"{shown}: {version}")


def check_runtimes(root: Path, s: FastiovHostSettings) -> list[Check]:
    shim3 = Path("/usr/local/bin/containerd-shim-kata3-v2")
    out = [
        _binary_check("binary.containerd", under(root, "/usr/local/bin/containerd"), Path("/usr/local/bin/containerd"),
                      ["--version"], r"v1\.3\.", "build component containerd (release/1.3 + timing patch)"),
        _binary_check("binary.kata-runtime", under(root, s.kata_prefix / "bin/kata-runtime"),
                      s.kata_prefix / "bin/kata-runtime", ["--version"], r"\b3\.\d", "build component kata"),
        _binary_check("binary.qemu-fastiov", under(root, s.qemu_fastiov), s.qemu_fastiov, ["--version"],
                      r"version 6\.2\.0", "build component qemu (or the authors' prebuilt binary)"),
        _binary_check("binary.qemu-vanilla", under(root, s.qemu_vanilla), s.qemu_vanilla, ["--version"],
                      r"version 6\.2\.0", "build component qemu-noskip (or the authors' prebuilt -noskip)"),
    ]
    shim = under(root, s.kata_prefix / "bin/containerd-shim-kata-v2")
    link = under(root, shim3)
    if shim.exists() and (link.exists() or link.is_symlink()):
        out.append(Check("binary.kata-shim", "pass", f"{shim3} -> {os.readlink(link) if link.is_symlink() else 'file'}"))
    else:
        out.append(Check("binary.kata-shim", "fail", f"{shim3} or {s.kata_prefix}/bin/containerd-shim-kata-v2 missing",
                         "build components kata-static and kata"))
    cni = under(root, s.cni_bin_dir / "fastiov")
    out.append(Check("binary.fastiov-cni", "pass" if cni.exists() else "fail",
                     f"{s.cni_bin_dir / 'fastiov'} {'present' if cni.exists() else 'missing'}",
                     "" if cni.exists() else "build component fastiov-cni"))
    missing = [str(p) for p in (s.guest_kernel_fastiov, s.guest_kernel_vanilla, s.image_async, s.image_sync)
               if not under(root, p).exists()]
    out.append(Check("guest.files", "warn" if missing else "pass",
                     f"missing: {', '.join(missing)}" if missing else "guest kernels and images present",
                     "build components guest-kernel, guest-kernel-vanilla and guest-image (needs docker and "
                     "internet: the agent's crates); the synchronous baseline image cannot be built (its agent "
                     "change is not published): copy the authors' kata-containers-e810-sync.img to "
                     f"{s.image_sync}" if missing else ""))
    return out


def _toml(root: Path, path: Path) -> tuple[dict[str, Any] | None, str]:
    text = read_text(under(root, path))
    if text is None:
        return None, f"{path} missing"
    try:
        return tomllib.loads(text), ""
    except tomllib.TOMLDecodeError as exc:
        return None, f"{path}: not valid TOML ({exc})"


def _get(data: dict[str, Any], *keys: str) -> Any:
    node: Any = data
    for k in keys:
        if not isinstance(node, dict) or k not in node:
            return None
        node = node[k]
    return node


def check_configs(root: Path, s: FastiovHostSettings) -> list[Check]:
    out = []
    fix_deploy = "fastiov-artifact build apply (component runtime-configs) or variant set NAME"
    data, err = _toml(root, s.containerd_config)
    if data is None:
        out.append(Check("config.containerd", "fail", err, fix_deploy))
    else:
        cri = _get(data, "plugins", "io.containerd.grpc.v1.cri") or {}
        kata = _get(cri, "containerd", "runtimes", "kata") or {}
        want = {
            "runtimes.kata.runtime_type": (kata.get("runtime_type"), "io.containerd.kata3.v2"),
            "runtimes.kata.options.ConfigPath": (_get(kata, "options", "ConfigPath"), str(s.kata_config)),
            "cni.bin_dir": (_get(cri, "cni", "bin_dir"), str(s.cni_bin_dir)),
            "cni.conf_dir": (_get(cri, "cni", "conf_dir"), str(s.cni_conf_dir)),
            "grpc.address": (_get(data, "grpc", "address"), str(s.containerd_socket)),
        }
        wrong = [f"{k} = {got!r} (want {exp!r})" for k, (got, exp) in want.items() if got != exp]
        out.append(Check("config.containerd", "fail" if wrong else "pass",
                         "; ".join(wrong) if wrong else f"{s.containerd_config}: kata runtime and CNI paths set",
                         fix_deploy if wrong else ""))
    data, err = _toml(root, s.kata_config)
    if data is None:
        out.append(Check("config.kata", "fail", err, fix_deploy))
    else:
        q = _get(data, "hypervisor", "qemu") or {}
        want = {"hypervisor.qemu.machine_type": (q.get("machine_type"), "q35"),
                "hypervisor.qemu.default_vcpus": (q.get("default_vcpus"), 1),
                "hypervisor.qemu.default_memory": (q.get("default_memory"), s.guest_memory_mb)}
        from fastiov_lib.testbeds.fastiov_host.runtime_config import kata_base_keys

        want.update({".".join(k): (_get(data, *k), v) for k, v in kata_base_keys(s).items()})  # the original's keys
        wrong = [f"{k} = {got!r} (want {exp!r})" for k, (got, exp) in want.items() if got != exp]
        model = _get(data, "runtime", "internetworking_model")
        if model not in ("none", "tcfilter"):
            wrong.append(f"runtime.internetworking_model = {model!r} (want 'none' for passthrough or 'tcfilter')")
        missing = [f"hypervisor.qemu.{k} -> {q.get(k)} (missing)" for k in ("path", "kernel", "image")
                   if not q.get(k) or not under(root, q[k]).exists()]
        if wrong:
            out.append(Check("config.kata", "fail", "; ".join(wrong), "fastiov-artifact variant set NAME"))
        elif missing:
            out.append(Check("config.kata", "warn", "; ".join(missing), "install the files or variant set NAME"))
        else:
            from fastiov_lib.testbeds.fastiov_host.runtime_config import show_variant

            tb = Testbed(name="host-check", kind="fastiov", sys_root=root, fastiov=s)
            active = show_variant(tb, root)["matches"]
            out.append(Check("config.kata", "pass", f"{s.kata_config}: keys set, variant {active or 'custom'}"))
    out.append(check_cni_conf_dir(root, s))
    text = read_text(under(root, s.crictl_config))
    try:
        endpoint = (yaml.safe_load(text) or {}).get("runtime-endpoint") if text else None
    except yaml.YAMLError:
        endpoint = "(not YAML)"
    want_ep = f"unix://{s.containerd_socket}"
    out.append(Check("config.crictl", "pass" if endpoint == want_ep else "fail",
                     f"runtime-endpoint {endpoint!r}" + ("" if endpoint == want_ep else f" (want {want_ep!r})"),
                     "" if endpoint == want_ep else fix_deploy))
    return out


def check_cni_conf_dir(root: Path, s: FastiovHostSettings) -> Check:
    """The artifact's conflist must be the first network config: containerd 1.3 loads only that one."""
    from fastiov_lib.testbeds.fastiov_host.cni_conf import conf_files
    from fastiov_lib.testbeds.fastiov_host.runtime_config import CNI_CONFLIST

    files = conf_files(under(root, s.cni_conf_dir))
    ours = s.cni_conf_dir / CNI_CONFLIST
    if not files:
        return Check("config.cni", "fail", f"no network config in {s.cni_conf_dir}",
                     "fastiov-artifact variant set NAME (writes the variant's conflist)")
    if files[0].name == CNI_CONFLIST:
        later = f" ({len(files) - 1} later file(s) never loaded)" if len(files) > 1 else ""
        return Check("config.cni", "pass", f"{ours} is the first network config: containerd loads it{later}")
    first = s.cni_conf_dir / files[0].name
    has_ours = any(f.name == CNI_CONFLIST for f in files)
    return Check("config.cni", "fail",
                 f"{first} sorts before {CNI_CONFLIST}" if has_ours else f"{ours} missing; containerd loads {first}",
                 f"containerd 1.3 loads only the first network config: `fastiov-artifact variant set NAME` moves "
                 f"{files[0].name} to {s.cni_conf_dir / 'oldconfs'} (restorable with `variant restore-cni`)")


# ------------------------------------------------------------------ what the original's components need

def check_component_dirs(root: Path, s: FastiovHostSettings) -> Check:
    """The directories the patched components hard-code (they exit or lose records without them)."""
    from fastiov_lib.testbeds.fastiov_host.log_dirs import component_dirs

    missing = [str(d) for d, _ in component_dirs(s) if not under(root, d).is_dir()]
    if not missing:
        return Check("dirs.components", "pass", f"{len(component_dirs(s))} component directories present "
                     f"({s.pod_test_dir}, the cnicmp log dirs, the QEMU timeline dir)")
    return Check("dirs.components", "warn", f"missing: {', '.join(missing)}",
                 "the benchmark's run set-up creates them (allow_host_changes), or mkdir -p them")


def check_pod_images(s: FastiovHostSettings) -> Check:
    """The sandbox and workload images must be in containerd already: an offline host cannot pull them."""
    from fastiov_lib.cri import CriClient, CriError
    from fastiov_lib.testbeds.fastiov_host.build.pod_images import POD_IMAGES

    fix = "fastiov-artifact build apply --component pod-images (builds them from C and imports them)"
    if not s.containerd_socket.exists():
        return Check("images.pods", "warn", f"{s.containerd_socket} absent: containerd not running, images not "
                     "checked", fix)
    try:
        with CriClient(s.containerd_socket, api="auto", timeout_s=10) as cri:
            missing = [ref for ref in POD_IMAGES.values() if not cri.image_present(ref)]
    except CriError as exc:
        return Check("images.pods", "fail", f"{s.containerd_socket}: CRI does not answer ({exc})",
                     "systemctl restart containerd")
    if missing:
        return Check("images.pods", "fail", f"not in containerd: {', '.join(missing)} (round 1 would pull)", fix)
    return Check("images.pods", "pass", f"{', '.join(POD_IMAGES.values())} in containerd (no pull before a pod)")


def check_barrier_port(s: FastiovHostSettings) -> Check:
    """The barrier server's port on the loopback must be free (the kata runtime hard-codes 5005)."""
    from fastiov_lib.testbeds.fastiov_host.barrier_server import port_is_free

    if port_is_free(s.barrier_port):
        return Check("barrier.port", "pass", f"127.0.0.1:{s.barrier_port} free for the barrier server")
    return Check("barrier.port", "fail", f"127.0.0.1:{s.barrier_port} is in use",
                 "stop what listens there (the original's log_opt_server.py?); the benchmark starts its own")


def _guest_kernel_configs(root: Path, s: FastiovHostSettings) -> list[Path]:
    if s.guest_kernel_config is not None:
        return [under(root, s.guest_kernel_config)]
    kernels = (s.guest_kernel_fastiov, s.guest_kernel_vanilla)
    beside = [under(root, f"{k}.config") for k in kernels]  # what the artifact's guest-kernel builds install
    dirs = {under(root, k).parent for k in kernels}
    return [p for p in beside if p.is_file()] + sorted(p for d in dirs if d.is_dir() for p in d.glob("config-*"))


def check_guest_vf_driver(root: Path, s: FastiovHostSettings) -> Check:
    """The guest kernel must have the Intel VF driver built in, or the pod never gets eth0."""
    fix = ("build the guest kernel with CONFIG_IAVF=y (component guest-kernel) or use the authors' "
           "vmlinux-5.19.2-96-virtio-intelIce; kata's default fragments have no iavf")
    configs = [c for c in _guest_kernel_configs(root, s) if c.is_file()]
    for cfg in configs:
        m = re.search(r"^CONFIG_IAVF=(\w)", read_text(cfg) or "", re.M)
        if m and m[1] == "y":
            return Check("guest.vf-driver", "pass", f"{cfg.name}: CONFIG_IAVF=y")
        if m and m[1] == "m":
            return Check("guest.vf-driver", "fail", f"{cfg.name}: CONFIG_IAVF=m (a module; the kata guest loads none)", fix)
    if configs:
        return Check("guest.vf-driver", "fail", f"{configs[0].name}: no CONFIG_IAVF: the agent waits 10 s for eth0", fix)
    for k in (s.guest_kernel_vanilla, s.guest_kernel_fastiov):  # an uncompressed vmlinux names its drivers
        p = under(root, k)
        try:
            with open(p, "rb") as fh:
                head = fh.read(4)
                data = fh.read() if head == b"\x7fELF" else b""
        except OSError:
            continue
        if b"iavf_probe" in data or b"iavf_driver" in data:
            return Check("guest.vf-driver", "pass", f"{k}: iavf symbols in the kernel image")
        if data:
            return Check("guest.vf-driver", "fail", f"{k}: no iavf in the kernel image", fix)
    return Check("guest.vf-driver", "warn", "no guest kernel config (config-* beside the kernels, or "
                 "fastiov.guest_kernel_config) and no uncompressed vmlinux: cannot tell", fix)


def check_libcurl_headers(root: Path) -> Check:
    """The patched QEMU's hw/vfio/cni_logger.c includes curl: its build needs libcurl's headers."""
    found = [p for p in [under(root, "usr/include/curl/curl.h"), *under(root, "usr/include").glob("*/curl/curl.h")]
             if p.is_file()]
    if found:
        return Check("build.libcurl", "pass", f"{found[0]} present (QEMU's timing logger links libcurl)")
    return Check("build.libcurl", "fail", "curl/curl.h not found: the patched QEMU does not compile",
                 "apt-get install libcurl4-openssl-dev")


KERNEL_BUILD_TOOLS = {"flex": "flex", "bison": "bison", "bc": "bc", "pahole": "dwarves"}
KERNEL_BUILD_HEADERS = {"usr/include/gelf.h": "libelf-dev", "usr/include/openssl/opensslv.h": "libssl-dev"}


def check_kernel_build_deps(root: Path) -> Check:
    """What building the two host kernels needs beyond a compiler (Debian package names in the fix)."""
    missing = [pkg for tool, pkg in KERNEL_BUILD_TOOLS.items()
               if not (under(root, f"usr/bin/{tool}").exists() or (Path(root) == Path("/") and shutil.which(tool)))]
    missing += [pkg for header, pkg in KERNEL_BUILD_HEADERS.items() if not under(root, header).is_file()]
    if not missing:
        return Check("build.kernel-deps", "pass", "flex, bison, bc, pahole, libelf and OpenSSL headers present "
                                                  "(the host kernels build)")
    return Check("build.kernel-deps", "warn", f"missing for the host kernel builds: {', '.join(missing)}",
                 f"apt-get install {' '.join(missing)} (only needed for build components linux and linux-vanilla)")


def check_go(root: Path) -> Check:
    """Go for the containerd, kata runtime and fastiov-cni builds (Debian's 1.19 builds all three)."""
    cands = sorted(under(root, "usr/lib").glob("go-*/bin/go")) + [under(root, "usr/local/go/bin/go")]
    if Path(root) == Path("/") and shutil.which("go"):
        cands.insert(0, Path(shutil.which("go")))
    for go in cands:
        if go.exists():
            version = version_of(go, ["version"]) or ""
            m = re.search(r"go(\d+)\.(\d+)", version)
            if m and (int(m[1]), int(m[2])) >= (1, 19):
                return Check("build.go", "pass", f"{go}: {version}")
            return Check("build.go", "fail", f"{go}: {version or 'does not run'} (need >= 1.19)",
                         "apt-get install golang-1.19-go")
    return Check("build.go", "fail", "no Go toolchain (go on PATH, /usr/lib/go-*/bin/go)", "apt-get install golang-1.19-go")


def check_vf_devset_change(root: Path) -> Check:
    """Whether the kernel already has upstream's per-VF device sets (the paper's first bottleneck gone)."""
    from fastiov_lib.testbeds.fastiov_host.kernel_facts import vf_devset_fact, vf_devset_line

    fact = vf_devset_fact(root)
    if fact.carries_change is False:
        return Check("kernel.vf-devset", "pass", vf_devset_line(fact))
    return Check("kernel.vf-devset", "warn", vf_devset_line(fact),
                 "measure vanilla SR-IOV on a kernel without the change (e.g. the paper's 6.4) to see the "
                 "bottleneck, or report the comparison as against a fixed baseline")


# ------------------------------------------------------------------ per testbed kind

def fastiov_host_checks(testbed: Testbed, root: Path | None = None) -> list[Check]:
    """All checks of a real FastIOV host (below `root`, default the testbed's sys_root)."""
    s = testbed.fastiov
    root = Path(root or testbed.sys_root)
    checks = [check_cpu_virtualisation(root), check_kvm_device(root), check_iommu_cmdline(root),
              check_iommu_active(root), check_kernel_release(root, s),
              check_hugepages(root, s.hugepages_2m)]
    checks += check_modules(root)
    checks.append(check_fastiov_module(root, s))
    checks += check_runtimes(root, s)
    checks += check_configs(root, s)
    from fastiov_lib.testbeds.fastiov_host.runtime_config import CNI_SUBNET
    from fastiov_lib.testbeds.fastiov_host.storage_address import check_storage_address

    checks.append(check_storage_address(s, CNI_SUBNET))
    if Path(root) == Path("/"):  # asks the running containerd: only on the host itself, never on a tree
        checks.append(check_pod_images(s))
    checks += [check_component_dirs(root, s), check_barrier_port(s), check_guest_vf_driver(root, s),
               check_libcurl_headers(root), check_go(root), check_kernel_build_deps(root),
               check_vf_devset_change(root)]
    return checks
