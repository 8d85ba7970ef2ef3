"""An app that starts a non-daemon thread that never ends (the worker must still exit)."""

from __future__ import annotations

import threading
import time
from typing import Any, Callable, Iterable


def _forever() -> None:
    while True:
        time.sleep(3600)


threading.Thread(target=_forever, name="app-background", daemon=False).start()


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    start_response("200 OK", [])
    return [b"ok"]
