"""The virtual SR-IOV host in the report and the notebooks: its tables, its claims and its report.md section."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from fastiov_lib.analysis import vsriov_startup as startup
from fastiov_lib.analysis.vsriov import EMULATION_NOTE, nic_steps_frame, sessions_frame, summary_table
from fastiov_lib.report import claims
from fastiov_lib.report.md_table import md_table
from fastiov_lib.report.section import Section
from fastiov_lib.report.vsriov_figures import build_figures

CLAIMS_FILE = claims.CLAIMS_DIR / "vsriov.yaml"


def tables(run_dir: str | Path) -> dict[str, pd.DataFrame]:
    """Every vsriov table a notebook shows, by name (03_nic and 06_figures display them inline)."""
    run_dir = Path(run_dir)
    return {"sessions": sessions_frame(run_dir), "nic_steps": nic_steps_frame(run_dir),
            "micro_benchmarks": summary_table(run_dir), "devset_evidence": startup.devset_evidence(run_dir),
            "devset_vfs": startup.devset_vfs_frame(run_dir), "concurrent_starts": startup.vmstart_summary(run_dir),
            "qemu62": startup.qemu62_summary(run_dir), "claims": claims_table(run_dir)}


def claims_table(run_dir: str | Path) -> pd.DataFrame:
    """The virtual SR-IOV claims (data/claims/vsriov.yaml) checked on this run: the estimate with its
    interval and rounds, the verdict and why."""
    run_dir = Path(run_dir)
    rows = [claims.evaluate_claim(c, run_dir, "vsriov") for c in claims.load_claims([CLAIMS_FILE])]
    return pd.DataFrame(rows).reindex(columns=["claim", "role", "statement", "expected", "measured", "verdict", "why"])


def report_section(run_dir: str | Path) -> Section:
    """The report's section on the virtual SR-IOV host: its tables and every figure the run has data for."""
    run_dir = Path(run_dir)
    nic = nic_steps_frame(run_dir)
    parts = [
        "## Virtual SR-IOV host (emulated hardware)\n",
        f"Measured in a QEMU/TCG guest with an emulated Intel IOMMU and an SR-IOV device: the Linux "
        f"kernel code paths (sriov_numvfs, vfio-pci binding, VFIO open/reset, MAP_DMA) are real, the "
        f"hardware is not. **{EMULATION_NOTE[0].upper() + EMULATION_NOTE[1:]}.**\n",
        "### Guest boots\n", md_table(sessions_frame(run_dir).drop(columns=["error"])),
        "### NIC steps (fastiov_lib.hw.nic inside the guest)\n",
        md_table(nic.drop(columns=["session_id"]) if not nic.empty else nic),
        "### Micro-benchmarks (medians)\n", md_table(summary_table(run_dir)),
        "### The VFIO device-set lock, both behaviours\n",
        "`stock` is the guest's Debian 6.1 vfio-pci-core, which has the upstream fix \"vfio/pci: Separate "
        "SR-IOV VF dev_set\" (every VF its own device set); `shared` is the same source with that change "
        "reverted (VFs share their bus's set, as on the paper's 6.4-rc5 host). The kernel's evidence: how "
        "many parallel opens waited on a contended lock, and on how many distinct locks. On a real host, "
        "`host-check` reports which behaviour its kernel has (`kernel.vf-devset`): with the fix (Linux >= 6.16, "
        "Debian 6.1 >= 6.1.148) vanilla SR-IOV no longer serialises VF opens, so FastIOV's gain there comes "
        "from its other optimisations.\n",
        md_table(startup.devset_evidence(run_dir)),
        md_table(startup.devset_vfs_frame(run_dir).drop(columns=["session_id"])),
        "### Concurrent VF-backed VM starts (medians per VM)\n", md_table(startup.vmstart_summary(run_dir)),
        "### QEMU 6.2.0: stock vs FastIOV's patch\n",
        "The patched QEMU skips the eager DMA map of `mem0`. Without the host module `/dev/dev_fastiov` "
        "nothing maps that RAM later: the VM's device must not do DMA (no lazy mapping). Its timeline "
        "log is parsed with the real host's parser. `fastiov-ram0` is the patched binary with its RAM under "
        "another name, which it maps eagerly: the skip's saving within one binary.\n",
        md_table(startup.qemu62_summary(run_dir)),
        "Their claims (V3-V6, V9-V13) and checks (V1, V2) are in the report's claims tables.\n",
    ]
    return Section("\n".join(parts), build_figures(run_dir))
