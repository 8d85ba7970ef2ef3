#!/usr/bin/env python3
"""Slowloris against gorn: can a normal client still get answers?

Opens IDLE connections that send nothing or a partial request line, and TRICKLE connections
that send a request head one byte a second (never finishing it); a connection the server
closes is opened again, as a real attacker would. Once they are all open, a normal client
makes REQUESTS sequential requests (each on a new connection, or one kept-alive connection
with --keepalive) and the script reports how many were answered 200 within --timeout, and
p50/p99/max latency of the answered ones.

By default it starts its own gorn (bin/gorn, built by bench/slowloris.sh) serving the example
Flask app with 3 workers of --class sync|gthread on a loopback port; --target HOST:PORT
attacks a server already running (loopback addresses only).

    python3 bench/slowloris.py                                 500 idle + 50 trickling, 20 requests, sync
    python3 bench/slowloris.py --class gthread --idle 300 --trickle 20
    python3 bench/slowloris.py --target 127.0.0.1:8000 --strict --p99-ms 50

Every loop has a deadline (--max-time bounds the whole attack); RLIMIT_NOFILE is raised as
needed. Exit status: 0, or 1 with --strict when a request failed or p99 is over --p99-ms.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import resource
import selectors
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--idle", type=int, default=500, help="idle connections (default 500)")
    p.add_argument("--idle-send", choices=["mixed", "none", "partial"], default="mixed",
                   help="what an idle connection sends: nothing, a partial request line, or half each (mixed)")
    p.add_argument("--trickle", type=int, default=50, help="connections sending a header a byte a second (default 50)")
    p.add_argument("--requests", type=int, default=20, help="sequential requests of the normal client (default 20)")
    p.add_argument("--path", default="/", help="what the normal client asks for (default /)")
    p.add_argument("--keepalive", action="store_true", help="the normal client keeps one connection alive")
    p.add_argument("--timeout", type=float, default=5.0, help="seconds a normal request may take (default 5)")
    p.add_argument("--settle", type=float, default=1.0, help="seconds between opening the attack and the first request")
    p.add_argument("--max-time", type=float, default=120.0, help="deadline of the whole run in seconds (default 120)")
    p.add_argument("--target", help="HOST:PORT of a running server (loopback only); default: start gorn")
    p.add_argument("--class", dest="klass", choices=["sync", "gthread"], default="sync", help="gorn worker class (default sync)")
    p.add_argument("--workers", type=int, default=3, help="gorn workers (default 3)")
    p.add_argument("--threads", type=int, default=4, help="threads per gthread worker (default 4)")
    p.add_argument("--gorn", default=os.path.join(ROOT, "bin", "gorn"), help="gorn binary (default bin/gorn)")
    p.add_argument("--python", help="interpreter with Flask for gorn's workers (default .venv, else .bench-venv)")
    p.add_argument("--app", default="app:app", help="app in examples/flask (default app:app)")
    p.add_argument("--gorn-arg", action="append", default=[], help="extra gorn argument; repeatable")
    p.add_argument("--strict", action="store_true", help="exit 1 unless every request succeeded with p99 under --p99-ms")
    p.add_argument("--p99-ms", type=float, default=50.0, help="p99 bound for --strict (default 50)")
    p.add_argument("--json", action="store_true", help="print the result as one JSON line too")
    return p.parse_args()


def loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def raise_nofile(need: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < need:
        new = need if hard == resource.RLIM_INFINITY else min(need, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
        if new < need:
            print(f"warning: open-file limit {new} < {need} needed", file=sys.stderr)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def find_python(given: str | None) -> str:
    if given:
        return given
    cands = [os.path.join(os.environ["VIRTUAL_ENV"], "bin", "python")] if os.environ.get("VIRTUAL_ENV") else []
    cands += [os.path.join(ROOT, ".venv", "bin", "python"), os.path.join(ROOT, ".bench-venv", "bin", "python")]
    for c in cands:
        if os.access(c, os.X_OK) and subprocess.run([c, "-c", "import flask"], capture_output=True).returncode == 0:
            return c
    sys.exit("no Python with Flask: run `make venv` or pass --python")


class Gorn:
    """A gorn master in a process group of its own, stopped (TERM, then KILL) on exit."""

    def __init__(self, args: argparse.Namespace):
        self.port = free_port()
        self.log = open(os.path.join(os.environ.get("TMPDIR", "/tmp"), f"slowloris-gorn-{os.getpid()}.log"), "w+")
        cmd = [args.gorn, "--python", find_python(args.python), "-w", str(args.workers), "-k", args.klass,
               "-b", f"127.0.0.1:{self.port}", "--log-format", "text", "--log-level", "warning"]
        if args.klass == "gthread":
            cmd += ["--threads", str(args.threads)]
        cmd += args.gorn_arg + [args.app]
        self.cmd = cmd
        self.proc = subprocess.Popen(cmd, cwd=os.path.join(ROOT, "examples", "flask"), stdin=subprocess.DEVNULL,
                                     stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.log.seek(0)
                sys.exit(f"gorn exited: {self.log.read()}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/", timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                time.sleep(0.1)
        else:
            self.stop()
            sys.exit("gorn did not answer within 30 s")
        time.sleep(0.5)  # the other workers ready too

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout=10)
            except (subprocess.TimeoutExpired, ProcessLookupError):
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait(timeout=5)
        self.log.close()
        os.unlink(self.log.name)


class Attack(threading.Thread):
    """Holds the idle and trickling connections until stopped or the deadline passes."""

    HEAD = b"GET / HTTP/1.1\r\nHost: localhost\r\nUser-Agent: slowloris\r\nX-Trickle: " + b"a" * 4000

    def __init__(self, addr, idle: int, trickle: int, idle_send: str, deadline: float):
        super().__init__(daemon=True)
        self.addr, self.idle, self.trickle, self.idle_send, self.deadline = addr, idle, trickle, idle_send, deadline
        self.sel = selectors.DefaultSelector()
        self.stopping = threading.Event()
        self.ready = threading.Event()
        self.opened = self.reopened = self.failed = 0
        self.conns: dict[socket.socket, dict] = {}

    def _open(self, kind: str, index: int) -> None:
        s = socket.socket(socket.AF_INET6 if ":" in self.addr[0] else socket.AF_INET)
        s.settimeout(2)
        try:
            s.connect(self.addr)
            if kind == "idle" and (self.idle_send == "partial" or (self.idle_send == "mixed" and index % 2)):
                s.sendall(b"GET /slo")
        except OSError:
            self.failed += 1
            s.close()
            return
        s.setblocking(False)
        self.conns[s] = {"kind": kind, "index": index, "sent": 0}
        self.sel.register(s, selectors.EVENT_READ)
        self.opened += 1

    def run(self) -> None:
        for i in range(self.idle):
            if time.monotonic() > self.deadline or self.stopping.is_set():
                break
            self._open("idle", i)
        for i in range(self.trickle):
            if time.monotonic() > self.deadline or self.stopping.is_set():
                break
            self._open("trickle", i)
        self.ready.set()
        next_tick = time.monotonic()
        while not self.stopping.is_set() and time.monotonic() < self.deadline:
            for key, _ in self.sel.select(timeout=max(0.0, min(0.2, next_tick - time.monotonic()))):
                s = key.fileobj
                try:
                    data = s.recv(65536)
                except BlockingIOError:
                    continue
                except OSError:
                    data = b""
                if not data:  # closed by the server (e.g. its header timeout): open it again
                    info = self.conns.pop(s)
                    self.sel.unregister(s)
                    s.close()
                    self.reopened += 1
                    self._open(info["kind"], info["index"])
            if time.monotonic() >= next_tick:
                next_tick += 1.0
                for s, info in list(self.conns.items()):
                    if info["kind"] == "trickle" and info["sent"] < len(self.HEAD):
                        try:
                            s.send(self.HEAD[info["sent"]:info["sent"] + 1])
                            info["sent"] += 1
                        except OSError:
                            pass
        for s in list(self.conns):
            s.close()
        self.ready.set()

    def stop(self) -> None:
        self.stopping.set()
        self.join(timeout=10)


def normal_requests(addr, n: int, path: str, timeout: float, keepalive: bool, deadline: float):
    """n sequential GETs; returns (latencies of the 200s in seconds, list of failures)."""
    lat, failures = [], []
    conn = None
    host = f"[{addr[0]}]" if ":" in addr[0] else addr[0]
    req = (f"GET {path} HTTP/1.1\r\nHost: {host}:{addr[1]}\r\n"
           + ("" if keepalive else "Connection: close\r\n") + "\r\n").encode()
    for _ in range(n):
        if time.monotonic() > deadline:
            failures.append("not attempted: --max-time reached")
            continue
        t0 = time.monotonic()
        end = t0 + timeout
        try:
            if conn is None:
                conn = socket.create_connection(addr, timeout=timeout)
            conn.settimeout(max(0.01, end - time.monotonic()))
            conn.sendall(req)
            status = read_response(conn, end)
            if status == 200:
                lat.append(time.monotonic() - t0)
            else:
                failures.append(f"status {status}")
        except (OSError, ValueError) as e:
            failures.append(f"{type(e).__name__}: {e}" if str(e) else type(e).__name__)
            if conn:
                conn.close()
            conn = None
            continue
        if not keepalive:
            conn.close()
            conn = None
    if conn:
        conn.close()
    return lat, failures


def read_response(conn: socket.socket, end: float) -> int:
    """Reads one response with a Content-Length or chunked body (or to EOF); returns its status."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        conn.settimeout(max(0.01, end - time.monotonic()))
        chunk = conn.recv(65536)
        if not chunk:
            raise ConnectionError("closed before a response" if not buf else "closed in the response head")
        buf += chunk
    head, body = buf.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (l.partition(":") for l in lines[1:])}
    if "content-length" in headers:
        want = int(headers["content-length"])
        while len(body) < want:
            conn.settimeout(max(0.01, end - time.monotonic()))
            chunk = conn.recv(65536)
            if not chunk:
                raise ConnectionError("closed in the body")
            body += chunk
    elif headers.get("transfer-encoding", "").lower() == "chunked":
        while not body.endswith(b"0\r\n\r\n"):
            conn.settimeout(max(0.01, end - time.monotonic()))
            chunk = conn.recv(65536)
            if not chunk:
                raise ConnectionError("closed in the body")
            body += chunk
    else:
        while True:
            conn.settimeout(max(0.01, end - time.monotonic()))
            if not conn.recv(65536):
                break
    return status


def pct(values, p: float) -> float:
    if not values:
        return float("nan")
    v = sorted(values)
    return v[min(len(v) - 1, max(0, round(p / 100 * len(v) + 0.5) - 1))]


def main() -> int:
    args = parse_args()
    start = time.monotonic()
    deadline = start + args.max_time
    raise_nofile(args.idle + args.trickle + 256)
    gorn = None
    if args.target:
        host, _, port = args.target.rpartition(":")
        if not loopback(host):
            sys.exit("--target must be a loopback address (127.0.0.0/8, ::1, localhost)")
        addr = (host.strip("[]"), int(port))
    else:
        gorn = Gorn(args)
        addr = ("127.0.0.1", gorn.port)

    def on_signal(signum, _frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    attack = Attack(addr, args.idle, args.trickle, args.idle_send, deadline)
    try:
        # A baseline request before the attack: the server works.
        base, base_fail = normal_requests(addr, 1, args.path, args.timeout, False, deadline)
        attack.start()
        attack.ready.wait(timeout=max(0.0, deadline - time.monotonic()))
        time.sleep(max(0.0, min(args.settle, deadline - time.monotonic())))
        t0 = time.monotonic()
        lat, failures = normal_requests(addr, args.requests, args.path, args.timeout, args.keepalive, deadline)
        took = time.monotonic() - t0
        held = len(attack.conns)
    finally:
        attack.stop()
        if gorn:
            gorn.stop()

    ok = len(lat)
    ms = [x * 1000 for x in lat]
    who = f"gorn -w {args.workers} -k {args.klass}" + (f" --threads {args.threads}" if args.klass == "gthread" else "") \
        if gorn else f"server at {args.target}"
    print(f"target: {who}; attack: {args.idle} idle ({args.idle_send}) + {args.trickle} trickling a byte/s; "
          f"{attack.opened} opened, {held} held at the end, {attack.reopened} reopened after the server closed them, "
          f"{attack.failed} failed to connect")
    print(f"baseline request before the attack: {'ok %.1f ms' % (base[0] * 1000) if base else base_fail}")
    print(f"normal client: {ok}/{args.requests} answered 200 within {args.timeout:g} s "
          f"({'kept-alive' if args.keepalive else 'new connection each'}), {took:.1f} s in all; "
          f"latency p50 {pct(ms, 50):.1f} ms, p99 {pct(ms, 99):.1f} ms, max {max(ms) if ms else float('nan'):.1f} ms")
    if failures:
        counts: dict[str, int] = {}
        for f in failures:
            counts[f] = counts.get(f, 0) + 1
        print("failures: " + "; ".join(f"{k} x{v}" for k, v in sorted(counts.items(), key=lambda kv: -kv[1])))
    if args.json:
        print(json.dumps({"requests": args.requests, "ok": ok, "p50_ms": pct(ms, 50) if ms else None,
                          "p99_ms": pct(ms, 99) if ms else None, "max_ms": max(ms) if ms else None,
                          "idle": args.idle, "trickle": args.trickle, "held": held, "reopened": attack.reopened,
                          "failures": failures}))
    if args.strict and (ok < args.requests or pct(ms, 99) > args.p99_ms):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
