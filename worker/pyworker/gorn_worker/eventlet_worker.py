"""``-k eventlet``: the async core (:mod:`.green`) on eventlet's hub.

The only module besides :mod:`.gevent_worker` that imports an async library or
monkey-patches. :func:`patch` runs in ``main`` before the config file and the app are
imported (as gunicorn's eventlet worker did); the runtime's own threads use the original
thread primitive (:func:`.threads.start_native`).

Eventlet is deprecated upstream and gunicorn 26 removed its worker; it is kept here for
the apps that still depend on it (Flask-SocketIO with ``async_mode="eventlet"``). What
eventlet's own server gives an app and gorn gives it too: ``eventlet.input`` with
``get_socket()`` (eventlet.websocket, python-engineio) and the "already handled" protocol
(``eventlet.wsgi.WSGI_LOCAL.already_handled``, or the older ``ALREADY_HANDLED`` result):
the app answered on the socket itself, so nothing more is sent and the connection closes.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from importlib import import_module
from typing import Any, Callable, Optional

from .core import Listener
from .green import GreenLib, MissingLibrary, Semaphore

PACKAGE = "eventlet"


class Input:
    """``environ["eventlet.input"]``: what eventlet's server puts there, as far as apps use
    it (the connection's socket)."""

    __slots__ = ("_sock",)

    def __init__(self, sock: Any) -> None:
        self._sock = sock

    def get_socket(self) -> Any:
        return self._sock


class EventletLib:
    """eventlet as the async core uses it."""

    name = "eventlet"

    def __init__(self, eventlet: Any) -> None:
        wsgi = import_module("eventlet.wsgi")
        self._eventlet = eventlet
        self._greenio = import_module("eventlet.greenio")
        self._semaphore = import_module("eventlet.semaphore")
        self._local: Optional[Any] = getattr(wsgi, "WSGI_LOCAL", None)
        self._handled: Optional[Any] = getattr(wsgi, "ALREADY_HANDLED", None)

    def spawn(self, fn: Callable[..., Any], *args: Any) -> Any:
        return self._eventlet.spawn(fn, *args)

    def kill(self, g: Any) -> None:
        g.kill()

    def current(self) -> Any:
        return self._eventlet.getcurrent()

    def sleep(self, seconds: float) -> None:
        self._eventlet.sleep(seconds)

    def semaphore(self, n: int) -> Semaphore:
        return self._semaphore.Semaphore(n)  # type: ignore[no-any-return]

    def listener(self, l: Listener) -> Any:
        # GreenSocket sets O_NONBLOCK on the shared open file description (see the green
        # module's docstring); blocking mode at the Python level makes accept() cooperative.
        g = self._greenio.GreenSocket(l.sock.dup())
        g.setblocking(True)
        return g

    def wrap_app(self, app: Callable[..., Any]) -> Callable[..., Any]:
        local = self._local
        if local is None:
            return app

        def call(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
            local.already_handled = False  # per greenthread, as eventlet.wsgi resets it
            return app(environ, start_response)

        return call

    def already_handled(self, result: Any) -> bool:
        if self._local is not None and getattr(self._local, "already_handled", False):
            return True
        return self._handled is not None and result is self._handled

    def connection_environ(self, sock: Any) -> dict[str, Any]:
        return {"eventlet.input": Input(sock)}


def patch() -> GreenLib:
    """Import eventlet and monkey-patch the standard library; MissingLibrary if absent."""
    try:
        with warnings.catch_warnings():
            # Its import prints a multi-line deprecation notice; main logs one line instead.
            warnings.simplefilter("ignore")
            eventlet = import_module("eventlet")
    except ImportError as e:
        raise MissingLibrary("eventlet", PACKAGE, e) from None
    # Before the app is imported the only RLocks it cannot green are the runtime's and the
    # standard library's (functools.cached_property's): its "N RLock(s) were not greened"
    # line would be noise in the error log.
    with contextlib.redirect_stderr(io.StringIO()):
        eventlet.monkey_patch()
    return EventletLib(eventlet)
