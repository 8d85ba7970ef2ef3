"""Python config files, as gunicorn's ``-c``: PATH, ``file:PATH`` or ``python:MODULE``.

The master evaluates the file once (``python -c <this file> SOURCE``) and reads its settings
from the JSON this prints on stdout::

    {"settings": {name: value}, "callables": [name], "other": [name]}
    {"error": "one line"}

Values are JSON scalars or lists of them; callables are server hooks; "other" are values of
any other type (dicts, objects). Anything the file prints goes to stderr.

Each worker evaluates the file again (``Hooks``) to run the worker-side server hooks, with
gunicorn's names and arguments: ``post_fork(server, worker)`` before the app is imported,
``post_worker_init(worker)`` after, ``pre_request(worker, req)`` and
``post_request(worker, req[, environ[, resp]])`` around each request, ``worker_int(worker)``
on INT/QUIT, ``worker_abort(worker)`` on SIGABRT (the master's --timeout) and
``worker_exit(server, worker)`` when the worker ends. The master-side hooks run in the hook
host (hookhost.py).
"""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import inspect
import json
import os
import sys
import traceback
import types
from typing import Any, Callable, Optional

WORKER_HOOKS = (
    "post_fork",
    "post_worker_init",
    "worker_int",
    "worker_abort",
    "worker_exit",
    "pre_request",
    "post_request",
)


def load(source: str) -> types.ModuleType:
    """Execute the config file as gunicorn does: a module named ``__config__``."""
    if source.startswith("python:"):
        return importlib.import_module(source.removeprefix("python:"))
    path = source.removeprefix("file:")
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path!r} does not exist")
    loader = importlib.machinery.SourceFileLoader("__config__", path)
    spec = importlib.util.spec_from_file_location("__config__", path, loader=loader)
    assert spec is not None
    mod = importlib.util.module_from_spec(spec)
    saved, sys.dont_write_bytecode = sys.dont_write_bytecode, True  # no __pycache__ beside it
    try:
        loader.exec_module(mod)
    finally:
        sys.dont_write_bytecode = saved
    return mod


def describe_error(exc: BaseException, source: str) -> str:
    """One line: the exception and the config file's line that raised it."""
    if isinstance(exc, SyntaxError):
        return f"SyntaxError: {exc}"  # its message names the file and line already
    path = source.removeprefix("file:")
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename == path]
    where = f" (line {frames[-1].lineno})" if frames else ""
    return f"{type(exc).__name__}: {exc}{where}"


def _plain(value: object) -> bool:
    if isinstance(value, (str, int, float, bool)):
        return True
    return isinstance(value, (list, tuple)) and all(isinstance(v, (str, int, float)) for v in value)


def describe(mod: types.ModuleType) -> dict[str, Any]:
    """The module's public names, sorted into settings, callables and other values."""
    result: dict[str, Any] = {"settings": {}, "callables": [], "other": []}
    for name, value in vars(mod).items():
        if name.startswith("_") or isinstance(value, (types.ModuleType, type)) or value is None:
            continue
        if _plain(value):
            result["settings"][name] = list(value) if isinstance(value, tuple) else value
        elif callable(value):
            result["callables"].append(name)
        else:
            result["other"].append(name)
    return result


def report(source: str) -> None:
    """The master's entry point: print the file's settings (or its error) as JSON."""
    out, sys.stdout = sys.stdout, sys.stderr
    try:
        result = describe(load(source))
    except BaseException as exc:  # the file is arbitrary code: report anything it raises
        result = {"error": describe_error(exc, source)}
    out.write(json.dumps(result))
    out.flush()


class HookLog:
    """gunicorn's ``worker.log`` interface (``%``-style arguments) over the worker's log."""

    def __init__(self, log: Any) -> None:
        self._log = log

    def _fmt(self, msg: object, args: tuple[object, ...]) -> str:
        return str(msg) % args if args else str(msg)

    def debug(self, msg: object, *args: object) -> None:
        self._log.debug(self._fmt(msg, args))

    def info(self, msg: object, *args: object) -> None:
        self._log.info(self._fmt(msg, args))

    def warning(self, msg: object, *args: object) -> None:
        self._log.warning(self._fmt(msg, args))

    warn = warning

    def error(self, msg: object, *args: object) -> None:
        self._log.error(self._fmt(msg, args))

    def exception(self, msg: object, *args: object) -> None:
        self._log.error(self._fmt(msg, args), exc_info=True)

    def critical(self, msg: object, *args: object) -> None:
        self._log.critical(self._fmt(msg, args))


class Server:
    """What a hook's ``server`` argument offers here: the master's pid and a log."""

    def __init__(self, log: HookLog, cfg: Any) -> None:
        self.pid = os.getppid()
        self.log = log
        self.cfg = cfg


class Worker:
    """What a hook's ``worker`` argument offers here (a subset of gunicorn's Worker)."""

    def __init__(self, log: HookLog, cfg: Any, slot: int, generation: int, age: int) -> None:
        self.pid = os.getpid()
        self.ppid = os.getppid()
        self.age = age  # gunicorn's: the master's spawn counter (the first worker is 1)
        self.generation = generation
        self.slot = slot
        self.log = log
        self.cfg = cfg
        self.alive = True
        self.aborted = False
        self.app: Any = None
        self.wsgi: Any = None


class HookRequest:
    """The ``req`` of pre_request/post_request: gunicorn's Request attributes, from the environ.
    The same object reaches both hooks, so one may leave attributes for the other."""

    def __init__(self, environ: dict[str, Any]) -> None:
        self.method: str = environ["REQUEST_METHOD"]
        self.uri: str = environ.get("RAW_URI", "")
        self.path: str = environ.get("PATH_INFO", "")
        self.query: str = environ.get("QUERY_STRING", "")
        self.fragment = ""
        self.scheme: str = environ.get("wsgi.url_scheme", "http")
        proto = environ.get("SERVER_PROTOCOL", "HTTP/1.1")
        self.version = (int(proto[5]), int(proto[7])) if len(proto) == 8 else (1, 1)
        self.headers = [
            (k[5:].replace("_", "-"), v) for k, v in environ.items() if k.startswith("HTTP_")
        ] + [(k.replace("_", "-"), environ[k]) for k in ("CONTENT_TYPE", "CONTENT_LENGTH") if k in environ]
        self.remote_addr: str = environ.get("REMOTE_ADDR", "")


class HookResponse:
    """The ``resp`` of post_request: gunicorn's Response attributes that hooks read."""

    def __init__(self, status: str, status_code: int, headers: list[tuple[str, str]], sent: int) -> None:
        self.status = status
        self.status_code = status_code
        self.headers = headers
        self.sent = self.response_length = sent


class RequestHooks:
    """pre_request and post_request, called by the worker around each request (only when
    the config file defines one, so requests pay nothing otherwise)."""

    def __init__(self, hooks: "Hooks") -> None:
        self._hooks = hooks
        self._pre = hooks._fns.get("pre_request")
        post = hooks._fns.get("post_request")
        self._post = post
        self._post_args = 4
        if post is not None:  # gunicorn passes as many arguments as the hook takes
            try:
                params = inspect.signature(post).parameters.values()
                if not any(p.kind == p.VAR_POSITIONAL for p in params):
                    self._post_args = min(4, len(params))
            except (TypeError, ValueError):
                pass

    def pre(self, environ: dict[str, Any]) -> None:
        """Before the app; an exception is the request's error (a 500)."""
        req = environ["gorn.request"] = HookRequest(environ)
        if self._pre is not None:
            self._pre(self._hooks.worker, req)

    def post(self, environ: dict[str, Any], status: str, code: int, headers: list[tuple[str, str]], sent: int) -> None:
        """After the response; an exception is logged."""
        if self._post is None:
            return
        req = environ.get("gorn.request") or HookRequest(environ)
        args = (self._hooks.worker, req, environ, HookResponse(status, code, headers, sent))
        try:
            self._post(*args[: self._post_args])
        except Exception:
            self._hooks._log.error("post_request hook failed", exc_info=True)


class HookError(Exception):
    """A config file that cannot be evaluated, or a boot hook that raised."""


class Hooks:
    """The worker-side server hooks of a config file (none without one)."""

    def __init__(
        self,
        source: Optional[str],
        log: Any,
        cfg: Any,
        slot: int,
        generation: int,
        age: int = 0,
        module: Optional[types.ModuleType] = None,
    ) -> None:
        """``module`` is the file already executed (a --preload mold's, which the worker
        inherits as gunicorn's workers inherit their master's): it is not read again."""
        self._log = log
        self._fns: dict[str, Callable[..., Any]] = {}
        self.secure_scheme_headers: Optional[dict[str, str]] = None  # gunicorn's setting, a dict
        self.logconfig_dict: Optional[dict[str, Any]] = None  # gunicorn's setting, a dict
        hook_log = HookLog(log)
        self.server = Server(hook_log, cfg)
        self.worker = Worker(hook_log, cfg, slot, generation, age)
        if not source:
            return
        mod = module
        if mod is None:
            out, sys.stdout = sys.stdout, sys.stderr  # as in the master: the file's prints go to stderr
            try:
                mod = load(source)
            except BaseException as exc:
                raise HookError(f"config file {source}: {describe_error(exc, source)}") from None
            finally:
                sys.stdout = out
        for name in WORKER_HOOKS:
            fn = getattr(mod, name, None)
            if callable(fn):
                self._fns[name] = fn
        headers = getattr(mod, "secure_scheme_headers", None)
        if headers is not None:
            if not isinstance(headers, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in headers.items()
            ):
                raise HookError(f"config file {source}: secure_scheme_headers must be a dict of header name to value")
            self.secure_scheme_headers = headers
        logconfig = getattr(mod, "logconfig_dict", None)
        if logconfig:
            if not isinstance(logconfig, dict):
                raise HookError(f"config file {source}: logconfig_dict must be a dict (logging.config.dictConfig's schema)")
            self.logconfig_dict = logconfig

    def defines(self, name: str) -> bool:
        """Whether the config file defines the hook."""
        return name in self._fns

    def request_hooks(self) -> Optional[RequestHooks]:
        """The per-request hooks, or None when the file defines neither."""
        if "pre_request" in self._fns or "post_request" in self._fns:
            return RequestHooks(self)
        return None

    def _run(self, name: str, args: tuple[Any, ...]) -> Optional[Exception]:
        """Call the hook if the file defines it; log and return what it raised."""
        fn = self._fns.get(name)
        if fn is None:
            return None
        try:
            fn(*args)
        except Exception as exc:
            self._log.error(f"{name} hook failed", exc_info=True)
            return exc
        return None

    def boot(self, name: str, *args: Any) -> None:
        """Run a boot hook (post_fork, post_worker_init): if it raises, the worker cannot boot."""
        exc = self._run(name, args)
        if exc is not None:
            raise HookError(f"{name} hook raised {type(exc).__name__}: {exc}")

    def notify(self, name: str, *args: Any) -> None:
        """Run a notification hook (worker_int, worker_exit): errors are logged, not raised."""
        self._run(name, args)


if __name__ == "__main__":
    report(sys.argv[1])
