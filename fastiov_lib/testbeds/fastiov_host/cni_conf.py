"""The CNI configuration directory of a FastIOV host: which network containerd 1.3 gives the pods.

containerd 1.3's CRI loads only the first network configuration file (`.conf`, `.conflist`,
`.json`) of its conf_dir in name order (`max_conf_num = 1`) and reloads the directory only at
start, on the `Status` RPC and on `UpdateRuntimeConfig`. cri-containerd-cni's tarball installs
`10-containerd-net.conflist`, which sorts before the artifact's `10-fastiov-artifact.conflist`:
with it in place fastiov-cni never runs. As the original did, such files are moved aside into
`<conf_dir>/oldconfs/` (a backup copy first; every move listed in
`oldconfs/moved-by-fastiov-artifact.json`, so `restore_moved` puts back exactly those files), and
`verify_loaded` asks containerd over CRI which configuration it has loaded.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from fastiov_lib.config import FastiovHostSettings
from fastiov_lib.hw.host_steps import Action, Step

CNI_EXTENSIONS = (".conf", ".conflist", ".json")  # what go-cni's loadFromConfDir reads
OLDCONFS = "oldconfs"  # where the original moved cri-containerd-cni's conflist
MOVED_RECORD = "moved-by-fastiov-artifact.json"
LOOPBACK_NETWORK = "cni-loopback"  # containerd adds it before the default network


class CniConfError(RuntimeError):
    """The CNI conf dir cannot be put in order, or containerd loaded another network; names the file."""


def _under(root: Path, path: Path | str) -> Path:
    return Path(root) / str(path).lstrip("/")


def conf_files(conf_dir: Path) -> list[Path]:
    """The network configuration files of `conf_dir` in the order containerd 1.3 reads them."""
    if not Path(conf_dir).is_dir():
        return []
    return sorted((p for p in Path(conf_dir).iterdir() if p.suffix in CNI_EXTENSIONS and p.is_file()),
                  key=lambda p: p.name.encode())  # Go's sort.Strings: byte order


def loaded_first(conf_dir: Path) -> Path | None:
    """The file containerd 1.3 loads as the pods' network (None: the directory has none)."""
    files = conf_files(conf_dir)
    return files[0] if files else None


def shadowing(conf_dir: Path, ours: str) -> list[Path]:
    """Files that sort before `ours` and so would be loaded instead of it."""
    return [p for p in conf_files(conf_dir) if p.name.encode() < ours.encode()]


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _record_path(conf_dir: Path) -> Path:
    return Path(conf_dir) / OLDCONFS / MOVED_RECORD


def moved_files(conf_dir: Path) -> list[dict[str, Any]]:
    """What this artifact moved into oldconfs/ (oldest first); [] when it moved nothing."""
    path = _record_path(conf_dir)
    if not path.is_file():
        return []
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise CniConfError(f"{path}: not readable JSON ({exc}); move the files back by hand") from None
    return list(data.get("moved", []))


def _write_record(conf_dir: Path, moved: list[dict[str, Any]]) -> None:
    path = _record_path(conf_dir)
    if not moved:
        path.unlink(missing_ok=True)
        return
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"moved": moved}, indent=2) + "\n")
    os.replace(tmp, path)


def move_aside(path: Path) -> Path:
    """Move one conf file into <its dir>/oldconfs/ and record it; returns where it went."""
    path = Path(path)
    dest_dir = path.parent / OLDCONFS
    dest = dest_dir / path.name
    if dest.exists():
        if dest.is_file() and _sha256(dest) == _sha256(path):
            path.unlink()  # the same file was moved before and has come back (e.g. a re-unpack)
            return dest
        raise CniConfError(f"{path}: cannot move it aside, {dest} exists with other content")
    dest_dir.mkdir(parents=True, exist_ok=True)
    entry = {"name": path.name, "from": str(path), "to": str(dest), "sha256": _sha256(path),
             "time": _dt.datetime.now(_dt.timezone.utc).isoformat()}
    os.replace(path, dest)
    _write_record(path.parent, [*moved_files(path.parent), entry])
    return dest


def move_aside_step(s: FastiovHostSettings, root: Path, ours: str) -> Step:
    """The shadowing conf files of a host's CNI conf dir, moved aside (one action each)."""
    conf_dir = _under(root, s.cni_conf_dir)
    actions = [Action("move", str(p), str(conf_dir / OLDCONFS / p.name),
                      f"sorts before {ours}: containerd 1.3 loads only the first network config "
                      "(the original moved it to oldconfs/ too; `variant restore-cni` puts it back)",
                      perform=lambda p=p: move_aside(p), is_done=lambda p=p: not p.exists(), backup=p)
               for p in shadowing(conf_dir, ours)]
    return Step("CNI conf dir", actions)


def restore_moved(s: FastiovHostSettings, root: Path) -> list[str]:
    """Move the files this artifact moved into oldconfs/ back; returns what was restored.

    A file is put back only if its place is free and it is still the file that was moved
    (same sha256); anything else stays recorded and is named in the error."""
    conf_dir = _under(root, s.cni_conf_dir)
    restored, kept, problems = [], [], []
    for entry in moved_files(conf_dir):
        src, dest = Path(entry["to"]), Path(entry["from"])
        if not src.is_file():
            problems.append(f"{src} is gone")
            continue
        if dest.exists():
            kept.append(entry)
            problems.append(f"{dest} exists again")
            continue
        if _sha256(src) != entry.get("sha256"):
            kept.append(entry)
            problems.append(f"{src} changed since it was moved")
            continue
        os.replace(src, dest)
        restored.append(str(dest))
    _write_record(conf_dir, kept)
    if problems:
        raise CniConfError(f"{_record_path(conf_dir)}: restored {len(restored)}, not restored: "
                           + "; ".join(problems))
    return restored


def loaded_networks(status_info: dict[str, str]) -> list[dict[str, Any]]:
    """The networks in a verbose CRI Status answer's `cniconfig` (containerd), loopback left out."""
    raw = status_info.get("cniconfig")
    if not raw:
        raise CniConfError("the runtime's Status answer has no 'cniconfig' (not containerd's CRI?)")
    try:
        data = json.loads(raw)
    except ValueError:
        raise CniConfError(f"the runtime's cniconfig is not JSON: {raw[:120]!r}") from None
    out = []
    for net in data.get("Networks") or []:
        conf = (net or {}).get("Config") or {}
        if conf.get("Name") != LOOPBACK_NETWORK:
            out.append({"name": conf.get("Name"), "ifname": net.get("IFName"), "source": conf.get("Source", "")})
    return out


def check_loaded(status_info: dict[str, str], expected_text: str, conf_dir: Path) -> str:
    """The name of the network containerd loaded; CniConfError unless it is `expected_text`'s."""
    want = json.loads(expected_text)
    nets = loaded_networks(status_info)
    if not nets:
        first = loaded_first(conf_dir)
        raise CniConfError(f"containerd has loaded no network config from {conf_dir} "
                           f"(first file there: {first.name if first else 'none'})")
    try:
        got = json.loads(nets[0]["source"])
    except ValueError:
        got = None
    if got != want:
        first = loaded_first(conf_dir)
        raise CniConfError(f"containerd's active network is {nets[0]['name']!r}, not {want.get('name')!r} "
                           f"of the variant (first file in {conf_dir}: {first.name if first else 'none'}); "
                           "a file sorting first shadows it, or containerd did not reload")
    return str(nets[0]["name"])


def reload_and_verify(socket: Path, cri_api: str, expected_text: str, conf_dir: Path,
                      timeout_s: float = 30.0) -> str:
    """Make containerd reload its CNI config (CRI Status) and check it loaded `expected_text`."""
    from fastiov_lib.cri import CriClient, CriError

    if not Path(socket).exists():
        raise CniConfError(f"{socket}: no containerd socket; cannot make it reload its CNI config and check "
                           "which network it loaded")
    with CriClient(socket, api=cri_api, timeout_s=timeout_s) as cri:  # type: ignore[arg-type]
        try:
            info = cri.status_info()
        except CriError as exc:
            raise CniConfError(f"{socket}: CRI Status failed ({exc}); cannot check which network config "
                               "containerd loaded") from None
    return check_loaded(info, expected_text, conf_dir)
