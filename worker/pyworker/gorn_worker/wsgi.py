"""PEP 3333 plumbing: the base environ, ``start_response``/``write``, response framing.

:class:`Response` validates what the app passes to ``start_response`` (status ``NNN
reason`` with NNN in 200..599, header names are tokens, no CR/LF/NUL/CTL anywhere: a bad
status or header is an app error answered with a 500, never a malformed status line or a
header injection), then frames the body:

- the app's Content-Length is honoured (extra bytes are cut with a warning; too few bytes
  close the connection after the response);
- otherwise a list/tuple result gets a computed Content-Length, anything else is chunked
  on HTTP/1.1 or close-delimited on HTTP/1.0;
- no body for HEAD, 204 and 304; hop-by-hop headers from the app are dropped and
  ``Connection: close`` from the app or the client is honoured;
- the head and the first body bytes go out in one ``send``; ``wsgi.file_wrapper`` results
  over regular files go out with ``sendfile``.
"""

from __future__ import annotations

import errno
import io
import os
import re
import socket
import stat
from time import gmtime, time
from types import TracebackType
from typing import Any, Callable, Iterable, Optional, Type

from .http import REASONS, Connection, Request
from .logs import Logger

ExcInfo = tuple[Type[BaseException], BaseException, Optional[TracebackType]]

_TOKEN_MATCH = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z").match
_BAD_CHARS = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]").search  # in a status or one header line
_BAD_BLOCK = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]").search  # in a joined block
_HOP_BY_HOP = frozenset(("keep-alive", "te", "trailer", "transfer-encoding", "upgrade", "proxy-connection"))
_SPECIAL = frozenset(("content-length", "connection", "date", "server")) | _HOP_BY_HOP
_ONE_SEND = 256 << 10  # join head and body into one send below this size
_SENDFILE_FALLBACK = frozenset((errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSOCK, errno.EBADF))

# caches (bounded): status string -> (code, status line); header name -> lowercase name
_STATUS: dict[str, tuple[int, bytes]] = {}
_NAMES: dict[str, str] = {}
_CACHE_MAX = 1024

_date_cache: list[Any] = [0, b""]
# IMF-fixdate's names, not the locale's (strftime's %a and %b follow the app's locale); and
# no email.utils, whose imports cost every worker milliseconds at start-up.
_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def imf_fixdate(when: int) -> str:
    """``Sun, 06 Nov 1994 08:49:37 GMT`` for a Unix time."""
    t = gmtime(when)
    return "%s, %02d %s %04d %02d:%02d:%02d GMT" % (
        _DAYS[t.tm_wday], t.tm_mday, _MONTHS[t.tm_mon - 1], t.tm_year, t.tm_hour, t.tm_min, t.tm_sec
    )


def date_line() -> bytes:
    """``Date: ...\\r\\n`` (IMF-fixdate), formatted once per second."""
    now = int(time())
    if now != _date_cache[0]:
        _date_cache[1] = ("Date: " + imf_fixdate(now) + "\r\n").encode("ascii")
        _date_cache[0] = now
    return _date_cache[1]  # type: ignore[no-any-return]


class ClientGone(OSError):
    """Sending the response failed: the client went away or stopped reading."""


class FileWrapper:
    """``wsgi.file_wrapper``: iterates ``blksize`` blocks; regular files go out with sendfile."""

    def __init__(self, filelike: Any, blksize: int = 8192) -> None:
        self.filelike = filelike
        self.blksize = blksize
        close = getattr(filelike, "close", None)
        if close is not None:
            self.close = close

    def __iter__(self) -> "FileWrapper":
        return self

    def __next__(self) -> bytes:
        data = self.filelike.read(self.blksize)
        if data:
            return data  # type: ignore[no-any-return]
        raise StopIteration


GUNICORN_COMPAT = "27.0.1"  # the gunicorn release whose behaviour gorn matches


def base_environ(
    *,
    errors: Any,
    server_software: str,
    multiprocess: bool,
    script_name: str,
) -> dict[str, Any]:
    """The keys that are the same for every request of this worker."""
    return {
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.errors": errors,
        "wsgi.multithread": False,
        "wsgi.multiprocess": multiprocess,
        "wsgi.run_once": False,
        "wsgi.input_terminated": True,
        "wsgi.file_wrapper": FileWrapper,
        # Apps test for gunicorn here (httpbin accepts chunked uploads only from "gunicorn/"):
        # say gunicorn's product first, then gorn's. The Server header stays gorn's own.
        "SERVER_SOFTWARE": f"gunicorn/{GUNICORN_COMPAT} {server_software}",
        "SCRIPT_NAME": script_name,
    }


def connection_environ(
    base: dict[str, Any],
    *,
    server_name: str,
    server_port: str,
    remote_addr: str,
    remote_port: Optional[str],
    sock: Optional[socket.socket] = None,
) -> dict[str, Any]:
    """The keys that are the same for every request of one connection."""
    env = base.copy()
    env["SERVER_NAME"] = server_name
    env["SERVER_PORT"] = server_port
    env["REMOTE_ADDR"] = remote_addr
    if remote_port is not None:
        env["REMOTE_PORT"] = remote_port
    if sock is not None:
        env["gorn.socket"] = env["gunicorn.socket"] = sock  # WebSocket libraries take it over
    return env


def parse_status(status: Any) -> tuple[int, bytes]:
    """``"200 OK"`` -> (200, b"HTTP/1.1 200 OK\\r\\n"); raises TypeError/ValueError.

    ``NNN reason``: three ASCII digits 200..599, one space, a reason of HTAB/SP/VCHAR/
    obs-text (RFC 9112 4; it may be empty). A 1xx is refused: WSGI has no interim
    responses, so a 1xx would be the final answer and leave the client waiting.
    """
    r = _STATUS.get(status) if type(status) is str else None
    if r is not None:
        return r
    if type(status) is not str:
        raise TypeError(f"WSGI status must be a str, not {type(status).__name__}")
    code_s = status[:3]
    if len(status) < 4 or status[3] != " " or not code_s.isdigit() or not code_s.isascii() or status[0] not in "12345":
        raise ValueError(f"invalid WSGI status {status!r}: must be 'NNN reason'")
    if status[0] == "1":
        raise ValueError(f"invalid WSGI status {status!r}: a 1xx (informational) status cannot be the final response")
    if _BAD_CHARS(status) is not None:
        raise ValueError(f"invalid WSGI status {status!r}: control character")
    try:
        line = ("HTTP/1.1 " + status + "\r\n").encode("latin-1")
    except UnicodeEncodeError:
        raise ValueError(f"invalid WSGI status {status!r}: not latin-1") from None
    r = (int(code_s), line)
    if len(_STATUS) < _CACHE_MAX:
        _STATUS[status] = r
    return r


def _header_name(name: Any) -> str:
    low = _NAMES.get(name) if type(name) is str else None
    if low is not None:
        return low
    if type(name) is not str:
        raise TypeError(f"WSGI header name must be a str, not {type(name).__name__}")
    if not _TOKEN_MATCH(name):
        raise ValueError(f"invalid WSGI header name {name!r}")
    low = name.lower()
    if len(_NAMES) < _CACHE_MAX:
        _NAMES[name] = low
    return low


def header_block_py(headers: Any, code: int) -> tuple[bytes, Optional[int], bool, bool, bool]:
    """What start_response makes of the app's headers: the block to send (hop-by-hop ones
    dropped), the Content-Length (None if absent, or for a 204), whether the app said
    Connection: close, and whether it set Date and Server. Raises TypeError/ValueError.
    The native twin (gorn_native.header_block) must behave identically."""
    if type(headers) is not list:
        raise TypeError(f"WSGI headers must be a list, not {type(headers).__name__}")
    length: Optional[int] = None
    app_close = has_date = has_server = False
    parts: list[str] = []
    for item in headers:
        if type(item) not in (tuple, list) or len(item) != 2:
            raise TypeError(f"WSGI header must be a (name, value) tuple, not {item!r}")
        name, value = item
        low = _header_name(name)
        if type(value) is not str:
            raise TypeError(f"WSGI header value for {name} must be a str, not {type(value).__name__}")
        if low in _SPECIAL:
            if low == "content-length":
                v = value.strip(" \t")
                if not v.isdigit() or not v.isascii():
                    raise ValueError(f"invalid Content-Length {value!r} from the application")
                n = int(v)
                if length is not None:
                    if n != length:
                        raise ValueError("conflicting Content-Length headers from the application")
                    continue
                length = n
                if code == 204:
                    continue  # RFC 9110 8.6: never in a 204
            elif low == "connection":
                if _BAD_CHARS(value) is not None:
                    raise ValueError(f"invalid character in header {name}")
                if "close" in {t.strip(" \t") for t in value.lower().split(",")}:
                    app_close = True
                continue
            elif low == "date":
                has_date = True
            elif low == "server":
                has_server = True
            else:
                continue  # hop-by-hop: the server frames the message
        parts.append(f"{name}: {value}\r\n")
    block = "".join(parts)
    n = len(parts)
    if block.count("\n") != n or block.count("\r") != n or _BAD_BLOCK(block) is not None:
        for name, value in headers:
            if _BAD_CHARS(value) is not None:
                raise ValueError(f"invalid character in the value of header {name}")
        raise ValueError("invalid character in response headers")
    try:
        data = block.encode("latin-1")
    except UnicodeEncodeError:
        raise ValueError("response header values must be latin-1 encodable") from None
    return data, None if code == 204 else length, app_close, has_date, has_server


header_block = header_block_py  # the native twin when it is loaded (gorn_worker/native.py)


def use(mod: Any) -> None:
    """Build header blocks with gorn_native (``mod``, set up by :func:`.native.use`) from
    now on; None: with the pure-Python twin."""
    global header_block
    header_block = header_block_py if mod is None else mod.header_block


def error_response(status: int, detail: str, server_line: bytes) -> bytes:
    """A complete short error response (text/plain, Connection: close)."""
    reason = REASONS.get(status, "Error")
    body = f"{reason}: {detail}\n" if detail else f"{reason}\n"
    b = body.encode("latin-1", "replace")
    return (
        b"HTTP/1.1 %d %s\r\nConnection: close\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n"
        % (status, reason.encode("latin-1"), len(b))
        + date_line()
        + server_line
        + b"\r\n"
        + b
    )


class Response:
    """One request's response: ``start_response``, ``write`` and body framing.

    ``refuse_keepalive()`` is asked just before the head goes out (adaptive keep-alive:
    the worker says True when it is stopping or a new connection is waiting).
    """

    __slots__ = (
        "conn",
        "sock",
        "req",
        "log",
        "server_line",
        "refuse_keepalive",
        "progress",
        "status",
        "code",
        "status_line",
        "headers",
        "block",
        "length",
        "app_close",
        "has_date",
        "has_server",
        "no_body",
        "headers_sent",
        "chunked",
        "sent",
        "must_close",
        "truncated",
    )

    def __init__(
        self,
        conn: Connection,
        req: Request,
        log: Logger,
        server_line: bytes,
        refuse_keepalive: Callable[[], bool],
        progress: Callable[[], None] = lambda: None,
    ) -> None:
        self.conn = conn
        self.sock = conn.sock
        self.req = req
        self.log = log
        self.server_line = server_line
        self.refuse_keepalive = refuse_keepalive
        self.progress = progress  # called for each part of a streamed body after the first
        self.status: Optional[str] = None
        self.code = 0
        self.headers: list[tuple[str, str]] = []
        self.length: Optional[int] = None
        self.headers_sent = False
        self.chunked = False
        self.sent = 0
        self.must_close = False
        self.truncated = False

    # --------------------------------------------------------- start_response
    def start_response(
        self,
        status: str,
        headers: list[tuple[str, str]],
        exc_info: Optional[ExcInfo] = None,
    ) -> Callable[[bytes], None]:
        if exc_info:
            try:
                if self.headers_sent:
                    raise exc_info[1].with_traceback(exc_info[2])
            finally:
                exc_info = None
        elif self.status is not None:
            raise AssertionError("start_response() called a second time without exc_info")
        code, status_line = parse_status(status)
        block, length, app_close, has_date, has_server = header_block(headers, code)
        method = self.req.method
        no_body = method == "HEAD" or code == 204 or code == 304
        self.block = block
        self.status = status
        self.code = code
        self.status_line = status_line
        self.headers = headers
        self.length = length
        self.app_close = app_close
        self.has_date = has_date
        self.has_server = has_server
        self.no_body = no_body
        return self.write

    # ------------------------------------------------------------------- head
    def _head(self, total: Optional[int]) -> bytes:
        """Build the head, deciding framing and persistence. ``total``: known body size."""
        req = self.req
        extra: list[bytes] = []
        if self.length is None and not self.no_body:
            if total is not None:
                self.length = total
                extra.append(b"Content-Length: %d\r\n" % total)
            elif req.v11:
                self.chunked = True
                extra.append(b"Transfer-Encoding: chunked\r\n")
            else:
                self.must_close = True
        keep = req.keepalive and not self.must_close and not self.app_close
        if keep:
            body = req.body
            if (body is not None and not body.done and not body.may_drain()) or self.refuse_keepalive():
                keep = False
        if not keep:
            self.must_close = True
            extra.append(b"Connection: close\r\n")
        elif not req.v11:
            extra.append(b"Connection: keep-alive\r\n")
        if not self.has_date:
            extra.append(date_line())
        if not self.has_server:
            extra.append(self.server_line)
        extra.append(b"\r\n")
        self.headers_sent = True
        self.conn.response_started = True
        return self.status_line + self.block + b"".join(extra)

    def _send(self, data: bytes, flags: int = 0) -> None:
        try:
            self.sock.sendall(data, flags)
        except BlockingIOError:
            self.must_close = True
            raise ClientGone(errno.ETIMEDOUT, "timed out sending the response") from None
        except OSError as e:
            self.must_close = True
            raise ClientGone(e.errno, f"sending the response: {e.strerror or e}") from None

    def _truncate_warning(self) -> None:
        if not self.truncated:
            self.truncated = True
            self.log.warning(
                f"{self.req.method} {self.req.environ.get('RAW_URI', '')}: the application "
                f"sent more than its Content-Length ({self.length}); the body was truncated"
            )

    # ------------------------------------------------------------------- body
    def write(self, data: bytes) -> None:
        """PEP 3333 ``write()``; also used for each chunk of the result iterable."""
        if type(data) is not bytes:
            if isinstance(data, (bytearray, memoryview)):
                data = bytes(data)
            else:
                raise TypeError(f"WSGI body data must be bytes, not {type(data).__name__}")
        if self.headers_sent:
            head = b""
            self.progress()
        else:
            if self.status is None:
                raise AssertionError("write() before start_response()")
            if not data:
                return  # PEP 3333: the head waits for the first non-empty chunk
            head = self._head(None)
        n = len(data)
        if not n or self.no_body:
            if head:
                self._send(head)
            return
        if self.length is not None:
            room = self.length - self.sent
            if n > room:
                self._truncate_warning()
                data = data[:room]
                n = room
                if not n:
                    if head:
                        self._send(head)
                    return
        self.sent += n
        if self.chunked:
            frame = b"%x\r\n" % n
            if n + len(head) < _ONE_SEND:
                self._send(b"".join((head, frame, data, b"\r\n")))
            else:
                self._send(head + frame)
                self._send(data)
                self._send(b"\r\n")
        elif not head:
            self._send(data)
        elif n < _ONE_SEND:
            self._send(head + data)
        else:
            self._send(head)
            self._send(data)

    def send_result(self, result: Iterable[bytes]) -> None:
        """Send what the app returned (the caller always calls ``result.close()``)."""
        t = type(result)
        if (t is list or t is tuple) and not self.headers_sent and self.status is not None:
            n = len(result)  # type: ignore[arg-type]
            if n == 1:
                body = result[0]  # type: ignore[index]
                if type(body) is not bytes:
                    if not isinstance(body, (bytearray, memoryview)):
                        raise TypeError(f"WSGI body data must be bytes, not {type(body).__name__}")
                    body = bytes(body)
            elif n == 0:
                body = b""
            else:
                for x in result:
                    if type(x) is not bytes and not isinstance(x, (bytearray, memoryview)):
                        raise TypeError(f"WSGI body data must be bytes, not {type(x).__name__}")
                body = b"".join(result)
            self._send_whole(body)
            return
        if (
            t is FileWrapper
            and not self.headers_sent
            and self.status is not None
            and self._send_file(result)  # type: ignore[arg-type]
        ):
            return
        for chunk in result:
            self.write(chunk)
        self.finish()

    def _send_whole(self, body: bytes) -> None:
        total = len(body)
        length = self.length
        if length is not None and not self.no_body and total < length:
            self.must_close = True
        head = self._head(total)
        if self.no_body or not total:
            self._send(head)
            return
        if length is not None and total > length:
            self._truncate_warning()
            body = body[:length]
            total = length
        self.sent = total
        if total < _ONE_SEND:
            self._send(head + body)
        else:
            self._send(head)
            self._send(body)

    def finish(self) -> None:
        """After the last chunk: send a head-only response, or the chunked terminator."""
        if not self.headers_sent:
            if self.status is None:
                raise AssertionError("the application returned without calling start_response()")
            if self.length and not self.no_body:
                self.must_close = True
            self._send(self._head(0))
        elif self.chunked:
            self._send(b"0\r\n\r\n")
        elif self.length is not None and not self.no_body and self.sent < self.length:
            self.must_close = True

    def _send_file(self, wrapper: FileWrapper) -> bool:
        """sendfile() a regular file; False to fall back to iterating the wrapper."""
        fl = wrapper.filelike
        try:
            fileno = fl.fileno()
            st = os.fstat(fileno)
            if not stat.S_ISREG(st.st_mode):
                return False
            pos = fl.tell() if hasattr(fl, "tell") else os.lseek(fileno, 0, os.SEEK_CUR)
        except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
            return False
        avail = max(0, st.st_size - pos)
        length = self.length
        if length is not None and not self.no_body and avail < length:
            self.must_close = True
        head = self._head(avail)
        count = 0 if self.no_body else min(avail, self.length if self.length is not None else avail)
        if not count:
            self._send(head)
            return True
        more = socket.MSG_MORE if self.sock.family != socket.AF_UNIX else 0
        self._send(head, more)
        sockfd = self.sock.fileno()
        offset = pos
        sent = 0
        try:
            while sent < count:
                try:
                    n = os.sendfile(sockfd, fileno, offset, count - sent)
                except BlockingIOError:
                    self.must_close = True
                    raise ClientGone(errno.ETIMEDOUT, "timed out sending the response") from None
                except OSError as e:
                    if sent == 0 and e.errno in _SENDFILE_FALLBACK:
                        self._copy_file(fl, pos, count, wrapper.blksize)
                        return True
                    self.must_close = True
                    raise ClientGone(e.errno, f"sendfile: {e.strerror or e}") from None
                if n == 0:  # the file shrank
                    self.must_close = True
                    break
                offset += n
                sent += n
        finally:
            self.sent = sent if sent else self.sent
        return True

    def _copy_file(self, fl: Any, pos: int, count: int, blksize: int) -> None:
        fl.seek(pos)
        left = count
        while left > 0:
            data = fl.read(min(max(blksize, 65536), left))
            if not data:
                self.must_close = True
                return
            self._send(data)
            self.sent += len(data)
            left -= len(data)
