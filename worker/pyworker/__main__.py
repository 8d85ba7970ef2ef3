"""Entry point of the zip the gorn master execs: ``python /proc/self/fd/N "gorn: worker ..."``."""

from gorn_worker.main import main

raise SystemExit(main())
