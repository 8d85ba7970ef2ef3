#!/usr/bin/env bash
# Compile the worker runtime (worker/pyworker/gorn_worker) for every CPython 3.10-3.13 found:
# pyenv's versions first, then python3.1X on PATH; one interpreter per minor version. See
# README.md here. Prints the versions compiled for; none found is not an error (the workers
# then compile the sources at start-up, as they always could).
set -euo pipefail
cd "$(dirname "$0")"
src=../pyworker/gorn_worker
rm -rf cpython-3*
found=()
cands=()
if command -v pyenv >/dev/null; then
  for d in "$(pyenv root)"/versions/3.1[0-3].*; do [ -x "$d/bin/python3" ] && cands+=("$d/bin/python3"); done
fi
for m in 10 11 12 13; do
  p=$(command -v "python3.$m" 2>/dev/null) && cands+=("$p")
done
for py in "${cands[@]}"; do
  tag=$("$py" -c 'import sys; print("cpython-%d%d" % sys.version_info[:2])' 2>/dev/null) || continue
  [ -d "$tag" ] && continue
  mkdir -p "$tag/gorn_worker"
  "$py" - "$src" "$tag/gorn_worker" <<'PY'
import pathlib, py_compile, sys
src, out = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
for f in sorted(src.glob("*.py")):
    py_compile.compile(str(f), cfile=str(out / (f.name + "c")), dfile="gorn_worker/" + f.name,
                       doraise=True, invalidation_mode=py_compile.PycInvalidationMode.CHECKED_HASH)
PY
  # What the bytecode was compiled from, for the tests to tell stale bytecode from a fault.
  (cd "$src" && sha256sum -- *.py) >"$tag/SOURCES"
  found+=("$tag")
done
echo "bytecode: ${found[*]:-none (no CPython 3.10-3.13 found)}"
