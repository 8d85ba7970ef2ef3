"""The async worker classes (``gevent``, ``eventlet``): one greenlet per connection on the
library's hub, around the same :class:`.request.RequestHandler` as sync and gthread.

This module is library-neutral and imports neither library: :mod:`.gevent_worker` and
:mod:`.eventlet_worker` are the two adapters (:class:`GreenLib`), and they alone import the
library and monkey-patch (``main`` asks them to before the config file and the app load).

Accepting
    One acceptor greenlet per inherited listener waits in the library's cooperative
    ``accept()`` and spawns a greenlet per connection. A semaphore of
    ``worker_connections`` bounds the open connections (each runs at most one request at a
    time, so it also bounds the requests served at once): when it is spent the acceptors
    stop accepting and the kernel's queue (or a sibling) keeps the new clients.

    The library's socket sets O_NONBLOCK on the listening fd, and that flag belongs to the
    open file description every worker shares. That is required here: an acceptor woken
    with its siblings must get EAGAIN when a sibling won the race, not block the hub in
    ``accept()``. Siblings are of the same class except briefly across a HUP that changes
    the class; a sync or gthread worker seeing EAGAIN waits in ``poll()`` and retries
    (:meth:`.core.Worker._accept_error`), so mixing costs a little latency, never a hang.

Connections
    The head is read with :meth:`.http.Connection.next_head` (the core's incremental
    scanner, no second parser) from cooperative ``recv()``s: an idle connection waits at
    most ``keepalive`` seconds (``header_timeout`` when new), and a head must complete
    within ``header_timeout`` of its first byte. SO_RCVTIMEO means nothing to a
    non-blocking socket, so these bounds are the library's socket timeouts, and the body
    reads and response writes go through :class:`TimedSocket` (``header_timeout`` per
    recv/send, which :class:`.http.Connection` turns into the body-rate rule as for sync).
    The app gets the socket itself with no timeout (``gunicorn.socket``, and for eventlet
    ``eventlet.input.get_socket()``): a websocket may sit idle for minutes.

Keep-alive and TERM
    As in the core: a response says ``Connection: close`` once the worker is draining; kept
    connections wait for their next request (answered with ``Connection: close``). TERM
    stops the acceptors and takes the connections queued on the listeners at that moment
    (at most their TCP_INFO count, as the core does, each when a connection slot is free);
    the worker exits when every connection is closed or 90% of ``graceful_timeout`` has
    passed. INT/QUIT exit at once. Signal handlers only set flags
    (a handler may run inside the hub): the main greenlet looks at them every 0.1 s.

Timeouts
    A request running longer than ``--timeout`` has its greenlet's stack logged and is
    ended (:meth:`GreenWorker._end_overdue`); the worker keeps serving the others.

Scoreboard
    The main greenlet writes the heartbeat every 0.1 s and ``accepting`` stays 0, so a hub
    that stops turning (a greenlet running CPU work or an unpatched blocking call) shows
    as a stale heartbeat and the master's ``--timeout`` aborts the worker, dumping every
    stack. ``busy_since`` stays 0: a long request (long polling, a websocket) is not a hung
    worker. ``in_flight`` counts the requests being served, ``connections`` the open ones.
"""

from __future__ import annotations

import errno
import socket
import traceback
from time import monotonic, monotonic_ns
from typing import Any, Callable, Optional, Protocol

from .accesslog import AccessLog
from .config import Settings
from .core import Listener, listen_queue
from .http import Connection, HTTPError, parse_request
from .logs import Logger
from .request import RequestHandler
from .scoreboard import STATE_DRAINING, W_CONNECTIONS, W_HEARTBEAT, W_IN_FLIGHT, Scoreboard, request_desc
from .wsgi import FileWrapper

TICK = 0.1  # seconds between the main greenlet's looks at the flags (and heartbeats)
LINGER_SECONDS = 0.5
LINGER_BYTES = 1 << 20


class MissingLibrary(Exception):
    """The worker class's library is not installed in the app's environment (exit 3)."""

    def __init__(self, worker_class: str, package: str, error: BaseException) -> None:
        super().__init__(
            f"worker class {worker_class!r} needs the {package} package, which cannot be imported "
            f"({error}); install it in the app's environment: pip install {package}"
        )


class Semaphore(Protocol):
    def acquire(self, blocking: bool = True, timeout: Optional[float] = None) -> Any: ...

    def release(self) -> Any: ...


class GreenLib(Protocol):
    """What the async core needs from gevent or eventlet."""

    name: str

    def spawn(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run fn(*args) in a new greenlet; returns a handle :meth:`kill` accepts."""
        ...

    def kill(self, g: Any) -> None:
        """Raise GreenletExit in the greenlet (it unwinds; no wait)."""
        ...

    def current(self) -> Any:
        """The running greenlet (what :meth:`spawn` returned, inside it)."""
        ...

    def sleep(self, seconds: float) -> None: ...

    def semaphore(self, n: int) -> Semaphore: ...

    def listener(self, l: Listener) -> Any:
        """A cooperative socket on (a dup of) the listener's fd."""
        ...

    def wrap_app(self, app: Callable[..., Any]) -> Callable[..., Any]:
        """The app as the library's own server would call it (per-request library state)."""
        ...

    def already_handled(self, result: Any) -> bool:
        """The app took the connection (the library's "already handled" protocol)."""
        ...

    def connection_environ(self, sock: Any) -> dict[str, Any]:
        """The library's own environ keys for one connection."""
        ...


class GreenFileWrapper(FileWrapper):
    """``wsgi.file_wrapper``: iterated, never ``sendfile()``d (the socket is non-blocking;
    iteration writes cooperatively)."""


class TimedSocket:
    """The connection's socket as the request path uses it: every ``recv``/``sendall``
    waits at most ``timeout`` seconds (the library's socket timeout), like SO_RCVTIMEO /
    SO_SNDTIMEO on a blocking socket. The socket itself stays without a timeout for the app."""

    __slots__ = ("sock", "timeout", "family")

    def __init__(self, sock: Any, timeout: Optional[float]) -> None:
        self.sock = sock
        self.timeout = timeout
        self.family = sock.family

    def recv(self, n: int, flags: int = 0) -> bytes:
        s = self.sock
        s.settimeout(self.timeout)
        try:
            return s.recv(n, flags)  # type: ignore[no-any-return]
        finally:
            s.settimeout(None)

    def sendall(self, data: bytes, flags: int = 0) -> None:
        s = self.sock
        s.settimeout(self.timeout)
        try:
            s.sendall(data, flags)
        finally:
            s.settimeout(None)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.sock, name)  # fileno, setsockopt, shutdown, close, ...


class GreenScoreboard:
    """The worker's slot as its greenlets see it: no lock (greenlets switch only at I/O),
    ``in_flight`` counts requests, ``busy_since`` stays 0 (see the module docstring).
    ``started`` maps each greenlet serving a request to its start (ns) and description."""

    def __init__(self, sb: Scoreboard, current: Callable[[], Any]) -> None:
        self._sb = sb
        self._current = current
        self.started: dict[Any, tuple[int, bytes]] = {}
        self.detached: set[Any] = set()  # greenlets running an upgraded connection (no --timeout)

    @property
    def in_flight(self) -> int:
        return len(self.started) + len(self.detached)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sb, name)

    def request_start(self, method: bytes | str, path: bytes | str) -> int:
        now = monotonic_ns()
        w = self._sb.words
        w[W_HEARTBEAT] = now
        self.started[self._current()] = (now, request_desc(method, path))
        w[W_IN_FLIGHT] = self.in_flight
        return now

    def request_progress(self) -> None:
        """This greenlet's request sent part of its response: its --timeout restarts."""
        g = self._current()
        now = monotonic_ns()
        self._sb.words[W_HEARTBEAT] = now
        entry = self.started.get(g)
        if entry is not None:
            self.started[g] = (now, entry[1])

    def request_detach(self) -> None:
        """This greenlet's request is an upgraded connection (a WebSocket, Flask-SocketIO):
        long-lived by design, so out of the --timeout watch; still in flight."""
        g = self._current()
        if self.started.pop(g, None) is not None:
            self.detached.add(g)

    def forget(self, g: Any) -> None:
        """The request in greenlet g is over (or ended by the timeout)."""
        if self.started.pop(g, None) is not None or g in self.detached:
            self.detached.discard(g)
            self._sb.words[W_IN_FLIGHT] = self.in_flight

    def _done(self) -> None:
        self.forget(self._current())

    def request_end(self, method: str, status: int, duration_ns: int, body_bytes: int) -> None:
        self._sb.request_end(method, status, duration_ns, body_bytes)
        self._done()

    def request_abort(self) -> None:
        self._sb.request_abort()
        self._done()


class GreenWorker:
    """One async worker: acceptors and connection greenlets on the library's hub."""

    def __init__(
        self,
        lib: GreenLib,
        app: Callable[..., Any],
        settings: Settings,
        log: Logger,
        scoreboard: Scoreboard,
        listeners: list[Listener],
        access: Optional[AccessLog] = None,
    ) -> None:
        self.lib = lib
        self.gsb = GreenScoreboard(scoreboard, lib.current)
        handler = RequestHandler(lib.wrap_app(app), settings, log, self.gsb, access)  # type: ignore[arg-type]
        handler.base["wsgi.multithread"] = True  # as gunicorn's async workers say
        handler.base["wsgi.file_wrapper"] = GreenFileWrapper
        handler.already_handled = lib.already_handled
        handler.refuse_keepalive = self.refuse_keepalive
        self.handler = handler
        self.settings = settings
        self.log = log
        self.sb = scoreboard
        self.listeners = listeners
        self.alive = True
        self.fast_exit = False
        self.term_at = 0.0
        self.max_conns = max(1, settings.worker_connections)
        self.slots = lib.semaphore(self.max_conns)
        self.conns = 0
        self.keepalive = handler.keepalive
        t = handler.limits.timeout
        self.head_timeout: Optional[float] = t if t > 0 else None
        self.acceptors: list[Any] = []
        self.taking = False  # draining: still taking the connections queued at TERM
        self.request_timeout_ns = int(settings.timeout * 1e9) if settings.timeout > 0 else 0
        self.next_check = 0.0

    # ---------------------------------------------------------------- signals
    def on_term(self) -> None:
        """TERM (a signal handler, maybe inside the hub): only flags."""
        if self.alive:
            self.alive = False
            self.term_at = monotonic()
            self.sb.set_state(STATE_DRAINING)

    def on_fast_exit(self) -> None:
        """INT/QUIT: only flags; the main greenlet returns within a tick."""
        self.alive = False
        self.fast_exit = True

    def refuse_keepalive(self) -> bool:
        return not self.alive

    # -------------------------------------------------------------------- run
    def run(self) -> None:
        """Serve until TERM (then drain) or INT/QUIT."""
        lib = self.lib
        self.sb.set_accepting(0)  # stays 0: the heartbeat is what --timeout watches
        socks = [(l, lib.listener(l)) for l in self.listeners]
        self.acceptors = [lib.spawn(self._accept_loop, l, gsock) for l, gsock in socks]
        sb = self.sb
        while self.alive:
            sb.beat()
            self._end_overdue()
            lib.sleep(TICK)
        for g in self.acceptors:
            lib.kill(g)
        if self.fast_exit:
            return
        deadline = self.drain_deadline()
        self.taking = True
        taker = lib.spawn(self._take_queued, socks, deadline)
        lib.sleep(0)  # let it take what is queued before the loop below looks at conns
        if self.conns:
            self.log.debug(f"draining {self.conns} connection(s)")
        while (self.conns or self.taking) and not self.fast_exit and monotonic() < deadline:
            sb.beat()
            self._end_overdue()
            lib.sleep(TICK)
        lib.kill(taker)
        if self.conns and not self.fast_exit:
            self.log.warning(f"graceful timeout: {self.conns} connection(s) still open, {self.gsb.in_flight} request(s) in flight")

    def _end_overdue(self) -> None:
        """End each request running longer than --timeout: log its greenlet's stack, then
        raise GreenletExit in it (it unwinds at its next switch and its connection is
        closed: the client sees the connection end with no or a partial response). Checked
        once a second. A hub blocked by a greenlet never gets here: that is the master's
        heartbeat timeout, which dumps the stack and replaces the worker."""
        limit = self.request_timeout_ns
        if not limit:
            return
        now = monotonic()
        if now < self.next_check:
            return
        self.next_check = now + 1.0
        started = self.gsb.started
        cutoff = monotonic_ns() - limit
        for g, (start, desc) in list(started.items()):
            if start > cutoff:
                continue
            frame = getattr(g, "gr_frame", None)
            stack = "".join(traceback.format_stack(frame)) if frame is not None else "(no frame)\n"
            self.log.error(
                f"request {desc.decode('utf-8', 'replace')!r} running for {(monotonic_ns() - start) / 1e9:.1f} s, longer than "
                f"--timeout ({self.settings.timeout:g} s): ending it; its greenlet's stack:\n{stack.rstrip()}"
            )
            self.gsb.forget(g)
            self.lib.kill(g)

    def drain_deadline(self) -> float:
        """When draining must end: 90% of graceful_timeout after TERM, before the SIGKILL."""
        gt = self.settings.graceful_timeout
        return (self.term_at or monotonic()) + (gt * 0.9 if gt > 0 else float("inf"))

    def _take_queued(self, socks: list[tuple[Listener, Any]], deadline: float) -> None:
        """TERM: serve the connections queued on the listeners now (as the core does), at
        most their TCP_INFO count, each when a slot is free, without waiting for more."""
        try:
            self._take(socks, deadline)
        finally:
            self.taking = False

    def _take(self, socks: list[tuple[Listener, Any]], deadline: float) -> None:
        budget = listen_queue(self.listeners)
        taken = 0
        for l, gsock in socks:
            gsock.settimeout(0.0)
            while budget is None or taken < budget:
                left = deadline - monotonic()
                if left <= 0 or not self.slots.acquire(True, left):
                    break
                try:
                    client, addr = gsock.accept()
                except OSError:  # BlockingIOError: none left
                    self.slots.release()
                    break
                taken += 1
                self._spawn_connection(client, addr, l)
        if taken:
            self.log.debug(f"draining {taken} queued connection(s)")

    def _spawn_connection(self, client: Any, addr: Any, l: Listener) -> None:
        self.conns += 1
        self.sb.words[W_CONNECTIONS] = self.conns
        self.lib.spawn(self._serve_connection, client, addr, l)

    def _accept_loop(self, l: Listener, gsock: Any) -> None:
        slots = self.slots
        lib = self.lib
        yield_after_accept = self.settings.workers > 1
        while self.alive:
            slots.acquire()  # worker_connections open: stop accepting until one closes
            if not self.alive:
                slots.release()
                return
            try:
                client, addr = gsock.accept()
            except OSError as e:
                slots.release()
                code = e.errno
                if code in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    self.log.error(f"accept() failed: {e.strerror}; retrying in 0.1 s")
                    lib.sleep(0.1)
                elif code in (errno.EBADF, errno.EINVAL, errno.ENOTSOCK):
                    self.log.critical(f"listener fd {l.fd} is unusable: {e.strerror}; exiting")
                    self.alive = False
                    self.fast_exit = True
                    return
                else:  # EAGAIN (a sibling won), ECONNABORTED, EPROTO, EPERM: the next one
                    self.log.debug(f"accept() failed: {e.strerror}")
                continue
            except BaseException:
                slots.release()
                raise  # GreenletExit: stopped
            self._spawn_connection(client, addr, l)
            if yield_after_accept:
                # With siblings, one accept per turn (gunicorn's max_accept=1): the new
                # connection runs first, so a worker does not take a burst of connections
                # that its siblings could serve sooner.
                lib.sleep(0)

    # ------------------------------------------------------------ connections
    def _serve_connection(self, sock: Any, addr: Any, l: Listener) -> None:
        try:
            self._connection(sock, addr, l)
        except OSError as e:
            self.log.debug(f"connection error: {e}")
        except Exception:
            self.log.exception("unexpected error while handling a connection")
        finally:
            try:
                sock.close()
            except OSError:
                pass
            self.conns -= 1
            self.sb.words[W_CONNECTIONS] = self.conns
            self.slots.release()

    def _connection(self, sock: Any, addr: Any, l: Listener) -> None:
        handler = self.handler
        sock.settimeout(None)  # the app's default timeout, if any, is not ours
        timed = TimedSocket(sock, self.head_timeout)
        conn, base, proxy = handler.open_connection(timed, addr, l.server_name, l.server_port, l.tcp)  # type: ignore[arg-type]
        base["gorn.socket"] = base["gunicorn.socket"] = sock
        base.update(self.lib.connection_environ(sock))
        idle = self.head_timeout
        while True:
            try:
                head = self._read_head(conn, sock, idle)
                if head is None:
                    return
                req = parse_request(head, conn, base, handler.root_path, proxy)
            except HTTPError as e:
                handler.refuse(conn, e, base)
                self._linger(sock)
                return
            keep = handler.serve(conn, req)
            if not keep:
                body = req.body
                if conn.buf or (body is not None and not body.done):
                    self._linger(sock)  # unread bytes: a plain close would reset the response
                return
            idle = self.keepalive

    def _read_head(self, conn: Connection, sock: Any, idle: Optional[float]) -> Optional[bytes]:
        """The next request head; None to close quietly (EOF, idle or head timeout)."""
        head = conn.next_head()  # pipelined
        if head is not None:
            return head
        try:
            if not conn.buf:
                sock.settimeout(idle)
                try:
                    data = sock.recv(65536)
                except TimeoutError:
                    return None
                if not data:
                    return None
                conn.buf = data
                head = conn.next_head()
                if head is not None:
                    return head
            t = self.head_timeout
            deadline = monotonic() + t if t is not None else 0.0
            while True:
                if deadline:
                    left = deadline - monotonic()
                    if left <= 0:
                        raise TimeoutError()
                    sock.settimeout(left)
                try:
                    data = sock.recv(65536)
                except TimeoutError:
                    self.log.debug(f"closing connection: timed out reading the request head ({len(conn.buf)} bytes received)")
                    return None
                if not data:
                    self.log.debug(f"closing connection: connection closed after {len(conn.buf)} bytes of a request head")
                    return None
                conn.buf += data
                head = conn.next_head()
                if head is not None:
                    return head
        except TimeoutError:
            self.log.debug(f"closing connection: timed out reading the request head ({len(conn.buf)} bytes received)")
            return None
        finally:
            sock.settimeout(None)

    def _linger(self, sock: Any) -> None:
        """Half-close, then read (bounded) what the client still sends, so it sees the answer."""
        try:
            sock.shutdown(socket.SHUT_WR)
            deadline = monotonic() + LINGER_SECONDS
            got = 0
            while got < LINGER_BYTES:
                left = deadline - monotonic()
                if left <= 0:
                    return
                sock.settimeout(left)
                data = sock.recv(65536)
                if not data:
                    return
                got += len(data)
        except OSError:
            pass
