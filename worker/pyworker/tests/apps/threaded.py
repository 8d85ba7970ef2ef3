"""A test app for the gthread worker: requests that only finish when run at the same time.

- ``/barrier?n=N``  waits (10 s at most) until N requests are inside it: 200 if they met, 500 if not
- ``/gate?t=S``     waits (S, default 10 s, at most) until ``/open`` is requested: 200 ``passed``
                    (or ``timed out``)
- ``/open``         opens the gate (and closes it again for the next test when called with ?reset)
- ``/env``          200 with ``wsgi.multithread`` and the thread name
"""

from __future__ import annotations

import threading
from typing import Any, Callable, Iterable
from urllib.parse import parse_qs

_lock = threading.Lock()
_barriers: dict[int, threading.Barrier] = {}
_gate = threading.Event()


def app(environ: dict, start_response: Callable[..., Any]) -> Iterable[bytes]:
    path = environ["PATH_INFO"]
    query = {k: v[0] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}
    if path == "/barrier":
        n = int(query.get("n", "2"))
        with _lock:
            barrier = _barriers.setdefault(n, threading.Barrier(n))
        barrier.wait(timeout=10)  # BrokenBarrierError -> 500 if the requests ran one at a time
        body = b"met"
    elif path == "/gate":
        body = b"passed" if _gate.wait(timeout=float(query.get("t", "10"))) else b"timed out"
    elif path == "/open":
        _gate.set()
        body = b"open"
    elif path == "/env":
        body = f"{environ['wsgi.multithread']} {threading.current_thread().name}".encode()
    else:
        start_response("404 Not Found", [("Content-Length", "0")])
        return [b""]
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
