"""Evaluate a gunicorn-style Python config file and print its settings as JSON.

Run by the gorn master as `python -c <this> SOURCE`, where SOURCE is PATH, file:PATH or
python:MODULE, as gunicorn's -c. The file is executed as gunicorn executes it (a module
named __config__); module-level names that do not start with "_" are reported:

    {"settings": {name: value}, "callables": [name], "other": [name]}
    {"error": "one line"}

Values are JSON scalars or lists of them; callables are server hooks; "other" are values
of any other type (dicts, objects). Imported modules are skipped. Anything the file prints
goes to stderr, so stdout carries the JSON alone.
"""

import importlib
import importlib.machinery
import importlib.util
import json
import os
import sys
import traceback
import types


def load(source: str) -> types.ModuleType:
    if source.startswith("python:"):
        return importlib.import_module(source[len("python:"):])
    path = source[len("file:"):] if source.startswith("file:") else source
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path!r} does not exist")
    loader = importlib.machinery.SourceFileLoader("__config__", path)
    spec = importlib.util.spec_from_file_location("__config__", path, loader=loader)
    mod = importlib.util.module_from_spec(spec)
    loader.exec_module(mod)
    return mod


def plain(value: object) -> bool:
    if isinstance(value, (str, int, float, bool)):
        return True
    return isinstance(value, (list, tuple)) and all(isinstance(v, (str, int, float)) for v in value)


def main() -> None:
    out, sys.stdout = sys.stdout, sys.stderr
    try:
        mod = load(sys.argv[1])
    except BaseException as exc:  # the file is arbitrary code: report anything it raises
        frames = [f for f in traceback.extract_tb(exc.__traceback__) if not f.filename.startswith("<")]
        where = f" (line {frames[-1].lineno})" if frames else ""
        if isinstance(exc, SyntaxError):
            where = ""  # its message names the file and line already
        out.write(json.dumps({"error": f"{type(exc).__name__}: {exc}{where}"}))
        return
    result: dict = {"settings": {}, "callables": [], "other": []}
    for name, value in vars(mod).items():
        if name.startswith("_") or isinstance(value, types.ModuleType) or value is None:
            continue
        if plain(value):
            result["settings"][name] = list(value) if isinstance(value, tuple) else value
        elif callable(value) and not isinstance(value, type):
            result["callables"].append(name)
        elif not isinstance(value, type):
            result["other"].append(name)
    out.write(json.dumps(result))


main()
