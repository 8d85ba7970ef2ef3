"""gorn: a drop-in replacement for gunicorn whose master is a Go binary.

This package only finds the `gorn` binary that the wheel installed next to the
interpreter's scripts; gorn itself is that binary.
"""

from __future__ import annotations

import os
import sys
import sysconfig

__all__ = ["find_gorn_bin"]


def find_gorn_bin() -> str:
    """Return the path of the gorn binary installed with this package."""
    exe = "gorn"
    candidates = [sysconfig.get_path("scripts")]
    if sys.flags.no_user_site == 0:
        # pip install --user puts scripts in the user scheme.
        scheme = f"{os.name}_user"
        if scheme in sysconfig.get_scheme_names():
            candidates.append(sysconfig.get_path("scripts", scheme))
    for directory in candidates:
        path = os.path.join(directory, exe)
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    raise FileNotFoundError(f"the gorn binary is not in {' or '.join(candidates)}")
