"""The raw-request corpus in tests/corpus/, replayed against running workers.

Layout (see tests/corpus/README.md): ``valid/NAME.http`` + ``valid/NAME.json`` and
``invalid/NAME.http`` + ``invalid/NAME.json``. A ``.http`` file follows gunicorn's
escaping convention: physical newlines are removed, then ``\\r``, ``\\n``, ``\\t``,
``\\0``, ``\\xHH`` and ``\\\\`` are decoded.

Every case is sent four times, each to a worker whose echo app (tests/apps/corpus_app.py)
reads ``wsgi.input`` differently: whole with ``read()``, then split into small random
pieces (seeded per case, three different splits) with ``read(7)``, ``readline()`` /
``readlines()`` and iteration. One worker per settings group and reader, started once
for the module, with a 1 s header_timeout so that incomplete requests end fast.

Every response is parsed strictly (status line, one Date, one Server, CL or chunked
framing, no body for HEAD/1xx/204/304); valid cases compare the echoed environ subset,
the status, headers, body, the interim 1xx responses and whether the connection is kept;
invalid cases expect exactly one error response with its exact status line and
``Connection: close`` followed by the close (after any earlier pipelined answers), or a
close without a byte.
"""

from __future__ import annotations

import json
import os
import random
import re
import select
import socket
import tempfile
import time
import zlib
from pathlib import Path
from typing import Any, Iterator, Optional

import pytest

from harness import Worker, start_worker

# Every test here runs on both request paths, native and pure Python (conftest.request_path).
pytestmark = pytest.mark.usefixtures("request_path")

CORPUS = Path(__file__).resolve().parent / "corpus"
READERS = ("read_all", "read_sized", "read_lines", "iterate")  # tests/apps/corpus_app.py
VARIANTS = (0, 1, 2, 3)  # 0: sent whole; 1-3: three different random splits
HEADER_TIMEOUT = 1.0

COMMON: dict[str, Any] = {"header_timeout": HEADER_TIMEOUT, "keepalive": 2.0, "limit_request_body": 1024}
GROUPS: dict[str, dict[str, Any]] = {
    "default": COMMON,
    "rooted": {**COMMON, "root_path": "/app", "forwarded_allow_ips": []},
    "limits": {
        **COMMON,
        "limit_request_line": 64,
        "limit_request_fields": 5,
        "limit_request_field_size": 64,
        "limit_request_body": 16,
    },
    "unix": COMMON,  # listens on a unix socket
    "realip": {**COMMON, "forwarded_real_ip": True, "forwarded_allow_ips": ["127.0.0.1", "10.0.0.0/8"]},
}

# The reason phrases of RFC 9110 section 15, written out here rather than imported from
# the runtime so that a wrong phrase there is caught.
REASONS = {
    400: "Bad Request",
    413: "Content Too Large",
    414: "URI Too Long",
    417: "Expectation Failed",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    501: "Not Implemented",
    505: "HTTP Version Not Supported",
}

_ESCAPE = re.compile(rb"\\(x[0-9A-Fa-f]{2}|[rnt0\\])")
_ESCAPES = {b"r": b"\r", b"n": b"\n", b"t": b"\t", b"0": b"\x00", b"\\": b"\\"}
_IMF_DATE = re.compile(r"(Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d\d (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) \d{4} \d\d:\d\d:\d\d GMT\Z")


# ------------------------------------------------------------------ the corpus


def decode_http(text: bytes) -> bytes:
    """gunicorn's tests/treq.py convention: drop physical newlines, decode the escapes."""
    text = text.replace(b"\r", b"").replace(b"\n", b"")
    return _ESCAPE.sub(lambda m: bytes([int(m.group(1)[1:], 16)]) if m.group(1)[:1] == b"x" else _ESCAPES[m.group(1)], text)


def load_cases(kind: str) -> list[tuple[str, bytes, dict[str, Any]]]:
    """[(name, raw request bytes, spec)] of ``corpus/<kind>``, sorted by name."""
    out = []
    for http in sorted((CORPUS / kind).glob("*.http")):
        spec = json.loads(http.with_suffix(".json").read_text())
        out.append((http.stem, decode_http(http.read_bytes()), spec))
    return out


VALID = load_cases("valid")
INVALID = load_cases("invalid")


# ------------------------------------------------------------------ the workers


@pytest.fixture(scope="module")
def workers(request_path: str) -> Iterator[dict[tuple[str, str], Worker]]:
    """One worker per (settings group, wsgi.input reader), started in parallel, on each
    request path (native and pure Python: conftest.request_path)."""
    started: dict[tuple[str, str], Worker] = {}
    tmp = tempfile.TemporaryDirectory(prefix="gorn-corpus-")
    try:
        for group, settings in GROUPS.items():
            for reader in READERS:
                unix = os.path.join(tmp.name, f"{reader}.sock") if group == "unix" else None
                started[group, reader] = start_worker(f"corpus_app:{reader}", wait_ready=False, unix=unix, **settings)
        for w in started.values():
            w.wait_ready()
        yield started
    finally:
        for w in started.values():
            w.close()
        tmp.cleanup()


def worker_for(workers: dict[tuple[str, str], Worker], spec: dict[str, Any], variant: int) -> Worker:
    return workers[spec.get("group", "default"), READERS[variant]]


# ------------------------------------------------------------------ the client


def connect(w: Worker) -> socket.socket:
    s = w.connect(timeout=5.0)
    if s.family != socket.AF_UNIX:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def send(sock: socket.socket, raw: bytes, name: str, variant: int) -> None:
    """Whole (variant 0) or in random 1-8 byte pieces with an occasional pause."""
    try:
        if variant == 0:
            sock.sendall(raw)
            return
        rnd = random.Random(zlib.crc32(name.encode()) * 10 + variant)
        i = 0
        while i < len(raw):
            n = rnd.randint(1, 8)
            sock.sendall(raw[i : i + n])
            i += n
            if rnd.random() < 0.15:
                time.sleep(0.0002)
    except (BrokenPipeError, ConnectionResetError):
        pass  # the server answered and closed before the rest was sent


def recv_some(sock: socket.socket, deadline: float) -> Optional[bytes]:
    """Bytes (b"" at EOF), or None when the deadline passes first."""
    left = deadline - time.monotonic()
    if left <= 0 or not select.select([sock], [], [], left)[0]:
        return None
    try:
        return sock.recv(65536)
    except ConnectionResetError:
        return b""


class Incomplete(Exception):
    pass


def parse_one(buf: bytes, head_request: bool, eof: bool) -> tuple[dict[str, Any], bytes]:
    """One response (after any interim 1xx) from the front of ``buf``, strictly checked.

    Raises Incomplete when more bytes are needed; AssertionError when malformed.
    """
    interim: list[int] = []
    while True:
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            raise Incomplete
        lines = buf[:end].decode("latin-1").split("\r\n")
        m = re.match(r"HTTP/1\.1 ([1-5]\d\d) ([^\r\n]+)\Z", lines[0])
        assert m, f"bad status line {lines[0]!r}"
        status, reason = int(m.group(1)), m.group(2)
        headers: dict[str, list[str]] = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            assert sep and name and name == name.strip(), f"bad header line {line!r}"
            headers.setdefault(name.lower(), []).append(value.strip(" \t"))
        buf = buf[end + 4 :]
        if status < 200:
            assert not headers.get("content-length") and not headers.get("transfer-encoding"), lines
            interim.append(status)
            continue
        break
    assert len(headers.get("date", [])) == 1 and _IMF_DATE.match(headers["date"][0]), headers.get("date")
    assert headers.get("server") == ["gorn/test"], headers.get("server")
    cl = headers.get("content-length")
    te = headers.get("transfer-encoding")
    assert not (cl and te), "both Content-Length and Transfer-Encoding in a response"
    assert cl is None or len(cl) == 1, cl
    if head_request or status in (204, 304):
        assert status != 204 or cl is None, "Content-Length in a 204"
        body = b""
    elif te:
        assert te == ["chunked"], te
        body = b""
        pos = 0
        while True:
            j = buf.find(b"\r\n", pos)
            if j < 0:
                raise Incomplete
            size_s = buf[pos:j]
            assert re.fullmatch(rb"[0-9a-f]+", size_s), f"bad chunk size {size_s!r}"
            size = int(size_s, 16)
            if len(buf) < j + 2 + size + 2:
                raise Incomplete
            assert buf[j + 2 + size : j + 4 + size] == b"\r\n", "chunk data not followed by CRLF"
            if size == 0:
                buf = buf[j + 4 :]
                break
            body += buf[j + 2 : j + 2 + size]
            pos = j + 4 + size
    elif cl:
        n = int(cl[0])
        if len(buf) < n:
            raise Incomplete
        body, buf = buf[:n], buf[n:]
    else:  # close-delimited
        if not eof:
            raise Incomplete
        body, buf = buf, b""
    joined = {k: ", ".join(v) for k, v in headers.items()}
    return {"status": status, "reason": reason, "headers": joined, "body": body, "interim": interim}, buf


def read_responses(
    sock: socket.socket, heads: list[bool], timeout: float = 5.0
) -> tuple[list[dict[str, Any]], bytes, bool]:
    """Read len(heads) responses (or fewer if the server closes); returns them, any bytes
    after them, and whether EOF was seen."""
    deadline = time.monotonic() + timeout
    buf = b""
    eof = False
    out: list[dict[str, Any]] = []
    while len(out) < len(heads):
        try:
            resp, buf = parse_one(buf, heads[len(out)], eof)
            out.append(resp)
            continue
        except Incomplete:
            if eof:
                break
        data = recv_some(sock, deadline)
        if data is None:
            break
        if not data:
            eof = True
        buf += data
    return out, buf, eof


def wait_close(sock: socket.socket, timeout: float) -> tuple[bytes, bool]:
    """Bytes received until EOF or timeout; True if EOF was seen."""
    deadline = time.monotonic() + timeout
    extra = b""
    while True:
        data = recv_some(sock, deadline)
        if data is None:
            return extra, False
        if not data:
            return extra, True
        extra += data


# ------------------------------------------------------------------ checks


def check_environ(doc: dict[str, Any], expected: dict[str, Any], w: Worker, reader: str) -> None:
    assert doc["_types_ok"], "environ types violate PEP 3333"
    assert doc["_eof_ok"], "wsgi.input returned data after the end of the body"
    assert doc["_reader"] == reader
    for key, want in expected.items():
        if want is None:
            assert key not in doc, f"{key} should be absent, is {doc.get(key)!r}"
        elif want == "$ANY":
            assert key in doc, f"{key} missing"
        elif want == "$PORT":
            assert doc.get(key) == str(w.addr[1]), (key, doc.get(key))
        else:
            assert doc.get(key) == want, f"{key}: {doc.get(key)!r} != {want!r}"


def check_headers(got: dict[str, str], expected: dict[str, Any]) -> None:
    for key, want in expected.items():
        if want is None:
            assert key not in got, f"response header {key} should be absent: {got}"
        elif want == "$ANY":
            assert key in got, f"response header {key} missing: {got}"
        else:
            assert got.get(key) == want, f"response header {key}: {got.get(key)!r} != {want!r}"


def variant_id(v: int) -> str:
    return "whole" if v == 0 else f"split{v}"


# ------------------------------------------------------------------ tests


@pytest.mark.parametrize("variant", VARIANTS, ids=variant_id)
@pytest.mark.parametrize("name,raw,spec", VALID, ids=[c[0] for c in VALID])
def test_valid(workers: dict[tuple[str, str], Worker], name: str, raw: bytes, spec: dict[str, Any], variant: int) -> None:
    w = worker_for(workers, spec, variant)
    expected = spec["responses"]
    closed = spec.get("closed", True)
    with connect(w) as s:
        send(s, raw, name, variant)
        got, extra, eof = read_responses(s, [bool(e.get("head")) for e in expected])
        ctx = f"{name} ({variant_id(variant)}): got {got!r}, then {extra[:300]!r}; stderr tail:\n{w.stderr()[-1500:]}"
        assert len(got) == len(expected), ctx
        for resp, exp in zip(got, expected, strict=True):
            assert resp["status"] == exp.get("status", 200), ctx
            if "reason" in exp:
                assert resp["reason"] == exp["reason"], ctx
            assert resp["interim"] == exp.get("interim", resp["interim"]), ctx
            assert all(c == 100 for c in resp["interim"]), ctx
            check_headers(resp["headers"], exp.get("headers", {}))
            if "body" in exp:
                assert resp["body"] == exp["body"].encode("latin-1"), ctx
            if "environ" in exp:
                assert resp["headers"].get("content-type") == "application/json", ctx
                check_environ(json.loads(resp["body"]), exp["environ"], w, READERS[variant])
        # Nothing more may arrive; the connection is closed, or kept open, as specified.
        if not eof:
            more, eof = wait_close(s, 3.0 if closed else 0.05)
            extra += more
        assert extra == b"", f"unexpected bytes after the responses: {extra[:300]!r}"
        assert eof == closed, f"connection {'kept' if eof is False else 'closed'}; {ctx}"
        if not closed:
            assert got[-1]["headers"].get("connection") != "close", ctx


# Timeout cases run once, sent whole: a split would only wait out the same timeout again.
INVALID_RUNS = [(c, v) for c in INVALID for v in VARIANTS if not (c[2].get("slow") and v)]


@pytest.mark.parametrize(
    "name,raw,spec,variant",
    [(*c, v) for c, v in INVALID_RUNS],
    ids=[f"{c[0]}-{variant_id(v)}" for c, v in INVALID_RUNS],
)
def test_invalid(workers: dict[tuple[str, str], Worker], name: str, raw: bytes, spec: dict[str, Any], variant: int) -> None:
    w = worker_for(workers, spec, variant)
    status = spec["status"]
    before = spec.get("before", [])
    statuses = before + ([] if status == "close" else [status])
    with connect(w) as s:
        start = time.monotonic()
        send(s, raw, name, variant)
        if spec.get("shut", status == "close"):
            s.shutdown(socket.SHUT_WR)
        got, extra, eof = read_responses(s, [False] * len(statuses), timeout=HEADER_TIMEOUT + 4)
        ctx = f"{name} ({variant_id(variant)}): got {got!r}, then {extra[:300]!r}; stderr tail:\n{w.stderr()[-1500:]}"
        assert [r["status"] for r in got] == statuses, ctx
        if status != "close":
            err = got[-1]
            assert err["reason"] == REASONS[status], ctx
            assert err["headers"].get("connection") == "close", ctx
            assert err["interim"] == [], ctx  # never a 100 Continue before a refusal
        if not eof:
            more, eof = wait_close(s, HEADER_TIMEOUT + 3)
            extra += more
        assert extra == b"", f"bytes after the error: {extra[:300]!r}; {ctx}"
        assert eof, f"the server did not close the connection; {ctx}"
        elapsed = time.monotonic() - start
        limit = HEADER_TIMEOUT + 1.5 if spec.get("slow") else 1.0
        assert elapsed < limit, f"closed after {elapsed:.2f}s"
        if spec.get("slow"):
            assert elapsed >= HEADER_TIMEOUT * 0.9, f"closed after {elapsed:.2f}s, before header_timeout"


def test_workers_survived(workers: dict[tuple[str, str], Worker]) -> None:
    """Every worker still serves, and none logged an unexpected (handler-level) error."""
    for (group, reader), w in workers.items():
        assert w.proc.poll() is None, (group, reader, w.stderr()[-3000:])
        path = "/app/alive" if group == "rooted" else "/alive"
        with w.connect() as s:
            s.sendall(f"GET {path} HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n".encode())
            got, _, _ = read_responses(s, [False])
        assert got and got[0]["status"] == 200, (group, reader)
        log = w.stderr()
        assert "unexpected error" not in log, log[-3000:]
        # The only tracebacks are the app errors of the corpus: /_badheader and the invalid
        # /_status/NNN cases (four sends of each).
        expected = log.count("invalid character in the value of header X-Injected") + log.count("ValueError: invalid WSGI status")
        assert log.count("Traceback") == expected, log[-3000:]


def test_corpus_is_well_formed() -> None:
    for kind in ("valid", "invalid"):
        https = {p.stem for p in (CORPUS / kind).glob("*.http")}
        jsons = {p.stem for p in (CORPUS / kind).glob("*.json")}
        assert https == jsons, https ^ jsons
    assert len(VALID) >= 60 and len(INVALID) >= 60, (len(VALID), len(INVALID))
    for name, _, spec in VALID:
        assert spec.get("group", "default") in GROUPS, name
        assert spec["responses"], name
    for name, _, spec in INVALID:
        assert spec.get("group", "default") in GROUPS, name
        assert spec["status"] == "close" or spec["status"] in REASONS, name
    # escapes: a physical newline is never data, an escaped one always is
    assert decode_http(b"GET / HTTP/1.1\\r\\n\nHost: x\\r\\n\\r\\n\n") == b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
    assert decode_http(b"a\\0b\\tc\\x7f\\\\n\\xFF") == b"a\x00b\tc\x7f\\n\xff"
