"""The accept machinery: lost-fd rescue, bounded accepts, wake-ups (in process)."""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from typing import Any, Iterator

import pytest

from apps.basic import hello
from gorn_worker.logs import Logger
from gorn_worker.scoreboard import STATE_DRAINING, W_ACCEPTING, W_STATE, Scoreboard
from gorn_worker.sync import Listener, SyncWorker, find_lost_connections
from harness import make_settings, parse_responses, read_until_close


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(16)
    yield s
    s.close()


def worker_for(lsocks: list[socket.socket], **settings: Any) -> SyncWorker:
    listeners = [Listener(os.dup(s.fileno())) for s in lsocks]
    log = Logger("debug", fd=os.open(os.devnull, os.O_WRONLY))
    return SyncWorker(hello, make_settings(**settings), log, Scoreboard(-1, 0), listeners)


def test_listener_validation(tmp_path: Any) -> None:
    r, w = os.pipe()
    try:
        with pytest.raises(ValueError, match="not a socket"):
            Listener(r)
    finally:
        os.close(r)
        os.close(w)
    s = socket.socket()
    try:
        with pytest.raises(ValueError, match="not listening"):
            Listener(s.fileno())
    finally:
        s.close()
    u = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        with pytest.raises(ValueError, match="stream"):
            Listener(u.fileno())
    finally:
        u.close()


def test_find_lost_connections(listener: socket.socket) -> None:
    other = socket.socket()
    other.bind(("127.0.0.1", 0))
    other.listen(4)
    client = socket.create_connection(listener.getsockname())
    other_client = socket.create_connection(other.getsockname())
    fd, _ = listener._accept()  # type: ignore[attr-defined]  # "lost": nobody holds it
    ofd, _ = other._accept()  # type: ignore[attr-defined]  # accepted on a foreign listener
    L = Listener(os.dup(listener.fileno()))
    try:
        found = find_lost_connections([L])
        assert [s.fileno() for s, _, _ in found] == [fd]
        s, peer, owner = found[0]
        assert owner is L and peer == client.getsockname() and s.gettimeout() is None
        s.close()
    finally:
        os.close(ofd)
        for x in (other, client, other_client, L.sock):
            x.close()


def test_rescued_connection_is_served(listener: socket.socket) -> None:
    w = worker_for([listener])
    client = socket.create_connection(listener.getsockname(), timeout=5)
    client.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    listener._accept()  # type: ignore[attr-defined]  # lost
    w.alive = False  # as after TERM: answer with Connection: close
    w._rescue()
    w.drain()
    rs = parse_responses(read_until_close(client, 5))
    assert rs[0][0] == 200 and rs[0][1]["connection"] == "close"
    client.close()


def test_timed_accept_gives_up(listener: socket.socket) -> None:
    w = worker_for([listener])
    t = time.monotonic()
    assert w._accept_timed(w.listeners[0]) is None  # nothing queued: a lost race
    assert 0.03 < time.monotonic() - t < 1.0
    with socket.create_connection(listener.getsockname()):
        got = w._accept_timed(w.listeners[0])
        assert got is not None
        got[0].close()


def test_timed_accept_keeps_the_apps_alarm(listener: socket.socket) -> None:
    w = worker_for([listener])
    fired = []

    def app_handler(signum: int, frame: Any) -> None:
        fired.append(signum)

    old = signal.signal(signal.SIGALRM, app_handler)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.3)
        assert w._accept_timed(w.listeners[0]) is None
        assert signal.getsignal(signal.SIGALRM) is app_handler
        time.sleep(0.5)
        assert fired == [signal.SIGALRM]
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def test_term_wakes_a_blocking_accept(listener: socket.socket) -> None:
    w = worker_for([listener])
    old = signal.signal(signal.SIGUSR2, lambda s, f: w.on_term())
    main = threading.get_ident()
    timer = threading.Timer(0.2, lambda: signal.pthread_kill(main, signal.SIGUSR2))
    try:
        timer.start()
        t = time.monotonic()
        w.run()  # blocks in accept() until the "TERM", then drains (nothing) and returns
        assert time.monotonic() - t < 2
        assert not w.alive and w.sb.words[W_STATE] == STATE_DRAINING
        assert w.sb.words[W_ACCEPTING] == 0 and not w.in_wait
    finally:
        timer.cancel()
        signal.signal(signal.SIGUSR2, old)


def test_run_with_two_listeners_and_drain(listener: socket.socket) -> None:
    second = socket.socket()
    second.bind(("127.0.0.1", 0))
    second.listen(16)
    w = worker_for([listener, second], keepalive=0)
    clients = []
    for s in (listener, second, second):
        c = socket.create_connection(s.getsockname(), timeout=5)
        c.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        clients.append(c)
    w.alive = False  # TERM before run(): only the drain runs, serving all three
    w.term_at = time.monotonic()
    w.run()
    for c in clients:
        assert parse_responses(read_until_close(c, 5))[0][0] == 200
        c.close()
    second.close()
