"""An app whose ``/block`` runs CPU work for 3 s without yielding: it blocks an async
worker's hub (the heartbeat test)."""

from __future__ import annotations

import time
from typing import Any, Callable, Iterable


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    if environ["PATH_INFO"] == "/block":
        end = time.monotonic() + 3
        while time.monotonic() < end:
            pass
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"done"]
