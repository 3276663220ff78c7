"""The CRI client against the real containerd of a private local testbed (v1 and v1alpha2), and its
deadlines against a socket that accepts connections but never answers."""
from __future__ import annotations

import socket
import threading
import time

import pytest

from fastiov_lib.testbeds.local import testbed as local_testbed
from fastiov_lib.cri import ContainerSpec, CriCancelled, CriClient, CriTimeout, CriUnavailable, PodSpec

from local_testbed_support import make_testbed, needs_local_testbed


@pytest.fixture(scope="module")
def handle(tmp_path_factory):
    testbed = make_testbed(tmp_path_factory.mktemp("cri") / "tb", "ftc", 251, pool_size=2,
                           modes=("none", "bridge"))
    try:
        yield local_testbed.ensure_up(testbed)
    finally:
        local_testbed.down(testbed)


@pytest.fixture()
def silent_socket(tmp_path):
    """A unix socket that accepts connections and never answers (a hung runtime)."""
    path = tmp_path / "hung.sock"
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(str(path))
    srv.listen(16)
    conns: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        srv.settimeout(0.1)
        while not stop.is_set():
            try:
                conns.append(srv.accept()[0])
            except OSError:
                continue

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    yield path
    stop.set()
    t.join(2)
    for c in conns:
        c.close()
    srv.close()


@needs_local_testbed
def test_cri_client_asks_the_runtime_and_picks_v1_on_containerd_16(handle):
    with CriClient(handle.socket, api="auto", timeout_s=10) as cri:
        version = cri.version()
    assert cri.api == "v1"
    assert version.runtime_name == "containerd"
    assert version.runtime_version.startswith("1.6")


@needs_local_testbed
@pytest.mark.parametrize("api", ["v1", "v1alpha2"])
def test_sandbox_and_container_lifecycle_over_both_cri_versions(handle, api, tmp_path):
    with CriClient(handle.socket, api=api, timeout_s=30) as cri:
        assert cri.version().api == api
        spec = PodSpec(name=f"cri-{api}", namespace="test", uid=f"uid-{api}-{time.time_ns()}",
                       log_directory=str(tmp_path), labels={"fastiov.test": api})
        config = cri.sandbox_config(spec)
        sandbox_id = cri.run_pod_sandbox(config, handle.runtime_handler("bridge"))
        try:
            status = cri.pod_sandbox_status(sandbox_id)
            assert status.state == "SANDBOX_READY"
            assert status.ip.startswith("10.251.0.")
            assert [s.id for s in cri.list_pod_sandboxes({"fastiov.test": api})] == [sandbox_id]
            # the workload exits with 2 when given no arguments: a quick, real container run
            cid = cri.create_container(sandbox_id, ContainerSpec(name="w", image=handle.image_ref("workload"),
                                                                 log_path="w.log"), config)
            cri.start_container(cid)
            deadline = time.monotonic() + 20
            while (st := cri.container_status(cid)).state != "CONTAINER_EXITED" and time.monotonic() < deadline:
                time.sleep(0.05)
            assert st.state == "CONTAINER_EXITED" and st.exit_code == 2
            # containerd stamps started_at after the task start returns, so a process this short can
            # finish "before" it started; both must be set
            assert st.started_at_ns > 0 and st.finished_at_ns > 0
            assert "usage:" in (tmp_path / "w.log").read_text()
        finally:
            cri.stop_pod_sandbox(sandbox_id)
            cri.remove_pod_sandbox(sandbox_id)
        assert cri.list_pod_sandboxes({"fastiov.test": api}) == []
        assert cri.image_present(handle.image_ref("pause"))
        assert not cri.image_present("fastiov.local/not-there:1")


def test_cri_client_reports_a_missing_runtime_quickly(tmp_path):
    t0 = time.monotonic()
    with pytest.raises(CriUnavailable, match="not reachable"):
        CriClient(tmp_path / "no-such.sock", api="auto", timeout_s=20)
    assert time.monotonic() - t0 < 10


def test_every_rpc_has_a_deadline(silent_socket):
    cri = CriClient(silent_socket, api="v1", timeout_s=0.5)
    t0 = time.monotonic()
    with pytest.raises(CriTimeout, match="RunPodSandbox: DEADLINE_EXCEEDED"):
        cri.run_pod_sandbox(cri.sandbox_config(PodSpec(name="p", namespace="test", uid="u")), "runc")
    assert time.monotonic() - t0 < 5
    cri.close()


def test_closing_the_client_cancels_calls_in_flight(silent_socket):
    cri = CriClient(silent_socket, api="v1", timeout_s=60)
    errors: list[Exception] = []

    def call() -> None:
        try:
            cri.list_pod_sandboxes()
        except Exception as err:  # collected for the assertion below
            errors.append(err)

    t = threading.Thread(target=call)
    t.start()
    time.sleep(0.3)
    t0 = time.monotonic()
    cri.close()
    t.join(10)
    assert not t.is_alive() and time.monotonic() - t0 < 5
    assert len(errors) == 1 and isinstance(errors[0], CriCancelled)
    stop = threading.Event()
    stop.set()
    with pytest.raises(CriCancelled, match="before the call"):
        CriClient(silent_socket, api="v1", timeout_s=1).pod_sandbox_status("x", cancel=stop)
