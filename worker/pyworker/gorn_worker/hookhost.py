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
    {"id": 9, "call": "ping"}                                      (answered once up)

and each is answered ``{"id": N}`` or ``{"id": N, "error": "one line"}`` once the hook
returned.

With ``--preload`` the host is the mold: before anything else it imports the app with the
collector off, then runs ``gc.freeze()`` and turns it back on (objects that exist at fork are
never scanned again, so the collector does not dirty the pages the workers share; and with no
collection during the import, no freed holes are left in those pages for a worker's first
allocations to fill, which would copy them: the recipe of the gc module's documentation). ``{"call": "fork", "worker":
{...}, "fd": true}`` arrives with the worker's stack-dump pipe as SCM_RIGHTS; the mold runs
``pre_fork``, forks twice (the middle process exits at once, so the worker is re-parented to
the master, its subreaper) and answers ``{"id": N, "pid": PID}``; the worker waits until
that answer is sent (a byte on a pipe; EOF if the mold died first: it exits). The worker closes the
mold's socket and runs the worker's start-up (``main.run``) with the preloaded app and the
config file as the mold executed it (not read again, as gunicorn's workers inherit it). Hooks run one at a time on the main thread, in the order the master sent them; a
hook may start threads (an exporter serving metrics from ``when_ready``). A hook that raises
is logged with its traceback and the host carries on. EOF on the socket (the master is
gone) ends the host.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import os
import socket
import sys
import threading
import types
from collections import deque
from typing import Any, Callable, Iterator, Optional

from . import app as _app
from . import conffile as _conffile
from . import config as _config
from . import logconfig as _logconfig
from . import logs as _logs
from . import main as _main

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


class Forked(BaseException):
    """Raised in a forked worker to leave the mold's stack: :func:`main` catches it and runs
    the worker (BaseException: nothing on the way may swallow it)."""

    def __init__(self, settings: _config.Settings, middle: int, go: int) -> None:
        super().__init__()
        self.settings = settings
        self.middle = middle  # the parent it leaves (pid), for the master to become it
        self.go = go  # read end of the go-ahead pipe: a byte once the master has its pid


def set_title(title: str) -> None:
    """Rewrite this process's command line (``ps``) in place: the kernel's argument area,
    found in /proc/self/stat, padded with NULs. Best effort."""
    try:
        with open("/proc/self/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        start, end = int(fields[45]), int(fields[46])  # arg_start, arg_end (fields 48, 49)
        data = title.encode()[: end - start - 1]
        with open("/proc/self/mem", "r+b", buffering=0) as mem:
            mem.seek(start)
            mem.write(data + b"\0" * (end - start - len(data)))
    except (OSError, ValueError, IndexError):
        pass


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
        self.mold_pid = os.getpid()
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
        self.module: Optional[types.ModuleType] = None  # the config file, executed
        listeners = [Listener(fd) for fd in settings.listen_fds]
        self.server = Server(settings, _conffile.HookLog(log), listeners)
        self.booting: dict[int, HostWorker] = {}  # by age, between pre_fork and spawned
        self.settings = settings
        self.app: Optional[Callable[..., Any]] = None
        self.fds: deque[int] = deque()  # received with "fork" calls, in order
        self.warned_threads: set[str] = set()
        self.go_ahead: list[int] = []  # write ends: forked workers waiting for the answer to go out
        if settings.preload:
            gc.disable()
        try:
            self.load()
            if settings.preload:
                self.app = _app.load(settings.app)  # AppLoadError: main exits 4
                self.server.app = self.app
                warm(settings)
                gc.freeze()
        finally:
            gc.enable()

    def load(self, settings: Optional[_config.Settings] = None) -> None:
        """(Re-)evaluate the config file, as gunicorn's reload does; ``settings`` are the
        ones being loaded (default: the server's)."""
        if not self.source:
            self.fns = {}
            self.module = None
            return
        out, sys.stdout = sys.stdout, sys.stderr  # the file's prints go to the log
        try:
            mod = _conffile.load(self.source)
        finally:
            sys.stdout = out
        self.module = mod
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

    def handle(self, msg: dict[str, Any]) -> Any:
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
        if call == "on_reload" and "settings" not in msg:  # a new mold: the file is fresh
            return self.call("on_reload", server)
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
        if call == "ping":  # a new mold is up: the app imported
            return None
        if call == "fork":
            return self.fork(msg)
        if call in ("on_starting", "when_ready", "pre_exec", "on_exit"):
            return self.call(call, server)
        return f"unknown call {call!r}"


    def fork(self, msg: dict[str, Any]) -> dict[str, Any]:
        """Fork a worker from the mold: pre_fork, then a double fork; the worker's pid."""
        fault_fd = self.fds.popleft() if msg.get("fd") else -1
        try:
            if self.app is None:
                return {"error": "fork: this hook host is not a mold (no --preload)"}
            info = msg["worker"]
            server = self.server
            w = HostWorker(server, info)
            server.worker_age = max(server.worker_age, w.age)
            self.booting[w.age] = w
            err = self.call("pre_fork", server, w)
            if err is not None:
                self.log.warning(f"forking worker age {w.age} anyway after its pre_fork hook raised {err}")
            self.warn_threads()
            settings = dataclasses.replace(  # the mold's validated settings, this worker's own fields
                self.settings,
                slot=int(info["slot"]),
                generation=int(info["generation"]),
                age=w.age,
                workers=max(1, int(msg.get("workers") or 1)),
                faulthandler_fd=fault_fd,
                preload=False,
            )
            return {"pid": self.double_fork(settings)}
        finally:
            if fault_fd >= 0 and os.getpid() == self.server.mold_pid:  # not in the worker
                os.close(fault_fd)

    def warn_threads(self) -> None:
        """Threads do not survive fork: name the ones alive in the mold, once per set."""
        names = {t.name for t in threading.enumerate() if t is not threading.current_thread()}
        if names and not names <= self.warned_threads:
            self.warned_threads |= names
            self.log.warning(
                f"threads alive in the mold at fork do not exist in the workers: {', '.join(sorted(names))} "
                "(start them in post_fork or post_worker_init, or in when_ready to run them in the mold only)"
            )

    def double_fork(self, settings: _config.Settings) -> int:
        """Fork the worker through a middle process; its pid. The worker waits on a
        go-ahead pipe until :meth:`release` (after the answer naming it went to the
        master): if the mold dies before that, the master never learns the pid, and the
        worker, seeing EOF, exits instead of serving unsupervised."""
        go_r, go_w = os.pipe()
        r, w = os.pipe()
        middle = os.fork()
        if middle == 0:  # the middle process: fork the worker, report its pid, exit
            code = 0
            try:
                os.close(r)
                os.close(go_w)
                middle_pid = os.getpid()
                pid = os.fork()
                if pid == 0:
                    os.close(w)
                    raise Forked(settings, middle_pid, go_r)
                os.write(w, str(pid).encode())
            except Forked:
                raise
            except BaseException:  # noqa: B036  never return into the mold's loop
                code = 1
            os._exit(code)
        os.close(w)
        os.close(go_r)
        # The answer waits for the middle process to be reaped: only then is the worker the
        # master's child, which the master checks when it takes the pid.
        try:
            data = b""
            while chunk := os.read(r, 32):
                data += chunk
        finally:
            os.close(r)
            os.waitpid(middle, 0)
        if not data:
            os.close(go_w)
            raise OSError("the worker could not be forked")
        self.go_ahead.append(go_w)
        return int(data)

    def release(self) -> None:
        """Let the forked workers serve: the answers naming them have been sent."""
        for fd in self.go_ahead:
            try:
                os.write(fd, b"g")
            except OSError:
                pass
            os.close(fd)
        self.go_ahead.clear()


def warm(settings: _config.Settings) -> None:
    """Import in the mold what a worker imports at start, so a forked worker finds it
    loaded (and shares it) instead of importing it after the fork."""
    from . import native

    _main.libc()  # set_process_name and enlarge_sigaltstack find it built

    if os.environ.get(native.ENV_VAR, "") != "0":
        native.load()  # cached: the workers' native.select() finds it loaded

    if settings.worker_class == "gthread":
        from . import gthread  # noqa: F401
    if settings.reload:
        from . import watch  # noqa: F401


def messages(host: Host, sock: socket.socket) -> Iterator[bytes]:
    """The master's lines; file descriptors sent with them queue in ``host.fds``."""
    buf = b""
    while True:
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            yield line
        try:
            data, fds, _, _ = socket.recv_fds(sock, 65536, 16)
        except InterruptedError:
            continue
        except OSError:
            return
        host.fds.extend(fds)
        if not data:
            return
        buf += data


def serve(host: Host, sock: socket.socket) -> None:
    """Answer the master's messages until it closes the socket."""
    for line in messages(host, sock):
        try:
            msg = json.loads(line)
        except ValueError:
            host.log.error(f"hook host: unreadable message {line[:200]!r}")
            continue
        result: Any
        try:
            result = host.handle(msg)
        except Exception as exc:  # a message this host cannot apply: say so, serve on
            host.log.error(f"hook host: cannot apply {msg.get('call')!r}", exc_info=True)
            result = f"{type(exc).__name__}: {exc}"
        ident = msg.get("id")
        if ident:
            reply: dict[str, Any] = {"id": ident}
            if isinstance(result, dict):
                reply.update(result)
            elif result is not None:
                reply["error"] = result
            try:
                sock.sendall(json.dumps(reply).encode() + b"\n")
            except OSError:
                return
        host.release()


def main() -> int:
    try:
        settings, _ = _config.Settings.from_environ()
        fd = int(os.environ.pop(ENV_VAR))
    except (_config.ConfigError, ValueError, KeyError) as e:
        _logs.emergency(f"hook host: invalid settings: {e}")
        return 3
    os.environ.pop(_config.ENV_VAR, None)
    log = _logs.Logger.for_settings(settings, name="hooks")
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.reconfigure(line_buffering=True)  # type: ignore[union-attr]
        except (AttributeError, ValueError, OSError):
            pass
    sock = socket.socket(fileno=fd)
    _app.setup_path(os.getcwd(), settings.pythonpath)
    try:
        host = Host(settings, log)
    except _app.AppLoadError as e:
        log.error(f"mold: {e}")
        if e.detail:
            log.debug(e.detail.rstrip("\n"))
        return 4
    except BaseException as exc:  # noqa: B036  the file is arbitrary code
        log.error(f"hook host: config file {settings.config_file}: {_conffile.describe_error(exc, settings.config_file or '')}")
        return 3
    log.debug(f"hook host serving (pid {os.getpid()}, hooks {sorted(host.fns)}, preload {settings.preload})")
    try:
        serve(host, sock)
    except Forked as forked:  # this is a new worker now, the mold's stack left behind
        sock.close()
        for fd in host.go_ahead:  # other workers' go-aheads: the mold's, not this one's
            os.close(fd)
        if not _await_go_ahead(forked.go):
            os._exit(0)  # the mold died before the master learned this pid: nobody would supervise it
        os.setpgid(0, 0)
        _await_reparenting(forked.middle)
        set_title(f"gorn: worker [{forked.settings.proc_name}] slot={forked.settings.slot}")
        return _main.run(forked.settings, [], preloaded=host.app, config_module=host.module)
    return 0


def _await_go_ahead(fd: int) -> bool:
    """Block until the mold has sent the master this worker's pid (a byte), or died
    before (EOF): whether to serve."""
    try:
        while True:
            try:
                return os.read(fd, 1) == b"g"
            except InterruptedError:
                continue
            except OSError:
                return False
    finally:
        os.close(fd)


def _await_reparenting(middle: int, limit: float = 1.0) -> None:
    """Wait (briefly: the middle process exits at once) until the master, the subreaper,
    is this worker's parent, so os.getppid() and the hooks' worker.ppid are its pid."""
    import time

    deadline = time.monotonic() + limit
    while os.getppid() == middle and time.monotonic() < deadline:
        time.sleep(0.0002)
