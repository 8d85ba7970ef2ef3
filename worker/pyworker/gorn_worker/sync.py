"""The sync worker: one connection at a time, accept() straight from the kernel.

Accepting
    One listener: a plain blocking ``accept()`` (no timeout, no poll before it; the kernel
    wakes exactly one idle waiter, FIFO). Several listeners: one ``epoll`` with
    ``EPOLLEXCLUSIVE`` on each, then an ``accept()`` bounded by a 50 ms ``ITIMER_REAL``
    (a lost race with another worker would otherwise block in that accept until the next
    connection on *that* listener). Listeners are shared with every worker: this module
    never changes their flags or options.

Stopping
    TERM sets ``alive=False`` and state=draining; while the worker waits (accept, epoll,
    idle keep-alive) the handler raises :class:`Wakeup`; otherwise PEP 475 retries the
    syscall and the flag is seen after the request in hand (whose response says
    ``Connection: close``). Then :meth:`SyncWorker.drain` serves the connections already
    queued on the listeners, each accept bounded by the same itimer, and the worker exits.
    INT/QUIT raise :class:`FastExit` wherever the worker is.

    A signal that lands after ``accept()`` returned but before its result was stored
    drops an accepted fd: :func:`find_lost_connections` rescues it (exit path only).

Keep-alive (adaptive)
    A connection is kept only while nobody waits on the listeners: the listeners are
    polled (timeout 0) before each response head, and an idle kept connection is dropped
    as soon as a listener becomes readable. Pipelined requests are answered in order.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import select
import signal
import socket
import stat
import struct
import time
from time import monotonic, monotonic_ns
from typing import Any, Callable, Iterator, Optional

from .accesslog import AccessLog
from .config import Settings, parse_networks
from .http import (
    DRAIN_LIMIT,
    BodyError,
    Connection,
    HeadTimeout,
    HTTPError,
    IncompleteHead,
    Limits,
    Request,
    parse_request,
)
from .logs import ErrorsStream, Logger
from .scoreboard import STATE_DRAINING, Scoreboard
from .wsgi import ClientGone, Response, base_environ, connection_environ, error_response

ACCEPT_RACE_TIMEOUT = 0.05  # seconds an accept after a readiness report may block
LINGER_SECONDS = 0.5  # reading what a refused client still sends, so it sees the error
LINGER_BYTES = 1 << 20

_TCP_INFO_LEN = 104
_TCPI_UNACKED = 24  # struct tcp_info: 8 bytes of u8 fields, then u32 rto, ato, snd_mss, rcv_mss, unacked


class Wakeup(BaseException):
    """Raised by a signal handler to leave a wait (accept, epoll, idle keep-alive)."""


class FastExit(BaseException):
    """INT/QUIT: leave whatever the worker is doing and exit 0."""


class Listener:
    """An inherited listening socket and what the environ needs from it."""

    __slots__ = ("sock", "fd", "family", "proto", "unix", "tcp", "server_name", "server_port", "name")

    def __init__(self, fd: int) -> None:
        try:
            st = os.fstat(fd)
        except OSError as e:
            raise ValueError(f"listen fd {fd}: {e.strerror}") from None
        if not stat.S_ISSOCK(st.st_mode):
            raise ValueError(f"listen fd {fd} is not a socket")
        sock = socket.socket(fileno=fd)
        if sock.type != socket.SOCK_STREAM:
            sock.detach()
            raise ValueError(f"listen fd {fd} is not a stream socket")
        if not sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
            sock.detach()
            raise ValueError(f"listen fd {fd} is not listening")
        self.sock = sock
        self.fd = fd
        self.family = sock.family
        self.proto = sock.proto
        self.unix = sock.family == socket.AF_UNIX
        self.tcp = sock.family in (socket.AF_INET, socket.AF_INET6)
        self.name = sock.getsockname()
        if self.unix:
            self.server_name, self.server_port = "localhost", "80"
        else:
            self.server_name, self.server_port = str(self.name[0]), str(self.name[1])

    def matches(self, sockname: Any, family: int) -> bool:
        """Is ``sockname`` the local address of a connection accepted on this listener?"""
        if family != self.family:
            return False
        if self.unix:
            return bool(sockname) and sockname == self.name
        return bool(sockname[1] == self.name[1])


def find_lost_connections(listeners: list[Listener]) -> list[tuple[socket.socket, Any, Listener]]:
    """Accepted connections whose fd nobody holds (a signal hit between accept and store).

    Scans /proc/self/fd for connected stream sockets (SO_ACCEPTCONN=0) whose local
    address is one of the listeners'. Used only on exit/wake-up paths.
    """
    found: list[tuple[socket.socket, Any, Listener]] = []
    listener_fds = {l.fd for l in listeners}
    try:
        names = os.listdir("/proc/self/fd")
    except OSError:
        return found
    for name in names:
        try:
            fd = int(name)
        except ValueError:
            continue
        if fd <= 2 or fd in listener_fds:
            continue
        try:
            if not stat.S_ISSOCK(os.fstat(fd).st_mode):
                continue
            s = socket.socket(fileno=fd)
        except OSError:
            continue
        try:
            if s.type != socket.SOCK_STREAM or s.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
                s.detach()
                continue
            local = s.getsockname()
            owner = next((l for l in listeners if l.matches(local, s.family)), None)
            if owner is None:
                s.detach()
                continue
            peer = s.getpeername()
        except OSError:
            s.detach()
            continue
        if s.gettimeout() is not None:
            s.settimeout(None)
        found.append((s, peer, owner))
    return found


class SyncWorker:
    """Serves connections one at a time until told to stop."""

    def __init__(
        self,
        app: Callable[..., Any],
        settings: Settings,
        log: Logger,
        scoreboard: Scoreboard,
        listeners: list[Listener],
        access: Optional[AccessLog] = None,
    ) -> None:
        self.app = app
        self.settings = settings
        self.log = log
        self.sb = scoreboard
        self.listeners = listeners
        self.access = access
        self.request_hooks: Optional[Any] = None  # conffile.RequestHooks when the config file has them
        self.alive = True
        self.in_wait = False
        self.fast_exit = False
        self.term_at = 0.0
        self.keepalive = settings.keepalive
        self.root_path = settings.root_path
        self.limits = Limits(
            settings.limit_request_line,
            settings.limit_request_fields,
            settings.limit_request_field_size,
            settings.limit_request_body,
            settings.header_timeout,
        )
        self.server_line = f"Server: {settings.server_software}\r\n".encode("latin-1", "replace")
        self.errors = ErrorsStream(log)
        self.base = base_environ(
            errors=self.errors,
            server_software=settings.server_software,
            multiprocess=settings.workers > 1,
            script_name=settings.root_path,
        )
        self.trust_all, self.trusted_nets = parse_networks(settings.forwarded_allow_ips)
        self._trust_cache: dict[str, bool] = {}
        self.by_fd = {l.fd: l for l in listeners}
        self.lpoll: Optional[Any] = None
        self.kpoll = select.poll()
        if listeners:
            self.lpoll = select.poll()
            for l in listeners:
                self.lpoll.register(l.fd, select.POLLIN)
                self.kpoll.register(l.fd, select.POLLIN)
        self._alarm_handler = self._alarm  # one bound method, so identity checks work
        self.epoll: Optional[Any] = None
        if len(listeners) > 1:
            self.epoll = select.epoll()
            for l in listeners:
                self.epoll.register(l.fd, select.EPOLLIN | select.EPOLLEXCLUSIVE)

    # ---------------------------------------------------------------- signals
    def on_term(self) -> None:
        """TERM (from the signal handler): stop after the request in hand, then drain."""
        if self.alive:
            self.alive = False
            self.term_at = monotonic()
            self.sb.set_state(STATE_DRAINING)
        if self.in_wait:
            self.in_wait = False
            raise Wakeup()

    def on_fast_exit(self) -> None:
        """INT/QUIT: leave at once."""
        self.alive = False
        self.fast_exit = True
        self.in_wait = False
        raise FastExit()

    def on_alarm(self) -> None:
        """SIGALRM: the bounded accept after a readiness report lost its race."""
        if self.in_wait:
            self.in_wait = False
            raise Wakeup()

    # -------------------------------------------------------------------- run
    def run(self) -> None:
        """Serve until TERM, then drain the listen queues and return."""
        if self.epoll is None and len(self.listeners) == 1:
            accept = self._accept_single
        else:
            accept = self._accept_multi
        while self.alive:
            got = accept()
            if got is not None:
                self.handle(*got)
        self.drain()

    def _accept_single(self) -> Optional[tuple[socket.socket, Any, Listener]]:
        l = self.listeners[0]
        lsock = l.sock
        sb = self.sb
        sb.set_accepting(1)
        try:
            self.in_wait = True
            try:
                fd, addr = lsock._accept()  # type: ignore[attr-defined]
            finally:
                self.in_wait = False
        except Wakeup:
            sb.set_accepting(0)
            self._rescue()
            return None
        except OSError as e:
            sb.set_accepting(0)
            self._accept_error(e, l)
            return None
        sb.set_accepting(0)
        return self._wrap(fd, addr, l)

    def _accept_multi(self) -> Optional[tuple[socket.socket, Any, Listener]]:
        sb = self.sb
        sb.set_accepting(1)
        try:
            self.in_wait = True
            try:
                events = self.epoll.poll() if self.epoll is not None else []
            finally:
                self.in_wait = False
        except Wakeup:
            sb.set_accepting(0)
            return None
        sb.set_accepting(0)
        for fd, _ in events:
            got = self._accept_timed(self.by_fd[fd])
            if got is not None:
                return got
        return None

    def _alarm(self, signum: int, frame: Any) -> None:
        self.on_alarm()

    def _accept_timed(self, l: Listener) -> Optional[tuple[socket.socket, Any, Listener]]:
        """accept() that gives up after ACCEPT_RACE_TIMEOUT (SIGALRM raises Wakeup).

        The app may use SIGALRM itself: its handler and any pending timer are put back.
        """
        handler = self._alarm_handler
        previous = signal.getsignal(signal.SIGALRM)
        if previous is not handler:
            signal.signal(signal.SIGALRM, handler)
            if not callable(previous):
                previous = handler  # SIG_DFL/SIG_IGN/C-level: ours simply stays installed
        start = monotonic()
        try:
            old_timer = signal.setitimer(signal.ITIMER_REAL, ACCEPT_RACE_TIMEOUT)
            try:
                self.in_wait = True
                try:
                    fd, addr = l.sock._accept()  # type: ignore[attr-defined]
                finally:
                    self.in_wait = False
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
                if previous is not handler:
                    signal.signal(signal.SIGALRM, previous)
                if old_timer[0] > 0:
                    left = max(old_timer[0] - (monotonic() - start), 0.001)
                    signal.setitimer(signal.ITIMER_REAL, left, old_timer[1])
        except Wakeup:
            self._rescue()
            return None
        except OSError as e:
            self._accept_error(e, l)
            return None
        return self._wrap(fd, addr, l)

    def _wrap(self, fd: int, addr: Any, l: Listener) -> tuple[socket.socket, Any, Listener]:
        sock = socket.socket(l.family, socket.SOCK_STREAM, l.proto, fileno=fd)
        if sock.gettimeout() is not None:  # the app called socket.setdefaulttimeout()
            sock.settimeout(None)
        return sock, addr, l

    def _accept_error(self, e: OSError, l: Listener) -> None:
        code = e.errno
        if code in (errno.EAGAIN, errno.EWOULDBLOCK):
            # Someone made the shared listener non-blocking: wait instead of spinning.
            p = select.poll()
            p.register(l.fd, select.POLLIN)
            try:
                self.in_wait = True
                try:
                    p.poll(1000)
                finally:
                    self.in_wait = False
            except Wakeup:
                pass
        elif code in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
            self.log.error(f"accept() failed: {e.strerror}; retrying in 0.1 s")
            time.sleep(0.1)
        elif code in (errno.EBADF, errno.EINVAL, errno.ENOTSOCK):
            self.log.critical(f"listener fd {l.fd} is unusable: {e.strerror}; exiting")
            raise SystemExit(1)
        else:  # ECONNABORTED, EPROTO, EPERM (firewall), ...: the next one
            self.log.debug(f"accept() failed: {e.strerror}")

    def _rescue(self) -> None:
        for sock, addr, l in find_lost_connections(self.listeners):
            self.log.debug(f"serving fd {sock.fileno()} accepted just before a signal")
            self.handle(sock, addr, l)

    # ------------------------------------------------------------------ drain
    def _queued(self) -> Optional[int]:
        """Connections in the listen queues now (TCP_INFO), None if unknown."""
        total = 0
        for l in self.listeners:
            if not l.tcp:
                return None
            try:
                info = l.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _TCP_INFO_LEN)
                total += struct.unpack_from("I", info, _TCPI_UNACKED)[0]
            except (OSError, struct.error):
                return None
        return total + len(self.listeners)

    def drain(self) -> None:
        """Serve what is queued on the listeners now (bounded), then return."""
        served = 0
        for got in self.queued_connections(self.drain_deadline()):
            self.handle(*got)
            served += 1
        if served:
            self.log.debug(f"drained {served} queued connection(s)")

    def drain_deadline(self) -> float:
        """When draining must end: 90% of graceful_timeout after TERM, before the SIGKILL."""
        gt = self.settings.graceful_timeout
        return (self.term_at or monotonic()) + (gt * 0.9 if gt > 0 else float("inf"))

    def queued_connections(self, deadline: float) -> Iterator[tuple[socket.socket, Any, Listener]]:
        """Accept, one at a time, what was queued on the listeners when draining began:
        until none is left, the TCP_INFO count of them is reached, or the deadline."""
        if self.fast_exit or self.lpoll is None:
            return
        budget = self._queued()
        taken = 0
        while monotonic() < deadline and (budget is None or taken < budget):
            self.sb.beat()
            ready = self.lpoll.poll(0)
            if not ready:
                return
            for fd, _ in ready:
                got = self._accept_timed(self.by_fd[fd])
                if got is not None:
                    taken += 1
                    yield got
                    break

    # ------------------------------------------------------------- connections
    def _trusted(self, addr: Any, l: Listener) -> bool:
        if l.unix or self.trust_all:
            return True
        if not self.trusted_nets:
            return False
        ip = addr[0]
        r = self._trust_cache.get(ip)
        if r is None:
            try:
                a = ipaddress.ip_address(ip.split("%", 1)[0])
                if isinstance(a, ipaddress.IPv6Address) and a.ipv4_mapped is not None:
                    a = a.ipv4_mapped
                r = any(a in n for n in self.trusted_nets)
            except ValueError:
                r = False
            if len(self._trust_cache) < 4096:
                self._trust_cache[ip] = r
        return r

    def _refuse_keepalive(self) -> bool:
        """Asked before each response head: keep-alive only while nobody waits."""
        if not self.alive:
            return True
        lpoll = self.lpoll
        return lpoll is not None and bool(lpoll.poll(0))

    def open_connection(self, sock: socket.socket, addr: Any, l: Optional[Listener]) -> tuple[Connection, dict[str, Any], bool]:
        """A new connection's reader, the environ its requests share, and whether its
        X-Forwarded-* headers are trusted."""
        conn = Connection(sock, self.limits)
        if l is not None and l.tcp:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn.set_timeouts()
        if l is None or l.unix:
            base = connection_environ(
                self.base,
                server_name=l.server_name if l else "localhost",
                server_port=l.server_port if l else "80",
                remote_addr="",
                remote_port=None,
                sock=sock,
            )
            return conn, base, True
        base = connection_environ(
            self.base,
            server_name=l.server_name,
            server_port=l.server_port,
            remote_addr=str(addr[0]),
            remote_port=str(addr[1]),
            sock=sock,
        )
        return conn, base, self._trusted(addr, l)

    def handle(self, sock: socket.socket, addr: Any, l: Optional[Listener]) -> None:
        """Serve one connection until it closes, times out or stops being kept."""
        self.sb.beat()
        fd = sock.fileno()
        registered = False
        try:
            conn, base, trusted = self.open_connection(sock, addr, l)
            root = self.root_path
            while True:
                try:
                    head = conn.read_head()
                    if head is None:
                        return
                    req = parse_request(head, conn, base, root, trusted)
                except HTTPError as e:
                    self._reject(conn, e)
                    return
                except HeadTimeout as e:
                    self.log.debug(f"closing connection: {e}")
                    return
                except IncompleteHead as e:
                    self.log.debug(f"closing connection: {e}")
                    return
                if not self.serve(conn, req) or not self.alive:
                    return
                if conn.buf:
                    continue  # pipelined: answer in order, no poll
                if not registered:
                    self.kpoll.register(fd, select.POLLIN)
                    registered = True
                if not self._wait_next(fd):
                    return
        except (FastExit, Wakeup, SystemExit, KeyboardInterrupt):
            raise
        except OSError as e:
            self.log.debug(f"connection error: {e}")
        except Exception:
            self.log.exception("unexpected error while handling a connection")
        finally:
            if registered:
                try:
                    self.kpoll.unregister(fd)
                except (KeyError, ValueError):
                    pass
            try:
                sock.close()
            except OSError:
                pass

    def _wait_next(self, fd: int) -> bool:
        """Idle keep-alive: True when the next request is here, False to close."""
        kpoll = self.kpoll
        sb = self.sb
        deadline = monotonic() + self.keepalive
        while True:
            remaining = deadline - monotonic()
            if remaining <= 0:
                return False
            try:
                self.in_wait = True
                try:
                    events = kpoll.poll((remaining if remaining < 1.0 else 1.0) * 1000.0)
                finally:
                    self.in_wait = False
            except Wakeup:
                return _readable_now(fd)  # TERM: serve a request that is already here
            sb.beat()
            if not events:
                if not self.alive:
                    return _readable_now(fd)
                continue
            for efd, _ in events:
                if efd == fd:
                    return True
            return False  # a new connection waits: give the worker back to it

    # --------------------------------------------------------------- requests
    def serve(self, conn: Connection, req: Request) -> bool:
        """Run the app for one request and send its response; True to keep the connection."""
        if self.keepalive <= 0:
            req.keepalive = False
        env = req.environ
        sb = self.sb
        t0 = sb.request_start(req.method, req.path)
        conn.response_started = False
        resp = Response(conn, req, self.log, self.server_line, self._refuse_keepalive)
        code = 0
        hooks = self.request_hooks
        try:
            try:
                if hooks is not None:
                    hooks.pre(env)
                result = self.app(env, resp.start_response)
                try:
                    resp.send_result(result)
                finally:
                    close = getattr(result, "close", None)
                    if close is not None:
                        close()
                code = resp.code
            except ClientGone as e:
                resp.must_close = True
                code = resp.code if resp.headers_sent else 0
                self.log.debug(f"{req.method} {env.get('RAW_URI')}: client gone: {e.strerror or e}")
            except BodyError as e:  # logged below, from body.failed
                resp.must_close = True
                if resp.headers_sent:
                    code = resp.code
                elif e.status:
                    code = e.status
                    resp.sent = self._send_quietly(conn, e.status, str(e))
            except Exception:
                resp.must_close = True
                self.log.exception(f"Error handling request {req.method} {env.get('RAW_URI')}")
                if resp.headers_sent:
                    code = resp.code
                else:
                    code = 500
                    resp.sent = self._send_quietly(conn, 500, "")
        finally:
            self.errors.flush()
        duration = monotonic_ns() - t0
        if code:
            sb.request_end(req.method, code, duration, resp.sent)
            if self.access is not None:
                self.access.write(env, code, resp.headers if resp.headers_sent else [], resp.sent, duration)
        else:
            sb.request_abort()
        if hooks is not None and code:
            hooks.post(env, resp.status if resp.headers_sent else f"{code}", code, resp.headers if resp.headers_sent else [], resp.sent)
        body = req.body
        if body is not None and body.failed is not None:
            # Also when the app swallowed the error: the connection is closed either way.
            self.log.debug(f"{req.method} {env.get('RAW_URI')}: request body: {body.failed}")
        if not resp.headers_sent or resp.must_close or not req.keepalive:
            return False
        if body is not None and not body.done:
            if body.drain(DRAIN_LIMIT):
                return True
            if body.failed is not None:
                self.log.debug(f"{req.method} {env.get('RAW_URI')}: draining the request body: {body.failed}")
            return False
        return True

    def _send_quietly(self, conn: Connection, status: int, detail: str) -> int:
        """Send a short error response; returns its body size (0 if the client is gone)."""
        data = error_response(status, detail, self.server_line)
        conn.response_started = True
        try:
            conn.sock.sendall(data)
        except OSError:
            return 0
        return len(data) - data.index(b"\r\n\r\n") - 4

    def _reject(self, conn: Connection, e: HTTPError) -> None:
        """A request refused before the app: error response, count it, linger, close."""
        self.log.debug(f"refusing request: {e.status} {e.detail}")
        sent = self._send_quietly(conn, e.status, e.detail)
        self.sb.request_end("", e.status, 0, sent)
        _linger(conn.sock)


def _readable_now(fd: int) -> bool:
    p = select.poll()
    p.register(fd, select.POLLIN)
    return bool(p.poll(0))


def _linger(sock: socket.socket) -> None:
    """Half-close, then read (bounded) what the client still sends, so it sees our answer."""
    try:
        sock.shutdown(socket.SHUT_WR)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("ll", 0, 200_000))
        deadline = monotonic() + LINGER_SECONDS
        total = 0
        while total < LINGER_BYTES and monotonic() < deadline:
            data = sock.recv(65536)
            if not data:
                return
            total += len(data)
    except OSError:
        return
