"""What the round hooks collect from the components' real paths is what stages.csv is built from."""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from fastiov_lib.analysis.instrumentation import read_stages
from fastiov_lib.bench.stage_records import build_stages_csv
from fastiov_lib.analysis.qemu_timeline import VF_OPEN_STAGE
from fastiov_lib.config import load_testbed
from fastiov_lib.testbeds.fastiov_host import round_hooks as hostbench

from synthetic_runs import T0, write_run

EXAMPLE = "testbeds/fastiov-e810.example.yaml"


def _zap(subject: str, start_ns: int, elapsed_ns: int, record_id: str = "sb1") -> str:
    t = dt.datetime.fromtimestamp(start_ns / 1e9, dt.timezone.utc).isoformat().replace("+00:00", "Z")
    return f'{t}\tINFO\t{subject}\t{{"record_id": "{record_id}", "start_t": "{t}", "elapsed_ns": {elapsed_ns}}}\n'


@dataclass
class _Round:
    round_id: str


@dataclass
class _Run:
    path: Path

    @property
    def logs_dir(self) -> Path:
        return self.path / "logs"


def test_collected_component_logs_become_stage_records_named_as_the_components_write_them(tmp_path):
    tb = load_testbed(EXAMPLE, overrides={"fastiov.log_settle_s": 0})
    root = tmp_path / "root"
    s = tb.fastiov
    dirs = {c: root / str(d).lstrip("/") for c, d in s.instrumentation_log_dirs.items()}
    qemu_dir = root / str(s.qemu_log_dir).lstrip("/")
    for d in [*dirs.values(), qemu_dir]:
        d.mkdir(parents=True)
    hooks = hostbench.RealHostRoundHooks(tb, root=root)
    run = write_run(tmp_path / "run", kind="fastiov", variants={"vanilla": 1000.0}, concurrency=(2,), repeats=1,
                    noise_ms=0.0, slope_ms=0.0)
    at = T0 + 10_000_000
    (dirs["containerd"] / "cnicmp-20240502134136.log").write_text(
        _zap("CNI_start", at, 5_000_000) + _zap("CNI_setup_task", at, 400_000_000) + _zap("CNI_pod_setup", at, 900_000_000))
    (dirs["kata"] / "cnicmp-4242.log").write_text(_zap("CNI_kata_create_sandbox1", at, 800_000_000))
    (dirs["cni"] / "cnicmp-1714600000.log").write_text(_zap("CNI_vfconf", at, 20_000_000))
    (qemu_dir / "qemu-77.log").write_text("[100.000000] [PID: 77] [TID: 77] INFO: vfio-getdev\n"
                                          "[100.300000] [PID: 77] [TID: 77] INFO: vfio-config\n")
    hooks.after_round(_Round("startup-vanilla-c2-r0-abc"), _Run(run))
    # the clock offset the hooks wrote is the collector's; pin it to the synthetic round's time
    clock = run / "logs/startup-vanilla-c2-r0-abc/qemu/clock.json"
    clock.write_text(f'{{"realtime_minus_monotonic_ns": {T0 - 100_000_000_000 + 20_000_000}}}')
    out, report = build_stages_csv(run)
    assert out is not None and report.ok, report.summary()
    st = read_stages(run)
    by = {(c, subj) for c, subj in zip(st["component"], st["subject"])}
    assert {("containerd", "CNI_setup_task"), ("containerd", "CNI_pod_setup"), ("kata", "CNI_kata_create_sandbox1"),
            ("cni", "CNI_vfconf"), ("qemu", VF_OPEN_STAGE)} <= by
    assert set(st["variant"].dropna()) == {"vanilla"} and st["variant"].notna().all()  # every record in the round
