"""`python -m gorn ARGS`: run the gorn binary with ARGS, replacing this interpreter."""

from __future__ import annotations

import os
import sys

from gorn import find_gorn_bin


def main() -> None:
    try:
        gorn = find_gorn_bin()
    except FileNotFoundError as e:
        sys.exit(f"gorn: {e}")
    # exec, not a child process: signals (TERM, HUP, USR2, ...) reach the master directly,
    # and it may be PID 1.
    os.execv(gorn, [gorn, *sys.argv[1:]])


if __name__ == "__main__":
    main()
