"""Fuzzing the request path with hypothesis: arbitrary and mutated requests, fed through
the real connection handler in process (tests/harness.serve_raw), must end in a parsed
request or a clean HTTP error, never an unhandled exception, a traceback or a hang; and a
running worker must survive a burst of them. Bounded: a few seconds in CI."""

from __future__ import annotations

import json
import time
from typing import Any, Iterable

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from corpus_requests import INVALID, VALID
from harness import parse_responses, serve_raw, start_worker

SEEDS = [raw for _, raw, _ in VALID] + [raw for _, raw, _ in INVALID]
ALLOWED = {200, 400, 413, 414, 417, 431, 501, 505}


def echo(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    body = environ["wsgi.input"].read()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [json.dumps({"path": environ["PATH_INFO"], "n": len(body)}).encode()]


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A corpus request with a few bytes replaced, inserted or deleted."""
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(("replace", "insert", "delete", "dup")))
        i = draw(st.integers(0, max(len(data) - 1, 0)))
        b = draw(st.sampled_from(b"\r\n\t \x00:;,-0123456789abcdefxX\x7f\xff\"/"))
        if op == "replace" and data:
            data[i] = b
        elif op == "insert":
            data.insert(i, b)
        elif op == "delete" and data:
            del data[i]
        elif op == "dup":
            j = draw(st.integers(i, min(len(data), i + 40)))
            data[i:i] = data[i:j]
    return bytes(data)


def check(out: bytes, log: str) -> None:
    assert "Traceback" not in log, log
    for status, _, _ in parse_responses(out):
        assert status in ALLOWED or 100 <= status < 200, (status, out[:300])


FUZZ = settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)


@FUZZ
@given(mutated())
def test_mutated_requests(data: bytes) -> None:
    r = serve_raw(echo, data, keepalive=0, header_timeout=0.5, timeout=3.0, log_level="info")
    check(r.output, r.log)


@FUZZ
@given(st.binary(max_size=400))
def test_arbitrary_bytes(data: bytes) -> None:
    r = serve_raw(echo, b"POST /f HTTP/1.1\r\n" + data, keepalive=0, header_timeout=0.5, timeout=3.0, log_level="info")
    check(r.output, r.log)


def test_worker_survives_fuzz_burst() -> None:
    """Send a burst of mutated requests to a real worker; it keeps answering."""
    import random

    rnd = random.Random(7)
    with start_worker("basic:echo", header_timeout=0.3, keepalive=0) as w:
        start = time.monotonic()
        for _ in range(120):
            data = bytearray(rnd.choice(SEEDS))
            for _ in range(rnd.randint(1, 4)):
                data.insert(rnd.randrange(len(data) + 1), rnd.choice(b"\r\n\x00 :\xff-9"))
            w.raw(bytes(data), timeout=2.0, shut=True)
        assert time.monotonic() - start < 60
        assert w.proc.poll() is None, w.stderr()[-3000:]
        status, _, _ = w.get("/after-fuzz")
        assert status == 200
        assert "Traceback" not in w.stderr(), w.stderr()[-3000:]
