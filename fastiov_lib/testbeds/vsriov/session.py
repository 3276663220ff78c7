"""One guest session: set-up (cached), one boot with the NIC steps and the micro-benchmarks, records to the run."""
from __future__ import annotations

import dataclasses
import os
import re
import shlex
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from tqdm.auto import tqdm

from fastiov_lib.analysis.vsriov import EMULATION_NOTE
from fastiov_lib.config import Profile, Testbed
from fastiov_lib.run.rundir import VSRIOV_FILE, JsonlWriter, RunDir
from fastiov_lib.testbeds.vsriov.boot import BootOutcome, boot_guest, qemu_command
from fastiov_lib.testbeds.vsriov.common import GuestImage, VsriovError, settings_of
from fastiov_lib.testbeds.vsriov.image import prepare_guest
from fastiov_lib.testbeds.vsriov.plans import GuestPlan, make_plan
from fastiov_lib.testbeds.vsriov.protocol import BlockCollector, GuestResult

if TYPE_CHECKING:
    import pandas as pd

@dataclass
class VsriovResult:
    """What one guest session did; its measurements are in `<run>/vsriov.jsonl`."""

    session_id: str
    status: Literal["ok", "failed", "timeout", "interrupted"]
    error: str | None
    device: str
    device_note: str
    qemu_version: str
    qemu_source: str
    kernel: str
    boot_s: float | None
    total_s: float
    records: int
    nic_steps: dict[str, bool]  # step -> ok, as reported by the guest
    jsonl: Path
    console_log: Path
    bad_lines: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def to_frame(self) -> "pd.DataFrame":
        """The summary as a one-row DataFrame (what 03_nic shows)."""
        import pandas as pd

        return pd.DataFrame([self.summary()])

    def summary(self) -> dict[str, Any]:
        """A flat dict for a one-row table (no paths)."""
        d = asdict(self)
        for key in ("jsonl", "console_log", "bad_lines"):
            d.pop(key)
        d["nic_steps"] = ", ".join(f"{k}={'ok' if v else 'FAILED'}" for k, v in self.nic_steps.items()) or "-"
        return d



def run_guest_session(testbed: Testbed, run: RunDir, profile: Profile, *, benchmarks: bool = True,
                      nic_steps: bool = True, progress: bool = True, raise_on_failure: bool = True,
                      image: GuestImage | None = None) -> VsriovResult:
    """Set up (cached), boot the guest once, run the NIC steps and the micro-benchmarks, shut down.

    `image` defaults to what `prepare_guest(testbed)` builds (pass one to reuse it across sessions).

    Every guest measurement is appended to `<run>/vsriov.jsonl` as it arrives (kind, session_id,
    device and the guest's fields); a final `session` record says how the boot ended. Logs:
    `<run>/logs/vsriov-<session>-console.log` (kernel), `-guest.log` (result channel), `-qemu.log`.
    Raises VsriovError when the guest fails, hangs or times out (unless raise_on_failure=False).
    """
    settings = settings_of(testbed)
    image = image or prepare_guest(testbed, progress=progress)
    build_note = None
    if benchmarks and profile.vsriov_qemu62 and not image.qemu62:
        image, build_note = _with_qemu62(testbed, run, image)
    plan = make_plan(testbed, profile, image.device, benchmarks, nic_steps, image=image)
    session_id = time.strftime("%Y%m%d-%H%M%S") + f"-{os.getpid()}"
    run.logs_dir.mkdir(parents=True, exist_ok=True)
    console_log = run.logs_dir / f"vsriov-{session_id}-console.log"
    guest_log = run.logs_dir / f"vsriov-{session_id}-guest.log"
    qemu_log = run.logs_dir / f"vsriov-{session_id}-qemu.log"
    cmd = qemu_command(image, settings, plan, console_log, share_root=Path("/"))
    meta = {"session_id": session_id, "device": image.device.name, "qemu_version": image.qemu.version_text,
            "kernel": image.kernel.version}
    nic: dict[str, bool] = {}
    writer = JsonlWriter(run.path / VSRIOV_FILE)
    bar = tqdm(desc=f"vsriov guest ({image.device.name})", unit=" results", disable=not progress, leave=False)
    outcome: BootOutcome | None = None
    where: dict[str, Any] = {"phase": "boot", "round_n": None}  # from the guest's VSRIOV markers

    def emit(record: dict[str, Any]) -> None:
        writer.append({**record, **meta, **where, "host_monotonic_ns": time.monotonic_ns()})
        bar.update()

    blocks = BlockCollector(run.logs_dir / f"vsriov-{session_id}-blocks", emit)

    def on_line(line: str) -> None:
        if blocks.feed(line):
            return
        guest_fh.write(line + "\n")
        guest_fh.flush()
        m = re.match(r"VSRIOV (phase|round n)=(\S+)", line)
        if m and m.group(1) == "phase":
            where.update(phase=m.group(2), round_n=None)
            bar.set_postfix_str(m.group(2))
        elif m:
            where["round_n"] = int(m.group(2))
            bar.set_postfix_str(f"{m.group(2)} VFs")

    def on_result(result: GuestResult) -> None:
        record = {"kind": result.measurement, **meta, **where, "host_monotonic_ns": time.monotonic_ns()}
        record.update({k: v for k, v in result.fields.items() if k not in ("kind", "session_id")})
        writer.append(record)
        if result.measurement == "nic_step":
            nic[str(result.fields.get("step"))] = bool(result.fields.get("ok"))
            _record_nic_timings(run, result, meta)
        bar.update()

    status: str = "interrupted"
    error: str | None = "interrupted"
    try:
        with open(qemu_log, "a") as qlog:
            qlog.write("$ " + shlex.join(cmd) + "\n")
        with open(guest_log, "a", encoding="utf-8") as guest_fh:
            outcome = boot_guest(cmd, boot_timeout_s=settings.boot_timeout_s, run_timeout_s=settings.run_timeout_s,
                                 env=image.qemu.env(), on_result=on_result, on_line=on_line, stderr_log=qemu_log)
        status, error = outcome.status, outcome.error
        if status == "ok":
            error = _check_guest_steps(outcome.results, plan)
            status = "failed" if error else "ok"
    finally:
        bar.close()
        writer.append({"kind": "session", **meta, "status": status, "error": error, "device_note": image.device_note,
                       "qemu_source": image.qemu.source, "boot_s": outcome.boot_s if outcome else None,
                       "total_s": outcome.total_s if outcome else None, "plan": asdict(plan),
                       "bad_lines": len(outcome.bad_lines) if outcome else None, "qemu62_build": build_note,
                       "qemu62": {v: str(p) for v, p in image.qemu62},
                       "shared_devset_module_sha256": image.shared_devset_sha256 or None,
                       "emulation_note": EMULATION_NOTE})
        writer.close()
    result = VsriovResult(session_id, status, error, image.device.name, image.device_note,  # type: ignore[arg-type]
                          image.qemu.version_text, image.qemu.source, image.kernel.version,
                          outcome.boot_s if outcome else None, outcome.total_s if outcome else 0.0,
                          len(outcome.results) if outcome else 0, nic, run.path / VSRIOV_FILE, console_log,
                          outcome.bad_lines if outcome else [])
    if raise_on_failure and not result.ok:
        tail = console_tail(console_log)
        raise VsriovError(f"vsriov session {session_id}: {status}: {error} (console log: {console_log}"
                          + (f"; it ends with: {tail}" if tail else "") + ")")
    return result


def _with_qemu62(testbed: Testbed, run: RunDir, image: GuestImage) -> tuple[GuestImage, str]:
    """The image with the finished QEMU 6.2.0 builds, and a note naming the missing ones.

    A session never builds them (about 15 min, `fastiov-artifact vsriov build-qemu`): a bench must
    not start a build that another command may be running in the same folders.
    """
    from fastiov_lib.testbeds.vsriov import qemu62

    built = qemu62.binaries(testbed)
    missing = sorted(set(qemu62.VARIANTS) - set(built))
    note = "ready" if not missing else (f"missing {', '.join(missing)}: run `fastiov-artifact vsriov build-qemu "
                                        f"--testbed {testbed.source_path or 'TESTBED'}` once")
    return dataclasses.replace(image, qemu62=tuple(built.items())), note


_CONSOLE_WORDS = re.compile(r"Kernel panic|BUG:|Oops|Unable to|not syncing|timed out|error", re.I)


def console_tail(console_log: Path, lines: int = 3) -> str:
    """What the guest's kernel console last said: its last panic/error line (a panic's call trace
    follows it) and the last lines, joined by ' | '."""
    try:
        text = console_log.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    last = [ln.strip() for ln in text[-lines:]]
    alarming = [ln.strip() for ln in text if _CONSOLE_WORDS.search(ln)]
    if alarming and alarming[-1] not in last:
        last = [alarming[-1], "..."] + last
    return " | ".join(last)


def _record_nic_timings(run: RunDir, result: GuestResult, meta: dict[str, Any]) -> None:
    """The guest's NicReport timings go to <run>/nic.jsonl too, as on a real SR-IOV host."""
    report = result.fields.get("report")
    timings = report.get("timings") if isinstance(report, dict) else None
    if not timings:
        return
    from fastiov_lib.hw import nic

    nic.append_records(run.path / nic.NIC_RECORDS_FILE,
                       [{**t, "source": "vsriov-guest", "session_id": meta["session_id"]} for t in timings
                        if isinstance(t, dict)])


def _check_guest_steps(results: list[GuestResult], plan: GuestPlan) -> str | None:
    """A guest that ran to the end may still have failed a step; name the first one."""
    for r in results:
        if r.measurement == "step" and r.fields.get("rc") not in (0, None):
            return f"guest step {r.fields.get('name')} exited {r.fields.get('rc')}"
        if r.measurement == "pf" and r.fields.get("found") == 0:
            return f"the guest sees no SR-IOV PF with id {r.fields.get('pfid')}"
    if plan.nic_steps:
        steps = {str(r.fields.get("step")): r.fields for r in results if r.measurement == "nic_step"}
        for name in ("import", "prepare_vfs", "release_vfs"):
            if name not in steps:
                return f"NIC step {name} did not report"
            if not steps[name].get("ok"):
                return f"NIC step {name} failed: {steps[name].get('error')}"
    if plan.benchmarks and not any(r.measurement == "numvfs" for r in results):
        return "the benchmarks reported no numvfs result"
    return None


def load_records(run_dir: Path) -> list[dict[str, Any]]:
    """The records of `<run>/vsriov.jsonl` (a malformed line is skipped, never fatal)."""
    from fastiov_lib.run.rundir import read_jsonl

    records, _report = read_jsonl(Path(run_dir) / VSRIOV_FILE)
    return records


