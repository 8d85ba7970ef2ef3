"""An app whose import sleeps inside a weakref callback, where Python drops exceptions.

A TERM during that sleep raises FastExit inside the callback: Python prints "Exception
ignored" and carries on, so the worker must remember the stop request by itself.
"""

from __future__ import annotations

import time
import weakref
from typing import Any, Callable, Iterable


class _Thing:
    pass


def _slow_callback(ref: Any) -> None:
    time.sleep(1.5)


_thing = _Thing()
_ref = weakref.ref(_thing, _slow_callback)
del _thing  # runs the callback now


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    start_response("200 OK", [])
    return [b"booted"]
