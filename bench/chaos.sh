#!/usr/bin/env bash
# The chaos sequence (recycle, HUP x2, TTIN, TTOU, SIGKILL) under load, against gorn and
# gunicorn with the same app, interpreter and settings; prints each one's failed requests.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.bench-venv}
if [ ! -x "$VENV/bin/gunicorn" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q gunicorn -r examples/flask/requirements.txt
fi
PY="$(cd "$VENV" && pwd)/bin/python"
go build -o bin/gorn ./cmd/gorn
go build -o bin/chaos ./bench/chaos
ROOT=$(pwd)
cd examples/flask
ARGS=(-w 3 --max-requests 300 --max-requests-jitter 100 --graceful-timeout 15 --log-level warning)
for server in gorn gunicorn; do
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  if [ $server = gorn ]; then
    "$ROOT/bin/gorn" --python "$PY" -b 127.0.0.1:$port "${ARGS[@]}" app:app 2>/dev/null & pid=$!
  else
    "$PY" -m gunicorn -b 127.0.0.1:$port "${ARGS[@]}" app:app 2>/dev/null & pid=$!
  fi
  for _ in $(seq 100); do curl -sf -o /dev/null "http://127.0.0.1:$port/" && break; sleep 0.1; done
  echo "== $server"
  "$ROOT/bin/chaos" -addr 127.0.0.1:$port -pid $pid
  wait $pid 2>/dev/null || true
done
