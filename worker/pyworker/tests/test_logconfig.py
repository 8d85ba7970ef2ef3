"""gunicorn's logconfig_dict / logconfig_json / logconfig in a worker, with real files."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from gorn_worker import logconfig

HERE = Path(__file__).resolve().parent.parent


def run(code: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """Each case in a fresh interpreter: dictConfig changes process-wide state."""
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(HERE)},
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_dict_over_gunicorns_defaults(tmp_path: Path) -> None:
    out = tmp_path / "app.log"
    p = run(
        f"""
        import logging
        from gorn_worker import logconfig
        logconfig.configure({{
            "formatters": {{"plain": {{"format": "APP %(name)s %(levelname)s %(message)s"}}}},
            "handlers": {{
                "file": {{"class": "logging.FileHandler", "filename": {str(out)!r}, "formatter": "plain"}},
                "out": {{"class": "logging.StreamHandler", "stream": "ext://sys.stdout", "formatter": "plain"}},
            }},
            "loggers": {{"myapp": {{"handlers": ["file"], "level": "DEBUG", "propagate": False}}}},
            "root": {{"handlers": ["out"], "level": "INFO"}},
        }}, "", "")
        logging.getLogger("myapp").debug("to the file")
        logging.getLogger("other").info("to stdout through the root")
        logging.getLogger("gunicorn.error").warning("borrowed")
        """,
        tmp_path,
    )
    assert p.returncode == 0, p.stderr
    assert out.read_text() == "APP myapp DEBUG to the file\n"
    assert "APP other INFO to stdout through the root" in p.stdout
    # The dict's "loggers" replaced the defaults' (a shallow update, as gunicorn's):
    # gunicorn.error has no handler of its own and propagates to the root (stdout).
    assert "APP gunicorn.error WARNING borrowed" in p.stdout and "borrowed" not in p.stderr


def test_dict_keeps_gunicorns_default_handlers(tmp_path: Path) -> None:
    p = run(
        """
        import logging
        from gorn_worker import logconfig
        logconfig.configure({"root": {"level": "DEBUG", "handlers": ["console"]}}, "", "")
        logging.getLogger("app").debug("dbg")
        logging.getLogger("gunicorn.error").error("err")
        """,
        tmp_path,
    )
    assert p.returncode == 0, p.stderr
    assert "[DEBUG] dbg" in p.stdout and "[ERROR] err" in p.stderr


def test_json_file(tmp_path: Path) -> None:
    cfg = tmp_path / "logging.json"
    cfg.write_text(json.dumps({"root": {"level": "WARNING", "handlers": ["error_console"]}}))
    p = run(
        f"""
        import logging
        from gorn_worker import logconfig
        print(logconfig.configure(None, {str(cfg)!r}, ""))
        logging.getLogger("x").info("hidden")
        logging.getLogger("x").warning("shown")
        """,
        tmp_path,
    )
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == f"logconfig_json {cfg}"
    assert "[WARNING] shown" in p.stderr and "hidden" not in p.stderr + p.stdout


def test_ini_file(tmp_path: Path) -> None:
    cfg = tmp_path / "logging.ini"
    cfg.write_text(
        textwrap.dedent("""\
        [loggers]
        keys=root
        [handlers]
        keys=out
        [formatters]
        keys=f
        [logger_root]
        level=INFO
        handlers=out
        [handler_out]
        class=FileHandler
        formatter=f
        args=('%(here)s/ini.log',)
        [formatter_f]
        format=INI %(message)s
        """)
    )
    p = run(
        f"""
        import logging
        from gorn_worker import logconfig
        logconfig.configure(None, "", {str(cfg)!r})
        logging.getLogger("y").info("hello")
        """,
        tmp_path,
    )
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "ini.log").read_text() == "INI hello\n"  # %(here)s: the file's directory


def test_errors_name_the_setting(tmp_path: Path) -> None:
    with pytest.raises(logconfig.LogConfigError, match="logconfig_dict: "):
        logconfig.configure({"handlers": {"h": {"class": "no.such.Handler"}}}, "", "")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(logconfig.LogConfigError, match=f"logconfig_json {bad}: "):
        logconfig.configure(None, str(bad), "")
    with pytest.raises(logconfig.LogConfigError, match="logconfig /nonexistent.ini: not found"):
        logconfig.configure(None, "", "/nonexistent.ini")
    assert logconfig.configure(None, "", "") is None
    logging.getLogger().handlers.clear()


def test_nothing_configured_imports_nothing(tmp_path: Path) -> None:
    """Without a logging configuration, logging.config (and the handlers, socketserver and
    pickle it pulls in) is not imported: it would cost every worker's start-up."""
    p = run(
        """
        import sys
        from gorn_worker import logconfig
        assert logconfig.configure(None, "", "") is None
        print("logging.config" in sys.modules)
        """,
        tmp_path,
    )
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "False"
