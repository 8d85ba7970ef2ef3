"""The hook host's bookkeeping: the arbiter-like state the master-side hooks see."""

from __future__ import annotations

import json
import os
import socket
import threading
from pathlib import Path
from typing import Any, Iterator

import pytest

from gorn_worker import config, hookhost, logs

HOOKS = """
calls = []
def pre_fork(server, worker): calls.append(("pre_fork", worker))
def child_exit(server, worker): calls.append(("child_exit", worker, sorted(server.WORKERS)))
def nworkers_changed(server, new, old): calls.append(("nworkers_changed", new, old, server.num_workers))
def when_ready(server): raise ValueError("not ready")
def on_reload(server): calls.append(("on_reload", VERSION))
VERSION = 1
"""


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen()
    yield s
    s.close()


def make_host(tmp_path: Path, listener: socket.socket, src: str = HOOKS) -> tuple[hookhost.Host, Path]:
    conf = tmp_path / "gunicorn.conf.py"
    conf.write_text(src)
    settings, _ = config.Settings.from_mapping({"app": "x:app", "listen_fds": [listener.fileno()], "config_file": str(conf)})
    log = logs.Logger("info", "text", fd=os.open(os.devnull, os.O_WRONLY), name="hooks")
    return hookhost.Host(settings, log), conf


def calls(host: hookhost.Host) -> list[Any]:
    recorded: list[Any] = host.fns["pre_fork"].__globals__["calls"]
    return recorded


def test_worker_objects_and_workers_table(tmp_path: Path, listener: socket.socket) -> None:
    host, _ = make_host(tmp_path, listener)
    server = host.server
    assert server.pid == os.getppid() and server.address == [f"http://127.0.0.1:{listener.getsockname()[1]}"]
    assert host.handle({"call": "nworkers_changed", "new": 2, "old": None}) is None
    assert server.num_workers == 2
    host.handle({"call": "pre_fork", "worker": {"age": 1, "slot": 0, "generation": 1}})
    _, booting = calls(host)[-1]
    assert booting.pid == "[booting]" and booting.age == 1 and booting.ppid == server.pid
    host.handle({"call": "spawned", "worker": {"age": 1, "slot": 0, "generation": 1, "pid": 4242}})
    assert server.WORKERS == {4242: booting} and booting.pid == 4242
    host.handle({"call": "child_exit", "worker": {"age": 1, "slot": 0, "generation": 1, "pid": 4242, "status": 9}})
    name, exited, left = calls(host)[-1]
    # gunicorn passes child_exit the worker object pre_fork saw, already out of WORKERS
    assert exited is booting and left == [] and not exited.alive and exited.exit_status == 9
    assert calls(host)[0] == ("nworkers_changed", 2, None, 2)


def test_a_raising_hook_is_reported_and_the_host_serves_on(tmp_path: Path, listener: socket.socket) -> None:
    host, _ = make_host(tmp_path, listener)
    assert host.handle({"call": "when_ready"}) == "ValueError: not ready"
    assert host.handle({"call": "on_starting"}) is None  # not defined: nothing to run
    assert host.handle({"call": "nosuch"}) == "unknown call 'nosuch'"


def test_reload_reads_the_file_again(tmp_path: Path, listener: socket.socket) -> None:
    host, conf = make_host(tmp_path, listener)
    conf.write_text(HOOKS.replace("VERSION = 1", "VERSION = 2"))
    settings = json.loads(host.server.cfg.to_json())
    settings["timeout"] = 7.0
    settings["listen_fds"] = []  # the master's view: this process keeps its own fds
    assert host.handle({"call": "on_reload", "settings": settings}) is None
    assert calls(host)[-1] == ("on_reload", 2)
    assert host.server.timeout == 7.0 and host.server.cfg.listen_fds == (listener.fileno(),)


def test_state_briefs_a_restarted_host(tmp_path: Path, listener: socket.socket) -> None:
    host, _ = make_host(tmp_path, listener)
    host.handle({"call": "state", "num_workers": 3, "workers": [{"pid": 7, "age": 5, "slot": 1, "generation": 2}]})
    assert host.server.num_workers == 3 and host.server.WORKERS[7].age == 5 and host.server.worker_age == 5


def test_serve_answers_in_order_and_queues_passed_fds(tmp_path: Path, listener: socket.socket) -> None:
    host, _ = make_host(tmp_path, listener)
    ours, theirs = socket.socketpair()
    t = threading.Thread(target=hookhost.serve, args=(host, theirs), daemon=True)
    t.start()
    r, w = os.pipe()
    socket.send_fds(ours, [b'{"id": 1, "call": "state", "num_workers": 1, "workers": []}\n'], [r])
    ours.sendall(b'{"id": 2, "call": "when_ready"}\n{"id": 3, "call": "fork", "worker": {}}\n')
    got = b""
    while got.count(b"\n") < 3:
        got += ours.recv(4096)
    replies = [json.loads(line) for line in got.splitlines()]
    assert replies[0] == {"id": 1}
    assert replies[1] == {"id": 2, "error": "ValueError: not ready"}
    assert replies[2]["id"] == 3 and "not a mold" in replies[2]["error"]
    # The pipe arrived as a new descriptor, queued for a fork ("fd": true takes it).
    assert len(host.fds) == 1 and os.fstat(host.fds[0]).st_ino == os.fstat(r).st_ino
    ours.close()
    t.join(5)
    assert not t.is_alive()
    for fd in (r, w, host.fds[0]):
        os.close(fd)
