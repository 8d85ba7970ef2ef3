"""Helper threads that never take the worker's signals.

Python runs signal handlers in the main thread, but the kernel may deliver a process signal
to any thread whose mask allows it and interrupt that thread's system call. Threads the
runtime starts (lifeline, exit watchdog, --reload watcher, gthread pool) block every
asynchronous signal, so TERM, INT, QUIT, USR1 and ALRM always land in the main thread.
"""

from __future__ import annotations

import signal
import threading
from typing import Any, Callable

# Synchronous signals are the faulting thread's own; they cannot be blocked usefully.
_ASYNC_SIGNALS = set(signal.valid_signals()) - {signal.SIGSEGV, signal.SIGBUS, signal.SIGFPE, signal.SIGILL}


def start(target: Callable[..., Any], name: str, *args: Any) -> threading.Thread:
    """Start a daemon thread running target(*args) with every asynchronous signal blocked."""
    t = threading.Thread(target=target, args=args, name=name, daemon=True)
    old = signal.pthread_sigmask(signal.SIG_BLOCK, _ASYNC_SIGNALS)  # the new thread inherits it
    try:
        t.start()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)
    return t
