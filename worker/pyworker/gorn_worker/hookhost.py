"""The hook host: runs a config file's master-side server hooks in the app's interpreter.

gunicorn runs ``on_starting``, ``on_reload``, ``when_ready``, ``pre_fork``, ``pre_exec``,
``child_exit``, ``nworkers_changed`` and ``on_exit`` in its Python master. gorn's master is
Go, so it starts this long-lived process (``GORN_HOOKHOST`` names the socket) and tells it,
one JSON line per event, what the arbiter would have seen::

    {"id": 3, "call": "pre_fork", "worker": {"age": 3, "slot": 0, "generation": 1}}
    {"id": 4, "call": "spawned", "worker": {"age": 3, "pid": 1234, ...}}
    {"id": 5, "call": "child_exit", "worker": {"age": 3, "pid": 1234, ...}}
    {"id": 6, "call": "nworkers_changed", "new": 3, "old": 2}      (old null at start)
    {"id": 7, "call": "on_reload", "settings": {...}}              (the file is re-read first)
    {"id": 8, "call": "state", "num_workers": 2, "workers": [...]} (after a host restart)

and each is answered ``{"id": N}`` or ``{"id": N, "error": "one line"}`` once the hook
returned. Hooks run one at a time on the main thread, in the order the master sent them; a
hook may start threads (an exporter serving metrics from ``when_ready``). A hook that raises
is logged with its traceback and the host carries on. EOF on the socket (the master is
gone) ends the host.
"""

from __future__ import annotations

import json
import os
import socket
import sys
from typing import Any, Callable, Optional

from . import app as _app
from . import conffile as _conffile
from . import config as _config
from . import logconfig as _logconfig
from . import logs as _logs

ENV_VAR = "GORN_HOOKHOST"

MASTER_HOOKS = (
    "on_starting",
    "on_reload",
    "when_ready",
    "pre_fork",
    "pre_exec",
    "child_exit",
    "nworkers_changed",
    "on_exit",
)


# Settings that describe this process, not the configuration: a reload keeps them.
_PER_PROCESS = ("listen_fds", "scoreboard_fd", "lifeline_fd", "slot", "generation", "age", "workers", "check")


class Listener:
    """One of ``server.LISTENERS``: gunicorn's socket wrapper (``str()`` is the address as
    gunicorn logs it; other attributes are the socket's)."""

    def __init__(self, fd: int) -> None:
        self.sock = socket.socket(fileno=os.dup(fd))

    def __str__(self) -> str:
        if self.sock.family == socket.AF_UNIX:
            return f"unix:{self.sock.getsockname()}"
        host, port = self.sock.getsockname()[:2]
        if self.sock.family == socket.AF_INET6:
            host = f"[{host}]"
        return f"http://{host}:{port}"

    def __getattr__(self, name: str) -> Any:
        return getattr(self.sock, name)


class HostWorker:
    """A hook's ``worker``: the attributes of gunicorn's Worker object as the master knows
    them. ``pid`` is ``"[booting]"`` in ``pre_fork``, as in gunicorn; ``age`` counts spawns
    (the first worker is 1); ``slot`` and ``generation`` are gorn's."""

    def __init__(self, server: "Server", info: dict[str, Any]) -> None:
        self.age: int = int(info.get("age", 0))
        self.pid: Any = info.get("pid") or "[booting]"
        self.ppid = server.pid
        self.slot: int = int(info.get("slot", 0))
        self.generation: int = int(info.get("generation", 0))
        self.sockets = server.LISTENERS
        self.app: Any = None
        self.timeout = server.timeout / 2.0
        self.cfg = server.cfg
        self.log = server.log
        self.booted = False
        self.aborted = False
        self.alive = True
        self.nr = 0
        self.max_requests = int(info.get("max_requests") or sys.maxsize)
        self.exit_status: Optional[int] = None  # gorn's: the wait status once reaped

    def __str__(self) -> str:
        return f"<Worker {self.pid}>"

    __repr__ = __str__


class Server:
    """A hook's ``server``: the arbiter attributes hooks read."""

    def __init__(self, settings: _config.Settings, log: _conffile.HookLog, listeners: list[Listener]) -> None:
        self.pid = os.getppid()
        self.master_pid = 0
        self.reexec_pid = 0
        self.master_name = "Master"
        self.log = log
        self.LISTENERS = listeners
        self.WORKERS: dict[int, HostWorker] = {}
        self.worker_age = 0
        self._num_workers: Optional[int] = None
        self.app: Any = None
        self.configure(settings)

    def configure(self, settings: _config.Settings) -> None:
        self.cfg = settings
        self.timeout = settings.timeout
        self.proc_name = settings.proc_name
        self.address = [str(lnr) for lnr in self.LISTENERS]

    @property
    def num_workers(self) -> Optional[int]:
        return self._num_workers


class Host:
    """The hooks of one config file and the arbiter-like state they see."""

    def __init__(self, settings: _config.Settings, log: _logs.Logger) -> None:
        self.log = log
        self.source = settings.config_file
        self.fns: dict[str, Callable[..., Any]] = {}
        listeners = [Listener(fd) for fd in settings.listen_fds]
        self.server = Server(settings, _conffile.HookLog(log), listeners)
        self.booting: dict[int, HostWorker] = {}  # by age, between pre_fork and spawned
        self.load()

    def load(self, settings: Optional[_config.Settings] = None) -> None:
        """(Re-)evaluate the config file, as gunicorn's reload does; ``settings`` are the
        ones being loaded (default: the server's)."""
        if not self.source:
            self.fns = {}
            return
        out, sys.stdout = sys.stdout, sys.stderr  # the file's prints go to the log
        try:
            mod = _conffile.load(self.source)
        finally:
            sys.stdout = out
        self.fns = {n: f for n in MASTER_HOOKS if callable(f := getattr(mod, n, None))}
        # gunicorn configures logging in its master too (again on reload): the hooks'
        # logging.getLogger(...) calls reach the file's handlers.
        config_dict = getattr(mod, "logconfig_dict", None)
        cfg = settings or self.server.cfg
        try:
            _logconfig.configure(config_dict if isinstance(config_dict, dict) else None, cfg.logconfig_json, cfg.logconfig)
        except _logconfig.LogConfigError as e:
            self.log.error(f"hook host: {e}")

    def call(self, name: str, *args: Any) -> Optional[str]:
        """Run one hook if the file defines it; what it raised, as one line, or None."""
        fn = self.fns.get(name)
        if fn is None:
            return None
        try:
            fn(*args)
        except BaseException as exc:  # noqa: B036  the hook is arbitrary code; the host serves on
            self.log.error(f"{name} hook failed", exc_info=True)
            return f"{type(exc).__name__}: {exc}"
        return None

    def worker(self, info: dict[str, Any]) -> HostWorker:
        """The worker object the master's message names: the one pre_fork saw, if any."""
        pid = info.get("pid")
        if pid and pid in self.server.WORKERS:
            return self.server.WORKERS[pid]
        w = self.booting.pop(int(info.get("age", 0)), None)
        if w is None:
            w = HostWorker(self.server, info)
        if pid:
            w.pid = pid
        return w

    def handle(self, msg: dict[str, Any]) -> Optional[str]:
        """Apply one message; the hook's error, if it raised."""
        call = msg.get("call")
        server = self.server
        if call == "pre_fork":
            w = HostWorker(server, msg["worker"])
            server.worker_age = max(server.worker_age, w.age)
            self.booting[w.age] = w
            return self.call("pre_fork", server, w)
        if call == "spawned":
            w = self.worker(msg["worker"])
            if isinstance(w.pid, int):
                server.WORKERS[w.pid] = w
            return None
        if call == "child_exit":
            w = self.worker(msg["worker"])
            server.WORKERS.pop(w.pid, None)
            w.alive = False
            w.exit_status = msg["worker"].get("status")
            return self.call("child_exit", server, w)
        if call == "nworkers_changed":
            server._num_workers = msg["new"]
            return self.call("nworkers_changed", server, msg["new"], msg.get("old"))
        if call == "on_reload":
            current = json.loads(server.cfg.to_json())
            fresh = {k: v for k, v in msg["settings"].items() if k not in _PER_PROCESS}
            settings, _ = _config.Settings.from_mapping({**current, **fresh})
            self.source = settings.config_file
            try:
                self.load(settings)
            except BaseException as exc:  # noqa: B036  the old hooks stay
                self.log.error(f"re-reading the config file for its hooks: {_conffile.describe_error(exc, self.source or '')}")
            server.configure(settings)
            return self.call("on_reload", server)
        if call == "state":
            server._num_workers = msg.get("num_workers")
            server.WORKERS = {}
            for info in msg.get("workers") or []:
                w = HostWorker(server, info)
                server.WORKERS[w.pid] = w
                server.worker_age = max(server.worker_age, w.age)
            return None
        if call in ("on_starting", "when_ready", "pre_exec", "on_exit"):
            return self.call(call, server)
        return f"unknown call {call!r}"


def serve(host: Host, sock: socket.socket) -> None:
    """Answer the master's messages until it closes the socket."""
    rfile = sock.makefile("rb")
    for line in rfile:
        try:
            msg = json.loads(line)
        except ValueError:
            host.log.error(f"hook host: unreadable message {line[:200]!r}")
            continue
        try:
            err = host.handle(msg)
        except Exception as exc:  # a message this host cannot apply: say so, serve on
            host.log.error(f"hook host: cannot apply {msg.get('call')!r}", exc_info=True)
            err = f"{type(exc).__name__}: {exc}"
        ident = msg.get("id")
        if ident:
            reply: dict[str, Any] = {"id": ident}
            if err is not None:
                reply["error"] = err
            try:
                sock.sendall(json.dumps(reply).encode() + b"\n")
            except OSError:
                return


def main() -> int:
    try:
        settings, _ = _config.Settings.from_environ()
        fd = int(os.environ.pop(ENV_VAR))
    except (_config.ConfigError, ValueError, KeyError) as e:
        _logs.emergency(f"hook host: invalid settings: {e}")
        return 3
    os.environ.pop(_config.ENV_VAR, None)
    log = _logs.Logger(
        settings.log_level,
        settings.log_format,
        settings.slot,
        settings.generation,
        fd=2,
        path=None if settings.error_log == "-" else settings.error_log,
        name="hooks",
    )
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.reconfigure(line_buffering=True)  # type: ignore[union-attr]
        except (AttributeError, ValueError, OSError):
            pass
    sock = socket.socket(fileno=fd)
    _app.setup_path(os.getcwd(), settings.pythonpath)
    try:
        host = Host(settings, log)
    except BaseException as exc:  # noqa: B036  the file is arbitrary code
        log.error(f"hook host: config file {settings.config_file}: {_conffile.describe_error(exc, settings.config_file or '')}")
        return 3
    log.debug(f"hook host serving (pid {os.getpid()}, hooks {sorted(host.fns)})")
    serve(host, sock)
    return 0
