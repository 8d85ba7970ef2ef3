"""Reusable helpers to run the gorn worker in tests, the way the Go master does.

Two ways to drive the runtime:

Real process (:func:`start_worker`)
    Binds a listening socket on 127.0.0.1 port 0 (or a unix socket), creates a memfd
    scoreboard (``SLOTS * 1024`` bytes) and a lifeline pipe, and starts
    ``python -m gorn_worker`` (or, with ``zip=True``, ``python /proc/self/fd/N`` on an
    in-memory zip exactly like the master) with ``GORN_WORKER`` set. Returns a
    :class:`Worker` with the process, the address, the scoreboard slot view and helpers::

        with start_worker("basic:app", keepalive=2) as w:
            status, headers, body = w.get("/hello")
            raw = w.raw(b"GET / HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n")   # bytes until close/timeout
            assert w.slot[W_REQUESTS] == 2
            assert w.stop() == 0                                    # SIGTERM, wait, exit code

    Apps are looked up in ``tests/apps`` (the worker's cwd) unless ``cwd`` says otherwise;
    ``pythonpath=[...]`` adds directories. The worker's stderr goes to a temp file:
    :meth:`Worker.stderr` reads it.

In process (:func:`serve_raw`)
    Runs :meth:`SyncWorker.handle` on one end of a socketpair in a thread: no process,
    no listener, a private scoreboard. Fast; for the request corpus and fuzzing::

        out = serve_raw(app, b"GET / HTTP/1.1\\r\\n\\r\\n", keepalive=0)

Response parsing: :func:`parse_responses` splits a byte stream into
``(status, headers, body)`` tuples (CL, chunked, close-delimited, HEAD-aware).
"""

from __future__ import annotations

import io
import json
import mmap
import os
import select
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Optional, Union

PYWORKER = Path(__file__).resolve().parent.parent
APPS = Path(__file__).resolve().parent / "apps"
if str(PYWORKER) not in sys.path:
    sys.path.insert(0, str(PYWORKER))

from gorn_worker.config import Settings  # noqa: E402
from gorn_worker.logs import Logger  # noqa: E402
from gorn_worker.scoreboard import (  # noqa: E402
    SLOT_BYTES,
    STATE_READY,
    W_PID,
    W_STATE,
    SlotView,
)

Address = Union[tuple[str, int], str]


# ----------------------------------------------------------------- the zip


def build_zip() -> bytes:
    """The zip the master execs: gorn_worker/*.py and gorn_worker/lib/* (the native
    accelerator, when built) plus the top-level __main__.py."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.write(PYWORKER / "__main__.py", "__main__.py")
        for p in sorted((PYWORKER / "gorn_worker").glob("*.py")):
            z.write(p, f"gorn_worker/{p.name}")
        for p in sorted((PYWORKER / "gorn_worker" / "lib").glob("*")):
            z.write(p, f"gorn_worker/lib/{p.name}")
    return buf.getvalue()


# --------------------------------------------------------------- processes


@dataclass
class Worker:
    """A running worker process and everything the master would hold for it."""

    proc: subprocess.Popen
    addr: Address
    listeners: list[socket.socket]
    board: mmap.mmap
    board_fd: int
    slot_index: int
    lifeline_w: Optional[int]
    stderr_file: Any
    extra_fds: list[int] = field(default_factory=list)

    # ---------------------------------------------------------- scoreboard
    @property
    def slot(self) -> SlotView:
        """A live view of this worker's scoreboard slot (index with W_* constants)."""
        return SlotView(self.board, self.slot_index)

    def wait_slot(self, word: int, pred: Callable[[int], bool], timeout: float = 5.0) -> int:
        """Poll a scoreboard word until pred(value) holds; returns the value."""
        deadline = time.monotonic() + timeout
        v = self.slot[word]
        while not pred(v):
            if time.monotonic() > deadline:
                raise TimeoutError(f"scoreboard word {word} = {v}; stderr:\n{self.stderr()}")
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker exited with {self.proc.returncode}; stderr:\n{self.stderr()}")
            time.sleep(0.005)
            v = self.slot[word]
        return v

    def wait_ready(self, timeout: float = 10.0) -> None:
        self.wait_slot(W_PID, lambda v: v == self.proc.pid, timeout)
        self.wait_slot(W_STATE, lambda v: v == STATE_READY, timeout)

    # ------------------------------------------------------------- clients
    def connect(self, timeout: float = 5.0) -> socket.socket:
        if isinstance(self.addr, str):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(timeout)
            s.connect(self.addr)
            return s
        return socket.create_connection(self.addr, timeout=timeout)

    def raw(self, data: bytes, timeout: float = 5.0, shut: bool = False) -> bytes:
        """Send bytes on a new connection; read until the server closes (or timeout)."""
        with self.connect(timeout) as s:
            s.sendall(data)
            if shut:
                s.shutdown(socket.SHUT_WR)
            return read_until_close(s, timeout)

    def get(
        self,
        path: str,
        headers: Optional[dict[str, str]] = None,
        method: str = "GET",
        body: bytes = b"",
        timeout: float = 5.0,
    ) -> tuple[int, dict[str, str], bytes]:
        """One request with ``Connection: close``; returns (status, headers, body)."""
        h = {"Host": "test", "Connection": "close"}
        h.update(headers or {})
        if body:
            h.setdefault("Content-Length", str(len(body)))
        head = f"{method} {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in h.items()) + "\r\n"
        out = self.raw(head.encode("latin-1") + body, timeout)
        rs = parse_responses(out, head_only=method == "HEAD")
        if not rs:
            raise AssertionError(f"no response: {out!r}; stderr:\n{self.stderr()}")
        return rs[0]

    # ------------------------------------------------------------ lifecycle
    def send_signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int:
        """Send sig (TERM by default) and wait for the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout)

    def stderr(self) -> str:
        self.stderr_file.flush()
        self.stderr_file.seek(0)
        return self.stderr_file.read().decode("utf-8", "replace")  # type: ignore[no-any-return]

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        for s in self.listeners:
            s.close()
        if self.lifeline_w is not None:
            try:
                os.close(self.lifeline_w)
            except OSError:
                pass
        for fd in self.extra_fds:
            try:
                os.close(fd)
            except OSError:
                pass
        try:
            self.board.close()
        except BufferError:
            pass
        os.close(self.board_fd)
        self.stderr_file.close()

    def __enter__(self) -> "Worker":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def start_worker(
    app: str = "basic:app",
    *,
    slot: int = 0,
    slots: int = 4,
    listeners: int = 1,
    unix: Optional[str] = None,
    zip: bool = False,
    cwd: Optional[Path] = None,
    env: Optional[dict[str, str]] = None,
    wait_ready: bool = True,
    lifeline: bool = True,
    backlog: int = 128,
    raw_settings: Optional[str] = None,
    pass_fds: tuple[int, ...] = (),
    **settings: Any,
) -> Worker:
    """Start a worker process like the master does.

    ``settings`` are GORN_WORKER keys (``keepalive=0.5``, ``access_log="-"``, ...);
    ``listen_fds``, ``scoreboard_fd``, ``lifeline_fd`` and ``slot`` are filled in.
    ``unix=PATH`` listens on a unix socket instead of TCP. ``raw_settings`` replaces
    the JSON entirely (for invalid-settings tests). ``wait_ready=False`` returns at once
    (for boot-failure tests: then ``proc.wait()``). ``pass_fds`` are extra fds to inherit.
    """
    socks: list[socket.socket] = []
    for i in range(listeners):
        if unix and i == 0:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            if os.path.exists(unix):
                os.unlink(unix)
            s.bind(unix)
        else:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", 0))
        s.listen(backlog)
        socks.append(s)
    addr: Address = socks[0].getsockname()
    board_fd = os.memfd_create("gorn-test-scoreboard", 0)
    os.ftruncate(board_fd, slots * SLOT_BYTES)
    board = mmap.mmap(board_fd, slots * SLOT_BYTES, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
    inherit = [s.fileno() for s in socks] + [board_fd] + list(pass_fds)
    lifeline_r = lifeline_w = None
    if lifeline:
        lifeline_r, lifeline_w = os.pipe()
        inherit.append(lifeline_r)
    doc: dict[str, Any] = {
        "app": app,
        "slot": slot,
        "listen_fds": [s.fileno() for s in socks],
        "scoreboard_fd": board_fd,
        "lifeline_fd": lifeline_r if lifeline_r is not None else -1,
        "server_software": "gorn/test",
    }
    doc.update(settings)
    child_env = dict(os.environ)
    child_env.update(env or {})
    child_env["GORN_WORKER"] = raw_settings if raw_settings is not None else json.dumps(doc)
    extra_fds: list[int] = []
    if zip:
        zfd = os.memfd_create("gorn-worker-zip", 0)
        os.write(zfd, build_zip())
        inherit.append(zfd)
        extra_fds.append(zfd)
        argv = [sys.executable, f"/proc/self/fd/{zfd}", f"gorn: worker [test] slot={slot}"]
    else:
        argv = [sys.executable, "-m", "gorn_worker"]
        child_env["PYTHONPATH"] = str(PYWORKER) + os.pathsep + child_env.get("PYTHONPATH", "")
    stderr_file = tempfile.TemporaryFile()
    proc = subprocess.Popen(
        argv,
        cwd=str(cwd or APPS),
        env=child_env,
        pass_fds=inherit,
        stdin=subprocess.DEVNULL,
        stdout=stderr_file if settings.get("access_log") != "-" else subprocess.PIPE,
        stderr=stderr_file,
    )
    if lifeline_r is not None:
        os.close(lifeline_r)
    w = Worker(proc, addr, socks, board, board_fd, slot, lifeline_w, stderr_file, extra_fds)
    if wait_ready:
        try:
            w.wait_ready()
        except BaseException:
            w.close()
            raise
    return w


# ------------------------------------------------------------ reading bytes


def read_until_close(s: socket.socket, timeout: float = 5.0) -> bytes:
    """Everything the peer sends until it closes, or until ``timeout`` of silence."""
    s.settimeout(timeout)
    chunks = []
    while True:
        try:
            d = s.recv(65536)
        except TimeoutError:
            break
        except ConnectionResetError:
            break
        if not d:
            break
        chunks.append(d)
    return b"".join(chunks)


def read_response(s: socket.socket, timeout: float = 5.0, head_only: bool = False) -> tuple[int, dict[str, str], bytes]:
    """Read exactly one response from a kept connection (CL or chunked framing)."""
    s.settimeout(timeout)
    buf = b""
    while True:
        rs = parse_responses(buf, head_only=head_only, complete_only=True)
        if rs:
            return rs[0]
        d = s.recv(65536)
        if not d:
            rs = parse_responses(buf, head_only=head_only)
            if rs:
                return rs[0]
            raise ConnectionError(f"closed before a full response: {buf!r}")
        buf += d


def parse_responses(
    data: bytes, head_only: bool = False, complete_only: bool = False
) -> list[tuple[int, dict[str, str], bytes]]:
    """Split a response byte stream into (status, headers, body); headers lowercased.

    Repeated header names are joined with ", ". A body without CL/TE runs to the end.
    With ``complete_only`` a truncated last response is left out.
    """
    out = []
    while data:
        i = data.find(b"\r\n\r\n")
        if i < 0:
            break
        head = data[:i].decode("latin-1")
        rest = data[i + 4 :]
        lines = head.split("\r\n")
        status = int(lines[0].split(" ")[1])
        headers: dict[str, str] = {}
        for line in lines[1:]:
            k, _, v = line.partition(":")
            k = k.strip().lower()
            headers[k] = f"{headers[k]}, {v.strip()}" if k in headers else v.strip()
        if status == 100:
            data = rest
            continue
        if head_only or status in (204, 304) or 100 <= status < 200:
            body, data = b"", rest
        elif "content-length" in headers:
            n = int(headers["content-length"])
            if len(rest) < n and complete_only:
                break
            body, data = rest[:n], rest[n:]
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            body = b""
            pos = 0
            done = False
            while True:
                j = rest.find(b"\r\n", pos)
                if j < 0:
                    break
                size = int(rest[pos:j].split(b";")[0], 16)
                if size == 0:
                    end = rest.find(b"\r\n\r\n", j)
                    if end < 0:
                        break
                    pos = end + 4
                    done = True
                    break
                if len(rest) < j + 2 + size + 2:
                    break
                body += rest[j + 2 : j + 2 + size]
                pos = j + 2 + size + 2
            if not done and complete_only:
                break
            data = rest[pos:]
        else:
            if complete_only:
                break
            body, data = rest, b""
        out.append((status, headers, body))
    return out


# ---------------------------------------------------------------- in process


@dataclass
class InProcess:
    """Result of :func:`serve_raw`: the bytes the server sent and its log output."""

    output: bytes
    log: str
    worker: Any


def make_settings(**overrides: Any) -> Settings:
    doc: dict[str, Any] = {"app": "unused:app", "listen_fds": [99], "server_software": "gorn/test"}
    doc.update(overrides)
    s, _ = Settings.from_mapping(doc)
    return s


def serve_raw(
    app: Callable[..., Iterable[bytes]],
    data: Union[bytes, Iterable[bytes]],
    *,
    shut: bool = True,
    timeout: float = 5.0,
    pause: float = 0.0,
    log_level: str = "debug",
    access: Any = None,
    **settings: Any,
) -> InProcess:
    """Serve one connection in process: send ``data`` (bytes, or chunks sent ``pause``
    seconds apart), half-close if ``shut``, return everything the server sent."""
    from gorn_worker.scoreboard import Scoreboard
    from gorn_worker.sync import SyncWorker

    st = make_settings(log_level=log_level, **settings)
    logf = tempfile.TemporaryFile()
    log = Logger(st.log_level, st.log_format, fd=logf.fileno())
    worker = SyncWorker(app, st, log, Scoreboard(-1, 0), [], access)
    client, server = socket.socketpair()
    t = threading.Thread(target=worker.handle, args=(server, "", None), daemon=True)
    t.start()
    try:
        chunks = [data] if isinstance(data, (bytes, bytearray)) else list(data)
        for i, c in enumerate(chunks):
            if i and pause:
                time.sleep(pause)
            try:
                client.sendall(c)
            except OSError:
                break
        if shut:
            try:
                client.shutdown(socket.SHUT_WR)
            except OSError:
                pass
        out = read_until_close(client, timeout)
    finally:
        client.close()
        t.join(timeout)
    logf.seek(0)
    text = logf.read().decode("utf-8", "replace")
    logf.close()
    return InProcess(out, text, worker)


def wait_readable(s: socket.socket, timeout: float) -> bool:
    return bool(select.select([s], [], [], timeout)[0])
