"""Error-log line formats."""

from __future__ import annotations

import json
import os
import re
import tempfile

from gorn_worker.logs import ErrorsStream, Logger


def capture(fmt: str, level: str = "debug") -> tuple[Logger, tempfile._TemporaryFileWrapper]:
    f = tempfile.TemporaryFile()
    return Logger(level, fmt, slot=3, generation=2, fd=f.fileno()), f  # type: ignore[return-value]


def read(f: tempfile._TemporaryFileWrapper) -> str:
    f.seek(0)
    return f.read().decode()  # type: ignore[no-any-return]


def test_text_format() -> None:
    log, f = capture("text")
    log.info("hello")
    line = read(f)
    assert re.fullmatch(rf"\[\d{{4}}-\d\d-\d\d \d\d:\d\d:\d\d [+-]\d{{4}}\] \[{os.getpid()}\] \[INFO\] worker\[3\]: hello\n", line)


def test_levels_filter() -> None:
    log, f = capture("text", "warning")
    log.debug("d")
    log.info("i")
    log.warning("w")
    log.critical("c")
    out = read(f)
    assert "[WARNING]" in out and "[CRITICAL]" in out and "[INFO]" not in out and "[DEBUG]" not in out


def test_json_with_traceback_is_one_line() -> None:
    log, f = capture("json")
    try:
        raise ValueError("bad")
    except ValueError:
        log.exception("failed")
    out = read(f)
    assert out.count("\n") == 1
    doc = json.loads(out)
    assert doc["level"] == "error" and doc["logger"] == "worker" and doc["msg"] == "failed"
    assert doc["pid"] == os.getpid() and doc["slot"] == 3 and doc["generation"] == 2
    assert isinstance(doc["ts"], float) and "ValueError: bad" in doc["traceback"]


def test_text_traceback_follows() -> None:
    log, f = capture("text")
    try:
        _ = 1 / 0
    except ZeroDivisionError:
        log.exception("oops")
    out = read(f)
    assert "] [ERROR] worker[3]: oops\nTraceback (most recent call last):" in out
    assert out.endswith("ZeroDivisionError: division by zero\n")


def test_errors_stream_flush_makes_one_record() -> None:
    log, f = capture("json")
    s = ErrorsStream(log)
    s.write("Traceback:\n")
    s.write("  line\n")
    s.flush()
    s.flush()
    out = read(f).splitlines()
    assert len(out) == 1 and json.loads(out[0])["msg"] == "Traceback:\n  line"


def test_reopen(tmp_path: object) -> None:
    import pathlib

    p = pathlib.Path(str(tmp_path)) / "err.log"
    fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    target = os.dup(fd)
    log = Logger("info", "text", fd=target, path=str(p))
    log.info("one")
    os.rename(p, str(p) + ".1")
    log.reopen()
    log.info("two")
    os.close(fd)
    os.close(target)
    assert "one" in pathlib.Path(str(p) + ".1").read_text() and "two" in p.read_text()
