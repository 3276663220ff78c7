"""Does the host kernel already carry upstream's "vfio/pci: Separate SR-IOV VF dev_set"?

Before that change all VFs on a bus shared one VFIO device set, and opening any of them held the
set's mutex across the VF's reset: the paper's first bottleneck ("VF open under the device-set
lock"). Upstream merged it for Linux 6.16 and backported it to stable kernels (Debian bookworm has
it since 6.1.148). On such a kernel vanilla SR-IOV no longer has that bottleneck, so a run there
compares FastIOV with a baseline the paper did not have. Decided from the distribution's changelog
when one is installed (names the change), else from the version (mainline >= 6.16; 6.1.y >= 148);
other maintained stable lines (5.15, 6.6, 6.12, 6.15) may carry a backport: unknown by version.
"""
from __future__ import annotations

import gzip
import re
from dataclasses import asdict, dataclass
from pathlib import Path

CHANGE_TITLE = "Separate SR-IOV VF dev_set"
MAINLINE = (6, 16)
BACKPORTS = {(6, 1): 148}  # stable line -> first sublevel known to carry it (Debian bookworm)
MAYBE_BACKPORTED = {(5, 15), (6, 6), (6, 12), (6, 15)}  # maintained in mid-2025: a backport is possible


@dataclass(frozen=True)
class VfDevsetFact:
    """The answer (True / False / None = cannot tell), for which kernel, and how it was decided."""

    carries_change: bool | None
    release: str  # uname -r
    version: str  # upstream version the decision used (Debian's "6.1.148" rather than "6.1.0-37")
    how: str  # changelog, version, unknown
    detail: str

    def as_dict(self) -> dict:
        return asdict(self)


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def _changelog_mentions(root: Path, release: str) -> Path | None:
    doc = Path(root) / "usr/share/doc" / f"linux-image-{release}"
    for name in ("changelog.Debian.gz", "changelog.gz", "changelog.Debian", "changelog"):
        p = doc / name
        if not p.is_file():
            continue
        try:
            text = gzip.open(p, "rt", errors="replace").read() if p.suffix == ".gz" else p.read_text(errors="replace")
        except OSError:
            continue
        if CHANGE_TITLE.lower() in text.lower():
            return p
    return None


def upstream_version(release: str, proc_version: str = "") -> tuple[int, int, int] | None:
    """(major, minor, sublevel) of the kernel: Debian's package version from /proc/version if given."""
    m = re.search(r"Debian (\d+)\.(\d+)\.(\d+)", proc_version) or re.match(r"(\d+)\.(\d+)(?:\.(\d+))?", release)
    if not m:
        return None
    return int(m[1]), int(m[2]), int(m[3] or 0)


def decide(release: str, proc_version: str = "", changelog: Path | None = None) -> VfDevsetFact:
    """The fact from a kernel's release, its /proc/version line and (optionally) a changelog naming the change."""
    ver = upstream_version(release, proc_version)
    shown = ".".join(map(str, ver)) if ver else "unknown"
    if changelog is not None:
        return VfDevsetFact(True, release, shown, "changelog", f"{changelog} names '{CHANGE_TITLE}'")
    if ver is None:
        return VfDevsetFact(None, release, shown, "unknown", "kernel version not readable")
    line = ver[:2]
    if line >= MAINLINE:
        return VfDevsetFact(True, release, shown, "version", f"Linux {shown} >= 6.16 (merged upstream)")
    if line in BACKPORTS and ver[2] >= BACKPORTS[line]:
        return VfDevsetFact(True, release, shown, "version",
                            f"{shown} >= {line[0]}.{line[1]}.{BACKPORTS[line]} (stable backport, as Debian's)")
    if line in MAYBE_BACKPORTED:
        return VfDevsetFact(None, release, shown, "unknown",
                            f"{shown}: a maintained stable line; whether it has the backport needs its changelog")
    return VfDevsetFact(False, release, shown, "version", f"{shown} predates the change and gets no backport")


def vf_devset_fact(root: Path = Path("/")) -> VfDevsetFact:
    """The fact for the kernel running below `root` (procfs and the installed changelog)."""
    root = Path(root)
    release = _read(root / "proc/sys/kernel/osrelease").strip()
    return decide(release, _read(root / "proc/version"), _changelog_mentions(root, release) if release else None)


def vf_devset_line(fact: VfDevsetFact | dict | None) -> str:
    """One sentence for the report about what this kernel means for the paper's first bottleneck."""
    if fact is None:
        return "Host kernel: not recorded whether it carries upstream's 'vfio/pci: Separate SR-IOV VF dev_set'."
    f = fact if isinstance(fact, VfDevsetFact) else VfDevsetFact(**fact)
    head = f"Host kernel {f.release or '?'} ({f.version}, decided by {f.how}: {f.detail})"
    if f.carries_change:
        return (f"{head} carries upstream's 'vfio/pci: {CHANGE_TITLE}': every VF has its own VFIO device set, so "
                "the paper's first bottleneck (VF open under the shared device-set lock) is gone here even "
                "without FastIOV; vanilla SR-IOV results will be better than the paper's.")
    if f.carries_change is False:
        return (f"{head} does not carry upstream's 'vfio/pci: {CHANGE_TITLE}': VFs on a bus share one device "
                "set, as on the paper's 6.4 host.")
    return (f"{head}: cannot tell whether it carries upstream's 'vfio/pci: {CHANGE_TITLE}' (which would remove "
            "the paper's first bottleneck without FastIOV).")


def vf_devset_line_for_run(run_dir: Path) -> str | None:
    """The report's sentence for a run measured on a real host (None when the run has no such record)."""
    import json

    try:
        setup = json.loads((Path(run_dir) / "logs" / "run-setup.json").read_text())
    except (OSError, ValueError):
        return None
    return vf_devset_line(setup.get("vf_devset"))
