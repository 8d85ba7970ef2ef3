"""The native accelerator: ``gorn_native``, the C twin of :func:`.http.parse_head_py` (a
request head to the environ) and :func:`.wsgi.header_block_py` (start_response's headers
to the response head's block).

``make build`` compiles ``worker/native/gorn_native.c`` (CPython limited API, abi3: one
build serves 3.10 and later) into ``gorn_worker/lib/gorn_native.abi3.so``, which is
embedded in the gorn binary with the rest of the runtime. A worker loads it without writing
to disk: the bytes go into a memfd and the import machinery opens ``/proc/self/fd/N``.
Without it (no compiler at build time, another platform, PyPy, CPython < 3.10, no /proc)
the pure-Python twin runs, with identical behaviour.

``GORN_NATIVE`` in the worker's environment: ``0`` runs the pure-Python path, ``1``
requires the native one (the worker does not boot without it), unset or empty: native
when it loads.
"""

from __future__ import annotations

import functools
import importlib.machinery
import importlib.util
import os
import pkgutil
import sys
from types import ModuleType
from typing import Any, Optional

from . import http, wsgi

ENV_VAR = "GORN_NATIVE"
RESOURCE = "lib/gorn_native.abi3.so"
NAME = "gorn_native"
ABI = 2  # gorn_native.ABI: the .so and this runtime are built together; a mismatch is refused

PATH_PYTHON = "python"
PATH_NATIVE = "native"


class NativeRequired(Exception):
    """GORN_NATIVE=1 and the native path cannot run."""


def _resource() -> Optional[bytes]:
    """The extension's bytes: beside this package, else at the root of the runtime zip (the
    package may be the bytecode copy under ``cpython-3XX/``, which holds modules only)."""
    try:
        data = pkgutil.get_data(__package__ or "gorn_worker", RESOURCE)
    except OSError:
        data = None
    loader: Any = globals().get("__loader__")
    archive = getattr(loader, "archive", None)  # zipimport
    if not data and archive:
        try:
            data = loader.get_data(os.path.join(archive, "gorn_worker", RESOURCE))
        except OSError:
            data = None
    return data


@functools.cache
def load() -> tuple[Optional[ModuleType], str]:
    """The extension module, or None and why not. Loaded once per process: a --preload
    mold loads it before forking, and its workers share the mapping."""
    if sys.implementation.name != "cpython" or sys.version_info < (3, 10):
        return None, f"needs CPython 3.10 or later, not {sys.implementation.name} {sys.version.split()[0]}"
    data = _resource()
    if not data:
        return None, "this gorn was built without it (no C compiler at build time)"
    try:
        fd = os.memfd_create(NAME, os.MFD_CLOEXEC)
    except (AttributeError, OSError) as e:
        return None, f"memfd_create: {e}"
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        path = f"/proc/self/fd/{fd}"
        loader = importlib.machinery.ExtensionFileLoader(NAME, path)
        spec = importlib.util.spec_from_loader(NAME, loader, origin=path)
        if spec is None:
            return None, "no module spec"
        mod = importlib.util.module_from_spec(spec)  # dlopen: the mapping outlives the fd
        loader.exec_module(mod)
    except (ImportError, OSError) as e:
        return None, f"cannot load it: {e}"
    finally:
        os.close(fd)
    if getattr(mod, "ABI", None) != ABI:
        return None, f"ABI {getattr(mod, 'ABI', None)} of the extension, {ABI} of the runtime"
    return mod, ""


def use(mod: Optional[ModuleType]) -> None:
    """Run gorn_native's twins (``mod``) from now on; None: the pure-Python ones."""
    if mod is not None:
        mod.setup(http.HTTPError, http.EMPTY_BODY, wsgi.header_block_py)
    http.use(mod)
    wsgi.use(mod)


def select(setting: Optional[str] = None) -> tuple[str, str]:
    """Choose the request path from ``GORN_NATIVE`` (or ``setting``) and switch
    :mod:`.http` to it: (PATH_NATIVE or PATH_PYTHON, a line for the log). Raises
    NativeRequired when the native path is required and cannot run."""
    want = os.environ.get(ENV_VAR, "") if setting is None else setting
    if want == "0":
        use(None)
        return PATH_PYTHON, f"request path: python ({ENV_VAR}=0)"
    if want not in ("", "1"):
        raise NativeRequired(f"{ENV_VAR} must be 0, 1 or empty, not {want!r}")
    mod, why = load()
    if mod is None:
        if want == "1":
            raise NativeRequired(f"{ENV_VAR}=1 but the native request path cannot run: {why}")
        use(None)
        return PATH_PYTHON, f"request path: python (native: {why})"
    use(mod)
    return PATH_NATIVE, "request path: native (gorn_native)"
