"""One request, start to finish: environ, app call, response, access log, scoreboard.

:class:`RequestHandler` is the per-request logic every worker class uses by composition:
the connection core (:mod:`.core`) finds complete request heads and parses them, an
executor (inline for ``sync``, a thread pool for ``gthread``) calls :meth:`serve`, and the
core decides what happens to the connection next. Nothing here waits for a client between
requests; the only blocking reads are of a request's body, bounded by the body-rate rule
(:class:`.http.Connection`).
"""

from __future__ import annotations

import ipaddress
import socket
from time import monotonic_ns
from typing import Any, Callable, Optional

from .accesslog import AccessLog
from .config import Settings, parse_networks
from .http import DRAIN_LIMIT, SECURE_SCHEME_HEADERS, BodyError, Connection, HTTPError, Limits, Proxy, Request
from .logs import ErrorsStream, Logger
from .scoreboard import Scoreboard
from .statsd import Statsd
from .wsgi import ClientGone, Response, base_environ, connection_environ, error_response


class RequestHandler:
    """Serves requests for one worker: shared by its executor threads (read-only state)."""

    def __init__(
        self,
        app: Callable[..., Any],
        settings: Settings,
        log: Logger,
        scoreboard: Scoreboard,
        access: Optional[AccessLog] = None,
    ) -> None:
        self.app = app
        self.settings = settings
        self.log = log
        self.sb = scoreboard
        self.access = access
        self.request_hooks: Optional[Any] = None  # conffile.RequestHooks when the config file has them
        self.statsd: Optional[Statsd] = None  # --statsd-host
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
        self.proxy = Proxy(SECURE_SCHEME_HEADERS, self._trusted_ip if settings.forwarded_real_ip else None)
        # Asked before each response head: True to say Connection: close (set by the core).
        self.refuse_keepalive: Callable[[], bool] = lambda: False
        # Async classes: given what the app returned, True when the app took the connection
        # (eventlet's "already handled" protocol); a StopIteration from the app then means
        # the same (gunicorn's). None: neither protocol (sync, gthread).
        self.already_handled: Optional[Callable[[Any], bool]] = None

    def set_scheme_headers(self, headers: dict[str, str]) -> None:
        """The config file's ``secure_scheme_headers`` (gunicorn's setting) replace the default."""
        self.proxy = Proxy(headers, self.proxy.real_ip)

    # ------------------------------------------------------------- connections
    def _trusted_ip(self, ip: str) -> bool:
        """Is ``ip`` in --forwarded-allow-ips (a trusted proxy)?"""
        if self.trust_all:
            return True
        if not self.trusted_nets:
            return False
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

    def open_connection(
        self,
        sock: socket.socket,
        addr: Any,
        server_name: str,
        server_port: str,
        tcp: bool,
        nodelay: bool = True,
        first_wait: float = 0.0,
    ) -> tuple[Connection, dict[str, Any], Optional[Proxy]]:
        """A new connection's reader, the environ its requests share, and what its proxy
        headers may set: None unless the peer is trusted (always over a unix socket).
        ``nodelay``: set TCP_NODELAY (unless the listener's is inherited); ``first_wait``:
        see :meth:`Connection.set_timeouts`."""
        conn = Connection(sock, self.limits)
        if tcp and nodelay:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn.set_timeouts(first_wait)
        if not tcp:
            base = connection_environ(
                self.base, server_name=server_name, server_port=server_port, remote_addr="", remote_port=None, sock=sock
            )
            return conn, base, self.proxy
        base = connection_environ(
            self.base,
            server_name=server_name,
            server_port=server_port,
            remote_addr=str(addr[0]),
            remote_port=str(addr[1]),
            sock=sock,
        )
        return conn, base, self.proxy if self._trusted_ip(str(addr[0])) else None

    # --------------------------------------------------------------- requests
    def serve(self, conn: Connection, req: Request, errors: Optional[ErrorsStream] = None) -> bool:
        """Run the app for one request and send its response; True to keep the connection.

        ``errors`` is the calling thread's ``wsgi.errors`` stream (gthread), else the worker's.
        """
        if self.keepalive <= 0:
            req.keepalive = False
        env = req.environ
        if errors is None:
            errors = self.errors
        else:
            env["wsgi.errors"] = errors
        sb = self.sb
        t0 = sb.request_start(req.method, req.path)
        if "HTTP_UPGRADE" in env:
            sb.request_detach()
        conn.response_started = False
        resp = Response(conn, req, self.log, self.server_line, self.refuse_keepalive, sb.request_progress)
        code = 0
        hooks = self.request_hooks
        try:
            try:
                if hooks is not None:
                    hooks.pre(env)
                taken = False
                try:
                    result = self.app(env, resp.start_response)
                except StopIteration:
                    # gunicorn's protocol for "the app took the socket over" (Flask-Sock and
                    # simple-websocket when a WebSocket ends; gunicorn's async workers).
                    result, taken = None, True
                else:
                    if self.already_handled is not None:
                        taken = self.already_handled(result)
                try:
                    if not taken:
                        resp.send_result(result)
                finally:
                    close = getattr(result, "close", None)
                    if close is not None:
                        close()
                if taken:
                    # The app spoke on the socket itself (a WebSocket): nothing more goes out
                    # and the connection is closed. Counted as 101 Switching Protocols.
                    resp.must_close = True
                    code = resp.code if resp.headers_sent else 101
                    self.log.debug(f"{req.method} {env.get('RAW_URI')}: the app took the connection over; closing it")
                else:
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
                    resp.sent = self.send_error(conn, e.status, str(e))
            except Exception:
                resp.must_close = True
                self.log.exception(f"Error handling request {req.method} {env.get('RAW_URI')}")
                if resp.headers_sent:
                    code = resp.code
                else:
                    code = 500
                    resp.sent = self.send_error(conn, 500, "")
        finally:
            errors.flush()
        duration = monotonic_ns() - t0
        if code:
            sb.request_end(req.method, code, duration, resp.sent)
            if self.access is not None:
                self.access.write(env, code, resp.headers if resp.headers_sent else [], resp.sent, duration)
            if self.statsd is not None:
                self.statsd.request(code, duration)
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

    def send_error(self, conn: Connection, status: int, detail: str) -> int:
        """Send a short error response; returns its body size (0 if the client is gone)."""
        data = error_response(status, detail, self.server_line)
        conn.response_started = True
        try:
            conn.sock.sendall(data)
        except OSError:
            return 0
        return len(data) - data.index(b"\r\n\r\n") - 4

    def refuse(self, conn: Connection, e: HTTPError, base: dict[str, Any]) -> None:
        """A request refused before the app: logged as gunicorn does (a warning naming the
        peer), answered, counted. The caller lingers."""
        self.log.warning(f"Invalid request from ip={base.get('REMOTE_ADDR', '')}: {e.status} {e.detail}")
        sent = self.send_error(conn, e.status, e.detail)
        self.sb.request_end("", e.status, 0, sent)
