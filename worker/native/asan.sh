#!/usr/bin/env bash
# Fuzzes the native parser under AddressSanitizer for ASAN_SECONDS (default 20): builds
# gorn_native with -fsanitize=address into a temporary file, then runs asan_fuzz.py in
# PYTHON (argument 1, default python3) with libasan preloaded and Python's allocator off
# (PYTHONMALLOC=malloc), so that every object the parser reads or writes is checked. A
# memory error aborts with ASan's report (exit != 0); so does any difference from the
# pure-Python twin. Needs gcc (or clang) with libasan: CI installs it.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
PYTHON=${1:-python3}
CC=${CC:-cc}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
NATIVE_REQUIRED=1 NATIVE_OUT="$tmp/gorn_native.abi3.so" PYTHON="$PYTHON" \
  NATIVE_CFLAGS="-O1 -g -fsanitize=address -fno-omit-frame-pointer" bash "$here/build.sh"
asan=$($CC -print-file-name=libasan.so)
[ -f "$asan" ] || { echo "asan: no libasan.so for $CC" >&2; exit 1; }
cd "$here/../pyworker"
PYTHONPATH=. LD_PRELOAD="$asan" ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 PYTHONMALLOC=malloc \
  "$PYTHON" "$here/asan_fuzz.py" "$tmp/gorn_native.abi3.so" "${ASAN_SECONDS:-20}"
