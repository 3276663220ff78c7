"""Round hooks for the benchmark runner on a real FastIOV host.

`bench.run_startup_sweep(..., hooks=RealHostRoundHooks(testbed))` calls `before_round` and
`after_round` around every round. Before a round: switch the kata variant if the round asks for
another one, remove leftover `cni-*` network namespaces and host-local IPAM state, restart
containerd (what the original's clean.sh does between rounds). After a round: move the
instrumentation logs the patched components wrote (`cnicmp-<pid>.log`, one per process) into
`<run>/logs/<round_id>/<component>_logs/`, copy new QEMU timeline logs, and save the kernel's vfio
lines (`dmesg | grep vfio`). `plan()` shows all of it as data before anything runs.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

from fastiov_lib.config import Testbed
from fastiov_lib.hw.host_steps import require_host_changes

IPAM_KEEP = {"lock"}


def _under(root: Path, path: Path | str) -> Path:
    return Path(root) / str(path).lstrip("/")


def _files(d: Path, pattern: str) -> dict[str, int]:
    try:
        return {p.name: p.stat().st_size for p in d.glob(pattern) if p.is_file()}
    except OSError:
        return {}


class RealHostRoundHooks:
    """before_round / after_round for a fastiov testbed (see the module docstring)."""

    def __init__(self, testbed: Testbed, root: Path | None = None, netns_prefix: str = "cni-",
                 dmesg_cmd: tuple[str, ...] = ("dmesg",), socket_timeout_s: float = 60.0):
        if testbed.fastiov is None:
            raise ValueError(f"testbed {testbed.name!r} has no 'fastiov:' section")
        self.testbed = testbed
        self.s = testbed.fastiov
        self.root = Path(root or testbed.sys_root)
        self.netns_prefix = netns_prefix
        self.dmesg_cmd = tuple(dmesg_cmd)
        self.socket_timeout_s = socket_timeout_s
        self._seen_qemu: dict[str, int] = {}
        self._dmesg_lines = 0
        self.active_variant: str | None = None

    # -- the plan, as data
    def plan(self) -> list[dict[str, str]]:
        """What happens around every round: rows (when, action, target, why)."""
        rows = [
            {"when": "before round", "action": "variant set <round variant>", "target": str(self.s.kata_config),
             "why": "kata TOML keys of the round's variant (tomlkit, backup, read back)"},
            {"when": "before round", "action": f"ip netns delete {self.netns_prefix}*", "target": "network namespaces",
             "why": "leftover pod namespaces of the previous round"},
            {"when": "before round", "action": "remove IP reservations", "target": str(self.s.cni_ipam_dir),
             "why": "host-local IPAM state would leak addresses between rounds"},
            {"when": "before round", "action": " ".join(self.s.containerd_restart), "target": "containerd",
             "why": "every round starts from a fresh containerd, as in the original"},
        ]
        for comp, d in sorted(self.s.instrumentation_log_dirs.items()):
            rows.append({"when": "after round", "action": "move cnicmp-*.log", "target": str(d),
                         "why": f"{comp} timing records -> logs/<round>/{comp}_logs/"})
        if self.s.qemu_log_dir:
            rows.append({"when": "after round", "action": "copy new QEMU logs", "target": str(self.s.qemu_log_dir),
                         "why": "QEMU timeline of each VM start -> logs/<round>/qemu/"})
        rows.append({"when": "after round", "action": f"{' '.join(self.dmesg_cmd)} | grep vfio", "target": "kernel log",
                     "why": "VFIO open/reset lines -> logs/<round>/dmesg-vfio.log"})
        return rows

    # -- before
    def before_round(self, round_info: Any, run: Any) -> None:
        require_host_changes(self.testbed.allow_host_changes, "benchmark round clean-up",
                             str(self.testbed.source_path or ""))
        variant = getattr(round_info, "variant", None)
        done: dict[str, Any] = {}
        from fastiov_lib.testbeds.fastiov_host import runtime_config

        if variant in runtime_config.VARIANTS and variant != self.active_variant:
            res = runtime_config.set_variant(self.testbed, variant, Path(run.path), self.root)
            self.active_variant = variant
            done["variant"] = {"name": variant, "changes": len(res.changes), "warnings": res.warnings}
        done["netns_removed"] = self.remove_leftover_netns()
        done["ipam_removed"] = self.clear_ipam_state()
        done["containerd_restart_s"] = self.restart_containerd()
        self._seen_qemu = _files(_under(self.root, self.s.qemu_log_dir), "*") if self.s.qemu_log_dir else {}
        self._dmesg_lines = len(self._dmesg_vfio())
        extra = getattr(round_info, "extra", None)
        if isinstance(extra, dict):
            extra["before_round"] = done

    def remove_leftover_netns(self) -> list[str]:
        """Delete network namespaces named <prefix>* (ip netns delete); returns their names."""
        res = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=30)
        names = [line.split()[0] for line in res.stdout.splitlines() if line.startswith(self.netns_prefix)]
        for name in names:
            subprocess.run(["ip", "netns", "delete", name], capture_output=True, timeout=30)
        return names

    def clear_ipam_state(self) -> list[str]:
        """Remove host-local IPAM reservations (files named by address, last_reserved_ip.*), keep locks."""
        base = _under(self.root, self.s.cni_ipam_dir)
        removed = []
        if not base.is_dir():
            return removed
        for net in base.iterdir():
            if not net.is_dir():
                continue
            for f in net.iterdir():
                if f.is_file() and f.name not in IPAM_KEEP:
                    f.unlink()
                    removed.append(f"{net.name}/{f.name}")
        return removed

    def restart_containerd(self) -> float:
        """Run the testbed's restart command and wait for the socket; returns seconds taken."""
        t0 = time.monotonic()
        res = subprocess.run(list(self.s.containerd_restart), capture_output=True, text=True, timeout=120)
        if res.returncode != 0:
            raise RuntimeError(f"{' '.join(self.s.containerd_restart)} failed ({res.returncode}): "
                               f"{(res.stderr or res.stdout).strip()[-300:]}")
        sock = _under(self.root, self.s.containerd_socket)
        if sock.parent.is_dir():
            while not sock.exists():
                if time.monotonic() - t0 > self.socket_timeout_s:
                    raise RuntimeError(f"{sock} did not come back within {self.socket_timeout_s:.0f} s")
                time.sleep(0.1)
        return time.monotonic() - t0

    # -- after
    def after_round(self, round_info: Any, run: Any) -> None:
        round_id = getattr(round_info, "round_id", None) or f"round-{getattr(round_info, 'index', 0)}"
        dest = Path(run.logs_dir) / round_id
        summary: dict[str, Any] = {"instrumentation": self.collect_instrumentation(dest)}
        summary["qemu"] = self.collect_qemu_logs(dest / "qemu")
        lines = self._dmesg_vfio()[self._dmesg_lines:]
        dest.mkdir(parents=True, exist_ok=True)
        (dest / "dmesg-vfio.log").write_text("".join(line + "\n" for line in lines))
        summary["dmesg_vfio_lines"] = len(lines)
        with open(dest / "collected.json", "w", encoding="utf-8") as fh:
            json.dump(summary, fh, indent=2)
        extra = getattr(round_info, "extra", None)
        if isinstance(extra, dict):
            extra["after_round"] = summary

    def collect_instrumentation(self, dest: Path) -> dict[str, int]:
        """Move each component's cnicmp-<pid>.log files into dest/<component>_logs/; counts per component."""
        counts = {}
        for comp, d in sorted(self.s.instrumentation_log_dirs.items()):
            src = _under(self.root, d)
            files = sorted(src.glob("cnicmp-*.log")) if src.is_dir() else []
            if files:
                (dest / f"{comp}_logs").mkdir(parents=True, exist_ok=True)
            for f in files:
                shutil.move(str(f), dest / f"{comp}_logs" / f.name)
            counts[comp] = len(files)
        return counts

    def collect_qemu_logs(self, dest: Path) -> int:
        if not self.s.qemu_log_dir:
            return 0
        src = _under(self.root, self.s.qemu_log_dir)
        now = _files(src, "*")
        new = [n for n, size in now.items() if self._seen_qemu.get(n) != size]
        if new:
            dest.mkdir(parents=True, exist_ok=True)
        for name in new:
            shutil.copy2(src / name, dest / name)
        self._seen_qemu = now
        return len(new)

    def _dmesg_vfio(self) -> list[str]:
        try:
            res = subprocess.run(list(self.dmesg_cmd), capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.SubprocessError):
            return []
        return [line for line in res.stdout.splitlines() if "vfio" in line]


def real_host_plan(testbed: Testbed) -> list[dict[str, str]]:
    """The per-round actions on a real host, as rows (for notebooks on any testbed)."""
    return RealHostRoundHooks(testbed).plan()
