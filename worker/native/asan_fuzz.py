"""The AddressSanitizer fuzz loop (run by asan.sh): mutated corpus requests and random
bytes, and random start_response header lists, go to the ASan build of gorn_native and to
the pure-Python twins for a bounded time; their outcomes must agree. argv: the .so, the
seconds to run."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import random
import sys
import time
from pathlib import Path
from typing import Any

from gorn_worker import http, wsgi
from gorn_worker.http import HTTPError, Limits, parse_head_py

CORPUS = Path(__file__).resolve().parent.parent / "pyworker" / "tests" / "corpus"
SPECIAL = b"\r\n\t \x00\x0b\x7f\x80\xff:;,=\"'-_/?#%@[]0123456789abcdefxX"
LIMITS = (Limits(), Limits(64, 5, 64, 16), Limits(0, 0, 0, 0))
BASE = {"wsgi.url_scheme": "http", "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "80", "SCRIPT_NAME": ""}


def load(path: str) -> Any:
    loader = importlib.machinery.ExtensionFileLoader("gorn_native", path)
    spec = importlib.util.spec_from_loader("gorn_native", loader, origin=path)
    assert spec is not None
    mod = importlib.util.module_from_spec(spec)
    loader.exec_module(mod)
    mod.setup(HTTPError, http.EMPTY_BODY, wsgi.header_block_py)
    return mod


def seeds() -> list[bytes]:
    out = []
    for p in sorted(CORPUS.glob("*/*.http")):
        raw = p.read_bytes().replace(b"\n", b"")
        raw = raw.replace(b"\\r", b"\r").replace(b"\\n", b"\n").replace(b"\\t", b"\t").replace(b"\\0", b"\0")
        out.append(raw.split(b"\r\n\r\n")[0])
    return out


def mutate(rnd: random.Random, data: bytes) -> bytes:
    b = bytearray(data)
    for _ in range(rnd.choice((1, 1, 2, 3, 6))):
        i = rnd.randrange(len(b) + 1)
        op = rnd.randrange(5)
        if op == 0 and b:
            b[min(i, len(b) - 1)] = rnd.choice(SPECIAL)
        elif op == 1:
            b.insert(i, rnd.choice(SPECIAL))
        elif op == 2:
            del b[i : i + rnd.randrange(1, 8)]
        elif op == 3:
            b[i:i] = b[i : i + rnd.randrange(1, 80)] * rnd.randrange(1, 4)
        else:
            b[i:i] = bytes(rnd.randrange(256) for _ in range(rnd.randrange(1, 9)))
    return bytes(b)


def outcome(parse: Any, head: bytes, limits: Limits, root: str) -> Any:
    try:
        env, *rest = parse(head, limits, BASE, root)
    except HTTPError as e:
        return ("error", e.status, e.detail)
    return ("ok", list(env.items()), rest)


NAMES = ["Content-Type", "Content-Length", "connection", "Date", "Server", "TE", "Upgrade", "X-A", "X_B", "", "A B", "\u00e9", None]
VALUES = ["text/plain", "14", " 14 ", "1" * 19, "", "close", "a, Close", "a\tb", "a\r\nb", "a\x00", "caf\u00e9", "\u20ac", "\ud800", 5]


def headers(rnd: random.Random) -> Any:
    out: list[Any] = []
    for _ in range(rnd.randrange(6)):
        name, value = rnd.choice(NAMES), rnd.choice(VALUES)
        if rnd.random() < 0.2:
            value = value * rnd.randrange(1, 300) if isinstance(value, str) else value
        shape = rnd.randrange(10)
        out.append([name, value] if shape == 0 else (name,) if shape == 1 else (name, value))
    return out


def block_outcome(build: Any, hs: Any, code: int) -> Any:
    try:
        return ("ok", build(hs, code))
    except (TypeError, ValueError) as e:
        return (type(e), str(e))


def main() -> int:
    mod = load(sys.argv[1])
    deadline = time.monotonic() + float(sys.argv[2])
    rnd = random.Random(int(time.time()))
    pool = seeds()
    n = 0
    while time.monotonic() < deadline:
        head = mutate(rnd, rnd.choice(pool)) if rnd.random() < 0.9 else rnd.randbytes(rnd.randrange(200))
        limits, root = rnd.choice(LIMITS), rnd.choice(("", "/app"))
        a, b = outcome(mod.parse_head, head, limits, root), outcome(parse_head_py, head, limits, root)
        if a != b:
            print(f"asan fuzz: the twins disagree on {head!r}:\n native {a}\n python {b}", file=sys.stderr)
            return 1
        hs, code = headers(rnd), rnd.choice((200, 204, 304))
        a, b = block_outcome(mod.header_block, hs, code), block_outcome(wsgi.header_block_py, hs, code)
        if a != b:
            print(f"asan fuzz: the twins disagree on {hs!r}, {code}:\n native {a}\n python {b}", file=sys.stderr)
            return 1
        n += 1
    print(f"asan fuzz: {n} heads and header lists, no memory error, the twins agree")
    return 0


if __name__ == "__main__":
    sys.exit(main())
