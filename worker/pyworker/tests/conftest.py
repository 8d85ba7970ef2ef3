"""pytest configuration: make gorn_worker and the test helpers importable."""

import sys
from pathlib import Path
from typing import Iterator

import pytest

HERE = Path(__file__).resolve().parent
for p in (HERE.parent, HERE):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

from prereq import missing  # noqa: E402  (after the path set-up)


@pytest.fixture(scope="module", params=["python", "native"])
def request_path(request: pytest.FixtureRequest) -> Iterator[str]:
    """Runs a module's tests on both request paths (gorn_worker/native.py): the parser the
    tests call in process, and the workers they start (GORN_NATIVE=0 or 1, so a worker
    that cannot load the native path fails to boot instead of falling back)."""
    from gorn_worker import native

    mod = None
    if request.param == "native":
        mod, why = native.load()
        if mod is None:
            missing(f"the native request path: {why} (make native builds it)")
    native.use(mod)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(native.ENV_VAR, "1" if request.param == "native" else "0")
        try:
            yield request.param
        finally:
            native.use(None)
