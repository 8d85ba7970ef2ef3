"""The connection core every worker class shares: listeners, held connections, signals.

Waiting
    One epoll set per worker holds the inherited listeners, every connection the worker
    holds (new ones whose head is still arriving, kept-alive ones between requests, and
    refused ones lingering), and the executor's wake-up pipe (threads). Heads are read with
    ``MSG_DONTWAIT`` and parsed only when complete, so a slow or idle client costs a file
    descriptor, never the worker. Each connection is ``EPOLLONESHOT``: it reports once and
    is re-armed when it waits again, so a connection the executor has never reports.

Accepting (load balancing belongs to the kernel)
    A worker takes new connections only while its executor could run one more request and
    it holds fewer than ``worker_connections``. Then the listeners are in the epoll set with
    ``EPOLLEXCLUSIVE`` (the kernel wakes one waiter, the longest registered); otherwise they
    are out of it, because a registered entry absorbs a wake-up even while its worker runs
    the app. A worker that holds nothing, runs nothing and has one listener blocks in plain
    ``accept()`` instead: the kernel wakes exactly one idle waiter, FIFO. An accept after a
    readiness report is bounded by a 50 ms ``ITIMER_REAL`` (a sibling may have won the
    race). Listeners are shared by every worker: this module never changes their flags.

Keep-alive
    A kept connection is never closed while its client may be using it. The worker says
    ``Connection: close`` on a response when it wants the connection gone: stopping, or
    (when rotating helps) it could not take a new connection while clients wait on the
    listeners, which keeps every waiting client in the kernel's one FIFO queue instead of
    behind a busy worker's kept connections. Idle kept connections close only after
    ``keepalive`` seconds. A connection closed with unread bytes is half-closed and drained
    (``LINGER_SECONDS``) inside the loop, so the client reads the response, not an RST.

Signals
    TERM sets ``alive=False`` and state=draining; while the worker waits (accept, epoll)
    the handler raises :class:`Wakeup`; otherwise PEP 475 retries the syscall and the flag
    is seen after the request in hand. :meth:`Worker.drain` then serves what is queued on
    the listeners, the requests on their way and each kept connection's next request (with
    ``Connection: close``), until they end or 90% of ``graceful_timeout`` has passed.
    INT/QUIT raise :class:`FastExit` wherever the worker is. A signal that lands after
    ``accept()`` returned but before its result was stored drops an accepted fd:
    :func:`find_lost_connections` rescues it.
"""

from __future__ import annotations

import collections
import errno
import os
import select
import signal
import socket
import stat
import struct
import time
from time import monotonic
from typing import Any, Iterator, Optional, Protocol

from .http import Connection, HTTPError, Proxy, Request, parse_request
from .request import RequestHandler
from .scoreboard import STATE_DRAINING, W_CONNECTIONS

ACCEPT_RACE_TIMEOUT = 0.05  # seconds an accept after a readiness report may block
LINGER_SECONDS = 0.5  # reading what a refused client still sends, so it sees the answer
LINGER_BYTES = 1 << 20
EXPIRY_STEP = 0.25  # deadlines are checked at most this often (a scan is O(connections))
# A worker that runs one request at a time and has siblings takes no new connection this
# soon after keeping one: its client's next request is usually on its way, and a new
# connection taken now would make it wait behind (head-of-line blocking) while a sibling
# sits idle.
KEPT_CLIENT_GRACE = 0.05
# How long a worker that runs one request at a time and holds nothing else waits for the
# first bytes of a connection it just accepted, before it holds it in the epoll set: on a
# LAN they follow the handshake within a round trip (one poll() is cheaper than registering
# the connection), and a client that connects and says nothing must not slow down how fast
# the worker takes the connections queued behind it.
NEW_CLIENT_WAIT = 0.005

_LISTEN = select.EPOLLIN | select.EPOLLEXCLUSIVE
_READ = select.EPOLLIN | select.EPOLLONESHOT
_TCP_INFO_LEN = 104
_TCPI_UNACKED = 24  # struct tcp_info: 8 bytes of u8 fields, then u32 rto, ato, snd_mss, rcv_mss, unacked

# What a held connection is doing.
HEAD = 0  # waiting for (the rest of) a request head, armed in the epoll set
READY = 1  # a complete request waits for the executor
BUSY = 2  # the executor has it
LINGER = 3  # answered and half-closed: reading what the client still sends, then close


class Wakeup(BaseException):
    """Raised by a signal handler to leave a wait (accept, epoll)."""


class FastExit(BaseException):
    """INT/QUIT: leave whatever the worker is doing and exit 0."""


class Listener:
    """An inherited listening socket and what the environ needs from it."""

    __slots__ = ("sock", "fd", "family", "proto", "unix", "tcp", "nodelay", "server_name", "server_port", "name")

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
        # Accepted connections inherit the listener's TCP_NODELAY (the master sets it):
        # then there is no need to set it on each.
        self.nodelay = self.tcp and bool(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
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
    address is one of the listeners'. Used only on wake-up paths; the caller skips the
    connections it holds.
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


class Held:
    """A connection the worker holds, and what its requests' environ shares."""

    __slots__ = ("sock", "fd", "conn", "base", "proxy", "state", "deadline", "armed", "lingered")

    def __init__(self, sock: socket.socket, conn: Connection, base: dict[str, Any], proxy: Optional[Proxy]) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.conn = conn
        self.base = base
        self.proxy = proxy  # what its proxy headers may set; None: an untrusted peer
        self.state = HEAD
        self.deadline = 0.0
        self.armed = False  # registered in the epoll set (armed or spent)
        self.lingered = 0


class Executor(Protocol):
    """Runs complete requests: inline (sync) or in a thread pool (gthread)."""

    wake_fd: int  # readable when finished requests wait in collect(); -1 if none
    rotate: bool  # closing a kept connection while clients wait helps (see refuse_keepalive)
    serial: bool  # one request at a time

    def free(self) -> bool:
        """Could run one more request now."""
        ...

    def idle(self) -> bool:
        """Runs nothing."""
        ...

    def submit(self, h: Held, req: Request) -> Optional[bool]:
        """Run ``req``; returns whether to keep the connection when done inline, else None."""
        ...

    def collect(self) -> list[tuple[Held, Request, bool]]:
        """Requests finished since the last call (threads)."""
        ...

    def stop(self) -> None:
        """No more requests: let the pool go."""
        ...


class Worker:
    """One worker's connection core around a :class:`RequestHandler` and an executor."""

    def __init__(self, handler: RequestHandler, listeners: list[Listener], executor: Executor) -> None:
        self.handler = handler
        self.log = handler.log
        self.sb = handler.sb
        self.settings = handler.settings
        self.listeners = listeners
        self.executor = executor
        self.by_fd = {l.fd: l for l in listeners}
        self.single = listeners[0] if len(listeners) == 1 else None  # blocking accept() on it
        self.alive = True
        self.in_wait = False
        self.fast_exit = False
        self.draining = False
        self.term_at = 0.0
        self.keepalive = handler.keepalive
        self.head_timeout = handler.limits.timeout if handler.limits.timeout > 0 else float("inf")
        self.max_conns = max(1, self.settings.worker_connections)
        self.conns: dict[int, Held] = {}  # every open connection, by fd
        self.ready: collections.deque[tuple[Held, Request]] = collections.deque()
        self.epoll = select.epoll()
        self.listening = False
        self.next_scan = 0.0
        self.kept_until = 0.0  # no new connection before this (KEPT_CLIENT_GRACE)
        self.grace = KEPT_CLIENT_GRACE if executor.rotate and executor.serial else 0.0
        self.lpoll: Optional[Any] = None  # the listeners alone, polled with timeout 0
        if listeners:
            self.lpoll = select.poll()
            for l in listeners:
                self.lpoll.register(l.fd, select.POLLIN)
        if executor.wake_fd >= 0:
            self.epoll.register(executor.wake_fd, select.EPOLLIN)
        handler.refuse_keepalive = self.refuse_keepalive
        self._alarm_handler = self._alarm  # one bound method, so identity checks work

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

    def _alarm(self, signum: int, frame: Any) -> None:
        """SIGALRM: the bounded accept after a readiness report lost its race."""
        if self.in_wait:
            self.in_wait = False
            raise Wakeup()

    # -------------------------------------------------------------------- run
    def run(self) -> None:
        """Serve until TERM, then drain and return."""
        while self.alive:
            self._turn()
        self.drain()

    def handle(self, sock: socket.socket, addr: Any, l: Optional[Listener]) -> None:
        """Serve one connection (no listener) until it closes; for tests and tools."""
        if l is not None:
            self._add(sock, addr, l)
        else:
            self._adopt(sock, addr, "localhost", "80", False)
        while self.conns:
            self._turn()
            if not self.alive:
                self.drain()
                return

    def _turn(self) -> None:
        """Run what is ready, then wait for the next event (or accept)."""
        self._dispatch()
        if not self.alive:
            return
        ex = self.executor
        if not self.conns and self.single is not None and ex.idle():
            self._accept_blocking(self.single)  # holding nothing, running nothing
            return
        can_accept = not self.ready and ex.free() and len(self.conns) < self.max_conns
        timeout = self._expire()
        if can_accept and self.grace and self.conns:
            wait = self.kept_until - monotonic()
            if wait > 0:
                can_accept = False
                timeout = min(timeout, wait)
        if can_accept != self.listening and self.listeners:
            self._listen(can_accept)
        self._wait(timeout)

    def _dispatch(self) -> None:
        """Hand ready requests to the executor in arrival order while it has room."""
        ex = self.executor
        if ex.wake_fd >= 0:
            self._finish_all()
        ready = self.ready
        while ready and ex.free():
            h, req = ready.popleft()
            if self.listening:
                self._listen(False)  # a registered listener would absorb wake-ups meant for idle workers
            h.state = BUSY
            keep = ex.submit(h, req)
            if keep is not None:
                self._finished(h, req, keep)
            if not self.alive and not self.draining:
                return  # TERM during the request: the drain serves the rest

    def _wait(self, timeout: float) -> None:
        sb = self.sb
        sb.set_accepting(1 if self.listening else 0)
        try:
            self.in_wait = True
            try:
                events = self.epoll.poll(timeout)
            finally:
                self.in_wait = False
        except Wakeup:
            self._rearm_all()
            return
        if self.listening:
            sb.set_accepting(0)
        conns = self.conns
        for fd, _ in events:
            h = conns.get(fd)
            if h is not None:
                self._readable(h)
            elif fd in self.by_fd:
                if self.listening and len(conns) < self.max_conns:
                    got = self._accept_timed(self.by_fd[fd])
                    if got is not None:
                        self._add(*got)
            elif fd == self.executor.wake_fd:
                _drain_pipe(fd)

    def _listen(self, on: bool) -> None:
        for l in self.listeners:
            if on:
                self.epoll.register(l.fd, _LISTEN)
            else:
                self.epoll.unregister(l.fd)
        self.listening = on

    def _rearm_all(self) -> None:
        """After a wake-up: epoll may have reported (and spent) events nobody read."""
        for h in self.conns.values():
            if h.state in (HEAD, LINGER) and h.armed:
                self.epoll.modify(h.fd, _READ)

    # ---------------------------------------------------------- connections
    def _add(self, sock: socket.socket, addr: Any, l: Listener) -> None:
        self._adopt(sock, addr, l.server_name, l.server_port, l.tcp, not l.nodelay)

    def _adopt(self, sock: socket.socket, addr: Any, server_name: str, server_port: str, tcp: bool, nodelay: bool = True) -> None:
        """A new connection: read its request if it is here already, else wait for it.

        A worker that runs one request at a time and holds nothing else waits up to
        NEW_CLIENT_WAIT for the first bytes in a blocking recv (SO_RCVTIMEO), which costs
        no more syscalls than a recv that finds them there."""
        first_wait = NEW_CLIENT_WAIT if not self.conns and self.executor.serial else 0.0
        try:
            conn, base, proxy = self.handler.open_connection(sock, addr, server_name, server_port, tcp, nodelay, first_wait)
        except OSError as e:  # reset before we got to it
            self.log.debug(f"connection error: {e}")
            sock.close()
            return
        h = Held(sock, conn, base, proxy)
        h.deadline = monotonic() + self.head_timeout
        self.conns[h.fd] = h
        self.sb.words[W_CONNECTIONS] = len(self.conns)
        self._readable(h, first_wait > 0)

    def _arm(self, h: Held) -> None:
        if h.armed:
            self.epoll.modify(h.fd, _READ)
        else:
            self.epoll.register(h.fd, _READ)
            h.armed = True

    def _readable(self, h: Held, wait_first: bool = False) -> None:
        """Read what the client sent: the rest of a head, or what a refused client still sends.

        ``wait_first``: a new connection that is all the worker has: a blocking recv bounded
        by its SO_RCVTIMEO (NEW_CLIENT_WAIT) before it is held in the epoll set."""
        try:
            # Not interruptible by TERM (in_wait stays False): an exception raised between the
            # recv and its result would lose the bytes read. TERM waits NEW_CLIENT_WAIT at most.
            data = h.sock.recv(65536) if wait_first else h.sock.recv(65536, socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            self._arm(h)
            return
        except OSError as e:
            self.log.debug(f"connection error: {e}")
            self._close(h)
            return
        if h.state == LINGER:
            h.lingered += len(data)
            if data and h.lingered < LINGER_BYTES:
                self._arm(h)
            else:
                self._close(h)
            return
        conn = h.conn
        if not data:
            if conn.buf:
                self.log.debug(f"closing connection: connection closed after {len(conn.buf)} bytes of a request head")
            self._close(h)
            return
        if conn.buf:
            conn.buf += data
        else:
            conn.buf = data
            if conn.response_started:  # a kept connection: from the keep-alive deadline to the head's
                h.deadline = monotonic() + self.head_timeout
        self._scan(h)

    def _scan(self, h: Held) -> None:
        """Queue the buffered request if its head is complete, else wait for more."""
        conn = h.conn
        try:
            head = conn.next_head()
            if head is None:
                h.state = HEAD
                self._arm(h)
                return
            req = parse_request(head, conn, h.base, self.handler.root_path, h.proxy)
        except HTTPError as e:
            self.handler.refuse(conn, e, h.base)
            self._linger(h)
            return
        h.state = READY
        self.ready.append((h, req))

    def _finished(self, h: Held, req: Request, keep: bool) -> None:
        """The executor is done with a request: wait for the next one, or close."""
        if not keep:
            body = req.body
            if h.conn.buf or (body is not None and not body.done):
                self._linger(h)  # unread bytes: a plain close would reset the response
            else:
                self._close(h)
            return
        now = monotonic()
        h.deadline = now + self.keepalive
        if self.grace:
            self.kept_until = now + self.grace
        if h.conn.buf:
            self._scan(h)  # pipelined: queued behind the others, in arrival order
        else:
            h.state = HEAD
            self._arm(h)

    def _finish_all(self) -> None:
        for h, req, keep in self.executor.collect():
            self._finished(h, req, keep)

    def _linger(self, h: Held) -> None:
        """Half-close, then read (bounded, in the loop) what the client still sends."""
        try:
            h.sock.shutdown(socket.SHUT_WR)
        except OSError:
            self._close(h)
            return
        h.state = LINGER
        h.deadline = monotonic() + LINGER_SECONDS
        h.conn.buf = b""
        self._arm(h)

    def _close(self, h: Held) -> None:
        conns = self.conns
        if conns.pop(h.fd, None) is None:
            return
        if h.armed:
            try:
                self.epoll.unregister(h.fd)
            except OSError:
                pass
        try:
            h.sock.close()
        except OSError:
            pass
        self.sb.words[W_CONNECTIONS] = len(conns)

    def _expire(self) -> float:
        """Close connections waiting past their deadline; returns the next poll timeout (s)."""
        now = monotonic()
        if now < self.next_scan:
            return self.next_scan - now
        if not self.conns:
            return 1.0  # the heartbeat's pace
        self.next_scan = now + EXPIRY_STEP
        for h in [h for h in self.conns.values() if h.deadline <= now and h.state in (HEAD, LINGER)]:
            if h.state == HEAD and h.conn.buf:
                self.log.debug(f"closing connection: timed out reading the request head ({len(h.conn.buf)} bytes received)")
            self._close(h)
        return EXPIRY_STEP

    def refuse_keepalive(self) -> bool:
        """Asked before each response head (in the executor): True to say Connection: close.

        When stopping; or when this worker could not take a new connection now while
        clients wait on the listeners (or, one request at a time, while requests on other
        connections wait behind this one) and rotating helps: another worker or a thread
        will be free sooner than this connection's next request would be served here.
        """
        if not self.alive:
            return True
        ex = self.executor
        if not ex.rotate or not self.listeners or (ex.free() and len(self.conns) < self.max_conns):
            return False
        if ex.serial:
            # Requests already wait behind this one on other connections it holds: shed
            # this one, so its client's next request goes through the kernel's queue to
            # whichever worker is free (a pooling proxy would otherwise keep feeding it).
            return bool(self.ready) or (self.lpoll is not None and bool(self.lpoll.poll(0)))
        p = select.poll()  # pool threads: a poll object is not safe to share between threads
        for l in self.listeners:
            p.register(l.fd, select.POLLIN)
        return bool(p.poll(0))

    # --------------------------------------------------------------- accept
    def _accept_blocking(self, l: Listener) -> None:
        sb = self.sb
        sb.set_accepting(1)
        try:
            fd, addr = self._accept_waiting(l)
        except Wakeup:
            sb.set_accepting(0)
            self._rescue()
            return
        except OSError as e:
            sb.set_accepting(0)
            self._accept_error(e, l)
            return
        sb.set_accepting(0)
        self._add(self._wrap(fd, l), addr, l)

    def _accept_waiting(self, l: Listener) -> tuple[int, Any]:
        """accept() that TERM (and the race timer's SIGALRM) interrupts with Wakeup."""
        self.in_wait = True
        try:
            return l.sock._accept()  # type: ignore[attr-defined,no-any-return]
        finally:
            self.in_wait = False

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
                fd, addr = self._accept_waiting(l)
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
        return self._wrap(fd, l), addr, l

    def _wrap(self, fd: int, l: Listener) -> socket.socket:
        sock = socket.socket(l.family, socket.SOCK_STREAM, l.proto, fileno=fd)
        if sock.gettimeout() is not None:  # the app called socket.setdefaulttimeout()
            sock.settimeout(None)
        return sock

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
        """A signal hit between accept() and storing its fd: adopt the lost connection."""
        for sock, addr, l in find_lost_connections(self.listeners):
            if sock.fileno() in self.conns:
                sock.detach()
                continue
            self.log.debug(f"serving fd {sock.fileno()} accepted just before a signal")
            self._add(sock, addr, l)

    # ------------------------------------------------------------------ drain
    def drain(self) -> None:
        """TERM: serve what is queued on the listeners, the requests on their way and each
        kept connection's next request (answered with Connection: close), then close."""
        if self.listening:
            self._listen(False)
        self.sb.set_accepting(0)
        deadline = self.drain_deadline()
        queued = 0
        for got in self.queued_connections(deadline):
            self._add(*got)
            queued += 1
        if queued:
            self.log.debug(f"draining {queued} queued connection(s)")
        if not self.fast_exit:
            # This worker takes no more connections: drop its copies of the listeners, so
            # that once the master and the other workers have dropped theirs too (a full
            # shutdown), a late connect is refused, which a proxy retries elsewhere, instead of
            # waiting in a queue nobody will accept from.
            for l in self.listeners:
                l.sock.close()
            self.lpoll = None
        self.draining = True
        while self.conns and not self.fast_exit:
            self._dispatch()
            left = deadline - monotonic()
            if not self.conns or left <= 0:
                break
            self._wait(min(self._expire(), left))
        for h in list(self.conns.values()):
            if h.state != BUSY:
                self._close(h)
        self.executor.stop()

    def drain_deadline(self) -> float:
        """When draining must end: 90% of graceful_timeout after TERM, before the SIGKILL."""
        gt = self.settings.graceful_timeout
        return (self.term_at or monotonic()) + (gt * 0.9 if gt > 0 else float("inf"))

    def _queued(self) -> Optional[int]:
        return listen_queue(self.listeners)

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


def listen_queue(listeners: list[Listener]) -> Optional[int]:
    """Connections in the listen queues now (TCP_INFO), plus one per listener (a bound for
    draining); None if unknown (a unix socket)."""
    total = 0
    for l in listeners:
        if not l.tcp:
            return None
        try:
            info = l.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _TCP_INFO_LEN)
            total += struct.unpack_from("I", info, _TCPI_UNACKED)[0]
        except (OSError, struct.error):
            return None
    return total + len(listeners)


def _drain_pipe(fd: int) -> None:
    try:
        while os.read(fd, 4096):
            pass
    except BlockingIOError:
        pass
