"""QEMU 6.2.0, stock and with FastIOV's 0001-qemu.patch, built once into the vsriov work dir as the inner QEMU.

The build goes through the artifact's own build code (`testbeds/fastiov_host/build`): the same
components as a real FastIOV host ("qemu" = patched, "qemu-noskip" = stock, both configured with
the options of the `kata.cfg` the patch adds), from the offline sources in `../shared/sources/`
(verified against the manifest's pins) when they are there, with its stamps (every step resumable)
and logs. Two changes for this testbed, and why:
- `--disable-tcg` becomes `--enable-tcg`: inside the TCG guest there is no KVM, the inner VMs run
  under TCG;
- only fetch..build run (no install step): the binaries stay in the work dir, nothing on the host
  changes, and the guest reaches them over its read-only 9p share of the host's /.
Each build takes about 7-8 min on an idle 2-core machine (measured 412-490 s), so they are a
separate, one-time command (`fastiov-artifact vsriov build-qemu`); a bench with `vsriov_qemu62: true`
(default profile) runs whichever builds are finished and says which are missing; the smoke profile
and CI do not build them.
"""
from __future__ import annotations

import time
from pathlib import Path

from fastiov_lib.config import REPO_ROOT, Testbed
from fastiov_lib.testbeds.vsriov.common import VsriovError, settings_of

VARIANTS = {"stock": "qemu-noskip", "fastiov": "qemu"}  # inner-QEMU variant -> build component
TCG = {"--disable-tcg": "--enable-tcg"}  # kata.cfg builds for KVM only; the vsriov guest has no KVM
SOURCES_DIR = REPO_ROOT.parent / "shared" / "sources"


def build_dir(testbed: Testbed) -> Path:
    """Where the two QEMU 6.2.0 trees are built (inside the vsriov work dir)."""
    return settings_of(testbed).work_dir / "qemu62"


def binaries(testbed: Testbed) -> dict[str, Path]:
    """variant -> qemu-system-x86_64 of each build whose build step is stamped done."""
    out = {}
    for variant, comp in VARIANTS.items():
        binary = build_dir(testbed) / comp / "src" / "build" / "qemu-system-x86_64"
        if binary.exists() and (build_dir(testbed) / comp / ".stamps" / "build").exists():
            out[variant] = binary
    return out


def _builder(testbed: Testbed, run_path: Path | None, sources: Path | None):
    try:
        from fastiov_lib.testbeds.fastiov_host.build.builder import Builder
        from fastiov_lib.testbeds.fastiov_host.build.component_table import qemu_component
    except ImportError as exc:  # the build code predates offline sources and kata.cfg options
        raise VsriovError(f"the artifact's build code has no QEMU component with kata.cfg options ({exc})") from None
    wd = build_dir(testbed)
    comps = [qemu_component(VARIANTS["fastiov"], "QEMU 6.2.0 with 0001-qemu.patch (kata.cfg options, TCG on)",
                            str(wd / "unused-install-target"), replace=TCG),
             qemu_component(VARIANTS["stock"], "QEMU 6.2.0 stock, same options", str(wd / "unused-install-target"),
                            replace=TCG, flavour="stock")]
    src = sources if sources is not None else (SOURCES_DIR if SOURCES_DIR.is_dir() else None)
    return Builder(testbed, run_path=run_path, components=comps, build_dir=wd, cache_dir=wd / "cache",
                   sources=src, root=wd / "root", scope="fastiov")


def plan(testbed: Testbed, sources: Path | None = None) -> list[dict[str, str]]:
    """The build steps of both QEMU 6.2.0 trees and which are done (nothing runs)."""
    return _builder(testbed, None, sources).plan()


def ensure_built(testbed: Testbed, run_path: Path | None = None, sources: Path | None = None) -> dict[str, Path]:
    """Build (or resume building) both QEMU 6.2.0 trees through fetch..build; the two binaries."""
    builder = _builder(testbed, run_path, sources)
    if all(row["state"] == "done" for row in builder.plan() if row["step"] != "install"):
        return binaries(testbed)
    t0 = time.monotonic()
    try:
        builder.apply(through="build")
    except Exception as exc:  # BuildError names component, step and log; keep it one line
        raise VsriovError(f"building QEMU 6.2.0 for the vsriov guest: {exc}") from None
    done = binaries(testbed)
    if len(done) != len(VARIANTS):
        raise VsriovError(f"QEMU 6.2.0 builds finished but no qemu-system-x86_64 under {build_dir(testbed)}")
    (build_dir(testbed) / "built.txt").write_text(f"last build call: {time.monotonic() - t0:.0f} s\n")
    return done
