"""--reload: the worker notices a changed source file and tells the master (scoreboard word)."""

from __future__ import annotations

import os
import time
from pathlib import Path

from gorn_worker import scoreboard as sbm
from gorn_worker import watch
from harness import start_worker

APP = """
import helper
def application(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [helper.WORD.encode()]
"""


def touch(path: Path, seconds_later: float) -> None:
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + int(seconds_later * 1e9)))


def test_changed_reports_modified_and_removed_files(tmp_path: Path) -> None:
    a, b = tmp_path / "a.py", tmp_path / "b.py"
    a.write_text("x = 1\n")
    b.write_text("y = 1\n")
    seen: dict[str, int] = {}
    files = {str(a), str(b)}
    assert watch.changed(seen, files) is None  # the first look only records
    assert watch.changed(seen, files) is None
    touch(a, 1)
    assert watch.changed(seen, files) == str(a)
    assert watch.changed(seen, files) is None
    b.unlink()
    assert watch.changed(seen, files) == str(b)
    c = tmp_path / "c.py"
    c.write_text("")
    assert watch.changed(seen, files | {str(c)}) is None  # a new file joins the watch


def test_source_files_include_the_app_and_skip_the_runtime() -> None:
    files = watch.source_files(["/etc/hostname"])
    assert watch.__file__ in files or watch.__file__.startswith("/proc/")
    assert "/etc/hostname" in files
    assert not any(f.startswith("/proc/") for f in files)


def test_worker_counts_source_changes(tmp_path: Path) -> None:
    (tmp_path / "reloadme.py").write_text(APP)
    (tmp_path / "helper.py").write_text("WORD = 'one'\n")
    extra = tmp_path / "settings.toml"
    extra.write_text("")
    with start_worker("reloadme", cwd=tmp_path, reload=True, reload_extra_files=[str(extra)]) as w:
        assert w.get("/")[2] == b"one"
        time.sleep(1.2)  # the watcher's first look
        assert w.slot[sbm.W_RELOAD] == 0
        touch(tmp_path / "helper.py", 1)  # a module the app imported
        w.wait_slot(sbm.W_RELOAD, lambda v: v == (tmp_path / "helper.py").stat().st_mtime_ns, timeout=10)
        touch(extra, 2)
        w.wait_slot(sbm.W_RELOAD, lambda v: v == extra.stat().st_mtime_ns, timeout=10)
        assert "helper.py changed; asking the master to reload" in w.stderr()


def test_no_watching_without_reload(tmp_path: Path) -> None:
    (tmp_path / "reloadme.py").write_text(APP)
    (tmp_path / "helper.py").write_text("WORD = 'one'\n")
    with start_worker("reloadme", cwd=tmp_path) as w:
        touch(tmp_path / "helper.py", 1)
        time.sleep(2.5)
        assert w.slot[sbm.W_RELOAD] == 0
