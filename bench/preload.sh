#!/usr/bin/env bash
# --preload: respawn after SIGKILL to ready (gorn with and without --preload), and the total
# PSS of the process tree after 200 requests (gorn with and without --preload, gunicorn 27
# with and without --preload), side by side in one run (bench/preload.py measures). The
# machine is shared: repeat, and read the medians.
#
#   bash bench/preload.sh                                   the Flask example
#   VENV=.bench-venv312 APP_DIR=test/fixtures/djangosite APP=site_project.wsgi \
#     URL=/admin/login/ bash bench/preload.sh     the Django fixture (a CPython 3.12 venv
#                                                 with test/fixtures/requirements-py312.txt)
#
# Env (defaults): ROUNDS (20 kills) REQUESTS (200) WORKERS ("1 4") VENV (.bench-venv)
# APP_DIR (examples/flask) APP (app:app) URL (/: the page requested)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
VENV=${VENV:-.bench-venv}
APP_DIR=${APP_DIR:-examples/flask}
APP=${APP:-app:app}
. bench/peers.sh
VENV=$(peer_venv "$VENV")
build_gorn
export VIRTUAL_ENV="$VENV"
GORN="$ROOT/bin/gorn --log-format json -b 127.0.0.1:{PORT} -w {W}"
GUNICORN="$VENV/bin/gunicorn -b 127.0.0.1:{PORT} -w {W}"
echo "--preload, $APP in $APP_DIR (GET ${URL:-/}); $(uname -m), $(nproc) CPUs shared; $("$VENV/bin/python" -V)"
echo "respawn after SIGKILL (master's 'worker ready' log time minus the kill), ${ROUNDS:-20} kills:"
"$VENV/bin/python" bench/preload.py respawn "$APP_DIR" \
  "gorn=$GORN $APP" "gorn --preload=$GORN --preload $APP"
echo "total PSS of the process tree after ${REQUESTS:-200} requests:"
"$VENV/bin/python" bench/preload.py pss "$APP_DIR" \
  "gorn=$GORN $APP" "gorn --preload=$GORN --preload $APP" \
  "gunicorn=$GUNICORN $APP" "gunicorn --preload=$GUNICORN --preload $APP"
