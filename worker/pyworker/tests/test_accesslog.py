"""Access-log formatting (gunicorn atoms, escaping, JSON) and writing."""

from __future__ import annotations

import base64
import json
import os
import re
from typing import Any

from gorn_worker.accesslog import AccessLog, compile_format, escape
from gorn_worker.config import DEFAULT_ACCESS_LOG_FORMAT

ENV = {
    "REMOTE_ADDR": "10.1.2.3",
    "REQUEST_METHOD": "GET",
    "RAW_URI": "/p?q=1",
    "PATH_INFO": "/p",
    "QUERY_STRING": "q=1",
    "SERVER_PROTOCOL": "HTTP/1.1",
    "HTTP_REFERER": "http://ref/",
    "HTTP_USER_AGENT": 'agent "quoted"',
    "HTTP_X_REQUEST_ID": "abc",
    "CONTENT_TYPE": "text/x",
    "HTTP_AUTHORIZATION": "Basic " + base64.b64encode(b"alice:secret").decode(),
    "CUSTOM": "env-var",
}
HEADERS = [("Content-Type", "text/plain"), ("X-Out", "o")]


def fmt(f: str, env: dict = ENV, status: int = 200, sent: int = 42, dur: int = 1_234_567_890) -> str:
    return AccessLog("-", f).format(env, status, HEADERS, sent, dur)


def test_default_format() -> None:
    line = fmt(DEFAULT_ACCESS_LOG_FORMAT)
    assert re.fullmatch(
        r'10\.1\.2\.3 - alice \[\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d [+-]\d{4}\] "GET /p\?q=1 HTTP/1\.1" 200 42 '
        r'"http://ref/" "agent \\"quoted\\""',
        line,
    ), line


def test_all_atoms() -> None:
    atoms = ["h", "l", "u", "r", "s", "b", "B", "f", "a", "T", "M", "D", "L", "p", "m", "U", "q", "H"]
    line = fmt("|".join(f"%({a})s" for a in atoms))
    parts = line.split("|")
    assert parts == [
        "10.1.2.3", "-", "alice", "GET /p?q=1 HTTP/1.1", "200", "42", "42", "http://ref/",
        'agent \\"quoted\\"', "1", "1234", "1234567", "1.234567", f"<{os.getpid()}>", "GET", "/p", "q=1",
        "HTTP/1.1",
    ]


def test_header_and_env_atoms() -> None:
    line = fmt("%({x-request-id}i)s %({content-type}i)s %({x-out}o)s %({content-type}o)s %({CUSTOM}e)s %({nope}i)s %({nope}o)s %({nope}e)s")
    assert line == "abc text/x o text/plain env-var - - -"


def test_missing_and_unknown() -> None:
    env = {"REQUEST_METHOD": "GET"}
    assert fmt("%(h)s %(f)s %(a)s %(u)s %(zz)s %(q)s", env) == "- - - - - -"


def test_literal_percent_and_escaping() -> None:
    assert fmt("100%% %(s)s") == "100% 200"
    assert escape('a"b\\c\nd\x7f') == 'a\\"b\\\\c\\x0ad\\x7f'
    env = dict(ENV, RAW_URI="/x\r\ninjected")
    assert "\n" not in fmt("%(r)s", env)


def test_bad_basic_auth() -> None:
    assert fmt("%(u)s", dict(ENV, HTTP_AUTHORIZATION="Basic !!!")) == "-"
    assert fmt("%(u)s", dict(ENV, HTTP_AUTHORIZATION="Bearer x")) == "-"


def test_json_format() -> None:
    doc = json.loads(fmt("json"))
    assert doc["status"] == 200 and doc["method"] == "GET" and doc["uri"] == "/p?q=1"
    assert doc["remote_addr"] == "10.1.2.3" and doc["bytes"] == 42 and doc["duration_us"] == 1234567
    assert doc["user_agent"] == 'agent "quoted"' and isinstance(doc["ts"], float)


def test_compile_is_template_plus_getters() -> None:
    template, getters = compile_format('%(h)s "%(r)s" 5%%')
    assert template == '%s "%s" 5%%' and len(getters) == 2


def test_writes_one_line_and_reopens(tmp_path: Any) -> None:
    p = tmp_path / "access.log"
    log = AccessLog(str(p), "%(s)s %(U)s")
    log.write(ENV, 200, HEADERS, 1, 1000)
    os.rename(p, tmp_path / "access.log.1")
    log.write(ENV, 404, HEADERS, 1, 1000)
    log.reopen()
    log.write(ENV, 500, HEADERS, 1, 1000)
    log.close()
    assert (tmp_path / "access.log.1").read_text() == "200 /p\n404 /p\n"
    assert p.read_text() == "500 /p\n"
