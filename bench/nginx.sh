#!/usr/bin/env bash
# gorn behind nginx as a keep-alive reverse proxy, the path of every pod behind an ingress
# controller or a load balancer:
#
#   upstream gorn { server 127.0.0.1:PORT; keepalive 32; }
#   proxy_http_version 1.1; proxy_set_header Connection "";
#
# For each worker class, worker count, wrk connection count and method (GET / and POST
# /echo with a small body), a fresh gorn and a fresh nginx (generated config in a temp dir,
# run as the current user, loopback ports only) take DURATION of wrk load. Reported per cell:
# requests, req/s, non-2xx (wrk's "Non-2xx or 3xx responses": nginx answers 502 when an
# upstream connection fails on a request it may not retry, such as a POST), wrk's socket
# errors, and upstream errors counted in nginx's error.log ("upstream prematurely closed",
# "recv() failed", "reset by peer", ...: each one is a request nginx had to retry or fail).
#
#   bash bench/nginx.sh                               sync and gthread, 2 and 4 workers, c32 and c256
#   CLASS=sync WORKERS=2 CONNS=32 DURATION=5s bash bench/nginx.sh
#   MAXREQ=50 bash bench/nginx.sh                     gorn --max-requests 50 (recycling under load)
#   HUP=1 bash bench/nginx.sh                         a HUP to the gorn master half-way through each run
#   STRICT=1 bash bench/nginx.sh                      exit 1 on any non-2xx or upstream error
#
# Env (defaults): CLASS ("sync gthread") WORKERS ("2 4") CONNS ("32 256") METHODS ("GET POST")
#   DURATION (5s) THREADS (4, gthread) MAXREQ (0 = off) HUP (0) STRICT (0)
#   APP (app:app, from examples/flask: GET / and POST /echo) NGINX_WORKERS (1)
#   KEEP (1 = keep the temp dir with nginx.conf, error.log and gorn's log; it is kept anyway
#   when a run had errors) PYTHON (interpreter with Flask: $VIRTUAL_ENV/bin/python, else
#   .venv/bin/python, else .bench-venv/bin/python) OUT (also write the table to this file)
set -euo pipefail
set +m # no job control: $! is the server itself
cd "$(dirname "$0")/.."
ROOT=$(pwd)
CLASSES=${CLASS:-sync gthread}
WORKERS=${WORKERS:-2 4}
CONNS=${CONNS:-32 256}
METHODS=${METHODS:-GET POST}
DURATION=${DURATION:-5s}
THREADS=${THREADS:-4}
MAXREQ=${MAXREQ:-0}
HUP=${HUP:-0}
STRICT=${STRICT:-0}
APP=${APP:-app:app}
NGINX_WORKERS=${NGINX_WORKERS:-1}
KEEP=${KEEP:-0}
OUT=${OUT:-}

. bench/lib.sh
secs=${DURATION%s}

TMP=$(mktemp -d /tmp/gorn-nginx.XXXXXX)
GPID="" NPID="" FAILED=0
cleanup() {
  stop_pid "$NPID" QUIT
  stop_pid "$GPID" TERM
  [ -n "${HUPPID:-}" ] && kill "$HUPPID" 2>/dev/null || true
  if [ "$KEEP" = 1 ] || [ "$FAILED" != 0 ]; then echo "logs kept in $TMP" >&2; else rm -rf "$TMP"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

cat >"$TMP/post.lua" <<'EOF'
wrk.method = "POST"
wrk.body = "name=gorn&items=1,2,3&note=a small form body of a typical POST"
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
EOF

# nginx_conf DIR NGINX_PORT UPSTREAM_PORT
nginx_conf() {
  local user=""
  # As root, nginx would switch its workers to "nobody": keep them as the current user.
  [ "$(id -u)" = 0 ] && user="user $(id -un) $(id -gn);"
  mkdir -p "$1/tmp"
  cat >"$1/nginx.conf" <<EOF
$user
daemon off;
master_process on;
worker_processes $NGINX_WORKERS;
pid $1/nginx.pid;
error_log $1/error.log warn;
worker_rlimit_nofile 65536;
events { worker_connections 8192; }
http {
  access_log off;
  client_body_temp_path $1/tmp/body;
  proxy_temp_path $1/tmp/proxy;
  fastcgi_temp_path $1/tmp/fastcgi;
  uwsgi_temp_path $1/tmp/uwsgi;
  scgi_temp_path $1/tmp/scgi;
  upstream gorn {
    server 127.0.0.1:$3;
    keepalive 32;
  }
  server {
    listen 127.0.0.1:$2 backlog=4096;
    location / {
      proxy_pass http://gorn;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host \$host;
    }
  }
}
EOF
}

wait_up() { # URL PID
  for _ in $(seq 300); do
    curl -sf -o /dev/null "$1" && return 0
    kill -0 "$2" 2>/dev/null || break
    sleep 0.1
  done
  echo "$1 did not come up" >&2
  return 1
}

# Lines of nginx's error log that are upstream failures (each a retried or failed request).
UPSTREAM_RE='upstream prematurely closed|recv\(\) failed|reset by peer|upstream timed out|connect\(\) failed|no live upstreams|writev\(\) failed|send\(\) failed|Broken pipe|upstream sent (invalid|no valid|too big)'

mode="plain"
[ "$MAXREQ" != 0 ] && mode="max-requests $MAXREQ"
[ "$HUP" = 1 ] && mode="$mode, HUP mid-run"
ROWS=()
BREAKDOWN=()
cell=0
for class in $CLASSES; do
  for n in $WORKERS; do
    for c in $CONNS; do
      for method in $METHODS; do
        cell=$((cell + 1))
        dir="$TMP/$cell-$class-w$n-c$c-$method"
        mkdir -p "$dir"
        gp=$(port) np=$(port)
        args=(--python "$PY" -w "$n" -k "$class" -b "127.0.0.1:$gp" --log-format text --log-level warning)
        [ "$class" = gthread ] && args+=(--threads "$THREADS")
        [ "$MAXREQ" != 0 ] && args+=(--max-requests "$MAXREQ")
        (cd examples/flask && exec "$GORN" "${args[@]}" "$APP") </dev/null >"$dir/gorn.log" 2>&1 &
        GPID=$!
        wait_up "http://127.0.0.1:$gp/" "$GPID" || { cat "$dir/gorn.log" >&2; exit 1; }
        nginx_conf "$dir" "$np" "$gp"
        "$NGINX" -p "$dir" -e "$dir/error.log" -c "$dir/nginx.conf" </dev/null >"$dir/nginx.out" 2>&1 &
        NPID=$!
        wait_up "http://127.0.0.1:$np/" "$NPID" || { cat "$dir/nginx.out" "$dir/error.log" >&2; exit 1; }
        sleep 0.5 # every worker ready
        before=$(wc -l <"$dir/error.log")
        script=()
        path=/
        [ "$method" = POST ] && script=(-s "$TMP/post.lua") && path=/echo
        HUPPID=""
        if [ "$HUP" = 1 ]; then
          (sleep "$(awk -v s="$secs" 'BEGIN { print s / 2 }')" && kill -HUP "$GPID") &
          HUPPID=$!
        fi
        out=$(wrk -t2 -c"$c" -d"$DURATION" "${script[@]}" "http://127.0.0.1:$np$path")
        [ -n "$HUPPID" ] && { wait "$HUPPID" 2>/dev/null || true; HUPPID=""; }
        sleep 0.2
        read -r req rps sock non <<<"$(awk '
          /requests in/ { req = $1 }
          /Requests\/sec/ { rps = $2 }
          /Socket errors/ { gsub(/,/, ""); s = "c" $4 "/r" $6 "/w" $8 "/t" $10; tot = $4 + $6 + $8 + $10 }
          /Non-2xx or 3xx/ { n = $5 }
          END { printf "%d %s %s %d\n", req, rps, (s ? s : "0"), n }' <<<"$out")"
        tail -n +"$((before + 1))" "$dir/error.log" >"$dir/error.run.log"
        up=$(grep -cE "$UPSTREAM_RE" "$dir/error.run.log" || true)
        other=$({ grep -E '\[(error|crit|alert|emerg)\]' "$dir/error.run.log" || true; } | grep -cvE "$UPSTREAM_RE" || true)
        kinds=$(awk -v re="$UPSTREAM_RE" 'match($0, re) { print substr($0, RSTART, RLENGTH) }' "$dir/error.run.log" |
          sort | uniq -c | sort -rn | awk '{ c = $1; $1 = ""; printf "%s%s x%d", (NR > 1 ? "; " : ""), substr($0, 2), c }')
        stop_pid "$NPID" QUIT
        NPID=""
        stop_pid "$GPID" TERM
        GPID=""
        if [ "$non" != 0 ] || [ "$up" != 0 ]; then FAILED=1; fi
        row="| $class | $n | $c | $method | $mode | $req | $rps | $non | $sock | $up | $other | ${kinds:-} |"
        echo "$row" >&2
        ROWS+=("$row")
      done
    done
  done
done

table() {
  echo "gorn $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?') behind $("$NGINX" -v 2>&1 | sed 's/.*: //') (upstream keepalive 32, HTTP/1.1, Connection \"\"); wrk -t2, $DURATION per cell; $("$PY" -V)"
  echo
  echo "| class | workers | conns | method | mode | requests | req/s | non-2xx | socket errors | upstream errors | other nginx errors | upstream errors by kind |"
  echo "|---|---|---|---|---|---:|---:|---:|---|---:|---:|---|"
  printf '%s\n' "${ROWS[@]}"
}
if [ -n "$OUT" ]; then table | tee "$OUT"; else table; fi
if [ "$STRICT" = 1 ] && [ "$FAILED" != 0 ]; then
  echo "STRICT: non-2xx responses or upstream errors (logs in $TMP)" >&2
  exit 1
fi
