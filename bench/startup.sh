#!/usr/bin/env bash
# Start to first 200 on the Flask example, one worker: gorn and gunicorn 27 side by side in
# one run, interleaved round by round (bench/startup.py measures; the machine is shared, so
# read the median and repeat). Both servers run on the bench venv's interpreter.
#
#   bash bench/startup.sh                      20 rounds of gorn and gunicorn
#   ROUNDS=40 bash bench/startup.sh
#   BASE=9b64dea SERVERS="gorn gorn@base gunicorn" bash bench/startup.sh   before/after
#   SERVERS="gorn gorn-preload gunicorn gunicorn-preload" bash bench/startup.sh
#
# Env (defaults): ROUNDS (20) SERVERS ("gorn gunicorn"; also gorn-preload, gunicorn-preload,
# gorn@base) VENV (.bench-venv) BASE (a git revision built as the server gorn@base)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
ROUNDS=${ROUNDS:-20}
SERVERS=${SERVERS:-gorn gunicorn}
VENV=${VENV:-.bench-venv}
. bench/peers.sh
VENV=$(peer_venv "$VENV")
build_gorn "${BASE:-}"
export VIRTUAL_ENV="$VENV"
args=()
for s in $SERVERS; do
  case "$s" in
    gorn) args+=("gorn=$ROOT/bin/gorn -w 1 -b 127.0.0.1:{PORT} app:app") ;;
    gorn-preload) args+=("gorn-preload=$ROOT/bin/gorn --preload -w 1 -b 127.0.0.1:{PORT} app:app") ;;
    gorn@base) args+=("gorn@base=$ROOT/bin/gorn-base -w 1 -b 127.0.0.1:{PORT} app:app") ;;
    gunicorn) args+=("gunicorn=$VENV/bin/gunicorn -w 1 -b 127.0.0.1:{PORT} app:app") ;;
    gunicorn-preload) args+=("gunicorn-preload=$VENV/bin/gunicorn --preload -w 1 -b 127.0.0.1:{PORT} app:app") ;;
    *) echo "unknown server $s" >&2; exit 2 ;;
  esac
done
echo "start to first 200, Flask example, 1 worker, $ROUNDS rounds interleaved; $(uname -m), $(nproc) CPUs shared; $("$VENV/bin/python" -V)"
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
"$VENV/bin/python" bench/startup.py "$ROUNDS" examples/flask "${args[@]}"
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
