"""What a test does when something it needs is missing: the one place tests skip.

A missing prerequisite (Flask, a file of the Go side) skips the test, or fails it when
``GORN_TEST_STRICT=1`` (as CI sets it), so that a run cannot pass green having tested
nothing. The Go side does the same in internal/testenv.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from types import ModuleType
from typing import NoReturn

import pytest

STRICT_VAR = "GORN_TEST_STRICT"


def strict() -> bool:
    return os.environ.get(STRICT_VAR) == "1"


def missing(reason: str) -> NoReturn:
    """End the test for a missing prerequisite: skip, or fail under GORN_TEST_STRICT=1."""
    if strict():
        pytest.fail(f"missing prerequisite ({STRICT_VAR}=1 makes this a failure): {reason}")
    pytest.skip(reason)


def require_module(name: str) -> ModuleType:
    """Import a module the test needs, or report it missing (at module level too)."""
    try:
        return importlib.import_module(name)
    except ImportError as e:
        if strict():
            pytest.fail(f"missing prerequisite ({STRICT_VAR}=1 makes this a failure): {name}: {e}")
        pytest.skip(f"{name} is not installed: {e}", allow_module_level=True)


def require_installed(name: str) -> None:
    """Report a package the test's subprocess needs missing, without importing it here
    (gevent and eventlet are imported, and patch, only in the worker)."""
    try:
        found = importlib.util.find_spec(name) is not None
    except (ImportError, ValueError) as e:
        found = False
        detail = str(e)
    else:
        detail = "not found"
    if not found:
        missing(f"{name} is not installed: {detail}")
