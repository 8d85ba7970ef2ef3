"""A Flask-Sock WebSocket echo app: it takes the socket over through gunicorn.socket."""

from flask import Flask
from flask_sock import Sock  # type: ignore[import-untyped]

app = Flask(__name__)
sock = Sock(app)


@sock.route("/echo")
def echo(ws):  # type: ignore[no-untyped-def]
    while True:
        data = ws.receive()
        if data == "bye":
            ws.close()
            return
        ws.send(data)


@app.get("/")
def index() -> str:
    return "ok"
