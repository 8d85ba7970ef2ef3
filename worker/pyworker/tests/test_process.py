"""The real worker process: boot, scoreboard, signals, lifeline, drain, keep-alive."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from gorn_worker import scoreboard as sbm
from harness import APPS, parse_responses, read_response, read_until_close, start_worker


def test_serves_and_fills_the_scoreboard() -> None:
    with start_worker("basic:app", generation=5, slot=1) as w:
        s = w.slot
        assert s[sbm.W_PID] == w.proc.pid and s[sbm.W_GENERATION] == 5
        assert s[sbm.W_STATE] == sbm.STATE_READY
        w.wait_slot(sbm.W_ACCEPTING, lambda v: v == 1)
        status, h, body = w.get("/hello?x=1")
        assert status == 200 and body == b"Hello, World!" and h["server"] == "gorn/test"
        w.wait_slot(sbm.W_REQUESTS, lambda v: v == 1)
        assert s[sbm.W_BUSY_SINCE] == 0
        assert s.counter("GET", 2) == 1 and sum(s.histogram()) == 1
        assert s.desc() == b"GET /hello" and s[sbm.W_BYTES_SENT] == 13
        assert s[sbm.W_HEARTBEAT] > 0
        w.get("/nope", method="POST", body=b"abc")
        w.wait_slot(sbm.W_REQUESTS, lambda v: v == 2)
        assert s.counter("POST", 4) == 1
        assert w.stop() == 0
        assert s[sbm.W_STATE] == sbm.STATE_DRAINING


def test_zip_entry_point_like_the_master() -> None:
    with start_worker("basic:app", zip=True) as w:
        assert w.get("/hello")[2] == b"Hello, World!"
        assert open(f"/proc/{w.proc.pid}/comm").read().strip() == "gorn-worker"
        cmdline = open(f"/proc/{w.proc.pid}/cmdline", "rb").read()
        assert b"gorn: worker [test] slot=0" in cmdline
        assert w.stop() == 0


def test_term_lets_the_request_in_flight_finish() -> None:
    with start_worker("basic:app") as w:
        result: dict[str, Any] = {}

        def client() -> None:
            with w.connect(10) as c:
                c.sendall(b"GET /slow?t=0.6 HTTP/1.1\r\nHost: x\r\n\r\n")
                result["r"] = read_response(c, 10)
                c.settimeout(5)
                result["after"] = c.recv(10)

        t = threading.Thread(target=client)
        t.start()
        w.wait_slot(sbm.W_BUSY_SINCE, lambda v: v != 0)
        w.send_signal(signal.SIGTERM)
        w.wait_slot(sbm.W_STATE, lambda v: v == sbm.STATE_DRAINING)
        assert w.proc.wait(10) == 0
        t.join(10)
        status, h, body = result["r"]
        assert status == 200 and body == b"slept" and h["connection"] == "close"
        assert result["after"] == b""


def test_term_serves_the_listen_backlog() -> None:
    with start_worker("basic:app") as w:
        conns = []
        first = w.connect(10)
        first.sendall(b"GET /slow?t=0.5 HTTP/1.1\r\nHost: x\r\n\r\n")
        w.wait_slot(sbm.W_BUSY_SINCE, lambda v: v != 0)
        for _ in range(6):
            c = w.connect(10)
            c.sendall(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
            conns.append(c)
        time.sleep(0.05)
        w.send_signal(signal.SIGTERM)
        assert w.proc.wait(10) == 0
        outs = [read_until_close(c, 5) for c in [first] + conns]
        for c in [first] + conns:
            c.close()
        assert parse_responses(outs[0])[0][2] == b"slept"
        for out in outs[1:]:
            rs = parse_responses(out)
            assert rs and rs[0][0] == 200 and rs[0][2] == b"Hello, World!", out
            assert rs[0][1]["connection"] == "close"
        assert w.slot[sbm.W_REQUESTS] == 7


def test_term_while_idle_exits_promptly() -> None:
    with start_worker("basic:app") as w:
        w.wait_slot(sbm.W_ACCEPTING, lambda v: v == 1)
        t = time.monotonic()
        assert w.stop() == 0
        assert time.monotonic() - t < 2


def test_term_keeps_an_idle_kept_connection_for_its_next_request() -> None:
    """A draining worker never closes a kept connection under a client that may be using
    it: the next request is answered with Connection: close, then the worker exits."""
    with start_worker("basic:app", keepalive=10) as w, w.connect() as c:
        c.sendall(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_response(c)[0] == 200
        w.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        assert w.proc.poll() is None  # still holding the idle connection
        c.sendall(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
        s, h, _ = read_response(c)
        assert s == 200 and h["connection"] == "close"
        assert read_until_close(c, 2) == b""
        assert w.proc.wait(5) == 0


def test_term_closes_idle_kept_connections_at_the_drain_deadline() -> None:
    with start_worker("basic:app", keepalive=10, graceful_timeout=1) as w, w.connect() as c:
        c.sendall(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_response(c)[0] == 200
        t = time.monotonic()
        assert w.stop() == 0
        assert 0.7 < time.monotonic() - t < 2.5  # 90% of graceful_timeout
        assert read_until_close(c, 2) == b""


def test_term_while_idle_on_keepalive_ends_when_the_client_leaves() -> None:
    with start_worker("basic:app", keepalive=10) as w:
        c = w.connect()
        c.sendall(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_response(c)[0] == 200
        w.send_signal(signal.SIGTERM)
        time.sleep(0.2)
        t = time.monotonic()
        c.close()
        assert w.proc.wait(5) == 0
        assert time.monotonic() - t < 2


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGQUIT])
def test_fast_exit(sig: int) -> None:
    with start_worker("basic:app") as w, w.connect(10) as c:
        c.sendall(b"GET /slow?t=5 HTTP/1.1\r\nHost: x\r\n\r\n")
        w.wait_slot(sbm.W_BUSY_SINCE, lambda v: v != 0)
        t = time.monotonic()
        assert w.stop(sig) == 0
        assert time.monotonic() - t < 2
        assert read_until_close(c, 2) == b""


def test_term_during_boot_is_not_lost() -> None:
    with start_worker("slowboot:app", wait_ready=False) as w:
        w.wait_slot(sbm.W_PID, lambda v: v == w.proc.pid)
        time.sleep(0.4)  # inside the import's weakref callback
        w.send_signal(signal.SIGTERM)
        assert w.proc.wait(5) == 0
        assert w.slot[sbm.W_STATE] == sbm.STATE_DRAINING


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_exit_despite_a_stuck_non_daemon_thread(sig: int) -> None:
    with start_worker("stuckthread:app") as w:
        assert w.get("/")[2] == b"ok"
        t = time.monotonic()
        assert w.stop(sig) == 0
        assert time.monotonic() - t < 5


def test_lifeline_eof_exits() -> None:
    with start_worker("basic:app") as w:
        assert w.lifeline_w is not None
        os.close(w.lifeline_w)
        w.lifeline_w = None
        assert w.proc.wait(5) == 0


def test_ignored_signals_and_usr1(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    with start_worker("basic:app", access_log=str(log), access_log_format="%(s)s %(U)s") as w:
        for sig in (signal.SIGHUP, signal.SIGTTIN, signal.SIGTTOU, signal.SIGUSR2, signal.SIGWINCH):
            w.send_signal(sig)
        time.sleep(0.1)
        assert w.proc.poll() is None
        assert w.get("/hello")[0] == 200
        os.rename(log, tmp_path / "access.log.1")
        w.send_signal(signal.SIGUSR1)
        time.sleep(0.2)
        assert w.get("/nope")[0] == 404
        assert w.stop() == 0
    assert (tmp_path / "access.log.1").read_text() == "200 /hello\n"
    assert log.read_text() == "404 /nope\n"


def test_signal_burst_does_not_corrupt_memory() -> None:
    """Regression: faulthandler's small sigaltstack overflowed with nested signal frames."""
    burst = (signal.SIGHUP, signal.SIGTTIN, signal.SIGTTOU, signal.SIGUSR2, signal.SIGWINCH, signal.SIGUSR1)
    for _ in range(3):
        with start_worker("basic:app") as w:
            for sig in burst:
                w.send_signal(sig)
            time.sleep(0.05)
            assert w.get("/hello")[0] == 200
            assert w.stop() == 0, w.stderr()


def test_import_error_exits_4_with_one_line() -> None:
    with start_worker("nope_missing_module:app", wait_ready=False) as w:
        assert w.proc.wait(10) == 4
        err = w.stderr()
        assert "ModuleNotFoundError: No module named 'nope_missing_module'" in err
        assert len([l for l in err.splitlines() if "[ERROR]" in l]) == 1
        assert "Traceback" not in err
        assert w.slot[sbm.W_STATE] == sbm.STATE_BOOTING


def test_syntax_error_exits_4_naming_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "badsyntax.py").write_text("import os\n\ndef app(:\n    pass\n")
    with start_worker("badsyntax:app", pythonpath=[str(tmp_path)], wait_ready=False) as w:
        assert w.proc.wait(10) == 4
        err = w.stderr()
        assert "SyntaxError" in err and f"{tmp_path}/badsyntax.py:3" in err


def test_check_mode_imports_and_exits() -> None:
    with start_worker("basic:app", wait_ready=False, check=True, listen_fds=None) as w:
        assert w.proc.wait(10) == 0
        assert w.slot[sbm.W_PID] == w.proc.pid
    with start_worker("nope_missing_module:app", wait_ready=False, check=True, listen_fds=None) as w:
        assert w.proc.wait(10) == 4
        assert "ModuleNotFoundError" in w.stderr()


def test_not_callable_exits_4() -> None:
    with start_worker("basic:not_callable", wait_ready=False, log_format="json") as w:
        assert w.proc.wait(10) == 4
        doc = json.loads(w.stderr().strip().splitlines()[-1])
        assert doc["level"] == "error" and "not callable" in doc["msg"]


@pytest.mark.parametrize(
    "settings",
    [
        "not json",
        json.dumps({"listen_fds": [3]}),
        json.dumps({"app": "basic:app", "listen_fds": [3], "keepalive": "x"}),
    ],
)
def test_bad_settings_exit_3(settings: str) -> None:
    with start_worker("basic:app", raw_settings=settings, wait_ready=False) as w:
        assert w.proc.wait(10) == 3
        err = w.stderr()
        assert len(err.strip().splitlines()) == 1 and "invalid worker settings" in err


def test_bad_listen_fd_exits_3() -> None:
    r, wfd = os.pipe()
    try:
        doc = json.dumps({"app": "basic:app", "listen_fds": [r]})
        with start_worker("basic:app", raw_settings=doc, wait_ready=False, pass_fds=(r,)) as w:
            assert w.proc.wait(10) == 3
            assert "not a socket" in w.stderr()
        doc = json.dumps({"app": "basic:app", "listen_fds": [987]})
        with start_worker("basic:app", raw_settings=doc, wait_ready=False) as w:
            assert w.proc.wait(10) == 3
            assert "listen fd 987: Bad file descriptor" in w.stderr()
    finally:
        os.close(r)
        os.close(wfd)


def test_app_exception_500_with_traceback() -> None:
    with start_worker("basic:app") as w:
        status, h, body = w.get("/error")
        assert status == 500 and h["connection"] == "close"
        w.wait_slot(sbm.W_REQUESTS, lambda v: v == 1)
        assert w.slot.counter("GET", 5) == 1
        err = w.stderr()
        assert "Error handling request GET /error" in err
        assert "Traceback (most recent call last)" in err and "ZeroDivisionError" in err
        assert w.get("/hello")[0] == 200  # the worker survives


def test_kept_connection_survives_a_new_client() -> None:
    """An idle kept connection is held in the epoll set while the worker serves others:
    it is never closed under its client (the reset a keep-alive proxy turns into a 502)."""
    with start_worker("basic:app", keepalive=10) as w:
        idle = w.connect()
        idle.sendall(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
        s, h, _ = read_response(idle)
        assert s == 200 and "connection" not in h
        time.sleep(0.05)
        t = time.monotonic()
        status, _, body = w.get("/hello")
        assert status == 200 and time.monotonic() - t < 1.0
        for _ in range(3):
            idle.sendall(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
            s, h, _ = read_response(idle)
            assert s == 200 and "connection" not in h
        assert w.slot[sbm.W_CONNECTIONS] == 1
        idle.close()
        w.wait_slot(sbm.W_CONNECTIONS, lambda v: v == 0)


@pytest.mark.parametrize("workers,closed", [(1, False), (2, True)])
def test_queued_client_gets_its_turn(workers: int, closed: bool) -> None:
    """A client waiting on the listener while the worker is busy: with siblings, the busy
    worker's kept connection is answered with Connection: close (one FIFO queue, the
    kernel's); alone, the worker keeps it and takes the waiting client next."""
    with start_worker("basic:app", keepalive=10, workers=workers) as w, w.connect() as a:
        a.sendall(b"GET /slow?t=0.3 HTTP/1.1\r\nHost: x\r\n\r\n")
        w.wait_slot(sbm.W_BUSY_SINCE, lambda v: v != 0)
        with w.connect() as b:
            b.sendall(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
            time.sleep(0.05)
            s, h, _ = read_response(a)
            assert s == 200 and (h.get("connection") == "close") == closed
            assert read_response(b)[0] == 200


def test_keepalive_heartbeat_while_idle() -> None:
    with start_worker("basic:app", keepalive=3) as w, w.connect() as c:
        c.sendall(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
        read_response(c)
        hb = w.slot[sbm.W_HEARTBEAT]
        w.wait_slot(sbm.W_HEARTBEAT, lambda v: v > hb, timeout=2.5)
        assert w.slot[sbm.W_ACCEPTING] == 1  # holding a kept connection, still taking new ones
        assert w.slot[sbm.W_CONNECTIONS] == 1 and w.slot[sbm.W_BUSY_SINCE] == 0


def test_sigabrt_dumps_the_python_stack() -> None:
    with start_worker("basic:app") as w, w.connect() as c:
        c.sendall(b"GET /sleepy HTTP/1.1\r\nHost: x\r\n\r\n")
        w.wait_slot(sbm.W_BUSY_SINCE, lambda v: v != 0)
        assert w.slot.desc() == b"GET /sleepy"
        w.send_signal(signal.SIGABRT)
        assert w.proc.wait(10) == -signal.SIGABRT
        err = w.stderr()
        src = (APPS / "basic.py").read_text().splitlines()
        line = next(i + 1 for i, l in enumerate(src) if "SLEEPY-LINE" in l)
        assert "Fatal Python error: Aborted" in err
        assert re.search(rf'File ".*basic\.py", line {line} in sleepy', err), err


def test_unix_socket_and_two_listeners(tmp_path: Path) -> None:
    path = str(tmp_path / "w.sock")
    with start_worker("basic:echo", unix=path, listeners=2) as w:
        status, _, body = w.get("/u")
        doc = json.loads(body)
        assert status == 200 and doc["remote_addr"] == "" and doc["server_name"] == "test"
        tcp = w.listeners[1].getsockname()
        with socket.create_connection(tcp, timeout=5) as c:
            c.sendall(b"GET /t HTTP/1.1\r\nHost: h:1\r\nConnection: close\r\n\r\n")
            rs = parse_responses(read_until_close(c))
        doc = json.loads(rs[0][2])
        assert doc["remote_addr"] == "127.0.0.1" and doc["path"] == "/t"
        assert w.stop() == 0


def test_two_listeners_drain_on_term() -> None:
    with start_worker("basic:app", listeners=2) as w:
        first = w.connect(10)
        first.sendall(b"GET /slow?t=0.4 HTTP/1.1\r\nHost: x\r\n\r\n")
        w.wait_slot(sbm.W_BUSY_SINCE, lambda v: v != 0)
        others = []
        for l in w.listeners:
            for _ in range(2):
                c = socket.create_connection(l.getsockname(), timeout=10)
                c.sendall(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
                others.append(c)
        time.sleep(0.05)
        w.send_signal(signal.SIGTERM)
        assert w.proc.wait(10) == 0
        for c in [first] + others:
            rs = parse_responses(read_until_close(c, 5))
            c.close()
            assert rs and rs[0][0] == 200


def test_forwarded_headers_from_trusted_peer() -> None:
    hdrs = {"X-Forwarded-For": "203.0.113.7", "X-Forwarded-Proto": "https"}
    with start_worker("basic:echo") as w:
        doc = json.loads(w.get("/", headers=hdrs)[2])
        assert doc["remote_addr"] == "127.0.0.1" and doc["scheme"] == "https"  # as gunicorn
    with start_worker("basic:echo", forwarded_real_ip=True) as w:
        doc = json.loads(w.get("/", headers=hdrs)[2])
        assert doc["remote_addr"] == "203.0.113.7" and doc["scheme"] == "https"
    with start_worker("basic:echo", forwarded_allow_ips=["192.0.2.1"]) as w:
        doc = json.loads(w.get("/", headers=hdrs)[2])
        assert doc["remote_addr"] == "127.0.0.1" and doc["scheme"] == "http"
        assert doc["server_name"] == "test" and doc["remote_port"].isdigit()


def test_json_logs_and_stdout_access_log() -> None:
    with start_worker("basic:app", log_format="json", log_level="debug", access_log="-", access_log_format="json") as w:
        w.get("/hello")
        w.get("/error")
        assert w.stop() == 0
        assert w.proc.stdout is not None
        lines = w.proc.stdout.read().decode().splitlines()
        docs = [json.loads(l) for l in lines]
        assert [d["status"] for d in docs] == [200, 500] and docs[0]["path"] == "/hello"
        err_lines = [l for l in w.stderr().splitlines() if l.strip()]
        recs = [json.loads(l) for l in err_lines]
        tb = [r for r in recs if "traceback" in r]
        assert tb and "ZeroDivisionError" in tb[0]["traceback"]
        assert all(r["logger"] == "worker" and r["slot"] == 0 for r in recs)


def test_malformed_input_never_kills_the_worker() -> None:
    junk = [
        b"\x00\x01\x02\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffff\r\n",
        b"GET /" + b"x" * 70000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
        b"\xff" * 1000 + b"\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\n" + b"A: b\r\n" * 200 + b"\r\n",
    ]
    with start_worker("basic:echo") as w:
        for j in junk:
            out = w.raw(j, timeout=5)
            assert re.match(rb"HTTP/1\.1 (400|414|431) ", out), out[:100]
        assert w.get("/ok")[0] == 200
        assert w.proc.poll() is None


def test_print_output_survives_a_kill() -> None:
    """stdout is line-buffered: what the app printed is in the log although it was killed."""
    with start_worker("printkill:app", env={"PYTHONUNBUFFERED": ""}) as w:  # block-buffered unless the worker says otherwise
        with w.connect() as c:
            c.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            read_until_close(c, 5)
        assert w.proc.wait(10) == -signal.SIGKILL
        assert "printed before the kill" in w.stderr()


def test_a_streaming_response_that_keeps_sending_is_not_a_hang() -> None:
    """--timeout measures from the last part of the response sent, not from the start."""
    with start_worker("basic:app") as w, w.connect() as c:
        c.sendall(b"GET /stream?n=6&pause=0.3 HTTP/1.1\r\nHost: x\r\n\r\n")
        w.wait_slot(sbm.W_BUSY_SINCE, lambda v: v != 0)
        first = w.slot[sbm.W_BUSY_SINCE]
        time.sleep(0.8)
        assert w.slot[sbm.W_BUSY_SINCE] > first + 400_000_000  # restarted by the chunks sent
        status, _, body = read_response(c)
        assert status == 200 and body.count(b"chunk") == 6


def test_refused_request_is_logged_naming_the_peer() -> None:
    """As gunicorn: a request refused before the app is a warning with the client's address."""
    with start_worker("basic:app") as w, w.connect() as c:
        c.sendall(b"get / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_response(c)[0] == 400
        deadline = time.monotonic() + 5
        while "Invalid request from ip=127.0.0.1: 400" not in w.stderr():
            assert time.monotonic() < deadline, w.stderr()
            time.sleep(0.02)
