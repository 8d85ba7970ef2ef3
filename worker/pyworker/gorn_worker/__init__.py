"""gorn_worker: the Python worker runtime of gorn (standard library only).

The Go master execs it with its settings in ``GORN_WORKER`` (see worker/CONTRACT.md);
:func:`gorn_worker.main.main` is the entry point.
"""

__version__ = "0.1.0"
