"""Slowloris: with one sync worker, a client trickling its request head cannot hold the
worker past --header-timeout; the next client is served right after it."""

from __future__ import annotations

import threading
import time

import pytest

from gorn_worker import scoreboard as sbm
from harness import parse_responses, read_until_close, start_worker

HEADER_TIMEOUT = 1.5


def test_trickling_client_does_not_block_the_worker() -> None:
    with start_worker("basic:app", header_timeout=HEADER_TIMEOUT, keepalive=2) as w:
        slow = w.connect()
        closed_after: list[float] = []

        def trickle() -> None:
            start = time.monotonic()
            try:
                for b in b"GET /slowloris HTTP/1.1\r\nHost: x\r\nX-Padding: " + b"a" * 100:
                    slow.send(bytes([b]))
                    time.sleep(0.3)  # one byte every 0.3 s: 30+ s for the whole head
            except OSError:
                pass  # the server closed the connection
            closed_after.append(time.monotonic() - start)

        t = threading.Thread(target=trickle, daemon=True)
        t.start()
        time.sleep(0.3)  # the worker is now reading the slow head
        start = time.monotonic()
        status, _, _ = w.get("/hello", timeout=HEADER_TIMEOUT + 5)
        waited = time.monotonic() - start
        assert status == 200
        assert waited < HEADER_TIMEOUT + 2, f"second client waited {waited:.1f}s"
        # Closed by the server without a response: EOF (or a reset, if the trickler wrote
        # after the close), not a read timeout.
        slow.settimeout(5)
        try:
            assert slow.recv(4096) == b""
        except ConnectionResetError:
            pass
        t.join(10)
        assert closed_after and closed_after[0] < HEADER_TIMEOUT + 3, closed_after
        slow.close()


def test_stalled_body_is_cut_off() -> None:
    """A body that stops flowing frees the worker too."""
    with start_worker("basic:echo", header_timeout=1.0, keepalive=2) as w:
        s = w.connect()
        s.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nonly-part")
        start = time.monotonic()
        out = read_until_close(s, timeout=10)
        assert time.monotonic() - start < 5
        assert all(r[0] >= 400 for r in parse_responses(out)), out[:200]
        s.close()
        status, _, _ = w.get("/next")
        assert status == 200


def test_trickled_body_does_not_hold_the_worker() -> None:
    """A body trickled one byte just under header_timeout apart never trips the per-read
    timeout; the minimum average rate (1 KiB/s after a header_timeout grace) frees the
    worker anyway, with a debug log line, and the next client is served."""
    timeout = 0.6
    with start_worker("basic:echo", header_timeout=timeout, keepalive=2, log_level="debug") as w:
        slow = w.connect()
        slow.sendall(b"POST /trickle HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n")
        stop = threading.Event()
        outcome: list[str] = []

        def trickle() -> None:
            try:
                for _ in range(100):  # 100 bytes at one per 0.4 s: 40 s if nobody stops it
                    if stop.wait(0.4):
                        outcome.append("stopped")
                        return
                    slow.send(b"x")
            except OSError:
                outcome.append("closed by the server")
                return
            outcome.append("ran out")

        t = threading.Thread(target=trickle, daemon=True)
        t.start()
        slow.settimeout(15)
        try:
            got = slow.recv(4096)  # EOF: closed without a response
        except ConnectionResetError:
            got = b""
        except OSError as e:  # socket.timeout: the worker was still held
            got = repr(e).encode()
        still_trickling = t.is_alive()
        stop.set()
        t.join(5)
        slow.close()
        assert got == b"", got
        assert still_trickling or outcome == ["closed by the server"], outcome
        status, _, _ = w.get("/next")
        assert status == 200
        log = w.stderr()
        assert "POST /trickle: request body: request body too slow" in log, log[-2000:]


@pytest.mark.parametrize("worker_class", ["sync", "gthread"])
def test_idle_and_trickling_connections_cost_no_worker(worker_class: str) -> None:
    """Hundreds of silent connections plus clients trickling a head a byte at a time
    against one worker: a normal client is still answered at once, every time."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 1024:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 4096), hard))
    with start_worker("basic:app", worker_class=worker_class, threads=2, header_timeout=30, keepalive=30, backlog=1024) as w:
        idle = [w.connect() for _ in range(200)]
        trickling = [w.connect() for _ in range(20)]
        stop = threading.Event()

        def trickle() -> None:
            head = b"GET /slowloris HTTP/1.1\r\nHost: x\r\nX-Padding: " + b"a" * 1000
            for i in range(len(head)):
                for s in trickling:
                    try:
                        s.send(head[i : i + 1])
                    except OSError:
                        pass
                if stop.wait(0.1):
                    return

        t = threading.Thread(target=trickle, daemon=True)
        t.start()
        try:
            time.sleep(0.5)
            worst = 0.0
            for _ in range(20):
                start = time.monotonic()
                status, _, _ = w.get("/hello", timeout=5)
                worst = max(worst, time.monotonic() - start)
                assert status == 200
            assert worst < 0.5, f"a normal request took {worst:.3f}s"
            assert w.slot[sbm.W_CONNECTIONS] >= 220
        finally:
            stop.set()
            t.join(5)
            for s in idle + trickling:
                s.close()


def test_refused_request_lingers_without_holding_the_worker() -> None:
    """A refused client that keeps sending gets its 400 (no reset), while the worker
    serves others meanwhile: the linger runs in the event loop."""
    with start_worker("basic:app") as w, w.connect() as bad:
        bad.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nBad Header: y\r\n\r\n" + b"x" * 20000)
        start = time.monotonic()
        assert w.get("/hello")[0] == 200
        assert time.monotonic() - start < 0.3
        out = read_until_close(bad, 3)
        assert parse_responses(out)[0][0] == 400
