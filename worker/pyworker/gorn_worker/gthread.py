"""The gthread worker: ``threads`` requests at once in one process, as gunicorn's gthread.

Threads
    The main thread owns an epoll set: the listeners, every connection that is waiting
    for its next request (new or kept alive), and a wake-up pipe. A connection with bytes
    to read is handed to a pool of ``threads`` daemon threads, which read the head, run
    the app and write the response; a kept-alive connection then goes back to the main
    thread, so an idle client holds no thread. Pipelined requests stay in the thread.

Accepting
    The listeners are in the epoll set (``EPOLLEXCLUSIVE``) only while a thread is free and
    fewer than ``worker_connections`` connections are open: a saturated worker leaves new
    connections in the kernel's queue for its siblings, as a busy sync worker does. A worker
    that stopped accepting closes a connection after its response while others wait on the
    listeners, so kept-alive clients cannot starve queued ones. The
    accept after a readiness report is bounded as in the sync worker (the listeners are
    shared and never made non-blocking).

Scoreboard
    Counters are updated under a lock. ``busy_since`` and the description are those of
    the oldest request in progress and ``in_flight`` counts them, so ``--timeout`` still
    names the request that hangs (the master then dumps every thread's stack).

Stopping
    TERM: stop accepting; serve what is queued on the listeners, what idle connections
    already sent and the first request of connections accepted but still silent (within
    their header timeout); let the threads finish (within ``graceful_timeout``); close
    idle kept-alive connections.
    INT/QUIT: leave at once (the threads are daemons).
"""

from __future__ import annotations

import collections
import os
import queue
import select
import socket
import threading
from time import monotonic, monotonic_ns
from typing import Any, Callable, Optional

from . import threads
from .accesslog import AccessLog
from .config import Settings
from .http import Connection, HeadTimeout, HTTPError, IncompleteHead, Request, parse_request
from .logs import ErrorsStream, Logger
from .scoreboard import W_BUSY_SINCE, W_HEARTBEAT, W_IN_FLIGHT, Scoreboard, request_desc
from .sync import Listener, SyncWorker, Wakeup, _readable_now, find_lost_connections

_LISTEN = select.EPOLLIN | select.EPOLLEXCLUSIVE
_EXPIRY_STEP = 0.25  # idle deadlines are checked at most this often (a scan is O(idle))


class ThreadedScoreboard:
    """A worker's scoreboard slot shared by its threads (the same words as a sync worker's)."""

    def __init__(self, sb: Scoreboard) -> None:
        self._sb = sb
        self._lock = threading.Lock()
        self._started: dict[int, tuple[int, bytes]] = {}  # thread -> (start ns, desc), oldest first

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sb, name)  # lifecycle calls: boot, set_state, beat, ...

    def _show_oldest(self) -> None:
        if self._started:
            start, desc = next(iter(self._started.values()))
            self._sb.show_busy(desc, start)
        else:
            self._sb.words[W_BUSY_SINCE] = 0
        self._sb.words[W_IN_FLIGHT] = len(self._started)

    def request_start(self, method: bytes | str, path: bytes | str) -> int:
        desc = request_desc(method, path)
        now = monotonic_ns()
        with self._lock:
            self._started[threading.get_ident()] = (now, desc)
            self._sb.words[W_HEARTBEAT] = now
            self._show_oldest()
        return now

    def _done(self) -> None:
        self._started.pop(threading.get_ident(), None)
        self._show_oldest()

    def request_end(self, method: str, status: int, duration_ns: int, body_bytes: int) -> None:
        with self._lock:
            self._sb.request_end(method, status, duration_ns, body_bytes)
            self._done()

    def request_abort(self) -> None:
        with self._lock:
            self._sb.request_abort()
            self._done()


class _Client:
    """A connection between requests, and what its requests' environ shares."""

    __slots__ = ("conn", "base", "trusted", "deadline")

    def __init__(self, conn: Connection, base: dict[str, Any], trusted: bool) -> None:
        self.conn = conn
        self.base = base
        self.trusted = trusted
        self.deadline = 0.0


class ThreadWorker(SyncWorker):
    """Serves up to ``threads`` requests at once; idle connections wait in the main thread."""

    def __init__(
        self,
        app: Callable[..., Any],
        settings: Settings,
        log: Logger,
        scoreboard: Scoreboard,
        listeners: list[Listener],
        access: Optional[AccessLog] = None,
    ) -> None:
        super().__init__(app, settings, log, ThreadedScoreboard(scoreboard), listeners, access)  # type: ignore[arg-type]
        self.base["wsgi.multithread"] = True
        self.threads = max(1, settings.threads)
        self.max_conns = max(self.threads, settings.worker_connections)
        self.poll = select.epoll()
        self.clients: dict[int, _Client] = {}  # fd -> connection waiting in the epoll set
        self.open_fds: set[int] = set()  # connections accepted and not closed: waiting or in a thread
        # (threads discard theirs before closing, so the count is never stale)
        self.busy = 0  # connections handed to the threads
        self.listening = False
        self.next_scan = 0.0
        self.tasks: queue.SimpleQueue[Optional[_Client]] = queue.SimpleQueue()
        self.returned: collections.deque[Optional[_Client]] = collections.deque()  # from the threads
        self.wake_r, self.wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.poll.register(self.wake_r, select.EPOLLIN)
        self.local = threading.local()
        self.pool = [threads.start(self._thread, f"gorn-thread-{i}") for i in range(self.threads)]

    # ------------------------------------------------------------ main thread
    def _refuse_keepalive(self) -> bool:
        """Asked before each response head (in a pool thread). Idle connections hold no
        thread, so they are kept, unless this worker stopped accepting (every thread busy,
        or worker_connections open) while clients wait on the listeners: then this one
        closes and a waiting one gets its turn, as with the sync worker's keep-alive."""
        if not self.alive:
            return True
        return not self._can_accept() and any(_readable_now(l.fd) for l in self.listeners)

    def _can_accept(self) -> bool:
        """A thread is free and worker_connections are not all open."""
        return self.busy < self.threads and len(self.open_fds) < self.max_conns

    def _listen(self, on: bool) -> None:
        if on == self.listening:
            return
        for l in self.listeners:
            if on:
                self.poll.register(l.fd, _LISTEN)
            else:
                self.poll.unregister(l.fd)
        self.listening = on

    def run(self) -> None:
        """Serve until TERM, then drain and return."""
        while self.alive:
            self._take_back()
            self._listen(self._can_accept())
            # A thread that finished after _take_back wakes us only when we stopped
            # listening (see _thread): look again at once rather than miss it.
            timeout = 0.0 if self.returned and not self.listening else self._expire()
            self.sb.beat()
            try:
                self.in_wait = True
                try:
                    events = self.poll.poll(timeout)
                finally:
                    self.in_wait = False
            except Wakeup:
                break
            for fd, _ in events:
                if fd == self.wake_r:
                    self._drain_pipe()
                elif fd in self.by_fd:
                    if self._can_accept():
                        got = self._accept_timed(self.by_fd[fd])
                        c = self._open_client(*got) if got is not None else None
                        if c is not None:
                            self._first_request(c)
                else:
                    self._dispatch(fd)
        self.drain()

    def _open_client(self, sock: socket.socket, addr: Any, l: Optional[Listener]) -> Optional[_Client]:
        try:
            conn, base, trusted = self.open_connection(sock, addr, l)
        except OSError as e:  # reset before we got to it
            self.log.debug(f"connection error: {e}")
            sock.close()
            return None
        self.open_fds.add(sock.fileno())
        return _Client(conn, base, trusted)

    def _first_request(self, c: _Client) -> None:
        """A new connection: to a thread if its request is here already, else wait for it."""
        try:
            c.conn.sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
            ready = True  # bytes, or EOF: a thread reads it either way
        except (BlockingIOError, InterruptedError):
            ready = False
        except OSError:
            ready = True  # reset: let a thread see it and close
        if ready:
            self._hand_over(c)
        else:
            self._wait_for_request(c)

    def _hand_over(self, c: _Client) -> None:
        """To the threads (they queue when all are busy)."""
        self.busy += 1
        self.tasks.put(c)

    def _wait_for_request(self, c: _Client) -> None:
        """Put a connection in the epoll set until its next request arrives."""
        fd = c.conn.sock.fileno()
        first = not c.conn.response_started
        c.deadline = monotonic() + (self.limits.timeout if first and self.limits.timeout > 0 else self.keepalive)
        self.clients[fd] = c
        self.poll.register(fd, select.EPOLLIN | select.EPOLLRDHUP)

    def _dispatch(self, fd: int) -> None:
        c = self.clients.pop(fd, None)
        if c is None:
            return
        self.poll.unregister(fd)
        self._hand_over(c)

    def _take_back(self) -> None:
        """Connections the threads finished with: kept ones wait again, others are closed."""
        while self.returned:
            c = self.returned.popleft()
            self.busy -= 1
            if c is None:
                continue  # closed by the thread
            if self.alive:
                self._wait_for_request(c)
            else:
                self._close(c)

    def _drain_pipe(self) -> None:
        try:
            while os.read(self.wake_r, 4096):
                pass
        except BlockingIOError:
            pass

    def _expire(self) -> float:
        """Close connections idle past their deadline; returns the poll timeout (s)."""
        if not self.clients:
            return 1.0
        now = monotonic()
        if now < self.next_scan:
            return self.next_scan - now
        self.next_scan = now + _EXPIRY_STEP
        for fd, c in list(self.clients.items()):
            if c.deadline <= now:
                self._drop(fd)
        return _EXPIRY_STEP

    def _drop(self, fd: int) -> None:
        """Close a connection waiting in the epoll set."""
        self.poll.unregister(fd)
        self._close(self.clients.pop(fd))

    def _close(self, c: _Client) -> None:
        self.open_fds.discard(c.conn.sock.fileno())
        try:
            c.conn.sock.close()
        except OSError:
            pass

    def _rescue(self) -> None:
        """A signal hit between accept() and storing its fd: adopt the lost connection.

        Every other connection of this worker is open too: only fds nobody holds count.
        """
        for sock, addr, l in find_lost_connections(self.listeners):
            if sock.fileno() in self.open_fds:
                sock.detach()
                continue
            c = self._open_client(sock, addr, l)
            if c is not None:
                self._wait_for_request(c)

    def drain(self) -> None:
        """TERM: stop accepting; serve the queued connections and the requests on their way."""
        self._listen(False)
        deadline = self.drain_deadline()
        queued = 0
        for got in self.queued_connections(deadline):
            c = self._open_client(*got)
            if c is not None:
                self._hand_over(c)
                queued += 1
        if queued:
            self.log.debug(f"draining {queued} queued connection(s)")
        for fd, c in list(self.clients.items()):
            if _readable_now(fd):
                self._dispatch(fd)
            elif c.conn.response_started:
                # Idle between requests: close it (RFC 9112 9.3.1 lets the client retry).
                self._drop(fd)
            # else a new connection whose first request is on its way: wait for it below
        while (self.busy or self.clients) and monotonic() < deadline:
            self.sb.beat()
            try:
                self.in_wait = True
                try:
                    events = self.poll.poll(min(self._expire(), max(deadline - monotonic(), 0.001)))
                finally:
                    self.in_wait = False
            except Wakeup:
                events = []
            for fd, _ in events:
                if fd == self.wake_r:
                    self._drain_pipe()
                else:
                    self._dispatch(fd)
            self._take_back()
        for _ in self.pool:
            self.tasks.put(None)

    # ------------------------------------------------------------ pool threads
    def _thread(self) -> None:
        self.local.errors = ErrorsStream(self.log)
        while True:
            c = self.tasks.get()
            if c is None:
                return
            kept = None
            try:
                kept = self._serve_client(c)
            except Exception:
                self.log.exception("unexpected error while handling a connection")
            if kept is None:
                self._close(c)
            self.returned.append(kept)
            if kept is None and self.listening:
                continue  # the main thread counts it at its next event; nothing waits on it
            try:
                os.write(self.wake_w, b"\0")
            except BlockingIOError:
                pass  # the pipe is full: the main thread will wake anyway

    def _serve_client(self, c: _Client) -> Optional[_Client]:
        """Serve the requests that are here; the client back if it is to be kept, else None."""
        conn = c.conn
        while True:
            try:
                head = conn.read_head()
                if head is None:
                    return None
                req = parse_request(head, conn, c.base, self.root_path, c.trusted)
            except HTTPError as e:
                self._reject(conn, e)
                return None
            except (HeadTimeout, IncompleteHead) as e:
                self.log.debug(f"closing connection: {e}")
                return None
            except OSError as e:
                self.log.debug(f"connection error: {e}")
                return None
            try:
                keep = self.serve(conn, req)
            except OSError as e:
                self.log.debug(f"connection error: {e}")
                return None
            if not keep or not self.alive:
                return None
            if not conn.buf:
                return c
            # pipelined: the next request is already buffered; answer it here, in order

    def serve(self, conn: Connection, req: Request) -> bool:
        # A pool thread's own stream; the main thread serves only connections rescued at exit.
        errors = getattr(self.local, "errors", self.errors)
        req.environ["wsgi.errors"] = errors
        try:
            return super().serve(conn, req)
        finally:
            errors.flush()
