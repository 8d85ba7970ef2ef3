"""The sync worker class: the app runs inline, one request at a time.

The connection core (:mod:`.core`) holds every connection and reads request heads
without blocking; this executor runs the app for one complete request in the worker's
only thread, so the app sees the single-threaded world gunicorn's sync worker gives it.
While the app runs, the worker is out of the listeners' wait queue: an idle sibling takes
new connections. With other workers to take them, clients waiting on the listeners make a
busy worker answer its kept connection with ``Connection: close`` (one FIFO queue, the
kernel's, rather than a queue behind each busy worker).
"""

from __future__ import annotations

from typing import Any, Callable, Optional

from .accesslog import AccessLog
from .config import Settings
from .core import FastExit, Held, Listener, Wakeup, Worker, find_lost_connections
from .http import Request
from .logs import Logger
from .request import RequestHandler
from .scoreboard import Scoreboard

__all__ = ["FastExit", "Listener", "SyncWorker", "Wakeup", "find_lost_connections"]


class Inline:
    """Runs each request in the calling thread."""

    wake_fd = -1
    serial = True

    def __init__(self, handler: RequestHandler, rotate: bool) -> None:
        self.handler = handler
        self.rotate = rotate
        self.running = False

    def free(self) -> bool:
        return not self.running

    def idle(self) -> bool:
        return not self.running

    def submit(self, h: Held, req: Request) -> Optional[bool]:
        self.running = True
        try:
            return self.handler.serve(h.conn, req)
        except OSError as e:
            self.handler.log.debug(f"connection error: {e}")
            return False
        finally:
            self.running = False

    def collect(self) -> list[tuple[Held, Request, bool]]:
        return []

    def stop(self) -> None:
        pass


class SyncWorker(Worker):
    """The connection core with the inline executor."""

    def __init__(
        self,
        app: Callable[..., Any],
        settings: Settings,
        log: Logger,
        scoreboard: Scoreboard,
        listeners: list[Listener],
        access: Optional[AccessLog] = None,
    ) -> None:
        handler = RequestHandler(app, settings, log, scoreboard, access)
        super().__init__(handler, listeners, Inline(handler, rotate=settings.workers > 1))
