"""An app that takes the connection over (WebSockets through ``gunicorn.socket``) owns it:
Flask-Sock, unchanged, echoes under gthread, and the worker closes quietly afterwards."""

from __future__ import annotations

from typing import Any

from harness import start_worker
from prereq import require_module

require_module("flask_sock")
simple_websocket = require_module("simple_websocket")


def close(ws: Any) -> None:
    """Close from our side unless the server's close came first."""
    try:
        ws.close()
    except simple_websocket.ConnectionClosed:
        pass


def test_flask_sock_echo_under_gthread() -> None:
    with start_worker("websock:app", worker_class="gthread", threads=4, log_level="debug") as w:
        host, port = w.addr[0], w.addr[1]
        ws = simple_websocket.Client.connect(f"ws://{host}:{port}/echo")
        try:
            for msg in ("hello", "world" * 100):
                ws.send(msg)
                assert ws.receive(timeout=5) == msg
            ws.send("bye")  # the server ends the WebSocket
        finally:
            close(ws)
        assert w.get("/")[0] == 200  # the worker is still serving
        assert w.stop() == 0
        err = w.stderr()
    assert "Error handling request" not in err and "Traceback" not in err, err[-2000:]
    assert "took the connection over" in err


def test_an_open_websocket_is_in_flight_but_not_a_hang() -> None:
    """An upgraded connection is a long-lived stream by design: it counts in flight, and
    --timeout leaves it alone (the gthread main thread keeps the heartbeat going)."""
    from gorn_worker import scoreboard as sbm

    with start_worker("websock:app", worker_class="gthread", threads=4) as w:
        ws = simple_websocket.Client.connect(f"ws://{w.addr[0]}:{w.addr[1]}/echo")
        try:
            ws.send("ping")
            assert ws.receive(timeout=5) == "ping"
            w.wait_slot(sbm.W_IN_FLIGHT, lambda v: v == 1)
            assert w.slot[sbm.W_BUSY_SINCE] == 0
            ws.send("bye")
        finally:
            close(ws)
        w.wait_slot(sbm.W_IN_FLIGHT, lambda v: v == 0)
