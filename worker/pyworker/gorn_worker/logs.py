"""The worker's error log: one line per record on stderr, text or JSON.

Text: ``[2026-11-26 12:00:00 +0000] [PID] [LEVEL] worker[slot]: message`` (a traceback
follows on the next lines). JSON: one object per line with ``ts`` (float epoch),
``level``, ``logger`` ("worker"), ``msg``, ``pid``, ``slot``, ``generation`` and
``traceback`` when there is one. Every record is a single ``os.write`` so concurrent
writers (other workers, the master) never interleave inside a line.

This logger deliberately does not use :mod:`logging`: the app owns that module's
configuration, and the worker must keep its own format whatever the app does.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
from types import TracebackType
from typing import TYPE_CHECKING, Callable, Optional, Type, Union

if TYPE_CHECKING:
    from .config import Settings

DEBUG = 10
INFO = 20
WARNING = 30
ERROR = 40
CRITICAL = 50

LEVELS: dict[str, int] = {"debug": DEBUG, "info": INFO, "warning": WARNING, "error": ERROR, "critical": CRITICAL}
_NAMES: dict[int, str] = {v: k for k, v in LEVELS.items()}

ExcInfo = tuple[Type[BaseException], BaseException, Optional[TracebackType]]


def write_all(fd: int, data: bytes) -> None:
    """Write every byte to fd, ignoring a closed or broken destination."""
    view = memoryview(data)
    while view:
        try:
            n = os.write(fd, view)
        except InterruptedError:
            continue
        except OSError:
            return
        view = view[n:]


def emergency(message: str) -> None:
    """A text-format line before settings are known (bad settings: exit 3)."""
    stamp = time.strftime("%Y-%m-%d %H:%M:%S %z")
    write_all(2, f"[{stamp}] [{os.getpid()}] [ERROR] worker: {message}\n".encode("utf-8", "replace"))


class Logger:
    """The worker's error log."""

    def __init__(
        self,
        level: str = "info",
        fmt: str = "text",
        slot: int = 0,
        generation: int = 0,
        fd: int = 2,
        path: Optional[str] = None,
        name: str = "worker",
    ) -> None:
        self.level = LEVELS[level]
        self.json = fmt == "json"
        self.slot = slot
        self.generation = generation
        self.fd = fd
        self.path = path  # error_log path, or None for "-" (stderr as inherited)
        self.pid = os.getpid()
        self._prefix_tail = f"] [{self.pid}] ["
        self.name = name
        self._who = f"] worker[{slot}]: " if name == "worker" else f"] {name}: "
        # Called with "warning", "error", "exception" (an error with a traceback) or
        # "critical" for each such record: gunicorn's StatsD log counters.
        self.count: Optional[Callable[[str], None]] = None

    @classmethod
    def for_settings(cls, settings: Settings, name: str = "worker") -> Logger:
        """The error log the settings describe, on the inherited stderr or their file."""
        path = None if settings.error_log == "-" else settings.error_log
        return cls(settings.log_level, settings.log_format, settings.slot, settings.generation, 2, path, name)

    def enabled(self, level: int) -> bool:
        return level >= self.level

    def log(self, level: int, msg: str, exc_info: Union[None, bool, ExcInfo] = None, counted: bool = True) -> None:
        if level < self.level:
            return
        tb: Optional[str] = None
        if exc_info:
            ei = sys.exc_info() if exc_info is True else exc_info
            if isinstance(ei, tuple) and ei[0] is not None:
                tb = "".join(traceback.format_exception(ei[0], ei[1], ei[2])).rstrip("\n")
        if level >= WARNING and self.count is not None and counted:
            self.count("exception" if tb is not None else _NAMES.get(level, "error"))
        if self.json:
            rec: dict[str, object] = {
                "ts": time.time(),
                "level": _NAMES.get(level, "info"),
                "logger": self.name,
                "msg": msg,
                "pid": self.pid,
                "slot": self.slot,
                "generation": self.generation,
            }
            if tb is not None:
                rec["traceback"] = tb
            line = json.dumps(rec, ensure_ascii=False, default=str) + "\n"
        else:
            stamp = time.strftime("%Y-%m-%d %H:%M:%S %z")
            line = f"[{stamp}{self._prefix_tail}{_NAMES.get(level, 'info').upper()}{self._who}{msg}\n"
            if tb is not None:
                line += tb + "\n"
        write_all(self.fd, line.encode("utf-8", "replace"))

    def debug(self, msg: str) -> None:
        if DEBUG >= self.level:
            self.log(DEBUG, msg)

    def info(self, msg: str) -> None:
        if INFO >= self.level:
            self.log(INFO, msg)

    def warning(self, msg: str) -> None:
        self.log(WARNING, msg)

    def error(self, msg: str, exc_info: Union[None, bool, ExcInfo] = None) -> None:
        self.log(ERROR, msg, exc_info)

    def critical(self, msg: str) -> None:
        self.log(CRITICAL, msg)

    def exception(self, msg: str) -> None:
        self.log(ERROR, msg, True)

    def reopen(self) -> None:
        """USR1: reopen the error-log file onto fd 2 (after a rotation). No-op for stderr."""
        if not self.path:
            return
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as e:
            self.error(f"cannot reopen error log {self.path}: {e.strerror}")
            return
        try:
            os.dup2(fd, self.fd, inheritable=self.fd <= 2)
        finally:
            os.close(fd)


class ErrorsStream:
    """``wsgi.errors``: a text stream whose output becomes error-log records.

    Text is buffered until ``flush()`` (``logging.StreamHandler`` flushes after every
    record, so a multi-line traceback stays one record) or until the worker flushes it
    at the end of the request.
    """

    __slots__ = ("_log", "_buf")

    def __init__(self, log: Logger) -> None:
        self._log = log
        self._buf: list[str] = []

    def write(self, s: str) -> int:
        if not isinstance(s, str):
            raise TypeError(f"wsgi.errors.write() takes str, not {type(s).__name__}")
        self._buf.append(s)
        if sum(len(x) for x in self._buf) > 65536:
            self.flush()
        return len(s)

    def writelines(self, lines: list[str]) -> None:
        for s in lines:
            self.write(s)

    def flush(self) -> None:
        if not self._buf:
            return
        text = "".join(self._buf).rstrip("\n")
        self._buf.clear()
        if text:
            # Not counted: gunicorn's wsgi.errors writes to the log stream, not its logger.
            self._log.log(ERROR, text, counted=False)

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return False
