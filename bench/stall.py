"""DESIGN.md section 2's stall test: 1% of requests stall 300 ms; how long do the others wait?

Starts gorn on the example app with N workers, runs C keep-alive clients (each a thread
with one persistent connection, reconnecting when the server says Connection: close) for
D seconds; each request is GET /slow?ms=300 with probability P, else GET /pid. Prints the
p50/p99/max latency of the requests that did not stall, how the requests spread across
worker pids, reconnects and errors.

    python3 bench/stall.py [--gorn bin/gorn] [--python .venv/bin/python] [-w 4] [-c 8]
                           [-d 10] [-p 0.01] [--class sync]
"""

from __future__ import annotations

import argparse
import http.client
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_up(port: int, deadline: float) -> None:
    while time.monotonic() < deadline:
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            c.request("GET", "/pid")
            if c.getresponse().status == 200:
                c.close()
                return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"gorn on port {port} did not come up")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gorn", default=str(ROOT / "bin" / "gorn"))
    ap.add_argument("--python", default=str(ROOT / ".venv" / "bin" / "python"))
    ap.add_argument("-w", "--workers", type=int, default=4)
    ap.add_argument("-c", "--clients", type=int, default=8)
    ap.add_argument("-d", "--duration", type=float, default=10.0)
    ap.add_argument("-p", "--stall-probability", type=float, default=0.01)
    ap.add_argument("--stall-ms", type=int, default=300)
    ap.add_argument("--class", dest="worker_class", default="sync")
    args = ap.parse_args()

    port = free_port()
    cmd = [args.gorn, "--python", args.python, "-w", str(args.workers), "-k", args.worker_class,
           "-b", f"127.0.0.1:{port}", "--log-level", "warning", "--keep-alive", "75", "app:app"]
    server = subprocess.Popen(cmd, cwd=ROOT / "examples" / "flask")
    try:
        wait_up(port, time.monotonic() + 20)
        lat: list[float] = []
        pids: Counter[str] = Counter()
        errors: list[str] = []
        reconnects = [0]
        lock = threading.Lock()
        end = time.monotonic() + args.duration

        def client(seed: int) -> None:
            rnd = random.Random(seed)
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            mine: list[float] = []
            seen: Counter[str] = Counter()
            while time.monotonic() < end:
                stall = rnd.random() < args.stall_probability
                path = f"/slow?ms={args.stall_ms}" if stall else "/pid"
                t = time.monotonic()
                try:
                    conn.request("GET", path)
                    r = conn.getresponse()
                    body = r.read()
                except (OSError, http.client.HTTPException) as e:
                    with lock:
                        errors.append(f"{path}: {e!r}")
                    conn.close()
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                    continue
                elapsed = time.monotonic() - t
                if r.status != 200:
                    with lock:
                        errors.append(f"{path}: HTTP {r.status}")
                if not stall:
                    mine.append(elapsed)
                    seen[body.strip().decode()] += 1
                if r.getheader("Connection", "").lower() == "close":
                    conn.close()
                    with lock:
                        reconnects[0] += 1
            conn.close()
            with lock:
                lat.extend(mine)
                pids.update(seen)

        threads = [threading.Thread(target=client, args=(i,)) for i in range(args.clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(args.duration + 30)
        lat.sort()
        n = len(lat)
        if not n:
            print("no requests completed", file=sys.stderr)
            return 1
        q = lambda f: lat[min(n - 1, int(f * n))] * 1000  # noqa: E731
        spread = sorted(pids.values(), reverse=True)
        print(f"class={args.worker_class} workers={args.workers} clients={args.clients} "
              f"stall={args.stall_probability:.2%} x {args.stall_ms} ms, {args.duration:.0f} s")
        print(f"non-stalled requests: {n}  p50 {q(0.5):.1f} ms  p99 {q(0.99):.1f} ms  max {lat[-1] * 1000:.1f} ms")
        print(f"per worker: {spread}  (max/min {spread[0] / max(spread[-1], 1):.2f})")
        print(f"reconnects (Connection: close): {reconnects[0]}  errors: {len(errors)}")
        for e in errors[:5]:
            print("  ", e)
        return 1 if errors else 0
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(40)
        except subprocess.TimeoutExpired:
            server.kill()


if __name__ == "__main__":
    sys.exit(main())
