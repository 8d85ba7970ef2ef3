"""``-k gevent``: the async core (:mod:`.green`) on gevent's hub.

The only module besides :mod:`.eventlet_worker` that imports an async library or
monkey-patches. :func:`patch` runs in ``main`` before the config file and the app are
imported (gunicorn patches at worker init too); the runtime's own threads were started, or
will be started, with the original thread primitive (:func:`.threads.start_native`).
"""

from __future__ import annotations

import os
import socket
from importlib import import_module
from typing import Any, Callable

from .core import Listener
from .green import GreenLib, MissingLibrary, Semaphore

PACKAGE = "gevent"


class GeventLib:
    """gevent as the async core uses it."""

    name = "gevent"

    def __init__(self, gevent: Any) -> None:
        self._gevent = gevent
        self._socket = import_module("gevent.socket")
        self._lock = import_module("gevent.lock")

    def spawn(self, fn: Callable[..., Any], *args: Any) -> Any:
        return self._gevent.spawn(fn, *args)

    def kill(self, g: Any) -> None:
        g.kill(block=False)

    def current(self) -> Any:
        return self._gevent.getcurrent()

    def sleep(self, seconds: float) -> None:
        self._gevent.sleep(seconds)

    def semaphore(self, n: int) -> Semaphore:
        return self._lock.Semaphore(n)  # type: ignore[no-any-return]

    def listener(self, l: Listener) -> Any:
        # A dup shares the open file description: gevent's O_NONBLOCK is every sibling's
        # (see the green module's docstring for why that is what we want).
        return self._socket.socket(l.family, socket.SOCK_STREAM, l.proto, fileno=os.dup(l.fd))

    def wrap_app(self, app: Callable[..., Any]) -> Callable[..., Any]:
        return app

    def already_handled(self, result: Any) -> bool:
        return False  # gevent has no such protocol; gunicorn's StopIteration one still holds

    def connection_environ(self, sock: Any) -> dict[str, Any]:
        return {}


def patch() -> GreenLib:
    """Import gevent and monkey-patch the standard library; MissingLibrary if absent."""
    try:
        gevent = import_module("gevent")
        monkey = import_module("gevent.monkey")
    except ImportError as e:
        raise MissingLibrary("gevent", PACKAGE, e) from None
    monkey.patch_all()
    return GeventLib(gevent)
