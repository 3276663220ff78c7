"""The barrier / stage-lock server the patched kata runtime needs, over real HTTP on loopback."""
from __future__ import annotations

import socket
import threading
import time

import pytest
import requests

from fastiov_lib.testbeds.fastiov_host.barrier_server import BarrierServer, BarrierServerError, port_is_free


def _get(url, timeout=5):
    return requests.get(url, timeout=timeout)


def test_barrier_of_size_one_answers_every_sandbox_at_once():
    with BarrierServer(port=0) as srv:
        t0 = time.monotonic()
        answers = [_get(f"{srv.url}/barrierVM") for _ in range(5)]
        assert [a.status_code for a in answers] == [200] * 5 and {a.text for a in answers} == {"success"}
        assert time.monotonic() - t0 < 2
        assert srv.stats()["barrier_arrived"] == 5 and srv.stats()["barrier_released"] == 5


def test_barrier_holds_sandboxes_until_the_configured_number_arrived():
    with BarrierServer(port=0, barrier_size=3) as srv:
        done: list[float] = []

        def call():
            _get(f"{srv.url}/barrierVM", timeout=10)
            done.append(time.monotonic())

        threads = [threading.Thread(target=call) for _ in range(2)]
        for t in threads:
            t.start()
        time.sleep(0.5)
        assert done == [] and srv.stats()["barrier_arrived"] == 2  # two of three: still waiting
        t_third = time.monotonic()
        assert _get(f"{srv.url}/barrierVM").text == "success"
        for t in threads:
            t.join(5)
        assert len(done) == 2 and min(done) >= t_third


def test_stage_lock_admits_up_to_its_limit_and_waits_for_a_release():
    with BarrierServer(port=0, stage_limits={"startVM": 1, "cniAdd": 400}) as srv:
        ok = _get(f"{srv.url}/get_lock?op=obtain&stage=startVM")
        assert ok.status_code == 200
        late: list[float] = []
        t = threading.Thread(target=lambda: (_get(f"{srv.url}/get_lock?op=obtain&stage=startVM", 10),
                                             late.append(time.monotonic())))
        t.start()
        time.sleep(0.4)
        assert late == []  # the limit of 1 is taken
        t_rel = time.monotonic()
        assert _get(f"{srv.url}/get_lock?op=release&stage=startVM").status_code == 200
        t.join(5)
        assert late and late[0] >= t_rel
        st = srv.stats()
        assert st["obtained"]["startVM"] == 2 and st["released"]["startVM"] == 1 and st["available"]["startVM"] == 0


def test_unknown_stage_or_op_is_a_400_naming_what_is_expected():
    with BarrierServer(port=0) as srv:
        r = _get(f"{srv.url}/get_lock?op=obtain&stage=nope")
        assert r.status_code == 400 and "cniAdd" in r.text
        r = _get(f"{srv.url}/get_lock?op=grab&stage=total")
        assert r.status_code == 400 and "obtain or release" in r.text


def test_a_busy_port_fails_at_start_and_port_check_sees_it():
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    port = holder.getsockname()[1]
    try:
        assert not port_is_free(port)
        with pytest.raises(BarrierServerError, match=f"127.0.0.1:{port}: in use"):
            BarrierServer(port=port).start()
    finally:
        holder.close()
    assert port_is_free(port)


def test_stopping_releases_waiting_sandboxes_and_frees_the_port():
    srv = BarrierServer(port=0, barrier_size=10).start()
    got = []
    t = threading.Thread(target=lambda: got.append(_get(f"{srv.url}/barrierVM", 10).status_code))
    t.start()
    time.sleep(0.3)
    srv.stop()
    t.join(5)
    assert got == [503] and not srv.running and port_is_free(srv.port)
    with pytest.raises(requests.ConnectionError):
        _get(f"{srv.url}/barrierVM", timeout=2)


def test_bad_limits_are_refused_with_the_stage_names():
    with pytest.raises(BarrierServerError, match="stages are cniAdd"):
        BarrierServer(port=0, stage_limits={"bogus": 1})


def test_a_full_round_of_concurrent_sandboxes_is_released_together():
    n = 60
    with BarrierServer(port=0, barrier_size=n) as srv:
        done: list[float] = []
        lock = threading.Lock()

        def call():
            r = _get(f"{srv.url}/barrierVM", timeout=20)
            with lock:
                done.append(time.monotonic() if r.text == "success" else -1.0)

        threads = [threading.Thread(target=call) for _ in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(25)
        assert len(done) == n and min(done) > 0
        assert max(done) - min(done) < 2.0  # one release for all, not one after another
        assert srv.stats()["barrier_released"] == n
