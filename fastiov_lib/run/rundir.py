"""Run directories: layout, provenance (run.json), append-only JSONL records and their loader."""
from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import re
import shutil
import stat
import subprocess
import threading
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Iterable, Literal

from pydantic import BaseModel, ConfigDict

from fastiov_lib.testbeds import backend_for
from fastiov_lib.config import REPO_ROOT, ConfigError, Profile, Testbed

PODS_FILE = "pods.jsonl"
RUN_FILE = "run.json"
STAGES_FILE = "stages.csv"

PodStatus = Literal["ok", "failed", "timeout", "interrupted"]

_RUN_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class PodRecord(BaseModel):
    """One pod start, as appended to pods.jsonl. Timestamps are raw monotonic ns (None = not reached)."""

    model_config = ConfigDict(extra="allow")

    run_id: str
    testbed: str
    testbed_kind: str
    experiment: str  # "startup", "ablation" or "app"
    variant: str  # real host: vanilla/fastiov/...; local: the network mode
    network: str
    runtime_handler: str
    concurrency: int
    repeat: int
    pod_index: int
    tenant: int = 0
    pod_name: str
    sandbox_id: str | None = None
    # time.monotonic_ns() values, all from the driver process
    t_released_ns: int | None = None
    t_sandbox_returned_ns: int | None = None
    t_network_ready_ns: int | None = None
    t_container_started_ns: int | None = None
    t_container_exited_ns: int | None = None
    wall_released_ns: int | None = None  # time.time_ns() at release, to align with component logs
    status: PodStatus
    error: str | None = None
    extra: dict[str, Any] = {}


class RecordWriteError(OSError):
    """Appending a record failed (disk full, I/O error, read-only); names the file and what it keeps."""


class RunDirError(ConfigError, ValueError):
    """A run directory cannot be used as asked (foreign run, broken run.json, bad run id)."""


class JsonlWriter:
    """Append-only JSONL file; each record is written whole and fsynced on its own.

    Thread-safe: concurrent appends from the benchmark's worker threads never interleave. A failed
    append (ENOSPC, EIO, a read-only file system) truncates the partial line away, so the file stays
    valid JSONL up to the failure, and raises RecordWriteError; every later append raises it too,
    so nothing is dropped silently.
    """

    def __init__(self, path: Path, fsync: bool = True):
        self.path = Path(path)
        self._fsync = fsync
        self._lock = threading.Lock()
        self.failed: RecordWriteError | None = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            self.records = 0  # kept in the file, from before and now
            if stat.S_ISREG(os.fstat(self._fd).st_mode):  # (a device such as /dev/full is never read)
                with open(self.path, "rb") as fh:
                    self.records = sum(1 for line in fh if line.strip())
        except OSError as exc:
            raise RecordWriteError(exc.errno, f"{self.path}: cannot open for appending records "
                                              f"({exc.strerror})") from None
        self._closed = False

    def append(self, record: BaseModel | dict[str, Any]) -> None:
        """Write one record as one line, flushed and fsynced; RecordWriteError if it could not be kept."""
        data = record.model_dump(mode="json") if isinstance(record, BaseModel) else record
        line = (json.dumps(data, separators=(",", ":"), default=str) + "\n").encode()
        with self._lock:
            if self.failed is not None:
                raise self.failed
            if self._closed:
                raise RecordWriteError(0, f"{self.path}: writer already closed")
            start = os.lseek(self._fd, 0, os.SEEK_END)
            try:
                view = memoryview(line)
                while view:
                    view = view[os.write(self._fd, view):]
                if self._fsync:
                    os.fsync(self._fd)
            except OSError as exc:
                try:  # drop the partial line: the file stays valid JSONL up to the failure
                    os.ftruncate(self._fd, start)
                    os.fsync(self._fd)
                except OSError:
                    pass
                self.failed = RecordWriteError(
                    exc.errno, f"{self.path}: writing a record failed ({exc.strerror}); {self.records} records "
                               "are kept in it up to the failure, the measurement stopped there")
                raise self.failed from None
            self.records += 1

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                os.close(self._fd)

    def __enter__(self) -> "JsonlWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass
class LoadReport:
    """What a loader skipped, with line numbers, so nothing is dropped silently."""

    path: Path
    lines_read: int = 0
    skipped: list[tuple[int, str]] = field(default_factory=list)  # (line number, reason)

    @property
    def ok(self) -> bool:
        return not self.skipped


def read_jsonl(path: Path) -> tuple[list[dict[str, Any]], LoadReport]:
    """Read a JSONL file; a truncated or malformed line is reported, never fatal."""
    path = Path(path)
    report = LoadReport(path)
    records: list[dict[str, Any]] = []
    if not path.exists():
        return records, report
    with open(path, encoding="utf-8", errors="replace") as fh:
        for number, line in enumerate(fh, start=1):
            report.lines_read += 1
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                truncated = not line.endswith("\n")
                reason = "truncated last line" if truncated else f"not JSON ({exc.msg})"
                report.skipped.append((number, reason))
                continue
            if not isinstance(obj, dict):
                report.skipped.append((number, f"expected a JSON object, got {type(obj).__name__}"))
                continue
            records.append(obj)
    return records, report


def new_run_id(testbed_name: str, profile_name: str) -> str:
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return f"{stamp}-{testbed_name}-{profile_name}"


@dataclass(frozen=True)
class RunDir:
    """A results/<run-id>/ directory; every number the artifact shows is read from one."""

    path: Path

    @property
    def run_id(self) -> str:
        return self.path.name

    @property
    def pods_file(self) -> Path:
        return self.path / PODS_FILE

    @property
    def run_file(self) -> Path:
        return self.path / RUN_FILE

    @property
    def logs_dir(self) -> Path:
        return self.path / "logs"

    @property
    def figures_dir(self) -> Path:
        return self.path / "figures"

    @property
    def notebooks_dir(self) -> Path:
        return self.path / "notebooks"

    def pods_writer(self) -> JsonlWriter:
        return JsonlWriter(self.pods_file)

    def jsonl_writer(self, name: str) -> JsonlWriter:
        return JsonlWriter(self.path / name)

    def read_run_info(self) -> dict[str, Any]:
        """run.json as a dict ({} if absent); RunDirError if it is not a JSON object."""
        if not self.run_file.exists():
            return {}
        try:
            info = json.loads(self.run_file.read_text(encoding="utf-8"))
        except UnicodeDecodeError:
            raise RunDirError(f"{self.run_file}: not UTF-8 text, expected a JSON object") from None
        except json.JSONDecodeError as exc:
            raise RunDirError(f"{self.run_file}: not JSON (line {exc.lineno}: {exc.msg}), expected a JSON "
                              "object; fix or remove it") from None
        except OSError as exc:
            raise RunDirError(f"{self.run_file}: cannot be read ({exc.strerror})") from None
        if not isinstance(info, dict):
            raise RunDirError(f"{self.run_file}: expected a JSON object, got {type(info).__name__}")
        return info

    def update_run_info(self, **fields: Any) -> None:
        """Merge fields into run.json atomically (write to a temp file, then rename)."""
        info = self.read_run_info()
        info.update(fields)
        tmp = self.run_file.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(info, indent=2, default=str) + "\n")
        os.replace(tmp, self.run_file)

    def discard_if_unused(self) -> bool:
        """Remove this run directory if it holds nothing but its fresh run.json and empty folders.

        A command refused before it measured anything (bad value, testbed refused) leaves no run
        directory behind; one holding any record, log or notebook is kept.
        """
        if not self.path.is_dir():
            return False
        for entry in self.path.rglob("*"):
            if entry.is_dir() and not entry.is_symlink():
                continue
            if entry.name in (RUN_FILE, PODS_FILE) and entry.parent == self.path:
                if entry.name == PODS_FILE and entry.stat().st_size:
                    return False
                if entry.name == RUN_FILE and self.read_run_info().get("end_time"):
                    return False  # an earlier run finished here: not ours to remove
                continue
            return False
        shutil.rmtree(self.path)
        return True

    def finish(self, reason: str = "completed") -> None:
        """Close run.json: end time and why the run ended (completed, failed, SIGTERM, ...)."""
        self.update_run_info(end_time=_now_iso(), end_reason=reason)


# what must match for a run directory to be extended (pyperf refuses to merge other hosts' results)
SAME_RUN_KEYS = {"testbed": ("testbed_name",), "testbed kind": ("testbed_kind",), "profile": ("profile_name",),
                 "host": ("host", "hostname"), "CPU": ("host", "cpu_model")}


def check_run_id(run_id: str) -> str:
    """A run id usable as one folder name; RunDirError otherwise."""
    if not _RUN_ID_RE.fullmatch(run_id) or run_id in (".", ".."):
        raise RunDirError(f"run id {run_id!r}: only letters, digits, '.', '_' and '-' are allowed "
                          "(one folder name, starting with a letter or digit)")
    return run_id


def foreign_differences(info: dict[str, Any], testbed: Testbed, profile: Profile) -> list[str]:
    """How an existing run.json differs from a run of `testbed` and `profile` on this host."""
    mine = {"testbed_name": testbed.name, "testbed_kind": backend_for(testbed).kind,
            "profile_name": profile.name, "host": host_facts()}
    out = []
    for label, keys in SAME_RUN_KEYS.items():
        have: Any = info
        want: Any = mine
        for k in keys:
            have = have.get(k) if isinstance(have, dict) else None
            want = want.get(k) if isinstance(want, dict) else None
        if have != want:
            out.append(f"{label} {have!r} (this run: {want!r})")
    return out


def create_run_dir(testbed: Testbed, profile: Profile, run_id: str | None = None,
                   results_root: Path | None = None, extend_foreign: bool = False) -> RunDir:
    """Create results/<run-id>/ with run.json, or reopen it to resume the same run.

    An existing run directory is extended only by the same testbed and profile on the same host;
    `extend_foreign` allows it anyway (recorded in run.json under `extended_by`).
    """
    run_id = check_run_id(run_id or new_run_id(testbed.name, profile.name))
    root = results_root or testbed.resolve_results_dir()
    run = RunDir(Path(root) / run_id)
    if run.path.exists() and not run.path.is_dir():
        raise RunDirError(f"{run.path}: exists and is not a folder")
    existed = run.run_file.exists()
    if existed:
        diff = foreign_differences(run.read_run_info(), testbed, profile)
        if diff and not extend_foreign:
            raise RunDirError(f"{run.path}: belongs to another run ({'; '.join(diff)}); choose a new run "
                              "directory, or pass --extend-foreign to add to it anyway")
    elif run.path.is_dir() and any(run.path.iterdir()):
        raise RunDirError(f"{run.path}: exists, is not empty and has no {RUN_FILE}; choose a new run directory")
    try:
        run.path.mkdir(parents=True, exist_ok=True)
        run.logs_dir.mkdir(exist_ok=True)
        if not existed:
            run.update_run_info(**collect_provenance(testbed, profile, run_id))
        elif diff:
            extended = run.read_run_info().get("extended_by", [])
            run.update_run_info(extended_by=[*extended, {"testbed_name": testbed.name, "profile_name": profile.name,
                                                         "host": host_facts().get("hostname"), "at": _now_iso()}])
    except OSError as exc:
        raise RunDirError(f"{exc.filename or run.path}: cannot write the run directory ({exc.strerror})") from None
    return run


def open_run_dir(path: str | Path) -> RunDir:
    """An existing run directory (with run.json or pods.jsonl); raise FileNotFoundError otherwise."""
    p = Path(path)
    if not p.is_dir() or not ((p / RUN_FILE).exists() or (p / PODS_FILE).exists()):
        raise FileNotFoundError(f"{p}: not a run directory (no {RUN_FILE} or {PODS_FILE})")
    return RunDir(p)


def _now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).astimezone().isoformat(timespec="seconds")


def _run(cmd: list[str], cwd: Path | None = None) -> str | None:
    try:
        out = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return (out.stdout or out.stderr).strip() if out.returncode == 0 else None


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


def _only_outputs_changed(rel: str) -> bool:
    """True when a committed notebook differs from HEAD in outputs or metadata only (JupyterLab's save)."""
    head = _run(["git", "show", f"HEAD:{rel}"], REPO_ROOT)
    try:
        now = (REPO_ROOT / rel).read_text(encoding="utf-8")
    except OSError:
        return False
    a, b = notebook_content(head or ""), notebook_content(now)
    return a is not None and a == b


def _git_state() -> dict[str, Any]:
    """Commit, and precisely which tracked files differ from it; notebooks whose only changes are
    outputs or metadata (what opening and saving one in JupyterLab does) are listed apart and do not
    make the checkout dirty."""
    commit = _run(["git", "rev-parse", "HEAD"], REPO_ROOT)
    changed = _run(["git", "diff", "--name-only", "HEAD"], REPO_ROOT)
    if commit is None or changed is None:
        return {"commit": commit, "dirty": None}
    files = [f for f in changed.splitlines() if f.strip()]
    outputs_only = [f for f in files if f.startswith("notebooks/") and f.endswith(".ipynb")
                    and _only_outputs_changed(f)]
    dirty = [f for f in files if f not in outputs_only]
    return {"commit": commit, "dirty": bool(dirty), "dirty_files": dirty,
            "notebook_outputs_changed": outputs_only}


LOCK_FILE = "requirements.lock"


def lock_file_state() -> dict[str, Any]:
    """The Python lock file the environment was installed from: path and sha256 (None when absent)."""
    import hashlib

    path = REPO_ROOT / LOCK_FILE
    try:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        digest = None
    return {"file": LOCK_FILE, "sha256": digest}


def _package_versions(names: Iterable[str]) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def _tool_versions() -> dict[str, str | None]:
    probes = {
        "containerd": ["containerd", "--version"],
        "runc": ["runc", "--version"],
        "kata-runtime": ["kata-runtime", "--version"],
        "qemu": ["qemu-system-x86_64", "--version"],
        "ctr": ["ctr", "--version"],
    }
    out: dict[str, str | None] = {}
    for name, cmd in probes.items():
        text = _run(cmd) if shutil.which(cmd[0]) else None
        out[name] = text.splitlines()[0] if text else None
    return out


def host_facts() -> dict[str, Any]:
    """Facts about this host that change results (pooled runs from different hosts are refused)."""
    facts: dict[str, Any] = {
        "hostname": platform.node(),
        "kernel": platform.release(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
    }
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                facts["cpu_model"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        facts["load_avg"] = list(os.getloadavg())
    except OSError:
        pass
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                facts["mem_total_kb"] = int(line.split()[1])
    except (OSError, ValueError):
        pass
    for key, path in {
        "governor": "/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor",
        "cmdline": "/proc/cmdline",
    }.items():
        try:
            facts[key] = Path(path).read_text().strip()
        except OSError:
            facts[key] = None
    return facts


def collect_provenance(testbed: Testbed, profile: Profile, run_id: str) -> dict[str, Any]:
    """Everything run.json records at the start of a run."""
    return {
        "run_id": run_id,
        "testbed": testbed.model_dump(mode="json"),
        "testbed_name": testbed.name,
        "testbed_kind": backend_for(testbed).kind,
        "testbed_file": str(testbed.source_path) if testbed.source_path else None,
        "profile": profile.model_dump(mode="json"),
        "profile_name": profile.name,
        "git": _git_state(),
        "python_lock": lock_file_state(),
        "python_packages": _package_versions(
            ["fastiov-artifact", "pandas", "seaborn", "matplotlib", "papermill", "nbval", "pydantic",
             "grpcio", "container-runtime-interface-api", "tomlkit", "jupyterlab", "ipywidgets"]
        ),
        "tools": _tool_versions(),
        "host": host_facts(),
        "start_time": _now_iso(),
        "end_time": None,
    }
