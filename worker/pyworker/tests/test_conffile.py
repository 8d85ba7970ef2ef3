"""Python config files: the master's JSON report, and the worker-side hooks in a real worker."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from gorn_worker import conffile
from harness import start_worker

SCRIPT = Path(conffile.__file__).read_text()


def report(tmp_path: Path, src: str) -> tuple[dict, str]:
    path = tmp_path / "gunicorn.conf.py"
    path.write_text(src)
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(path)], capture_output=True, text=True, timeout=30, check=True
    )
    return json.loads(done.stdout), done.stderr


def test_report_sorts_names(tmp_path: Path) -> None:
    out, err = report(
        tmp_path,
        "import os\nfrom os import getpid\nbind = ('a:1', 'b:2')\nworkers = 3\ntimeout = 2.5\n"
        "reload = False\n_private = 1\nnothing = None\nheaders = {'a': 1}\n"
        "print('said by the file')\ndef post_fork(server, worker):\n    pass\n",
    )
    assert out == {
        "settings": {"bind": ["a:1", "b:2"], "workers": 3, "timeout": 2.5, "reload": False},
        "callables": ["getpid", "post_fork"],
        "other": ["headers"],
    }
    assert "said by the file" in err
    assert not (tmp_path / "__pycache__").exists()  # evaluating the file writes nothing


@pytest.mark.parametrize(
    "src, want",
    [
        ("x = 1\ny = 1 / 0\n", "ZeroDivisionError: division by zero (line 2)"),
        ("bind = (\n", "SyntaxError: "),
        ("import no_such_module_here\n", "ModuleNotFoundError: No module named 'no_such_module_here' (line 1)"),
        ("raise SystemExit(3)\n", "SystemExit: 3 (line 1)"),
    ],
)
def test_report_errors_are_one_line(tmp_path: Path, src: str, want: str) -> None:
    out, _ = report(tmp_path, src)
    assert set(out) == {"error"} and out["error"].startswith(want) and "\n" not in out["error"]


def test_report_missing_file(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path / "nope.py")], capture_output=True, text=True, timeout=30)
    assert "does not exist" in json.loads(done.stdout)["error"]


HOOKS = """
import os
def post_fork(server, worker):
    worker.log.info("post_fork pid=%d master=%d slot=%d", worker.pid, server.pid, worker.slot)
    os.environ["SET_BY_POST_FORK"] = "yes"
def post_worker_init(worker):
    worker.log.info("post_worker_init app=%s", callable(worker.wsgi))
def worker_int(worker):
    worker.log.info("worker_int alive=%s", worker.alive)
def worker_exit(server, worker):
    worker.log.info("worker_exit alive=%s", worker.alive)
"""


@pytest.mark.parametrize("sig, hooks", [(signal.SIGTERM, ["worker_exit"]), (signal.SIGQUIT, ["worker_int", "worker_exit"])])
def test_worker_runs_its_hooks(tmp_path: Path, sig: int, hooks: list[str]) -> None:
    conf = tmp_path / "gunicorn.conf.py"
    conf.write_text(HOOKS)
    with start_worker("basic:app", config_file=str(conf), slot=2) as w:
        status, _, _ = w.get("/hello")
        assert status == 200
        assert w.stop(sig) == 0
        err = w.stderr()
    assert f"post_fork pid={w.proc.pid} master=" in err and "slot=2" in err
    assert "post_worker_init app=True" in err
    for name in ("worker_int", "worker_exit"):
        assert (name in err) == (name in hooks), err
    assert "worker_exit alive=False" in err or "worker_exit" not in hooks
    assert err.index("post_fork") < err.index("post_worker_init")


@pytest.mark.parametrize("hook", ["post_fork", "post_worker_init"])
def test_a_failing_boot_hook_fails_the_boot(tmp_path: Path, hook: str) -> None:
    conf = tmp_path / "gunicorn.conf.py"
    args = "server, worker" if hook == "post_fork" else "worker"
    conf.write_text(f"def {hook}({args}):\n    raise RuntimeError('no database')\n")
    w = start_worker("basic:app", config_file=str(conf), wait_ready=False)
    try:
        assert w.proc.wait(timeout=20) == 3
        assert f"{hook} hook raised RuntimeError: no database" in w.stderr()
    finally:
        w.close()


def test_a_failing_exit_hook_is_logged(tmp_path: Path) -> None:
    conf = tmp_path / "gunicorn.conf.py"
    conf.write_text("def worker_exit(server, worker):\n    raise ValueError('flush failed')\n")
    with start_worker("basic:app", config_file=str(conf)) as w:
        assert w.stop() == 0
        assert "worker_exit hook failed" in w.stderr() and "ValueError: flush failed" in w.stderr()


def test_unreadable_config_file_fails_the_boot(tmp_path: Path) -> None:
    w = start_worker("basic:app", config_file=str(tmp_path / "gone.py"), wait_ready=False)
    try:
        assert w.proc.wait(timeout=20) == 3
        assert "does not exist" in w.stderr()
    finally:
        w.close()


REQUEST_HOOKS = """
def pre_request(worker, req):
    req.marker = "set-in-pre"
    if req.path == "/refused":
        raise PermissionError("refused by pre_request")
    worker.log.info("pre %s %s %s %s", req.method, req.path, req.query, dict(req.headers).get("X-TRACE"))
def post_request(worker, req, environ, resp):
    worker.log.info("post %s %s %s %s %s", req.path, resp.status_code, resp.status, req.marker, environ["REQUEST_METHOD"])
"""


def test_request_hooks_wrap_each_request(tmp_path: Path) -> None:
    conf = tmp_path / "gunicorn.conf.py"
    conf.write_text(REQUEST_HOOKS)
    with start_worker("basic:app", config_file=str(conf)) as w:
        assert w.get("/hello?a=1", headers={"X-Trace": "abc"})[0] == 200
        assert w.get("/nope")[0] == 404
        assert w.get("/refused")[0] == 500
        assert w.stop() == 0
        err = w.stderr()
    assert "pre GET /hello a=1 abc" in err and "post /hello 200 200 OK set-in-pre GET" in err
    assert "post /nope 404" in err
    assert "PermissionError: refused by pre_request" in err and "post /refused 500 500 set-in-pre" in err


def test_post_request_gets_the_arguments_it_takes(tmp_path: Path) -> None:
    conf = tmp_path / "gunicorn.conf.py"
    conf.write_text("def post_request(worker, req):\n    worker.log.info('two args %s', req.path)\n")
    with start_worker("basic:app", config_file=str(conf)) as w:
        assert w.get("/hello")[0] == 200
        assert w.stop() == 0
        assert "two args /hello" in w.stderr()


def test_report_python_module_form(tmp_path: Path) -> None:
    (tmp_path / "deploy_settings.py").write_text("workers = 4\nbind = '127.0.0.1:7000'\n")
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, "python:deploy_settings"],
        capture_output=True, text=True, timeout=30, check=True, env={"PYTHONPATH": str(tmp_path)},
    )
    assert json.loads(done.stdout)["settings"] == {"workers": 4, "bind": "127.0.0.1:7000"}


def test_secure_scheme_headers_from_the_config_file(tmp_path: Path) -> None:
    """gunicorn's secure_scheme_headers (a dict, config file only) replaces the default table."""
    conf = tmp_path / "gunicorn.conf.py"
    conf.write_text('secure_scheme_headers = {"X-SCHEME": "secure"}\n')
    with start_worker("basic:echo", config_file=str(conf)) as w:
        _, _, body = w.get("/", headers={"X-Scheme": "secure"})
        assert json.loads(body)["scheme"] == "https"
        _, _, body = w.get("/", headers={"X-Forwarded-Proto": "https"})
        assert json.loads(body)["scheme"] == "http"  # the default table is replaced
    conf.write_text('secure_scheme_headers = ["X-SCHEME"]\n')
    with start_worker("basic:echo", config_file=str(conf), wait_ready=False) as w:
        assert w.proc.wait(20) == 3
        assert "secure_scheme_headers must be a dict" in w.stderr()
