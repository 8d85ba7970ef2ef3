"""Loading the WSGI app from ``module[:expr]`` without ``eval``.

``expr`` (default ``application``) may be a name, a dotted attribute path, or a call of
one with literal arguments only: ``app``, ``api.app``, ``create_app()``,
``create_app("prod", debug=False)``. It is parsed with :mod:`ast`; arguments go through
``ast.literal_eval``; anything else is rejected.
"""

from __future__ import annotations

import ast
import importlib
import os
import re
import sys
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

_MODULE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*\Z")


class AppSpecError(ValueError):
    """The ``app`` setting is malformed."""


class AppLoadError(Exception):
    """The app could not be imported or is not callable (exit code 4).

    ``str(e)`` is the one log line; ``detail`` is the full traceback when there is one.
    """

    def __init__(self, message: str, detail: Optional[str] = None) -> None:
        super().__init__(message)
        self.detail = detail


@dataclass(frozen=True)
class AppSpec:
    module: str
    attrs: tuple[str, ...]
    call: bool = False
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    text: str = ""


def _dotted(node: ast.expr) -> list[str]:
    if isinstance(node, ast.Name):
        return [node.id]
    if isinstance(node, ast.Attribute):
        return _dotted(node.value) + [node.attr]
    raise AppSpecError("expected a name or a dotted name")


def parse_spec(spec: str) -> AppSpec:
    """Parse ``module[:expr]``; raises AppSpecError."""
    text = spec.strip()
    module, sep, expr = text.partition(":")
    module = module.strip()
    expr = expr.strip() if sep else "application"
    if not _MODULE.match(module):
        raise AppSpecError(f"app {spec!r}: {module!r} is not a module name")
    if not expr:
        raise AppSpecError(f"app {spec!r}: empty name after ':'")
    try:
        tree = ast.parse(expr, mode="eval").body
    except SyntaxError:
        raise AppSpecError(f"app {spec!r}: {expr!r} is not a name or a call") from None
    try:
        if isinstance(tree, ast.Call):
            attrs = _dotted(tree.func)
            args = tuple(ast.literal_eval(a) for a in tree.args)
            kwargs: dict[str, Any] = {}
            for kw in tree.keywords:
                if kw.arg is None:
                    raise AppSpecError("**kwargs are not allowed")
                kwargs[kw.arg] = ast.literal_eval(kw.value)
            return AppSpec(module, tuple(attrs), True, args, kwargs, text)
        return AppSpec(module, tuple(_dotted(tree)), False, (), {}, text)
    except ValueError as e:  # literal_eval (AppSpecError is a ValueError too)
        msg = str(e) if isinstance(e, AppSpecError) else "arguments must be literals"
        raise AppSpecError(f"app {spec!r}: {msg}") from None


def _stdlib_dirs() -> tuple[str, ...]:
    """The standard library's directories: a frame there is never the app's line (os.environ
    is frozen since 3.11, plain os.py before). Asked only when an import failed: sysconfig
    costs every worker's start-up milliseconds."""
    import sysconfig

    paths = sysconfig.get_paths()
    return tuple(os.path.join(d, "") for d in {paths["stdlib"], paths["platstdlib"]} if d)


def _user_frame(tb: Any) -> str:
    """file:line of the innermost traceback frame outside importlib and the stdlib."""
    where = ""
    stdlib = _stdlib_dirs()
    for fs in traceback.extract_tb(tb):
        name = fs.filename
        if "importlib" in name or name.startswith("<frozen") or (name.startswith(stdlib) and "site-packages" not in name):
            continue
        where = f"{name}:{fs.lineno}"
    return where


def describe_exception(e: BaseException) -> str:
    """``Type: message`` with file:line for syntax errors and the raising user frame."""
    name = type(e).__name__
    if isinstance(e, SyntaxError):
        loc = f"{e.filename}:{e.lineno}" if e.filename else f"line {e.lineno}"
        return f"{name}: {e.msg} ({loc})"
    msg = str(e)
    line = f"{name}: {msg}" if msg else name
    where = _user_frame(e.__traceback__)
    if where and not isinstance(e, ModuleNotFoundError):
        line += f" (at {where})"
    return line


def load(spec_text: str) -> Callable[..., Any]:
    """Import and return the WSGI callable; raises AppLoadError (exit code 4)."""
    try:
        spec = parse_spec(spec_text)
    except AppSpecError as e:
        raise AppLoadError(str(e)) from None
    try:
        obj: Any = importlib.import_module(spec.module)
    except Exception as e:
        raise AppLoadError(
            f"cannot import app module {spec.module!r}: {describe_exception(e)}",
            "".join(traceback.format_exception(type(e), e, e.__traceback__)),
        ) from None
    path = spec.module
    for a in spec.attrs:
        try:
            obj = getattr(obj, a)
        except AttributeError:
            raise AppLoadError(f"app {spec.text!r}: {path!r} has no attribute {a!r}") from None
        path += "." + a
    if spec.call:
        try:
            obj = obj(*spec.args, **spec.kwargs)
        except Exception as e:
            raise AppLoadError(
                f"app {spec.text!r}: calling {path}() failed: {describe_exception(e)}",
                "".join(traceback.format_exception(type(e), e, e.__traceback__)),
            ) from None
    if not callable(obj):
        raise AppLoadError(f"app {spec.text!r} is not callable (got {type(obj).__name__})")
    return obj  # type: ignore[no-any-return]


def setup_path(cwd: Optional[str] = None, extra: tuple[str, ...] = ()) -> None:
    """Put the cwd and the pythonpath entries at the front of sys.path (in that order)."""
    entries = [cwd if cwd is not None else os.getcwd(), *extra]
    for p in reversed(entries):
        if p in sys.path:
            sys.path.remove(p)
        sys.path.insert(0, p)
