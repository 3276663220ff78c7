"""Round hooks for the benchmark runner on a real FastIOV host: what the original's scripts do.

Before the first round (`start`, also called by the first `before_round`): create the directories
the components hard-code (`log_dirs`), start the barrier server the patched kata runtime calls,
restart containerd once (as the original, once per script), and note how far every component log
already reaches. Before each round: switch the variant if the round asks for another one (kata
keys, the variant's conflist, network configs sorting before it moved aside; on the first round
before the restart, so containerd starts with it), remove leftover `cni-*` network namespaces and
host-local IPAM state, restart containerd only if `containerd_restart_per_round`, make containerd
reload its CNI config (CRI Status: 1.3 reloads only at start and on Status) and check that the
network it loaded is the variant's (the round stops otherwise), `dmesg -C`. After each round: wait `log_settle_s`, copy what each
component appended to its `cnicmp-*.log` files during the round into
`<run>/logs/<round>/<component>_logs/` (slices, never moving a file a daemon still writes), the
same for QEMU's timelines into `<run>/logs/<round>/qemu/` with the clock offset that turns their
CLOCK_MONOTONIC stamps into wall time, and `dmesg | grep vfio`. `close` stops the barrier server
(the engine calls it in its `finally`). `plan()` shows all of it as data before anything runs.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Callable

from fastiov_lib import sh
from fastiov_lib.config import Testbed
from fastiov_lib.hw.host_steps import require_host_changes

IPAM_KEEP = {"lock"}
RUN_SETUP_FILE = "run-setup.json"  # in <run>/logs/: what start() did, and the kernel's dev_set fact
CLOCK_FILE = "clock.json"  # realtime - monotonic at collection, for QEMU's CLOCK_MONOTONIC stamps


def _under(root: Path, path: Path | str) -> Path:
    return Path(root) / str(path).lstrip("/")


class LogSlicer:
    """Copies what files matching a pattern gained since the last call (complete lines only).

    Offsets are kept per inode, so a file renamed by log rotation is not copied twice and a file
    the daemon still holds open is never moved away from under it.
    """

    def __init__(self, src: Path, pattern: str):
        self.src, self.pattern = Path(src), pattern
        self._offsets: dict[tuple[int, int], int] = {}

    def _files(self) -> list[tuple[Path, os.stat_result]]:
        if not self.src.is_dir():
            return []
        out = []
        for p in sorted(self.src.glob(self.pattern)):
            try:
                st = p.stat()
            except OSError:
                continue
            if p.is_file():
                out.append((p, st))
        return out

    def mark(self) -> None:
        """Take everything present now as already seen (it belongs to no round of this run)."""
        for p, st in self._files():
            self._offsets[(st.st_dev, st.st_ino)] = st.st_size

    def copy_new(self, dest: Path) -> dict[str, int]:
        """Append each file's new complete lines to dest/<name>; returns name -> bytes copied."""
        copied = {}
        for p, st in self._files():
            key = (st.st_dev, st.st_ino)
            start = self._offsets.get(key, 0)
            if st.st_size < start:  # truncated: start over
                start = 0
            if st.st_size == start:
                continue
            with open(p, "rb") as fh:
                fh.seek(start)
                data = fh.read(st.st_size - start)
            data = data[: data.rfind(b"\n") + 1]  # a line still being written waits for the next round
            if not data:
                continue
            dest.mkdir(parents=True, exist_ok=True)
            with open(dest / p.name, "ab") as out:
                out.write(data)
            self._offsets[key] = start + len(data)
            copied[p.name] = len(data)
        return copied


class RealHostRoundHooks:
    """start / before_round / after_round / close for a fastiov testbed (see the module docstring)."""

    def __init__(self, testbed: Testbed, root: Path | None = None, netns_prefix: str = "cni-",
                 dmesg_cmd: tuple[str, ...] = ("dmesg",), dmesg_clear_cmd: tuple[str, ...] = ("dmesg", "-C"),
                 socket_timeout_s: float = 60.0, barrier_host: str = "127.0.0.1",
                 reload_cni: Callable[[str], str] | None = None):
        if testbed.fastiov is None:
            raise ValueError(f"testbed {testbed.name!r} has no 'fastiov:' section")
        self.testbed = testbed
        self.s = testbed.fastiov
        self.root = Path(root or testbed.sys_root)
        self.netns_prefix = netns_prefix
        self.dmesg_cmd = tuple(dmesg_cmd)
        self.dmesg_clear_cmd = tuple(dmesg_clear_cmd)
        self.socket_timeout_s = socket_timeout_s
        self.barrier_host = barrier_host
        # conflist text -> name of the network containerd loaded (CniConfError if another one)
        self.reload_cni = reload_cni or self._reload_and_verify
        self.barrier = None
        self.storage_address_added = False
        self.started = False
        self.active_variant: str | None = None
        self._dmesg_lines = 0
        self._barrier_seen = 0
        self._slicers = {comp: LogSlicer(_under(self.root, d), "cnicmp-*.log")
                         for comp, d in sorted(self.s.instrumentation_log_dirs.items())}
        self._qemu = LogSlicer(_under(self.root, self.s.qemu_log_dir), "*.log") if self.s.qemu_log_dir else None

    # -- the plan, as data
    def plan(self) -> list[dict[str, str]]:
        """What happens before the run, around every round and after the run: rows (when, action, target, why)."""
        from fastiov_lib.testbeds.fastiov_host.log_dirs import component_dirs

        s = self.s
        restart = " ".join(s.containerd_restart)
        rows = [{"when": "before run", "action": "mkdir -p", "target": str(d), "why": why}
                for d, why in component_dirs(s)]
        rows += [
            {"when": "before run", "action": f"start barrier server (barrier {s.barrier_size}, "
             f"stage limits {', '.join(f'{k}={v}' for k, v in s.stage_limits.items())})",
             "target": f"{self.barrier_host}:{s.barrier_port}",
             "why": "the patched kata runtime GETs /barrierVM before every sandbox and fails it otherwise"},
        ]
        if s.storage_address is not None and s.storage_interface:
            rows.append({"when": "before run", "action": f"ip addr add {s.storage_address} (if missing)",
                         "target": s.storage_interface,
                         "why": "the app test's storage server on the pods' subnet; removed after the run if added"})
        if s.startup_cpus:
            from fastiov_lib.testbeds.fastiov_host.startup_cpus import OVERHEAD_CGROUP, cpu_range

            rows.append({"when": "before run", "action": f"cpuset.cpus = {cpu_range(s.startup_cpus)}",
                         "target": f"cgroup {OVERHEAD_CGROUP}",
                         "why": "kata's pod overhead on the first CPUs (the original's set_startup_cpu.sh)"})
        if not s.containerd_restart_per_round:
            rows.append({"when": "before run", "action": restart, "target": "containerd",
                         "why": "a fresh containerd once per run, as the original's scripts"})
        rows[len(component_dirs(s)):len(component_dirs(s))] = [
            {"when": "before run", "action": "variant set <first round's variant>",
             "target": f"{s.kata_config}, {s.cni_conf_dir}",
             "why": "written before the restart, so containerd 1.3 starts with the variant's conflist"}]
        rows += [
            {"when": "before round", "action": "variant set <round variant>", "target": str(s.kata_config),
             "why": "kata TOML keys of the round's variant (tomlkit, backup, read back)"},
            {"when": "before round", "action": "move aside network configs sorting first",
             "target": f"{s.cni_conf_dir}/oldconfs/",
             "why": "containerd 1.3 loads only the first network config (as the original: oldconfs/)"},
            {"when": "before round", "action": "CRI Status (verbose): reload and read cniconfig",
             "target": str(s.containerd_socket),
             "why": "containerd 1.3 reloads CNI config only at start/Status; the round stops unless "
                    "the loaded network is the variant's conflist"},
            {"when": "before round", "action": f"ip netns delete {self.netns_prefix}*", "target": "network namespaces",
             "why": "leftover pod namespaces of the previous round"},
            {"when": "before round", "action": "remove IP reservations", "target": str(s.cni_ipam_dir),
             "why": "host-local IPAM state would leak addresses between rounds"},
        ]
        if s.containerd_restart_per_round:
            rows.append({"when": "before round", "action": restart, "target": "containerd",
                         "why": "containerd_restart_per_round: every round starts from a fresh containerd"})
        if s.dmesg_clear:
            rows.append({"when": "before round", "action": " ".join(self.dmesg_clear_cmd), "target": "kernel log",
                         "why": "the round's vfio lines alone in the ring buffer (as the original)"})
        rows.append({"when": "after round", "action": f"sleep {s.log_settle_s:g} s", "target": "",
                     "why": "let the components flush their records (containerd flushes after each pod set-up)"})
        for comp, d in sorted(s.instrumentation_log_dirs.items()):
            rows.append({"when": "after round", "action": "copy new lines of cnicmp-*.log", "target": str(d),
                         "why": f"{comp} timing records -> logs/<round>/{comp}_logs/"})
        if s.qemu_log_dir:
            rows.append({"when": "after round", "action": "copy new lines of *.log + clock offset",
                         "target": str(s.qemu_log_dir), "why": "QEMU timeline of each VM start -> logs/<round>/qemu/"})
        rows.append({"when": "after round", "action": f"{' '.join(self.dmesg_cmd)} | grep vfio", "target": "kernel log",
                     "why": "VFIO open/reset lines -> logs/<round>/dmesg-vfio.log"})
        rows.append({"when": "after run", "action": "stop barrier server", "target": f"{self.barrier_host}:{s.barrier_port}",
                     "why": "always, also when the run fails or is interrupted (the engine's finally)"})
        if s.storage_address is not None and s.storage_interface:
            rows.append({"when": "after run", "action": f"ip addr del {s.storage_address} (if the run added it)",
                         "target": s.storage_interface, "why": "only what the artifact added is removed"})
        return rows

    # -- run
    def start(self, run: Any = None) -> dict[str, Any]:
        """Log dirs, barrier server, one containerd restart, log offsets; idempotent per run."""
        if self.started:
            return {}
        require_host_changes(self.testbed.allow_host_changes, "benchmark run set-up",
                             str(self.testbed.source_path or ""))
        from fastiov_lib.testbeds.fastiov_host.barrier_server import BarrierServer
        from fastiov_lib.testbeds.fastiov_host.log_dirs import log_dir_step

        done: dict[str, Any] = {"log_dirs": [r.as_dict() for r in log_dir_step(self.testbed, self.root).apply(
            True, None, str(self.testbed.source_path or ""))]}
        self.barrier = BarrierServer(self.barrier_host, self.s.barrier_port, self.s.barrier_size,
                                     self.s.stage_limits).start()
        self.started = True
        done["barrier"] = self.barrier.url
        from fastiov_lib.testbeds.fastiov_host.kernel_facts import vf_devset_fact

        done["vf_devset"] = vf_devset_fact(self.root).as_dict()  # the report says what it means
        try:
            if self.s.storage_address is not None and self.s.storage_interface:
                from fastiov_lib.testbeds.fastiov_host.storage_address import ensure_storage_address

                self.storage_address_added = ensure_storage_address(self.s)
                done["storage_address"] = {"address": str(self.s.storage_address), "added": self.storage_address_added}
            if self.s.startup_cpus:
                from fastiov_lib.testbeds.fastiov_host.startup_cpus import confine_overhead

                done["startup_cpus"] = confine_overhead(self.root, self.s.startup_cpus)
            if not self.s.containerd_restart_per_round:
                done["containerd_restart_s"] = self.restart_containerd()
            for slicer in [*self._slicers.values(), *([self._qemu] if self._qemu else [])]:
                slicer.mark()
        except BaseException:
            self.close()
            raise
        if run is not None:
            _write_json(Path(run.logs_dir) / RUN_SETUP_FILE, done)
            self.record_boot(run)
        return done

    def record_boot(self, run: Any) -> None:
        """Add this boot (campaign kernel, release, boot id) to run.json's `boots`: a campaign's run
        directory is continued after a reboot, and its figures name every kernel that measured."""
        from fastiov_lib.testbeds.fastiov_host.kernels import booted_kernel, kernel_release

        update = getattr(run, "update_record", None)
        if update is None:
            return
        try:
            boot_id = (self.root / "proc/sys/kernel/random/boot_id").read_text().strip()
        except OSError:
            boot_id = ""
        boots = list(run.read_run_info().get("boots") or [])
        if not any(b.get("boot_id") == boot_id and b.get("release") == kernel_release(self.root) for b in boots):
            import datetime as _dt

            boots.append({"kernel": booted_kernel(self.s, self.root), "release": kernel_release(self.root),
                          "boot_id": boot_id, "first_round_at": _dt.datetime.now(_dt.timezone.utc).isoformat()})
            update(boots=boots)

    def close(self) -> dict[str, Any]:
        """Stop the barrier server (idempotent); returns its final counters."""
        stats = {}
        if self.barrier is not None:
            self.barrier.stop()
            stats = self.barrier.stats()
        if self.storage_address_added:  # only what this run added
            from fastiov_lib.testbeds.fastiov_host.storage_address import remove_storage_address

            remove_storage_address(self.s)
            self.storage_address_added = False
        self.started = False
        return stats

    # -- before
    def before_round(self, round_info: Any, run: Any) -> None:
        require_host_changes(self.testbed.allow_host_changes, "benchmark round clean-up",
                             str(self.testbed.source_path or ""))
        variant = getattr(round_info, "variant", None)
        done: dict[str, Any] = {}
        from fastiov_lib.testbeds.fastiov_host import runtime_config

        # the variant's files first: the run's one containerd restart (start) then loads its conflist
        if variant in runtime_config.VARIANTS and variant != self.active_variant:
            res = runtime_config.set_variant(self.testbed, variant, Path(run.path), self.root)
            self.active_variant = variant
            done["variant"] = {"name": variant, "changes": len(res.changes), "warnings": res.warnings,
                               "conflist_changed": res.conflist_changed, "moved_aside": res.moved_aside}
        self.start(run)
        done["netns_removed"] = self.remove_leftover_netns()
        done["ipam_removed"] = self.clear_ipam_state()
        if self.s.containerd_restart_per_round:
            done["containerd_restart_s"] = self.restart_containerd()
        if variant in runtime_config.VARIANTS:
            text = runtime_config.render_conflist(self.s, runtime_config.get_variant(variant).network)
            done["cni_network"] = self.reload_cni(text)  # raises unless containerd loaded the variant's
        if self.s.dmesg_clear:
            done["dmesg_cleared"] = self._run_ok(self.dmesg_clear_cmd)
            self._dmesg_lines = 0 if done["dmesg_cleared"] else len(self._dmesg_vfio())
        else:
            self._dmesg_lines = len(self._dmesg_vfio())
        self._barrier_seen = self.barrier.stats().get("barrier_arrived", 0) if self.barrier else 0
        extra = getattr(round_info, "extra", None)
        if isinstance(extra, dict):
            extra["before_round"] = done

    def _reload_and_verify(self, conflist_text: str) -> str:
        from fastiov_lib.testbeds.fastiov_host.cni_conf import reload_and_verify

        api = "v1alpha2" if self.testbed.cri_api == "auto" else self.testbed.cri_api
        return reload_and_verify(self.s.containerd_socket, api, conflist_text,  # the socket pods are started on
                                 _under(self.root, self.s.cni_conf_dir), timeout_s=self.socket_timeout_s)

    def remove_leftover_netns(self) -> list[str]:
        """Delete network namespaces named <prefix>* (ip netns delete); returns their names."""
        res = sh.run(["ip", "netns", "list"], what="leftover namespaces", timeout=30, error=RuntimeError)
        names = [line.split()[0] for line in res.stdout.splitlines() if line.startswith(self.netns_prefix)]
        for name in names:
            sh.run(["ip", "netns", "delete", name], what="leftover namespaces", timeout=30, check=False,
                   error=RuntimeError)
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
        sh.run(list(self.s.containerd_restart), what="containerd restart (fastiov.containerd_restart)",
               timeout=120, error=RuntimeError)
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
        if self.s.log_settle_s:
            time.sleep(self.s.log_settle_s)
        summary: dict[str, Any] = {"kernel": getattr(round_info, "kernel", None),  # the boot this round ran on
                                   "kernel_release": getattr(round_info, "kernel_release", ""),
                                   "instrumentation": self.collect_instrumentation(dest)}
        summary["qemu"] = self.collect_qemu_logs(dest / "qemu")
        lines = self._dmesg_vfio()[self._dmesg_lines:]
        dest.mkdir(parents=True, exist_ok=True)
        (dest / "dmesg-vfio.log").write_text("".join(line + "\n" for line in lines))
        summary["dmesg_vfio_lines"] = len(lines)
        if self.barrier is not None:
            summary["barrier_calls"] = self.barrier.stats().get("barrier_arrived", 0) - self._barrier_seen
        _write_json(dest / "collected.json", summary)
        extra = getattr(round_info, "extra", None)
        if isinstance(extra, dict):
            extra["after_round"] = summary

    def collect_instrumentation(self, dest: Path) -> dict[str, int]:
        """Each component's new cnicmp-*.log lines into dest/<component>_logs/; files per component."""
        return {comp: len(slicer.copy_new(dest / f"{comp}_logs")) for comp, slicer in self._slicers.items()}

    def collect_qemu_logs(self, dest: Path) -> int:
        """New QEMU timeline lines into dest/, with clock.json (realtime - monotonic, ns); files copied."""
        if self._qemu is None:
            return 0
        copied = self._qemu.copy_new(dest)
        if copied:
            _write_json(dest / CLOCK_FILE, {"realtime_minus_monotonic_ns": time.time_ns() - time.monotonic_ns(),
                                            "source": str(self.s.qemu_log_dir)})
        return len(copied)

    def _run_ok(self, cmd: tuple[str, ...]) -> bool:
        try:
            return sh.run(list(cmd), timeout=30, check=False).returncode == 0
        except sh.CommandError:
            return False

    def _dmesg_vfio(self) -> list[str]:
        try:  # no kernel log is no vfio lines, not a failed round
            res = sh.run(list(self.dmesg_cmd), timeout=30, check=False)
        except sh.CommandError:
            return []
        return [line for line in res.stdout.splitlines() if "vfio" in line]


def _write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
    os.replace(tmp, path)


def real_host_plan(testbed: Testbed) -> list[dict[str, str]]:
    """The actions before the run, around every round and after it on a real host, as rows."""
    return RealHostRoundHooks(testbed).plan()
