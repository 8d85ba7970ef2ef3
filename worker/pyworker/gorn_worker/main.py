"""Worker entry point: the fixed set-up order, then serve.

1. settings from ``GORN_WORKER`` (invalid: one log line, exit 3)
2. the error log; faulthandler (SIGABRT from the master dumps every thread's stack)
3. inherited fds: scoreboard, listeners, access log (unusable: exit 3); the request path
   (native or pure Python, logged and in the scoreboard)
4. signal handlers; the lifeline thread (EOF on the pipe: ``os._exit(0)``)
5. sys.path: cwd, then the pythonpath entries, in front
6. scoreboard: pid, generation, state=booting; Python logging from the config file's
   logconfig_dict (or --log-config-json, --log-config); the config file's post_fork hook
7. import the app (failure: one log line with the Python error, exit 4); post_worker_init
8. state=ready, serve; TERM drains and returns 0; worker_exit

``-k gevent``/``-k eventlet`` monkey-patch between 3 and 4 (before any config-file code or
the app is imported, as gunicorn does at worker init); a missing library is one log line
naming the package, exit 3. The runtime's own threads are real OS threads either way
(:func:`.threads.start_native`).
"""

from __future__ import annotations

import faulthandler
import functools
import os
import resource
import signal
import sys
from types import FrameType, ModuleType
from typing import TYPE_CHECKING, Any, Callable, Optional, Protocol

from . import accesslog as _accesslog
from . import app as _app
from . import conffile as _conffile
from . import config as _config
from . import core as _core
from . import http as _http  # noqa: F401  (imported up front: nothing loads lazily later)
from . import logconfig as _logconfig
from . import logs as _logs
from . import native as _native
from . import request as _request
from . import scoreboard as _scoreboard
from . import statsd as _statsd
from . import sync as _sync
from . import threads as _threads
from . import wsgi as _wsgi  # noqa: F401

if TYPE_CHECKING:
    from . import green as _green

# The modules of the other worker classes and of --reload (green, gthread, gevent_worker,
# eventlet_worker, watch) are imported at boot only by the workers that use them: each
# module imported costs start-up time in every worker.

EXIT_OK = 0
EXIT_BOOT = 3
EXIT_APP = 4

_IGNORED = (signal.SIGHUP, signal.SIGTTIN, signal.SIGTTOU, signal.SIGUSR2, signal.SIGWINCH)


@functools.cache
def libc() -> tuple[Any, Any]:
    """ctypes' handle on the C library with the signatures used here, and the stack_t
    structure, built once per process (a --preload mold builds them before forking, so its
    workers share them instead of each allocating its own)."""
    import ctypes

    class StackT(ctypes.Structure):
        _fields_ = [("ss_sp", ctypes.c_void_p), ("ss_flags", ctypes.c_int), ("ss_size", ctypes.c_size_t)]

    lib = ctypes.CDLL(None, use_errno=True)
    lib.malloc.restype = ctypes.c_void_p
    lib.malloc.argtypes = [ctypes.c_size_t]
    lib.sigaltstack.argtypes = [ctypes.POINTER(StackT), ctypes.c_void_p]
    lib.prctl.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    return lib, StackT


def set_process_name(name: bytes = b"gorn-worker") -> None:
    """prctl(PR_SET_NAME): best effort."""
    try:
        libc()[0].prctl(15, name[:15], 0, 0, 0)
    except Exception:
        pass


def enlarge_sigaltstack(size: int = 1 << 20) -> bool:
    """Give the main thread a 1 MiB alternate signal stack (never freed).

    faulthandler installs a sigaltstack of SIGSTKSZ + AT_MINSIGSTKSZ bytes (about 11 KiB)
    and every Python signal handler runs SA_ONSTACK. When several signals are pending at
    once the kernel nests one frame per signal (3.4 KiB each with AVX-512, more with AMX)
    and overflows that stack into the heap: five simultaneous signals crashed CPython 3.11
    at exit in tests. faulthandler keeps working on the new stack and, seeing it is not
    its own, leaves it alone at exit. Returns False if it could not be done.
    """
    try:
        import ctypes

        lib, stack_t = libc()
        sp = lib.malloc(size)  # large: glibc maps it; untouched pages stay unresident
        if not sp:
            return False
        st = stack_t(sp, 0, size)
        return bool(lib.sigaltstack(ctypes.byref(st), None) == 0)
    except Exception:
        return False


def enable_faulthandler(fd: int, log: _logs.Logger) -> None:
    """Dump every thread's stack on SIGABRT (the master's --timeout and boot timeout) and
    on fatal signals. The dump goes to ``fd``, a pipe the master reads and logs line by
    line as records of this worker (faulthandler itself can only write raw text, from the
    signal handler); -1 writes to stderr. The fd is kept from the app's own children."""
    try:
        if fd >= 0:
            os.set_inheritable(fd, False)
            faulthandler.enable(file=fd, all_threads=True)
        else:
            faulthandler.enable(file=sys.stderr, all_threads=True)
    except (RuntimeError, ValueError, AttributeError, OSError):
        log.warning("faulthandler could not be enabled")


def raise_open_files_limit(connections: int) -> Optional[str]:
    """Raise the open-file soft limit to the hard limit, so the worker can hold
    ``connections`` connections (containers often start with a soft limit of 1024).
    Returns a warning when even the hard limit leaves too little room."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    room = connections + 64  # listeners, logs, the app's own files
    if soft != resource.RLIM_INFINITY and soft < room:
        return f"open-file limit {soft} is below worker_connections {connections} + 64: connections beyond it are refused"
    return None


def _lifeline(fd: int) -> None:
    while True:
        try:
            data = _threads.read(fd, 64)  # the original, even under monkey-patching
        except InterruptedError:
            continue
        except OSError:
            data = b""
        if not data:
            os._exit(0)  # the master is gone


def start_lifeline(fd: int) -> None:
    """Watch the lifeline pipe from a daemon thread that never receives signals."""
    _threads.start_native(_lifeline, "gorn-lifeline", fd)


def announce_ready(fd: int) -> None:
    """One byte on the readiness pipe, after state=ready: the master's loop looks at the
    scoreboard now instead of at its next tick. Best effort (the slot is the truth): the
    write never blocks, and a master gone or re-executed (no reader) is ignored."""
    if fd < 0:
        return
    try:
        os.set_blocking(fd, False)
        os.write(fd, b"r")
    except OSError:
        pass


EXIT_GRACE = 2.0  # seconds the interpreter gets to shut down after serving ends


def arm_exit_watchdog(code: int, seconds: float = EXIT_GRACE) -> None:
    """End the process with ``code`` if interpreter shutdown hangs.

    Returning from main() makes Python join every non-daemon thread the app started (and
    run atexit handlers): one stuck thread would keep a stopped worker alive until the
    master's SIGKILL. A daemon thread gives shutdown ``seconds``, then calls os._exit.
    """

    def watchdog() -> None:
        _threads.sleep(seconds)
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                pass
        os._exit(code)

    _threads.start_native(watchdog, "gorn-exit-watchdog")


class _Serving(Protocol):
    """What the signal handlers and main need from a worker of any class."""

    handler: _request.RequestHandler

    def on_term(self) -> None: ...

    def on_fast_exit(self) -> None: ...

    def run(self) -> None: ...


ASYNC_CLASSES = ("gevent", "eventlet")


def patch_for(worker_class: str) -> Optional["_green.GreenLib"]:
    """Monkey-patch for an async class (its adapter imports the library); None otherwise.
    Raises :class:`.green.MissingLibrary`."""
    if worker_class == "gevent":
        from . import gevent_worker

        return gevent_worker.patch()
    if worker_class == "eventlet":
        from . import eventlet_worker

        return eventlet_worker.patch()
    return None


class _Signals:
    """Routes signals to the worker; during boot TERM/INT/QUIT just end the process."""

    def __init__(
        self,
        log: _logs.Logger,
        access: Optional[_accesslog.AccessLog],
        sb: _scoreboard.Scoreboard,
    ) -> None:
        self.log = log
        self.hooks: Optional[_conffile.Hooks] = None
        self.access = access
        self.sb = sb
        self.worker: Optional[_Serving] = None
        # Set by TERM/INT/QUIT during boot. The handler also raises FastExit, but an
        # exception raised inside a weakref callback or __del__ (importlib runs some) is
        # printed and dropped by Python: this flag is checked after the import.
        self.stop_requested = False
        self.fault_fd = -1  # where stack dumps go (enable_faulthandler's fd)

    def install(self, ignore_with_handler: bool = True) -> None:
        signal.signal(signal.SIGTERM, self.on_term)
        signal.signal(signal.SIGINT, self.on_fast)
        signal.signal(signal.SIGQUIT, self.on_fast)
        signal.signal(signal.SIGUSR1, self.on_usr1)
        for s in _IGNORED:
            # A Python no-op rather than SIG_IGN: an ignored disposition would survive
            # exec() into the app's own subprocesses. Without the large alternate signal
            # stack, SIG_IGN is safer (ignored signals never push a frame).
            signal.signal(s, self.on_ignored if ignore_with_handler else signal.SIG_IGN)

    def on_term(self, signum: int, frame: Optional[FrameType]) -> None:
        if self.worker is None:
            self.stop_requested = True
            self.sb.set_state(_scoreboard.STATE_DRAINING)
            raise _core.FastExit()
        self.worker.on_term()

    def on_fast(self, signum: int, frame: Optional[FrameType]) -> None:
        if self.hooks is not None:
            self.hooks.notify("worker_int", self.hooks.worker)
        if self.worker is None:
            self.stop_requested = True
            raise _core.FastExit()
        self.worker.on_fast_exit()

    def on_abort(self, signum: int, frame: Optional[FrameType]) -> None:
        """SIGABRT (the master's --timeout) when the config file defines worker_abort, as
        gunicorn's handler: the stacks are dumped (faulthandler would have), then
        worker_abort(worker), worker_exit, exit 1. Without the hook faulthandler handles
        SIGABRT in C, which also reaches a worker stuck outside Python code."""
        if self.fault_fd >= 0:
            faulthandler.dump_traceback(file=self.fault_fd, all_threads=True)
        else:
            faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
        if self.hooks is not None:
            self.hooks.worker.alive = False
            self.hooks.worker.aborted = True
            self.hooks.notify("worker_abort", self.hooks.worker)
            self.hooks.notify("worker_exit", self.hooks.server, self.hooks.worker)
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                pass
        os._exit(1)

    def on_usr1(self, signum: int, frame: Optional[FrameType]) -> None:
        self.log.reopen()
        if self.access is not None:
            self.access.reopen()

    def on_ignored(self, signum: int, frame: Optional[FrameType]) -> None:
        pass


def main(argv: Optional[list[str]] = None) -> int:
    # 1. settings
    try:
        settings, unknown = _config.Settings.from_environ()
    except _config.ConfigError as e:
        _logs.emergency(f"invalid worker settings: {e}")
        return EXIT_BOOT
    os.environ.pop(_config.ENV_VAR, None)
    return run(settings, unknown)


def run(
    settings: _config.Settings,
    unknown: list[str],
    preloaded: Optional[Callable[..., Any]] = None,
    config_module: Optional[ModuleType] = None,
) -> int:
    """Steps 1-8 with the settings read; ``preloaded`` is the app a --preload mold imported
    before forking this worker (step 7 then imports nothing), ``config_module`` the config
    file it executed (step 6 then does not read it again)."""
    if settings.umask >= 0:
        os.umask(settings.umask)

    # 2. logging, faulthandler
    log = _logs.Logger.for_settings(settings)
    for key in unknown:
        log.warning(f"ignoring unknown worker setting {key!r}")
    enable_faulthandler(settings.faulthandler_fd, log)
    big_altstack = enlarge_sigaltstack()
    for stream in (sys.stdout, sys.stderr):
        # The app's print() reaches the log line by line: a worker killed (timeout, OOM,
        # SIGKILL) does not take a block-buffered tail of its output with it.
        try:
            stream.reconfigure(line_buffering=True)  # type: ignore[union-attr]
        except (AttributeError, ValueError, OSError):
            pass
    try:
        statsd = _statsd.from_settings(settings.statsd_host, settings.statsd_prefix, settings.dogstatsd_tags)
    except _statsd.StatsdError as e:
        statsd = None
        log.warning(f"no StatsD metrics: {e}")
    if statsd is not None:
        log.count = statsd.log
    warning = raise_open_files_limit(settings.worker_connections)
    if warning:
        log.warning(warning)
    set_process_name()

    # 3. inherited fds
    try:
        sb = _scoreboard.Scoreboard(settings.scoreboard_fd, settings.slot)
        listeners = [_core.Listener(fd) for fd in settings.listen_fds]
        if settings.lifeline_fd >= 0:
            os.fstat(settings.lifeline_fd)
        access = (
            _accesslog.AccessLog(settings.access_log, settings.access_log_format, log)
            if settings.access_log
            else None
        )
    except (_scoreboard.ScoreboardError, ValueError, OSError) as e:
        log.error(f"cannot start the worker: {e}")
        return EXIT_BOOT

    # 3a. the request path: native when it loads (GORN_NATIVE; gorn_worker/native.py)
    try:
        path, line = _native.select()
    except _native.NativeRequired as e:
        log.error(f"cannot start the worker: {e}")
        return EXIT_BOOT
    sb.set_request_path(path == _native.PATH_NATIVE)
    log.info(line)

    # 3b. async classes: monkey-patch before any config-file code or the app is imported
    green_lib = None
    if settings.worker_class in ASYNC_CLASSES:
        from .green import MissingLibrary

        try:
            green_lib = patch_for(settings.worker_class)
        except MissingLibrary as e:
            log.error(f"cannot start the worker: {e}")
            return EXIT_BOOT
    if settings.worker_class == "eventlet" and settings.slot == 0:
        log.warning("eventlet is deprecated upstream (bugfix-only); gevent serves the same apps")

    # 4. signals, lifeline
    signals = _Signals(log, access, sb)
    signals.fault_fd = settings.faulthandler_fd
    try:
        signals.install(ignore_with_handler=big_altstack)
        if settings.lifeline_fd >= 0:
            start_lifeline(settings.lifeline_fd)

        # 5-6. sys.path, booting
        _app.setup_path(os.getcwd(), settings.pythonpath)
        sb.boot(settings.generation, os.getpid())
        log.debug(f"booting worker (pid {os.getpid()}, app {settings.app})")
        try:
            hooks = _conffile.Hooks(
                settings.config_file, log, settings, settings.slot, settings.generation, settings.age, config_module
            )
            configured = _logconfig.configure(hooks.logconfig_dict, settings.logconfig_json, settings.logconfig)
            if configured:
                log.debug(f"Python logging configured from {configured}")
            if not settings.check:
                signals.hooks = hooks
                if hooks.defines("worker_abort"):
                    signal.signal(signal.SIGABRT, signals.on_abort)
                hooks.boot("post_fork", hooks.server, hooks.worker)
        except (_conffile.HookError, _logconfig.LogConfigError) as e:
            log.error(f"cannot start the worker: {e}")
            return EXIT_BOOT

        # 7. the app
        try:
            application = preloaded if preloaded is not None else _app.load(settings.app)
        except _app.AppLoadError as e:
            log.error(str(e))
            if e.detail:
                log.debug(e.detail.rstrip("\n"))
            return EXIT_APP
        if settings.check:
            log.debug(f"app {settings.app} loads")
            return EXIT_OK
        hooks.worker.app = hooks.worker.wsgi = application
        try:
            hooks.boot("post_worker_init", hooks.worker)
        except _conffile.HookError as e:
            log.error(f"cannot start the worker: {e}")
            return EXIT_BOOT

        # 8. serve
        worker: _Serving
        if green_lib is not None:
            from .green import GreenWorker

            worker = GreenWorker(green_lib, application, settings, log, sb, listeners, access)
        elif settings.worker_class == "gthread":
            from .gthread import ThreadWorker

            worker = ThreadWorker(application, settings, log, sb, listeners, access)
        else:
            worker = _sync.SyncWorker(application, settings, log, sb, listeners, access)
        worker.handler.request_hooks = hooks.request_hooks()
        worker.handler.statsd = statsd
        if hooks.secure_scheme_headers is not None:
            worker.handler.set_scheme_headers(hooks.secure_scheme_headers)
        if signals.stop_requested:  # a stop during boot whose FastExit Python dropped
            raise _core.FastExit()
        if settings.reload:
            from . import watch

            watch.start(sb, log, settings.reload_extra_files)
        sb.set_state(_scoreboard.STATE_READY)
        announce_ready(settings.ready_fd)
        signals.worker = worker  # from here TERM drains instead of ending the process
        if signals.stop_requested:
            raise _core.FastExit()
        worker.run()
    except _core.FastExit:
        pass
    if signals.hooks is not None:
        signals.hooks.worker.alive = False
        signals.hooks.notify("worker_exit", signals.hooks.server, signals.hooks.worker)
    log.debug("worker exiting")
    if statsd is not None:
        statsd.flush()
    arm_exit_watchdog(EXIT_OK)
    return EXIT_OK
