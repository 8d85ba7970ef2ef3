"""Entry point of the zip the gorn master execs: ``python /proc/self/fd/N "gorn: worker ..."``
(``GORN_HOOKHOST`` set: the hook host, gorn_worker/hookhost.py).

The zip holds this interpreter's bytecode of the runtime, if it was built for it, under
``cpython-3XX/`` (worker/bytecode/README.md): that directory goes first on ``sys.path``.
"""

import os
import sys

sys.path.insert(0, "%s/cpython-%d%d" % (sys.path[0], sys.version_info[0], sys.version_info[1]))

if "GORN_HOOKHOST" in os.environ:
    from gorn_worker.hookhost import main
else:
    from gorn_worker.main import main

raise SystemExit(main())
