"""The local testbed's images: pause and workload built from C with gcc -static, imported as OCI tarballs."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any


from fastiov_lib import sh
from fastiov_lib.config import Testbed
from fastiov_lib.testbeds.local import workdir
from fastiov_lib.testbeds.local.oci_image import write_oci_image
from fastiov_lib.testbeds.local.containerd import prepare_work_dir, containerd_pid, start_containerd
from fastiov_lib.testbeds.local.network import probe_network_modes
from fastiov_lib.testbeds.local.paths import (IMAGES_SRC, IMAGE_PROGRAMS, ImageInfo, LocalTestbedError, image_ref,
                                              local_settings, paths_for)


def _build_one(testbed: Testbed, name: str) -> tuple[Path, Path, str]:
    """Compile one program (if its source changed) and write its OCI tarball; returns (source, tarball, digest)."""
    p = paths_for(testbed)
    p.images_dir.mkdir(parents=True, exist_ok=True)
    src = IMAGES_SRC / IMAGE_PROGRAMS[name]
    src_sha = hashlib.sha256(src.read_bytes()).hexdigest()
    tarball = p.images_dir / f"{name}.tar"
    stamp = p.images_dir / f"{name}.json"
    ref = image_ref(testbed, name)
    if tarball.exists() and stamp.exists():
        info = json.loads(stamp.read_text())
        if info.get("source_sha256") == src_sha and info.get("ref") == ref:
            return src, tarball, info["manifest_digest"]
    binary = p.images_dir / name
    proc = sh.run(["gcc", "-static", "-O2", "-D_GNU_SOURCE", "-Wall", "-o", str(binary), str(src)], check=False,
                timeout=120, error=LocalTestbedError)
    if proc.returncode != 0:
        raise LocalTestbedError(f"gcc -static {src} failed (is libc6-dev installed?):\n{proc.stderr.strip()}")
    digest = write_oci_image(binary, name, ref, tarball)
    stamp.write_text(json.dumps({"source_sha256": src_sha, "ref": ref, "manifest_digest": digest}) + "\n")
    return src, tarball, digest


def build_images(testbed: Testbed, import_images: bool = True) -> list[ImageInfo]:
    """Build the pause and workload images from C (gcc -static) as OCI tarballs (01_build on `local`).

    With `import_images`, the local containerd is started if needed and the images are imported
    (`ctr images import`) unless it already has them. Rebuilds only when a C source changed.
    """
    loc = local_settings(testbed)
    p = paths_for(testbed)
    workdir.claim(p.work_dir, testbed.name)  # the images live in the work dir: it must be the testbed's own
    built = {name: _build_one(testbed, name) for name in IMAGE_PROGRAMS}
    present: dict[str, bool] = {name: False for name in IMAGE_PROGRAMS}
    if import_images:
        if containerd_pid(testbed) is None:
            prepare_work_dir(testbed, probe_network_modes(testbed))
            start_containerd(testbed)
        from fastiov_lib.cri import CriClient

        with CriClient(p.socket, api="auto", timeout_s=loc.rpc_timeout_s) as cri:
            for name, (_src, tarball, digest) in built.items():
                ref = image_ref(testbed, name)
                if not _image_matches(cri, ref, digest):
                    sh.run([loc.ctr_bin, "-a", str(p.socket), "-n", "k8s.io", "images", "import",
                          "--snapshotter", "overlayfs", str(tarball)], timeout=300, error=LocalTestbedError)
                present[name] = cri.image_present(ref)
                if not present[name]:
                    raise LocalTestbedError(f"imported {tarball} but containerd does not list {ref}")
    return [ImageInfo(name, image_ref(testbed, name), src, tarball, digest, tarball.stat().st_size, present[name])
            for name, (src, tarball, digest) in built.items()]


def _image_matches(cri: Any, ref: str, digest: str) -> bool:
    """containerd has `ref` and it is the manifest we built (a changed source means a re-import)."""
    digests = cri.image_digests(ref)
    return digests is not None and (not digests or any(d.endswith(digest) for d in digests))
