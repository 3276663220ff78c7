"""The app test's serverless functions: stand-ins of our own for the paper's unavailable app image.

The paper runs five functions (image, video, compression, inference, scientific graph) from an image
(`fastiov-benchmark/...`, in `benchmark_apps.tar`) that is not available. The workload image built
here (testbeds/local/images/workload.c, gcc -static) holds one stand-in per kind, named
`standin-<kind>` so no figure passes them off as the paper's; each downloads its input from the
storage server and computes on it (see the C file for what each does). This module writes the
inputs: deterministic (seeded) files of about `size_mb` MiB in the little-endian formats the C code
reads. `download-hash` is the plain download the app test ran before (any bytes).
"""
from __future__ import annotations

import hashlib
import os
import struct
from pathlib import Path
from typing import get_args

import numpy as np

from fastiov_lib.config import AppFunction
from fastiov_lib.bench.storage_server import InputFile, make_input_file

FUNCTIONS: tuple[str, ...] = get_args(AppFunction)  # what the workload image's C program knows
STANDINS = tuple(f for f in FUNCTIONS if f.startswith("standin-"))
KINDS = {"standin-image": "image", "standin-video": "video", "standin-compress": "compression",
         "standin-inference": "inference", "standin-graph": "scientific graph", "download-hash": "download"}
MIB = 1024 * 1024
_WORDS = ("the", "pod", "starts", "vf", "kata", "qemu", "guest", "memory", "network", "container", "fast",
          "startup", "device", "lock", "map", "dma", "driver", "host", "kernel", "tenant", "cni", "queue")


class UnknownFunction(ValueError):
    """A function name the workload image does not have."""


def check_functions(names: list[str] | tuple[str, ...]) -> None:
    """UnknownFunction naming the first name that is not one of FUNCTIONS."""
    for name in names:
        if name not in FUNCTIONS:
            raise UnknownFunction(f"app function {name!r}: not in the workload image (known: {', '.join(FUNCTIONS)})")


def _image(rng: np.random.Generator, size: int) -> bytes:
    side = max(16, int((size // 3) ** 0.5))
    y, x = np.mgrid[0:side, 0:side]
    base = np.stack([(x * 255 // side), (y * 255 // side), ((x + y) * 127 // side)], axis=-1)
    for _ in range(24):  # rectangles: edges for the Sobel filter to find
        x0, y0 = rng.integers(0, side, 2)
        w, h = rng.integers(side // 20 + 1, side // 4 + 2, 2)
        base[y0:y0 + h, x0:x0 + w] = rng.integers(0, 256, 3)
    pixels = np.clip(base + rng.integers(-12, 13, base.shape), 0, 255).astype(np.uint8)
    return b"FIOVIMG1" + struct.pack("<II", side, side) + pixels.tobytes()


def _video(rng: np.random.Generator, size: int) -> bytes:
    w, h = 320, 240
    frames = max(2, (size - 20) // (w * h))
    texture = rng.integers(0, 256, (h + 64, w + 64), dtype=np.uint8)
    out = []
    dx = dy = 0
    for t in range(frames):
        if t % 30 == 0:  # a scene cut: a new texture
            texture = rng.integers(0, 256, (h + 64, w + 64), dtype=np.uint8)
            dx = dy = 0
        dx, dy = (dx + 1) % 32, (dy + (t % 2)) % 32  # the camera pans: motion for the search to find
        frame = texture[dy:dy + h, dx:dx + w]
        out.append(frame.tobytes())
    return b"FIOVVID1" + struct.pack("<III", w, h, frames) + b"".join(out)


def _compress(rng: np.random.Generator, size: int) -> bytes:
    zipf = np.minimum(rng.zipf(1.6, size // 4), len(_WORDS)) - 1  # text-like: frequent words repeat
    numbers = rng.integers(0, 10000, len(zipf))
    parts = [f"{_WORDS[w]} {n} " if n % 7 == 0 else f"{_WORDS[w]} " for w, n in zip(zipf, numbers)]
    data = "".join(parts).encode()
    while len(data) < size:
        data += data[: size - len(data)]
    return data[:size]


def _inference(rng: np.random.Generator, size: int) -> bytes:
    n_in, n_hidden, n_out = 256, 256, 10
    params = n_hidden * n_in + n_hidden + n_out * n_hidden + n_out
    samples = max(1, (size - 24) // 4 // n_in - params // n_in)
    w1 = rng.normal(0, 1 / 16, n_hidden * n_in)
    b1 = rng.normal(0, 0.1, n_hidden)
    w2 = rng.normal(0, 1 / 16, n_out * n_hidden)
    b2 = rng.normal(0, 0.1, n_out)
    x = rng.normal(0, 1, samples * n_in)
    body = np.concatenate([w1, b1, w2, b2, x]).astype("<f4").tobytes()
    return b"FIOVMLP1" + struct.pack("<IIII", n_in, n_hidden, n_out, samples) + body


def _graph(rng: np.random.Generator, size: int) -> bytes:
    n_edges = max(1, (size - 16) // 8)
    n_vertices = max(2, n_edges // 8)
    src = rng.integers(0, n_vertices, n_edges)
    # mostly local edges plus a few long ones: a graph with some depth for the search
    dst = np.where(rng.random(n_edges) < 0.9, (src + rng.integers(1, 64, n_edges)) % n_vertices,
                   rng.integers(0, n_vertices, n_edges))
    edges = np.stack([src, dst], axis=1).astype("<u4").tobytes()
    return b"FIOVGRF1" + struct.pack("<II", n_vertices, n_edges) + edges


_MAKERS = {"standin-image": _image, "standin-video": _video, "standin-compress": _compress,
           "standin-inference": _inference, "standin-graph": _graph}


def make_function_input(data_dir: Path, function: str, size_mb: int, seed: int = 2025) -> InputFile:
    """The input file of `function` (about `size_mb` MiB) in `data_dir`, written once and reused."""
    check_functions([function])
    if function == "download-hash":
        return make_input_file(data_dir, size_mb, seed)
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / f"{function}-{size_mb}mb-s{seed}.bin"
    if not path.is_file():
        data = _MAKERS[function](np.random.default_rng(seed), size_mb * MIB)
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)
    data = path.read_bytes()
    return InputFile(path.name, path, len(data), "", hashlib.sha256(data).hexdigest())
