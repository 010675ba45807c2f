#!/usr/bin/env bash
# Runs helix's benchmarks (package ./bench) and prints them as a markdown table, with the
# command and the machine above it so the numbers can be reproduced and compared.
#
#   BENCH      benchmark regexp (default: all)              e.g. BENCH=Alloc/100k
#   BENCHTIME  go test -benchtime (default 200ms)           e.g. BENCHTIME=5x
#   BENCHCPU   go test -cpu, i.e. GOMAXPROCS (default 1: the allocator's targets are
#              for one core, and garbage collection then runs on that core too)
#   BENCHRAW   file to keep the raw `go test` output in (default: a temporary file)
#
# Benchmarks that need something (MySQL, long simulations) skip unless their own
# environment variable is set; see bench/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."

bench="${BENCH:-.}"
benchtime="${BENCHTIME:-200ms}"
cpu="${BENCHCPU:-1}"
raw="${BENCHRAW:-$(mktemp)}"

cmd=(go test -run '^$' -bench "$bench" -benchmem -benchtime="$benchtime" -cpu="$cpu" ./bench/)

model=$(grep -m1 'model name' /proc/cpuinfo 2>/dev/null | sed 's/.*: //' || true)
[ -n "$model" ] || model=$(uname -m)
echo "Command: \`${cmd[*]}\`"
echo
echo "Machine: $(go version | sed 's/^go version //'), $(nproc) CPUs ($model), load average $(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo '?'), $(date -u +%Y-%m-%dT%H:%MZ)"
echo

status=0
"${cmd[@]}" >"$raw" 2>&1 || status=$?
table_status=0
go run ./bench/benchtable <"$raw" || table_status=$?
if [ "$status" -ne 0 ]; then
  echo >&2
  echo "bench: go test failed (exit $status); last lines of its output ($raw):" >&2
  tail -n 30 "$raw" >&2
  exit "$status"
fi
exit "$table_status"
