"""A private apt (its own sources and lists under the work dir): the guest's Debian kernel and packages."""
from __future__ import annotations

import re
import time
from pathlib import Path

from fastiov_lib.testbeds.vsriov.common import DEBIAN_KEYRING, DEBIAN_MIRROR, DEBIAN_SECURITY, VsriovError, run_cmd


class PrivateApt:
    """apt-get/apt-cache with their own sources and lists under the work dir.

    Reaches bookworm (+updates, security) and bookworm-backports without touching the host's apt
    configuration; downloads only (nothing is installed from here).
    """

    def __init__(self, root: Path):
        self.root = root
        self.sources = root / "sources.list"
        self.lists = root / "lists"
        self.cache = root / "cache"

    def options(self) -> list[str]:
        return ["-o", f"Dir::Etc::SourceList={self.sources}", "-o", "Dir::Etc::SourceParts=/dev/null",
                "-o", f"Dir::State::Lists={self.lists}", "-o", f"Dir::Cache={self.cache}",
                "-o", "APT::Sandbox::User=root", "-o", "Acquire::Retries=3"]

    def sources_text(self) -> str:
        signed = f" [signed-by={DEBIAN_KEYRING}]" if DEBIAN_KEYRING.exists() else ""
        return "".join([
            f"deb{signed} {DEBIAN_MIRROR} bookworm main\n",
            f"deb{signed} {DEBIAN_MIRROR} bookworm-updates main\n",
            f"deb{signed} {DEBIAN_SECURITY} bookworm-security main\n",
            f"deb{signed} {DEBIAN_MIRROR} bookworm-backports main\n",
        ])

    @property
    def fresh(self) -> bool:
        stamp = self.root / "updated"
        return stamp.exists() and time.time() - stamp.stat().st_mtime < 7 * 86400 and \
            self.sources.exists() and self.sources.read_text() == self.sources_text()

    def update(self, force: bool = False) -> None:
        if self.fresh and not force:
            return
        (self.lists / "partial").mkdir(parents=True, exist_ok=True)
        (self.cache / "archives" / "partial").mkdir(parents=True, exist_ok=True)
        self.sources.write_text(self.sources_text())
        run_cmd(["apt-get", *self.options(), "update"], 600, "apt-get update (private lists for bookworm + backports)")
        (self.root / "updated").touch()

    def depends(self, package: str) -> list[str]:
        out = run_cmd(["apt-cache", *self.options(), "depends", package], 60, f"apt-cache depends {package}")
        return re.findall(r"^\s*Depends:\s*(\S+)", out.stdout, re.M)

    def download(self, spec: str, dest: Path) -> Path:
        """`apt-get download spec` into dest (e.g. `qemu-system-x86/bookworm-backports`); the .deb path."""
        dest.mkdir(parents=True, exist_ok=True)
        name = spec.split("/")[0].split("=")[0]
        before = set(dest.glob(f"{name}_*.deb"))
        run_cmd(["apt-get", *self.options(), "download", spec], 900, f"apt-get download {spec}", cwd=dest)
        debs = sorted(set(dest.glob(f"{name}_*.deb")) - before) or sorted(dest.glob(f"{name}_*.deb"))
        if not debs:
            raise VsriovError(f"apt-get download {spec}: no {name}_*.deb appeared in {dest}")
        return debs[-1]
