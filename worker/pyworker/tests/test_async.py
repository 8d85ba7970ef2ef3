"""The async worker classes (``-k gevent``, ``-k eventlet``) in a real worker process."""

from __future__ import annotations

import http.client
import json
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from gorn_worker.green import MissingLibrary
from gorn_worker.scoreboard import W_CONNECTIONS, W_IN_FLIGHT, W_RELOAD, W_REQUESTS
from harness import Worker, start_worker
from prereq import require_installed, require_module

CLASSES = ["gevent", "eventlet"]


def need(worker_class: str) -> None:
    require_installed(worker_class)


def fetch(w: Worker, path: str, out: list[Any], timeout: float = 15.0) -> None:
    try:
        c = http.client.HTTPConnection(*w.addr, timeout=timeout)  # type: ignore[misc]
        c.request("GET", path)
        r = c.getresponse()
        out.append((r.status, r.read(), r.getheader("Connection")))
        c.close()
    except Exception as e:
        out.append(e)


def concurrent(w: Worker, path: str, n: int) -> tuple[float, list[Any]]:
    out: list[Any] = []
    threads = [threading.Thread(target=fetch, args=(w, path, out)) for _ in range(n)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.monotonic() - t0, out


@pytest.mark.parametrize("worker_class", CLASSES)
def test_200_concurrent_slow_requests(worker_class: str) -> None:
    need(worker_class)
    with start_worker("basic:app", worker_class=worker_class, worker_connections=500, backlog=512) as w:
        elapsed, out = concurrent(w, "/slow?t=1", 200)
        assert [o[0] if isinstance(o, tuple) else o for o in out] == [200] * 200
        assert elapsed < 2.5, f"200 requests of 1 s took {elapsed:.2f} s"
        assert w.slot[W_REQUESTS] == 200
        assert w.stop() == 0


@pytest.mark.parametrize("worker_class", CLASSES)
def test_environ_and_keepalive(worker_class: str) -> None:
    need(worker_class)
    with start_worker("basic:app", worker_class=worker_class, keepalive=5) as w:
        s = w.connect()
        s.sendall(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\nGET /echo HTTP/1.1\r\nHost: x\r\n\r\n")
        data = b""
        while data.count(b"HTTP/1.1 200") < 2:
            chunk = s.recv(65536)
            assert chunk, data
            data += chunk
        assert b"Hello, World!" in data and b"Connection: close" not in data
        w.wait_slot(W_CONNECTIONS, lambda v: v == 1)
        s.close()
        w.wait_slot(W_CONNECTIONS, lambda v: v == 0)
        assert w.stop() == 0


@pytest.mark.parametrize("worker_class", CLASSES)
def test_header_timeout_and_body(worker_class: str) -> None:
    need(worker_class)
    with start_worker("basic:app", worker_class=worker_class, header_timeout=0.5) as w:
        s = w.connect()
        s.sendall(b"GET /hello HTTP/1.1\r\n")  # never finished
        t0 = time.monotonic()
        assert s.recv(100) == b""  # closed at the head deadline, no response
        assert time.monotonic() - t0 < 3
        s.close()
        body = b"x" * 100000
        raw = w.raw(b"POST /echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
        assert raw.startswith(b"HTTP/1.1 200") and b'"body": "xxxx' in raw
        status, _, _ = w.get("/hello")
        assert status == 200
        assert w.stop() == 0


@pytest.mark.parametrize("worker_class", CLASSES)
def test_term_lets_in_flight_requests_finish(worker_class: str) -> None:
    need(worker_class)
    with start_worker("basic:app", worker_class=worker_class, graceful_timeout=10) as w:
        out: list[Any] = []
        threads = [threading.Thread(target=fetch, args=(w, "/slow?t=1", out)) for _ in range(20)]
        for t in threads:
            t.start()
        w.wait_slot(W_IN_FLIGHT, lambda v: v == 20)
        w.send_signal(signal.SIGTERM)
        for t in threads:
            t.join()
        assert [o[:2] for o in out] == [(200, b"slept")] * 20
        assert all(o[2] == "close" for o in out)  # draining: Connection: close
        assert w.proc.wait(10) == 0


@pytest.mark.parametrize("worker_class", CLASSES)
def test_quit_is_fast(worker_class: str) -> None:
    need(worker_class)
    with start_worker("basic:app", worker_class=worker_class) as w:
        out: list[Any] = []
        t = threading.Thread(target=fetch, args=(w, "/slow?t=5", out))
        t.start()
        w.wait_slot(W_IN_FLIGHT, lambda v: v == 1)
        t0 = time.monotonic()
        w.send_signal(signal.SIGQUIT)
        assert w.proc.wait(5) == 0
        assert time.monotonic() - t0 < 2
        t.join()


@pytest.mark.parametrize("worker_class", CLASSES)
def test_blocked_hub_stops_the_heartbeat(worker_class: str) -> None:
    """The heartbeat comes from the hub: a greenlet that blocks it freezes it (and
    ``accepting`` stays 0), which is what the master's --timeout watches."""
    need(worker_class)
    from gorn_worker.scoreboard import W_ACCEPTING, W_HEARTBEAT

    with start_worker("blockhub:app", worker_class=worker_class) as w:
        assert w.slot[W_ACCEPTING] == 0
        before = w.slot[W_HEARTBEAT]
        time.sleep(0.3)
        assert w.slot[W_HEARTBEAT] > before  # beating while idle
        s = w.connect()
        s.sendall(b"GET /block HTTP/1.1\r\nHost: x\r\n\r\n")
        time.sleep(0.3)
        frozen = w.slot[W_HEARTBEAT]
        time.sleep(0.5)
        assert w.slot[W_HEARTBEAT] == frozen
        assert w.slot[W_ACCEPTING] == 0
        s.close()
        w.proc.kill()


@pytest.mark.parametrize("worker_class", CLASSES)
def test_missing_library_exits_3(worker_class: str, tmp_path: Path) -> None:
    # A package of that name that fails to import hides the installed one.
    (tmp_path / worker_class).mkdir()
    (tmp_path / worker_class / "__init__.py").write_text(f'raise ImportError("No module named {worker_class}")\n')
    w = start_worker("basic:app", worker_class=worker_class, wait_ready=False, env={"PYTHONPATH": str(tmp_path)})
    try:
        assert w.proc.wait(15) == 3
        err = w.stderr()
        assert f"needs the {worker_class} package" in err and f"pip install {worker_class}" in err, err
        assert len([l for l in err.splitlines() if "cannot start the worker" in l]) == 1
    finally:
        w.close()


def test_missing_library_message() -> None:
    e = MissingLibrary("gevent", "gevent", ImportError("No module named 'gevent'"))
    assert "worker class 'gevent' needs the gevent package" in str(e) and "pip install gevent" in str(e)


@pytest.mark.parametrize("worker_class", CLASSES)
def test_flask_socketio_websocket_echo(worker_class: str) -> None:
    need(worker_class)
    require_installed("flask_socketio")
    socketio = require_module("socketio")
    require_installed("websocket")
    # --timeout 1: the WebSocket outlives it (an upgraded connection is out of the watch).
    with start_worker("socketio_app:app", worker_class=worker_class, timeout=1, env={"SIO_ASYNC_MODE": worker_class}) as w:
        assert isinstance(w.addr, tuple)
        host, port = w.addr
        client = socketio.Client()
        got: list[Any] = []
        done = threading.Event()

        @client.on("echo")
        def on_echo(data: Any) -> None:
            got.append(data)
            if len(got) == 3:
                done.set()

        client.connect(f"http://{host}:{port}", transports=["websocket"], wait_timeout=10)
        try:
            assert client.transport() == "websocket"
            for i in range(3):
                client.emit("echo", {"n": i})
                time.sleep(0.6)  # 1.8 s in all: past --timeout
            assert done.wait(10), (got, w.stderr())
            assert got == [{"n": 0}, {"n": 1}, {"n": 2}]
        finally:
            client.disconnect()
        status, _, body = w.get("/")
        assert (status, body) == (200, b"socketio app")
        assert "Traceback" not in w.stderr()
        assert w.stop() == 0


def test_runtime_threads_are_native_under_patching() -> None:
    """The lifeline, exit watchdog and reload watcher run on real threads even after
    monkey-patching: a worker whose master is gone (lifeline EOF) exits at once."""
    require_installed("gevent")
    w = start_worker("basic:app", worker_class="gevent")
    try:
        assert w.lifeline_w is not None
        os.close(w.lifeline_w)
        w.lifeline_w = None
        assert w.proc.wait(5) == 0
    finally:
        w.close()



@pytest.mark.parametrize("worker_class", CLASSES)
def test_term_serves_queued_connections(worker_class: str) -> None:
    """worker_connections=2 and two slow requests: the acceptors stop, three more clients
    wait in the listen queue; TERM serves them too (as the core's drain does)."""
    need(worker_class)
    with start_worker("basic:app", worker_class=worker_class, worker_connections=2, graceful_timeout=20) as w:
        out: list[Any] = []
        first = [threading.Thread(target=fetch, args=(w, "/slow?t=1", out)) for _ in range(2)]
        for t in first:
            t.start()
        w.wait_slot(W_IN_FLIGHT, lambda v: v == 2)
        queued = [threading.Thread(target=fetch, args=(w, "/hello", out)) for _ in range(3)]
        for t in queued:
            t.start()
        time.sleep(0.3)
        assert w.slot[W_CONNECTIONS] == 2  # the three wait in the kernel's queue
        w.send_signal(signal.SIGTERM)
        for t in first + queued:
            t.join()
        assert sorted(o[0] for o in out) == [200] * 5, out
        assert w.proc.wait(10) == 0


@pytest.mark.parametrize("worker_class", CLASSES)
def test_request_over_timeout_is_ended_with_its_stack(worker_class: str) -> None:
    need(worker_class)
    with start_worker("basic:app", worker_class=worker_class, timeout=1) as w:
        out: list[Any] = []
        t0 = time.monotonic()
        fetch(w, "/slow?t=10", out)
        assert isinstance(out[0], Exception), out  # the connection ends without a response
        assert time.monotonic() - t0 < 4
        err = w.stderr()
        assert "'GET /slow' running for" in err and "longer than --timeout (1 s)" in err, err
        assert "basic.py" in err and "time.sleep" in err, err  # the greenlet's stack
        assert w.get("/hello")[0] == 200
        assert w.slot[W_IN_FLIGHT] == 0
        assert w.stop() == 0


@pytest.mark.parametrize("worker_class", CLASSES)
def test_environ_keys(worker_class: str) -> None:
    need(worker_class)
    with start_worker("envkeys:app", worker_class=worker_class, workers=2) as w:
        raw = w.raw(b"POST / HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 2\r\n\r\nhi")
        doc = json.loads(raw.split(b"\r\n\r\n", 1)[1])
        assert doc["multithread"] is True and doc["multiprocess"] is True
        assert doc["gunicorn_socket"] is True and doc["timeout"] is None  # the app's socket has no timeout
        assert doc["eventlet_input_is_socket"] is (worker_class == "eventlet")
        assert doc["body"] == "hi"
        assert w.stop() == 0


@pytest.mark.parametrize("worker_class", CLASSES)
def test_stalled_body_is_dropped(worker_class: str) -> None:
    need(worker_class)
    with start_worker("basic:app", worker_class=worker_class, header_timeout=0.5) as w:
        s = w.connect()
        s.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123456789")
        t0 = time.monotonic()
        s.settimeout(5)
        assert s.recv(100) == b""  # dropped, no response (BodyTimeout, as for sync)
        assert time.monotonic() - t0 < 3
        s.close()
        assert w.get("/hello")[0] == 200
        assert w.stop() == 0


@pytest.mark.parametrize("worker_class", CLASSES)
def test_reload_watcher_runs_under_patching(worker_class: str, tmp_path: Path) -> None:
    """--reload's watcher is a native thread with the original sleep: it keeps polling
    after monkey-patching (and while the hub sleeps)."""
    need(worker_class)
    (tmp_path / "reloadme.py").write_text(
        "def application(environ, start_response):\n"
        "    start_response('200 OK', [('Content-Type', 'text/plain')])\n"
        "    return [b'one']\n"
    )
    with start_worker("reloadme", cwd=tmp_path, worker_class=worker_class, reload=True) as w:
        assert w.get("/")[2] == b"one"
        time.sleep(1.2)  # the watcher's first look
        app = tmp_path / "reloadme.py"
        st = app.stat()
        os.utime(app, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
        w.wait_slot(W_RELOAD, lambda v: v == app.stat().st_mtime_ns, timeout=10)
        assert w.stop() == 0
