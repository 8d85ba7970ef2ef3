"""A real Flask app through a worker process."""

from __future__ import annotations

import json

from harness import read_response, start_worker
from prereq import require_module

require_module("flask")


def test_flask_app() -> None:
    with start_worker("flaskapp:app", root_path="/base") as w:
        status, h, body = w.get("/base/")
        assert status == 200 and body == b"Hello from Flask" and h["content-length"] == "16"
        status, _, body = w.get(
            "/base/form", method="POST", body=b"a=1&b=two",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        assert status == 200 and json.loads(body) == {"a": "1", "b": "two"}
        big = b"0123456789" * 100_000
        status, _, body = w.get("/base/upload", method="POST", body=big)
        assert json.loads(body) == {"size": len(big), "head": "01234567"}
        status, h, body = w.get("/base/stream")
        assert h.get("transfer-encoding") == "chunked" and body == b"part0;part1;part2;"
        assert w.get("/base/missing")[0] == 404
        status, h, body = w.get("/base/", method="HEAD")
        assert status == 200 and body == b"" and h["content-length"] == "16"
        doc = json.loads(w.get("/base/url?x=1", headers={"Host": "example.com:8080"})[2])
        assert doc == {"url": "http://example.com:8080/base/url?x=1", "remote": "127.0.0.1", "script_root": "/base"}
        with w.connect() as c:  # keep-alive on one connection, chunked upload
            for _ in range(3):
                c.sendall(b"GET /base/ HTTP/1.1\r\nHost: x\r\n\r\n")
                assert read_response(c)[2] == b"Hello from Flask"
            c.sendall(
                b"POST /base/upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"4\r\nabcd\r\n3\r\nefg\r\n0\r\n\r\n"
            )
            assert json.loads(read_response(c)[2]) == {"size": 7, "head": "abcdefg"}
        assert w.stop() == 0
        assert "Traceback" not in w.stderr()
