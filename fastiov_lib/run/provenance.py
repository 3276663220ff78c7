"""Provenance of a run: host facts, git state, the Python lock, package and tool versions (for run.json)."""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import platform
import shutil
from importlib import metadata
from pathlib import Path
from typing import Any, Iterable

from fastiov_lib import sh
from fastiov_lib.config import REPO_ROOT, Profile, Testbed
from fastiov_lib.run.record import SCHEMA_VERSION, BackendFacts, GitState, HostFacts, PythonLock, RunRecord, boot_params

LOCK_FILE = "requirements.lock"
PACKAGES = ["fastiov-artifact", "pandas", "seaborn", "matplotlib", "papermill", "nbval", "pydantic", "grpcio",
            "container-runtime-interface-api", "tomlkit", "jupyterlab", "ipywidgets"]
TOOL_PROBES = {
    "containerd": ["containerd", "--version"],
    "runc": ["runc", "--version"],
    "kata-runtime": ["kata-runtime", "--version"],
    "qemu": ["qemu-system-x86_64", "--version"],
    "ctr": ["ctr", "--version"],
}


def now_iso() -> str:
    """The local time with its UTC offset, to the second (run.json's start and end times)."""
    return _dt.datetime.now(_dt.timezone.utc).astimezone().isoformat(timespec="seconds")


def quiet_output(cmd: list[str], cwd: Path | None = None) -> str | None:
    """A probe's output (stdout, else stderr), or None when it is missing, fails or hangs: provenance
    is collected best-effort and never stops a run."""
    try:
        proc = sh.run(cmd, cwd=cwd, timeout=10, check=False)
    except (sh.CommandError, OSError, UnicodeDecodeError):
        return None
    return (proc.stdout or proc.stderr).strip() if proc.returncode == 0 else None


def notebook_content(text: str) -> list[tuple[str, str, tuple[str, ...]]] | None:
    """What a notebook says (cell type, source, tags), without outputs, counts or metadata; None if not JSON."""
    try:
        nb = json.loads(text)
        cells = nb["cells"]
    except (ValueError, KeyError, TypeError):
        return None
    out = []
    for cell in cells:
        source = cell.get("source", "")
        source = "".join(source) if isinstance(source, list) else str(source)
        tags = tuple(cell.get("metadata", {}).get("tags", []))
        out.append((str(cell.get("cell_type")), source, tags))
    return out


def only_outputs_changed(rel: str) -> bool:
    """True when a committed notebook differs from HEAD in outputs or metadata only (JupyterLab's save)."""
    head = quiet_output(["git", "show", f"HEAD:{rel}"], REPO_ROOT)
    try:
        now = (REPO_ROOT / rel).read_text(encoding="utf-8")
    except OSError:
        return False
    a, b = notebook_content(head or ""), notebook_content(now)
    return a is not None and a == b


def git_state() -> GitState:
    """Commit, and precisely which tracked files differ from it; notebooks whose only changes are
    outputs or metadata (what opening and saving one in JupyterLab does) are listed apart and do not
    make the checkout dirty."""
    commit = quiet_output(["git", "rev-parse", "HEAD"], REPO_ROOT)
    changed = quiet_output(["git", "diff", "--name-only", "HEAD"], REPO_ROOT)
    if commit is None or changed is None:
        return GitState(commit=commit, dirty=None)
    files = [f for f in changed.splitlines() if f.strip()]
    outputs_only = [f for f in files if f.startswith("notebooks/") and f.endswith(".ipynb") and only_outputs_changed(f)]
    dirty = [f for f in files if f not in outputs_only]
    return GitState(commit=commit, dirty=bool(dirty), dirty_files=dirty, notebook_outputs_changed=outputs_only)


def lock_file_state() -> PythonLock:
    """The Python lock file the environment was installed from: path and sha256 (None when absent)."""
    try:
        digest = hashlib.sha256((REPO_ROOT / LOCK_FILE).read_bytes()).hexdigest()
    except OSError:
        digest = None
    return PythonLock(file=LOCK_FILE, sha256=digest)


def package_versions(names: Iterable[str] = PACKAGES) -> dict[str, str | None]:
    """Installed version of each Python distribution (None when not installed)."""
    out: dict[str, str | None] = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def tool_versions() -> dict[str, str | None]:
    """First line of each runtime tool's --version (None when the tool is not installed)."""
    out: dict[str, str | None] = {}
    for name, cmd in TOOL_PROBES.items():
        text = quiet_output(cmd) if shutil.which(cmd[0]) else None
        out[name] = text.splitlines()[0] if text else None
    return out


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return None


def host_facts() -> HostFacts:
    """Facts about this host that change results (pooled runs from different hosts are refused).

    Of the kernel command line only the parameters that change measurements are kept (record.boot_params).
    """
    facts: dict[str, Any] = {"hostname": platform.node(), "kernel": platform.release(), "machine": platform.machine(),
                             "cpu_count": os.cpu_count(), "python": platform.python_version()}
    for line in (_read("/proc/cpuinfo") or "").splitlines():
        if line.startswith("model name"):
            facts["cpu_model"] = line.split(":", 1)[1].strip()
            break
    try:
        facts["load_avg"] = list(os.getloadavg())
    except OSError:
        pass
    for line in (_read("/proc/meminfo") or "").splitlines():
        if line.startswith("MemTotal"):
            try:
                facts["mem_total_kb"] = int(line.split()[1])
            except (IndexError, ValueError):
                pass
    facts["governor"] = _read("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor")
    facts["boot_params"] = boot_params(_read("/proc/cmdline") or "")
    return HostFacts(**facts)


def collect_provenance(testbed: Testbed, profile: Profile, run_id: str, facts: BackendFacts) -> RunRecord:
    """The run record at the start of a run: the back end's facts plus everything collected here."""
    return RunRecord(
        schema_version=SCHEMA_VERSION,
        run_id=run_id,
        testbed=testbed.model_dump(mode="json"),
        testbed_name=testbed.name,
        testbed_kind=facts.kind,
        testbed_file=str(testbed.source_path) if testbed.source_path else None,
        testbed_facts=facts.described,
        profile=profile.model_dump(mode="json"),
        profile_name=profile.name,
        baseline_variant=facts.baseline_variant,
        comparison=facts.comparison,
        git=git_state(),
        python_lock=lock_file_state(),
        python_packages=package_versions(),
        tools=tool_versions(),
        host=host_facts(),
        start_time=now_iso(),
        end_time=None,
    )
