"""Test WSGI apps for the worker's process tests (and the request-corpus tests).

``app`` routes by PATH_INFO:

- ``/hello``            200 ``Hello, World!``
- ``/echo``             200 JSON: method, raw_uri, path, query, protocol, script_name,
                        headers (HTTP_*/CONTENT_*), body (latin-1 str), remote_addr, scheme,
                        server_name, server_port
- ``/slow?t=SECONDS``   sleeps, then 200 ``slept``
- ``/sleepy``           sleeps 30 s in :func:`sleepy` (SIGABRT stack-dump test)
- ``/error``            raises ZeroDivisionError
- ``/stream?n=N&pause=S``  N chunks from a generator (chunked on HTTP/1.1), S seconds apart
- ``/status/NNN``       that status with an empty body
- anything else         404
"""

from __future__ import annotations

import json
import time
from typing import Any, Callable, Iterable, Iterator
from urllib.parse import parse_qs

StartResponse = Callable[..., Any]


def _query(environ: dict) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}


def echo(environ: dict, start_response: StartResponse) -> Iterable[bytes]:
    body = environ["wsgi.input"].read()
    doc = {
        "method": environ["REQUEST_METHOD"],
        "raw_uri": environ.get("RAW_URI"),
        "path": environ["PATH_INFO"],
        "query": environ["QUERY_STRING"],
        "protocol": environ["SERVER_PROTOCOL"],
        "script_name": environ["SCRIPT_NAME"],
        "headers": {k: v for k, v in environ.items() if k.startswith(("HTTP_", "CONTENT_"))},
        "body": body.decode("latin-1"),
        "remote_addr": environ.get("REMOTE_ADDR"),
        "remote_port": environ.get("REMOTE_PORT"),
        "scheme": environ["wsgi.url_scheme"],
        "server_name": environ["SERVER_NAME"],
        "server_port": environ["SERVER_PORT"],
    }
    out = json.dumps(doc).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(out)))])
    return [out]


def _drip(n: int, pause: float) -> Iterator[bytes]:
    for i in range(n):
        if i and pause:
            time.sleep(pause)
        yield b"chunk%d\n" % i


def sleepy(seconds: float) -> None:
    time.sleep(seconds)  # SLEEPY-LINE (the SIGABRT test looks for this line number)


def app(environ: dict, start_response: StartResponse) -> Iterable[bytes]:
    path = environ["PATH_INFO"]
    if path == "/hello":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"Hello, World!"]
    if path == "/echo":
        return echo(environ, start_response)
    if path == "/slow":
        time.sleep(float(_query(environ).get("t", "0.5")))
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"slept"]
    if path == "/sleepy":
        sleepy(30)
        start_response("200 OK", [])
        return [b""]
    if path == "/error":
        _ = 1 / 0
    if path == "/stream":
        q = _query(environ)
        n, pause = int(q.get("n", "3")), float(q.get("pause", "0"))
        start_response("200 OK", [("Content-Type", "text/plain")])
        return _drip(n, pause)
    if path.startswith("/status/"):
        start_response(path[8:] + " Whatever", [])
        return []
    start_response("404 Not Found", [("Content-Type", "text/plain")])
    return [b"not found\n"]


def hello(environ: dict, start_response: StartResponse) -> Iterable[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"Hello, World!"]


def create_app(greeting: str = "Hello") -> Callable[..., Iterable[bytes]]:
    def factory_app(environ: dict, start_response: StartResponse) -> Iterable[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [greeting.encode()]

    return factory_app


class Holder:
    wsgi = staticmethod(hello)


holder = Holder()
not_callable = 42
