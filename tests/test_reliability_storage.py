"""The storage server: request timeouts, bounded connections, no path echo, no tracebacks (item 10)."""
from __future__ import annotations

import http.client
import socket
import time

import pytest

from fastiov_lib.bench import storage_server
from fastiov_lib.bench.storage_server import StorageServer


@pytest.fixture()
def server(tmp_path, monkeypatch):
    monkeypatch.setattr(storage_server._Handler, "timeout", 0.5)
    (tmp_path / "big.bin").write_bytes(b"x" * (8 << 20))
    with StorageServer(tmp_path, "127.0.0.1", 0) as srv:
        yield srv


def test_idle_connections_are_closed_after_the_request_timeout(server):
    idle = socket.create_connection(server.address, timeout=5)
    t0 = time.monotonic()
    assert idle.recv(100) == b""  # the server hung up on a client that sent nothing
    assert time.monotonic() - t0 < 3
    idle.close()


def test_error_pages_do_not_echo_the_request_path(server):
    host, port = server.address
    for path in ["/download/" + "A" * 6000, "/download/../" + "B" * 100, "/nothing-" + "C" * 60000]:
        conn = http.client.HTTPConnection(host, port, timeout=5)
        conn.request("GET", path)
        resp = conn.getresponse()
        body = resp.read()
        conn.close()
        assert resp.status in (403, 404, 414) and len(body) < 2000
        assert b"AAAA" not in body and b"BBBB" not in body and b"CCCC" not in body
    assert all(len(line) <= 200 for line in server.request_log)


def test_a_client_hanging_up_mid_download_leaves_no_traceback(server, capfd):
    host, port = server.address
    for _ in range(3):
        s = socket.create_connection((host, port), timeout=5)
        s.sendall(b"GET /download/big.bin HTTP/1.0\r\n\r\n")
        s.recv(1000)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")  # RST on close
        s.close()
    time.sleep(0.5)
    assert "Traceback" not in capfd.readouterr().err
    conn = http.client.HTTPConnection(host, port, timeout=5)  # still serving
    conn.request("GET", "/download/big.bin")
    assert len(conn.getresponse().read()) == 8 << 20


def test_connections_beyond_the_bound_get_503(tmp_path, monkeypatch):
    monkeypatch.setattr(storage_server, "MAX_CONNECTIONS", 2)
    monkeypatch.setattr(storage_server._Handler, "timeout", 5)
    (tmp_path / "a").write_bytes(b"a")
    with StorageServer(tmp_path, "127.0.0.1", 0) as srv:
        held = [socket.create_connection(srv.address, timeout=5) for _ in range(2)]
        time.sleep(0.3)
        extra = socket.create_connection(srv.address, timeout=5)
        assert extra.recv(100).startswith(b"HTTP/1.0 503")
        for s in held + [extra]:
            s.close()
