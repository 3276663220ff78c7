"""The paper's instrumented containerd (release/1.3 + 0001-containerd.patch) on the local testbed.

Selected by `local.containerd: instrumented`. 01_build builds it with the real host's Builder (same
manifest pins, same fetch/verify/patch/build steps, the same patch series as the real host: the
artifact's per-pod-netns fix 0003 and 0002's tenant args, inert here) into `<work_dir>/build`, and installs its
binaries into `<work_dir>/build/bin` (`local.build_dir` moves both). It runs in a mount namespace of its own
(mountns.py) so its hard-coded record path `/home/cni/cnicmp_logs/containerd_logs/tmp/` is
`<work_dir>/home/...`. Its CRI speaks v1alpha2 only and its config is containerd 1.3's (version 1)
format; 1.3 has one CNI conf_dir for all runtimes, so each round's network mode is activated by
writing that mode's conflist there and asking CRI `Status` (which reloads it in 1.3). After each
round the new records are copied into the run's `logs/containerd_logs/` and stages.csv is rebuilt.
"""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any

import tomlkit

from fastiov_lib import sh
from fastiov_lib.config import REPO_ROOT, Testbed
from fastiov_lib.testbeds.base import BackendError

RECORDS_SUBDIR = Path("home/cni/cnicmp_logs/containerd_logs/tmp")  # under the work dir (= /home/... inside)
BUILD_VERSION = "v1.3.10-fastiov-local"
ACTIVE_MODE_FILE = "active-mode"


class InstrumentedError(BackendError):
    """The instrumented containerd cannot be built, started or read; the message says why."""


def is_instrumented(testbed: Testbed) -> bool:
    return testbed.local is not None and testbed.local.containerd == "instrumented"


def work_dir(testbed: Testbed) -> Path:
    return Path(testbed.local.work_dir)


def build_dir(testbed: Testbed) -> Path:
    return Path(testbed.local.build_dir) if testbed.local.build_dir else work_dir(testbed) / "build"


def bin_dir(testbed: Testbed) -> Path:
    return build_dir(testbed) / "bin"


def records_dir(testbed: Testbed) -> Path:
    return work_dir(testbed) / RECORDS_SUBDIR


def active_conf_dir(testbed: Testbed) -> Path:
    return work_dir(testbed) / "cni" / "net.d" / "active"


def binary(testbed: Testbed) -> Path:
    return bin_dir(testbed) / "containerd"


def sources_dir(testbed: Testbed) -> Path | None:
    """The offline archives to build from, if the testbed names a folder that exists."""
    src = testbed.local.sources_dir
    if src is None:
        return None
    src = src if src.is_absolute() else (REPO_ROOT / src)
    return src.resolve() if src.is_dir() else None


def _builder(testbed: Testbed, run_path: Path | None = None):
    from fastiov_lib.testbeds.fastiov_host.build.builder import Builder
    from fastiov_lib.testbeds.fastiov_host.build.component_table import containerd_component

    comp = containerd_component(version=BUILD_VERSION, install_dir=str(bin_dir(testbed)))
    return Builder(testbed, run_path=run_path, components=[comp], sources=sources_dir(testbed),
                   build_dir=build_dir(testbed), scope="local", root=build_dir(testbed))


def _claim_work_dir(testbed: Testbed) -> None:
    # the build goes inside the work dir by default: claim the folder first, as bring-up would
    from fastiov_lib.testbeds.local import workdir

    if build_dir(testbed).is_relative_to(work_dir(testbed)):
        workdir.claim(work_dir(testbed), testbed.name)


def build(testbed: Testbed, run_path: Path | None = None) -> list[dict[str, Any]]:
    """Build (or reuse: stamped steps are skipped) the instrumented containerd; one row per step."""
    from fastiov_lib.testbeds.fastiov_host.build.components import BuildError
    from fastiov_lib.testbeds.fastiov_host.build.manifest import ManifestError

    _claim_work_dir(testbed)
    try:
        rows = _builder(testbed, run_path).apply()
    except (BuildError, ManifestError) as exc:
        raise InstrumentedError(f"building the instrumented containerd: {exc}") from None
    info = {"build": [{k: r.get(k) for k in ("component", "step", "status", "duration_s")} for r in rows]}
    (build_dir(testbed) / "last-build.json").write_text(json.dumps(info, indent=2, default=str) + "\n")
    return [{"component": r["component"], "step": r["step"], "status": r["status"],
             "duration_s": r.get("duration_s")} for r in rows]


def ensure_built(testbed: Testbed) -> Path:
    """The containerd binary, building it first if it is missing or its inputs changed."""
    if not binary(testbed).is_file() or any(r["state"] != "done" for r in _builder(testbed).plan()):
        build(testbed)
    return binary(testbed)


def provenance(testbed: Testbed) -> dict[str, Any]:
    """What run.json says about the containerd this testbed runs: version string and build provenance."""
    if not is_instrumented(testbed):
        exe = shutil.which(testbed.local.containerd_bin)
        version = sh.run([exe, "--version"], check=False, what="containerd --version").stdout.strip() if exe else None
        return {"flavour": "debian", "binary": exe, "version": version}
    from fastiov_lib.testbeds.fastiov_host.build.manifest import load_binaries_manifest, load_patch_series

    exe = binary(testbed)
    version = (sh.run([str(exe), "--version"], check=False, what="containerd --version").stdout.strip()
               if exe.is_file() else None)
    entry = load_binaries_manifest().get("containerd-src")
    series = load_patch_series()
    patches = [{"name": p.name, "sha256": p.sha256, "ours": p.file is not None}
               for p in series.for_component("containerd", "local")]
    src = sources_dir(testbed)
    return {"flavour": "instrumented", "binary": str(exe), "version": version,
            "source": {"repo": entry.git.repo, "ref": entry.git.ref, "commit": entry.git.commit,
                       "tree": entry.git.tree,
                       "from": f"offline archive in {src} (tree id verified)" if src else "upstream git"},
            "patches": patches, "toolchain": "Debian golang-1.19-go",
            "build_tags": "seccomp apparmor no_btrfs", "build_dir": str(build_dir(testbed)),
            "note": "0001-containerd.patch is FastIOV's; 0002 (tenant args, inert without them in the conflist) "
                    "and 0003 (a netns per pod) are the artifact's own, as on the real host"}


# ------------------------------------------------------------------ config and process

def config_v1(testbed: Testbed, paths: Any, handlers: list[str], pause_image: str, runc: str) -> str:
    """containerd 1.3 config.toml (version 1 format): own root/state/socket, one runc handler per
    network mode (all sharing the one CNI conf_dir 1.3 has), restrict_oom_score_adj, opt under the work dir."""
    runtime = {"runtime_type": "io.containerd.runc.v2",
               "options": {"BinaryName": runc, "Root": str(paths.runc_root)}}
    doc = {
        "root": str(paths.root),
        "state": str(paths.state),
        "oom_score": 0,
        "grpc": {"address": str(paths.socket)},
        "ttrpc": {"address": str(paths.socket) + ".ttrpc"},
        "debug": {"level": "info"},
        "metrics": {"address": ""},
        "plugins": {
            "opt": {"path": str(paths.containerd_dir / "opt")},  # else 1.3 creates /opt/containerd
            "cri": {
                "sandbox_image": pause_image,
                "restrict_oom_score_adj": True,  # lowering oom_score_adj is not permitted here
                "disable_tcp_service": True,
                "stream_server_address": "127.0.0.1",
                "stream_server_port": "0",
                "enable_selinux": False,
                "max_container_log_line_size": 16384,
                "containerd": {"snapshotter": "overlayfs", "default_runtime_name": testbed.runtime_handler,
                               "runtimes": {h: runtime for h in handlers}},
                "cni": {"bin_dir": str(paths.cni_bin), "conf_dir": str(active_conf_dir(testbed)),
                        "max_conf_num": 1},
            },
        },
    }
    header = ("# containerd 1.3 config (version 1) of the local testbed's instrumented containerd "
              "(generated by fastiov_lib.testbeds.local.instrumented)\n")
    return header + tomlkit.dumps(doc)


def binds(testbed: Testbed, paths: Any) -> list[tuple[Path, Path]]:
    """(work-dir folder, path inside containerd's mount namespace) pairs."""
    w = work_dir(testbed)
    return [(w / "home", Path("/home")), (w / "run-containerd", Path("/run/containerd")),
            (paths.netns_dir, Path("/run/netns")), (w / "var-lib-cni", Path("/var/lib/cni"))]


def launch_argv(testbed: Testbed, paths: Any) -> list[str]:
    """unshare + mountns helper + containerd: the argument list that starts it (no shell)."""
    for src, dst in binds(testbed, paths):
        src.mkdir(parents=True, exist_ok=True)
        if not dst.is_dir():  # the mount point itself; /run/netns is what `ip netns` creates anyway
            dst.mkdir(parents=True, exist_ok=True)
    records_dir(testbed).mkdir(parents=True, exist_ok=True)
    exe = binary(testbed)
    if not exe.is_file():
        raise InstrumentedError(f"{exe}: not built; run 01_build (or `fastiov-artifact testbed up`) first")
    argv = ["unshare", "--mount", "--propagation", "private", sys.executable, "-m",
            "fastiov_lib.testbeds.local.mountns"]
    for src, dst in binds(testbed, paths):
        argv += ["--bind", str(src), str(dst)]
    return argv + ["--", str(exe), "--config", str(paths.config)]


def activate_mode(testbed: Testbed, conflist: dict[str, Any] | None, mode: str, socket: Path) -> bool:
    """Put `mode`'s conflist into the one conf_dir and make CRI reload it; True if it changed."""
    from fastiov_lib.cri import CriClient

    active = active_conf_dir(testbed)
    active.mkdir(parents=True, exist_ok=True)
    marker = active.parent / ACTIVE_MODE_FILE
    if marker.is_file() and marker.read_text().strip() == mode:
        return False
    for old in active.glob("*.conflist"):
        old.unlink()
    if conflist is not None:
        (active / f"10-{conflist['name']}.conflist").write_text(json.dumps(conflist, indent=2) + "\n")
    marker.write_text(mode + "\n")
    if socket.exists():
        with CriClient(socket, api="v1alpha2", timeout_s=10.0) as cri:
            cri.status()  # containerd 1.3 reloads its CNI config on Status (it has no conf_dir watcher)
    return True


# ------------------------------------------------------------------ records

def collect_records(testbed: Testbed, logs_dir: Path, round_id: str) -> Path | None:
    """Copy the records written since the last call into logs/containerd_logs/cnicmp-<round>.log."""
    src = records_dir(testbed)
    state_file = work_dir(testbed) / "records-offsets.json"
    offsets = json.loads(state_file.read_text()) if state_file.is_file() else {}
    chunks: list[bytes] = []
    for f in sorted(src.glob("cnicmp-*.log")):
        start = offsets.get(f.name, 0)
        size = f.stat().st_size
        if size < start:  # rotated or recreated: read it again from the start
            start = 0
        if size > start:
            with open(f, "rb") as fh:
                fh.seek(start)
                data = fh.read(size - start)
            cut = data.rfind(b"\n") + 1  # a half-written last line waits for the next call
            chunks.append(data[:cut])
            offsets[f.name] = start + cut
    tmp = state_file.with_suffix(".tmp")
    tmp.write_text(json.dumps(offsets) + "\n")
    tmp.replace(state_file)
    data = b"".join(chunks)
    if not data:
        return None
    out = Path(logs_dir) / "containerd_logs" / f"cnicmp-{round_id}.log"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(data)
    return out
