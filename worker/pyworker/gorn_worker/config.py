"""The worker's settings: one typed table, read from the ``GORN_WORKER`` JSON variable.

The Go master serialises its resolved configuration for one worker into the environment
variable ``GORN_WORKER`` (worker/CONTRACT.md). :class:`Settings` is the only place that
knows the keys, their types and their limits; anything invalid raises
:class:`ConfigError`, which the entry point turns into exit code 3 with one log line.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import os
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Union

ENV_VAR = "GORN_WORKER"

DEFAULT_ACCESS_LOG_FORMAT = '%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s"'
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
LOG_FORMATS = ("text", "json")
WORKER_CLASSES = ("sync", "gthread", "gevent", "eventlet")

IPNetwork = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]


class ConfigError(ValueError):
    """Invalid worker settings (exit code 3)."""


# Value kinds understood by the loader; each field names one in its metadata.
_INT = "int"
_FLOAT = "float"
_STR = "str"
_OPT_STR = "str or null"
_BOOL = "bool"
_INT_LIST = "list of int"
_STR_LIST = "list of str"


def _f(default: Any, kind: str, doc: str, *, required: bool = False) -> Any:
    meta = {"kind": kind, "doc": doc, "required": required}
    if required:
        return field(metadata=meta)
    if isinstance(default, (list, tuple)):
        frozen = tuple(default)

        def factory() -> tuple[Any, ...]:
            return frozen

        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class Settings:
    """Every worker setting, with its JSON type, default and meaning (CONTRACT.md table).

    Only ``app`` and ``listen_fds`` are required; the defaults make a worker usable by
    tests and by hand. ``scoreboard_fd`` / ``lifeline_fd`` of -1 mean "none" (a private
    scoreboard, no lifeline thread); the master always passes real ones. A JSON ``null``
    for a list is an empty list (Go marshals a nil slice as null). ``listen_fds`` may be
    empty only with ``check`` (gorn --check-config: import the app, exit 0 or 4).
    """

    app: str = _f(None, _STR, "module[:expr]; expr defaults to `application`", required=True)
    listen_fds: tuple[int, ...] = _f((), _INT_LIST, "inherited listening sockets", required=True)
    slot: int = _f(0, _INT, "scoreboard slot index of this worker")
    generation: int = _f(0, _INT, "reload generation")
    age: int = _f(0, _INT, "the master's spawn counter: gunicorn's worker.age (the first worker is 1)")
    scoreboard_fd: int = _f(-1, _INT, "memfd of the scoreboard; -1 = private (tests)")
    lifeline_fd: int = _f(-1, _INT, "read end of the lifeline pipe; -1 = none (tests)")
    faulthandler_fd: int = _f(-1, _INT, "write end of the stack-dump pipe the master logs; -1 = stderr")
    ready_fd: int = _f(-1, _INT, "write end of the readiness pipe; -1 = none (tests)")
    worker_class: str = _f("sync", _STR, "worker class: `sync`, `gthread`, `gevent` or `eventlet`")
    threads: int = _f(1, _INT, "gthread: requests served at once")
    worker_connections: int = _f(1000, _INT, "open connections a worker holds, idle ones included")
    workers: int = _f(1, _INT, "desired worker count (wsgi.multiprocess)")
    keepalive: float = _f(75.0, _FLOAT, "idle keep-alive seconds; 0 = no keep-alive")
    header_timeout: float = _f(10.0, _FLOAT, "seconds for a head; max gap in a body; 0 = none")
    graceful_timeout: float = _f(30.0, _FLOAT, "seconds the master waits after TERM")
    timeout: float = _f(30.0, _FLOAT, "--timeout; gevent/eventlet end a request running longer; 0 = off")
    limit_request_line: int = _f(4094, _INT, "max request-line length; 0 = unlimited")
    limit_request_fields: int = _f(100, _INT, "max header fields; 0 = unlimited")
    limit_request_field_size: int = _f(8190, _INT, "max header line size; 0 = unlimited")
    limit_request_body: int = _f(0, _INT, "max body bytes; 0 = unlimited")
    root_path: str = _f("", _STR, "SCRIPT_NAME prefix")
    forwarded_allow_ips: tuple[str, ...] = _f(
        ("127.0.0.1", "::1"), _STR_LIST, "peers whose scheme headers (X-Forwarded-Proto, ...) are trusted"
    )
    forwarded_real_ip: bool = _f(False, _BOOL, "REMOTE_ADDR from X-Forwarded-For hops appended by trusted proxies")
    access_log: Optional[str] = _f(None, _OPT_STR, "null = off, `-` = stdout, else a path")
    access_log_format: str = _f(DEFAULT_ACCESS_LOG_FORMAT, _STR, "gunicorn atoms or `json`")
    error_log: str = _f("-", _STR, "`-` = stderr, else a path (reopened on USR1)")
    log_level: str = _f("info", _STR, "debug, info, warning, error, critical")
    log_format: str = _f("text", _STR, "`text` or `json`")
    statsd_host: str = _f("", _STR, "StatsD server: HOST:PORT or unix://PATH; empty = off")
    statsd_prefix: str = _f("", _STR, "StatsD metric name prefix, ending in '.'")
    dogstatsd_tags: str = _f("", _STR, "DogStatsD tags appended to every StatsD line")
    logconfig_json: str = _f("", _STR, "--log-config-json: a JSON logging.config dict for Python logging; empty = none")
    logconfig: str = _f("", _STR, "--log-config: an ini logging.config file for Python logging; empty = none")
    proc_name: str = _f("gorn", _STR, "process name")
    server_software: str = _f("gorn", _STR, "the Server header; SERVER_SOFTWARE is gunicorn/VERSION then this")
    pythonpath: tuple[str, ...] = _f((), _STR_LIST, "extra sys.path entries (after the cwd)")
    config_file: Optional[str] = _f(None, _OPT_STR, "config file whose worker-side hooks run here")
    umask: int = _f(-1, _INT, "the worker's umask, set at start; -1 = inherited")
    preload: bool = _f(False, _BOOL, "the hook host is a mold: it imports the app and forks the workers")
    reload: bool = _f(False, _BOOL, "watch the source files; a change asks the master to reload")
    reload_extra_files: tuple[str, ...] = _f((), _STR_LIST, "more files to watch with `reload`")
    check: bool = _f(False, _BOOL, "import the app, then exit 0 (4 if it fails); serve nothing")

    # ----------------------------------------------------------------- loading
    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> tuple["Settings", list[str]]:
        """Build and validate settings; returns them and the list of unknown keys."""
        if not isinstance(data, Mapping):
            raise ConfigError(f"{ENV_VAR} must be a JSON object")
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            if f.name not in data:
                if f.metadata["required"]:
                    raise ConfigError(f"missing required key {f.name!r}")
                continue
            values[f.name] = _convert(f.name, f.metadata["kind"], data[f.name])
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(k for k in data if k not in known)
        if "root_path" in values:
            values["root_path"] = values["root_path"].rstrip("/")
        settings = cls(**values)
        settings.validate()
        return settings, unknown

    @classmethod
    def from_json(cls, text: str) -> tuple["Settings", list[str]]:
        try:
            data = json.loads(text)
        except ValueError as e:
            raise ConfigError(f"{ENV_VAR} is not valid JSON: {e}") from None
        return cls.from_mapping(data)

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] = os.environ) -> tuple["Settings", list[str]]:
        text = environ.get(ENV_VAR)
        if text is None:
            raise ConfigError(f"{ENV_VAR} is not set (this program is started by the gorn master)")
        return cls.from_json(text)

    def to_json(self) -> str:
        """The JSON form the master sends (used by tests and tools)."""
        return json.dumps({k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()})

    # -------------------------------------------------------------- validation
    def validate(self) -> None:
        app = self.app.strip()
        if not app or app.startswith(":"):
            raise ConfigError(f"app {self.app!r} is not of the form module[:expr]")
        if not self.listen_fds and not self.check:
            raise ConfigError("listen_fds is empty")
        if len(set(self.listen_fds)) != len(self.listen_fds):
            raise ConfigError("listen_fds has duplicates")
        for fd in self.listen_fds:
            if fd < 0:
                raise ConfigError(f"listen_fds: {fd} is not a file descriptor")
        for name in ("scoreboard_fd", "lifeline_fd", "faulthandler_fd", "ready_fd"):
            if getattr(self, name) < -1:
                raise ConfigError(f"{name} must be a file descriptor or -1")
        _at_least("slot", self.slot, 0)
        _at_least("generation", self.generation, 0)
        _at_least("age", self.age, 0)
        _at_least("workers", self.workers, 1)
        for name in ("keepalive", "header_timeout", "graceful_timeout"):
            v = getattr(self, name)
            if not (v >= 0) or v == float("inf"):
                raise ConfigError(f"{name} must be a finite number >= 0, got {v!r}")
        for name in (
            "limit_request_line",
            "limit_request_fields",
            "limit_request_field_size",
            "limit_request_body",
        ):
            _at_least(name, getattr(self, name), 0)
        _at_least("threads", self.threads, 1)
        if not -1 <= self.umask <= 0o777:
            raise ConfigError(f"umask must be -1 or a mode up to 0o777, got {self.umask!r}")
        _at_least("worker_connections", self.worker_connections, 1)
        if self.worker_class not in WORKER_CLASSES:
            raise ConfigError(f"worker_class {self.worker_class!r} is not supported (want sync, gthread, gevent or eventlet)")
        if self.log_level not in LOG_LEVELS:
            raise ConfigError(f"log_level {self.log_level!r} is not one of {', '.join(LOG_LEVELS)}")
        if self.log_format not in LOG_FORMATS:
            raise ConfigError(f"log_format {self.log_format!r} is not one of text, json")
        if self.root_path and not self.root_path.startswith("/"):
            raise ConfigError(f"root_path {self.root_path!r} must start with '/'")
        if not self.access_log_format:
            raise ConfigError("access_log_format is empty")
        if self.access_log == "":
            raise ConfigError("access_log is empty (use null to disable it)")
        if not self.error_log:
            raise ConfigError("error_log is empty (use '-' for stderr)")
        for s in ("server_software", "proc_name"):
            v = getattr(self, s)
            if any(c in v for c in "\r\n\x00"):
                raise ConfigError(f"{s} contains a control character")
        parse_networks(self.forwarded_allow_ips)


def _at_least(name: str, value: int, low: int) -> None:
    if value < low:
        raise ConfigError(f"{name} must be >= {low}, got {value}")


def _convert(name: str, kind: str, value: Any) -> Any:
    def bad() -> ConfigError:
        return ConfigError(f"{name} must be {kind}, got {json.dumps(value)[:60]}")

    if kind == _INT:
        if type(value) is not int:
            raise bad()
        return value
    if kind == _FLOAT:
        if type(value) not in (int, float):
            raise bad()
        return float(value)
    if kind == _STR:
        if type(value) is not str:
            raise bad()
        return value
    if kind == _BOOL:
        if type(value) is not bool:
            raise bad()
        return value
    if kind == _OPT_STR:
        if value is not None and type(value) is not str:
            raise bad()
        return value
    if kind in (_INT_LIST, _STR_LIST) and value is None:
        return ()
    if kind == _INT_LIST:
        if type(value) is not list or any(type(v) is not int for v in value):
            raise bad()
        return tuple(value)
    if kind == _STR_LIST:
        if type(value) is not list or any(type(v) is not str for v in value):
            raise bad()
        return tuple(value)
    raise AssertionError(kind)


def parse_networks(entries: tuple[str, ...] | list[str]) -> tuple[bool, tuple[IPNetwork, ...]]:
    """Parse forwarded_allow_ips: returns (allow_all, networks). Raises ConfigError."""
    nets: list[IPNetwork] = []
    allow_all = False
    for raw in entries:
        e = raw.strip()
        if e == "*":
            allow_all = True
            continue
        try:
            nets.append(ipaddress.ip_network(e, strict=False))
        except ValueError:
            raise ConfigError(f"forwarded_allow_ips: {raw!r} is not an IP address or CIDR") from None
    return allow_all, tuple(nets)


def describe() -> str:
    """A Markdown table of the settings (kept in sync with CONTRACT.md by a test)."""
    rows = ["| key | type | default | meaning |", "|---|---|---|---|"]
    for f in dataclasses.fields(Settings):
        default = "required" if f.metadata["required"] else json.dumps(
            list(f.default_factory()) if f.default_factory is not dataclasses.MISSING else f.default
        )
        rows.append(f"| `{f.name}` | {f.metadata['kind']} | {default} | {f.metadata['doc']} |")
    return "\n".join(rows)
