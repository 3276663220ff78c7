"""The virtual SR-IOV host behind the back-end interface: a QEMU/TCG guest where the real kernel does the VF work."""
from __future__ import annotations

import pandas as pd

from fastiov_lib.config import Profile
from fastiov_lib.run.rundir import RunDir
from fastiov_lib.testbeds.base import Tables, TestbedBackend
from fastiov_lib.testbeds.checks import Check
from fastiov_lib.testbeds.fastiov_host.examples import ExampleRealHost


class VsriovBackend(ExampleRealHost, TestbedBackend):
    kind = "vsriov"
    description = "QEMU/TCG guest with an emulated IOMMU and SR-IOV device"
    runs_pods = False
    baseline_variant = "none"

    def checks(self) -> list[Check]:
        from fastiov_lib.testbeds.vsriov.checks import vsriov_host_checks

        return vsriov_host_checks(self.testbed)

    def build(self, run: RunDir) -> Tables:
        return {"done": pd.DataFrame([{"testbed": self.name,
                                       "note": "vsriov: the guest image is prepared by 03_nic"}])}

    def prepare_nic(self, run: RunDir, profile: Profile) -> Tables:
        from fastiov_lib.analysis.records import records_frame
        from fastiov_lib.hw.nic import NIC_RECORDS_FILE
        from fastiov_lib.report import vsriov_report
        from fastiov_lib.testbeds.vsriov import testbed as vsriov

        result = vsriov.run_guest_session(self.testbed, run, profile).to_frame()
        # the session's own tables (device-set lock, concurrent VM starts, QEMU 6.2.0, claims) so the
        # notebook shows them inline, not only in report.md
        return {"result": result,
                "timings": records_frame(run.path / NIC_RECORDS_FILE, ["event", "pf", "vf", "duration_ns"]),
                **{f"vsriov_{name}": df for name, df in vsriov_report.tables(run.path).items()}}

    def no_pods_reason(self) -> str:
        return (f"testbed {self.name!r} is a virtual SR-IOV host (kind 'vsriov'): it measures VF set-up "
                "(binding, DMA mapping), not pod startup; there are no pods to start here. Use the 'local' "
                "testbed or a real FastIOV host for this notebook.")
