"""``--reload``: watch the app's source files and ask the master for a reload.

A daemon thread polls, every second, the modification time of every file behind a loaded
module (modules imported later join the watch) and of the extra files. On a change it
logs the file and stores the change's time (the new mtime) in the scoreboard's reload
word. Every worker sees the same save with the same time, so the master reloads once per
save, as on HUP: one worker at a time, each new one ready before an old one stops, and if
the changed code does not import, the old workers keep serving until the next save.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Iterable, Optional

from . import threads
from .logs import Logger
from .scoreboard import W_RELOAD, Scoreboard

INTERVAL = 1.0


def source_files(extra: Iterable[str]) -> set[str]:
    """Files behind the loaded modules (not the embedded runtime), plus the extra ones."""
    files = set(extra)
    for mod in list(sys.modules.values()):
        path: Optional[str] = getattr(mod, "__file__", None)
        if path and not path.startswith("/proc/"):
            files.add(path)
    return files


def _mtime(path: str) -> int:
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return -1  # gone (or not there yet): a change when it was there before


def change_time(path: str) -> int:
    """When a changed file changed: its mtime, or now if it is gone."""
    mtime = _mtime(path)
    return mtime if mtime > 0 else time.time_ns()


def changed(seen: dict[str, int], files: set[str]) -> Optional[str]:
    """Update seen with the files' mtimes; returns one that changed since the last call."""
    found = None
    for path in files:
        mtime = _mtime(path)
        before = seen.get(path)
        seen[path] = mtime
        if before is not None and before != mtime and found is None:
            found = path
    return found


def start(sb: Scoreboard, log: Logger, extra: Iterable[str], interval: float = INTERVAL) -> None:
    """Start the watcher thread (signals stay with the main thread; a real thread with
    the original sleep even under gevent/eventlet monkey-patching)."""
    extra = list(extra)

    def run() -> None:
        seen: dict[str, int] = {}
        changed(seen, source_files(extra))
        while True:
            threads.sleep(interval)
            path = changed(seen, source_files(extra))
            if path is not None:
                log.info(f"{path} changed; asking the master to reload the workers")
                sb.words[W_RELOAD] = max(sb.words[W_RELOAD], change_time(path))

    threads.start_native(run, "gorn-reload")
