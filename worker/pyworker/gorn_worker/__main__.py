"""``python -m gorn_worker`` (tests and manual runs; the master execs the zip instead)."""

from gorn_worker.main import main

raise SystemExit(main())
