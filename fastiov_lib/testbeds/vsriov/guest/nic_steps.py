"""Run the project's NIC steps (fastiov_lib.hw.nic) inside the virtual SR-IOV guest.

Started by the guest's /init with the host's Python and repository (shared read-only over 9p, with
the guest's own /proc, /sys and /dev bound in), so `fastiov_lib.hw.nic` drives the guest kernel's real
sysfs exactly as it would on an SR-IOV server. Prints `RESULT nic_step {json}` lines for the host.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable


def _jsonable(value: Any) -> Any:
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {k: _jsonable(v) for k, v in dataclasses.asdict(value).items()}
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def _emit(fields: dict[str, Any]) -> None:
    print("RESULT nic_step " + json.dumps(fields, default=str, separators=(",", ":")), flush=True)


def _timed(step: str, call: Callable[[], Any]) -> bool:
    t0 = time.monotonic_ns()
    try:
        value = call()
    except Exception as exc:  # the host records the failure; the guest goes on to the benchmarks
        _emit({"step": step, "ok": False, "ns": time.monotonic_ns() - t0, "error": f"{type(exc).__name__}: {exc}",
               "traceback": traceback.format_exc(limit=3)})
        return False
    _emit({"step": step, "ok": True, "ns": time.monotonic_ns() - t0, "report": _jsonable(value)})
    return True


def observe_sysfs(root: Path, pf: str) -> dict[str, Any]:
    """What the kernel shows for the PF and its VFs, read independently of fastiov_lib.hw.nic."""
    dev = root / "sys/bus/pci/devices" / pf
    vfs = {}
    for link in sorted(dev.glob("virtfn*"), key=lambda p: int(p.name[len("virtfn"):])):
        vf = link.resolve()
        driver = vf / "driver"
        group = vf / "iommu_group"
        vfs[vf.name] = {"driver": driver.resolve().name if driver.exists() else None,
                        "iommu_group": group.resolve().name if group.exists() else None}
    return {"numvfs": int((dev / "sriov_numvfs").read_text()),
            "autoprobe": int((dev / "sriov_drivers_autoprobe").read_text()), "vfs": vfs}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pf", required=True, help="PCI address of the SR-IOV PF")
    parser.add_argument("--num-vfs", type=int, required=True)
    parser.add_argument("--root", default="/", help="root below which sysfs is reached")
    args = parser.parse_args(argv)
    t0 = time.monotonic_ns()
    try:
        from fastiov_lib.hw import nic
    except Exception as exc:
        _emit({"step": "import", "ok": False, "ns": time.monotonic_ns() - t0, "error": f"{type(exc).__name__}: {exc}"})
        return 1
    _emit({"step": "import", "ok": True, "ns": time.monotonic_ns() - t0, "python": sys.version.split()[0]})
    root = Path(args.root)
    prepared = _timed("prepare_vfs", lambda: nic.prepare_vfs(root, args.pf, args.num_vfs, driver="vfio-pci",
                                                           autoprobe_off=True))
    _timed("observe_after_prepare", lambda: observe_sysfs(root, args.pf))
    released = _timed("release_vfs", lambda: nic.release_vfs(root, args.pf))
    _timed("observe_after_release", lambda: observe_sysfs(root, args.pf))
    return 0 if prepared and released else 1


if __name__ == "__main__":
    sys.exit(main())
