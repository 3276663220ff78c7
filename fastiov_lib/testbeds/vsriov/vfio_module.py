"""vfio-pci-core for the guest kernel with the per-VF device set reverted: the paper's kernel behaviour.

Linux's "vfio/pci: Separate SR-IOV VF dev_set" (6.16; Debian's 6.1 since 6.1.148) gives every VF
its own VFIO device set. Before it, a VF on a non-root bus shared its bus's set, whose mutex is held
across each open's function-level reset, so N concurrent VF opens took about N resets: the paper's
"VF open under the VFIO device-set lock". This module rebuilds only `vfio-pci-core.ko` from Debian's
`linux-source-6.1` of the very kernel the guest boots, with that one condition taken out, against
Debian's `linux-headers` for that kernel (an out-of-tree module build: about a minute, not a kernel
build). The guest loads it in place of the stock one for the "shared device set" measurements.

Steps (each stamped under `<work_dir>/vfio-devset/`, keyed by its inputs; a rerun resumes):
download (apt-get download, private lists) -> headers (dpkg-deb -x) -> source (the four files of
drivers/vfio/pci from the source tarball) -> edit (the revert, checked to match exactly once) ->
build (kbuild `M=`), then the module's vermagic is checked against the kernel.
"""
from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from fastiov_lib.testbeds.vsriov.common import GuestKernel, VsriovError, run_cmd
from fastiov_lib.testbeds.vsriov.private_apt import PrivateApt

MODULE_NAME = "vfio-pci-core.ko"
SOURCE_FILES = ("vfio_pci_core.c", "vfio_pci_intrs.c", "vfio_pci_rdwr.c", "vfio_pci_config.c", "vfio_pci_priv.h",
                "trace.h")
# The upstream fix added `|| pdev->is_virtfn` to the root-bus test in vfio_pci_core_register_device:
# with it gone, a VF's set is its slot (if the slot can be reset) or else its whole bus, as before.
REVERT_FROM = "if (pci_is_root_bus(pdev->bus) || pdev->is_virtfn) {"
REVERT_TO = "if (pci_is_root_bus(pdev->bus)) {  /* fastiov-artifact: per-VF device set reverted */"
KBUILD = "obj-m := vfio-pci-core.o\nvfio-pci-core-y := vfio_pci_core.o vfio_pci_intrs.o vfio_pci_rdwr.o vfio_pci_config.o\n"
STEPS = ("download", "headers", "source", "edit", "build")


@dataclass(frozen=True)
class SharedDevsetModule:
    """The built module and what it was built from (for the run's provenance)."""

    path: Path
    kernel: str
    debian_version: str
    sha256: str
    build_s: float  # wall time of the build steps that ran in this call (0 when all were stamped)
    steps_run: tuple[str, ...]


def debian_version(kernel: GuestKernel, work_dir: Path) -> str:
    """The Debian package version of the guest kernel (e.g. 6.1.192-3), from its downloaded .deb."""
    debs = sorted((work_dir / "debs").glob(f"{kernel.package}_*.deb"))
    m = re.match(rf"{re.escape(kernel.package)}_([^_]+)_", debs[-1].name) if debs else None
    if not m:
        raise VsriovError(f"no {kernel.package}_<version>_amd64.deb in {work_dir / 'debs'}: run `vsriov setup` first")
    return m.group(1).replace("%3a", ":")


class ModuleBuild:
    """The stamped steps that turn Debian's sources into the reverted vfio-pci-core.ko."""

    def __init__(self, kernel: GuestKernel, work_dir: Path, apt: PrivateApt | None):
        self.kernel = kernel
        self.work_dir = work_dir
        self.apt = apt
        self.root = work_dir / "vfio-devset"
        self.debs = work_dir / "debs" / "linux-build"
        self.hdrs = self.root / "headers"
        self.src = self.root / "src"
        self.out = self.root / "module"
        self.logs = self.root / "logs"

    @property
    def version(self) -> str:
        return debian_version(self.kernel, self.work_dir)

    @property
    def module_path(self) -> Path:
        return self.out / MODULE_NAME

    def key(self, step: str) -> str:
        """A step's inputs: kernel, Debian version, the edit and the kbuild file."""
        parts = [step, self.kernel.version, self.version, REVERT_FROM, REVERT_TO, KBUILD]
        return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]

    def stamp(self, step: str) -> Path:
        return self.root / "stamps" / f"{step}.done"

    def stamped(self, step: str) -> bool:
        p = self.stamp(step)
        return p.exists() and p.read_text().split()[0:1] == [self.key(step)]

    def plan(self) -> list[tuple[str, bool]]:
        """(step, done) for every step, nothing run."""
        try:
            return [(s, self.stamped(s)) for s in STEPS]
        except VsriovError:
            return [(s, False) for s in STEPS]

    def _packages(self) -> list[str]:
        headers = f"linux-headers-{self.kernel.version}"
        common = f"linux-headers-{self.kernel.version.removesuffix('-amd64')}-common"
        series = ".".join(self.kernel.version.split(".")[:2])
        return [f"linux-source-{series}", headers, common, f"linux-kbuild-{series}"]

    def _deb(self, package: str) -> Path:
        found = sorted(self.debs.glob(f"{package}_{self.version.replace(':', '%3a')}_*.deb"))
        if found:
            return found[-1]
        if self.apt is None:
            raise VsriovError(f"{package} {self.version}: not downloaded and no apt to fetch it")
        return self.apt.download(f"{package}={self.version}", self.debs)

    def _headers_dir(self) -> Path:
        return self.hdrs / "usr" / "src" / f"linux-headers-{self.kernel.version}"

    def step_download(self) -> None:
        for package in self._packages():
            self._deb(package)

    def step_headers(self) -> None:
        shutil.rmtree(self.hdrs, ignore_errors=True)
        self.hdrs.mkdir(parents=True)
        for package in self._packages()[1:]:
            run_cmd(["dpkg-deb", "-x", str(self._deb(package)), str(self.hdrs)], 600, f"unpacking {package}")
        makefile = self._headers_dir() / "Makefile"
        if not makefile.exists():
            raise VsriovError(f"{makefile}: missing after unpacking the headers")
        # Debian's per-flavour Makefile includes the common headers by absolute path (/usr/src/...)
        text = makefile.read_text()
        new, n = re.subn(r"^include /usr/src/", f"include {self.hdrs}/usr/src/", text, flags=re.M)
        if n != 1:
            raise VsriovError(f"{makefile}: expected one 'include /usr/src/...' line, found {n}")
        makefile.write_text(new)

    def step_source(self) -> None:
        deb = self._deb(self._packages()[0])
        series = self._packages()[0]
        shutil.rmtree(self.src, ignore_errors=True)
        self.src.mkdir(parents=True)
        tarball = f"./usr/src/{series}.tar.xz"
        members = [f"{series}/drivers/vfio/pci/{f}" for f in SOURCE_FILES]
        # stream the tarball out of the .deb and keep only the files the module is built from
        dpkg = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE)
        try:
            inner = subprocess.run(["tar", "-xO", tarball], stdin=dpkg.stdout, capture_output=True, timeout=600)
        finally:
            dpkg.wait(timeout=60)
        if inner.returncode != 0:
            raise VsriovError(f"{deb.name}: no {tarball} inside ({inner.stderr.decode(errors='replace').strip()[:200]})")
        run = subprocess.run(["tar", "-xJ", "-C", str(self.src), *members], input=inner.stdout, capture_output=True,
                             timeout=900)
        if run.returncode != 0:
            raise VsriovError(f"{tarball}: cannot extract {members[0]}...: {run.stderr.decode(errors='replace')[:200]}")

    def step_edit(self) -> None:
        path = self.src / self._packages()[0] / "drivers" / "vfio" / "pci" / "vfio_pci_core.c"
        text = path.read_text()
        if REVERT_TO in text and REVERT_FROM not in text:
            return
        if text.count(REVERT_FROM) != 1:
            raise VsriovError(f"{path}: expected the per-VF device-set test {REVERT_FROM!r} exactly once, found "
                              f"{text.count(REVERT_FROM)} (is this kernel older than 6.1.148, i.e. without the fix?)")
        path.write_text(text.replace(REVERT_FROM, REVERT_TO))

    def step_build(self) -> None:
        shutil.rmtree(self.out, ignore_errors=True)
        self.out.mkdir(parents=True)
        for f in SOURCE_FILES:
            shutil.copy2(self.src / self._packages()[0] / "drivers" / "vfio" / "pci" / f, self.out / f)
        (self.out / "Kbuild").write_text(KBUILD)
        self.logs.mkdir(parents=True, exist_ok=True)
        log = self.logs / "build.log"
        cmd = ["make", "-C", str(self._headers_dir()), f"M={self.out}", "-j2", "modules"]
        with open(log, "w") as fh:
            try:
                rc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, timeout=1200).returncode
            except FileNotFoundError:
                raise VsriovError("building vfio-pci-core.ko needs `make` and `gcc` (apt-get install make gcc)") from None
        if rc != 0 or not self.module_path.exists():
            tail = " | ".join(log.read_text(errors="replace").strip().splitlines()[-3:])
            raise VsriovError(f"building {MODULE_NAME}: `make M=...` exited {rc} (log {log}): {tail}")
        vermagic = f"vermagic={self.kernel.version} ".encode()
        if vermagic not in self.module_path.read_bytes():
            raise VsriovError(f"{self.module_path}: built, but its vermagic is not {self.kernel.version}")

    def apply(self) -> SharedDevsetModule:
        """Run every step that is not stamped yet; the module and its provenance."""
        t0 = time.monotonic()
        ran = []
        for step in STEPS:
            if self.stamped(step) and (step != "build" or self.module_path.exists()):
                continue
            t = time.monotonic()
            getattr(self, f"step_{step}")()
            self.stamp(step).parent.mkdir(parents=True, exist_ok=True)
            self.stamp(step).write_text(f"{self.key(step)} {time.monotonic() - t:.1f}s\n")
            ran.append(step)
        digest = hashlib.sha256(self.module_path.read_bytes()).hexdigest()
        info = SharedDevsetModule(self.module_path, self.kernel.version, self.version, digest,
                                  round(time.monotonic() - t0, 1), tuple(ran))
        (self.root / "module.json").write_text(json.dumps({**info.__dict__, "path": str(info.path),
                                                           "edit": {"from": REVERT_FROM, "to": REVERT_TO}}, indent=1))
        return info


def build_shared_devset_module(kernel: GuestKernel, work_dir: Path, apt: PrivateApt | None) -> SharedDevsetModule:
    """Build (or reuse) vfio-pci-core.ko with the per-VF device set reverted, for this guest kernel."""
    return ModuleBuild(kernel, work_dir, apt).apply()
