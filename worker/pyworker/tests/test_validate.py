"""wsgiref.validate wraps the example app (examples/flask/app.py) served by a real worker:
every route answers normally and the validator reports nothing.

The validator runs inside the worker process, where the server's environ, input stream,
start_response and iterable handling are what it checks; tests/apps/validated_flask.py
turns every warning into an error, so a violation would surface as a 500 and a traceback
in the worker's stderr, which this test reads."""

from __future__ import annotations

from pathlib import Path

from harness import start_worker

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
        log = w.stderr()
    # The /error route logs the app's own RuntimeError; nothing else may appear.
    assert "Warning" not in log and "AssertionError" not in log, log[-3000:]
    assert log.count("Traceback") == 1 and "this endpoint always fails" in log, log[-3000:]
