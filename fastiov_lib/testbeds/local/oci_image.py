"""One-layer OCI image tarballs from a static binary (there is no registry: images are built here)."""
from __future__ import annotations

import hashlib
import io
import json
import os
import platform
import tarfile
from pathlib import Path


def _arch() -> str:
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())


def _blob(data: bytes) -> tuple[str, bytes]:
    return "sha256:" + hashlib.sha256(data).hexdigest(), data


def _tar_add(tar: tarfile.TarFile, name: str, data: bytes | None, mode: int) -> None:
    info = tarfile.TarInfo(name)
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.mode = mode
    if data is None:
        info.type = tarfile.DIRTYPE
        tar.addfile(info)
    else:
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))


def write_oci_image(binary: Path, entrypoint: str, ref: str, out: Path) -> str:
    """Write a one-layer OCI image (layout tarball) holding `binary` at `/<entrypoint>`; returns the manifest digest.

    Fixed mtimes and owners make the layer reproducible: the same binary gives the same digests.
    """
    layer_buf = io.BytesIO()
    with tarfile.open(fileobj=layer_buf, mode="w", format=tarfile.PAX_FORMAT) as layer:
        for d in ("dev", "etc", "proc", "sys", "tmp"):
            _tar_add(layer, d, None, 0o755)
        _tar_add(layer, entrypoint, binary.read_bytes(), 0o755)
    layer_digest, layer_bytes = _blob(layer_buf.getvalue())
    config = {
        "architecture": _arch(), "os": "linux", "created": "1970-01-01T00:00:00Z",
        "config": {"Entrypoint": [f"/{entrypoint}"], "Env": ["PATH=/"], "WorkingDir": "/"},
        "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
        "history": [{"created": "1970-01-01T00:00:00Z", "created_by": f"fastiov_lib: gcc -static {entrypoint}.c"}],
    }
    config_digest, config_bytes = _blob(json.dumps(config, sort_keys=True).encode())
    manifest = {
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest,
                   "size": len(config_bytes)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer_digest,
                    "size": len(layer_bytes)}],
    }
    manifest_digest, manifest_bytes = _blob(json.dumps(manifest, sort_keys=True).encode())
    index = {"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": manifest_digest,
        "size": len(manifest_bytes),
        "annotations": {"io.containerd.image.name": ref, "org.opencontainers.image.ref.name": ref.rsplit(":", 1)[1]},
        "platform": {"architecture": _arch(), "os": "linux"},
    }]}
    tmp = out.with_suffix(".tmp")
    with tarfile.open(tmp, mode="w", format=tarfile.PAX_FORMAT) as tar:
        _tar_add(tar, "oci-layout", json.dumps({"imageLayoutVersion": "1.0.0"}).encode(), 0o644)
        _tar_add(tar, "index.json", json.dumps(index, sort_keys=True).encode(), 0o644)
        _tar_add(tar, "blobs", None, 0o755)
        _tar_add(tar, "blobs/sha256", None, 0o755)
        for digest, data in ((layer_digest, layer_bytes), (config_digest, config_bytes),
                             (manifest_digest, manifest_bytes)):
            _tar_add(tar, f"blobs/sha256/{digest.split(':', 1)[1]}", data, 0o644)
    os.replace(tmp, out)
    return manifest_digest
