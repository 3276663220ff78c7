"""Readiness of this machine for the virtual SR-IOV host: QEMU and its SR-IOV device model, memory, set-up tools."""
from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from fastiov_lib.config import Testbed
from fastiov_lib.testbeds.checks import Check, check_kvm_device, read_text, under, version_of
from fastiov_lib.testbeds.vsriov.image import missing_host_tools


def vsriov_host_checks(testbed: Testbed) -> list[Check]:
    """What a QEMU/TCG virtual SR-IOV host needs from this machine (no KVM or IOMMU required)."""
    v = testbed.vsriov
    root = Path(testbed.sys_root)
    out = []
    qemu = shutil.which(v.qemu_bin) if not os.path.isabs(v.qemu_bin) else v.qemu_bin
    if qemu and Path(qemu).exists():
        version = version_of(Path(qemu), ["--version"]) or "unknown version"
        m = re.search(r"version (\d+)\.", version)
        major = int(m[1]) if m else 0
        out.append(Check("vsriov.qemu", "pass", f"{qemu}: {version}"))
        if v.device == "nvme" or major >= 8:
            device = "nvme" if v.device == "nvme" else "igb"
            out.append(Check("vsriov.device", "pass", f"SR-IOV device model {device} with the system QEMU {major}"))
        else:
            out.append(Check("vsriov.device", "warn" if v.device == "igb" else "pass",
                             f"system QEMU {major} has no igb: the set-up fetches bookworm-backports' QEMU "
                             f"into {v.work_dir}" + ("" if v.device == "igb" else ", else it uses nvme"),
                             "allow the vsriov set-up to download from Debian backports" if v.device == "igb" else ""))
    else:
        out.append(Check("vsriov.qemu", "fail", f"{v.qemu_bin} not found", "apt-get install qemu-system-x86"))
    meminfo = read_text(under(root, "proc/meminfo")) or ""
    m = re.search(r"MemAvailable:\s+(\d+)", meminfo)
    avail_mb = int(m[1]) // 1024 if m else 0
    need = v.guest_memory_mb + 512
    out.append(Check("vsriov.memory", "pass" if avail_mb >= need else "warn",
                     f"{avail_mb} MiB available, guest needs {v.guest_memory_mb} MiB",
                     "" if avail_mb >= need else "lower vsriov.guest_memory_mb or free memory"))
    missing = missing_host_tools(v)  # the image module knows which host tools its set-up needs
    out.append(Check("vsriov.tools", "warn" if missing else "pass",
                     "missing: " + ", ".join(t for t, _ in missing) if missing else "set-up tools present",
                     "apt-get install " + " ".join(sorted({p for _, p in missing})) if missing else ""))
    kvm = check_kvm_device(root)
    out.append(Check("vsriov.accel", "pass", "TCG software emulation (KVM " +
                     ("present, not required)" if kvm.status == "pass" else "absent, not required)")))
    return out
