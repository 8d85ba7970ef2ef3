#!/usr/bin/env bash
# A rolling update on one machine (issue 10): pods A and B behind nginx with upstream
# keep-alive and nginx's default passive health check (max_fails=1 fail_timeout=10s: one
# failed attempt takes a server out for 10 s), under GET and POST load throughout:
#
#   upstream gorn { server A; server B; keepalive 32; }
#   proxy_http_version 1.1; proxy_set_header Connection "";
#
# Timeline (t = 0 when the load starts; DURATION of load, 12 s by default):
#   t=START (3 s)  pod C starts; as soon as C answers a request, A gets TERM (A, like a
#                  Kubernetes pod, keeps serving for --shutdown-delay, then drains: kept
#                  connections get their next request answered with Connection: close)
#   TERM + SWAP (1 s)  nginx.conf is rewritten to `server B; server C;` and `nginx -s reload`
#                  (the endpoints controller / ingress catching up)
# Each pod is its own gorn process (-w WORKERS, -k CLASS) on its own loopback port; the load
# is two wrk processes, GET / and POST /echo (small form body), CONNS connections each.
#
# Reported per class: requests and non-2xx (GET, POST), wrk's socket errors, upstream errors
# in nginx's error log by kind (each one a request nginx had to retry on the other server,
# or failed: a POST is not retried once sent), servers nginx marked down, the responses
# served per upstream (nginx access log), 499s (wrk closing connections with a request in
# flight when its time is up: not failures, not counted), when non-2xx happened, and whether and when A
# exited (its exit code: 0 is clean).
#
# Reading it: wrk's read errors come with the nginx reload (an old nginx worker closes its
# kept client connections as it exits; wrk counts a close it did not expect as a read
# error), not from the pods. When nginx still routes to A after A's shutdown delay
# (SHUTDOWN_DELAY < SWAP), the requests nginx sends on new connections to A once A's workers
# stopped accepting wait in A's listen queue and are reset when A's master exits: "recv()
# failed (104: Connection reset by peer) while reading response header", retried for a GET,
# a 502 for a POST.
#
#   bash bench/rolling.sh                          sync and gthread, --shutdown-delay 2
#   CLASS=sync SHUTDOWN_DELAY=0 bash bench/rolling.sh   no delay: A drains while nginx still sends to it
#   SWAP=3 bash bench/rolling.sh                   nginx catches up after the shutdown delay
#   STRICT=1 bash bench/rolling.sh                 exit 1 on any non-2xx or upstream error
#
# Env (defaults): CLASS ("sync gthread") WORKERS (2) THREADS (4, gthread) SHUTDOWN_DELAY (2)
#   DURATION (12, seconds) START (3, seconds) SWAP (1, seconds after the TERM) CONNS (16 per
#   wrk: GET and POST, 32 in all) GRACEFUL_TIMEOUT (30) NGINX_WORKERS (1) STRICT (0)
#   APP (app:app, from examples/flask) KEEP (1 = keep the temp dir; kept anyway after errors)
#   VENV (a virtualenv with Flask; its bin/python) PYTHON (the interpreter itself; default
#   $VENV/bin/python, else /work/main/.venv/bin/python, else .venv/bin/python) OUT (also
#   write the table to this file)
set -euo pipefail
set +m # no job control: $! is the process itself
cd "$(dirname "$0")/.."
ROOT=$(pwd)
CLASSES=${CLASS:-sync gthread}
WORKERS=${WORKERS:-2}
THREADS=${THREADS:-4}
DELAY=${SHUTDOWN_DELAY:-2}
DURATION=${DURATION:-12}
DURATION=${DURATION%s}
START=${START:-3}
SWAP=${SWAP:-1}
CONNS=${CONNS:-16}
GRACEFUL=${GRACEFUL_TIMEOUT:-30}
NGINX_WORKERS=${NGINX_WORKERS:-1}
STRICT=${STRICT:-0}
APP=${APP:-app:app}
KEEP=${KEEP:-0}
OUT=${OUT:-}

. bench/lib.sh

TMP=$(mktemp -d /tmp/gorn-rolling.XXXXXX)
APID="" BPID="" CPID="" NPID="" WGPID="" WPPID="" WAPID="" FAILED=0
stop_all() {
  stop_pid "$WGPID" TERM
  stop_pid "$WPPID" TERM
  stop_pid "$WAPID" TERM
  stop_pid "$NPID" QUIT
  stop_pid "$APID" TERM
  stop_pid "$BPID" TERM
  stop_pid "$CPID" TERM
  APID="" BPID="" CPID="" NPID="" WGPID="" WPPID="" WAPID=""
}
cleanup() {
  stop_all
  if [ "$KEEP" = 1 ] || [ "$FAILED" != 0 ]; then echo "logs kept in $TMP" >&2; else rm -rf "$TMP"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }'; } # seconds since T0

cat >"$TMP/post.lua" <<'EOF'
wrk.method = "POST"
wrk.body = "name=gorn&items=1,2,3&note=a small form body of a typical POST"
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
EOF

# nginx_conf DIR NGINX_PORT UPSTREAM_PORT... (no max_fails/fail_timeout: nginx's defaults)
nginx_conf() {
  local dir=$1 np=$2 user="" servers=""
  shift 2
  for p in "$@"; do servers="$servers    server 127.0.0.1:$p;"$'\n'; done
  # As root, nginx would switch its workers to "nobody": keep them as the current user.
  [ "$(id -u)" = 0 ] && user="user $(id -un) $(id -gn);"
  mkdir -p "$dir/tmp"
  cat >"$dir/nginx.conf.new" <<EOF
$user
daemon off;
master_process on;
worker_processes $NGINX_WORKERS;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
worker_rlimit_nofile 65536;
events { worker_connections 8192; }
http {
  log_format roll '\$msec \$status \$request_method \$upstream_status \$upstream_addr';
  access_log $dir/access.log roll buffer=256k flush=1s;
  client_body_temp_path $dir/tmp/body;
  proxy_temp_path $dir/tmp/proxy;
  fastcgi_temp_path $dir/tmp/fastcgi;
  uwsgi_temp_path $dir/tmp/uwsgi;
  scgi_temp_path $dir/tmp/scgi;
  upstream gorn {
$servers    keepalive 32;
  }
  server {
    listen 127.0.0.1:$np backlog=4096;
    location / {
      proxy_pass http://gorn;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host \$host;
    }
  }
}
EOF
  mv "$dir/nginx.conf.new" "$dir/nginx.conf"
}

wait_up() { # URL PID [TRIES of 0.05 s]
  for _ in $(seq "${3:-600}"); do
    curl -sf -o /dev/null --max-time 1 "$1" && return 0
    kill -0 "$2" 2>/dev/null || break
    sleep 0.05
  done
  echo "$1 did not come up" >&2
  return 1
}

# start_pod NAME PORT DIR: echoes nothing, sets POD_PID
start_pod() {
  local args=(--python "$PY" -w "$WORKERS" -k "$1" -b "127.0.0.1:$2" --shutdown-delay "$DELAY"
    --graceful-timeout "$GRACEFUL" --log-format json --log-level info)
  [ "$1" = gthread ] && args+=(--threads "$THREADS")
  (cd examples/flask && exec "$GORN" "${args[@]}" "$APP") </dev/null >"$3" 2>&1 &
  POD_PID=$!
}

# State of a child process: empty once it is gone or a zombie (exited, not yet reaped).
alive() { [ -r "/proc/$1/stat" ] && [ "$(sed 's/.*) //' "/proc/$1/stat" | cut -d' ' -f1)" != Z ]; }

# Lines of nginx's error log that are upstream failures (each a retried or failed request).
UPSTREAM_RE='upstream prematurely closed|recv\(\) failed|reset by peer|upstream timed out|connect\(\) failed|no live upstreams|writev\(\) failed|send\(\) failed|Broken pipe|upstream sent (invalid|no valid|too big)'

wrk_stats() { # FILE -> "requests non2xx socketerrors"
  awk '
    /requests in/ { req = $1 }
    /Socket errors/ { gsub(/,/, ""); s = "c" $4 "/r" $6 "/w" $8 "/t" $10 }
    /Non-2xx or 3xx/ { n = $5 }
    END { printf "%d %d %s\n", req, n, (s ? s : "0") }' "$1"
}

ROWS=() DETAILS=()
for class in $CLASSES; do
  dir="$TMP/$class"
  mkdir -p "$dir"
  pa=$(port) pb=$(port) pc=$(port) np=$(port)
  start_pod "$class" "$pa" "$dir/a.log"; APID=$POD_PID
  start_pod "$class" "$pb" "$dir/b.log"; BPID=$POD_PID
  wait_up "http://127.0.0.1:$pa/" "$APID" || { cat "$dir/a.log" >&2; exit 1; }
  wait_up "http://127.0.0.1:$pb/" "$BPID" || { cat "$dir/b.log" >&2; exit 1; }
  nginx_conf "$dir" "$np" "$pa" "$pb"
  "$NGINX" -p "$dir" -e "$dir/error.log" -c "$dir/nginx.conf" </dev/null >"$dir/nginx.out" 2>&1 &
  NPID=$!
  wait_up "http://127.0.0.1:$np/" "$NPID" || { cat "$dir/nginx.out" "$dir/error.log" >&2; exit 1; }
  sleep 1 # every worker of A and B ready
  before=$(wc -l <"$dir/error.log")
  events=()

  T0=$(now)
  wrk -t1 -c"$CONNS" -d"${DURATION}s" "http://127.0.0.1:$np/" >"$dir/wrk-get.txt" 2>&1 &
  WGPID=$!
  wrk -t1 -c"$CONNS" -d"${DURATION}s" -s "$TMP/post.lua" "http://127.0.0.1:$np/echo" >"$dir/wrk-post.txt" 2>&1 &
  WPPID=$!

  sleep "$START"
  events+=("C start $(since "$T0")")
  start_pod "$class" "$pc" "$dir/c.log"; CPID=$POD_PID
  wait_up "http://127.0.0.1:$pc/" "$CPID" || { cat "$dir/c.log" >&2; exit 1; }
  events+=("C answers $(since "$T0")")
  kill -TERM "$APID"
  TTERM=$(now)
  # When A is gone (a zombie until reaped below, for its exit code): polled in the background.
  (for _ in $(seq $(((GRACEFUL + 5) * 50))); do alive "$APID" || { now >"$dir/a.gone"; exit 0; }; sleep 0.02; done) &
  WAPID=$!
  events+=("A TERM $(since "$T0")")
  sleep "$SWAP"
  nginx_conf "$dir" "$np" "$pb" "$pc"
  "$NGINX" -p "$dir" -c "$dir/nginx.conf" -s reload 2>>"$dir/nginx.out"
  events+=("nginx reload (B, C) $(since "$T0")")

  # A's exit: poll (bounded by the graceful timeout plus a margin), then reap for its code.
  a_exit="still running after $((GRACEFUL + 5)) s"
  a_rc=""
  for _ in $(seq $(((GRACEFUL + 5) * 20))); do
    alive "$APID" || break
    sleep 0.05
  done
  if ! alive "$APID"; then
    wait "$WAPID" 2>/dev/null || true
    gone=$(cat "$dir/a.gone" 2>/dev/null || now)
    a_after=$(awk -v a="$TTERM" -v b="$gone" 'BEGIN { printf "%.2f", b - a }')
    a_at=$(awk -v a="$T0" -v b="$gone" 'BEGIN { printf "%.2f", b - a }')
    a_rc=0
    wait "$APID" || a_rc=$?
    a_exit="exit $a_rc at t=$a_at s, ${a_after} s after TERM"
    APID="" WAPID=""
  fi
  events+=("A exited ${a_at:-?}")
  wait "$WGPID" || true
  wait "$WPPID" || true
  WGPID="" WPPID=""
  sleep 1.2 # access log flush
  tail -n +"$((before + 1))" "$dir/error.log" >"$dir/error.run.log"
  stop_all

  read -r greq gnon gsock <<<"$(wrk_stats "$dir/wrk-get.txt")"
  read -r preq pnon psock <<<"$(wrk_stats "$dir/wrk-post.txt")"
  up=$(grep -cE "$UPSTREAM_RE" "$dir/error.run.log" || true)
  kinds=$(awk -v re="$UPSTREAM_RE" 'match($0, re) { print substr($0, RSTART, RLENGTH) }' "$dir/error.run.log" |
    sort | uniq -c | sort -rn | awk '{ c = $1; $1 = ""; printf "%s%s x%d", (NR > 1 ? "; " : ""), substr($0, 2), c }')
  down=$(grep -c 'temporarily disabled' "$dir/error.run.log" || true)
  # Responses per upstream address (the last one tried, when nginx retried), and the
  # non-2xx by second of the run and by upstream.
  served=$(awk -v t0="$T0" -v a="$pa" -v b="$pb" -v c="$pc" '
    $1 < t0 { next }
    { last = $NF; sub(/.*:/, "", last)
      name = (last == a) ? "A" : (last == b) ? "B" : (last == c) ? "C" : last
      cnt[name]++ }
    END { for (k in cnt) printf "%s %d; ", k, cnt[k] }' "$dir/access.log" | sed 's/; $//')
  bad=$(awk -v t0="$T0" '$1 >= t0 && $2 !~ /^2/ && $2 != 499 { u = $5; for (i = 6; i <= NF; i++) u = u " " $i
    printf "t=%.1f %s %s (%s)\n", $1 - t0, $2, $3, u }' "$dir/access.log" |
    sort | uniq -c | head -20)
  # 499: wrk closed a connection with a request in flight when its time was up (not a failure).
  c499=$(awk -v t0="$T0" '$1 >= t0 && $2 == 499' "$dir/access.log" | wc -l)
  if [ "$gnon" != 0 ] || [ "$pnon" != 0 ] || [ "$up" != 0 ] || [ -z "$a_rc" ] || [ "$a_rc" != 0 ]; then FAILED=1; fi
  row="| $class | $DELAY | $greq | $gnon | $preq | $pnon | get $gsock, post $psock | $up | ${kinds:-} | $down | $served | $c499 | $a_exit |"
  echo "$row" >&2
  ROWS+=("$row")
  DETAILS+=("$class: $(printf '%s; ' "${events[@]}" | sed 's/; $//')")
  [ -n "$bad" ] && DETAILS+=("$class non-2xx (count, second of the run, status, method, upstreams tried):"$'\n'"$bad")
  errs=$(grep -E "$UPSTREAM_RE|temporarily disabled" "$dir/error.run.log" | head -8 || true)
  [ -n "$errs" ] && DETAILS+=("$class nginx error log (first lines):"$'\n'"$errs")
done

table() {
  echo "gorn $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?') rolling update behind $("$NGINX" -v 2>&1 | sed 's/.*: //') (upstream keepalive 32, default max_fails=1 fail_timeout=10s); pods -w $WORKERS; wrk GET c$CONNS + POST c$CONNS for ${DURATION}s; C at t=${START}s, TERM to A when C answers, nginx swaps A for C ${SWAP}s later; $("$PY" -V)"
  echo "ports: per class A, B, C as in the logs; upstream names in 'served' are the last server nginx tried"
  echo
  echo "| class | shutdown delay (s) | GET requests | GET non-2xx | POST requests | POST non-2xx | socket errors | upstream errors | upstream errors by kind | marked down | served by | 499 at the end | A |"
  echo "|---|---:|---:|---:|---:|---:|---|---:|---|---:|---|---:|---|"
  printf '%s\n' "${ROWS[@]}"
  echo
  printf '%s\n' "${DETAILS[@]}"
}
if [ -n "$OUT" ]; then table | tee "$OUT"; else table; fi
if [ "$STRICT" = 1 ] && [ "$FAILED" != 0 ]; then
  echo "STRICT: non-2xx responses, upstream errors or an unclean exit of A (logs in $TMP)" >&2
  exit 1
fi
