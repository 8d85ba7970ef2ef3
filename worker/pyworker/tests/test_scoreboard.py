"""Scoreboard words written as CONTRACT.md says (and as internal/scoreboard reads)."""

from __future__ import annotations

import mmap
import os
import re
from pathlib import Path

import pytest

from gorn_worker import scoreboard as sbm
from gorn_worker.scoreboard import Scoreboard, ScoreboardError, SlotView
from prereq import missing

GO = Path(__file__).resolve().parents[3] / "internal" / "scoreboard" / "scoreboard.go"


def board(slots: int = 4) -> tuple[int, mmap.mmap]:
    fd = os.memfd_create("t", 0)
    os.ftruncate(fd, slots * sbm.SLOT_BYTES)
    return fd, mmap.mmap(fd, slots * sbm.SLOT_BYTES)


def test_words_follow_the_contract() -> None:
    fd, mm = board()
    try:
        sb = Scoreboard(fd, 2)
        view = SlotView(mm, 2)
        sb.boot(7, 1234)
        assert view[sbm.W_GENERATION] == 7 and view[sbm.W_PID] == 1234
        assert view[sbm.W_STATE] == sbm.STATE_BOOTING and view[sbm.W_HEARTBEAT] > 0
        sb.set_state(sbm.STATE_READY)
        t = sb.request_start("POST", b"/upload")
        assert view[sbm.W_BUSY_SINCE] == t and view.desc() == b"POST /upload"
        sb.request_end("POST", 201, 3_000_000, 99)  # 3 ms -> bucket le 0.005
        assert view[sbm.W_BUSY_SINCE] == 0 and view[sbm.W_REQUESTS] == 1
        assert view.counter("POST", 2) == 1
        assert view.histogram()[2] == 1 and sum(view.histogram()) == 1
        assert view[sbm.W_DURATION_SUM] == 3000 and view[sbm.W_BYTES_SENT] == 99
        sb.request_end("BREW", 999, 100 * 10**9, 0)
        assert view.counter("other", 5) == 1 and view.histogram()[13] == 1
        sb.request_end("GET", 100, 1_000_000, 0)  # exactly 1 ms -> first bucket (le)
        assert view.histogram()[0] == 1 and view.counter("GET", 1) == 1
        sb.set_accepting(1)
        assert view[sbm.W_ACCEPTING] == 1
        # other slots untouched
        assert all(SlotView(mm, s)[w] == 0 for s in (0, 1, 3) for w in range(sbm.SLOT_WORDS))
        view.release()
    finally:
        os.close(fd)


def test_desc_truncated_to_128() -> None:
    fd, mm = board(1)
    try:
        sb = Scoreboard(fd, 0)
        sb.request_start("GET", b"/" + b"x" * 500)
        v = SlotView(mm, 0)
        assert len(v.desc()) == 128 and v[sbm.W_DESC_LEN] == 128
        sb.request_start("GET", "/é")
        assert v.desc() == "GET /é".encode()
        v.release()
    finally:
        os.close(fd)


def test_bad_boards() -> None:
    fd = os.memfd_create("t", 0)
    try:
        with pytest.raises(ScoreboardError):
            Scoreboard(fd, 0)  # empty
        os.ftruncate(fd, 1000)
        with pytest.raises(ScoreboardError):
            Scoreboard(fd, 0)  # not a multiple
        os.ftruncate(fd, 2048)
        with pytest.raises(ScoreboardError):
            Scoreboard(fd, 2)  # out of range
    finally:
        os.close(fd)
    with pytest.raises(ScoreboardError):
        Scoreboard(999, 0)
    Scoreboard(-1, 0).request_start("GET", b"/")  # private board works


def test_constants_match_go() -> None:
    if not GO.exists():
        missing("internal/scoreboard/scoreboard.go not present")
    src = GO.read_text()
    go = {m.group(1): int(m.group(2)) for m in re.finditer(r"^\s*(\w+)\s*=\s*(\d+)\s*(?://.*)?$", src, re.M)}
    pairs = {
        "SlotWords": sbm.SLOT_WORDS, "WordGeneration": sbm.W_GENERATION, "WordPID": sbm.W_PID,
        "WordState": sbm.W_STATE, "WordHeartbeat": sbm.W_HEARTBEAT, "WordBusySince": sbm.W_BUSY_SINCE,
        "WordRequests": sbm.W_REQUESTS, "WordDescLen": sbm.W_DESC_LEN, "WordAccepting": sbm.W_ACCEPTING,
        "WordCounters": sbm.W_COUNTERS, "WordHistogram": sbm.W_HISTOGRAM, "WordDurationSum": sbm.W_DURATION_SUM,
        "WordBytesSent": sbm.W_BYTES_SENT, "WordDesc": sbm.W_DESC, "DescBytes": sbm.DESC_BYTES,
        "Methods": len(sbm.METHODS), "Classes": sbm.CLASSES, "Buckets": sbm.BUCKETS,
        "StateBooting": sbm.STATE_BOOTING, "StateReady": sbm.STATE_READY, "StateDraining": sbm.STATE_DRAINING,
    }
    for name, value in pairs.items():
        assert go.get(name) == value, name
    bounds = re.search(r"BucketBounds = \[Buckets - 1\]float64\{([^}]*)\}", src)
    assert bounds and tuple(float(x) for x in bounds.group(1).split(",")) == sbm.BUCKET_BOUNDS
    names = re.search(r"MethodNames = \[Methods\]string\{([^}]*)\}", src)
    assert names and tuple(x.strip().strip('"') for x in names.group(1).split(",")) == sbm.METHODS
