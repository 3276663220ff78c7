"""The pods' images on a real host: the pause (sandbox) image and the workload image with the app
test's functions, built from the same C sources as the local testbed's (gcc -static, one-layer OCI
tarballs) and imported into the host's containerd. No registry is involved: an offline host starts
its first round without a pull, and the sandbox image is ours, named in containerd's config.
"""
from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Any

from fastiov_lib.testbeds.fastiov_host.build.components import BuildError, Component, StepRunner, call

POD_IMAGES = {"pause": "fastiov.local/fiov-pause:1", "workload": "fastiov.local/fiov-workload:1"}


def _sources() -> dict[str, Path]:
    from fastiov_lib.testbeds.local.paths import IMAGE_PROGRAMS, IMAGES_SRC  # the local testbed's C sources

    return {name: IMAGES_SRC / IMAGE_PROGRAMS[name] for name in POD_IMAGES}


def images_dir(builder: "StepRunner", comp: Component) -> Path:
    return Path(builder.variables(comp)["build"]) / "images"


def build_images(builder: "StepRunner", comp: Component, log: Any) -> str:
    """gcc -static each program and write its OCI tarball into the component's build folder."""
    from fastiov_lib.testbeds.local.oci_image import write_oci_image

    out = images_dir(builder, comp)
    out.mkdir(parents=True, exist_ok=True)
    done = []
    for name, src in _sources().items():
        binary = out / name
        builder.run_argv(comp, "build", ["gcc", "-static", "-O2", "-D_GNU_SOURCE", "-Wall", "-o", str(binary),
                                         str(src)], out, log)
        digest = write_oci_image(binary, name, POD_IMAGES[name], out / f"{name}.tar")
        done.append(f"{POD_IMAGES[name]} ({digest[:19]})")
    return "built " + ", ".join(done)


def import_images(builder: "StepRunner", comp: Component, log: Any) -> str:
    """`ctr images import` into the host's containerd (k8s.io namespace), then check CRI lists them."""
    from fastiov_lib.cri import CriClient, CriError

    s = builder.ctx.settings
    socket = Path(builder.ctx.root) / str(s.containerd_socket).lstrip("/")
    # the containerd that runs the pods: the built 1.3 with the artifact's config (runtime-configs wrote it)
    builder.run_argv(comp, "install", list(s.containerd_restart), None, log)
    deadline = time.monotonic() + 60
    while not socket.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    if not socket.exists():
        raise BuildError(f"{comp.name} install: no containerd at {s.containerd_socket}; start it (systemctl "
                         f"restart containerd) and run `build apply --component {comp.name}` again")
    ctr = Path(builder.ctx.root) / "usr/local/bin/ctr"  # containerd 1.3's own client
    for name in POD_IMAGES:
        builder.run_argv(comp, "install", [str(ctr) if ctr.exists() else "ctr", "--address", str(socket),
                                           "-n", "k8s.io", "images", "import", str(images_dir(builder, comp) /
                                                                                   f"{name}.tar")], None, log)
    api = builder.testbed.cri_api if builder.testbed.cri_api != "auto" else "v1alpha2"
    try:
        with CriClient(socket, api=api, timeout_s=30) as cri:  # type: ignore[arg-type]
            missing = [ref for ref in POD_IMAGES.values() if not cri.image_present(ref)]
    except CriError as exc:
        raise BuildError(f"{comp.name} install: imported, but CRI at {socket} does not answer ({exc})") from None
    if missing:
        raise BuildError(f"{comp.name} install: imported, but CRI does not list {', '.join(missing)}")
    return "imported " + ", ".join(POD_IMAGES.values())


def sources_key(ctx: Any, step: str) -> str:
    """The C sources are the images' inputs: a changed source rebuilds and re-imports."""
    return ",".join(hashlib.sha256(p.read_bytes()).hexdigest()[:16] for p in _sources().values())


def pod_images_component() -> Component:
    """Build the pause and workload images from C and import them into the host's containerd."""
    return Component(
        "pod-images", "pause and workload images (the app test's functions) from C, imported into containerd",
        None, build=(call(build_images, "gcc -static pause.c, workload.c; one-layer OCI tarballs"),),
        install=(call(import_images, "restart containerd (fastiov.containerd_restart); ctr -n k8s.io images import "
                                     "pause.tar workload.tar; check CRI lists them"),),
        stamp_facts=sources_key,
        notes="restarts containerd with the artifact's config first; an offline host needs no registry")

