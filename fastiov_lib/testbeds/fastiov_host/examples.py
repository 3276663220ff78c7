"""The real host's plans and checks shown on every testbed: dry runs of the example testbed file
against a generated fake tree of that host (what the real host will do, and what 'ready' looks like)."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

from fastiov_lib.config import Testbed, load_testbed
from fastiov_lib.testbeds.fastiov_host.fake_host import build_fake_host, spec_for_testbed
from fastiov_lib.testbeds.checks import Check

EXAMPLE_TESTBED = "testbeds/fastiov-e810.example.yaml"


def example_testbed(testbed_file: str = EXAMPLE_TESTBED) -> Testbed:
    """The example real-host testbed file of the repository."""
    return load_testbed(testbed_file)


def example_host_checks(testbed: Testbed | None = None) -> list[Check]:
    """The real host's checks run on a generated healthy fake tree of that host."""
    from fastiov_lib.testbeds.fastiov_host.host_checks import fastiov_host_checks

    tb = testbed or example_testbed()
    with tempfile.TemporaryDirectory(prefix="fastiov-fake-") as tmp:
        build_fake_host(Path(tmp), spec_for_testbed(tb), tb)
        return fastiov_host_checks(tb, Path(tmp))


class ExampleRealHost:
    """The real host's view for a back end that is not one: the example testbed file's build plan,
    its checks and its NIC plan, dry-run against a generated fake tree of that host."""

    def real_host_testbed(self) -> Testbed:
        """The example real-host testbed file."""
        return example_testbed()

    def real_host_checks(self) -> tuple[list[Check], str]:
        """The example host's readiness checks on a healthy fake tree of it."""
        return example_host_checks(), "generated fake tree (example)"

    def real_host_nic_plan(self) -> list[dict[str, str]]:
        """The example host's NIC set-up as plan rows (a dry run against a fake tree)."""
        return example_nic_plan()


def example_nic_plan(testbed: Testbed | None = None) -> list[dict[str, str]]:
    """Dry run of the real host's NIC set-up against a fake tree of the host before set-up."""
    from fastiov_lib.hw.nic import nic_plan

    tb = testbed or example_testbed()
    with tempfile.TemporaryDirectory(prefix="fastiov-fake-") as tmp:
        # a host as it is before set-up: no hugepages reserved, no VFs yet
        build_fake_host(Path(tmp), spec_for_testbed(tb, hugepages_2m=0, configs=False))
        rows = nic_plan(tb.fastiov, Path(tmp))
        for r in rows:  # show host paths, not the temporary tree's
            r["target"] = "/" + os.path.relpath(r["target"], tmp) if r["target"].startswith(tmp) else r["target"]
    return rows
