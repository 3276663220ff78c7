"""The app test's five stand-in serverless functions: the workload binary, for real, on inputs fetched
from the storage server (issue 18 item 10)."""
from __future__ import annotations

import shutil
import socket
import subprocess
from pathlib import Path

import pytest

from fastiov_lib.bench.app_functions import KINDS, STANDINS, UnknownFunction, check_functions, make_function_input
from fastiov_lib.bench.rounds import _parse_workload_output
from fastiov_lib.bench.storage_server import StorageServer
from fastiov_lib.config import ConfigError, load_profile
from fastiov_lib.testbeds.local.paths import IMAGES_SRC

needs_gcc = pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc (and libc6-dev for -static)")


@pytest.fixture(scope="module")
def workload(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wl") / "workload"
    subprocess.run(["gcc", "-static", "-O2", "-D_GNU_SOURCE", "-Wall", "-Werror", "-o", str(out),
                    str(IMAGES_SRC / "workload.c")], check=True)
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(workload: Path, port: int, name: str, function: str) -> tuple[int, dict, str]:
    res = subprocess.run([str(workload), "127.0.0.1", str(port), f"/download/{name}", function],
                         capture_output=True, text=True, timeout=120)
    return res.returncode, _parse_workload_output(res.stdout.strip()), res.stdout + res.stderr


def test_five_stand_ins_one_per_kind_of_the_papers_functions():
    assert sorted(KINDS[f] for f in STANDINS) == ["compression", "image", "inference", "scientific graph", "video"]
    assert all(f.startswith("standin-") for f in STANDINS)  # never passed off as the paper's own image
    with pytest.raises(UnknownFunction, match="'resnet'"):
        check_functions(["standin-image", "resnet"])
    assert load_profile("paper").app_functions == list(STANDINS)


@needs_gcc
def test_every_function_downloads_its_input_and_computes_a_reproducible_result(workload, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    port = _free_port()
    results = {}
    with StorageServer(data, "127.0.0.1", port):
        for fn in STANDINS:
            inp = make_function_input(data, fn, 2)
            rc, first, out = _run(workload, port, inp.name, fn)
            assert rc == 0, out
            assert first["bytes"] == inp.size_bytes and first["http_status"] == 200
            assert first["compute_ms"] > 0 and len(first["function_result"]) == 16
            rc, second, out = _run(workload, port, inp.name, fn)
            assert rc == 0 and second["function_result"] == first["function_result"], out
            results[fn] = first["function_result"]
        assert len(set(results.values())) == len(STANDINS)  # each computes something of its own
        # another input, another result: the functions read what they download
        other = make_function_input(data, "standin-graph", 2, seed=7)
        assert _run(workload, port, other.name, "standin-graph")[1]["function_result"] != results["standin-graph"]
        # a function on an input of another kind refuses it (exit 6) after a complete download
        rc, parsed, out = _run(workload, port, make_function_input(data, "standin-image", 2).name, "standin-video")
        assert rc == 6 and "malformed input" in out and parsed["bytes"] > 0
        rc, _, out = _run(workload, port, "nothing-here.bin", "standin-graph")
        assert rc == 4  # HTTP 404


def test_inputs_are_deterministic_and_reused(tmp_path):
    a = make_function_input(tmp_path / "a", "standin-inference", 1)
    b = make_function_input(tmp_path / "b", "standin-inference", 1)
    assert a.sha256 == b.sha256 and abs(a.size_bytes - 1024 * 1024) < 2048
    again = make_function_input(tmp_path / "a", "standin-inference", 1)
    assert again.path == a.path and again.sha256 == a.sha256


def test_a_profile_naming_an_unknown_function_is_refused_naming_the_key(tmp_path):
    bad = tmp_path / "p.yaml"
    bad.write_text("name: p\nconcurrency: [1]\napp_functions: [standin-image, resnet]\n")
    with pytest.raises(ConfigError, match=r"p\.yaml: key 'app_functions\.1'"):
        load_profile(bad)
