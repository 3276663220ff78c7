"""Ownership of the local testbed's work directory: it only ever deletes what it created.

`claim()` creates the work dir and writes a marker file into it (JSON: who created it, when, and
the host links the testbed created). `down`/`cleanup` refuse a folder without that marker, and
every work dir that is `/`, the home directory, the repository, or contains one of them is refused
outright. A folder that holds only the testbed's own layout (written before markers existed) is
adopted; any other non-empty folder is refused with a message naming it.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import shutil
from pathlib import Path

from fastiov_lib.config import REPO_ROOT, ConfigError
from fastiov_lib.testbeds.base import BackendError

MARKER = ".fastiov-testbed-owner.json"
# what `testbed up` writes into a work dir (a folder holding only these is ours from before markers)
OWN_LAYOUT = {"containerd", "runc", "cni", "images", "pod-logs", "storage", ".lock"}
# top-level system folders: never a work dir, whatever the marker says
SYSTEM_DIRS = ("/", "/bin", "/boot", "/dev", "/etc", "/home", "/lib", "/lib64", "/opt", "/proc", "/root",
               "/run", "/sbin", "/srv", "/sys", "/tmp", "/usr", "/var", "/var/tmp", "/var/lib", "/mnt", "/media")


class WorkDirError(ConfigError, BackendError):
    """The work dir is one the testbed must not create files in or delete (the message says why)."""


def _protected() -> list[tuple[Path, str]]:
    out = [(Path(d), "a system folder") for d in SYSTEM_DIRS]
    homes = {Path.home(), Path(os.environ.get("HOME", "/root"))}
    if os.environ.get("SUDO_USER"):
        homes.add(Path("/home") / os.environ["SUDO_USER"])
    out += [(h, "the home directory") for h in homes]
    out.append((REPO_ROOT, "the artifact's repository"))
    out.append((Path.cwd(), "the current directory"))
    return [(p.resolve(), why) for p, why in out]


def refusal(work_dir: Path) -> str | None:
    """Why `work_dir` can never be the testbed's work dir (None if it may be)."""
    if not work_dir.is_absolute():
        return "is relative (relative local.work_dir values are resolved against the testbed file's folder)"
    wd = work_dir.resolve()
    for path, why in _protected():
        if wd == path:
            return f"is {why} ({path})"
        if path.is_relative_to(wd) and path != Path("/").resolve() and why != "a system folder":
            return f"contains {why} ({path})"
    return None


def _check(work_dir: Path) -> None:
    why = refusal(work_dir)
    if why:
        raise WorkDirError(f"local.work_dir {work_dir}: refused, it {why}; choose a folder of its own, "
                           "e.g. /var/tmp/fastiov-local")


def read_marker(work_dir: Path) -> dict | None:
    """The marker's contents, or None if the folder has no (readable) marker of ours."""
    try:
        data = json.loads((work_dir / MARKER).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("owner") == "fastiov-artifact" else None


def _write_marker(work_dir: Path, data: dict) -> None:
    tmp = work_dir / (MARKER + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, work_dir / MARKER)


def _is_own_layout(work_dir: Path) -> bool:
    names = {p.name for p in work_dir.iterdir()}
    return names <= OWN_LAYOUT and (work_dir / "containerd" / "config.toml").is_file()


def claim(work_dir: Path, testbed_name: str) -> str:
    """Create (or reuse) the work dir as the testbed's own; returns "created", "ours" or "adopted"."""
    _check(work_dir)
    if work_dir.exists() and not work_dir.is_dir():
        raise WorkDirError(f"local.work_dir {work_dir}: exists and is not a folder")
    if work_dir.is_dir() and read_marker(work_dir) is not None:
        return "ours"
    state = "created"
    if work_dir.is_dir() and any(work_dir.iterdir()):
        if not _is_own_layout(work_dir):
            raise WorkDirError(
                f"local.work_dir {work_dir}: exists, is not empty and was not created by the testbed "
                f"(no {MARKER} in it); the testbed deletes its work dir on `down`, so it will not use this "
                "one. Choose a new or empty folder")
        state = "adopted"
    work_dir.mkdir(parents=True, exist_ok=True)
    _write_marker(work_dir, {"owner": "fastiov-artifact", "testbed": testbed_name, "links": [],
                             "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                             "adopted": state == "adopted"})
    return state


def adopt_own_layout(work_dir: Path, testbed_name: str) -> bool:
    """Mark a work dir `testbed up` made before markers existed (only its own layout in it); True if adopted."""
    _check(work_dir)
    if not work_dir.is_dir() or work_dir.is_symlink() or read_marker(work_dir) is not None:
        return False
    if not _is_own_layout(work_dir):
        return False
    claim(work_dir, testbed_name)
    return True


def require_owned(work_dir: Path) -> bool:
    """Before removing anything under work_dir: True if it is ours, False if absent; raise if foreign."""
    _check(work_dir)
    if not work_dir.exists():
        return False
    if not work_dir.is_dir() or read_marker(work_dir) is None:
        raise WorkDirError(f"local.work_dir {work_dir}: not removed or cleaned, the testbed did not create it "
                           f"(no {MARKER} in it); nothing was changed")
    return True


def check(work_dir: Path) -> "Check":
    """`testbed check`'s view of the work dir: ours, free, or refused (and why)."""
    from fastiov_lib.testbeds.checks import Check

    fix = "set local.work_dir to a new or empty folder of its own, e.g. /var/tmp/fastiov-local"
    why = refusal(work_dir)
    if why:
        return Check("work dir", "fail", f"{work_dir} {why}", fix)
    if not work_dir.exists():
        return Check("work dir", "pass", f"{work_dir} (created by `testbed up`)")
    if not work_dir.is_dir():
        return Check("work dir", "fail", f"{work_dir} exists and is not a folder", fix)
    if read_marker(work_dir) is not None or _is_own_layout(work_dir) or not any(work_dir.iterdir()):
        return Check("work dir", "pass", f"{work_dir} (the testbed's own)")
    return Check("work dir", "fail", f"{work_dir} is not empty and was not created by the testbed (no {MARKER})", fix)


def record_links(work_dir: Path, names: set[str] | list[str]) -> None:
    """Add host links the testbed just created to the marker (down removes exactly these)."""
    data = read_marker(work_dir)
    if data is None or not names:
        return
    data["links"] = sorted(set(data.get("links", [])) | set(names))
    _write_marker(work_dir, data)


def recorded_links(work_dir: Path) -> set[str]:
    """The host links the testbed recorded as created by it."""
    data = read_marker(work_dir) or {}
    return set(data.get("links", []))


def remove(work_dir: Path) -> None:
    """Delete the work dir, only if its marker says it is ours (symlinks inside are removed, not followed)."""
    if require_owned(work_dir):
        shutil.rmtree(work_dir)
