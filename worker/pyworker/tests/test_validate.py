"""wsgiref.validate wraps the example app (examples/flask/app.py) served by a real worker:
every route answers normally and the validator reports nothing.

The validator runs inside the worker process, where the server's environ, input stream,
start_response and iterable handling are what it checks; tests/apps/validated_flask.py
turns every warning into an error, so a violation would surface as a 500 and a traceback
in the worker's stderr, which this test reads.

Chosen over driving the handler in process (harness.serve_raw) because it checks the
runtime exactly as deployed: the worker process, its real listener and socket, the
settings from GORN_WORKER, and the app imported the way the master imports it. The
wrapper module (tests/apps/validated_flask.py) is the only test-specific piece."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness import parse_responses, start_worker

# Every test here runs on both request paths, native and pure Python (conftest.request_path).
pytestmark = pytest.mark.usefixtures("request_path")

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "flask"

ROUTES = [
    ("GET", "/", b"", 200),
    ("GET", "/json", b"", 200),
    ("POST", "/echo", b"validated body", 200),
    ("GET", "/stream?n=3", b"", 200),
    ("GET", "/slow?ms=10", b"", 200),
    ("GET", "/pid", b"", 200),
    ("GET", "/error", b"", 500),
    ("GET", "/missing", b"", 404),
    ("HEAD", "/", b"", 200),
]


def test_example_app_passes_wsgiref_validate() -> None:
    with start_worker("validated_flask:application", pythonpath=[str(EXAMPLE)]) as w:
        for method, path, body, want in ROUTES:
            status, _, got = w.get(path, method=method, body=body)
            assert status == want, (method, path, status, w.stderr()[-3000:])
            if path == "/echo":
                assert got == body
        # The same checks on framings the plain requests above do not use: a chunked
        # body, Expect: 100-continue, and pipelined keep-alive requests on one connection.
        chunked = (
            b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5\r\nhello\r\n7\r\n, world\r\n0\r\n\r\n"
        )
        expect = b"POST /echo HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\nabc"
        last = b"GET /json HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
        out = w.raw(chunked + expect + b"GET /pid HTTP/1.1\r\nHost: t\r\n\r\n" + last)
        assert out.count(b"HTTP/1.1 100 Continue\r\n") == 1, out[:500]
        responses = parse_responses(out)
        assert [r[0] for r in responses] == [200, 200, 200, 200], (out[:800], w.stderr()[-3000:])
        assert responses[0][2] == b"hello, world" and responses[1][2] == b"abc"
        log = w.stderr()
    # The /error route logs the app's own RuntimeError; nothing else may appear.
    assert "Warning" not in log and "AssertionError" not in log, log[-3000:]
    assert log.count("Traceback") == 1 and "this endpoint always fails" in log, log[-3000:]
