"""A small Flask app for the process tests (real-world framework behaviour)."""

from __future__ import annotations

from typing import Iterator

from flask import Flask, Response, jsonify, request

app = Flask(__name__)


@app.get("/")
def index() -> str:
    return "Hello from Flask"


@app.post("/form")
def form() -> Response:
    return jsonify(dict(request.form))


@app.post("/upload")
def upload() -> Response:
    data = request.get_data()
    return jsonify({"size": len(data), "head": data[:8].decode("latin-1")})


@app.get("/stream")
def stream() -> Response:
    def gen() -> Iterator[str]:
        for i in range(3):
            yield f"part{i};"

    return Response(gen(), mimetype="text/plain")


@app.get("/url")
def url() -> Response:
    return jsonify({"url": request.url, "remote": request.remote_addr, "script_root": request.script_root})
