"""An app that takes the connection over (WebSockets through ``gunicorn.socket``) owns it:
Flask-Sock, unchanged, echoes under gthread, and the worker closes quietly afterwards."""

from __future__ import annotations

from harness import start_worker
from prereq import require_module

require_module("flask_sock")
simple_websocket = require_module("simple_websocket")


def test_flask_sock_echo_under_gthread() -> None:
    with start_worker("websock:app", worker_class="gthread", threads=4, log_level="debug") as w:
        host, port = w.addr[0], w.addr[1]
        ws = simple_websocket.Client.connect(f"ws://{host}:{port}/echo")
        try:
            for msg in ("hello", "world" * 100):
                ws.send(msg)
                assert ws.receive(timeout=5) == msg
            ws.send("bye")
        finally:
            ws.close()
        assert w.get("/")[0] == 200  # the worker is still serving
        assert w.stop() == 0
        err = w.stderr()
    assert "Error handling request" not in err and "Traceback" not in err, err[-2000:]
    assert "took the connection over" in err
