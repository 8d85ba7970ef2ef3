"""Fuzzing the request path with hypothesis. Bounded (derandomized, fixed example counts):
a few seconds in CI.

Three layers:

1. The parser functions themselves, in process, with no socket: a fake socket feeds
   :meth:`Connection.read_head`, :func:`parse_request` and the ``wsgi.input`` readers
   either the whole input at once or the same bytes cut into random pieces. Every input
   must end in parsed requests, a clean HTTPError with an allowed status, a body error
   with an allowed status, or an incomplete-input close: never another exception. And the
   outcome must not depend on where the bytes were cut (the incremental head scanner and
   the one-recv fast path agree).
2. The real connection handler (:meth:`SyncWorker.handle`) in process over a socketpair
   (tests/harness.serve_raw): only allowed statuses, no traceback in the log, no hang.
3. A running worker process gets fewer of the same inputs over real sockets, answers only
   with allowed statuses, and still serves a normal request afterwards.

Seeds are the raw requests of the corpus (tests/corpus/), plus structured requests built
from the smuggling-relevant pieces (TE/CL variants, chunk sizes, separators, CTLs).
"""

from __future__ import annotations

import json
import random
import time
from typing import Any, Iterable, Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gorn_worker.http import (
    SECURE_SCHEME_HEADERS,
    BodyError,
    Connection,
    HeadTimeout,
    HTTPError,
    IncompleteHead,
    Limits,
    Proxy,
    parse_request,
)
from harness import Worker, parse_responses, serve_raw, start_worker
from test_corpus import INVALID, VALID

# Every test here runs on both request paths, native and pure Python (conftest.request_path).
pytestmark = pytest.mark.usefixtures("request_path")

SEEDS = [raw for _, raw, _ in VALID] + [raw for _, raw, _ in INVALID]
ALLOWED = {400, 413, 414, 417, 431, 501, 505}
BASE = {
    "wsgi.url_scheme": "http",
    "SERVER_NAME": "127.0.0.1",
    "SERVER_PORT": "8000",
    "REMOTE_ADDR": "127.0.0.1",
    "SCRIPT_NAME": "",
}
MAX_REQUESTS = 25  # per connection, in process


# ------------------------------------------------------------- in-process parser


class FakeSocket:
    """What Connection needs from a socket: recv (pieces, then EOF), setsockopt, sendall."""

    def __init__(self, pieces: Iterable[bytes]) -> None:
        self.pieces = [p for p in pieces if p]
        self.sent = b""

    def recv(self, n: int) -> bytes:
        if not self.pieces:
            return b""
        p = self.pieces[0]
        if len(p) <= n:
            self.pieces.pop(0)
            return p
        self.pieces[0] = p[n:]
        return p[:n]

    def setsockopt(self, *args: Any) -> None:
        pass

    def sendall(self, data: bytes, flags: int = 0) -> None:
        self.sent += data


def run_parser(pieces: Iterable[bytes], root: str = "", trusted: bool = True) -> list[Any]:
    proxy = Proxy(SECURE_SCHEME_HEADERS, lambda ip: ip.startswith("10.")) if trusted else None
    """Drive one connection's worth of requests through the parser; a list of outcomes.

    Outcomes: ("request", method, raw_uri, path_info, query, headers, body),
    ("refused", status), ("body-error", status), ("incomplete",), ("eof",), ("more",).
    Any exception other than the runtime's own request errors propagates (a bug).
    """
    conn = Connection(FakeSocket(pieces), Limits(4094, 100, 8190, 1024, 1.0))  # type: ignore[arg-type]
    out: list[Any] = []
    for _ in range(MAX_REQUESTS):
        try:
            head = conn.read_head()
            if head is None:
                out.append(("eof",))
                return out
            req = parse_request(head, conn, BASE, root, proxy)
        except HTTPError as e:
            assert e.status in ALLOWED, e
            out.append(("refused", e.status))
            return out
        except (IncompleteHead, HeadTimeout):
            out.append(("incomplete",))
            return out
        env = req.environ
        check_environ(env)
        try:
            body = env["wsgi.input"].read()
        except BodyError as e:
            assert e.status in (0, 400, 413, 431), e
            out.append(("body-error", e.status))
            return out
        if "CONTENT_LENGTH" in env and "HTTP_TRANSFER_ENCODING" not in env:
            assert len(body) == int(env["CONTENT_LENGTH"])
        assert env["wsgi.input"].read() == b""  # never past the body
        headers = sorted((k, v) for k, v in env.items() if k.startswith(("HTTP_", "CONTENT_")))
        out.append(("request", req.method, env["RAW_URI"], env["PATH_INFO"], env["QUERY_STRING"], headers, body))
        if not req.keepalive:
            return out
    out.append(("more",))
    return out


def check_environ(env: dict[str, Any]) -> None:
    """PEP 3333 invariants of any environ the parser accepts."""
    for k, v in env.items():
        if "." not in k:
            assert type(v) is str, (k, v)
            v.encode("latin-1")  # native strings hold latin-1 code points only
    for k in ("REQUEST_METHOD", "SERVER_PROTOCOL", "PATH_INFO", "QUERY_STRING", "SERVER_NAME", "SERVER_PORT"):
        assert k in env, k
    assert env["SERVER_PROTOCOL"] in ("HTTP/1.0", "HTTP/1.1")
    te = env.get("HTTP_TRANSFER_ENCODING")
    assert not (te is not None and "CONTENT_LENGTH" in env), "both framings accepted"
    if te is not None:
        assert te.lower().replace(" ", "").replace("\t", "") == "chunked", te
    cl = env.get("CONTENT_LENGTH")
    assert cl is None or (cl.isascii() and cl.isdigit()), cl
    for ch in "\r\n\x00":
        assert not any(ch in v for k, v in env.items() if k.startswith("HTTP_")), env


def equivalent(a: list[Any], b: list[Any]) -> bool:
    """Same requests and bodies; errors may be reported with a different 4xx when the
    order of checks depends on how much of the head had arrived (e.g. a bare LF found
    before an over-long line is known to be over-long)."""
    if len(a) != len(b):
        return False
    for x, y in zip(a, b, strict=True):
        if x[0] == "refused" and y[0] == "refused":
            if x[1] != y[1] and not {x[1], y[1]} <= {400, 414, 431}:
                return False
        elif x != y:
            return False
    return True


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    pieces, last = [], 0
    for p in points:
        pieces.append(data[last:p])
        last = p
    pieces.append(data[last:])
    return pieces


# ---------------------------------------------------------------- strategies

SPECIAL = b"\r\n\t \x00\x0b\x0c\x1b\x7f\x80\xff:;,=\"'-+_/?#%@[]0123456789abcdefxX"


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A corpus request with a few bytes replaced, inserted, deleted or duplicated."""
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.sampled_from((0, 1, 1, 1, 2, 2, 3, 5)))):
        op = draw(st.sampled_from(("replace", "insert", "delete", "dup", "cut")))
        i = draw(st.integers(0, max(len(data) - 1, 0)))
        b = draw(st.sampled_from(SPECIAL))
        if op == "replace" and data:
            data[i] = b
        elif op == "insert":
            data.insert(i, b)
        elif op == "delete" and data:
            del data[i]
        elif op == "dup":
            j = draw(st.integers(i, min(len(data), i + 60)))
            data[i:i] = data[i:j]
        elif op == "cut":
            del data[i:]
    return bytes(data)


# Pieces of a request: the first entry of each list is the well-formed choice, taken most
# of the time (hypothesis's own choices skew towards the ends of a list, so the weighting
# is done with a hypothesis-controlled Random), so that many requests get past the head
# into the body readers and the pipeline, while the rest carry one or two odd pieces.
PIECES: dict[str, list[bytes]] = {
    "method": [b"GET", b"POST", b"PUT", b"HEAD", b"OPTIONS", b"CONNECT", b"get", b"G T", b"", b"X-Y!", b"GE\x00T"],
    "target": [b"/", b"/a?b=c", b"*", b"http://h/p", b"h:80", b"/%41%zz", b"/\xe9", b"//x", b"http://[::1]:1/", b"", b"/a b"],
    "version": [b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2.0", b"HTTP/1.1 ", b"http/1.1", b"HTTP/1.10", b""],
    "sep": [b" ", b"  ", b"\t", b""],
    "eol": [b"\r\n", b"\n", b"\r", b"\r\r\n", b"\n\r"],
    "colon": [b": ", b":", b":\t", b" :", b" : ", b""],
    "name": [b"X-A", b"Host", b"Content-Length", b"Transfer-Encoding", b"Expect", b"Connection", b"Content_Length",
             b"Transfer_Encoding", b"X-Forwarded-For", b"Forwarded", b" Transfer-Encoding", b"Transfer-Encoding ", b"X\x00"],
    "te": [b"chunked", b" chunked", b"chunked, identity", b"xchunked", b"identity, chunked", b"gzip", b"chunked\t",
           b"\tchunked", b"chunked,chunked", b"CHUNKED", b"\x0bchunked", b""],
    "cl": [b"3", b"0", b"5", b"+5", b"0x5", b" 5", b"5,5", b"-1", b"05", b"", b"99999999999999999999", b"1_0"],
    "value": [b"v", b"close", b"keep-alive", b"100-continue", b"1.2.3.4", b"for=[::1];proto=https", b"h:1", b"", b"a\x0bb",
              b"a\rb", b"\xe9", b"a\x00"],
    "size": [b"3", b"1", b"a", b"00000000000000003", b"10000000000000000", b"-1", b"0x3", b"", b" 3", b"3 ", b"3;x=y",
             b'3;x="a;b"', b"3;", b"ffffffffffffffff"],
    "trailer": [b"", b"X-T: 1\r\n", b"Content-Length: 1\r\n", b"Bad Name: x\r\n", b" folded\r\n"],
}


def pick(rnd: random.Random, kind: str, good: float = 0.85) -> bytes:
    options = PIECES[kind]
    return options[0] if rnd.random() < good else rnd.choice(options)


@st.composite
def structured(draw: st.DrawFn) -> bytes:
    """1-3 pipelined requests assembled from PIECES: CL or chunked bodies, odd fields."""
    rnd = draw(st.randoms(use_true_random=False))
    out = b""
    for _ in range(rnd.choice((1, 1, 2, 3))):
        eol = lambda: pick(rnd, "eol", 0.95)  # noqa: E731
        line = pick(rnd, "method") + pick(rnd, "sep", 0.95) + pick(rnd, "target") + pick(rnd, "sep", 0.95) + pick(rnd, "version")
        fields = [b"Host: h"]
        body = b""
        framing = rnd.choice(("none", "cl", "chunked", "both"))
        if framing in ("cl", "both"):
            cl = pick(rnd, "cl", 0.7)
            fields.append(b"Content-Length" + pick(rnd, "colon", 0.9) + cl)
            body = b"abcdefgh"[: int(cl)] if cl.isdigit() and int(cl) < 9 else b"abc"
        if framing in ("chunked", "both"):
            fields.append(pick(rnd, "name", 0.1) if rnd.random() < 0.1 else b"Transfer-Encoding")
            fields[-1] += pick(rnd, "colon", 0.9) + pick(rnd, "te", 0.7)
            body = b""
            for _ in range(rnd.randint(0, 3)):
                size = pick(rnd, "size", 0.7)
                n = int(size.split(b";")[0], 16) if size[:1].isalnum() and len(size) < 5 else 3
                body += size + eol() + bytes(rnd.randrange(256) for _ in range(min(n, 16))) + eol()
            body += b"0" + eol() + pick(rnd, "trailer", 0.7) + eol()
        for _ in range(rnd.randint(0, 3)):
            fields.append(pick(rnd, "name", 0.6) + pick(rnd, "colon", 0.9) + pick(rnd, "value", 0.7))
        rnd.shuffle(fields)
        out += line + eol() + b"".join(f + eol() for f in fields) + eol() + body
    return out


INPUTS = st.one_of(mutated(), structured(), st.binary(max_size=300))
CUTS = st.lists(st.integers(0, 10**6), max_size=12)

PARSER = settings(
    max_examples=2000, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)


@PARSER
@given(INPUTS, CUTS)
def test_parser_never_crashes_and_ignores_recv_boundaries(data: bytes, cuts: list[int]) -> None:
    start = time.monotonic()
    whole = run_parser([data])
    assert time.monotonic() - start < 1.0, "parsing took too long"  # no super-linear blow-up
    pieces = run_parser(split(data, cuts))
    bytewise = run_parser([data[i : i + 1] for i in range(len(data))]) if len(data) < 400 else pieces
    assert equivalent(whole, pieces), (whole, pieces)
    assert equivalent(whole, bytewise), (whole, bytewise)


@settings(max_examples=300, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(INPUTS)
def test_parser_with_root_path_untrusted(data: bytes) -> None:
    for outcome in run_parser([data], root="/app", trusted=False):
        if outcome[0] == "request":
            assert outcome[3] == "" or outcome[3].startswith("/") or outcome[3] == "*", outcome


# ------------------------------------------------------- the handler, in process


def echo(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    body = environ["wsgi.input"].read()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [json.dumps({"path": environ["PATH_INFO"], "n": len(body)}).encode()]


def check(out: bytes, log: str) -> None:
    assert "Traceback" not in log, log
    for status, _, _ in parse_responses(out):
        assert status == 200 or status in ALLOWED or 100 <= status < 200, (status, out[:300])


HANDLER = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)


@HANDLER
@given(INPUTS)
def test_handler_in_process(data: bytes) -> None:
    start = time.monotonic()
    r = serve_raw(echo, data, keepalive=0.2, header_timeout=0.3, timeout=3.0, log_level="info")
    assert time.monotonic() - start < 2.5, "the handler hung"
    check(r.output, r.log)


# ------------------------------------------------------------ a running worker


@pytest.fixture(scope="module")
def worker(request_path: str) -> Iterator[Worker]:
    with start_worker("basic:echo", header_timeout=0.3, keepalive=0.2) as w:
        yield w


@settings(max_examples=120, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(data=INPUTS)
def test_worker_over_sockets(worker: Worker, data: bytes) -> None:
    """Fuzzed requests over real connections to one running worker: allowed answers only."""
    start = time.monotonic()
    out = worker.raw(data, timeout=2.0, shut=True)
    assert time.monotonic() - start < 1.5, "the worker hung on a connection"
    for status, _, _ in parse_responses(out):
        assert status == 200 or status in ALLOWED, (status, data[:200])


def test_worker_survived_the_fuzzing(worker: Worker) -> None:
    assert worker.proc.poll() is None, worker.stderr()[-3000:]
    status, _, body = worker.get("/after-fuzz")
    assert status == 200 and b'"/after-fuzz"' in body
    assert "Traceback" not in worker.stderr(), worker.stderr()[-3000:]
