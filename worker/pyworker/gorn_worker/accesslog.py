"""The access log: gunicorn's ``access_log_format`` atoms, or one JSON object per line.

The format is compiled once into a ``%s`` template plus one getter per atom, so a line
costs one tuple of small strings and one ``os.write`` (no ``%`` over a big dict).

Atoms: ``h l u t r s b B f a T M D L p m U q H``, ``{header}i`` (request header),
``{header}o`` (response header), ``{var}e`` (environ). Missing values are ``-``; values
that came from the client have ``"`` and ``\\`` backslash-escaped and control
characters written as ``\\xNN``, so one request is always one line.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
import time
from typing import Any, Callable, Optional

from .logs import Logger, write_all

Environ = dict[str, Any]
Headers = list[tuple[str, str]]
Getter = Callable[[Environ, int, Headers, int, int], str]

_ATOM = re.compile(r"%\(([^)]*)\)s")
_NEEDS_ESCAPE = re.compile(r'["\\\x00-\x1f\x7f]').search
_ESCAPE_TABLE = {i: f"\\x{i:02x}" for i in list(range(0x20)) + [0x7F]}
_ESCAPE_TABLE[ord('"')] = '\\"'
_ESCAPE_TABLE[ord("\\")] = "\\\\"

_PID = str(os.getpid())
_time_cache: list[Any] = [0, ""]


def escape(value: str) -> str:
    if _NEEDS_ESCAPE(value) is None:
        return value
    return value.translate(_ESCAPE_TABLE)


def _now_clf() -> str:
    now = int(time.time())
    if now != _time_cache[0]:
        _time_cache[1] = time.strftime("[%d/%b/%Y:%H:%M:%S %z]", time.localtime(now))
        _time_cache[0] = now
    return _time_cache[1]  # type: ignore[no-any-return]


def _env(key: str) -> Getter:
    def get(e: Environ, s: int, h: Headers, b: int, d: int) -> str:
        v = e.get(key)
        if v is None or v == "":
            return "-"
        return escape(v if type(v) is str else str(v))

    return get


def _user(e: Environ, s: int, h: Headers, b: int, d: int) -> str:
    auth = e.get("HTTP_AUTHORIZATION")
    if not auth or auth[:6].lower() != "basic ":
        return "-"
    try:
        user = base64.b64decode(auth[6:].strip(), validate=True).decode("latin-1").split(":", 1)[0]
    except (binascii.Error, ValueError):
        return "-"
    return escape(user) if user else "-"


def _request_line(e: Environ, s: int, h: Headers, b: int, d: int) -> str:
    return escape(f"{e.get('REQUEST_METHOD', '-')} {e.get('RAW_URI', '-')} {e.get('SERVER_PROTOCOL', '-')}")


def _response_header(name: str) -> Getter:
    low = name.lower()

    def get(e: Environ, s: int, h: Headers, b: int, d: int) -> str:
        for k, v in h:
            if k.lower() == low:
                return escape(v) if v else "-"
        return "-"

    return get


def _request_header(name: str) -> Getter:
    key = name.upper().replace("-", "_")
    if key not in ("CONTENT_TYPE", "CONTENT_LENGTH"):
        key = "HTTP_" + key
    return _env(key)


_SIMPLE: dict[str, Getter] = {
    "h": _env("REMOTE_ADDR"),
    "l": lambda e, s, h, b, d: "-",
    "u": _user,
    "t": lambda e, s, h, b, d: _now_clf(),
    "r": _request_line,
    "s": lambda e, s, h, b, d: str(s),
    "b": lambda e, s, h, b, d: str(b),
    "B": lambda e, s, h, b, d: str(b),
    "f": _env("HTTP_REFERER"),
    "a": _env("HTTP_USER_AGENT"),
    "T": lambda e, s, h, b, d: str(d // 1_000_000_000),
    "M": lambda e, s, h, b, d: str(d // 1_000_000),
    "D": lambda e, s, h, b, d: str(d // 1000),
    "L": lambda e, s, h, b, d: "%d.%06d" % divmod(d // 1000, 1_000_000),
    "p": lambda e, s, h, b, d: f"<{_PID}>",
    "m": _env("REQUEST_METHOD"),
    "U": _env("PATH_INFO"),
    "q": _env("QUERY_STRING"),
    "H": _env("SERVER_PROTOCOL"),
}


def compile_format(fmt: str) -> tuple[str, tuple[Getter, ...]]:
    """Turn a gunicorn access-log format into a ``%s`` template and its getters."""
    template: list[str] = []
    getters: list[Getter] = []
    pos = 0
    for m in _ATOM.finditer(fmt):
        template.append(fmt[pos : m.start()].replace("%%", "%").replace("%", "%%"))
        template.append("%s")
        atom = m.group(1)
        g = _SIMPLE.get(atom)
        if g is None:
            if atom.startswith("{") and len(atom) > 3 and atom[-2] == "}" and atom[-1] in "ioe":
                name = atom[1:-2]
                kind = atom[-1]
                if kind == "i":
                    g = _request_header(name)
                elif kind == "o":
                    g = _response_header(name)
                else:
                    g = _env(name)
            else:
                g = _SIMPLE["l"]  # unknown atom: "-"
        getters.append(g)
        pos = m.end()
    template.append(fmt[pos:].replace("%%", "%").replace("%", "%%"))
    return "".join(template), tuple(getters)


class AccessLog:
    """Writes one line per request to stdout (``-``) or an O_APPEND file."""

    def __init__(self, target: str, fmt: str, log: Optional[Logger] = None) -> None:
        global _PID
        _PID = str(os.getpid())
        self.target = target
        self.log = log
        self.json = fmt == "json"
        self.template, self.getters = ("", ()) if self.json else compile_format(fmt)
        self.fd = 1 if target == "-" else self._open()

    def _open(self) -> int:
        return os.open(self.target, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)

    def format(self, environ: Environ, status: int, headers: Headers, sent: int, duration_ns: int) -> str:
        if self.json:
            return json.dumps(
                {
                    "ts": time.time(),
                    "logger": "access",
                    "remote_addr": environ.get("REMOTE_ADDR", ""),
                    "method": environ.get("REQUEST_METHOD", ""),
                    "uri": environ.get("RAW_URI", ""),
                    "path": environ.get("PATH_INFO", ""),
                    "query": environ.get("QUERY_STRING", ""),
                    "protocol": environ.get("SERVER_PROTOCOL", ""),
                    "status": status,
                    "bytes": sent,
                    "duration_us": duration_ns // 1000,
                    "referer": environ.get("HTTP_REFERER", ""),
                    "user_agent": environ.get("HTTP_USER_AGENT", ""),
                    "pid": int(_PID),
                },
                ensure_ascii=False,
            )
        return self.template % tuple([g(environ, status, headers, sent, duration_ns) for g in self.getters])

    def write(self, environ: Environ, status: int, headers: Headers, sent: int, duration_ns: int) -> None:
        try:
            line = self.format(environ, status, headers, sent, duration_ns)
        except Exception:
            if self.log is not None:
                self.log.exception("cannot format the access log line")
            return
        write_all(self.fd, (line + "\n").encode("utf-8", "backslashreplace"))

    def reopen(self) -> None:
        if self.target == "-":
            return
        try:
            fd = self._open()
        except OSError as e:
            if self.log is not None:
                self.log.error(f"cannot reopen access log {self.target}: {e.strerror}")
            return
        old, self.fd = self.fd, fd
        os.close(old)

    def close(self) -> None:
        if self.target != "-" and self.fd > 2:
            os.close(self.fd)
            self.fd = -1
