# Shared by the bench scripts that put nginx in front of gorn (sourced, not run).
# Sets NGINX, PY (a Python with Flask: $PYTHON, $VIRTUAL_ENV or $VENV, .venv, .bench-venv,
# else `make venv`) and GORN (bin/gorn, built now); defines stop_pid.

command -v wrk >/dev/null || { echo "installing wrk" >&2; apt-get install -y -q wrk >/dev/null; }
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
[ -x "$NGINX" ] || { echo "installing nginx-light" >&2; apt-get install -y -q nginx-light >/dev/null; NGINX=/usr/sbin/nginx; }
PY=${PYTHON:-}
for cand in ${VIRTUAL_ENV:+"$VIRTUAL_ENV/bin/python"} ${VENV:+"$VENV/bin/python"} "$ROOT/.venv/bin/python" "$ROOT/.bench-venv/bin/python"; do
  [ -n "$PY" ] && break
  [ -x "$cand" ] && "$cand" -c 'import flask' 2>/dev/null && PY=$cand
done
if [ -z "$PY" ]; then make -s venv >/dev/null && PY="$ROOT/.venv/bin/python"; fi
go build -o bin/gorn ./cmd/gorn
GORN="$ROOT/bin/gorn"

stop_pid() { # PID SIGNAL: signal, wait up to 10 s, then SIGKILL
  [ -n "$1" ] || return 0
  kill "-$2" "$1" 2>/dev/null || true
  for _ in $(seq 100); do kill -0 "$1" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
}
