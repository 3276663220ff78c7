"""Shared helpers for the local-testbed tests: a private testbed per test module (own work dir,
link prefix, subnets and storage port), so tests never touch a developer's running testbed."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import yaml

from fastiov_lib.config import REPO_ROOT, Testbed, load_testbed

needs_local_testbed = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("containerd") is None or shutil.which("runc") is None
    or not Path("/usr/lib/cni/bridge").exists(),
    reason="needs root and Debian's containerd, runc and containernetworking-plugins (see .ci/run)",
)


def make_testbed(work_dir: Path, prefix: str, octet: int, pool_size: int = 6,
                 modes: tuple[str, ...] = ("none", "bridge", "macvlan", "hostdev")) -> Testbed:
    """A local testbed under `work_dir` with links `<prefix>*` and subnets 10.<octet>.{0,1,2}.0/24."""
    data = load_testbed(REPO_ROOT / "testbeds" / "local.yaml").model_dump(mode="json", exclude={"source_path"})
    data["name"] = f"test-{prefix}"
    data["allow_host_changes"] = True
    data["local"].update({
        "work_dir": str(work_dir), "link_prefix": prefix, "bridge_name": f"{prefix}br0",
        "bridge_subnet": f"10.{octet}.0.0/24", "macvlan_subnet": f"10.{octet}.1.0/24",
        "hostdev_subnet": f"10.{octet}.2.0/24", "hostdev_pool_size": pool_size,
        "network_modes": list(modes), "storage_port": 5000 + octet, "rpc_timeout_s": 30,
    })
    return Testbed.model_validate(data)


def write_testbed_yaml(testbed: Testbed, path: Path) -> Path:
    """The testbed as a YAML file, for the CLI."""
    path.write_text(yaml.safe_dump(testbed.model_dump(mode="json", exclude={"source_path"}), sort_keys=False))
    return path


def our_links(prefix: str) -> list[str]:
    """Host links whose names start with `prefix`."""
    return sorted(p.name for p in Path("/sys/class/net").iterdir() if p.name.startswith(prefix))
