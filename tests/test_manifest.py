"""Manifest loading and fetching: checksums (match, mismatch, unknown), resume, offline, errors."""
from __future__ import annotations

import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from fastiov_lib.testbeds.fastiov_host.build import manifest
from fastiov_lib.testbeds.fastiov_host.build.manifest import ChecksumMismatch, ManifestError


class _Files:
    def __init__(self):
        self.content: dict[str, bytes] = {}
        self.truncate_once: set[str] = set()
        self.ranges: list[str | None] = []


def _handler(files: _Files):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):  # keep test output quiet
            pass

        def do_GET(self):
            body = files.content.get(self.path)
            rng = self.headers.get("Range")
            files.ranges.append(rng)
            if body is None:
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            start = 0
            if rng:
                start = int(rng.split("=")[1].split("-")[0])
                if start >= len(body):
                    self.send_response(416)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
            else:
                self.send_response(200)
            part = body[start:]
            self.send_header("Content-Length", str(len(part)))
            self.send_header("Connection", "close")
            self.end_headers()
            if self.path in files.truncate_once and not rng:
                files.truncate_once.discard(self.path)
                self.wfile.write(part[: len(part) // 2])  # then drop the connection
                self.wfile.flush()
                self.close_connection = True
                return
            self.wfile.write(part)

    return Handler


@pytest.fixture
def server():
    files = _Files()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(files))
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield files, f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def _blob(n: int, seed: int = 1) -> bytes:
    out = bytearray()
    block = hashlib.sha256(str(seed).encode()).digest()
    while len(out) < n:
        block = hashlib.sha256(block).digest()
        out += block
    return bytes(out[:n])


def test_fetch_verifies_a_known_checksum(server, tmp_path):
    files, url = server
    data = _blob(300_000)
    files.content["/a.tar.gz"] = data
    res = manifest.fetch("a", f"{url}/a.tar.gz", tmp_path, sha256=hashlib.sha256(data).hexdigest(), size=len(data))
    assert res.status == "verified" and res.source == "download"
    assert res.path.read_bytes() == data
    again = manifest.fetch("a", f"{url}/a.tar.gz", tmp_path, sha256=hashlib.sha256(data).hexdigest())
    assert again.source == "cache"


def test_fetch_mismatch_names_file_expected_and_actual(server, tmp_path):
    files, url = server
    data = _blob(5000)
    files.content["/b.bin"] = data
    wrong = "0" * 64
    with pytest.raises(ChecksumMismatch) as err:
        manifest.fetch("b", f"{url}/b.bin", tmp_path, sha256=wrong)
    msg = str(err.value)
    assert "b.bin" in msg and wrong in msg and hashlib.sha256(data).hexdigest() in msg
    assert not (tmp_path / "b.bin").exists() and not (tmp_path / "b.bin.part").exists()


def test_unknown_checksum_is_pinned_on_first_use_and_enforced_after(server, tmp_path):
    files, url = server
    files.content["/c.patch"] = b"first version\n"
    res = manifest.fetch("c", f"{url}/c.patch", tmp_path)
    assert res.status == manifest.PINNED_ON_FIRST_USE
    lock = json.loads((tmp_path / manifest.LOCK_FILE).read_text())
    assert lock["c"]["sha256"] == hashlib.sha256(b"first version\n").hexdigest()
    assert lock["c"]["status"] == manifest.PINNED_ON_FIRST_USE
    assert manifest.checksum_status("c", None, tmp_path) == manifest.PINNED_ON_FIRST_USE
    # upstream changes the file: a fresh download must now fail against the pin
    (tmp_path / "c.patch").unlink()
    files.content["/c.patch"] = b"second version\n"
    with pytest.raises(ChecksumMismatch):
        manifest.fetch("c", f"{url}/c.patch", tmp_path)


def test_truncated_download_resumes_with_a_range_request(server, tmp_path):
    files, url = server
    data = _blob(200_000, seed=7)
    files.content["/big.tar.xz"] = data
    files.truncate_once.add("/big.tar.xz")
    with pytest.raises(ManifestError, match="rerun to resume"):
        manifest.fetch("big", f"{url}/big.tar.xz", tmp_path, sha256=hashlib.sha256(data).hexdigest(), retries=0)
    part = tmp_path / "big.tar.xz.part"
    kept = part.stat().st_size
    assert 0 < kept < len(data)
    res = manifest.fetch("big", f"{url}/big.tar.xz", tmp_path, sha256=hashlib.sha256(data).hexdigest())
    assert res.resumed_from == kept
    assert files.ranges[-1] == f"bytes={kept}-"
    assert res.path.read_bytes() == data and not part.exists()


def test_offline_mode_uses_only_the_cache(server, tmp_path):
    files, url = server
    files.content["/d.bin"] = b"d"
    with pytest.raises(ManifestError, match="offline"):
        manifest.fetch("d", f"{url}/d.bin", tmp_path, offline=True)
    assert files.ranges == []
    manifest.fetch("d", f"{url}/d.bin", tmp_path)
    res = manifest.fetch("d", f"{url}/d.bin", tmp_path, offline=True)
    assert res.source == "cache" and res.path.read_bytes() == b"d"


def test_size_mismatch_and_http_errors_are_reported(server, tmp_path):
    files, url = server
    files.content["/e.bin"] = b"12345"
    with pytest.raises(ManifestError, match="size 9"):
        manifest.fetch("e", f"{url}/e.bin", tmp_path, size=9)
    with pytest.raises(ManifestError, match="404"):
        manifest.fetch("f", f"{url}/missing.bin", tmp_path, retries=0)


def test_repository_manifests_load_and_pin_the_reference_patches():
    binaries = manifest.load_binaries_manifest()
    series = manifest.load_patch_series()
    assert series.get("0001-qemu.patch").sha256 == "659a6f535d8eac63684f87de05660b92b2f8209f24bc50821948b7cbdc61cd2d"
    assert series.get("0001-linux.patch").sha256 is None
    assert all(p.url.count(series.artifact_commit) == 1 for p in series.patches if p.url)
    assert all(p.own_path().is_file() and p.sha256 == manifest.sha256_file(p.own_path()) for p in series.patches if p.file)
    assert binaries.get("fastiov-src").git.commit == series.artifact_commit
    assert all("codeload" not in (e.url or "") for e in binaries.entries)


def test_invalid_manifest_error_names_file_and_entry_key(tmp_path):
    bad = tmp_path / "binaries_manifest.yaml"
    bad.write_text("version: 1\nentries:\n  - name: qemu-src\n    role: r\n    version: '6.2'\n"
                   "    url: https://example.org/q.tar.xz\n    sha256: not-a-checksum\n")
    with pytest.raises(ManifestError) as err:
        manifest.load_binaries_manifest(bad)
    assert str(bad) in str(err.value) and "entries[qemu-src].sha256" in str(err.value)
    bad.write_text("version: 1\nentries:\n  - name: x\n    role: r\n    version: '1'\n    colour: red\n"
                   "    provided_by: authors\n")
    with pytest.raises(ManifestError, match=r"entries\[x\]\.colour.*unknown key"):
        manifest.load_binaries_manifest(bad)
    bad.write_text("version: 1\nentries: [\n")
    with pytest.raises(ManifestError, match="line"):
        manifest.load_binaries_manifest(bad)


def test_entry_needs_exactly_one_origin(tmp_path):
    bad = tmp_path / "m.yaml"
    bad.write_text("version: 1\nentries:\n  - name: y\n    role: r\n    version: '1'\n")
    with pytest.raises(ManifestError, match="exactly one of"):
        manifest.load_binaries_manifest(bad)
