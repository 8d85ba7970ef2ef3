"""The echo app of the raw-request corpus (tests/test_corpus.py, tests/corpus/).

Four entry points that differ only in how they read ``wsgi.input``, so every corpus
body goes through each reader: ``read_all`` (``read()``), ``read_sized``
(``read(0)``, then ``read(7)`` until ``b""``), ``read_lines`` (``readline()``,
``readline(3)``, then ``readlines()``) and ``iterate`` (iteration). After the body each
checks that the stream stays at its end.

By default the answer is JSON of the environ's relevant keys under their PEP 3333 names
(REQUEST_METHOD, RAW_URI, PATH_INFO, QUERY_STRING, SERVER_PROTOCOL, SCRIPT_NAME,
SERVER_NAME, SERVER_PORT, REMOTE_ADDR, REMOTE_PORT, wsgi.url_scheme, CONTENT_TYPE,
CONTENT_LENGTH, every HTTP_*), ``wsgi.input`` (the body, latin-1), ``_reader``,
``_eof_ok`` (reads after the end return b"") and ``_types_ok`` (PEP 3333 types).

Paths starting with ``/_`` exercise the response side instead (PATH_INFO, so they work
under a root_path too):

- ``/_stream?n=N``   N chunks ``cI\\n`` from a generator (chunked, or close-delimited on 1.0)
- ``/_write``        ``write(b"w1")`` then returns ``[b"r2"]``
- ``/_status/NNN``   ``"NNN Custom Reason"`` with a body the server must drop for 204/304/HEAD;
  a 1xx or a malformed NNN is an app error the server answers with 500
- ``/_truncate``     Content-Length: 3 but six bytes: the server sends ``abc``
- ``/_badheader``    a header value with CR LF: the server must answer 500
- ``/_excinfo``      start_response, an exception, start_response(..., exc_info): 500 ``recovered``
- ``/_close``        the app sends ``Connection: close``
- ``/_noread``       answers without reading the body (``Expect: 100-continue`` unanswered)
"""

from __future__ import annotations

import json
import sys
from typing import Any, Callable, Iterable

StartResponse = Callable[..., Any]

KEYS = (
    "REQUEST_METHOD",
    "RAW_URI",
    "PATH_INFO",
    "QUERY_STRING",
    "SERVER_PROTOCOL",
    "SCRIPT_NAME",
    "SERVER_NAME",
    "SERVER_PORT",
    "REMOTE_ADDR",
    "REMOTE_PORT",
    "wsgi.url_scheme",
    "CONTENT_TYPE",
    "CONTENT_LENGTH",
)


def _read_all(inp: Any) -> bytes:
    return inp.read()  # type: ignore[no-any-return]


def _read_sized(inp: Any) -> bytes:
    assert inp.read(0) == b""
    parts: list[bytes] = []
    while True:
        d = inp.read(7)
        if not d:
            return b"".join(parts)
        assert len(d) <= 7
        parts.append(d)


def _read_lines(inp: Any) -> bytes:
    first = inp.readline()
    if not first:
        return b""
    second = inp.readline(3)  # a size cuts a line
    assert len(second) <= 3
    body: bytes = first + second + b"".join(inp.readlines())
    return body


def _iterate(inp: Any) -> bytes:
    return b"".join(inp)


def _types_ok(environ: dict[str, Any]) -> bool:
    """PEP 3333: CGI keys are native str; the wsgi.* keys have their required types."""
    for k, v in environ.items():
        if "." not in k and type(v) is not str:
            return False
    return (
        environ["wsgi.version"] == (1, 0)
        and environ["wsgi.url_scheme"] in ("http", "https")
        and all(hasattr(environ["wsgi.input"], m) for m in ("read", "readline", "readlines", "__iter__"))
        and all(hasattr(environ["wsgi.errors"], m) for m in ("write", "writelines", "flush"))
        and all(type(environ[k]) is bool for k in ("wsgi.multithread", "wsgi.multiprocess", "wsgi.run_once"))
        and "REQUEST_METHOD" in environ
        and "SERVER_NAME" in environ
        and "SERVER_PORT" in environ
        and "SCRIPT_NAME" in environ
        and "PATH_INFO" in environ
    )


def _echo(environ: dict[str, Any], start_response: StartResponse, reader: Callable[[Any], bytes], name: str) -> Iterable[bytes]:
    inp = environ["wsgi.input"]
    body = reader(inp)
    eof_ok = inp.read() == b"" and inp.read(1) == b"" and inp.readline() == b"" and inp.readlines() == [] and list(inp) == []
    doc: dict[str, Any] = {k: environ[k] for k in KEYS if k in environ}
    doc.update({k: v for k, v in environ.items() if k.startswith("HTTP_")})
    doc["wsgi.input"] = body.decode("latin-1")
    doc["_reader"] = name
    doc["_eof_ok"] = eof_ok
    doc["_types_ok"] = _types_ok(environ)
    out = json.dumps(doc, sort_keys=True).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(out)))])
    return [out]


def _query(environ: dict[str, Any], key: str, default: str) -> str:
    query: str = environ.get("QUERY_STRING", "")
    for part in query.split("&"):
        k, _, v = part.partition("=")
        if k == key:
            return v
    return default


def _special(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    path = environ["PATH_INFO"]
    if path == "/_stream":
        n = int(_query(environ, "n", "3"))
        start_response("200 OK", [("Content-Type", "text/plain")])
        return (b"c%d\n" % i for i in range(n))
    if path == "/_write":
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        write(b"w1")
        return [b"r2"]
    if path.startswith("/_status/"):
        code = path[len("/_status/") :]
        start_response(f"{code} Custom Reason", [("Content-Type", "text/plain")])
        return [b"must-not-be-sent"]
    if path == "/_truncate":
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "3")])
        return [b"abc", b"def"]
    if path == "/_badheader":
        start_response("200 OK", [("X-Injected", "a\r\nSet-Cookie: evil=1")])
        return [b"must-not-be-sent"]
    if path == "/_excinfo":
        start_response("200 OK", [("Content-Type", "text/plain")])
        try:
            raise ValueError("boom")
        except ValueError:
            start_response("500 Internal Server Error", [("Content-Type", "text/plain")], sys.exc_info())
        return [b"recovered"]
    if path == "/_close":
        start_response("200 OK", [("Content-Type", "text/plain"), ("Connection", "close"), ("Content-Length", "5")])
        return [b"bye!\n"]
    if path == "/_noread":
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "6")])
        return [b"noread"]
    start_response("404 Not Found", [("Content-Type", "text/plain")])
    return [b"unknown special route\n"]


def _make(reader: Callable[[Any], bytes], name: str) -> Callable[..., Iterable[bytes]]:
    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if environ["PATH_INFO"].startswith("/_"):
            return _special(environ, start_response)
        return _echo(environ, start_response, reader, name)

    app.__name__ = name
    return app


read_all = _make(_read_all, "read_all")
read_sized = _make(_read_sized, "read_sized")
read_lines = _make(_read_lines, "read_lines")
iterate = _make(_iterate, "iterate")

READERS = ("read_all", "read_sized", "read_lines", "iterate")

