"""App spec parsing (ast, literals only) and loading."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from gorn_worker.app import AppLoadError, AppSpecError, load, parse_spec, setup_path

APPS = Path(__file__).resolve().parent / "apps"


@pytest.fixture(autouse=True)
def apps_on_path() -> Any:
    sys.path.insert(0, str(APPS))
    yield
    sys.path.remove(str(APPS))


def test_parse_spec_forms() -> None:
    s = parse_spec("pkg.mod")
    assert s.module == "pkg.mod" and s.attrs == ("application",) and not s.call
    s = parse_spec("pkg.mod:app")
    assert s.attrs == ("app",)
    s = parse_spec("m:holder.wsgi")
    assert s.attrs == ("holder", "wsgi")
    s = parse_spec("m:create_app()")
    assert s.call and s.args == () and s.kwargs == {}
    s = parse_spec('m:create_app("prod", 3, debug=False, opts={"a": [1, 2]})')
    assert s.args == ("prod", 3) and s.kwargs == {"debug": False, "opts": {"a": [1, 2]}}
    s = parse_spec("m:factories.make()")
    assert s.attrs == ("factories", "make")


@pytest.mark.parametrize(
    "spec",
    [
        "m:create_app(os.environ)",
        "m:create_app(x)",
        "m:create_app(*a)",
        "m:create_app(**k)",
        "m:__import__('os').system('x')",
        "m:a[0]",
        "m:a + b",
        "m:lambda: 1",
        "m:",
        "1m:app",
        "m-x:app",
        "m:app; import os",
        "",
    ],
)
def test_parse_spec_rejects(spec: str) -> None:
    with pytest.raises(AppSpecError):
        parse_spec(spec)


def test_load_variants() -> None:
    assert load("basic:hello").__name__ == "hello"
    assert load("basic:holder.wsgi").__name__ == "hello"
    f = load('basic:create_app("Hi")')
    out: list = []
    assert f({}, lambda s, h: out.append(s)) == [b"Hi"]


def test_load_errors() -> None:
    with pytest.raises(AppLoadError, match=r"ModuleNotFoundError: No module named 'nope_missing'"):
        load("nope_missing:app")
    with pytest.raises(AppLoadError, match="has no attribute 'missing'"):
        load("basic:missing")
    with pytest.raises(AppLoadError, match="not callable"):
        load("basic:not_callable")
    with pytest.raises(AppLoadError, match="is not a module name"):
        load("bad name:app")


def load_error(tmp_path: Path, module: str, source: str, spec: str) -> AppLoadError:
    """The AppLoadError of loading spec when tmp_path/module.py holds source."""
    (tmp_path / f"{module}.py").write_text(source)
    sys.path.insert(0, str(tmp_path))
    try:
        with pytest.raises(AppLoadError) as ei:
            load(spec)
    finally:
        sys.path.remove(str(tmp_path))
    return ei.value


def test_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    msg = str(load_error(tmp_path, "broken_syntax_mod", "x = 1\ndef f(:\n", "broken_syntax_mod:app"))
    assert "SyntaxError" in msg and "broken_syntax_mod.py:2" in msg


def test_import_time_exception_names_location(tmp_path: Path) -> None:
    e = load_error(tmp_path, "raising_mod", "import os\n\nCONFIG = os.environ['GORN_TEST_DEFINITELY_UNSET']\n", "raising_mod")
    msg = str(e)
    assert "KeyError: 'GORN_TEST_DEFINITELY_UNSET'" in msg and "raising_mod.py:3" in msg
    assert e.detail and "Traceback" in e.detail


def test_setup_path_order() -> None:
    saved = list(sys.path)
    try:
        setup_path("/cwd-x", ("/pp1", "/pp2"))
        assert sys.path[:3] == ["/cwd-x", "/pp1", "/pp2"]
    finally:
        sys.path[:] = saved
