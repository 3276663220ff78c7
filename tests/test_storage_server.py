"""The app test's storage server: serves its data directory, refuses every way out of it."""
from __future__ import annotations

import http.client
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from fastiov_lib.bench.storage_server import (
    RefusedPath, StorageServer, fnv1a64, make_input_file, resolve_request_path,
)

IMAGES = Path(__file__).resolve().parent.parent / "fastiov_lib" / "testbeds" / "local" / "images"


@pytest.fixture()
def served(tmp_path):
    data = tmp_path / "data"
    (data / "sub").mkdir(parents=True)
    (data / "hello.txt").write_bytes(b"hello")
    (data / "sub" / "nested.txt").write_bytes(b"nested")
    (tmp_path / "secret.txt").write_bytes(b"TOP-SECRET-CONTENT")
    os.symlink(tmp_path / "secret.txt", data / "escape")
    os.symlink(tmp_path, data / "escape-dir")
    os.symlink(data / "hello.txt", data / "inside-link")
    with StorageServer(data, "127.0.0.1", 0) as server:
        yield server, data


def _get(server: StorageServer, raw_path: str) -> tuple[int, bytes]:
    host, port = server.address
    conn = http.client.HTTPConnection(host, port, timeout=5)
    conn.putrequest("GET", raw_path, skip_accept_encoding=True)  # sent as is, no normalisation
    conn.endheaders()
    resp = conn.getresponse()
    body = resp.read()
    conn.close()
    return resp.status, body


def test_storage_server_serves_files_of_its_data_dir(served):
    server, _ = served
    assert _get(server, "/download/hello.txt") == (200, b"hello")
    assert _get(server, "/download/sub/nested.txt") == (200, b"nested")
    assert _get(server, "/download/inside-link") == (200, b"hello")
    assert _get(server, "/download/missing.txt")[0] == 404
    assert _get(server, "/elsewhere/hello.txt")[0] == 404


@pytest.mark.parametrize("path", [
    "/download/../secret.txt",
    "/download/sub/../../secret.txt",
    "/download//etc/passwd",
    "/download/%2e%2e/secret.txt",
    "/download/%2E%2E%2Fsecret.txt",
    "/download/sub%2f..%2f..%2fsecret.txt",
    "/download/%252e%252e%252fsecret.txt",
    "/download/%2Fetc%2Fpasswd",
    "/download/..%5csecret.txt",
    "/download/hello.txt%00.png",
    "/download/escape",
    "/download/escape-dir/secret.txt",
])
def test_storage_server_refuses_traversal(served, path):
    server, _ = served
    status, body = _get(server, path)
    assert status == 403, (path, status, body)
    assert b"TOP-SECRET-CONTENT" not in body and b"root:" not in body


def test_resolve_request_path_names_the_reason(tmp_path):
    (tmp_path / "a").write_text("x")
    assert resolve_request_path(tmp_path, "/download/a") == (tmp_path / "a").resolve()
    with pytest.raises(RefusedPath, match="absolute"):
        resolve_request_path(tmp_path, "/download/%2Fetc%2Fpasswd")
    with pytest.raises(RefusedPath, match=r"'\.\.'"):
        resolve_request_path(tmp_path, "/download/x/../a")


def test_storage_server_refuses_to_bind_every_address(tmp_path):
    with pytest.raises(ValueError, match="one address"):
        StorageServer(tmp_path, "0.0.0.0", 0)
    with pytest.raises(FileNotFoundError):
        StorageServer(tmp_path / "nope", "127.0.0.1", 0)


def test_fnv1a64_matches_the_reference_vectors():
    assert fnv1a64(b"") == "cbf29ce484222325"
    assert fnv1a64(b"a") == "af63dc4c8601ec8c"
    assert fnv1a64(b"foobar") == "85944171f73967e8"


@pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc")
def test_workload_program_downloads_and_hashes_like_python(tmp_path):
    binary = tmp_path / "workload"
    subprocess.run(["gcc", "-O2", "-D_GNU_SOURCE", "-o", str(binary), str(IMAGES / "workload.c")], check=True)
    data = tmp_path / "data"
    # 1 MiB: large enough for several reads and a header/body split inside one read
    info = make_input_file(data, 1, with_fnv=True)
    with StorageServer(data, "127.0.0.1", 0) as server:
        host, port = server.address
        ok = subprocess.run([str(binary), host, str(port), f"/download/{info.name}"], capture_output=True,
                            text=True, timeout=30)
        missing = subprocess.run([str(binary), host, str(port), "/download/nope"], capture_output=True,
                                 text=True, timeout=30)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.strip().startswith(f"bytes={info.size_bytes} fnv1a64={info.fnv1a64} http=200 function=download-hash ")
    assert missing.returncode == 4 and "http=404" in missing.stdout
