#!/usr/bin/env bash
# Side-by-side throughput of gorn and gunicorn: same interpreter, same app, one worker
# pinned to CPU 0, wrk pinned to CPU 1. Prints req/s, p50/p99 and the gorn/gunicorn ratio for
# keep-alive and Connection: close.
#
#   bash bench/bench.sh [APP] [DURATION]      e.g. bash bench/bench.sh wsgi_hello:application 10s
#   CONNS=1 ...                               wrk connections (default 4)
#   CLASS=gthread THREADS=4 ...               worker class for both servers (default sync)
set -euo pipefail
cd "$(dirname "$0")/.."
APP=${1:-wsgi_hello:application}
DURATION=${2:-10s}
CONNS=${CONNS:-4}
CLASS=${CLASS:-sync}
THREADS=${THREADS:-4}
WORKER=(-k "$CLASS")
[ "$CLASS" = gthread ] && WORKER+=(--threads "$THREADS")
VENV=${VENV:-.bench-venv}

command -v wrk >/dev/null || { echo "installing wrk"; apt-get install -y -q wrk >/dev/null; }
if [ ! -x "$VENV/bin/gunicorn" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q gunicorn -r examples/flask/requirements.txt
fi
PY="$(cd "$VENV" && pwd)/bin/python"
go build -o bin/gorn ./cmd/gorn
GORN=$(realpath bin/gorn)
cd examples/flask

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

wait_up() {
  for _ in $(seq 100); do curl -sf -o /dev/null "http://127.0.0.1:$1/" && return 0; sleep 0.1; done
  echo "server on port $1 did not come up" >&2; return 1
}

# run_wrk PORT MODE -> "rps p50 p99"
run_wrk() {
  local hdr=()
  [ "$2" = close ] && hdr=(-H "Connection: close")
  taskset -c 1 wrk -t1 -c"$CONNS" -d"$DURATION" --latency "${hdr[@]}" "http://127.0.0.1:$1/" |
    awk '/Requests\/sec/ {rps=$2} /^ +50%/ {p50=$2} /^ +99%/ {p99=$2} END {print rps, p50, p99}'
}

declare -A RESULT
for server in gorn gunicorn; do
  p=$(port)
  if [ $server = gorn ]; then
    taskset -c 0 "$GORN" --python "$PY" -w 1 "${WORKER[@]}" -b 127.0.0.1:$p --log-level warning "$APP" & pid=$!
  else
    taskset -c 0 "$PY" -m gunicorn -w 1 "${WORKER[@]}" -b 127.0.0.1:$p --log-level warning "$APP" & pid=$!
  fi
  wait_up $p
  taskset -c 1 wrk -t1 -c"$CONNS" -d2s "http://127.0.0.1:$p/" >/dev/null # warm-up
  for mode in keepalive close; do
    RESULT[$server,$mode]=$(run_wrk $p $mode)
  done
  kill -TERM $pid; wait $pid 2>/dev/null || true
done

echo "worker class $CLASS${WORKER[3]:+ (${WORKER[3]} threads)}, $CONNS connections, $DURATION, $APP"
printf '%-10s %-10s %10s %9s %9s\n' mode server req/s p50 p99
for mode in keepalive close; do
  for server in gorn gunicorn; do
    read -r rps p50 p99 <<<"${RESULT[$server,$mode]}"
    printf '%-10s %-10s %10s %9s %9s\n' $mode $server "$rps" "$p50" "$p99"
  done
  g=$(cut -d' ' -f1 <<<"${RESULT[gorn,$mode]}"); u=$(cut -d' ' -f1 <<<"${RESULT[gunicorn,$mode]}")
  printf '%-10s gorn/gunicorn = %.2fx\n' $mode "$(echo "$g / $u" | bc -l)"
done
