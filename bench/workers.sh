#!/usr/bin/env bash
# How many workers should a pod run? Throughput and latency of the example app's /work route
# (CPU_MS of computing, then IO_MS of waiting on a "backend") for 1..MAX workers, with
# gorn and its workers inside a cgroup v1 CPU quota of CPUS (the pod's CPU limit) and wrk
# outside it. The count gorn starts with in that cgroup is marked; the "auto:N" row is gorn
# sizing itself, after adapting to the load (N workers at the end).
#
#   bash bench/workers.sh [CPUS] [MAX]          e.g. bash bench/workers.sh 1 6   (root)
#   CPU_MS=2 IO_MS=2 CONNS=32 DURATION=10s bash bench/workers.sh
#   CLASS=gthread THREADS=4 bash bench/workers.sh 1 3          gthread workers instead
set -euo pipefail
cd "$(dirname "$0")/.."
CPUS=${1:-1}
MAX=${2:-6}
CPU_MS=${CPU_MS:-2}
IO_MS=${IO_MS:-2}
CONNS=${CONNS:-32}
DURATION=${DURATION:-10s}
CLASS=${CLASS:-sync}
THREADS=${THREADS:-4}
KIND=(-k "$CLASS")
[ "$CLASS" = gthread ] && KIND+=(--threads "$THREADS")
CGROOT=/sys/fs/cgroup/cpu
[ -w "$CGROOT" ] || { echo "needs root and a writable cgroup v1 cpu controller at $CGROOT" >&2; exit 1; }
command -v wrk >/dev/null || { echo "installing wrk"; apt-get install -y -q wrk >/dev/null; }
[ -x .venv/bin/python ] || make venv >/dev/null
PY="$(pwd)/.venv/bin/python"
go build -o bin/gorn ./cmd/gorn
GORN=$(realpath bin/gorn)

CG="$CGROOT/gorn-bench-$$"
mkdir "$CG"
cleanup() {
  pkill -TERM -f "gorn-bench-marker-$$" 2>/dev/null || true
  sleep 1
  rmdir "$CG" 2>/dev/null || true
}
trap cleanup EXIT
echo 100000 >"$CG/cpu.cfs_period_us"
awk -v c="$CPUS" 'BEGIN { printf "%d\n", c * 100000 }' >"$CG/cpu.cfs_quota_us"

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# run WORKERS: start gorn with that many workers in the cgroup (auto: sized by gorn, which
# adapts to the load every 2 s; it gets a 20 s warm-up to do so), load it, print
# "workers rps p50 p99" (for auto, the count it ended with).
run() {
  local p log n=$1 warmup=2s
  p=$(port)
  log=$(mktemp)
  local size=(-w "$n")
  [ "$n" = auto ] && size=(--resize-interval 2) && warmup=20s
  (cd examples/flask && sh -c 'echo $$ >"$1/cgroup.procs"; shift; exec "$@"' sh "$CG" \
    "$GORN" --python "$PY" "${KIND[@]}" "${size[@]}" -b "127.0.0.1:$p" --log-format text --name "gorn-bench-marker-$$" app:app) 2>"$log" &
  local pid=$!
  for _ in $(seq 100); do curl -sf -o /dev/null "http://127.0.0.1:$p/" && break; sleep 0.1; done
  sleep 1 # every worker ready
  local url="http://127.0.0.1:$p/work?cpu_ms=$CPU_MS&io_ms=$IO_MS"
  wrk -t2 -c"$CONNS" -d"$warmup" "$url" >/dev/null
  [ "$n" = auto ] && n="auto:$(pgrep -c -P "$(pgrep -f "gorn-bench-marker-$$" | head -1)")"
  wrk -t2 -c"$CONNS" -d"$DURATION" --latency "$url" |
    awk -v n="$n" '/Requests\/sec/ {rps=$2} /^ +50%/ {p50=$2} /^ +99%/ {p99=$2} END {print n, rps, p50, p99}'
  kill -TERM $pid
  wait $pid 2>/dev/null || true
  rm -f "$log"
}

echo "CPU quota $CPUS CPUs; ${KIND[*]}; /work: ${CPU_MS} ms CPU + ${IO_MS} ms wait; $CONNS connections, $DURATION each"
choice=$(sh -c 'echo $$ >"$1/cgroup.procs"; shift; exec "$@"' sh "$CG" "$GORN" limits -k "$CLASS" | tail -1)
echo "gorn limits in the cgroup: $choice"
auto=$(sed -n 's/^workers=\([0-9]*\) .*/\1/p' <<<"$choice")
printf '%-10s %10s %10s %10s\n' workers req/s p50 p99
for n in auto $(seq 1 "$MAX"); do
  read -r w rps p50 p99 <<<"$(run "$n")"
  mark=""
  [ "$w" = "$auto" ] && mark="  <- gorn's choice"
  printf '%-10s %10s %10s %10s%s\n' "$w" "$rps" "$p50" "$p99" "$mark"
done
