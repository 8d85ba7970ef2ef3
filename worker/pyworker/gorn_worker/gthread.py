"""The gthread worker class: ``threads`` requests at once in one process, as gunicorn's gthread.

The connection core (:mod:`.core`) holds every connection in the main thread and reads
request heads without blocking; complete requests go to a pool of ``threads`` daemon
threads, which read the body, run the app and write the response, then hand the
connection back through a queue and a wake-up pipe. An idle or slow client holds no
thread. The core listens only while a thread is free and fewer than
``worker_connections`` connections are open; a worker that cannot accept answers with
``Connection: close`` while clients wait on the listeners, so kept-alive clients cannot
starve queued ones.

Scoreboard
    Counters are updated under a lock. ``busy_since`` and the description are those of
    the oldest request in progress and ``in_flight`` counts them, so ``--timeout`` still
    names the request that hangs (the master then dumps every thread's stack).
"""

from __future__ import annotations

import collections
import os
import queue
import threading
from time import monotonic_ns
from typing import Any, Callable, Optional

from . import threads
from .accesslog import AccessLog
from .config import Settings
from .core import Held, Listener, Worker
from .http import Request
from .logs import ErrorsStream, Logger
from .request import RequestHandler
from .scoreboard import W_BUSY_SINCE, W_HEARTBEAT, W_IN_FLIGHT, Scoreboard, request_desc


class ThreadedScoreboard:
    """A worker's scoreboard slot shared by its threads (the same words as a sync worker's)."""

    def __init__(self, sb: Scoreboard) -> None:
        self._sb = sb
        self._lock = threading.Lock()
        self._started: dict[int, tuple[int, bytes]] = {}  # thread -> (start ns, desc), oldest first
        self._detached: set[int] = set()  # threads running an upgraded connection (no hang check)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sb, name)  # lifecycle calls: boot, set_state, beat, ...

    def _show_oldest(self) -> None:
        if self._started:
            start, desc = next(iter(self._started.values()))
            self._sb.show_busy(desc, start)
        else:
            self._sb.words[W_BUSY_SINCE] = 0
        self._sb.words[W_IN_FLIGHT] = len(self._started) + len(self._detached)

    def request_start(self, method: bytes | str, path: bytes | str) -> int:
        desc = request_desc(method, path)
        now = monotonic_ns()
        with self._lock:
            self._started[threading.get_ident()] = (now, desc)
            self._sb.words[W_HEARTBEAT] = now
            self._show_oldest()
        return now

    def request_progress(self) -> None:
        """This thread's request sent part of its response: its hang clock restarts."""
        ident = threading.get_ident()
        now = monotonic_ns()
        with self._lock:
            entry = self._started.pop(ident, None)
            if entry is not None:
                self._started[ident] = (now, entry[1])  # now the newest
                self._show_oldest()

    def request_detach(self) -> None:
        """This thread's request is an upgraded connection (a WebSocket): it stays in flight
        but out of the hang check, since the main thread keeps the heartbeat going."""
        ident = threading.get_ident()
        with self._lock:
            if self._started.pop(ident, None) is not None:
                self._detached.add(ident)
                self._show_oldest()

    def _done(self) -> None:
        ident = threading.get_ident()
        if self._started.pop(ident, None) is None:
            self._detached.discard(ident)
        self._show_oldest()

    def request_end(self, method: str, status: int, duration_ns: int, body_bytes: int) -> None:
        with self._lock:
            self._sb.request_end(method, status, duration_ns, body_bytes)
            self._done()

    def request_abort(self) -> None:
        with self._lock:
            self._sb.request_abort()
            self._done()


class ThreadPool:
    """Runs requests on ``threads`` daemon threads; finished ones come back in :meth:`collect`."""

    rotate = True  # a thread frees up sooner than a busy pool reaches a kept connection
    serial = False

    def __init__(self, handler: RequestHandler, nthreads: int) -> None:
        self.handler = handler
        self.threads = max(1, nthreads)
        self.busy = 0  # requests handed to the threads and not collected yet
        self.tasks: queue.SimpleQueue[Optional[tuple[Held, Request]]] = queue.SimpleQueue()
        self.done: collections.deque[tuple[Held, Request, bool]] = collections.deque()
        self.wake_fd, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.pool = [threads.start(self._thread, f"gorn-thread-{i}") for i in range(self.threads)]

    def free(self) -> bool:
        return self.busy < self.threads

    def idle(self) -> bool:
        return self.busy == 0

    def submit(self, h: Held, req: Request) -> Optional[bool]:
        self.busy += 1
        self.tasks.put((h, req))
        return None

    def collect(self) -> list[tuple[Held, Request, bool]]:
        done = self.done
        out = []
        while done:
            out.append(done.popleft())
        self.busy -= len(out)
        return out

    def stop(self) -> None:
        for _ in self.pool:
            self.tasks.put(None)

    def _thread(self) -> None:
        errors = ErrorsStream(self.handler.log)
        handler = self.handler
        while True:
            task = self.tasks.get()
            if task is None:
                return
            h, req = task
            keep = False
            try:
                keep = handler.serve(h.conn, req, errors)
            except OSError as e:
                handler.log.debug(f"connection error: {e}")
            except Exception:
                handler.log.exception("unexpected error while handling a connection")
            self.done.append((h, req, keep))
            try:
                os.write(self._wake_w, b"\0")
            except BlockingIOError:
                pass  # the pipe is full: the main thread will wake anyway


class ThreadWorker(Worker):
    """The connection core with a thread pool executor."""

    def __init__(
        self,
        app: Callable[..., Any],
        settings: Settings,
        log: Logger,
        scoreboard: Scoreboard,
        listeners: list[Listener],
        access: Optional[AccessLog] = None,
    ) -> None:
        handler = RequestHandler(app, settings, log, ThreadedScoreboard(scoreboard), access)  # type: ignore[arg-type]
        handler.base["wsgi.multithread"] = True
        super().__init__(handler, listeners, ThreadPool(handler, settings.threads))
        self.max_conns = max(self.max_conns, settings.threads)
