"""The worker side of the shared-memory scoreboard (worker/CONTRACT.md, "Scoreboard").

The master creates a memfd of ``SLOTS * SLOT_BYTES`` bytes; each worker maps it
MAP_SHARED and writes only its own slot with single aligned 8-byte stores through a
``memoryview(...).cast("Q")``. No syscalls: this is the heartbeat and the metrics source.
The word indexes below must match ``internal/scoreboard/scoreboard.go``.
"""

from __future__ import annotations

import mmap
import os
from bisect import bisect_left
from time import monotonic_ns

SLOT_WORDS = 128
SLOT_BYTES = SLOT_WORDS * 8

W_GENERATION = 0
W_PID = 1
W_STATE = 2
W_HEARTBEAT = 3
W_BUSY_SINCE = 4
W_REQUESTS = 5
W_DESC_LEN = 6
W_ACCEPTING = 7
W_COUNTERS = 8
W_HISTOGRAM = 48
W_DURATION_SUM = 62
W_BYTES_SENT = 63
W_DESC = 64
DESC_BYTES = 128
W_IN_FLIGHT = 80  # threaded workers: requests in progress (busy_since is the oldest's start)
W_RELOAD = 81  # --reload: mtime (Unix ns) of the newest source change seen
W_CONNECTIONS = 82  # connections the worker holds open (running, waiting for a head, kept alive)
W_REQUEST_PATH = 83  # which request path the worker runs: REQUEST_PATH_PYTHON or REQUEST_PATH_NATIVE

REQUEST_PATH_PYTHON = 1
REQUEST_PATH_NATIVE = 2

STATE_FREE = 0
STATE_BOOTING = 1
STATE_READY = 2
STATE_DRAINING = 3

METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "other")
METHOD_INDEX: dict[str, int] = {m: i for i, m in enumerate(METHODS[:-1])}
OTHER_METHOD = 7
CLASSES = 5

#: Histogram upper bounds (seconds); the 14th bucket is +Inf.
BUCKET_BOUNDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BUCKETS = len(BUCKET_BOUNDS) + 1
_BOUNDS_NS = tuple(round(b * 1e9) for b in BUCKET_BOUNDS)


def request_desc(method: bytes | str, path: bytes | str) -> bytes:
    """``METHOD PATH`` as the slot shows it: bytes, cut to DESC_BYTES."""
    m = method.encode("latin-1", "replace") if isinstance(method, str) else method
    p = path.encode("utf-8", "replace") if isinstance(path, str) else path
    return (m + b" " + p)[:DESC_BYTES]


class ScoreboardError(OSError):
    """The scoreboard fd cannot be mapped or the slot is out of range."""


class Scoreboard:
    """One worker's slot in the scoreboard.

    ``fd=-1`` maps a private anonymous slot (for tests and standalone runs).
    """

    __slots__ = ("_mm", "words", "_bytes", "slot", "_desc_off")

    def __init__(self, fd: int, slot: int) -> None:
        if slot < 0:
            raise ScoreboardError(f"scoreboard slot {slot} is negative")
        if fd < 0:
            self._mm = mmap.mmap(-1, SLOT_BYTES)
            base = 0
        else:
            try:
                size = os.fstat(fd).st_size
            except OSError as e:
                raise ScoreboardError(f"scoreboard fd {fd}: {e.strerror}") from None
            if size == 0 or size % SLOT_BYTES:
                raise ScoreboardError(f"scoreboard size {size} is not a multiple of {SLOT_BYTES}")
            if (slot + 1) * SLOT_BYTES > size:
                raise ScoreboardError(f"scoreboard slot {slot} is out of range ({size // SLOT_BYTES} slots)")
            try:
                self._mm = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
            except (OSError, ValueError) as e:
                raise ScoreboardError(f"mapping scoreboard fd {fd}: {e}") from None
            base = slot * SLOT_BYTES
        self.slot = slot
        whole = memoryview(self._mm)
        self._bytes = whole[base : base + SLOT_BYTES]
        self.words = self._bytes.cast("Q")
        self._desc_off = W_DESC * 8

    # ------------------------------------------------------------- lifecycle
    def boot(self, generation: int, pid: int) -> None:
        """At start: generation, pid, state=booting, heartbeat."""
        w = self.words
        w[W_GENERATION] = generation
        w[W_PID] = pid
        w[W_HEARTBEAT] = monotonic_ns()
        w[W_STATE] = STATE_BOOTING

    def set_request_path(self, native: bool) -> None:
        self.words[W_REQUEST_PATH] = REQUEST_PATH_NATIVE if native else REQUEST_PATH_PYTHON

    def set_state(self, state: int) -> None:
        self.words[W_STATE] = state

    def beat(self) -> None:
        self.words[W_HEARTBEAT] = monotonic_ns()

    def set_accepting(self, on: int) -> None:
        w = self.words
        w[W_HEARTBEAT] = monotonic_ns()
        w[W_ACCEPTING] = on

    # ---------------------------------------------------------------- requests
    def request_start(self, method: bytes | str, path: bytes | str) -> int:
        """Mark the slot busy with ``METHOD PATH``; returns the start time (ns)."""
        now = monotonic_ns()
        self.words[W_HEARTBEAT] = now
        self.show_busy(request_desc(method, path), now)
        return now

    def show_busy(self, desc: bytes, since: int) -> None:
        """Publish the request in hand: its description (written before its length) and start."""
        off = self._desc_off
        self._bytes[off : off + len(desc)] = desc
        w = self.words
        w[W_DESC_LEN] = len(desc)
        w[W_BUSY_SINCE] = since

    def request_progress(self) -> None:
        """The request in hand sent part of its response: ``--timeout`` counts from now, so a
        streaming response that keeps sending is not a hang."""
        now = monotonic_ns()
        w = self.words
        w[W_HEARTBEAT] = now
        if w[W_BUSY_SINCE]:
            w[W_BUSY_SINCE] = now

    def request_detach(self) -> None:
        """The request is a long-lived stream by design (an Upgrade, e.g. a WebSocket). A sync
        worker cannot tell a hang from it: ``--timeout`` still applies, as in gunicorn's."""

    def request_end(self, method: str, status: int, duration_ns: int, body_bytes: int) -> None:
        """Count a finished request and mark the slot idle."""
        w = self.words
        cls = status // 100
        if cls < 1:
            cls = 1
        elif cls > 5:
            cls = 5
        i = W_COUNTERS + METHOD_INDEX.get(method, OTHER_METHOD) * CLASSES + cls - 1
        w[i] += 1
        if duration_ns < 0:
            duration_ns = 0
        w[W_HISTOGRAM + bisect_left(_BOUNDS_NS, duration_ns)] += 1
        w[W_DURATION_SUM] += duration_ns // 1000
        w[W_BYTES_SENT] += body_bytes
        w[W_REQUESTS] += 1
        w[W_BUSY_SINCE] = 0
        w[W_HEARTBEAT] = monotonic_ns()

    def request_abort(self) -> None:
        """The request in hand ended without a response (client gone): idle again."""
        w = self.words
        w[W_BUSY_SINCE] = 0
        w[W_HEARTBEAT] = monotonic_ns()


class SlotView:
    """Read-only view of any slot of a scoreboard mapping (tests and tools)."""

    def __init__(self, mm: mmap.mmap, slot: int) -> None:
        base = slot * SLOT_BYTES
        self._b = memoryview(mm)[base : base + SLOT_BYTES]
        self.words = self._b.cast("Q")

    def __getitem__(self, i: int) -> int:
        return int(self.words[i])

    def desc(self) -> bytes:
        n = self.words[W_DESC_LEN]
        if n == 0 or n > DESC_BYTES:
            return b""
        return bytes(self._b[W_DESC * 8 : W_DESC * 8 + n])

    def counter(self, method: str, status_class: int) -> int:
        return int(self.words[W_COUNTERS + METHOD_INDEX.get(method, OTHER_METHOD) * CLASSES + status_class - 1])

    def histogram(self) -> list[int]:
        return [int(self.words[W_HISTOGRAM + i]) for i in range(BUCKETS)]

    def release(self) -> None:
        self.words.release()
        self._b.release()
