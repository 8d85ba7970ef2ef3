"""Response writing, start_response rules, keep-alive and error handling, in process."""

from __future__ import annotations

import io
import os
import socket
import sys
import threading
import time
from typing import Any, Callable, Iterable, Iterator

import pytest

from harness import InProcess, make_settings, parse_responses, read_response, serve_raw

# Every test here runs on both request paths, native and pure Python (conftest.request_path).
pytestmark = pytest.mark.usefixtures("request_path")

App = Callable[..., Iterable[bytes]]


def simple(body: Any = (b"hello",), headers: Any = None, status: str = "200 OK") -> App:
    def app(environ: dict, start_response: Any) -> Any:
        start_response(status, list(headers or [("Content-Type", "text/plain")]))
        return body

    return app


def one(app: App, raw: bytes = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", **kw: Any) -> tuple[int, dict, bytes, InProcess]:
    r = serve_raw(app, raw, **kw)
    rs = parse_responses(r.output, head_only=raw.startswith(b"HEAD"))
    assert rs, (r.output, r.log)
    status, headers, body = rs[0]
    return status, headers, body, r


def test_list_gets_content_length_and_one_send() -> None:
    status, h, body, r = one(simple([b"hello"]))
    assert status == 200 and body == b"hello"
    assert h["content-length"] == "5" and "transfer-encoding" not in h
    assert h["server"] == "gorn/test" and "date" in h
    assert r.output.startswith(b"HTTP/1.1 200 OK\r\n")


def test_multi_item_list_and_tuple() -> None:
    _, h, body, _ = one(simple([b"a", b"bc", b""]))
    assert body == b"abc" and h["content-length"] == "3"
    _, h, body, _ = one(simple((b"x", bytearray(b"y"))))
    assert body == b"xy"


def test_generator_is_chunked_on_11_and_close_delimited_on_10() -> None:
    def gen() -> Iterator[bytes]:
        yield b"ab"
        yield b""
        yield b"cde"

    _, h, body, r = one(simple(gen()))
    assert h["transfer-encoding"] == "chunked" and body == b"abcde"
    assert b"2\r\nab\r\n3\r\ncde\r\n0\r\n\r\n" in r.output
    _, h, body, r = one(simple(gen()), b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    assert "transfer-encoding" not in h and "content-length" not in h
    assert h["connection"] == "close" and body == b"abcde"


def test_empty_generator_gets_content_length_zero() -> None:
    _, h, body, _ = one(simple(iter([])))
    assert h["content-length"] == "0" and body == b""


def test_app_content_length_honoured_and_truncated() -> None:
    app = simple([b"hello world"], [("Content-Length", "5")])
    r = serve_raw(app, b"GET / HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n")
    rs = parse_responses(r.output)
    assert [b for _, _, b in rs] == [b"hello", b"hello"]
    assert "truncated" in r.log

    def gen() -> Iterator[bytes]:
        yield b"hel"
        yield b"lo world"

    r = serve_raw(simple(gen(), [("Content-Length", "5")]), b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert parse_responses(r.output)[0][2] == b"hello"


def test_short_body_closes_connection() -> None:
    app = simple([b"abc"], [("Content-Length", "10")])
    r = serve_raw(app, b"GET / HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert r.output.count(b"HTTP/1.1 200") == 1
    assert r.output.endswith(b"abc")
    assert b"Connection: close" in r.output


def test_head_has_no_body() -> None:
    status, h, body, r = one(simple([b"hello"], [("Content-Length", "5")]), b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert h["content-length"] == "5" and r.output.endswith(b"\r\n\r\n")

    def app(environ: dict, start_response: Any) -> Any:
        start_response("200 OK", [])
        return (x for x in [b"data"])

    r = serve_raw(app, b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n")
    rs = parse_responses(r.output.split(b"\r\n\r\n", 1)[1])
    assert rs[0][2] == b"data"
    assert b"Transfer-Encoding" not in r.output.split(b"\r\n\r\n", 1)[0]


@pytest.mark.parametrize("status", ["204 No Content", "304 Not Modified"])
def test_no_body_statuses(status: str) -> None:
    app = simple([b"ignored"], [("Content-Length", "7")], status)
    r = serve_raw(app, b"GET / HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert r.output.count(b"HTTP/1.1 " + status[:3].encode()) == 2
    assert b"ignored" not in r.output
    if status.startswith("204"):
        assert b"Content-Length" not in r.output
    else:
        assert b"Content-Length: 7" in r.output


@pytest.mark.parametrize(
    "headers",
    [
        [("X-Bad", "a\r\nInjected: yes")],
        [("X-Bad", "a\nb")],
        [("X-Bad", "a\rb")],
        [("X-Bad", "a\x00b")],
        [("X-Bad", "a\x01b")],
        [("Bad Name", "v")],
        [("Bad:Name", "v")],
        [("X-Bad\r\nInjected", "v")],
        [("X-Bad", 5)],
        [(b"X-Bad", "v")],
        [("X-Bad", "\u2603")],
        [("Content-Length", "abc")],
        [("Content-Length", "1"), ("Content-Length", "2")],
        [("X-Only-One",)],
    ],
)
def test_invalid_headers_are_500(headers: Any) -> None:
    status, h, body, r = one(simple([b"x"], headers))
    assert status == 500 and h["connection"] == "close"
    assert b"Injected" not in r.output
    assert "Traceback" in r.log


BAD_STATUSES = [
    "200", "OK", "2000 OK", "20 OK", "099 x", "600 Nope", "999 Max", "000 x", "200 A\r\nB: c", b"200 OK", 200,
    "2OO OK", "+20 OK", " 200 OK", "200\tOK", "200-OK", "\uff12\uff10\uff10 OK", "\u0662\u0660\u0660 OK",
    "200 OK\x00", "200 OK\x7f", "200 OK\n", "200 \u0100", "", None,
    # 1xx: WSGI has no interim responses; as the final status it would leave the client waiting
    "100 Continue", "101 Switching Protocols", "103 Early Hints", "199 Whatever",
]


@pytest.mark.parametrize("status", BAD_STATUSES)
def test_invalid_status_is_500(status: Any) -> None:
    s, h, _, r = one(simple([b"x"], [], status))
    assert s == 500 and h["connection"] == "close"
    assert b"B: c" not in r.output
    assert r.output.startswith(b"HTTP/1.1 500 Internal Server Error\r\n")
    assert r.output.count(b"HTTP/1.1 ") == 1  # no other status line went out
    assert "Traceback" in r.log and ("invalid WSGI status" in r.log or "WSGI status must be a str" in r.log)


@pytest.mark.parametrize("status", ["100 Continue", "103 Early Hints"])
def test_1xx_final_status_is_an_app_error_and_closes(status: str) -> None:
    """A 1xx as the final status: logged, 500, closed; the pipelined request is not read."""
    def lazy(environ: dict, start_response: Any) -> Any:  # start_response inside the iterable
        start_response(status, [("Link", "</s.css>; rel=preload")])
        yield b"never"

    for app in (simple([b"x"], [("Link", "</s.css>; rel=preload")], status), lazy):
        r = serve_raw(app, b"GET / HTTP/1.1\r\nHost: x\r\n\r\nGET /2 HTTP/1.1\r\nHost: x\r\n\r\n")
        rs = parse_responses(r.output)
        assert [x[0] for x in rs] == [500], r.output
        assert rs[0][1]["connection"] == "close" and b"Link" not in r.output and b"never" not in r.output
        assert status[:3].encode() + b" " not in r.output
        assert "1xx (informational) status cannot be the final response" in r.log, r.log
        assert "[ERROR]" in r.log and "Traceback" in r.log


def test_status_with_empty_reason() -> None:
    s, _, _, r = one(simple([b"x"], [], "299 "))
    assert s == 299 and r.output.startswith(b"HTTP/1.1 299 \r\n")


def test_app_server_and_date_kept_hop_by_hop_dropped() -> None:
    hdrs = [
        ("Server", "custom"),
        ("Date", "Thu, 01 Jan 1970 00:00:00 GMT"),
        ("Transfer-Encoding", "chunked"),
        ("Keep-Alive", "timeout=5"),
        ("Upgrade", "h2c"),
        ("X-Multi", "1"),
        ("X-Multi", "2"),
    ]
    _, h, body, r = one(simple([b"hi"], hdrs))
    assert h["server"] == "custom" and h["date"].startswith("Thu, 01 Jan 1970")
    assert "transfer-encoding" not in h and "keep-alive" not in h and "upgrade" not in h
    assert h["x-multi"] == "1, 2" and h["content-length"] == "2" and body == b"hi"
    assert r.output.count(b"Server:") == 1


def test_app_connection_close_is_honoured() -> None:
    r = serve_raw(simple([b"x"], [("Connection", "close")]), b"GET / HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert r.output.count(b"HTTP/1.1 200") == 1 and b"Connection: close" in r.output


def test_request_connection_close_and_pipelining() -> None:
    raw = b"GET /1 HTTP/1.1\r\nHost: x\r\n\r\nGET /2 HTTP/1.1\r\nHost: x\r\n\r\nGET /3 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\nGET /4 HTTP/1.1\r\nHost: x\r\n\r\n"

    def app(environ: dict, start_response: Any) -> Any:
        start_response("200 OK", [])
        return [environ["PATH_INFO"].encode()]

    r = serve_raw(app, raw)
    assert [b for _, _, b in parse_responses(r.output)] == [b"/1", b"/2", b"/3"]


def test_http10_keepalive_header() -> None:
    r = serve_raw(simple([b"x"]), b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET / HTTP/1.0\r\n\r\n")
    rs = parse_responses(r.output)
    assert len(rs) == 2
    assert rs[0][1]["connection"] == "keep-alive" and rs[1][1]["connection"] == "close"


def test_keepalive_zero_disables() -> None:
    r = serve_raw(simple([b"x"]), b"GET / HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n", keepalive=0)
    assert r.output.count(b"HTTP/1.1 200") == 1 and b"Connection: close" in r.output


def test_exception_before_headers_is_500() -> None:
    def app(environ: dict, start_response: Any) -> Any:
        raise KeyError("boom")

    s, h, body, r = one(app)
    assert s == 500 and h["connection"] == "close" and h["content-type"] == "text/plain"
    assert "Traceback" in r.log and "KeyError: 'boom'" in r.log
    assert "Error handling request GET /" in r.log


def test_exception_after_headers_closes_without_second_status() -> None:
    def gen() -> Iterator[bytes]:
        yield b"partial"
        raise RuntimeError("mid-stream")

    r = serve_raw(simple(gen()), b"GET / HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert r.output.count(b"HTTP/1.1") == 1
    assert b"partial" in r.output and not r.output.endswith(b"0\r\n\r\n")
    assert "RuntimeError: mid-stream" in r.log


def test_start_response_twice_without_exc_info() -> None:
    def app(environ: dict, start_response: Any) -> Any:
        start_response("200 OK", [])
        start_response("404 Not Found", [])
        return [b"x"]

    s, _, _, r = one(app)
    assert s == 500 and "AssertionError" in r.log


def test_exc_info_before_headers_replaces_status() -> None:
    def app(environ: dict, start_response: Any) -> Any:
        start_response("200 OK", [("X-A", "1")])
        try:
            raise ValueError("x")
        except ValueError:
            start_response("503 Service Unavailable", [("X-B", "2")], sys.exc_info())
        return [b"sorry"]

    s, h, body, _ = one(app)
    assert s == 503 and "x-a" not in h and h["x-b"] == "2" and body == b"sorry"


def test_exc_info_after_headers_reraises() -> None:
    def app(environ: dict, start_response: Any) -> Any:
        write = start_response("200 OK", [])
        write(b"sent")
        try:
            raise ValueError("late")
        except ValueError:
            start_response("500 Oops", [], sys.exc_info())
        return [b"never"]

    r = serve_raw(app, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert r.output.count(b"HTTP/1.1") == 1 and b"500" not in r.output
    assert "ValueError: late" in r.log


def test_write_callable() -> None:
    def app(environ: dict, start_response: Any) -> Any:
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        write(b"one,")
        write(b"")
        write(b"two,")
        return [b"three"]

    _, h, body, _ = one(app)
    assert h["transfer-encoding"] == "chunked" and body == b"one,two,three"


def test_write_with_content_length() -> None:
    def app(environ: dict, start_response: Any) -> Any:
        write = start_response("200 OK", [("Content-Length", "6")])
        write(b"abc")
        return iter([b"def"])

    r = serve_raw(app, b"GET / HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert [b for _, _, b in parse_responses(r.output)] == [b"abcdef", b"abcdef"]


def test_no_start_response_is_500() -> None:
    s, _, _, r = one(lambda e, sr: [b"x"])
    assert s == 500 and "start_response" in r.log


def test_non_bytes_body_is_500() -> None:
    s, _, _, r = one(simple(["text"]))
    assert s == 500 and "bytes" in r.log


class Closing:
    def __init__(self, items: list[bytes], fail_at: int = -1) -> None:
        self.items = items
        self.fail_at = fail_at
        self.closed = False

    def __iter__(self) -> Iterator[bytes]:
        for i, x in enumerate(self.items):
            if i == self.fail_at:
                raise RuntimeError("iteration failed")
            yield x

    def close(self) -> None:
        self.closed = True


def test_close_always_called() -> None:
    ok = Closing([b"a", b"b"])
    one(simple(ok))
    assert ok.closed
    bad = Closing([b"a", b"b"], fail_at=1)
    serve_raw(simple(bad), b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert bad.closed
    early = Closing([b"a"], fail_at=0)
    s, _, _, _ = one(simple(early))
    assert s == 500 and early.closed


def test_close_called_when_client_disconnects() -> None:
    from gorn_worker.http import Connection, Limits
    from gorn_worker.logs import Logger
    from gorn_worker.scoreboard import Scoreboard
    from gorn_worker.sync import SyncWorker

    it = Closing([b"x" * 65536] * 200)
    st = make_settings()
    log = Logger("debug", fd=os.open(os.devnull, os.O_WRONLY))
    w = SyncWorker(simple(it), st, log, Scoreboard(-1, 0), [])
    a, b = socket.socketpair()
    a.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    t = threading.Thread(target=w.handle, args=(b, "", None))
    t.start()
    a.recv(1000)
    a.close()
    t.join(5)
    assert not t.is_alive() and it.closed
    del Connection, Limits


def test_file_wrapper_sendfile(tmp_path: Any) -> None:
    p = tmp_path / "f.bin"
    data = os.urandom(300_000)
    p.write_bytes(data)

    def app(environ: dict, start_response: Any) -> Any:
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        f = open(p, "rb")
        f.seek(1000)
        return environ["wsgi.file_wrapper"](f, 8192)

    r = serve_raw(app, b"GET / HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n")
    rs = parse_responses(r.output)
    assert len(rs) == 2 and all(b == data[1000:] for _, _, b in rs)
    assert rs[0][1]["content-length"] == str(len(data) - 1000)

    def app_cl(environ: dict, start_response: Any) -> Any:
        start_response("200 OK", [("Content-Length", "100")])
        return environ["wsgi.file_wrapper"](open(p, "rb"))

    _, h, body, _ = one(app_cl)
    assert body == data[:100]


def test_file_wrapper_non_file_falls_back() -> None:
    def app(environ: dict, start_response: Any) -> Any:
        start_response("200 OK", [])
        return environ["wsgi.file_wrapper"](io.BytesIO(b"x" * 20000), 4096)

    _, h, body, _ = one(app)
    assert body == b"x" * 20000


def test_unread_body_is_drained_for_keepalive() -> None:
    app = simple([b"ok"])
    raw = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n0123456789GET / HTTP/1.1\r\nHost: x\r\n\r\n"
    r = serve_raw(app, raw)
    assert r.output.count(b"HTTP/1.1 200") == 2
    raw = b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n"
    r = serve_raw(app, raw)
    assert r.output.count(b"HTTP/1.1 200") == 2


def test_big_unread_body_closes() -> None:
    app = simple([b"ok"])
    raw = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n" + b"x" * 1000
    r = serve_raw(app, raw)
    assert r.output.count(b"HTTP/1.1 200") == 1 and b"Connection: close" in r.output


def test_invalid_chunk_while_app_reads_is_400() -> None:
    def app(environ: dict, start_response: Any) -> Any:
        environ["wsgi.input"].read()
        start_response("200 OK", [])
        return [b"read"]

    raw = b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"
    s, h, _, r = one(app, raw)
    assert s == 400 and h["connection"] == "close"


def test_chunked_body_over_limit_is_413() -> None:
    def app(environ: dict, start_response: Any) -> Any:
        environ["wsgi.input"].read()
        start_response("200 OK", [])
        return [b"read"]

    raw = b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n8\r\n12345678\r\n8\r\n12345678\r\n0\r\n\r\n"
    s, _, _, _ = one(app, raw, limit_request_body=10)
    assert s == 413
    s, _, _, _ = one(app, raw, limit_request_body=16)
    assert s == 200


def test_swallowed_body_error_still_closes() -> None:
    def app(environ: dict, start_response: Any) -> Any:
        try:
            environ["wsgi.input"].read()
        except OSError:
            pass
        start_response("200 OK", [])
        return [b"fine"]

    raw = b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n"
    r = serve_raw(app, raw)
    assert r.output.count(b"HTTP/1.1") == 1 and b"Connection: close" in r.output


@pytest.mark.parametrize(
    "raw,status",
    [
        (b"GARBAGE\r\n\r\n", 400),
        (b"GET / HTTP/2.0\r\n\r\n", 505),
        (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n", 501),
        (b"POST / HTTP/1.1\r\nHost: x\r\nExpect: nope\r\n\r\n", 417),
        (b"GET /" + b"a" * 5000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
        (b"GET / HTTP/1.1\r\nHost: x\r\n" + b"X-A: b\r\n" * 101 + b"\r\n", 431),
    ],
)
def test_pre_app_errors(raw: bytes, status: int) -> None:
    called = []

    def app(environ: dict, start_response: Any) -> Any:
        called.append(1)
        return simple()(environ, start_response)

    r = serve_raw(app, raw)
    assert not called
    line = r.output.split(b"\r\n", 1)[0].decode()
    assert line.startswith(f"HTTP/1.1 {status} ")
    _, h, body = parse_responses(r.output)[0]
    assert h["connection"] == "close" and h["content-type"] == "text/plain"
    assert body.endswith(b"\n") and body.count(b"\n") == 1
    if status == 501:
        assert line == "HTTP/1.1 501 Not Implemented"


def test_413_before_app_for_content_length() -> None:
    r = serve_raw(simple(), b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n" + b"x" * 100, limit_request_body=10)
    assert r.output.startswith(b"HTTP/1.1 413 ")


def _interactive(app: App, **settings: Any) -> tuple[socket.socket, threading.Thread]:
    from gorn_worker.logs import Logger
    from gorn_worker.scoreboard import Scoreboard
    from gorn_worker.sync import SyncWorker

    st = make_settings(**settings)
    log = Logger("debug", fd=os.open(os.devnull, os.O_WRONLY))
    w = SyncWorker(app, st, log, Scoreboard(-1, 0), [])
    a, b = socket.socketpair()
    t = threading.Thread(target=w.handle, args=(b, "", None), daemon=True)
    t.start()
    return a, t


def test_expect_100_continue_sent_on_first_read() -> None:
    def app(environ: dict, start_response: Any) -> Any:
        data = environ["wsgi.input"].read()
        start_response("200 OK", [])
        return [data.upper()]

    a, t = _interactive(app)
    with a:
        a.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
        a.settimeout(5)
        assert a.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"
        a.sendall(b"hello")
        s, h, body = read_response(a)
        assert s == 200 and body == b"HELLO" and "connection" not in h
    t.join(5)


def test_expect_100_not_sent_if_app_does_not_read() -> None:
    a, t = _interactive(simple([b"nope"], status="401 Unauthorized"))
    with a:
        a.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
        s, h, body = read_response(a)
        assert s == 401 and h["connection"] == "close"
        a.settimeout(5)
        assert a.recv(100) == b""
    t.join(5)


def test_slow_body_times_out_and_closes() -> None:
    def app(environ: dict, start_response: Any) -> Any:
        environ["wsgi.input"].read()
        start_response("200 OK", [])
        return [b"x"]

    a, t = _interactive(app, header_timeout=0.3)
    with a:
        a.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc")
        start = time.monotonic()
        a.settimeout(5)
        assert a.recv(100) == b""
        assert time.monotonic() - start < 2
    t.join(5)


def test_idle_keepalive_closes_after_keepalive_seconds() -> None:
    a, t = _interactive(simple(), keepalive=0.3)
    with a:
        a.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        s, _, _ = read_response(a)
        start = time.monotonic()
        a.settimeout(5)
        assert a.recv(100) == b""
        assert 0.2 < time.monotonic() - start < 2
    t.join(5)


def test_date_header_format() -> None:
    from email.utils import parsedate_to_datetime

    _, h, _, _ = one(simple())
    assert parsedate_to_datetime(h["date"]).tzname() == "UTC"


def test_imf_fixdate_matches_email_utils() -> None:
    """The Date header's formatter agrees with the standard library's, across years, leap
    days and every weekday and month."""
    import email.utils
    import random

    from gorn_worker.wsgi import imf_fixdate

    rng = random.Random(7)
    stamps = [0, 784111777, 951782400, 1709164800, 4102444799] + [rng.randrange(0, 4102444800) for _ in range(2000)]
    for t in stamps:
        assert imf_fixdate(t) == email.utils.formatdate(t, usegmt=True), t
