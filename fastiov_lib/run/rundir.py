"""Run directories: layout, the run record (run.json), append-only JSONL records and their loader."""
from __future__ import annotations

import datetime as _dt
import json
import os
import re
import shutil
import stat
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from fastiov_lib.config import ConfigError, Profile, Testbed
from fastiov_lib.run.provenance import collect_provenance, host_facts, now_iso
from fastiov_lib.run.record import BackendFacts, RunRecord, validation_problem

PODS_FILE = "pods.jsonl"
RUN_FILE = "run.json"
STAGES_FILE = "stages.csv"
VSRIOV_FILE = "vsriov.jsonl"  # the virtual SR-IOV host's guest records

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

    def record(self) -> RunRecord:
        """run.json as the typed run record (defaults when absent); RunDirError naming the key when
        a known key has the wrong type (e.g. `host` given as a string)."""
        return self._validated(self.read_run_info())

    def update_record(self, **fields: Any) -> RunRecord:
        """Merge fields into run.json atomically (validated first, then a temp file renamed over it).

        Nothing is written when the merged record is invalid (RunDirError naming the key)."""
        info = self.read_run_info()
        info.update(fields)
        record = self._validated(info)
        tmp = self.run_file.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(record.model_dump(), indent=2, default=str) + "\n")
        os.replace(tmp, self.run_file)
        return record

    def update_run_info(self, **fields: Any) -> None:
        """The same as update_record (its older name)."""
        self.update_record(**fields)

    def _validated(self, info: dict[str, Any]) -> RunRecord:
        try:
            return RunRecord.model_validate({"run_id": self.run_id, **info})
        except ValidationError as err:
            raise RunDirError(f"{self.run_file}: {validation_problem(err)}") from None

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
        self.update_record(end_time=now_iso(), end_reason=reason)


# what must match for a run directory to be extended (pyperf refuses to merge other hosts' results)
SAME_RUN_KEYS = {"testbed": ("testbed_name",), "testbed kind": ("testbed_kind",), "profile": ("profile_name",),
                 "host": ("host", "hostname"), "CPU": ("host", "cpu_model")}


def check_run_id(run_id: str) -> str:
    """A run id usable as one folder name; RunDirError otherwise."""
    if not _RUN_ID_RE.fullmatch(run_id) or run_id in (".", ".."):
        raise RunDirError(f"run id {run_id!r}: only letters, digits, '.', '_' and '-' are allowed "
                          "(one folder name, starting with a letter or digit)")
    return run_id


def foreign_differences(info: dict[str, Any], testbed: Testbed, profile: Profile, facts: BackendFacts) -> list[str]:
    """How an existing run.json differs from a run of `testbed` and `profile` on this host."""
    mine = {"testbed_name": testbed.name, "testbed_kind": facts.kind,
            "profile_name": profile.name, "host": host_facts().model_dump()}
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
                   results_root: Path | None = None, extend_foreign: bool = False, *,
                   facts: BackendFacts) -> RunDir:
    """Create results/<run-id>/ with run.json, or reopen it to resume the same run.

    `facts` is what the testbed's back end says about itself (`TestbedBackend.facts()`): its kind,
    baseline variant and comparison go into the run record. An existing run directory is extended only by the same testbed and profile on the same host;
    `extend_foreign` allows it anyway (recorded in run.json under `extended_by`).
    """
    run_id = check_run_id(run_id or new_run_id(testbed.name, profile.name))
    root = results_root or testbed.resolve_results_dir()
    run = RunDir(Path(root) / run_id)
    if run.path.exists() and not run.path.is_dir():
        raise RunDirError(f"{run.path}: exists and is not a folder")
    existed = run.run_file.exists()
    if existed:
        diff = foreign_differences(run.read_run_info(), testbed, profile, facts)
        if diff and not extend_foreign:
            raise RunDirError(f"{run.path}: belongs to another run ({'; '.join(diff)}); choose a new run "
                              "directory, or pass --extend-foreign to add to it anyway")
    elif run.path.is_dir() and any(run.path.iterdir()):
        raise RunDirError(f"{run.path}: exists, is not empty and has no {RUN_FILE}; choose a new run directory")
    try:
        run.path.mkdir(parents=True, exist_ok=True)
        run.logs_dir.mkdir(exist_ok=True)
        if not existed:
            run.update_record(**collect_provenance(testbed, profile, run_id, facts).model_dump())
        elif diff:
            extended = run.record().extended_by
            run.update_record(extended_by=[*extended, {"testbed_name": testbed.name, "profile_name": profile.name,
                                                       "host": host_facts().hostname, "at": now_iso()}])
    except OSError as exc:
        raise RunDirError(f"{exc.filename or run.path}: cannot write the run directory ({exc.strerror})") from None
    return run


def open_run_dir(path: str | Path) -> RunDir:
    """An existing run directory (with run.json or pods.jsonl); raise FileNotFoundError otherwise."""
    p = Path(path)
    if not p.is_dir() or not ((p / RUN_FILE).exists() or (p / PODS_FILE).exists()):
        raise FileNotFoundError(f"{p}: not a run directory (no {RUN_FILE} or {PODS_FILE})")
    return RunDir(p)


