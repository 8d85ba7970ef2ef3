"""In-process CPU cost of gorn's per-request path on each request path (pure Python, native).

One loopback TCP connection; each round puts wrk's request in the connection's buffer, finds
the head, parses it and serves it (RequestHandler.serve: app call, response, scoreboard), and
the client reads the response. Prints process CPU microseconds per request, best of 5, for
the plain WSGI hello app, the Flask example's hello and its JSON route; ROUNDS interleaves
the two paths. Run from the repository root with the bench venv (Flask installed) after
`make native`:

    .bench-venv/bin/python bench/request_cost.py [ROUNDS]
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def one_path(path: str, app_name: str, n: int) -> float:
    sys.path[:0] = [str(ROOT / "worker/pyworker"), str(ROOT / "worker/pyworker/tests"), str(ROOT / "examples/flask")]
    from gorn_worker import native
    from gorn_worker.http import parse_request
    from gorn_worker.logs import Logger
    from gorn_worker.request import RequestHandler
    from gorn_worker.scoreboard import Scoreboard
    from harness import make_settings

    kind, _ = native.select("1" if path == "native" else "0")
    assert kind == path, kind
    if app_name == "hello":
        from wsgi_hello import application as app

        target = "/"
    else:
        from app import app  # type: ignore[no-redef]

        target = "/" if app_name == "flask" else "/json"
    st = make_settings(log_level="warning", forwarded_allow_ips=["127.0.0.1"])
    h = RequestHandler(app, st, Logger(st.log_level, st.log_format, fd=2), Scoreboard(-1, 0))
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    cli = socket.create_connection(srv.getsockname())
    sock, addr = srv.accept()
    conn, base, proxy = h.open_connection(sock, addr, "127.0.0.1", "8000", True)
    raw = f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1:8000\r\n\r\n".encode()

    def serve() -> None:
        conn.buf = raw
        head = conn.next_head()
        assert head is not None
        h.serve(conn, parse_request(head, conn, base, h.root_path, proxy))
        cli.recv(65536)

    for _ in range(n // 5):
        serve()
    best = float("inf")
    for _ in range(5):
        t0 = time.process_time()
        for _ in range(n):
            serve()
        best = min(best, (time.process_time() - t0) / n * 1e6)
    return best


def main() -> None:
    if len(sys.argv) == 4:  # one measurement, in a fresh interpreter
        print(f"{one_path(sys.argv[1], sys.argv[2], int(sys.argv[3])):.2f}")
        return
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    print("| app | pure Python (us/request) | native (us/request) |\n|---|---|---|")
    for app_name, n in (("hello", 20000), ("flask", 4000), ("json", 4000)):
        got: dict[str, list[str]] = {"python": [], "native": []}
        for _ in range(rounds):
            for path, results in got.items():
                out = subprocess.run([sys.executable, __file__, path, app_name, str(n)], check=True, capture_output=True, text=True)
                results.append(out.stdout.strip())
        print(f"| {app_name} | {' / '.join(got['python'])} | {' / '.join(got['native'])} |")


if __name__ == "__main__":
    main()
