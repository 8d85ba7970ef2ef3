"""Strict HTTP/1.0 and HTTP/1.1 request parsing (RFC 9112 / RFC 9110) for the sync worker.

Internet-facing: every ambiguity that could desynchronise gorn from a proxy in front of
it is an error, answered before the app runs with a short response and a close:

- request line ``METHOD SP target SP HTTP/x.y CRLF``; only CRLF line endings, no bare CR/LF
  or CTL anywhere in the head; method is a token; origin-, absolute-, authority- (CONNECT)
  and asterisk- (OPTIONS) forms; HTTP/1.0 and 1.1 only (505 for other versions);
- header names are tokens (whitespace before ``:`` is an error), obs-fold is an error,
  names containing ``_`` are dropped, repeats are joined with ``,`` except Host,
  Content-Length and Content-Type, whose repeats are errors;
- Host (RFC 9112 3.2): required in HTTP/1.1 (also with an absolute-form target, whose
  authority then replaces it), at most once, and a valid ``uri-host[:port]``;
- body framing: Content-Length digits only; CL with TE, TE on HTTP/1.0, a TE list that
  does not end in a single ``chunked`` -> 400; any other coding -> 501; strict chunk sizes
  (1-16 hex digits), extensions, CRLFs and trailers; a body must keep flowing (each read
  within header_timeout, and at least MIN_BODY_RATE on average: see :class:`Connection`).

:func:`parse_request` turns a complete head into a :class:`Request` whose ``environ`` is
the PEP 3333 environ; :class:`Connection` is the buffered reader over one accepted socket
that finds heads (with the head deadline) and feeds the body readers (``wsgi.input``).
"""

from __future__ import annotations

import ipaddress
import re
import socket
import struct
from time import monotonic
from typing import Any, Callable, Iterator, Optional
from urllib.parse import unquote_to_bytes

# --------------------------------------------------------------------------- errors

REASONS: dict[int, str] = {
    400: "Bad Request",
    408: "Request Timeout",
    413: "Content Too Large",
    414: "URI Too Long",
    417: "Expectation Failed",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    501: "Not Implemented",
    505: "HTTP Version Not Supported",
}


class HTTPError(Exception):
    """A request that must be refused before the app runs (status + one-line detail)."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"{status} {detail}")
        self.status = status
        self.detail = detail


class HeadTimeout(Exception):
    """The request head did not arrive within header_timeout (close; no response)."""

    def __init__(self, received: int) -> None:
        super().__init__(f"timed out reading the request head ({received} bytes received)")
        self.received = received


class IncompleteHead(Exception):
    """The client closed the connection in the middle of a head (close; no response)."""


class BodyError(IOError):
    """Raised by ``wsgi.input`` reads. ``status`` is the answer if no response began (0 = none)."""

    status = 0


class InvalidBody(BodyError):
    """Malformed chunked framing or trailers."""

    def __init__(self, detail: str, status: int = 400) -> None:
        super().__init__(detail)
        self.status = status


class BodyTooLarge(BodyError):
    status = 413


class BodyTimeout(BodyError):
    """The body stopped flowing for header_timeout seconds, or fell below MIN_BODY_RATE."""


class ClientDisconnected(BodyError):
    """The client went away before the body ended."""


# ----------------------------------------------------------------------- constants

TCHAR = b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_CTL_SEARCH = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]").search  # CTLs except HTAB
_VERSION_MATCH = re.compile(rb"HTTP/([0-9])\.([0-9])\Z").match
# RFC 3986 uri-host [":" port]: IP-literal (hex, ":" and "." in brackets) or reg-name
# (unreserved, sub-delims, pct-encoded); anything else (whitespace, "/", "@", "?", "#",
# a stray "%", non-ASCII...) makes Host or an authority invalid.
_IP_LITERAL = r"\[[0-9A-Fa-f:.]+\]"
_REG_NAME = r"(?:[A-Za-z0-9\-._~!$&'()*+,;=]|%[0-9A-Fa-f]{2})"
_HOST_MATCH = re.compile(r"(" + _IP_LITERAL + r"|" + _REG_NAME + r"*)(?::([0-9]*))?\Z").match
_AUTHORITY_MATCH = re.compile((r"(" + _IP_LITERAL + r"|" + _REG_NAME + r"+)(?::[0-9]*)?\Z").encode()).match
_CONNECT_MATCH = re.compile((r"(" + _IP_LITERAL + r"|" + _REG_NAME + r"+):[0-9]+\Z").encode()).match
_TOKEN = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_QSTRING = rb'"(?:[\t !#-\[\]-~\x80-\xff]|\\[\t -~\x80-\xff])*"'
_CHUNK_MATCH = re.compile(
    rb"([0-9A-Fa-f]{1,16})((?:[ \t]*;[ \t]*" + _TOKEN + rb"(?:[ \t]*=[ \t]*(?:" + _TOKEN + rb"|" + _QSTRING + rb"))?)*)\Z"
).match

MAX_HEAD = 4 << 20  # hard cap on a head even when the limits are 0 (= unlimited)
MAX_CHUNK_LINE = 4096  # chunk-size line incl. extensions
MAX_EMPTY_LINES = 1024  # bytes of CRLFs tolerated before a request line
DRAIN_LIMIT = 64 << 10  # unread body drained before the next keep-alive request
MIN_BODY_RATE = 1024  # bytes/s a request body must keep up on average (see Connection)
_SECONDS_PER_BYTE = 1.0 / MIN_BODY_RATE
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"

_METHODS: dict[bytes, str] = {
    m: m.decode() for m in (b"GET", b"HEAD", b"POST", b"PUT", b"DELETE", b"PATCH", b"OPTIONS", b"CONNECT", b"TRACE")
}
_SINGLETON = {"HTTP_HOST": "Host", "CONTENT_LENGTH": "Content-Length", "CONTENT_TYPE": "Content-Type"}
_FORBIDDEN_TRAILERS = frozenset(
    b"""content-length transfer-encoding host trailer te authorization proxy-authorization
    content-type content-encoding content-range connection keep-alive upgrade expect cookie
    range max-forwards""".split()
)

# Header name (as sent) -> environ key; "" = dropped (contains "_"). Bounded cache.
_KEYS: dict[bytes, str] = {}
_KEYS_MAX = 2048


# Whole header line -> (environ key, value) for lines that were valid and kept; most
# lines repeat verbatim across requests (Host, User-Agent, Accept...). Bounded: cleared
# when full. CTLs were rejected for the whole head before the lines are looked up.
_LINES: dict[bytes, tuple[str, str]] = {}
_LINES_MAX = 4096


def header_key(name: bytes) -> str:
    """Environ key for a header name that is a token ("" if it must be dropped)."""
    key = _KEYS.get(name)
    if key is not None:
        return key
    if b"_" in name:
        key = ""
    else:
        up = name.upper().replace(b"-", b"_").decode("ascii")
        key = up if up in ("CONTENT_TYPE", "CONTENT_LENGTH") else "HTTP_" + up
    if len(_KEYS) < _KEYS_MAX:
        _KEYS[name] = key
    return key


def is_token(b: bytes) -> bool:
    return bool(b) and not b.translate(None, TCHAR)


class Limits:
    """Request limits and timeouts, resolved once from the settings."""

    __slots__ = ("line", "fields", "field_size", "body", "max_head", "timeout")

    def __init__(
        self,
        line: int = 4094,
        fields: int = 100,
        field_size: int = 8190,
        body: int = 0,
        timeout: float = 10.0,
    ) -> None:
        self.line = line if line > 0 else MAX_HEAD
        self.fields = fields if fields > 0 else 1 << 30
        self.field_size = field_size if field_size > 0 else MAX_HEAD
        self.body = body  # 0 = unlimited
        self.max_head = min(MAX_HEAD, self.line + 4 + min(self.fields, MAX_HEAD) * (self.field_size + 2))
        self.timeout = timeout  # 0 = none


def _timeval(seconds: float) -> bytes:
    sec = int(seconds)
    usec = int((seconds - sec) * 1e6)
    if sec == 0 and usec == 0 and seconds > 0:
        usec = 1
    return struct.pack("ll", sec, usec)


# ---------------------------------------------------------------------- connection


class Connection:
    """Buffered reading from one accepted (blocking) socket.

    Timeouts use SO_RCVTIMEO / SO_SNDTIMEO set once per connection (a timed-out call
    fails with EAGAIN): a socket with a Python-level timeout would add a poll() before
    every recv/send. The head deadline (header_timeout from its first byte) shortens
    SO_RCVTIMEO only on the slow path, when a head needs more than one recv.

    A body is bounded twice. Each recv waits at most header_timeout (the per-read gap).
    And the body must keep up MIN_BODY_RATE (1 KiB/s) on average, or a client sending
    one byte just under header_timeout apart could hold the worker forever: each request
    body starts with a time credit of header_timeout seconds (``body_credit``); the time
    blocked in a body recv is taken off it, every byte received gives 1/MIN_BODY_RATE
    seconds back, and the credit never exceeds header_timeout (so a fast start buys no
    long stall later). When it drops below zero the body read fails with BodyTimeout and
    the connection is closed (no response; logged at debug). Only time spent waiting for
    the client counts, never the app's own time between reads. A client that stalls or
    trickles is thus dropped after at most about twice header_timeout of waiting once it
    slows down. header_timeout 0 turns both bounds off.
    """

    __slots__ = ("sock", "buf", "limits", "response_started", "body_credit", "scanned", "skipped", "line_end", "rcv_ready")

    def __init__(self, sock: socket.socket, limits: Limits) -> None:
        self.sock = sock
        self.buf = b""
        self.limits = limits
        self.response_started = False
        self.body_credit = limits.timeout  # reset by each Body
        self.scanned = 0  # bytes of buf already checked for the end of a head
        self.skipped = 0  # empty lines (CRLF) skipped before the request line
        self.line_end = -1  # end of the request line in buf, once seen
        self.rcv_ready = True  # SO_RCVTIMEO is the body's (header_timeout)

    def set_timeouts(self, first_wait: float = 0.0) -> None:
        """SO_SNDTIMEO and SO_RCVTIMEO to header_timeout; with ``first_wait``, SO_RCVTIMEO is
        that instead (a blocking recv of the first bytes, bounded), and the body's is set
        before the first body read."""
        t = self.limits.timeout
        if t > 0:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, _timeval(t))
        if first_wait > 0:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, _timeval(first_wait))
            self.rcv_ready = False
        elif t > 0:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, _timeval(t))

    # ----------------------------------------------------------------- heads
    def next_head(self) -> Optional[bytes]:
        """The next request head in the buffer (without its final CRLFCRLF), or None until
        more bytes arrive. Never reads the socket: the worker's event loop feeds ``buf``.

        Linear in the head's size however it is split (each byte is checked once).
        Raises HTTPError (414/431/400).
        """
        buf = self.buf
        start = self.scanned
        if not start:
            i = buf.find(b"\r\n\r\n")
            if i > 0 and buf[0] != 13:  # the usual case: a whole head, not led by an empty line
                self.buf = buf[i + 4 :]
                return buf[:i]
            # RFC 9112 2.2: ignore empty lines before a request line (bounded)
            k = 0
            while buf[k : k + 2] == b"\r\n":
                k += 2
            if k:
                buf = self.buf = buf[k:]
                self.skipped += k
                if self.skipped > MAX_EMPTY_LINES:
                    raise HTTPError(400, "too many empty lines before the request line")
                i = buf.find(b"\r\n\r\n")
        else:
            i = buf.find(b"\r\n\r\n", start - 3 if start > 3 else 0)
        if i > 0:
            self.buf = buf[i + 4 :]
            self.scanned = self.skipped = 0
            self.line_end = -1
            return buf[:i]
        limits = self.limits
        nl = self.line_end
        if nl < 0:
            nl = self.line_end = buf.find(b"\r\n", start - 1 if start else 0)
            if nl < 0 and len(buf) > limits.line + 1:
                raise HTTPError(414, "request line too long")
        if nl > limits.line:
            raise HTTPError(414, "request line too long")
        if buf.count(b"\n", start) != buf.count(b"\r\n", start - 1 if start else 0):
            raise HTTPError(400, "bare LF in request head")
        if len(buf) > limits.max_head:
            raise HTTPError(431, "request header section too large")
        if buf and buf != b"\r":
            self.scanned = len(buf)
        return None

    def head_started(self) -> bool:
        """Part of a head is buffered (a close now would cut a request short)."""
        return bool(self.buf)

    def read_head(self) -> Optional[bytes]:
        """Blocking: the next request head, or None on a clean EOF.

        The head deadline (header_timeout from the first recv) shortens SO_RCVTIMEO while
        a head needs more than one recv. Raises HTTPError (414/431/400), HeadTimeout or
        IncompleteHead.
        """
        head = self.next_head()
        if head is not None:
            return head
        limits = self.limits
        deadline = monotonic() + limits.timeout if limits.timeout > 0 else 0.0
        shortened = False
        sock = self.sock
        try:
            while True:
                if deadline and self.buf:
                    remaining = deadline - monotonic()
                    if remaining <= 0:
                        raise HeadTimeout(len(self.buf))
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, _timeval(remaining))
                    shortened = True
                try:
                    data = sock.recv(65536)
                except BlockingIOError:
                    raise HeadTimeout(len(self.buf)) from None
                if not data:
                    if self.buf:
                        n = len(self.buf)
                        self.buf = b""
                        raise IncompleteHead(f"connection closed after {n} bytes of a request head")
                    return None
                self.buf += data
                head = self.next_head()
                if head is not None:
                    return head
        finally:
            if shortened:
                try:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, _timeval(limits.timeout))
                except OSError:
                    pass

    # ------------------------------------------------------------------ bodies
    def take(self, n: int) -> bytes:
        """Up to ``n`` body bytes: from the buffer when it holds any, else one recv."""
        buf = self.buf
        if not buf:
            return self.recv_body(n if n < 65536 else 65536)
        if len(buf) <= n:
            self.buf = b""
            return buf
        self.buf = buf[n:]
        return buf[:n]

    def recv_body(self, n: int) -> bytes:
        """One recv of body bytes (the buffer is empty); enforces the two body bounds."""
        if not self.rcv_ready:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, _timeval(self.limits.timeout))
            self.rcv_ready = True
        t0 = monotonic()
        try:
            data = self.sock.recv(n)
        except (BlockingIOError, TimeoutError):  # SO_RCVTIMEO, or a green socket's timeout
            raise BodyTimeout("timed out reading the request body") from None
        except OSError as e:
            raise ClientDisconnected(f"reading the request body: {e}") from None
        if not data:
            raise ClientDisconnected("client closed the connection before the body ended")
        cap = self.limits.timeout
        if cap > 0:
            credit = self.body_credit - (monotonic() - t0) + len(data) * _SECONDS_PER_BYTE
            if credit < 0:
                raise BodyTimeout(f"request body too slow (under {MIN_BODY_RATE} bytes/s on average)")
            self.body_credit = credit if credit < cap else cap
        return data

    def read_line(self, maxlen: int, too_long: int = 400) -> bytes:
        """One CRLF-terminated line of a chunked body (without the CRLF).

        A line longer than ``maxlen`` is an InvalidBody with status ``too_long``.
        """
        buf = self.buf
        while True:
            i = buf.find(b"\r\n")
            if i >= 0:
                if i > maxlen:
                    raise InvalidBody("chunked body line too long", too_long)
                self.buf = buf[i + 2 :]
                return buf[:i]
            self.buf = buf
            if len(buf) > maxlen + 1:
                raise InvalidBody("chunked body line too long", too_long)
            if b"\n" in buf:
                raise InvalidBody("bare LF in chunked body")
            buf += self.recv_body(65536)

    def expect_crlf(self) -> None:
        while len(self.buf) < 2:
            self.buf += self.recv_body(65536)
        if self.buf[:2] != b"\r\n":
            raise InvalidBody("missing CRLF after chunk data")
        self.buf = self.buf[2:]


# ------------------------------------------------------------------------- bodies


class Body:
    """``wsgi.input``: read/readline/readlines/iteration, never past the body.

    Reading errors raise :class:`BodyError` (an IOError) and are remembered in
    ``failed`` so the worker closes the connection even if the app swallows them.
    The first read answers ``Expect: 100-continue`` (if no response has started).
    """

    __slots__ = ("_conn", "_pending", "_continue", "failed", "done")

    def __init__(self, conn: Connection, expect_continue: bool = False) -> None:
        self._conn = conn
        self._pending = b""
        self._continue = expect_continue
        self.failed: Optional[BodyError] = None
        self.done = False
        conn.body_credit = conn.limits.timeout  # the minimum-rate bound starts afresh

    # subclasses: next raw (de-framed) bytes, at most n (n > 0); b"" at the end
    def _raw(self, n: int) -> bytes:
        raise NotImplementedError

    @property
    def continue_pending(self) -> bool:
        """True if 100-continue was expected and never sent (the body was not asked for)."""
        return self._continue

    def _send_continue(self) -> None:
        self._continue = False
        conn = self._conn
        if not conn.response_started:
            try:
                conn.sock.sendall(CONTINUE)
            except OSError as e:
                self.failed = ClientDisconnected(f"sending 100 Continue: {e}")
                raise self.failed from None

    def _get(self, n: int) -> bytes:
        if self.failed is not None:
            raise self.failed
        try:
            data = self._raw(n)
        except BodyError as e:
            self.failed = e
            raise
        if not data:
            self.done = True
        return data

    def read(self, size: Optional[int] = -1) -> bytes:
        if self._continue:
            self._send_continue()
        pending = self._pending
        if size is None or size < 0:
            parts = [pending] if pending else []
            self._pending = b""
            while True:
                d = self._get(65536)
                if not d:
                    break
                parts.append(d)
            return b"".join(parts)
        if len(pending) >= size:
            self._pending = pending[size:]
            return pending[:size]
        parts = [pending] if pending else []
        have = len(pending)
        self._pending = b""
        while have < size:
            d = self._get(size - have)
            if not d:
                break
            parts.append(d)
            have += len(d)
        return b"".join(parts)

    def readline(self, size: Optional[int] = -1) -> bytes:
        if self._continue:
            self._send_continue()
        limit = -1 if size is None or size < 0 else size
        chunks: list[bytes] = []
        have = 0
        data = self._pending
        self._pending = b""
        while limit < 0 or have < limit:
            if not data:
                data = self._get(65536)
                if not data:
                    break
            i = data.find(b"\n")
            take = len(data) if i < 0 else i + 1
            if limit >= 0 and have + take > limit:
                take = limit - have
            if take < len(data):
                chunks.append(data[:take])
                self._pending = data[take:]
                data = b""
                break
            chunks.append(data)
            have += take
            data = b""
            if i >= 0:
                break
        if data:
            self._pending = data
        return b"".join(chunks)

    def readlines(self, hint: Optional[int] = -1) -> list[bytes]:
        lines: list[bytes] = []
        total = 0
        while True:
            line = self.readline()
            if not line:
                return lines
            lines.append(line)
            total += len(line)
            if hint is not None and 0 < hint <= total:
                return lines

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        line = self.readline()
        if not line:
            raise StopIteration
        return line

    def close(self) -> None:
        pass

    def drain(self, limit: int = DRAIN_LIMIT) -> bool:
        """Discard what the app left unread; False if the connection cannot be reused."""
        if self.failed is not None or self._continue:
            return False
        if self.done:
            return True
        total = len(self._pending)
        self._pending = b""
        try:
            while True:
                d = self._raw(65536)
                if not d:
                    self.done = True
                    return True
                total += len(d)
                if total > limit:
                    return False
        except BodyError as e:
            self.failed = e
            return False

    def may_drain(self, limit: int = DRAIN_LIMIT) -> bool:
        """Cheap guess whether drain() can succeed (used for the response's Connection)."""
        return self.failed is None and not self._continue


class LengthBody(Body):
    """A Content-Length body."""

    __slots__ = ("_left",)

    def __init__(self, conn: Connection, length: int, expect_continue: bool = False) -> None:
        super().__init__(conn, expect_continue)
        self._left = length

    def _raw(self, n: int) -> bytes:
        left = self._left
        if left <= 0:
            return b""
        if n > left:
            n = left
        data = self._conn.take(n)
        self._left = left - len(data)
        return data

    def may_drain(self, limit: int = DRAIN_LIMIT) -> bool:
        if self.failed is not None or self._continue:
            return False
        return self._left - len(self._conn.buf) <= limit

    def drain(self, limit: int = DRAIN_LIMIT) -> bool:
        if not self.may_drain(limit):
            return False
        return super().drain(limit)


class ChunkedBody(Body):
    """A chunked body: sizes, extensions, CRLFs and trailers checked strictly."""

    __slots__ = ("_left", "_state", "_total")

    _SIZE, _DATA, _CRLF, _DONE = 0, 1, 2, 3

    def __init__(self, conn: Connection, expect_continue: bool = False) -> None:
        super().__init__(conn, expect_continue)
        self._left = 0
        self._state = self._SIZE
        self._total = 0

    def _raw(self, n: int) -> bytes:
        conn = self._conn
        while True:
            state = self._state
            if state == 1:  # _DATA
                left = self._left
                if n > left:
                    n = left
                data = conn.take(n)
                self._left = left - len(data)
                if self._left == 0:
                    self._state = self._CRLF
                return data
            if state == self._DONE:
                return b""
            if state == self._CRLF:
                conn.expect_crlf()
                self._state = self._SIZE
            line = conn.read_line(MAX_CHUNK_LINE)
            m = _CHUNK_MATCH(line)
            if m is None:
                raise InvalidBody("invalid chunk size line")
            size = int(m.group(1), 16)
            if size == 0:
                self._read_trailers()
                self._state = self._DONE
                return b""
            self._total += size
            limit = conn.limits.body
            if limit and self._total > limit:
                raise BodyTooLarge(f"request body larger than limit_request_body ({limit})")
            self._left = size
            self._state = self._DATA

    def _read_trailers(self) -> None:
        conn = self._conn
        limits = conn.limits
        count = 0
        while True:
            line = conn.read_line(limits.field_size, 431)  # too large, like a header field
            if not line:
                return
            count += 1
            if count > limits.fields:
                raise InvalidBody("too many trailer fields", 431)
            if len(line) + 2 > limits.field_size:
                raise InvalidBody("trailer field too large", 431)
            if line[:1] in (b" ", b"\t"):
                raise InvalidBody("obsolete line folding in trailers")
            if _CTL_SEARCH(line) is not None:
                raise InvalidBody("invalid character in trailer")
            i = line.find(b":")
            name = line[:i]
            if i <= 0 or not is_token(name):
                raise InvalidBody("invalid trailer field name")
            if name.lower() in _FORBIDDEN_TRAILERS:
                raise InvalidBody("forbidden trailer field")


class EmptyBody:
    """``wsgi.input`` for requests without a body (shared: it has no state)."""

    __slots__ = ()

    def read(self, size: Optional[int] = -1) -> bytes:
        return b""

    def readline(self, size: Optional[int] = -1) -> bytes:
        return b""

    def readlines(self, hint: Optional[int] = -1) -> list[bytes]:
        return []

    def __iter__(self) -> Iterator[bytes]:
        return iter(())

    def close(self) -> None:
        pass


EMPTY_BODY = EmptyBody()


# ------------------------------------------------------------------------ requests


class Request:
    """A parsed request: the environ plus what the worker needs to frame the answer."""

    __slots__ = ("environ", "method", "path", "v11", "keepalive", "body")

    def __init__(
        self,
        environ: dict[str, Any],
        method: str,
        path: bytes,
        v11: bool,
        keepalive: bool,
        body: Optional[Body],
    ) -> None:
        self.environ = environ
        self.method = method
        self.path = path
        self.v11 = v11
        self.keepalive = keepalive
        self.body = body


#: What :func:`parse_head` returns: the environ (``wsgi.input`` still EMPTY_BODY), the method,
#: the raw path, HTTP/1.1?, keep-alive?, the body framing (BODY_NONE, BODY_LENGTH or
#: BODY_CHUNKED), the Content-Length, 100-continue expected?, and (name, port) from Host or
#: the target's authority (None when neither was sent).
Head = tuple[dict[str, Any], str, bytes, bool, bool, int, int, bool, Optional[tuple[str, str]]]
BODY_NONE, BODY_LENGTH, BODY_CHUNKED = 0, 1, 2


def parse_head_py(head: bytes, limits: Limits, base: dict[str, Any], root_path: str = "") -> Head:
    """Parse a complete head (without the final CRLFCRLF): the pure-Python twin of the
    native ``parse_head`` (``gorn_native``), which must behave identically (same environ,
    same HTTPError status and detail). ``base`` is copied, never modified.
    """
    if _CTL_SEARCH(head.replace(b"\r\n", b"")) is not None:
        # Check the request line first, so that a huge line still gets its 414.
        if head.find(b"\r\n") > limits.line:
            raise HTTPError(414, "request line too long")
        raise HTTPError(400, "invalid character in request head")
    lines = head.split(b"\r\n")
    line = lines[0]
    if len(line) > limits.line:
        raise HTTPError(414, "request line too long")

    # ---- request line
    parts = line.split(b" ")
    if len(parts) != 3:
        raise HTTPError(400, "malformed request line")
    mb, target, version = parts
    if version == b"HTTP/1.1":
        v11 = True
    elif version == b"HTTP/1.0":
        v11 = False
    elif _VERSION_MATCH(version):
        raise HTTPError(505, "HTTP version not supported")
    else:
        raise HTTPError(400, "invalid HTTP version")
    method = _METHODS.get(mb)
    if method is None:
        # A token (RFC 9110 9.1) of 3 to 20 characters without lowercase letters, as gunicorn
        # requires (every registered method fits; anything else is more likely an attack).
        if not 3 <= len(mb) <= 20 or mb.translate(None, TCHAR) or mb != mb.upper():
            raise HTTPError(400, "invalid request method")
        method = mb.decode("ascii")
    if not target or b"\t" in target or not target.isascii():
        raise HTTPError(400, "invalid request target")  # raw non-ASCII bytes: 400, as gunicorn

    authority: Optional[bytes] = None
    if method == "CONNECT":
        if not _CONNECT_MATCH(target):
            raise HTTPError(400, "CONNECT needs an authority-form target")
        authority = target
        path = b""
        query = b""
    else:
        if target[0] == 47:  # "/": origin-form
            pq = target
        elif target == b"*":
            if method != "OPTIONS":
                raise HTTPError(400, "asterisk-form target is only allowed with OPTIONS")
            pq = target
        else:  # absolute-form
            j = target.find(b"://")
            if j <= 0 or target[:j].lower() not in (b"http", b"https"):
                raise HTTPError(400, "invalid request target")
            rest = target[j + 3 :]
            k = len(rest)
            for sep in (b"/", b"?", b"#"):
                s = rest.find(sep)
                if 0 <= s < k:
                    k = s
            authority = rest[:k]
            if not _AUTHORITY_MATCH(authority):
                raise HTTPError(400, "invalid authority in request target")
            pq = rest[k:]
            if pq[:1] != b"/":
                pq = b"/" + pq
        h = pq.find(b"#")
        if h >= 0:
            pq = pq[:h]
        q = pq.find(b"?")
        if q >= 0:
            path = pq[:q]
            query = pq[q + 1 :]
        else:
            path = pq
            query = b""

    env = base.copy()
    env["REQUEST_METHOD"] = method
    env["RAW_URI"] = target.decode("latin-1")
    env["SERVER_PROTOCOL"] = "HTTP/1.1" if v11 else "HTTP/1.0"
    env["QUERY_STRING"] = query.decode("latin-1")
    path_info = (unquote_to_bytes(path) if b"%" in path else path).decode("latin-1")
    if root_path:
        if path_info == root_path or path_info.startswith(root_path + "/"):
            path_info = path_info[len(root_path) :]
        else:  # outside the prefix: SCRIPT_NAME + PATH_INFO must still be the path
            env["SCRIPT_NAME"] = ""
    env["PATH_INFO"] = path_info

    # ---- header fields
    if len(lines) - 1 > limits.fields:
        raise HTTPError(431, "too many header fields")
    size_limit = limits.field_size - 2
    get = env.get
    keys_get = _KEYS.get
    lines_get = _LINES.get
    for line in lines[1:]:
        if len(line) > size_limit:
            raise HTTPError(431, "header field too large")
        kv = lines_get(line)
        if kv is None:  # a line not seen before (a cached one was checked then)
            i = line.find(b":")
            if i <= 0:
                if line[:1] in (b" ", b"\t"):
                    raise HTTPError(400, "obsolete line folding")
                raise HTTPError(400, "invalid header field")
            name = line[:i]
            known = keys_get(name)
            if known is None:
                if name.translate(None, TCHAR):
                    if name[:1] in (b" ", b"\t"):
                        raise HTTPError(400, "obsolete line folding")
                    raise HTTPError(400, "invalid header field name")
                known = header_key(name)
            kv = (known, line[i + 1 :].strip(b" \t").decode("latin-1"))
            if known and len(line) <= 256:
                if len(_LINES) >= _LINES_MAX:
                    _LINES.clear()
                _LINES[line] = kv
        key, value = kv
        if not key:
            continue  # names with "_" are dropped
        old = get(key)
        if old is None:
            env[key] = value
        elif key in _SINGLETON:
            raise HTTPError(400, f"duplicate {_SINGLETON[key]} header")
        else:
            env[key] = old + "," + value

    # ---- framing (the body reader, if any, replaces wsgi.input)
    env["wsgi.input"] = EMPTY_BODY
    framing = BODY_NONE
    length = 0
    te = get("HTTP_TRANSFER_ENCODING")
    expect_continue = False
    exp = get("HTTP_EXPECT")
    if exp is not None and v11:
        if exp.strip(" \t").lower() != "100-continue":
            raise HTTPError(417, "unsupported Expect value")
        expect_continue = True
    if te is not None:
        if not v11:
            raise HTTPError(400, "Transfer-Encoding in an HTTP/1.0 request")
        if "CONTENT_LENGTH" in env:
            raise HTTPError(400, "both Content-Length and Transfer-Encoding")
        codings = [c.strip(" \t").lower() for c in te.split(",")]
        for c in codings:
            if not c or not is_token(c.encode("latin-1")):
                raise HTTPError(400, "invalid Transfer-Encoding")
        n = codings.count("chunked")
        if n > 1 or (n == 1 and codings[-1] != "chunked"):
            raise HTTPError(400, "chunked must be the last transfer coding, once")
        if n == 0 or len(codings) > 1:
            raise HTTPError(501, "unsupported transfer coding")
        framing = BODY_CHUNKED
    else:
        cl = get("CONTENT_LENGTH")
        if cl is not None:
            if not cl.isdigit() or not cl.isascii() or len(cl) > 18:
                raise HTTPError(400, "invalid Content-Length")
            length = int(cl)
            if limits.body and length > limits.body:
                raise HTTPError(413, f"request body larger than limit_request_body ({limits.body})")
            if length:
                framing = BODY_LENGTH

    # ---- connection persistence
    ch = get("HTTP_CONNECTION")
    if ch is None:
        keepalive = v11
    else:
        tokens = {t.strip(" \t") for t in ch.lower().split(",")}
        if "close" in tokens:
            keepalive = False
        else:
            keepalive = v11 or "keep-alive" in tokens

    # ---- Host (RFC 9112 3.2): an HTTP/1.1 request must carry exactly one (a second one was
    # refused above as a duplicate), and any Host must be a valid uri-host[:port] (400 and
    # close otherwise). HTTP/1.0 may omit it. An absolute-form target (3.2.2) still needs
    # the Host field in HTTP/1.1 and its value is still checked, but the server must use
    # the target's authority instead: HTTP_HOST and SERVER_NAME/SERVER_PORT come from the
    # target (without a port, SERVER_PORT follows wsgi.url_scheme, as for Host). CONNECT:
    # SERVER_NAME/PORT from its authority-form target, HTTP_HOST as sent.
    host: Optional[str] = get("HTTP_HOST")
    hp: Optional[tuple[str, str]] = None
    if host is None:
        if v11:
            raise HTTPError(400, "missing Host header")
    else:
        hp = split_host(host)
        if hp is None:
            raise HTTPError(400, "invalid Host header")
    if authority is not None:
        host = authority.decode("latin-1")
        if method != "CONNECT":
            env["HTTP_HOST"] = host
        hp = split_host(host)
        if hp is None:  # not reached: _AUTHORITY_MATCH/_CONNECT_MATCH accept less than split_host
            raise HTTPError(400, "invalid authority in request target")

    return env, method, path, v11, keepalive, framing, length, expect_continue, hp


parse_head = parse_head_py  # the native twin when it is loaded (gorn_worker/native.py)


def use(mod: Any) -> None:
    """Parse heads with gorn_native (``mod``, set up by :func:`.native.use`) from now on;
    None: with the pure-Python twin."""
    global parse_head
    parse_head = parse_head_py if mod is None else mod.parse_head


def parse_request(
    head: bytes,
    conn: Connection,
    base: dict[str, Any],
    root_path: str = "",
    proxy: Optional[Proxy] = None,
) -> Request:
    """Parse a complete head (without the final CRLFCRLF) into a Request.

    ``base`` holds the per-connection environ keys (REMOTE_*, SERVER_* defaults,
    wsgi.*); it is copied, never modified. Raises HTTPError.
    """
    env, method, path, v11, keepalive, framing, length, expect_continue, hp = parse_head(head, conn.limits, base, root_path)
    body: Optional[Body] = None
    if framing:
        body = LengthBody(conn, length, expect_continue) if framing == BODY_LENGTH else ChunkedBody(conn, expect_continue)
        env["wsgi.input"] = body
    if proxy is not None:
        proxy.apply(env)
    if hp is not None and hp[0]:
        env["SERVER_NAME"] = hp[0]
        env["SERVER_PORT"] = hp[1] or ("443" if env["wsgi.url_scheme"] == "https" else "80")
    return Request(env, method, path, v11, keepalive, body)


_HOSTS: dict[str, Optional[tuple[str, str]]] = {}


def split_host(host: str) -> Optional[tuple[str, str]]:
    """``host[:port]`` -> (name, port or ""); None if the value is not a valid Host."""
    r = _HOSTS.get(host, False)
    if r is not False:
        return r  # type: ignore[return-value]
    m = _HOST_MATCH(host)
    if m is None:
        r = None
    else:
        name = m.group(1)
        if name.startswith("["):
            name = name[1:-1]
        r = (name, m.group(2) or "")
    if len(_HOSTS) < 1024:
        _HOSTS[host] = r
    return r


# ------------------------------------------------------------------------- proxies


def _valid_ip(s: str) -> bool:
    try:
        ipaddress.ip_address(s)
    except ValueError:
        return False
    return True


#: gunicorn's default ``secure_scheme_headers``: header (environ key) -> the value that
#: means https; any other value means http.
SECURE_SCHEME_HEADERS: dict[str, str] = {
    "X-FORWARDED-PROTOCOL": "ssl",
    "X-FORWARDED-PROTO": "https",
    "X-FORWARDED-SSL": "on",
}


class Proxy:
    """What a trusted peer (in --forwarded-allow-ips, or on a unix socket) may tell us.

    As gunicorn: the scheme comes from ``scheme_headers`` (exact, case-sensitive value
    match; headers that disagree are a 400), and REMOTE_ADDR stays the peer's address.
    ``real_ip`` (opt-in, --forwarded-real-ip) is the trust test for X-Forwarded-For hops:
    REMOTE_ADDR becomes the rightmost hop that is not a trusted proxy, so only addresses
    appended by trusted proxies are believed (a client's own X-Forwarded-For is not).
    """

    __slots__ = ("scheme_headers", "real_ip")

    def __init__(self, scheme_headers: dict[str, str], real_ip: Optional[Callable[[str], bool]] = None) -> None:
        self.scheme_headers = tuple(
            ("HTTP_" + name.upper().replace("-", "_"), value) for name, value in scheme_headers.items()
        )
        self.real_ip = real_ip

    def apply(self, env: dict[str, Any]) -> None:
        scheme: Optional[str] = None
        for key, secure in self.scheme_headers:
            joined = env.get(key)
            if joined is None:
                continue
            for value in joined.split(","):  # a repeated header was joined with ","
                s = "https" if value.strip(" \t") == secure else "http"
                if scheme is None:
                    scheme = s
                elif s != scheme:
                    raise HTTPError(400, "contradictory scheme headers")
        if scheme is not None:
            env["wsgi.url_scheme"] = scheme
        trusted = self.real_ip
        xff = env.get("HTTP_X_FORWARDED_FOR")
        if trusted is None or not xff:
            return
        client = ""
        for hop in reversed(xff.split(",")):
            hop = hop.strip(" \t")
            if not _valid_ip(hop):
                break  # not an address: nothing left of it can be believed
            client = hop
            if not trusted(hop):
                break  # the first hop a trusted proxy did not append: the client
        if client:
            env["REMOTE_ADDR"] = client
