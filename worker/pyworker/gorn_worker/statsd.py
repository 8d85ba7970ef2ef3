"""gunicorn's StatsD metrics, sent by the worker that served the request.

Names, types and values are gunicorn's (``gunicorn/instrument/statsd.py``): per request
``gunicorn.request.duration`` (``|ms``, milliseconds), ``gunicorn.requests`` and
``gunicorn.request.status.N`` (``|c|@1.0``); per warning or error logged
``gunicorn.log.warning``, ``.error``, ``.exception`` (an error with a traceback) and
``.critical``. The master sends ``gunicorn.workers`` (``|g``) and its own log counters.

gunicorn sends three datagrams per request from the request path. Here a request only
appends one preformatted string to a queue; the lines go out newline-separated, several
per datagram (the multi-metric packet StatsD, DogStatsD and Telegraf read), once the queue
holds about a datagram's worth or at the latest after :data:`FLUSH_INTERVAL` (a native
thread). Sending never blocks: the socket is non-blocking and a datagram the kernel will
not take, or that no server receives, is dropped, as over UDP anyway. The socket is the C
``_socket`` type, untouched by gevent/eventlet monkey-patching.
"""

from __future__ import annotations

import _socket
import collections
from typing import Any, Optional

from . import threads as _threads

FLUSH_INTERVAL = 1.0  # seconds a line may wait in the queue
DATAGRAM = 1400  # bytes of lines that make a flush from the request path (one Ethernet MTU)


class StatsdError(Exception):
    pass


def connect(address: str) -> "_socket.socket":
    """A non-blocking datagram socket connected to ``HOST:PORT`` or ``unix://PATH``."""
    if address.startswith("unix://"):
        sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_DGRAM)
        target: Any = address[len("unix://") :]
    else:
        host, _, port = address.rpartition(":")
        host = host.strip("[]")
        try:
            info = _socket.getaddrinfo(host, int(port), 0, _socket.SOCK_DGRAM)
        except (OSError, ValueError) as e:
            raise StatsdError(f"resolving statsd host {address!r}: {e}") from e
        family, _, _, _, target = info[0]
        sock = _socket.socket(family, _socket.SOCK_DGRAM)
    try:
        sock.setblocking(False)
        sock.connect(target)
    except OSError as e:
        sock.close()
        raise StatsdError(f"connecting to statsd at {address!r}: {e}") from e
    return sock


class Statsd:
    """The worker's StatsD client; thread-safe (gthread's pool, the flush thread)."""

    def __init__(self, sock: "_socket.socket", prefix: str = "", tags: str = "") -> None:
        self.sock = sock
        self.tail = f"|#{tags}" if tags else ""
        p = prefix
        t = self.tail
        # Preformatted pieces of the per-request lines.
        self._duration = f"{p}gunicorn.request.duration:"
        self._rest = f"|ms{t}\n{p}gunicorn.requests:1|c|@1.0{t}\n{p}gunicorn.request.status."
        self._end = f":1|c|@1.0{t}"
        self._log = f"{p}gunicorn.log."
        self.pending: collections.deque[str] = collections.deque()  # append/popleft are atomic
        self.size = 0  # approximate: bytes queued since the last flush

    @classmethod
    def start(cls, address: str, prefix: str, tags: str) -> "Statsd":
        """Connect and start the flush thread. Raises :class:`StatsdError`."""
        s = cls(connect(address), prefix, tags)
        _threads.start_native(s._flush_forever, "gorn-statsd")
        return s

    def request(self, status: int, duration_ns: int) -> None:
        """One answered request (gunicorn's ``Statsd.access``)."""
        # Milliseconds to the microsecond, as gunicorn's timedelta arithmetic gives.
        line = f"{self._duration}{duration_ns // 1000 / 1000}{self._rest}{status}{self._end}"
        self.pending.append(line)
        self.size += len(line)
        if self.size >= DATAGRAM:
            self.flush()

    def log(self, kind: str) -> None:
        """One warning/error/exception/critical record logged."""
        self.pending.append(f"{self._log}{kind}:1|c|@1.0{self.tail}")

    def flush(self) -> None:
        """Send every queued line, packed into datagrams of up to :data:`DATAGRAM` bytes."""
        self.size = 0
        batch: list[str] = []
        n = 0
        pop = self.pending.popleft
        while True:
            try:
                line = pop()
            except IndexError:
                break
            if batch and n + len(line) >= DATAGRAM:
                self._send(batch)
                batch, n = [], 0
            batch.append(line)
            n += len(line) + 1
        if batch:
            self._send(batch)

    def _send(self, lines: list[str]) -> None:
        try:
            self.sock.send("\n".join(lines).encode("ascii", "replace"))
        except OSError:
            pass  # no server, a full buffer: StatsD is lossy by design

    def _flush_forever(self) -> None:
        while True:
            _threads.sleep(FLUSH_INTERVAL)
            self.flush()


def from_settings(address: str, prefix: str, tags: str) -> Optional[Statsd]:
    """The client the settings ask for, or None when ``statsd_host`` is empty."""
    if not address:
        return None
    return Statsd.start(address, prefix, tags)
