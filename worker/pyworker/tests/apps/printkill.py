"""Prints a line, then dies by SIGKILL in the middle of the request (as an OOM kill would)."""

import os
import signal
from typing import Any, Callable, Iterable


def app(environ: dict, start_response: Callable[..., Any]) -> Iterable[bytes]:
    print("printed before the kill")
    os.kill(os.getpid(), signal.SIGKILL)
    return []
