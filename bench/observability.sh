#!/usr/bin/env bash
# The cost of observability: hello-app req/s with access logging and metrics off, then on
# (access log to a file, /metrics scraped every second), one sync worker pinned to CPU 0,
# wrk on CPU 1.
#
#   bash bench/observability.sh [APP] [DURATION]
set -euo pipefail
cd "$(dirname "$0")/.."
APP=${1:-wsgi_hello:application}
DURATION=${2:-10s}
CONNS=${CONNS:-4}
command -v wrk >/dev/null || apt-get install -y -q wrk >/dev/null
go build -o bin/gorn ./cmd/gorn
GORN=$(realpath bin/gorn)
PY=${PY:-python3}
[ -x .venv/bin/python ] && PY="$(pwd)/.venv/bin/python"
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
cd examples/flask
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

run() { # name, extra args...
  local name=$1; shift
  local p; p=$(port)
  taskset -c 0 "$GORN" --python "$PY" -w 1 -b 127.0.0.1:$p --log-level warning "$@" "$APP" & local pid=$!
  for _ in $(seq 100); do curl -sf -o /dev/null "http://127.0.0.1:$p/" && break; sleep 0.1; done
  local scraper=""
  if [[ " $* " == *" --metrics-bind "* ]]; then
    (while sleep 1; do curl -sf -o /dev/null "http://$MADDR/metrics"; done) & scraper=$!
  fi
  taskset -c 1 wrk -t1 -c"$CONNS" -d2s "http://127.0.0.1:$p/" >/dev/null
  local rps
  rps=$(taskset -c 1 wrk -t1 -c"$CONNS" -d"$DURATION" "http://127.0.0.1:$p/" | awk '/Requests\/sec/ {print $2}')
  [ -n "$scraper" ] && kill $scraper
  kill -TERM $pid; wait $pid 2>/dev/null || true
  printf '%-34s %10s req/s\n' "$name" "$rps"
  echo "$rps"  > "$TMP/$name"
}

MPORT=$(port); MADDR=127.0.0.1:$MPORT
run off
run access-log --access-logfile "$TMP/access.log"
run access-log+metrics --access-logfile "$TMP/access.log" --metrics-bind $MADDR
off=$(cat "$TMP/off"); on=$(cat "$TMP/access-log+metrics")
printf 'access log + metrics cost: %.1f%% of req/s (%d access-log lines written)\n' \
  "$(echo "(1 - $on / $off) * 100" | bc -l)" "$(wc -l < "$TMP/access.log")"
