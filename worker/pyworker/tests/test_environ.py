"""The PEP 3333 environ as the app sees it (in process, through the echo app)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from apps.basic import echo
from harness import make_settings, parse_responses, serve_raw

# Every test here runs on both request paths, native and pure Python (conftest.request_path).
pytestmark = pytest.mark.usefixtures("request_path")


def environ_of(raw: bytes, **settings: Any) -> dict:
    seen: dict = {}

    def app(environ: dict, start_response: Any) -> Any:
        seen.update(environ)
        seen["_body"] = environ["wsgi.input"].read()
        start_response("200 OK", [])
        return [b""]

    r = serve_raw(app, raw, **settings)
    assert r.output.startswith(b"HTTP/1.1 200"), (r.output, r.log)
    return seen


def test_required_keys() -> None:
    e = environ_of(b"GET /p?q HTTP/1.1\r\nHost: example.org:81\r\n\r\n")
    assert e["wsgi.version"] == (1, 0)
    assert e["wsgi.url_scheme"] == "http"
    assert e["wsgi.multithread"] is False and e["wsgi.multiprocess"] is False
    assert e["wsgi.run_once"] is False and e["wsgi.input_terminated"] is True
    assert hasattr(e["wsgi.errors"], "write") and callable(e["wsgi.file_wrapper"])
    assert e["SERVER_SOFTWARE"] == "gunicorn/27.0.1 gorn/test"  # apps that test for gunicorn keep working
    assert e["SCRIPT_NAME"] == "" and e["PATH_INFO"] == "/p" and e["QUERY_STRING"] == "q"
    assert e["SERVER_NAME"] == "example.org" and e["SERVER_PORT"] == "81"
    assert e["REMOTE_ADDR"] == "" and "REMOTE_PORT" not in e  # unix-socket peer
    for k, v in e.items():
        if k.isupper():
            assert type(v) is str, k


def test_multiprocess_and_root_path() -> None:
    e = environ_of(b"GET /api/v1/x HTTP/1.1\r\nHost: x\r\n\r\n", workers=3, root_path="/api/")
    assert e["wsgi.multiprocess"] is True
    assert e["SCRIPT_NAME"] == "/api" and e["PATH_INFO"] == "/v1/x"


def test_body_and_content_keys() -> None:
    e = environ_of(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: a/b\r\nContent-Length: 3\r\n\r\nxyz")
    assert e["CONTENT_TYPE"] == "a/b" and e["CONTENT_LENGTH"] == "3" and e["_body"] == b"xyz"


def test_unix_peer_is_trusted_for_scheme_headers() -> None:
    e = environ_of(b"GET / HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 203.0.113.9\r\nX-Forwarded-Proto: https\r\n\r\n")
    assert e["REMOTE_ADDR"] == "" and e["wsgi.url_scheme"] == "https"
    assert e["gunicorn.socket"] is e["gorn.socket"]


def test_trusted_peer_matching() -> None:
    from gorn_worker.logs import Logger
    from gorn_worker.scoreboard import Scoreboard
    from gorn_worker.sync import SyncWorker

    class L:
        unix = False

    def trusted(allow: list[str], ip: str) -> bool:
        w = SyncWorker(echo, make_settings(forwarded_allow_ips=allow), Logger(fd=2), Scoreboard(-1, 0), [])
        return w.handler._trusted_ip(ip)

    assert trusted(["127.0.0.1"], "127.0.0.1")
    assert not trusted(["127.0.0.1"], "127.0.0.2")
    assert trusted(["10.0.0.0/8"], "10.1.2.3")
    assert trusted(["10.0.0.0/8"], "::ffff:10.1.2.3")
    assert trusted(["*"], "8.8.8.8")
    assert not trusted([], "127.0.0.1")
    assert trusted(["fd00::/8"], "fd12::1")
    assert not trusted(["fd00::/8"], "garbage")


def test_echo_app_roundtrip() -> None:
    r = serve_raw(echo, b"PUT /e%41?z=1 HTTP/1.0\r\nX-Thing: v\r\nContent-Length: 2\r\n\r\nhi")
    doc = json.loads(parse_responses(r.output)[0][2])
    assert doc["method"] == "PUT" and doc["path"] == "/eA" and doc["raw_uri"] == "/e%41?z=1"
    assert doc["headers"] == {"HTTP_X_THING": "v", "CONTENT_LENGTH": "2"}
    assert doc["body"] == "hi" and doc["protocol"] == "HTTP/1.0"


def test_errors_stream_goes_to_the_log() -> None:
    def app(environ: dict, start_response: Any) -> Any:
        environ["wsgi.errors"].write("something odd\n")
        environ["wsgi.errors"].writelines(["line two\n"])
        start_response("200 OK", [])
        return [b""]

    r = serve_raw(app, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert "[ERROR] worker[0]: something odd\nline two" in r.log
