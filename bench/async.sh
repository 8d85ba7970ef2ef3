#!/usr/bin/env bash
# The async worker classes side by side on an I/O-bound Flask route: examples/flask's
# /slow?ms=10 (time.sleep(0.01), cooperative once the library has monkey-patched), one
# worker pinned on CPU 0, wrk -c256 on CPU 1, in the same run:
#   gorn -k gevent, gorn -k eventlet, gunicorn 27 -k gevent (gunicorn 26+ has no eventlet
#   worker; GUNICORN25=1 adds gunicorn 25.3 -k eventlet from a second venv).
# Prints a markdown table: req/s, p50, p99, socket errors, non-2xx/3xx, from the round with
# the median req/s (ROUNDS rounds, the servers interleaved in each).
#
#   bash bench/async.sh
#   DURATION=20s CONNS=512 bash bench/async.sh
#
# Env (defaults): DURATION (10s) WARMUP (2s) CONNS (256) MS (10) ROUNDS (3) WORKER_CONNECTIONS (1000)
#   SERVERS ("gorn-gevent gorn-eventlet gunicorn-gevent") VENV (.bench-async-venv)
set -euo pipefail
set +m
cd "$(dirname "$0")/.."
ROOT=$(pwd)
DURATION=${DURATION:-10s}
WARMUP=${WARMUP:-2s}
CONNS=${CONNS:-256}
MS=${MS:-10}
ROUNDS=${ROUNDS:-3}
WC=${WORKER_CONNECTIONS:-1000}
SERVERS=${SERVERS:-gorn-gevent gorn-eventlet gunicorn-gevent}
VENV=${VENV:-.bench-async-venv}
[ "${GUNICORN25:-}" = 1 ] && SERVERS="$SERVERS gunicorn25-eventlet"

command -v wrk >/dev/null || { echo "needs wrk" >&2; exit 1; }
. bench/peers.sh
VENV=$(peer_venv "$VENV" gevent eventlet packaging)
if [[ " $SERVERS " == *" gunicorn25-eventlet "* ]] && ! "$VENV-g25/bin/python" -c 'import gunicorn, eventlet' 2>/dev/null; then
  python3 -m venv "$VENV-g25"
  "$VENV-g25/bin/pip" install -q 'gunicorn==25.3.*' eventlet -r examples/flask/requirements.txt
fi
build_gorn
LOGDIR=$(mktemp -d)
PGID=""
cleanup() { [ -n "$PGID" ] && kill -KILL -- "-$PGID" 2>/dev/null || true; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

start() { # start SERVER PORT -> sets PGID
  local cmd
  case "$1" in
  gorn-gevent | gorn-eventlet)
    cmd=("$ROOT/bin/gorn" -k "${1#gorn-}" -w 1 --worker-connections "$WC" --backlog 2048 -b "127.0.0.1:$2" --chdir examples/flask --python "$VENV/bin/python" app:app) ;;
  gunicorn-gevent)
    cmd=("$VENV/bin/gunicorn" -k gevent -w 1 --worker-connections "$WC" --backlog 2048 -b "127.0.0.1:$2" --chdir examples/flask app:app) ;;
  gunicorn25-eventlet)
    cmd=("$VENV-g25/bin/gunicorn" -k eventlet -w 1 --worker-connections "$WC" --backlog 2048 -b "127.0.0.1:$2" --chdir examples/flask app:app) ;;
  *) echo "unknown server $1" >&2; exit 2 ;;
  esac
  # set +m: this background job is not a group leader, so setsid (no fork) makes the
  # server's pid its own process group: stop() can end the whole server tree.
  taskset -c 0 setsid "${cmd[@]}" </dev/null >"$LOGDIR/$1.log" 2>&1 &
  PGID=$!
  for _ in $(seq 100); do
    curl -fsS -o /dev/null "http://127.0.0.1:$2/" 2>/dev/null && return 0
    sleep 0.1
  done
  echo "$1 did not start:" >&2; cat "$LOGDIR/$1.log" >&2; exit 1
}

stop() {
  kill -TERM -- "-$PGID" 2>/dev/null || true
  for _ in $(seq 100); do kill -0 -- "-$PGID" 2>/dev/null || break; sleep 0.1; done
  kill -KILL -- "-$PGID" 2>/dev/null || true
  PGID=""
}

ms() { # wrk latency (e.g. 12.34ms, 1.20s, 900.00us) -> milliseconds
  awk -v v="$1" 'BEGIN { n = v + 0; if (v ~ /us$/) n /= 1000; else if (v ~ /ms$/) n += 0; else if (v ~ /s$/) n *= 1000; printf "%.0f", n }'
}

declare -A ROWS
for round in $(seq "$ROUNDS"); do
  for server in $SERVERS; do
    port=$(free_port)
    start "$server" "$port"
    url="http://127.0.0.1:$port/slow?ms=$MS"
    taskset -c 1 wrk -t1 -c"$CONNS" -d"$WARMUP" "$url" >/dev/null
    out=$(taskset -c 1 wrk -t1 -c"$CONNS" -d"$DURATION" --latency "$url")
    stop
    rps=$(awk '/Requests\/sec/ {printf "%.0f", $2}' <<<"$out")
    p50=$(ms "$(awk '$1 == "50%" {print $2}' <<<"$out")")
    p99=$(ms "$(awk '$1 == "99%" {print $2}' <<<"$out")")
    errs=$(awk '/Socket errors/ {gsub(",", ""); print $4 + $6 + $8 + $10}' <<<"$out")
    non2xx=$(awk '/Non-2xx/ {print $NF}' <<<"$out")
    echo "round $round: $server $rps req/s p50 $p50 ms p99 $p99 ms" >&2
    ROWS[$server]+="$rps $p50 $p99 ${errs:-0} ${non2xx:-0}"$'\n'
  done
done

# The round with the median req/s, per server (rounds interleave the servers, so a noisy
# neighbour hits them alike).
echo "| server | req/s | p50 ms | p99 ms | socket errors | non-2xx |"
echo "|---|---:|---:|---:|---:|---:|"
for server in $SERVERS; do
  read -r rps p50 p99 errs non2xx < <(printf '%s' "${ROWS[$server]}" | sort -n | awk '{a[NR] = $0} END {print a[int((NR + 1) / 2)]}')
  echo "| $server | $rps | $p50 | $p99 | $errs | $non2xx |"
done
