"""gunicorn's StatsD lines from the worker, read back from a real UDP socket."""

from __future__ import annotations

import socket
import tempfile

from gorn_worker import statsd as _statsd
from gorn_worker.logs import Logger


def listener() -> tuple[socket.socket, str]:
    srv = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    srv.bind(("127.0.0.1", 0))
    srv.settimeout(2)
    return srv, f"127.0.0.1:{srv.getsockname()[1]}"


def received(srv: socket.socket) -> tuple[int, list[str]]:
    """Datagrams and lines until none arrives for 0.2 s."""
    srv.settimeout(0.2)
    datagrams, lines = 0, list[str]()
    while True:
        try:
            data = srv.recv(65536)
        except TimeoutError:
            return datagrams, lines
        datagrams += 1
        lines += data.decode().split("\n")


def test_request_lines_are_gunicorns() -> None:
    srv, addr = listener()
    s = _statsd.Statsd(_statsd.connect(addr), "web.", "env:test,team:a")
    s.request(200, 12_345_678)  # 12.345678 ms: gunicorn sends 12.345
    s.request(404, 1_000)
    s.flush()
    n, lines = received(srv)
    tags = "|#env:test,team:a"
    assert n == 1  # one datagram for the batch
    assert lines == [
        "web.gunicorn.request.duration:12.345|ms" + tags,
        "web.gunicorn.requests:1|c|@1.0" + tags,
        "web.gunicorn.request.status.200:1|c|@1.0" + tags,
        "web.gunicorn.request.duration:0.001|ms" + tags,
        "web.gunicorn.requests:1|c|@1.0" + tags,
        "web.gunicorn.request.status.404:1|c|@1.0" + tags,
    ]


def test_flushes_from_the_request_path_in_datagram_sized_batches() -> None:
    srv, addr = listener()
    s = _statsd.Statsd(_statsd.connect(addr))
    for _ in range(100):
        s.request(200, 5_000_000)
    n, lines = received(srv)  # no flush(): the request path sent what filled datagrams
    assert 3 <= n < 100 and len(lines) >= 0.8 * 300
    s.flush()
    n2, rest = received(srv)
    assert len(lines) + len(rest) == 300 and rest.count("gunicorn.requests:1|c|@1.0") + lines.count("gunicorn.requests:1|c|@1.0") == 100


def test_flush_thread_sends_within_the_interval() -> None:
    srv, addr = listener()
    s = _statsd.Statsd.start(addr, "", "")
    s.request(201, 1_000_000)
    srv.settimeout(_statsd.FLUSH_INTERVAL + 1)
    assert b"gunicorn.request.status.201:1|c|@1.0" in srv.recv(65536)


def test_log_counters() -> None:
    srv, addr = listener()
    s = _statsd.Statsd(_statsd.connect(addr))
    with tempfile.TemporaryFile() as f:
        log = Logger("info", "text", fd=f.fileno())
        log.count = s.log
        log.info("not counted")
        log.warning("w")
        log.error("e")
        log.critical("c")
        try:
            raise ValueError("x")
        except ValueError:
            log.exception("boom")
    s.flush()
    _, lines = received(srv)
    assert lines == [f"gunicorn.log.{k}:1|c|@1.0" for k in ("warning", "error", "critical", "exception")]


def test_no_server_is_not_an_error() -> None:
    srv, addr = listener()
    srv.close()  # ICMP port unreachable: the next send fails with ECONNREFUSED
    s = _statsd.Statsd(_statsd.connect(addr))
    for _ in range(3):
        s.request(200, 1)
        s.flush()


def test_unix_datagram_socket() -> None:
    with tempfile.TemporaryDirectory() as d:
        path = f"{d}/statsd.sock"
        srv = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        srv.bind(path)
        s = _statsd.Statsd(_statsd.connect("unix://" + path))
        s.request(500, 2_000_000)
        s.flush()
        _, lines = received(srv)
        assert "gunicorn.request.status.500:1|c|@1.0" in lines


def test_unresolvable_host() -> None:
    try:
        _statsd.connect("no-such-host.invalid:8125")
    except _statsd.StatsdError as e:
        assert "no-such-host.invalid" in str(e)
    else:
        raise AssertionError("no error")
