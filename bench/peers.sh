# Sourced by the side-by-side benchmarks (bench.sh, startup.sh, preload.sh, async.sh), from
# the repository's root: the peers' venv and gorn's builds, written once.

# peer_venv VENV [PACKAGE...]: make VENV hold gunicorn 27, the Flask example's requirements
# and each PACKAGE (a pip name that is also its import name); prints VENV's absolute path.
peer_venv() {
  local venv=$1
  shift
  local extra
  extra=
  (($#)) && extra=$(printf ', %s' "$@")
  if ! "$venv/bin/python" -c "import gunicorn, flask$extra, sys; sys.exit(int(gunicorn.__version__.split('.')[0]) != 27)" 2>/dev/null; then
    echo "creating $venv (gunicorn 27, flask$extra)" >&2
    [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
    "$venv/bin/pip" install -q 'gunicorn>=27,<28' "$@" -r examples/flask/requirements.txt >&2
  fi
  (cd "$venv" && pwd)
}

# build_gorn [BASE]: bin/gorn as `make build` makes it (native accelerator and bytecode
# included); with BASE, also bin/gorn-base, built the same way at that revision.
build_gorn() {
  make -s build >/dev/null
  [ -n "${1:-}" ] || return 0
  local root tree
  root=$(pwd)
  tree=$(mktemp -d)
  git worktree add -q --detach "$tree" "$1"
  (cd "$tree" && make -s build >/dev/null && cp bin/gorn "$root/bin/gorn-base")
  git worktree remove --force "$tree"
}
