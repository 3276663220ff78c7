"""The app test's storage server: serves one data directory over HTTP to the workload pods.

`GET /download/<name>` returns a file of the data directory (subdirectories allowed). Everything
that could leave the directory is refused with 403: `..` segments, absolute paths, percent-encoded
forms of either (`%2e%2e`, `%2f`, also double-encoded), backslashes, NUL bytes, and symlinks
(or parent directories) that resolve outside it. The server binds one address only (on the local
testbed: the bridge gateway), never 0.0.0.0, and runs in a background thread.

Bounded: a connection that sends nothing for `REQUEST_TIMEOUT_S` is closed, at most
`MAX_CONNECTIONS` are served at once (more get 503 at once), error pages never echo the request
path (the reason goes to the server's request log), and a client that hangs up mid-download
ends its connection quietly (no traceback on stderr).
"""
from __future__ import annotations

import hashlib
import os
import random
import shutil
import threading
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

DOWNLOAD_PREFIX = "/download/"
_CHUNK = 1 << 20
REQUEST_TIMEOUT_S = 10.0  # idle or slow clients: a pod's download never pauses this long
MAX_CONNECTIONS = 256  # the largest app-test round starts fewer pods than this
_LOG_PATH_CHARS = 200  # request paths in the log are cut to this


class RefusedPath(Exception):
    """A request path that is not a plain name inside the data directory."""


def resolve_request_path(data_dir: Path, request_path: str) -> Path:
    """Map a request path to a file inside `data_dir`, or raise RefusedPath (or FileNotFoundError).

    Decoding is repeated until stable so double-encoded traversal (`%252e%252e`) is caught too.
    """
    path = urlsplit(request_path).path
    if not path.startswith(DOWNLOAD_PREFIX):
        raise FileNotFoundError(request_path)
    raw = path[len(DOWNLOAD_PREFIX):]
    decoded = raw
    for _ in range(4):
        nxt = unquote(decoded)
        if nxt == decoded:
            break
        decoded = nxt
    else:
        raise RefusedPath(f"{request_path!r}: too many layers of percent-encoding")
    if not decoded or "\x00" in decoded or "\\" in decoded:
        raise RefusedPath(f"{request_path!r}: empty name, NUL byte or backslash")
    if decoded.startswith("/") or (len(decoded) > 1 and decoded[1] == ":"):
        raise RefusedPath(f"{request_path!r}: absolute paths are not served")
    parts = decoded.split("/")
    if any(part in ("..", ".", "") for part in parts):
        raise RefusedPath(f"{request_path!r}: '..', '.' and empty path segments are not served")
    root = data_dir.resolve()
    target = (root / decoded).resolve()
    if target != root and root not in target.parents:
        raise RefusedPath(f"{request_path!r}: resolves outside the data directory (symlink)")
    if not target.is_file():
        raise FileNotFoundError(request_path)
    return target


class _Handler(BaseHTTPRequestHandler):
    server_version = "fastiov-storage/1"
    protocol_version = "HTTP/1.0"
    timeout = REQUEST_TIMEOUT_S  # socket timeout: an idle connection is closed, its thread ends
    data_dir: Path

    def _refuse(self, status: HTTPStatus, why: str) -> None:
        # the page names the status only; the reason (with the path, cut short) goes to the log
        self.server.request_log.append(f"{status.value} {why}"[:_LOG_PATH_CHARS])  # type: ignore[attr-defined]
        self.send_error(status, status.phrase)

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        try:
            target = resolve_request_path(self.data_dir, self.path)
        except RefusedPath as err:
            self._refuse(HTTPStatus.FORBIDDEN, str(err))
            return
        except (FileNotFoundError, OSError):
            self._refuse(HTTPStatus.NOT_FOUND, f"no such file: {self.path}")
            return
        size = target.stat().st_size
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(size))
        self.end_headers()
        try:
            with open(target, "rb") as fh:
                shutil.copyfileobj(fh, self.wfile, _CHUNK)
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            self.server.request_log.append("client hung up during the download")  # type: ignore[attr-defined]
            self.close_connection = True

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        # http.server's own errors (400 bad request line, 414 URI too long) would quote the request
        super().send_error(code, HTTPStatus(code).phrase if code in HTTPStatus._value2member_map_ else None, None)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        # one line per request into the server's own log list, not stderr (papermill captures stderr)
        self.server.request_log.append((format % args)[:_LOG_PATH_CHARS])  # type: ignore[attr-defined]


class _BoundedServer(ThreadingHTTPServer):
    """ThreadingHTTPServer with a cap on connections served at once and no tracebacks on stderr."""

    daemon_threads = True

    def __init__(self, *args: object, **kwargs: object):
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.slots = threading.BoundedSemaphore(MAX_CONNECTIONS)

    def process_request(self, request, client_address) -> None:  # type: ignore[no-untyped-def]
        if not self.slots.acquire(blocking=False):
            try:
                request.sendall(b"HTTP/1.0 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n")
            except OSError:
                pass
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request, client_address) -> None:  # type: ignore[no-untyped-def]
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()

    def handle_error(self, request, client_address) -> None:  # type: ignore[no-untyped-def]
        import sys

        exc = sys.exc_info()[1]
        self.request_log.append(f"connection from {client_address[0]} ended: {type(exc).__name__}")  # type: ignore[attr-defined]


class StorageServer:
    """A threaded HTTP server for one data directory, bound to one address; use as a context manager."""

    def __init__(self, data_dir: str | Path, host: str, port: int):
        self.data_dir = Path(data_dir)
        if not self.data_dir.is_dir():
            raise FileNotFoundError(f"storage data directory {self.data_dir} does not exist")
        if host in ("", "0.0.0.0", "::"):
            raise ValueError("the storage server binds one address (e.g. the bridge gateway), not all")
        handler = type("StorageHandler", (_Handler,), {"data_dir": self.data_dir.resolve()})
        self._httpd = _BoundedServer((host, port), handler)
        self._httpd.request_log = []  # type: ignore[attr-defined]
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._httpd.server_address[:2]
        return str(host), int(port)

    @property
    def request_log(self) -> list[str]:
        return self._httpd.request_log  # type: ignore[attr-defined]

    def url(self, name: str) -> str:
        host, port = self.address
        return f"http://{host}:{port}{DOWNLOAD_PREFIX}{name}"

    def start(self) -> "StorageServer":
        # a short poll interval makes stop() quick; serving itself is not polled
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="storage-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self._httpd.server_close()

    def __enter__(self) -> "StorageServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@dataclass(frozen=True)
class InputFile:
    name: str
    path: Path
    size_bytes: int
    fnv1a64: str  # what the workload prints for a complete download
    sha256: str


def fnv1a64(data: bytes) -> str:
    """FNV-1a 64-bit hash, as the workload computes it (hex, 16 digits)."""
    h = 0xCBF29CE484222325
    for b in data:
        h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return f"{h:016x}"


def make_input_file(data_dir: Path, size_mb: int, seed: int = 2025, with_fnv: bool = False) -> InputFile:
    """A deterministic pseudo-random input file `input-<size>mb.bin` (reused when already there).

    The FNV hash is computed only with `with_fnv` (pure Python: about a second per MiB).
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    name = f"input-{size_mb}mb.bin"
    path = data_dir / name
    size = size_mb * 1024 * 1024
    if not path.exists() or path.stat().st_size != size:
        tmp = path.with_suffix(".tmp")
        rng = random.Random(seed)
        with open(tmp, "wb") as fh:
            for _ in range(size_mb):
                fh.write(rng.randbytes(1024 * 1024))
        os.replace(tmp, path)
    data = path.read_bytes()
    return InputFile(name, path, size, fnv1a64(data) if with_fnv else "", hashlib.sha256(data).hexdigest())
