"""Helper threads that never take the worker's signals.

Python runs signal handlers in the main thread, but the kernel may deliver a process signal
to any thread whose mask allows it and interrupt that thread's system call. Threads the
runtime starts (lifeline, exit watchdog, --reload watcher, gthread pool) block every
asynchronous signal, so TERM, INT, QUIT, USR1 and ALRM always land in the main thread.

Under ``-k gevent``/``-k eventlet`` the standard library is monkey-patched: a
``threading.Thread`` started then is a greenlet, and ``time.sleep``/``os.read`` yield to
the hub. The runtime's own helpers (lifeline, exit watchdog, --reload watcher) must keep
running when the hub is blocked or gone, so :func:`start_native` starts a real OS thread
with the thread primitive captured here at import (before any patching) and they use the
captured :data:`sleep` and :data:`read`.
"""

from __future__ import annotations

import _thread
import os
import signal
import threading
import time
from typing import Any, Callable

# The originals, captured before any monkey-patching (main imports this module first).
_start_new_thread = _thread.start_new_thread
sleep = time.sleep
read = os.read

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


def start_native(target: Callable[..., Any], name: str, *args: Any) -> None:
    """Like :func:`start`, but a real OS thread even when the standard library is
    monkey-patched (no ``threading.Thread`` object: the thread is a daemon by nature)."""

    del name  # kept for symmetry with start(); a raw thread has no name
    old = signal.pthread_sigmask(signal.SIG_BLOCK, _ASYNC_SIGNALS)
    try:
        _start_new_thread(target, args)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)
