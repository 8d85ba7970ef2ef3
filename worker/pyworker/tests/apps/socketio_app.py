"""A Flask-SocketIO app for the async worker classes: ``echo`` events come back as ``echo``.

``SIO_ASYNC_MODE`` picks python-engineio's async mode (``eventlet`` or ``gevent``): with
both libraries installed its automatic choice would be eventlet, as it would be for an
app whose environment has both.
"""

from __future__ import annotations

import os
from importlib import import_module
from typing import Any

from flask import Flask

flask_socketio: Any = import_module("flask_socketio")  # no type information shipped

app = Flask(__name__)
socketio = flask_socketio.SocketIO(app, async_mode=os.environ.get("SIO_ASYNC_MODE") or None)


@app.get("/")
def index() -> str:
    return "socketio app"


@socketio.on("echo")
def echo(data: Any) -> None:
    flask_socketio.emit("echo", data)
