"""The gthread worker in a real process: concurrency, idle keep-alive, limits, scoreboard, TERM."""

from __future__ import annotations

import signal
import socket
import threading
import time
from typing import Any

import pytest

from gorn_worker import scoreboard as sbm
from harness import parse_responses, read_response, start_worker

THREADED = "threaded:app"


def fetch(w: Any, path: str, results: list, timeout: float = 15.0) -> threading.Thread:
    """GET path in a background thread; appends (status, body) to results."""

    def run() -> None:
        try:
            status, _, body = w.get(path, timeout=timeout)
            results.append((status, body))
        except Exception as e:  # recorded, so the test sees it
            results.append((0, repr(e).encode()))

    t = threading.Thread(target=run)
    t.start()
    return t


def keepalive_request(s: socket.socket, path: str) -> tuple[int, bytes]:
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
    status, _, body = read_response(s)
    return status, body


def test_requests_run_at_the_same_time() -> None:
    with start_worker(THREADED, worker_class="gthread", threads=4) as w:
        results: list = []
        ts = [fetch(w, "/barrier?n=4", results) for _ in range(4)]
        for t in ts:
            t.join(20)
        assert results == [(200, b"met")] * 4, w.stderr()
        status, _, body = w.get("/env")
        assert status == 200 and body.startswith(b"True gorn-thread-")


def test_sync_runs_one_at_a_time() -> None:
    """The same barrier cannot be met by a sync worker: the test above can fail."""
    with start_worker(THREADED) as w:
        results: list = []
        ts = [fetch(w, "/barrier?n=2", results) for _ in range(2)]
        for t in ts:
            t.join(30)
        assert sorted(r[0] for r in results) == [500, 500]
        assert w.get("/env")[2] == b"False MainThread"


def test_idle_keepalive_connections_hold_no_thread() -> None:
    with start_worker(THREADED, worker_class="gthread", threads=1, keepalive=10) as w:
        idle = []
        for _ in range(3):  # one after the other: nobody waits while one is served
            idle.append(w.connect())
            assert keepalive_request(idle[-1], "/env")[0] == 200
        # three kept-alive connections and one thread: a new client is still served
        assert w.get("/env")[0] == 200
        for s in idle:  # and the kept connections still work
            assert keepalive_request(s, "/env")[0] == 200
            s.close()


def test_pipelined_requests_answered_in_order() -> None:
    with start_worker(THREADED, worker_class="gthread", threads=2) as w:
        with w.connect() as s:
            s.sendall(b"GET /env HTTP/1.1\r\nHost: t\r\n\r\nGET /nope HTTP/1.1\r\nHost: t\r\n\r\nGET /env HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            data = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
        assert [r[0] for r in parse_responses(data)] == [200, 404, 200]


def test_worker_connections_bounds_open_connections() -> None:
    with start_worker(THREADED, worker_class="gthread", threads=1, worker_connections=2, keepalive=10) as w:
        a = w.connect()
        assert keepalive_request(a, "/env")[0] == 200
        b = w.connect()
        assert keepalive_request(b, "/env")[0] == 200
        c = w.connect(timeout=0.5)
        c.sendall(b"GET /env HTTP/1.1\r\nHost: t\r\n\r\n")
        with pytest.raises(socket.timeout):
            c.recv(1)  # two connections are open: the third waits in the listen queue
        a.close()
        c.settimeout(5)
        assert read_response(c)[0] == 200
        b.close()
        c.close()


def test_scoreboard_shows_the_oldest_request() -> None:
    with start_worker(THREADED, worker_class="gthread", threads=3) as w:
        results: list = []
        first = fetch(w, "/gate?first", results)
        w.wait_slot(sbm.W_IN_FLIGHT, lambda v: v == 1)
        started = w.slot[sbm.W_BUSY_SINCE]
        second = fetch(w, "/gate?second", results)
        w.wait_slot(sbm.W_IN_FLIGHT, lambda v: v == 2)
        assert w.slot[sbm.W_BUSY_SINCE] == started and w.slot.desc() == b"GET /gate"
        assert w.get("/open")[0] == 200
        first.join(15)
        second.join(15)
        assert results == [(200, b"passed")] * 2
        w.wait_slot(sbm.W_REQUESTS, lambda v: v == 3)
        assert w.slot[sbm.W_IN_FLIGHT] == 0 and w.slot[sbm.W_BUSY_SINCE] == 0
        assert w.slot.counter("GET", 2) == 3 and sum(w.slot.histogram()) == 3


def test_term_lets_requests_in_hand_and_queued_finish() -> None:
    with start_worker(THREADED, worker_class="gthread", threads=2, backlog=16) as w:
        results: list = []
        busy = [fetch(w, "/gate?t=1.5", results) for _ in range(2)]
        w.wait_slot(sbm.W_IN_FLIGHT, lambda v: v == 2)
        queued = [w.connect() for _ in range(3)]
        for s in queued:
            s.sendall(b"GET /env HTTP/1.1\r\nHost: t\r\n\r\n")
        time.sleep(0.2)
        w.send_signal(signal.SIGTERM)
        for t in busy:
            t.join(20)
        assert results == [(200, b"timed out")] * 2
        for s in queued:
            s.settimeout(10)
            status, headers, _ = read_response(s)
            assert status == 200 and headers.get("connection") == "close"
            s.close()
        assert w.proc.wait(20) == 0


def test_quit_exits_at_once_with_requests_in_hand() -> None:
    with start_worker(THREADED, worker_class="gthread", threads=2) as w:
        results: list = []
        t = fetch(w, "/gate", results, timeout=5)
        w.wait_slot(sbm.W_IN_FLIGHT, lambda v: v == 1)
        assert w.stop(signal.SIGQUIT, timeout=5) == 0
        t.join(10)


def test_idle_connections_are_closed_after_keepalive() -> None:
    with start_worker(THREADED, worker_class="gthread", threads=1, keepalive=0.3, header_timeout=0.5) as w:
        kept = w.connect(timeout=10)
        assert keepalive_request(kept, "/env")[0] == 200
        silent = w.connect(timeout=10)  # never sends a request: the header timeout applies
        assert kept.recv(1) == b"" and silent.recv(1) == b""
        kept.close()
        silent.close()
        assert w.get("/env")[0] == 200


def test_term_waits_for_the_first_request_of_an_accepted_connection() -> None:
    with start_worker(THREADED, worker_class="gthread", threads=2, header_timeout=5) as w:
        s = w.connect(timeout=10)
        time.sleep(0.3)  # accepted, no request yet
        w.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        s.sendall(b"GET /env HTTP/1.1\r\nHost: t\r\n\r\n")
        status, headers, _ = read_response(s, timeout=10)
        assert status == 200 and headers.get("connection") == "close"
        s.close()
        assert w.proc.wait(20) == 0


@pytest.mark.parametrize("conns", [2, 1000])  # full on connections, or on threads
def test_busy_kept_alive_clients_do_not_starve_queued_ones(conns: int) -> None:
    with start_worker(THREADED, worker_class="gthread", threads=1, worker_connections=conns, keepalive=10) as w:
        stop = threading.Event()
        errors: list = []

        def busy_client() -> None:
            s = w.connect(timeout=10)
            try:
                while not stop.is_set():
                    s.sendall(b"GET /env HTTP/1.1\r\nHost: t\r\n\r\n")
                    status, headers, _ = read_response(s, timeout=10)
                    if headers.get("connection") == "close":
                        s.close()
                        s = w.connect(timeout=10)  # closed so a waiting client gets in: reconnect
            except Exception as e:
                errors.append(e)
            finally:
                s.close()

        clients = [threading.Thread(target=busy_client) for _ in range(2)]
        for t in clients:
            t.start()
        time.sleep(0.3)
        queued = w.connect(timeout=10)
        queued.sendall(b"GET /env HTTP/1.1\r\nHost: t\r\n\r\n")
        status, _, _ = read_response(queued, timeout=5)  # served although two busy clients fill the worker
        stop.set()
        for t in clients:
            t.join(15)
        queued.close()
        assert status == 200 and not errors


def test_every_client_gets_a_turn_when_threads_are_saturated() -> None:
    """More busy keep-alive clients than threads, driven like wrk (one event loop, each
    client re-sending as soon as its response is in): every one of them is answered."""
    import selectors

    request = b"GET /gate?t=0.005 HTTP/1.1\r\nHost: t\r\n\r\n"  # 5 ms each
    with start_worker(THREADED, worker_class="gthread", threads=2, keepalive=10, backlog=64) as w:
        sel = selectors.DefaultSelector()
        served: dict[int, int] = {}

        def connect(i: int) -> None:
            s = w.connect(timeout=10)
            s.setblocking(False)
            s.sendall(request)
            sel.register(s, selectors.EVENT_READ, (i, bytearray()))

        for i in range(24):
            served[i] = 0
            connect(i)
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            for key, _ in sel.select(0.1):
                i, buf = key.data
                s = key.fileobj
                try:
                    data = s.recv(65536)  # type: ignore[union-attr]
                except BlockingIOError:
                    continue
                buf += data
                if data and b"\r\n\r\n" in buf and buf.endswith(b"timed out"):
                    served[i] += 1
                    closing = b"connection: close" in buf.lower()
                    buf.clear()
                    if not closing:
                        s.sendall(request)  # type: ignore[union-attr]
                        continue
                sel.unregister(s)
                s.close()  # type: ignore[union-attr]
                connect(i)  # closed by the server (its turn is over): come back
        for key in list(sel.get_map().values()):
            key.fileobj.close()  # type: ignore[union-attr]
        assert all(n > 0 for n in served.values()), served
