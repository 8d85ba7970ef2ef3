#!/usr/bin/env bash
# Side by side: gorn, gunicorn 27, pyuwsgi (uWSGI's C core, --http11-socket) and Granian
# (--interface wsgi), all installed by pip into one bench venv on the same interpreter, the
# same app, the same wrk load. For each cell it reports req/s, the server's CPU microseconds
# per request (utime+stime of the whole server process tree, read from /proc before and
# after the wrk run: every server runs in a process group of its own via setsid), wrk's socket
# errors (connect/read/write/timeout) and non-2xx/3xx responses. Prints a markdown table.
#
# Matrix: APPS x WORKERS x MODES x CONNS x SERVERS.
#   workers 1: the whole server pinned on CPU 0, wrk on CPU 1;  workers N>1: nothing pinned.
#   keepalive: wrk's default;  close: every request says "Connection: close".
#   gunicorn's sync worker never keeps a connection alive: its keep-alive cells are "n/a".
#
#   bash bench/bench.sh                                   everything, 10 s per cell
#   REPEAT=3 bash bench/bench.sh                          median of 3 runs per cell
#   DURATION=5s CONNS="10 100" APPS="hello json" SERVERS="gorn granian" bash bench/bench.sh
#   CLASS=gthread THREADS=4 bash bench/bench.sh           threaded workers everywhere
#   BASE=7eff32e SERVERS="gorn gorn@base" bash bench/bench.sh   before/after: gorn built at BASE too
#
# Env (defaults): DURATION (10s) WARMUP (2s) CONNS (10; a list is a matrix axis)
#   APPS ("hello flask json": plain WSGI hello, Flask hello, Flask ~1 KB JSON)
#   SERVERS ("gorn gunicorn uwsgi granian") WORKERS ("1 2") MODES ("keepalive close")
#   CLASS (sync|gthread) THREADS (4, gthread only) REPEAT (1) VENV (.bench-venv)
#   OUT (also write the table to this file) BASE (a git revision built as the server gorn@base)
#
# What a worker class means for each peer: gorn and gunicorn `-k CLASS [--threads T]`;
# uWSGI `--processes N [--threads T]`; Granian `--workers N --blocking-threads 1|T` (its
# WSGI app runs in a pool of blocking threads; 1 is the closest to a sync worker).
set -euo pipefail
set +m # no job control: a background server is then not a group leader, and setsid needs no fork
cd "$(dirname "$0")/.."
ROOT=$(pwd)
DURATION=${DURATION:-10s}
WARMUP=${WARMUP:-2s}
CONNS=${CONNS:-10}
APPS=${APPS:-hello flask json}
SERVERS=${SERVERS:-gorn gunicorn uwsgi granian}
WORKERS=${WORKERS:-1 2}
MODES=${MODES:-keepalive close}
CLASS=${CLASS:-sync}
THREADS=${THREADS:-4}
REPEAT=${REPEAT:-1}
VENV=${VENV:-.bench-venv}
OUT=${OUT:-}
case "$CLASS" in sync | gthread) ;; *) echo "CLASS must be sync or gthread" >&2; exit 2 ;; esac
[ "$(nproc)" -ge 2 ] || echo "warning: fewer than 2 CPUs; pinning of the 1-worker cells is meaningless" >&2

command -v wrk >/dev/null || { echo "installing wrk" >&2; apt-get install -y -q wrk >/dev/null; }
command -v setsid >/dev/null && command -v taskset >/dev/null || { echo "needs setsid and taskset (util-linux)" >&2; exit 1; }
. bench/peers.sh
VENV=$(peer_venv "$VENV" pyuwsgi granian)
PY="$VENV/bin/python"
build_gorn "${BASE:-}" # BASE: the same benchmark on gorn at another revision, in the same run
GORN="$ROOT/bin/gorn"
HZ=$(getconf CLK_TCK)
cd examples/flask

PGIDS=()
cleanup() {
  local g
  for g in "${PGIDS[@]}"; do kill -KILL -- "-$g" 2>/dev/null || true; done
}
trap 'cleanup; rm -rf "${LOGDIR:-}"' EXIT
trap 'exit 130' INT TERM

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

versions() {
  "$PY" - <<'EOF'
import sys, importlib.metadata as m
v = lambda p: m.version(p)
print(f"CPython {sys.version.split()[0]}; gunicorn {v('gunicorn')}, pyuwsgi {v('pyuwsgi')}, granian {v('granian')}, flask {v('flask')}")
EOF
}

app_spec() { # APP -> "module:callable path"
  case "$1" in
    hello) echo "wsgi_hello:application /" ;;
    flask) echo "app:app /" ;;
    json) echo "app:app /json" ;;
    *) echo "unknown app $1 (hello, flask, json)" >&2; return 1 ;;
  esac
}

# treecpu PID -> clock ticks of user+system time of the server's whole process tree: the
# process, its descendants (gorn puts each worker in a process group of its own) and the rest
# of its process group, children they have reaped included (cutime+cstime).
treecpu() {
  { cat /proc/[0-9]*/stat 2>/dev/null || true; } | awk -v root="$1" '
    { pid = $1; s = $0; sub(/^.*\) /, "", s); split(s, f, " ")
      pp[pid] = f[2]; pg[pid] = f[3]; t[pid] = f[12] + f[13] + f[14] + f[15] }
    END {
      for (p in t) {
        in_tree = (pg[p] == root)
        for (q = p; !in_tree && q != "" && q > 1; q = pp[q]) if (q == root) in_tree = 1
        if (in_tree) sum += t[p]
      }
      print sum + 0
    }'
}

# start SERVER WORKERS PORT MODULE: sets SPID, the pid (= process group id) of the server
start() {
  local server=$1 n=$2 p=$3 mod=$4 cmd pin=()
  case $server in
    gorn | gorn@base)
      bin=$GORN
      [ "$server" = gorn@base ] && bin="$ROOT/bin/gorn-base"
      cmd=("$bin" --python "$PY" -w "$n" -k "$CLASS" -b "127.0.0.1:$p" --log-level warning)
      [ "$CLASS" = gthread ] && cmd+=(--threads "$THREADS")
      cmd+=("$mod") ;;
    gunicorn)
      cmd=("$PY" -m gunicorn -w "$n" -k "$CLASS" -b "127.0.0.1:$p" --log-level warning)
      [ "$CLASS" = gthread ] && cmd+=(--threads "$THREADS")
      cmd+=("$mod") ;;
    uwsgi)
      cmd=("$VENV/bin/uwsgi" --http11-socket "127.0.0.1:$p" --master --processes "$n" --module "$mod"
        --die-on-term --disable-logging --need-app --listen 1024 --ignore-sigpipe --ignore-write-errors
        --disable-write-exception)
      [ "$CLASS" = gthread ] && cmd+=(--threads "$THREADS") ;;
    granian)
      local bt=1
      [ "$CLASS" = gthread ] && bt=$THREADS
      cmd=("$VENV/bin/granian" --interface wsgi --host 127.0.0.1 --port "$p" --workers "$n"
        --blocking-threads "$bt" --no-ws --log-level warning --no-access-log "$mod") ;;
    *) echo "unknown server $server (gorn, gunicorn, uwsgi, granian)" >&2; return 1 ;;
  esac
  [ "$n" = 1 ] && pin=(taskset -c 0)
  # A background job of a script is not a group leader, so setsid makes the server (same
  # pid) the leader of a new process group that its workers inherit.
  VIRTUAL_ENV="$VENV" "${pin[@]}" setsid "${cmd[@]}" </dev/null >"$LOGDIR/$server.log" 2>&1 &
  SPID=$!
}

stop() {
  local g=$1
  kill -TERM -- "-$g" 2>/dev/null || true
  for _ in $(seq 100); do kill -0 -- "-$g" 2>/dev/null || break; sleep 0.1; done
  kill -KILL -- "-$g" 2>/dev/null || true
  wait "$g" 2>/dev/null || true
}

wait_up() { # PORT PATH PID
  for _ in $(seq 300); do
    curl -sf -o /dev/null "http://127.0.0.1:$1$2" && return 0
    kill -0 "$3" 2>/dev/null || break
    sleep 0.1
  done
  echo "server on port $1 did not come up" >&2
  return 1
}

# run_wrk PORT PATH MODE WORKERS PGID -> "rps requests cpu_us_per_req connect read write timeout non2xx"
run_wrk() {
  local hdr=() pin=() out c0 c1
  [ "$3" = close ] && hdr=(-H "Connection: close")
  [ "$4" = 1 ] && pin=(taskset -c 1)
  c0=$(treecpu "$5")
  out=$("${pin[@]}" wrk -t1 -c"$CONN" -d"$DURATION" "${hdr[@]}" "http://127.0.0.1:$1$2")
  c1=$(treecpu "$5")
  awk -v dt=$((c1 - c0)) -v hz="$HZ" '
    /requests in/ { req = $1 }
    /Requests\/sec/ { rps = $2 }
    /Socket errors/ { gsub(/,/, ""); c = $4; r = $6; w = $8; t = $10 }
    /Non-2xx or 3xx/ { n = $5 }
    END { printf "%s %d %.1f %d %d %d %d %d\n", rps, req, (req ? dt * 1e6 / hz / req : 0), c, r, w, t, n }' <<<"$out"
}

median() { tr ' ' '\n' | grep . | sort -g | awk '{ a[NR] = $1 } END { if (NR % 2) print a[(NR + 1) / 2]; else printf "%.1f\n", (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }

LOGDIR=$(mktemp -d)
declare -A RPS CPU ERR NON
LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)
awk -v l="${LOAD0%% *}" -v n="$(nproc)" 'BEGIN { exit !(l > n / 2) }' &&
  echo "warning: load average $LOAD0 on $(nproc) CPUs before the run: req/s will be noisy (CPU us/req less so)" >&2
echo "$(versions); gorn $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')" >&2
for app in $APPS; do
  read -r mod path <<<"$(app_spec "$app")"
  for n in $WORKERS; do
    for server in $SERVERS; do
      p=$(port)
      start "$server" "$n" "$p" "$mod"
      pid=$SPID
      PGIDS+=("$pid")
      if ! wait_up "$p" "$path" "$pid"; then
        tail -20 "$LOGDIR/$server.log" >&2
        stop "$pid"
        continue
      fi
      wpin=()
      [ "$n" = 1 ] && wpin=(taskset -c 1)
      "${wpin[@]}" wrk -t1 -c"${CONNS%% *}" -d"$WARMUP" "http://127.0.0.1:$p$path" >/dev/null
      for mode in $MODES; do
        for CONN in $CONNS; do
          key="$app,$n,$mode,$CONN,$server"
          if [ "$server" = gunicorn ] && [ "$CLASS" = sync ] && [ "$mode" = keepalive ]; then
            RPS[$key]=n/a CPU[$key]=n/a ERR[$key]=n/a NON[$key]=n/a
            continue
          fi
          rs="" cs="" e="0 0 0 0" nn=0
          for _ in $(seq "$REPEAT"); do
            read -r rps req cpu ec er ew et non <<<"$(run_wrk "$p" "$path" "$mode" "$n" "$pid")"
            echo "  $key: $rps req/s, $req requests, $cpu us/req, errors c$ec r$er w$ew t$et, non-2xx $non" >&2
            rs+=" $rps" cs+=" $cpu"
            read -r a b c d <<<"$e"
            e="$((a + ec)) $((b + er)) $((c + ew)) $((d + et))"
            nn=$((nn + non))
          done
          RPS[$key]=$(median <<<"$rs") CPU[$key]=$(median <<<"$cs")
          read -r a b c d <<<"$e"
          ERR[$key]="$a/$b/$c/$d" NON[$key]=$nn
        done
      done
      stop "$pid"
    done
  done
done

table() {
  local th="" && [ "$CLASS" = gthread ] && th=" ($THREADS threads)"
  echo "worker class $CLASS$th; $DURATION per run, median of $REPEAT; 1 worker: server on CPU 0, wrk -t1 on CPU 1; N workers: unpinned"
  echo "$(versions)"
  echo "load average before: $LOAD0; after: $(cut -d' ' -f1-3 /proc/loadavg) ($(nproc) CPUs)"
  echo
  echo "| app | workers | mode | conns | server | req/s | CPU us/req | socket errors c/r/w/t | non-2xx |"
  echo "|---|---|---|---|---|---:|---:|---|---:|"
  for app in $APPS; do
    for n in $WORKERS; do
      for mode in $MODES; do
        for CONN in $CONNS; do
          for server in $SERVERS; do
            key="$app,$n,$mode,$CONN,$server"
            [ -n "${RPS[$key]:-}" ] || RPS[$key]=failed
            echo "| $app | $n | $mode | $CONN | $server | ${RPS[$key]} | ${CPU[$key]:-} | ${ERR[$key]:-} | ${NON[$key]:-} |"
          done
        done
      done
    done
  done
  echo
  echo "sums over the $REPEAT runs for errors; CPU us/req = (utime+stime of the server's process tree) / requests"
}
if [ -n "$OUT" ]; then table | tee "$OUT"; else table; fi
