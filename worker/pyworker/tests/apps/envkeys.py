"""An app that answers with what an async worker class puts in the environ."""

from __future__ import annotations

import json
from typing import Any, Callable, Iterable


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    sock = environ.get("gunicorn.socket")
    inp = environ.get("eventlet.input")
    doc = {
        "multithread": environ["wsgi.multithread"],
        "multiprocess": environ["wsgi.multiprocess"],
        "gunicorn_socket": sock is not None and sock.fileno() >= 0,
        "timeout": sock.gettimeout() if sock is not None else "none",
        "eventlet_input_is_socket": inp is not None and inp.get_socket() is sock,
        "body": environ["wsgi.input"].read().decode(),
    }
    out = json.dumps(doc).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(out)))])
    return [out]
