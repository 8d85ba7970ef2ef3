"""Entry point of the zip the gorn master execs: ``python /proc/self/fd/N "gorn: worker ..."``.

The zip holds this interpreter's bytecode of the runtime, if it was built for it, under
``cpython-3XX/`` (worker/bytecode/README.md): that directory goes first on ``sys.path``.
"""

import sys

sys.path.insert(0, "%s/cpython-%d%d" % (sys.path[0], sys.version_info[0], sys.version_info[1]))

from gorn_worker.main import main

raise SystemExit(main())
