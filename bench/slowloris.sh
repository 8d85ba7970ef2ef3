#!/usr/bin/env bash
# Builds gorn and runs bench/slowloris.py (see its --help): idle and trickling connections
# against 3 workers, then a normal client's requests; p50/p99 of the answered ones.
#
#   bash bench/slowloris.sh                                  500 idle + 50 trickling vs 3 sync workers
#   CLASS=gthread bash bench/slowloris.sh --idle 300 --trickle 20
#   bash bench/slowloris.sh --strict --p99-ms 50             exit 1 unless all answered, p99 < 50 ms
set -euo pipefail
cd "$(dirname "$0")/.."
go build -o bin/gorn ./cmd/gorn
exec python3 bench/slowloris.py --class "${CLASS:-sync}" "$@"
