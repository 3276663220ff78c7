"""Testbed back ends behind one interface (base.py); backend_for() is the only reader of a testbed's kind."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastiov_lib.testbeds.base import TestbedBackend

if TYPE_CHECKING:
    from fastiov_lib.config import Testbed


def backend_classes() -> dict[str, type[TestbedBackend]]:
    """Every back end, by the testbed kind it serves (as papermill's engine registry, by name)."""
    from fastiov_lib.testbeds.fastiov_host.backend import FastiovHostBackend
    from fastiov_lib.testbeds.local.backend import LocalBackend
    from fastiov_lib.testbeds.vsriov.backend import VsriovBackend

    return {cls.kind: cls for cls in (LocalBackend, VsriovBackend, FastiovHostBackend)}


def backend_class(kind: str) -> type[TestbedBackend]:
    """The back-end class of a testbed kind as recorded in a run directory's run.json."""
    classes = backend_classes()
    if kind not in classes:
        raise KeyError(f"unknown testbed kind {kind!r} (known: {', '.join(sorted(classes))})")
    return classes[kind]


def backend_for(testbed: "Testbed", **options: Any) -> TestbedBackend:
    """The back end serving a loaded testbed file (`options` go to its constructor, e.g. a sysfs writer)."""
    return backend_class(testbed.kind)(testbed, **options)
