"""Unit tests of the HTTP/1.x head parser, the head reader and the body readers."""

from __future__ import annotations

import socket
import threading
import time
from typing import Any, Iterator, Optional

import pytest

from gorn_worker.http import (
    EMPTY_BODY,
    SECURE_SCHEME_HEADERS,
    BodyTooLarge,
    ChunkedBody,
    ClientDisconnected,
    Connection,
    HeadTimeout,
    HTTPError,
    IncompleteHead,
    InvalidBody,
    LengthBody,
    Limits,
    Proxy,
    Request,
    parse_request,
    split_host,
)

# Every test here runs on both request paths, native and pure Python (conftest.request_path).
pytestmark = pytest.mark.usefixtures("request_path")

BASE = {
    "wsgi.url_scheme": "http",
    "SERVER_NAME": "0.0.0.0",
    "SERVER_PORT": "8000",
    "REMOTE_ADDR": "10.0.0.1",
    "SCRIPT_NAME": "",
}


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    a, b = socket.socketpair()
    yield a, b
    a.close()
    b.close()


def conn_for(sock: socket.socket, **limits: Any) -> Connection:
    return Connection(sock, Limits(**limits))


def parse(raw: bytes, root: str = "", trusted: bool = False, real_ip: Any = None, **limits: Any) -> Request:
    """Parse a head given with or without its final CRLFCRLF; ``trusted``: from a trusted
    proxy (gunicorn's scheme headers; ``real_ip``, the hop trust test of --forwarded-real-ip)."""
    a, b = socket.socketpair()
    try:
        head = raw[:-4] if raw.endswith(b"\r\n\r\n") else raw
        proxy = Proxy(SECURE_SCHEME_HEADERS, real_ip) if trusted else None
        return parse_request(head, conn_for(b, **limits), dict(BASE), root, proxy)
    finally:
        a.close()
        b.close()


def status_of(raw: bytes, **kw: Any) -> int:
    try:
        parse(raw, **kw)
    except HTTPError as e:
        return e.status
    return 200


# ------------------------------------------------------------------- valid


def test_simple_get() -> None:
    r = parse(b"GET /a/b?x=1&y=2 HTTP/1.1\r\nHost: example.com\r\nUser-Agent: t\r\n\r\n")
    e = r.environ
    assert e["REQUEST_METHOD"] == "GET"
    assert e["PATH_INFO"] == "/a/b"
    assert e["QUERY_STRING"] == "x=1&y=2"
    assert e["RAW_URI"] == "/a/b?x=1&y=2"
    assert e["SERVER_PROTOCOL"] == "HTTP/1.1"
    assert e["HTTP_HOST"] == "example.com"
    assert e["HTTP_USER_AGENT"] == "t"
    assert e["SERVER_NAME"] == "example.com" and e["SERVER_PORT"] == "80"
    assert e["wsgi.input"] is EMPTY_BODY
    assert "CONTENT_LENGTH" not in e and "CONTENT_TYPE" not in e
    assert r.v11 and r.keepalive and r.body is None
    assert r.path == b"/a/b"


def test_percent_decoding_is_latin1() -> None:
    e = parse(b"GET /a%20b/%E4%B8%AD/%2F?q=%20 HTTP/1.1\r\nHost: x\r\n\r\n").environ
    assert e["PATH_INFO"] == "/a b/" + "中".encode().decode("latin-1") + "//"
    assert e["QUERY_STRING"] == "q=%20"
    assert e["RAW_URI"] == "/a%20b/%E4%B8%AD/%2F?q=%20"


def test_raw_non_ascii_target_is_refused() -> None:
    """As gunicorn: a target must be percent-encoded ASCII; lowercase methods are refused too."""
    for raw in ("GET /caf\u00e9 HTTP/1.1\r\nHost: x\r\n\r\n".encode("utf-8"), b"get / HTTP/1.1\r\nHost: x\r\n\r\n"):
        with pytest.raises(HTTPError) as ei:
            parse(raw)
        assert ei.value.status == 400


def test_fragment_is_dropped() -> None:
    e = parse(b"GET /p?q=1#frag HTTP/1.1\r\nHost: x\r\n\r\n").environ
    assert e["PATH_INFO"] == "/p" and e["QUERY_STRING"] == "q=1"
    assert e["RAW_URI"] == "/p?q=1#frag"


def test_absolute_form() -> None:
    e = parse(b"GET http://example.com:8080/p/q?x=1 HTTP/1.1\r\nHost: other\r\n\r\n").environ
    assert e["PATH_INFO"] == "/p/q" and e["QUERY_STRING"] == "x=1"
    assert e["SERVER_NAME"] == "example.com" and e["SERVER_PORT"] == "8080"
    assert e["RAW_URI"] == "http://example.com:8080/p/q?x=1"
    assert e["HTTP_HOST"] == "example.com:8080"  # RFC 9112 3.2.2: the target's authority wins
    e = parse(b"GET HTTPS://example.com HTTP/1.1\r\nHost: x\r\n\r\n").environ
    assert e["PATH_INFO"] == "/" and e["SERVER_NAME"] == "example.com"
    e = parse(b"GET http://example.com?a=b HTTP/1.1\r\nHost: x\r\n\r\n").environ
    assert e["PATH_INFO"] == "/" and e["QUERY_STRING"] == "a=b"


def test_asterisk_and_connect() -> None:
    e = parse(b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n").environ
    assert e["PATH_INFO"] == "*"
    e = parse(b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n").environ
    assert e["PATH_INFO"] == "" and e["SERVER_NAME"] == "example.com" and e["SERVER_PORT"] == "443"


def test_header_handling() -> None:
    raw = (
        b"GET / HTTP/1.1\r\n"
        b"Host: h\r\n"
        b"Accept: a\r\n"
        b"accept: b\r\n"
        b"X-Spaces: \t  padded value \t\r\n"
        b"X-Tab: a\tb\r\n"
        b"X-Empty:\r\n"
        b"X_Under: dropped\r\n"
        b"Content-Type: text/plain\r\n"
        b"X-Obs: caf\xe9\r\n"
        b"\r\n"
    )
    e = parse(raw).environ
    assert e["HTTP_ACCEPT"] == "a,b"
    assert e["HTTP_X_SPACES"] == "padded value"
    assert e["HTTP_X_TAB"] == "a\tb"
    assert e["HTTP_X_EMPTY"] == ""
    assert "HTTP_X_UNDER" not in e and not any("UNDER" in k for k in e)
    assert e["CONTENT_TYPE"] == "text/plain" and "HTTP_CONTENT_TYPE" not in e
    assert e["HTTP_X_OBS"] == "caf\xe9"


def test_underscore_content_length_is_dropped_not_used() -> None:
    r = parse(b"POST / HTTP/1.1\r\nHost: x\r\nContent_Length: 10\r\n\r\n")
    assert "CONTENT_LENGTH" not in r.environ and r.body is None


@pytest.mark.parametrize(
    "raw,keep",
    [
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", True),
        (b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", False),
        (b"GET / HTTP/1.1\r\nHost: x\r\nConnection: Keep-Alive, CLOSE\r\n\r\n", False),
        (b"GET / HTTP/1.0\r\n\r\n", False),
        (b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", True),
        (b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", True),
        (b"GET / HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\n\r\n", True),
    ],
)
def test_keepalive(raw: bytes, keep: bool) -> None:
    assert parse(raw).keepalive is keep


def test_http10() -> None:
    e = parse(b"GET / HTTP/1.0\r\n\r\n").environ
    assert e["SERVER_PROTOCOL"] == "HTTP/1.0"
    assert e["SERVER_NAME"] == "0.0.0.0" and e["SERVER_PORT"] == "8000"


def test_host_forms() -> None:
    e = parse(b"GET / HTTP/1.1\r\nHost: [::1]:8443\r\n\r\n").environ
    assert e["SERVER_NAME"] == "::1" and e["SERVER_PORT"] == "8443"
    e = parse(b"GET / HTTP/1.1\r\nHost: 0.0.0.0=5000\r\n\r\n").environ
    assert e["SERVER_NAME"] == "0.0.0.0=5000"
    e = parse(b"GET / HTTP/1.1\r\nHost:\r\n\r\n").environ
    assert e["SERVER_NAME"] == "0.0.0.0" and e["SERVER_PORT"] == "8000"
    assert split_host("a b") is None and split_host("x/y") is None and split_host("h:1x") is None


def test_root_path() -> None:
    e = parse(b"GET /app/x HTTP/1.1\r\nHost: x\r\n\r\n", root="/app").environ
    assert e["PATH_INFO"] == "/x"
    e = parse(b"GET /app HTTP/1.1\r\nHost: x\r\n\r\n", root="/app").environ
    assert e["PATH_INFO"] == ""
    e = parse(b"GET /application HTTP/1.1\r\nHost: x\r\n\r\n", root="/app").environ
    assert e["PATH_INFO"] == "/application"


def test_bodies_selected() -> None:
    r = parse(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n")
    assert isinstance(r.body, LengthBody) and r.environ["CONTENT_LENGTH"] == "5"
    r = parse(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
    assert r.body is None and r.environ["wsgi.input"] is EMPTY_BODY
    r = parse(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: Chunked\r\n\r\n")
    assert isinstance(r.body, ChunkedBody)
    r = parse(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nExpect: 100-Continue\r\n\r\n")
    assert r.body is not None and r.body.continue_pending
    r = parse(b"POST / HTTP/1.0\r\nContent-Length: 3\r\nExpect: whatever\r\n\r\n")
    assert r.body is not None and not r.body.continue_pending


def test_proxy_headers_only_when_trusted() -> None:
    raw = b"GET / HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 1.2.3.4, 10.0.0.2\r\nX-Forwarded-Proto: https\r\n\r\n"
    e = parse(raw).environ
    assert e["REMOTE_ADDR"] == "10.0.0.1" and e["wsgi.url_scheme"] == "http"
    e = parse(raw, trusted=True).environ  # gunicorn: the scheme, never REMOTE_ADDR
    assert e["REMOTE_ADDR"] == "10.0.0.1" and e["wsgi.url_scheme"] == "https"
    e = parse(b'GET / HTTP/1.1\r\nHost: x\r\nForwarded: for=5.6.7.8;proto=https\r\n\r\n', trusted=True).environ
    assert e["REMOTE_ADDR"] == "10.0.0.1" and e["wsgi.url_scheme"] == "http"  # RFC 7239 is not read


def test_scheme_headers_as_gunicorn() -> None:
    def scheme(headers: bytes) -> str:
        return str(parse(b"GET / HTTP/1.1\r\nHost: h\r\n" + headers + b"\r\n", trusted=True).environ["wsgi.url_scheme"])

    assert scheme(b"X-Forwarded-Ssl: on\r\n") == "https"
    assert scheme(b"X-Forwarded-Protocol: ssl\r\n") == "https"
    assert scheme(b"X-Forwarded-Proto: https\r\n") == "https"
    assert scheme(b"X-Forwarded-Proto: HTTPS\r\n") == "http"  # exact value, as gunicorn
    assert scheme(b"X-Forwarded-Proto: gopher\r\n") == "http"
    assert scheme(b"X-Forwarded-Proto: https\r\nX-Forwarded-Ssl: on\r\n") == "https"
    with pytest.raises(HTTPError) as ei:
        scheme(b"X-Forwarded-Proto: https\r\nX-Forwarded-Ssl: off\r\n")
    assert ei.value.status == 400


def test_real_ip_believes_only_trusted_hops() -> None:
    """--forwarded-real-ip: REMOTE_ADDR is the rightmost X-Forwarded-For hop that a trusted
    proxy did not append; a client cannot put itself anywhere else by writing the header."""
    proxies = {"10.0.0.2", "10.0.0.3"}

    def remote(xff: bytes) -> str:
        raw = b"GET / HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: " + xff + b"\r\n\r\n"
        return str(parse(raw, trusted=True, real_ip=proxies.__contains__).environ["REMOTE_ADDR"])

    assert remote(b"203.0.113.7") == "203.0.113.7"
    assert remote(b"1.1.1.1, 203.0.113.7, 10.0.0.3, 10.0.0.2") == "203.0.113.7"  # 1.1.1.1 is the client's own
    assert remote(b"10.0.0.3, 10.0.0.2") == "10.0.0.3"
    assert remote(b"203.0.113.7, not-an-ip") == "10.0.0.1"  # garbage ends the walk: the peer stays
    assert remote(b"not-an-ip, 203.0.113.7") == "203.0.113.7"
    assert parse(b"GET / HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 203.0.113.7\r\n\r\n", trusted=False).environ["REMOTE_ADDR"] == "10.0.0.1"


# ----------------------------------------------------------------- invalid

INVALID = [
    # request line
    (b"GET  / HTTP/1.1\r\n\r\n", 400),
    (b"GET / HTTP/1.1 \r\n\r\n", 400),
    (b" GET / HTTP/1.1\r\n\r\n", 400),
    (b"GET /\r\n\r\n", 400),
    (b"GET\r\n\r\n", 400),
    (b"G(T / HTTP/1.1\r\n\r\n", 400),
    (b"GET\t/ HTTP/1.1\r\n\r\n", 400),
    (b"GET /a\tb HTTP/1.1\r\n\r\n", 400),
    (b"GET /a\x00b HTTP/1.1\r\n\r\n", 400),
    (b"GET /a\x7fb HTTP/1.1\r\n\r\n", 400),
    (b"GET / HTTP/2.0\r\n\r\n", 505),
    (b"GET / HTTP/1.2\r\n\r\n", 505),
    (b"GET / HTTP/0.9\r\n\r\n", 505),
    (b"GET / HTTP/3.0\r\n\r\n", 505),
    (b"GET / HTTP/1.1x\r\n\r\n", 400),
    (b"GET / http/1.1\r\n\r\n", 400),
    (b"GET / HTTP/11\r\n\r\n", 400),
    (b"GET / HTTP/1.10\r\n\r\n", 400),
    (b"GET / HTTPS/1.1\r\n\r\n", 400),
    (b"GET * HTTP/1.1\r\n\r\n", 400),
    (b"CONNECT / HTTP/1.1\r\n\r\n", 400),
    (b"CONNECT example.com HTTP/1.1\r\n\r\n", 400),
    (b"GET ftp://x/ HTTP/1.1\r\n\r\n", 400),
    (b"GET foo HTTP/1.1\r\n\r\n", 400),
    (b"GET http://u@h/ HTTP/1.1\r\n\r\n", 400),
    (b"GET http:///p HTTP/1.1\r\n\r\n", 400),
    # header fields
    (b"GET / HTTP/1.1\r\nHost : x\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost\t: x\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nNoColon\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\n: empty-name\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nX(Y): z\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nX-A: a\r\n b\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nX-A: a\r\n\tb\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\n X-A: a\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nX-A: a\x00b\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nX-A: a\x7fb\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nX-A: a\x01b\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nX-A: a\rb\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nX-A: a\nb\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nX-A: a\r\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nX\xe9: a\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: a\r\nhost: b\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: a@b\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nContent-Type: a\r\nContent-Type: b\r\n\r\n", 400),
    # framing
    (b"POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nContent-Length: 5, 5\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nContent-Length: +5\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nContent-Length: 5 5\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nContent-Length: 0x10\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nContent-Length: 1_0\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nContent-Length:\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nContent-Length: \xb2\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
    (b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked, chunked\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked,\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nTransfer-Encoding:\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nTransfer-Encoding: \"chunked\"\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n", 501),
    (b"POST / HTTP/1.1\r\nTransfer-Encoding: identity\r\n\r\n", 501),
    (b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501),
    (b"POST / HTTP/1.1\r\nTransfer-Encoding: xchunked\r\n\r\n", 501),
    (b"POST / HTTP/1.1\r\nExpect: 100-continue, x\r\n\r\n", 417),
    (b"POST / HTTP/1.1\r\nExpect: 200-ok\r\n\r\n", 417),
]


@pytest.mark.parametrize("raw,status", INVALID)
def test_invalid(raw: bytes, status: int) -> None:
    with pytest.raises(HTTPError) as ei:
        parse(raw)
    assert ei.value.status == status
    # Many of these heads have no Host: they must fail for what they test, first.
    assert ei.value.detail != "missing Host header", ei.value


# RFC 9112 3.2: (head, detail of the 400)
HOST_INVALID = [
    (b"GET / HTTP/1.1\r\n\r\n", "missing Host header"),
    (b"GET / HTTP/1.1\r\nX-Host: a\r\nHost_: b\r\nHo_st: c\r\n\r\n", "missing Host header"),
    (b"POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\n", "missing Host header"),
    (b"GET http://a/ HTTP/1.1\r\n\r\n", "missing Host header"),  # 3.2.2: required anyway
    (b"CONNECT a:443 HTTP/1.1\r\n\r\n", "missing Host header"),
    (b"OPTIONS * HTTP/1.1\r\n\r\n", "missing Host header"),
    (b"GET http://a/ HTTP/1.1\r\nHost: a b\r\n\r\n", "invalid Host header"),  # replaced, still checked
    (b"GET / HTTP/1.1\r\nHost: a%zz\r\n\r\n", "invalid Host header"),
    (b"GET / HTTP/1.1\r\nHost: a%2\r\n\r\n", "invalid Host header"),
    (b"GET / HTTP/1.1\r\nHost: a, b\r\n\r\n", "invalid Host header"),
    (b"GET / HTTP/1.1\r\nHost: a\tb\r\n\r\n", "invalid Host header"),
    (b"GET / HTTP/1.1\r\nHost: a?b\r\n\r\n", "invalid Host header"),
    (b"GET / HTTP/1.1\r\nHost: a#b\r\n\r\n", "invalid Host header"),
    (b"GET / HTTP/1.1\r\nHost: a\\b\r\n\r\n", "invalid Host header"),
    (b"GET / HTTP/1.1\r\nHost: caf\xe9\r\n\r\n", "invalid Host header"),
    (b"GET / HTTP/1.1\r\nHost: ::1\r\n\r\n", "invalid Host header"),
    (b"GET / HTTP/1.1\r\nHost: [::1]x\r\n\r\n", "invalid Host header"),
    (b"GET / HTTP/1.0\r\nHost: a/b\r\n\r\n", "invalid Host header"),
    (b"GET / HTTP/1.0\r\nHost: a\r\nHost: a\r\n\r\n", "duplicate Host header"),
    (b"GET / HTTP/1.1\r\nHost:\r\nHost: a\r\n\r\n", "duplicate Host header"),
    (b"GET http://a%zz/ HTTP/1.1\r\nHost: a\r\n\r\n", "invalid authority in request target"),
]


@pytest.mark.parametrize("raw,detail", HOST_INVALID)
def test_host_invalid(raw: bytes, detail: str) -> None:
    with pytest.raises(HTTPError) as ei:
        parse(raw)
    assert (ei.value.status, ei.value.detail) == (400, detail)


def test_host_rules() -> None:
    # HTTP/1.0 may omit Host: the listener's name stays
    e = parse(b"GET / HTTP/1.0\r\n\r\n").environ
    assert "HTTP_HOST" not in e and e["SERVER_NAME"] == "0.0.0.0" and e["SERVER_PORT"] == "8000"
    e = parse(b"GET http://t.example:81/x HTTP/1.0\r\n\r\n").environ
    assert e["HTTP_HOST"] == "t.example:81" and e["SERVER_NAME"] == "t.example" and e["SERVER_PORT"] == "81"
    # absolute-form: the authority replaces the Host value (RFC 9112 3.2.2)
    e = parse(b"GET http://t.example/x HTTP/1.1\r\nHost: other:8080\r\n\r\n").environ
    assert e["HTTP_HOST"] == "t.example" and e["SERVER_NAME"] == "t.example" and e["SERVER_PORT"] == "80"
    e = parse(b"GET http://[::1]:9/ HTTP/1.1\r\nHost:\r\n\r\n").environ
    assert e["HTTP_HOST"] == "[::1]:9" and e["SERVER_NAME"] == "::1" and e["SERVER_PORT"] == "9"
    # CONNECT: SERVER_NAME/PORT from the target, HTTP_HOST as sent
    e = parse(b"CONNECT t.example:443 HTTP/1.1\r\nHost: proxy.example\r\n\r\n").environ
    assert e["HTTP_HOST"] == "proxy.example" and e["SERVER_NAME"] == "t.example" and e["SERVER_PORT"] == "443"
    # valid uri-host forms
    e = parse(b"GET / HTTP/1.1\r\nHost: a%2Db.example:\r\n\r\n").environ
    assert e["SERVER_NAME"] == "a%2Db.example" and e["SERVER_PORT"] == "80"
    e = parse(b"GET / HTTP/1.1\r\nhOsT: \t x.example:8 \r\n\r\n").environ
    assert e["HTTP_HOST"] == "x.example:8" and e["SERVER_PORT"] == "8"
    assert split_host("a%zz") is None and split_host("a%") is None and split_host("a%2Fb") == ("a%2Fb", "")


def test_limits() -> None:
    assert status_of(b"GET /" + b"a" * 30 + b" HTTP/1.1\r\n\r\n", line=20) == 414
    assert status_of(b"GET /" + b"a" * 5 + b" HTTP/1.1\r\nHost: x\r\n\r\n", line=20) == 200
    hdrs = b"Host: x\r\n" + b"".join(b"X-%d: v\r\n" % i for i in range(4))  # 5 fields
    assert status_of(b"GET / HTTP/1.1\r\n" + hdrs + b"\r\n", fields=4) == 431
    assert status_of(b"GET / HTTP/1.1\r\n" + hdrs + b"\r\n", fields=5) == 200
    # the field line plus CRLF must fit in field_size
    assert status_of(b"GET / HTTP/1.1\r\nX: " + b"v" * 16 + b"\r\n\r\n", field_size=20) == 431
    assert status_of(b"GET / HTTP/1.1\r\nHost: x\r\nX: " + b"v" * 15 + b"\r\n\r\n", field_size=20) == 200
    assert status_of(b"POST / HTTP/1.1\r\nContent-Length: 11\r\n\r\n", body=10) == 413
    assert status_of(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n", body=10) == 200
    # 0 means unlimited
    assert status_of(b"GET /" + b"a" * 10000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", line=0) == 200


# ------------------------------------------------------------- head reader


def reader_result(pair: tuple[socket.socket, socket.socket], data: bytes, close: bool = True, **limits: Any) -> Any:
    c = body_conn(pair, data, close, **limits)
    try:
        return c.read_head(), c
    except (HTTPError, HeadTimeout, IncompleteHead) as e:
        return e, c


def test_read_head_pipelined(pair: Any) -> None:
    head, c = reader_result(pair, b"GET /1 HTTP/1.1\r\n\r\nGET /2 HTTP/1.1\r\n\r\n")
    assert head == b"GET /1 HTTP/1.1"
    assert c.read_head() == b"GET /2 HTTP/1.1"
    assert c.read_head() is None


def test_read_head_skips_leading_empty_lines(pair: Any) -> None:
    head, _ = reader_result(pair, b"\r\n\r\nGET / HTTP/1.1\r\n\r\n")
    assert head == b"GET / HTTP/1.1"


def test_read_head_empty_lines_between_requests(pair: Any) -> None:
    head, c = reader_result(pair, b"GET /1 HTTP/1.1\r\n\r\n\r\n\r\nGET /2 HTTP/1.1\r\n\r\n")
    assert head == b"GET /1 HTTP/1.1"
    assert c.read_head() == b"GET /2 HTTP/1.1"


def test_read_head_too_many_empty_lines(pair: Any) -> None:
    err, _ = reader_result(pair, b"\r\n" * 600 + b"GET / HTTP/1.1\r\n\r\n")
    assert isinstance(err, HTTPError) and err.status == 400


SPLIT_HEADS = [
    (b"GET /abc HTTP/1.1\r\nHost: x\r\nA: b\r\n\r\n", b"GET /abc HTTP/1.1\r\nHost: x\r\nA: b"),
    (b"\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n", b"GET / HTTP/1.1\r\nHost: x"),
    (b"GET / HTTP/1.1\r\nHost: x\n\r\n", 400),
    (b"GET / HTTP/1.1\nHost: x\r\n\r\n", 400),
    (b"GET /" + b"a" * 40 + b" HTTP/1.1\r\n\r\n", 414),
]


@pytest.mark.parametrize("data,expected", SPLIT_HEADS)
def test_read_head_at_every_split(data: bytes, expected: Any) -> None:
    """The slow path scans incrementally: the result must not depend on recv boundaries."""
    for cut in range(1, len(data)):
        a, b = socket.socketpair()
        with a, b:
            a.sendall(data[:cut])

            def rest(a: socket.socket = a, cut: int = cut) -> None:
                a.sendall(data[cut:])
                a.shutdown(socket.SHUT_WR)

            timer = threading.Timer(0.003, rest)
            timer.start()
            c = conn_for(b, line=30, timeout=5)
            try:
                got: Any = c.read_head()
                parse_request(got, c, dict(BASE))  # complete heads are checked here
            except HTTPError as e:
                got = e.status
            timer.join()
        assert got == expected, (cut, got)


def test_read_head_eof(pair: Any) -> None:
    head, _ = reader_result(pair, b"")
    assert head is None
    a, b = socket.socketpair()
    with a, b:
        err, _ = reader_result((a, b), b"GET / HTTP/1.1\r\nHost: x\r\n")
    assert isinstance(err, IncompleteHead)


def test_read_head_bare_lf_fails_fast(pair: Any) -> None:
    t = time.monotonic()
    err, _ = reader_result(pair, b"GET / HTTP/1.1\nHost: x\n\n", close=False, timeout=5)
    assert isinstance(err, HTTPError) and err.status == 400
    assert time.monotonic() - t < 1


def test_read_head_long_line_414(pair: Any) -> None:
    err, _ = reader_result(pair, b"GET /" + b"a" * 100, close=False, line=50, timeout=5)
    assert isinstance(err, HTTPError) and err.status == 414


def test_read_head_too_large_431(pair: Any) -> None:
    data = b"GET / HTTP/1.1\r\n" + b"X-A: " + b"b" * 3000 + b"\r\n"
    err, _ = reader_result(pair, data, close=False, line=100, fields=2, field_size=1000, timeout=5)
    assert isinstance(err, HTTPError) and err.status == 431


def test_head_timeout_idle(pair: Any) -> None:
    t = time.monotonic()
    err, _ = reader_result(pair, b"", close=False, timeout=0.2)
    assert isinstance(err, HeadTimeout) and err.received == 0
    assert 0.15 < time.monotonic() - t < 1.5


def test_head_deadline_counts_from_first_byte(pair: Any) -> None:
    """A slowloris client that trickles bytes is cut off at header_timeout overall."""
    a, b = pair
    stop = threading.Event()

    def trickle() -> None:
        for ch in b"GET / HTTP/1.1\r\nX-Slow: " + b"z" * 100:
            if stop.is_set():
                return
            try:
                a.send(bytes([ch]))
            except OSError:
                return
            time.sleep(0.05)

    t = threading.Thread(target=trickle, daemon=True)
    t.start()
    c = conn_for(b, timeout=0.4)
    c.set_timeouts()
    start = time.monotonic()
    with pytest.raises(HeadTimeout):
        c.read_head()
    elapsed = time.monotonic() - start
    stop.set()
    assert 0.3 < elapsed < 1.5


# ------------------------------------------------------------ body readers


def body_conn(pair: Any, data: bytes, close: bool = True, **limits: Any) -> Connection:
    a, b = pair
    a.sendall(data)
    if close:
        a.shutdown(socket.SHUT_WR)
    c = conn_for(b, **limits)
    c.set_timeouts()
    return c


def test_length_body_reads(pair: Any) -> None:
    c = body_conn(pair, b"line1\nline2\nrest" + b"NEXT")
    body = LengthBody(c, 16)
    assert body.readline() == b"line1\n"
    assert body.read(3) == b"lin"
    assert body.readline(1) == b"e"
    assert body.readlines() == [b"2\n", b"rest"]
    assert body.read() == b"" and body.readline() == b""
    assert c.buf == b"NEXT" or c.sock.recv(10) == b"NEXT"  # never read past the body


def test_length_body_iteration_and_read_all(pair: Any) -> None:
    c = body_conn(pair, b"a\nb\nc")
    assert list(LengthBody(c, 5)) == [b"a\n", b"b\n", b"c"]
    a, b = socket.socketpair()
    try:
        c = body_conn((a, b), b"x" * 200000)
        assert LengthBody(c, 200000).read() == b"x" * 200000
    finally:
        a.close()
        b.close()


def test_length_body_eof_is_an_error(pair: Any) -> None:
    c = body_conn(pair, b"abc")
    body = LengthBody(c, 10)
    with pytest.raises(ClientDisconnected):
        body.read()
    assert isinstance(body.failed, ClientDisconnected)
    assert not body.drain()


def test_length_body_drain(pair: Any) -> None:
    c = body_conn(pair, b"0123456789GET")
    body = LengthBody(c, 10)
    assert body.read(2) == b"01"
    assert body.drain()
    assert c.buf + c.sock.recv(10) == b"GET"
    big = LengthBody(c, 10 << 20)
    assert not big.may_drain() and not big.drain()


CHUNKED_OK = [
    (b"3\r\nabc\r\n0\r\n\r\n", b"abc"),
    (b"3;ext=1\r\nabc\r\n0\r\n\r\n", b"abc"),
    (b'3 ; a = "q \\" s" ;b\r\nabc\r\nA\r\n0123456789\r\n0\r\n\r\n', b"abc0123456789"),
    (b"00000003\r\nabc\r\n0\r\n\r\n", b"abc"),
    (b"1\r\na\r\n1\r\nb\r\n0\r\nX-Trailer: t\r\nX-Other: o\r\n\r\n", b"ab"),
    (b"0\r\n\r\n", b""),
]


@pytest.mark.parametrize("data,expected", CHUNKED_OK)
def test_chunked_ok(pair: Any, data: bytes, expected: bytes) -> None:
    c = body_conn(pair, data + b"NEXT")
    body = ChunkedBody(c)
    assert body.read() == expected
    assert body.done
    assert c.buf == b"NEXT"


CHUNKED_BAD = [
    b"x\r\nabc\r\n0\r\n\r\n",
    b"\r\nabc\r\n0\r\n\r\n",
    b"0x3\r\nabc\r\n0\r\n\r\n",
    b"-3\r\nabc\r\n0\r\n\r\n",
    b"+3\r\nabc\r\n0\r\n\r\n",
    b" 3\r\nabc\r\n0\r\n\r\n",
    b"3 \r\nabc\r\n0\r\n\r\n",
    b"1_0\r\n" + b"a" * 16 + b"\r\n0\r\n\r\n",
    b"00000000000000003\r\nabc\r\n0\r\n\r\n",  # 17 digits
    b"3;\r\nabc\r\n0\r\n\r\n",
    b'3;a="unterminated\r\nabc\r\n0\r\n\r\n',
    b"3;a b\r\nabc\r\n0\r\n\r\n",
    b"3\nabc\r\n0\r\n\r\n",
    b"3\r\nabcX\r\n0\r\n\r\n",
    b"3\r\nabc\n0\r\n\r\n",
    b"3\r\nabc\r\n0\r\nContent-Length: 5\r\n\r\n",
    b"3\r\nabc\r\n0\r\nTransfer-Encoding: chunked\r\n\r\n",
    b"3\r\nabc\r\n0\r\nHost: x\r\n\r\n",
    b"3\r\nabc\r\n0\r\nBad Name: x\r\n\r\n",
    b"3\r\nabc\r\n0\r\nX: a\x00b\r\n\r\n",
    b"3\r\nabc\r\n0\r\nX: a\r\n folded\r\n\r\n",
    b"3\r\nabc\r\n0\r\n\n",
    b"3;" + b"a" * 5000 + b"\r\nabc\r\n0\r\n\r\n",
]


@pytest.mark.parametrize("data", CHUNKED_BAD)
def test_chunked_invalid(pair: Any, data: bytes) -> None:
    c = body_conn(pair, data)
    body = ChunkedBody(c)
    with pytest.raises(InvalidBody):
        body.read()
    assert body.failed is not None
    with pytest.raises(InvalidBody):
        body.read()  # stays failed


def test_chunked_truncated(pair: Any) -> None:
    c = body_conn(pair, b"5\r\nab")
    with pytest.raises(ClientDisconnected):
        ChunkedBody(c).read()


def test_chunked_limit(pair: Any) -> None:
    c = body_conn(pair, b"5\r\nabcde\r\n6\r\nfghijk\r\n0\r\n\r\n", body=10)
    body = ChunkedBody(c)
    assert body.read(5) == b"abcde"
    with pytest.raises(BodyTooLarge) as ei:
        body.read()
    assert ei.value.status == 413


def test_chunked_trailer_limits(pair: Any) -> None:
    c = body_conn(pair, b"0\r\n" + b"".join(b"X-%d: v\r\n" % i for i in range(5)) + b"\r\n", fields=3)
    with pytest.raises(InvalidBody) as ei:
        ChunkedBody(c).read()
    assert ei.value.status == 431


def test_chunked_readline_across_chunks(pair: Any) -> None:
    c = body_conn(pair, b"2\r\nab\r\n3\r\nc\nd\r\n1\r\ne\r\n0\r\n\r\n")
    body = ChunkedBody(c)
    assert body.readline() == b"abc\n"
    assert body.readline() == b"de"
    assert body.readline() == b""


def test_slow_body_times_out(pair: Any) -> None:
    from gorn_worker.http import BodyTimeout

    c = body_conn(pair, b"ab", close=False, timeout=0.2)
    body = LengthBody(c, 10)
    t = time.monotonic()
    with pytest.raises(BodyTimeout):
        body.read()
    assert time.monotonic() - t < 1.5


class Trickler:
    """Sends ``first`` at once, then ``drip`` one byte every ``every`` seconds until the
    peer closes or ``stop()`` (``gave_up``: the peer stopped it; ``sent`` counts bytes)."""

    def __init__(self, sock: socket.socket, first: bytes, drip: bytes, every: float) -> None:
        self.sock, self.first, self.drip, self.every = sock, first, drip, every
        self.halt = threading.Event()
        self.gave_up = False
        self.sent = 0
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.sock.sendall(self.first)
            for i in range(len(self.drip)):
                if self.halt.wait(self.every):
                    return
                self.sock.send(self.drip[i : i + 1])
                self.sent += 1
        except OSError:
            self.gave_up = True

    def stop(self) -> bool:
        """Stop; True if the trickle was still going (it never ran out of bytes)."""
        going = self.thread.is_alive()
        self.halt.set()
        self.thread.join(5)
        return going


@pytest.mark.parametrize("chunked", [False, True], ids=["length", "chunked"])
def test_trickled_body_is_cut_off_by_the_minimum_rate(pair: Any, chunked: bool) -> None:
    """One byte just under header_timeout apart never trips the per-read timeout; the
    average-rate bound ends the body read anyway, long before the trickle would."""
    from gorn_worker.http import BodyTimeout

    a, b = pair
    c = conn_for(b, timeout=0.4)
    c.set_timeouts()
    body = ChunkedBody(c) if chunked else LengthBody(c, 10000)
    drip = b"1\r\nx\r\n" * 4 if chunked else b"x" * 24  # 24 bytes at 4/s: 6 s
    tr = Trickler(a, b"", drip, 0.25)
    with pytest.raises(BodyTimeout, match="too slow"):
        body.read()
    assert tr.stop(), "the trickle ended first: the per-read timeout, not the rate bound, fired"
    assert isinstance(body.failed, BodyTimeout)


def test_fast_start_buys_no_long_trickle(pair: Any) -> None:
    """The credit is capped at header_timeout: 64 KiB at once, then a trickle, is cut off
    too (an uncapped average over the whole body would allow a minute of trickling)."""
    from gorn_worker.http import BodyTimeout

    a, b = pair
    c = conn_for(b, timeout=0.4)
    c.set_timeouts()
    body = LengthBody(c, 100000)
    tr = Trickler(a, b"y" * 65536, b"x" * 24, 0.25)
    with pytest.raises(BodyTimeout, match="too slow"):
        body.read()
    assert tr.stop()


def test_steady_body_with_pauses_is_accepted(pair: Any) -> None:
    """Pauses just under header_timeout between reasonable pieces are fine."""
    a, b = pair
    c = conn_for(b, timeout=0.4)
    c.set_timeouts()
    pieces = [bytes([65 + i]) * 2048 for i in range(6)]  # 2 KiB every 0.3 s: ~7 KiB/s

    def send() -> None:
        for p in pieces:
            time.sleep(0.3)
            a.sendall(p)

    t = threading.Thread(target=send, daemon=True)
    t.start()
    assert LengthBody(c, 6 * 2048).read() == b"".join(pieces)
    t.join(5)


def test_app_time_between_reads_does_not_count(pair: Any) -> None:
    """Only time blocked waiting for the client is charged, not the app's work between
    reads: 16 bytes per 0.3 s of wall time is far below the rate, yet fine here."""
    a, b = pair
    c = conn_for(b, timeout=0.25)
    c.set_timeouts()
    body = LengthBody(c, 64)
    got = b""
    for i in range(4):
        a.sendall(b"%016d" % i)
        got += body.read(16)
        time.sleep(0.3)  # the app works; the client's next piece is already queued by then
    assert got == b"".join(b"%016d" % i for i in range(4))


def test_rate_bound_off_without_header_timeout(pair: Any) -> None:
    a, b = pair
    c = conn_for(b, timeout=0)
    body = LengthBody(c, 3)
    tr = Trickler(a, b"", b"abc", 0.05)
    assert body.read() == b"abc"
    tr.stop()


def test_split_host_cache_bounded() -> None:
    for i in range(3000):
        split_host(f"h{i}")
    from gorn_worker import http

    assert len(http._HOSTS) <= 1024


def test_request_type() -> None:
    r: Optional[Request] = parse(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert r is not None and r.method == "GET"


def test_header_line_cache_keeps_the_rules(monkeypatch: pytest.MonkeyPatch) -> None:
    """The pure-Python path's cache of whole header lines (the native one has none)."""
    from gorn_worker import http

    monkeypatch.setattr(http, "parse_head", http.parse_head_py)

    assert status_of(b"GET / HTTP/1.1\r\nHost: cached\r\nX-C: v\r\n\r\n") == 200
    assert b"Host: cached" in http._LINES
    assert status_of(b"GET / HTTP/1.1\r\nHost: cached\r\nHost: cached\r\n\r\n") == 400
    e = parse(b"GET / HTTP/1.1\r\nHost: x\r\nX-C: v\r\nX-C: v\r\n\r\n").environ
    assert e["HTTP_X_C"] == "v,v"
    assert status_of(b"GET / HTTP/1.1\r\nX-C: v\r\n" + b"X-C: v\r\n" * 3, fields=3) == 431
    parse(b"GET / HTTP/1.1\r\nHost: x\r\nX_C: dropped\r\n\r\n")
    assert b"X_C: dropped" not in http._LINES
    for i in range(http._LINES_MAX + 10):
        parse(b"GET / HTTP/1.1\r\nHost: x\r\nX-N: %d\r\n\r\n" % i)
    assert len(http._LINES) <= http._LINES_MAX
