"""The gorn example app: every route the integration tests and benchmarks use.

Run it with `make run` from the repository root, or `gorn app:app` from this directory.
"""

import os
import time
from collections.abc import Iterator

from flask import Flask, Response, jsonify, request

app = Flask(__name__)

# About 1 KB of JSON: a realistic small API response.
DOCUMENT = {
    "service": "gorn-example",
    "items": [
        {"id": i, "name": f"item-{i}", "price": round(i * 1.25, 2), "tags": ["a", "b", "c"]}
        for i in range(16)
    ],
}


@app.get("/")
def hello() -> Response:
    return Response("Hello, World!\n", mimetype="text/plain")


@app.get("/json")
def document() -> Response:
    return jsonify(DOCUMENT)


@app.post("/echo")
def echo() -> Response:
    # Read in sized pieces: PEP 3333 (and wsgiref.validate) want read(size) calls; the
    # server ends the stream at the end of the body, chunked or not.
    read = request.stream.read
    body = b"".join(iter(lambda: read(65536), b""))
    return Response(body, mimetype=request.mimetype or "application/octet-stream")


@app.get("/stream")
def stream() -> Response:
    count = int(request.args.get("n", "5"))

    def generate() -> Iterator[str]:
        for i in range(count):
            yield f"chunk {i}\n"

    return Response(generate(), mimetype="text/plain")


@app.get("/slow")
def slow() -> Response:
    ms = int(request.args.get("ms", "1000"))
    time.sleep(ms / 1000)  # the hang test looks for this line in the stack dump
    return Response(f"slept {ms} ms in {os.getpid()}\n", mimetype="text/plain")


@app.get("/work")
def work() -> Response:
    """A typical request: some CPU (templating, serialising) and a wait on a backend."""
    cpu_ms = float(request.args.get("cpu_ms", "2"))
    io_ms = float(request.args.get("io_ms", "8"))
    end = time.thread_time() + cpu_ms / 1000
    n = 0
    while time.thread_time() < end:  # CPU time of this thread, so a busy neighbour does not shorten it
        n += 1
    time.sleep(io_ms / 1000)
    return Response(f"cpu {cpu_ms} ms, io {io_ms} ms\n", mimetype="text/plain")


@app.get("/error")
def error() -> Response:
    raise RuntimeError("this endpoint always fails")


@app.get("/pid")
def pid() -> Response:
    return Response(f"{os.getpid()}\n", mimetype="text/plain")


def create_app(name: str = "default") -> Flask:
    """A factory, for `gorn 'app:create_app("prod")'`."""
    app.config["NAME"] = name
    return app
