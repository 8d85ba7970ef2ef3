"""The native request path (gorn_native, worker/native/gorn_native.c) against its
specification, the pure-Python twins (http.parse_head_py, wsgi.header_block_py):
differential fuzzing.

1. The same heads go to both parsers (three sets of limits, with and without a root path):
   the same environ, key for key in the same order, the same method, path, framing and
   Host, or the same HTTPError status and detail.
2. The same random start_response header lists go to both header-block builders: the same
   block, Content-Length and flags, or the same exception type and message.
3. The same random byte streams go through the real connection handler in process
   (harness.serve_raw) once on each path: every response byte (the Date header aside)
   and every environ the app saw must be the same.
4. The loader: the worker logs its path, GORN_NATIVE=0 forces pure Python, and the native
   module is loaded from a memfd (no file written).

The fuzz test of the parser under AddressSanitizer is worker/native/asan.sh (make asan).
"""

from __future__ import annotations

import re
from typing import Any, Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_fuzz import INPUTS, SEEDS

from gorn_worker import http, native, wsgi
from gorn_worker.http import HTTPError, Limits, parse_head_py
from gorn_worker.scoreboard import REQUEST_PATH_NATIVE, REQUEST_PATH_PYTHON, W_REQUEST_PATH
from harness import serve_raw, start_worker
from prereq import missing

LIMITS = (Limits(), Limits(64, 5, 64, 16), Limits(0, 0, 0, 0))
ROOTS = ("", "/app")
BASE = {"wsgi.url_scheme": "http", "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "80", "SCRIPT_NAME": ""}
_DATE = re.compile(rb"\r\nDate: [^\r\n]*\r\n")


@pytest.fixture(scope="module")
def gorn_native() -> Any:
    mod, why = native.load()
    if mod is None:
        missing(f"the native request path: {why} (make native builds it)")
    mod.setup(HTTPError, http.EMPTY_BODY, wsgi.header_block_py)
    return mod


def outcome(parse: Any, head: bytes, limits: Limits, root: str) -> Any:
    try:
        env, *rest = parse(head, limits, BASE, root)
    except HTTPError as e:
        return ("error", e.status, e.detail)
    return ("ok", list(env.items()), rest)


def heads(data: bytes) -> Iterator[bytes]:
    """The head at the start of data, and the data whole (a head of any bytes)."""
    i = data.find(b"\r\n\r\n")
    if i >= 0:
        yield data[:i]
    yield data


def compare(mod: Any, data: bytes) -> None:
    for head in heads(data):
        for limits in LIMITS:
            for root in ROOTS:
                py = outcome(parse_head_py, head, limits, root)
                nat = outcome(mod.parse_head, head, limits, root)
                assert nat == py, (head, root, limits.line)


def test_seeds_agree(gorn_native: Any) -> None:
    accepted = 0
    for raw in SEEDS:
        compare(gorn_native, raw)
        accepted += outcome(parse_head_py, next(heads(raw)), Limits(), "")[0] == "ok"
    assert accepted > 20  # the corpus reaches the environ, not only the errors


HEADS = [
    b"GET / HTTP/1.1\r\nHost: 127.0.0.1:8000",
    b"GET /a%20b%zz%4?x=1#f HTTP/1.0",
    b"GET http://Example.com:80?q HTTP/1.1\r\nHost: a",
    b"GET HTTPS://h#x HTTP/1.1\r\nHost: a",
    b"GET ftp://h/ HTTP/1.1\r\nHost: a",
    b"GET http://[::1/ HTTP/1.1\r\nHost: a",
    b"CONNECT [::1]:443 HTTP/1.1\r\nHost: x",
    b"CONNECT h: HTTP/1.1\r\nHost: x",
    b"OPTIONS * HTTP/1.1\r\nHost: [::1]:99\r\nX-A: 1\r\nX-A: 2\r\nConnection: Keep-Alive, CLOSE",
    b"GET * HTTP/1.1\r\nHost: h",
    b"POST /x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked",
    b"POST /x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked,",
    b"POST /x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: Chunked\r\nTransfer-Encoding: chunked",
    b"POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: 12\r\nExpect: 100-Continue",
    b"POST /x HTTP/1.0\r\nContent-Length: 000000000000000012\r\nExpect: nope\r\nConnection: keep-alive",
    b"POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nContent-Length: 1",
    b"POST /x HTTP/1.1\r\nHost: h\r\nContent-Type: a\r\ncontent-type: b",
    b"POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: 17",
    b"GET /\x01 HTTP/1.1",
    b"GET /" + b"a" * 5000 + b"\x7f HTTP/1.1\r\nHost: h",
    b"GET /x HTTP/1.1\r\nHost: h\rx",
    b"get / HTTP/1.1",
    b"PURGE-ALL! / HTTP/1.1\r\nHost: h",
    b"GET / HTTP/2.0",
    b"GET / HTTP/1.1 ",
    b"GET  HTTP/1.1",
    b"G\xc3T / HTTP/1.1",
    b"GET /\xc3 HTTP/1.1",
    b"GET /app HTTP/1.1\r\nHost: h",
    b"GET /app/x%2F HTTP/1.1\r\nHost: h\r\n a: b",
    b"GET /apple HTTP/1.1\r\nHost: h\r\nA_B: c\r\nx y: z",
    b"GET / HTTP/1.1\r\nHost: h\r\n: v",
    b"GET / HTTP/1.1\r\nHost: h%zz",
    b"GET / HTTP/1.1\r\nHost: h%4a:",
    b"GET / HTTP/1.1\r\nHost:  h:8\t ",
    b"GET / HTTP/1.1\r\nHost: \xe9",
    b"GET / HTTP/1.1\r\nHost: ",
    b"GET / HTTP/1.0\r\nX: \xe9\xff",
    b"",
    b" ",
]


def test_hand_picked_heads_agree(gorn_native: Any) -> None:
    for head in HEADS:
        compare(gorn_native, head)


@settings(max_examples=3000, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=INPUTS)
def test_fuzzed_heads_agree(gorn_native: Any, data: bytes) -> None:
    compare(gorn_native, data)


# ------------------------------------------------------------- response headers

NAMES = ["Content-Type", "content-length", "Content-Length", "CONNECTION", "Date", "server", "Keep-Alive", "TE",
         "Trailer", "transfer-encoding", "Upgrade", "Proxy-Connection", "X-A", "X_B", "", "Bad Name", "X\u00e9",
         "X:Y", "\ud800", b"X-Bytes", None]
VALUES = ["text/plain", "14", " 14\t", "014", "", "1" * 19, "1" * 18, "-1", "1 4", "\u00b2", "close", "Keep-Alive, Close",
          "x,close ,y", "clos\u212a", "a\tb", "a\r\nb", "a\nb", "a\x00b", "a\x7fb", "caf\u00e9", "\u20ac", "\ud800",
          "\u00ff\u0100", b"bytes", 5, None]


@st.composite
def header_lists(draw: st.DrawFn) -> Any:
    if draw(st.integers(0, 40)) == 0:
        return draw(st.sampled_from([(("A", "b"),), "A: b", None, {"A": "b"}]))
    items: list[Any] = []
    for _ in range(draw(st.integers(0, 5))):
        name, value = draw(st.sampled_from(NAMES)), draw(st.sampled_from(VALUES))
        shape = draw(st.integers(0, 12))
        items.append([name, value] if shape == 0 else (name,) if shape == 1 else (name, value, "x") if shape == 2 else "nv" if shape == 3 else (name, value))
    return items


def block_outcome(build: Any, headers: Any, code: int) -> Any:
    try:
        return ("ok", build(headers, code))
    except (TypeError, ValueError) as e:  # the exception itself is what must agree
        return (type(e), str(e))


@settings(max_examples=3000, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(headers=header_lists(), code=st.sampled_from([200, 204, 304, 404, 500]))
def test_header_blocks_agree(gorn_native: Any, headers: Any, code: int) -> None:
    assert block_outcome(gorn_native.header_block, headers, code) == block_outcome(wsgi.header_block_py, headers, code)


def test_common_header_blocks_are_native(gorn_native: Any) -> None:
    headers = [("Content-Type", "text/plain; charset=caf\u00e9"), ("Content-Length", "14"), ("Connection", "close"),
               ("Keep-Alive", "x"), ("Date", "d"), ("Server", "s")]
    def refuse(headers: Any, code: int) -> Any:
        raise AssertionError("handed to the twin")

    gorn_native.setup(HTTPError, http.EMPTY_BODY, refuse)  # well-formed headers stay in C
    try:
        for code in (200, 204):
            assert gorn_native.header_block(headers, code) == wsgi.header_block_py(headers, code)
        with pytest.raises(AssertionError, match="handed to the twin"):
            gorn_native.header_block([("Content-Length", "x")], 200)
    finally:
        gorn_native.setup(HTTPError, http.EMPTY_BODY, wsgi.header_block_py)


# ---------------------------------------------------- whole connections, both paths


def recording_app(seen: list[Any]) -> Any:
    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        body = environ["wsgi.input"].read()
        seen.append(sorted((k, v if type(v) is str else type(v).__name__) for k, v in environ.items()))
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [environ["PATH_INFO"].encode("latin-1"), b"|", body]

    return app


def serve_both(data: bytes, **options: Any) -> None:
    results = []
    for mod in (None, native.load()[0]):
        native.use(mod)
        seen: list[Any] = []
        try:
            r = serve_raw(recording_app(seen), data, timeout=2.0, header_timeout=0.2, keepalive=0.2, **options)
        finally:
            native.use(None)
        assert "Traceback" not in r.log, r.log
        results.append((_DATE.sub(b"\r\nDate: -\r\n", r.output), seen))
    assert results[0] == results[1], data


@settings(max_examples=150, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=INPUTS)
def test_connections_answer_byte_for_byte_alike(gorn_native: Any, data: bytes) -> None:
    serve_both(data)


@settings(max_examples=40, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=INPUTS)
def test_connections_alike_with_root_path_and_limits(gorn_native: Any, data: bytes) -> None:
    serve_both(data, root_path="/app", limit_request_line=64, limit_request_fields=5, limit_request_field_size=64)


# ------------------------------------------------------------------ the loader


def test_worker_logs_its_request_path(gorn_native: Any) -> None:
    for value, line in (("1", "request path: native (gorn_native)"), ("0", "request path: python (GORN_NATIVE=0)")):
        with start_worker("basic:hello", env={native.ENV_VAR: value}, log_level="info", zip=True) as w:
            status, _, _ = w.get("/")
            assert status == 200
            assert line in w.stderr(), w.stderr()
            assert w.slot[W_REQUEST_PATH] == (REQUEST_PATH_NATIVE if value == "1" else REQUEST_PATH_PYTHON)


def test_bad_setting_stops_the_boot() -> None:
    w = start_worker("basic:app", env={native.ENV_VAR: "yes"}, wait_ready=False)
    try:
        assert w.proc.wait(10) == 3
        assert "GORN_NATIVE must be 0, 1 or empty, not 'yes'" in w.stderr()
    finally:
        w.close()


def test_select_without_the_extension(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(native, "RESOURCE", "lib/missing.so")
    native.load.cache_clear()  # loaded once per process: forget this test's copy
    try:
        assert native.select("") == (native.PATH_PYTHON, "request path: python (native: this gorn was built without it (no C compiler at build time))")
        assert http.parse_head is parse_head_py
        with pytest.raises(native.NativeRequired):
            native.select("1")
    finally:
        native.load.cache_clear()
        native.use(None)
