#!/usr/bin/env bash
# Builds the native accelerator worker/pyworker/gorn_worker/lib/gorn_native.abi3.so from
# gorn_native.c (CPython limited API, abi3 3.10+). Without a C compiler or Python headers it
# removes any stale build and exits 0: the workers then run the pure-Python path.
#   CC              the compiler (default cc); cross: CC="python -m ziglang cc -target aarch64-linux-gnu.2.17"
#   PYTHON          the Python whose headers are used (default python3; any CPython >= 3.10)
#   PYTHON_INCLUDE  the headers' directory instead of asking PYTHON
#   NATIVE_CFLAGS   extra flags (the AddressSanitizer build adds -fsanitize=address)
#   NATIVE_OUT      the output file instead of the embedded one
#   NATIVE_REQUIRED=1  fail instead of skipping (CI)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=${NATIVE_OUT:-$here/../pyworker/gorn_worker/lib/gorn_native.abi3.so}
CC=${CC:-cc}
PYTHON=${PYTHON:-python3}

skip() {
  rm -f "$out"
  if [ "${NATIVE_REQUIRED:-}" = 1 ]; then
    echo "gorn_native: $1" >&2
    exit 1
  fi
  echo "gorn_native not built ($1): workers run the pure-Python request path" >&2
  exit 0
}

inc=${PYTHON_INCLUDE:-$("$PYTHON" -c 'import sysconfig; print(sysconfig.get_paths()["include"])' 2>/dev/null || true)}
[ -n "$inc" ] && [ -f "$inc/Python.h" ] || skip "no Python.h (install python3-dev, or set PYTHON or PYTHON_INCLUDE)"
# shellcheck disable=SC2086 # CC and NATIVE_CFLAGS may hold several words
$CC --version >/dev/null 2>&1 || skip "no C compiler ($CC)"
tmp=$out.tmp.$$
# shellcheck disable=SC2086
if ! $CC -std=c11 -O2 -fPIC -shared -fvisibility=hidden -Wall -Wextra -Werror ${NATIVE_CFLAGS:-} \
  -I"$inc" "$here/gorn_native.c" -o "$tmp"; then
  rm -f "$tmp"
  skip "compiling with $CC failed"
fi
mv "$tmp" "$out"
