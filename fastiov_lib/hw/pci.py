"""PCI addresses and device folders in sysfs (stdlib only: also runs inside the vsriov guest)."""
from __future__ import annotations

import re
from pathlib import Path

_PCI_RE = re.compile(r"([0-9a-f]{4}):([0-9a-f]{2}):([0-1][0-9a-f])\.([0-7])")


class PciAddressError(ValueError):
    """A string is not a PCI address of the form DDDD:BB:DD.F."""


def parse_pci(address: str) -> tuple[int, int, int, int]:
    """(domain, bus, device, function) of `DDDD:BB:DD.F`; PciAddressError when malformed."""
    m = _PCI_RE.fullmatch(address)
    if not m:
        raise PciAddressError(f"{address!r} is not a PCI address of the form DDDD:BB:DD.F")
    return int(m[1], 16), int(m[2], 16), int(m[3], 16), int(m[4], 16)


def format_pci(domain: int, bus: int, dev: int, fn: int) -> str:
    """`DDDD:BB:DD.F` of its four parts."""
    return f"{domain:04x}:{bus:02x}:{dev:02x}.{fn:x}"


def pci_dir(root: Path, address: str) -> Path:
    """The device's folder under sys/bus/pci/devices below `root`."""
    return Path(root) / "sys/bus/pci/devices" / address
