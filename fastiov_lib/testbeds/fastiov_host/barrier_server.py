"""The barrier / stage-lock server the patched kata runtime calls on 127.0.0.1:5005.

The instrumented runtime GETs `/barrierVM` before it creates every sandbox and fails the sandbox
when that request fails, so this server must run for the whole benchmark on a real host.
`/barrierVM` answers once `barrier_size` sandboxes have arrived (1 = at once, the original's
setting); `/get_lock?op=obtain|release&stage=<stage>` are per-stage admission counters (obtain
waits while a stage's count is 0). Tornado serves it on its own event loop in a thread; the socket
is bound before `start()` returns, so a busy port is an error at once, not a failed pod later.
`/stats` returns the counters as JSON (what the round hooks record per round).
"""
from __future__ import annotations

import asyncio
import errno
import json
import threading
from dataclasses import dataclass, field
from typing import Mapping

import tornado.httpserver
import tornado.locks
import tornado.netutil
import tornado.web

from fastiov_lib.testbeds.base import BackendError

STAGES = ("cniAdd", "resource1", "kataInterface", "startVM", "resource2", "total")


class BarrierServerError(BackendError):
    """The server could not start (port in use, bad settings)."""


@dataclass
class _State:
    barrier_size: int
    limits: dict[str, int]
    arrived: int = 0  # /barrierVM requests so far (the original counts them cumulatively)
    released: int = 0  # /barrierVM requests answered
    obtained: dict[str, int] = field(default_factory=dict)
    returned: dict[str, int] = field(default_factory=dict)
    cond: tornado.locks.Condition = field(default_factory=tornado.locks.Condition)
    closing: bool = False

    def stats(self) -> dict:
        return {"barrier_size": self.barrier_size, "barrier_arrived": self.arrived, "barrier_released": self.released,
                "available": dict(self.limits), "obtained": dict(self.obtained), "released": dict(self.returned)}


class _Barrier(tornado.web.RequestHandler):
    def initialize(self, state: _State) -> None:
        self.state = state

    async def get(self) -> None:
        st = self.state
        st.arrived += 1
        generation_end = -(-st.arrived // st.barrier_size) * st.barrier_size
        st.cond.notify_all()
        while st.arrived < generation_end and not st.closing:
            await st.cond.wait()
        if st.closing and st.arrived < generation_end:
            self.set_status(503)
            self.finish("server stopping")
            return
        st.released += 1
        self.finish("success")


class _Lock(tornado.web.RequestHandler):
    def initialize(self, state: _State) -> None:
        self.state = state

    async def get(self) -> None:
        st = self.state
        op, stage = self.get_query_argument("op", ""), self.get_query_argument("stage", "")
        if stage not in st.limits:
            self.set_status(400)
            self.finish(f"unknown stage {stage!r}; expected one of {', '.join(st.limits)}")
            return
        if op == "obtain":
            while st.limits[stage] == 0 and not st.closing:
                await st.cond.wait()
            if st.closing:
                self.set_status(503)
                self.finish("server stopping")
                return
            st.limits[stage] -= 1
            st.obtained[stage] = st.obtained.get(stage, 0) + 1
        elif op == "release":
            st.limits[stage] += 1
            st.returned[stage] = st.returned.get(stage, 0) + 1
            st.cond.notify_all()
        else:
            self.set_status(400)
            self.finish(f"unknown op {op!r}; expected obtain or release")
            return
        self.finish("success")


class _Stats(tornado.web.RequestHandler):
    def initialize(self, state: _State) -> None:
        self.state = state

    def get(self) -> None:
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(self.state.stats()))


class BarrierServer:
    """`/barrierVM`, `/get_lock` and `/stats` on host:port, in a background thread (start/stop)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 5005, barrier_size: int = 1,
                 stage_limits: Mapping[str, int] | None = None):
        if barrier_size < 1:
            raise BarrierServerError(f"barrier_size must be at least 1, got {barrier_size}")
        limits = dict(stage_limits) if stage_limits is not None else dict.fromkeys(STAGES, 400)
        bad = [f"{k}={v}" for k, v in limits.items() if k not in STAGES or int(v) < 0]
        if bad:
            raise BarrierServerError(f"stage_limits: {', '.join(bad)}: stages are {', '.join(STAGES)}, limits >= 0")
        self.host, self.port = host, port
        self._config = (barrier_size, {k: int(v) for k, v in limits.items()})
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._state: _State | None = None
        self._final_stats: dict | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> "BarrierServer":
        """Bind the port (error at once if it is taken) and serve in a daemon thread."""
        if self.running:
            return self
        try:
            sockets = tornado.netutil.bind_sockets(self.port, self.host, reuse_port=False)
        except OSError as exc:
            why = "in use (another server, e.g. the original's log_opt_server.py?)" \
                if exc.errno == errno.EADDRINUSE else exc.strerror
            raise BarrierServerError(f"barrier server: cannot listen on {self.host}:{self.port}: {why}") from None
        self.port = sockets[0].getsockname()[1]  # port 0 in tests: the one the kernel chose
        ready = threading.Event()

        def serve() -> None:
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            self._loop = loop
            self._state = _State(*self._config[:1], dict(self._config[1]))
            kw = {"state": self._state}
            app = tornado.web.Application([(r"/barrierVM", _Barrier, kw), (r"/get_lock", _Lock, kw),
                                           (r"/stats", _Stats, kw)])
            server = tornado.httpserver.HTTPServer(app)
            server.add_sockets(sockets)
            loop.call_soon(ready.set)
            try:
                loop.run_forever()
            finally:
                server.stop()
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.close()

        self._thread = threading.Thread(target=serve, name=f"barrier-server-{self.port}", daemon=True)
        self._thread.start()
        ready.wait(10)
        return self

    def stats(self) -> dict:
        """The counters now (or at stop, once stopped)."""
        if self._state is None:
            return {}
        return self._final_stats if not self.running and self._final_stats else self._state.stats()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Release waiting requests with 503, stop the loop, join the thread (idempotent)."""
        if not self.running or self._loop is None:
            return
        loop, state = self._loop, self._state

        def closing() -> None:
            state.closing = True
            state.cond.notify_all()
            loop.call_later(0.05, loop.stop)  # let released handlers write their answers

        loop.call_soon_threadsafe(closing)
        self._thread.join(timeout_s)
        self._final_stats = state.stats()

    def __enter__(self) -> "BarrierServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """True when host:port can be bound now (host-check: is 5005 free for the barrier server?)."""
    try:
        socks = tornado.netutil.bind_sockets(port, host, reuse_port=False)
    except OSError:
        return False
    for s in socks:
        s.close()
    return True
