"""Replays the raw-request corpus (tests/corpus_requests.py) against running workers,
each case sent whole and split into small random pieces, so the parser sees every
boundary: valid requests must produce exactly the expected environ, invalid ones exactly
the expected status (or a silent close), and never a crash or a hang."""

from __future__ import annotations

import json
import random
import socket
import time
from typing import Any, Iterator

import pytest

from corpus_requests import INVALID, ROOTED, VALID
from harness import Worker, parse_responses, read_until_close, start_worker

SPLITS = (None, 1, 2)  # None: whole; otherwise the random seed of a split


@pytest.fixture(scope="module")
def workers() -> Iterator[dict[str, Worker]]:
    common: dict[str, Any] = {"header_timeout": 1.0, "keepalive": 2.0, "limit_request_body": 1024}
    default = start_worker("basic:echo", **common)
    rooted = start_worker("basic:echo", root_path="/app", forwarded_allow_ips=[], **common)
    yield {"default": default, "rooted": rooted}
    for w in (default, rooted):
        w.close()


def send(w: Worker, raw: bytes, split: Any, shut: bool) -> bytes:
    s = w.connect(timeout=5.0)
    try:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            if split is None:
                s.sendall(raw)
            else:
                rnd = random.Random(split)
                i = 0
                while i < len(raw):
                    n = rnd.randint(1, 7)
                    s.sendall(raw[i : i + n])
                    i += n
                    if rnd.random() < 0.2:
                        time.sleep(0.0005)
            if shut:
                s.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and closed before the rest was sent
        return read_until_close(s, timeout=5.0)
    finally:
        s.close()


def group(name: str) -> str:
    return "rooted" if name in ROOTED else "default"


@pytest.mark.parametrize("split", SPLITS, ids=lambda s: "whole" if s is None else f"split{s}")
@pytest.mark.parametrize("name,raw,expected", VALID, ids=[c[0] for c in VALID])
def test_valid(workers: dict[str, Worker], name: str, raw: bytes, expected: Any, split: Any) -> None:
    w = workers[group(name)]
    out = send(w, raw, split, shut=False)
    responses = [r for r in parse_responses(out) if r[0] >= 200]
    want = expected if isinstance(expected, list) else [expected]
    assert [r[0] for r in responses] == [200] * len(want), (out[:600], w.stderr()[-2000:])
    for (status, headers, body), exp in zip(responses, want):
        doc = json.loads(body)
        for key, value in exp.items():
            if key == "headers":
                for hk, hv in value.items():
                    assert doc["headers"].get(hk) == hv, (hk, doc["headers"])
            elif key == "absent":
                for k in value:
                    assert k not in doc["headers"], (k, doc["headers"])
            else:
                assert doc[key] == value, (key, doc)


@pytest.mark.parametrize("split", SPLITS, ids=lambda s: "whole" if s is None else f"split{s}")
@pytest.mark.parametrize("name,raw,expected", INVALID, ids=[c[0] for c in INVALID])
def test_invalid(workers: dict[str, Worker], name: str, raw: bytes, expected: Any, split: Any) -> None:
    w = workers[group(name)]
    out = send(w, raw, split, shut=expected == "close")
    if expected == "close":
        assert out == b"", out[:300]
        return
    responses = parse_responses(out)
    assert responses, (out[:300], w.stderr()[-2000:])
    status, headers, _ = responses[0]
    assert status == expected, (out[:300],)
    assert len(responses) == 1, out[:600]
    first_line = out.split(b"\r\n", 1)[0]
    assert first_line.startswith(b"HTTP/1.1 %d " % expected) and len(first_line) > 13, first_line


def test_workers_survived(workers: dict[str, Worker]) -> None:
    for w in workers.values():
        assert w.proc.poll() is None, w.stderr()[-3000:]
        status, _, _ = w.get("/still-alive")
        assert status == 200


def test_corpus_size() -> None:
    assert len(VALID) >= 60 and len(INVALID) >= 60, (len(VALID), len(INVALID))
