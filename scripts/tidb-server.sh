#!/usr/bin/env bash
# Build tidb-server once into a cache folder and start it on 127.0.0.1:4001 (unistore, in memory).
#
# TiDB's go.mod has replace directives, so `go install github.com/pingcap/tidb/cmd/tidb-server@v`
# refuses it. Instead a throwaway wrapper module requires TiDB at a pinned pseudo-version, copies
# TiDB's own replace lines (Go ignores a dependency's replaces), and points pkg/parser, which TiDB
# replaces with ./pkg/parser, at the pseudo-version of the same commit. The build takes about
# 20 minutes on 2 idle cores (44 on a busy shared one) and runs at low priority with -p=1 so
# the machine stays usable; the binary (about 233 MiB) is kept and reused, so later runs
# start in seconds.
#
#   scripts/tidb-server.sh build   build the binary if missing, print its path
#   scripts/tidb-server.sh start   build if needed, start the server unless it is up, print the DSN
#   scripts/tidb-server.sh stop    stop the server this script started
#
# Environment (all optional): HELIX_CACHE (default /var/cache/helix), HELIX_TIDB_PORT (default 4001).
set -euo pipefail

# One TiDB commit (2025-11-26), served by the Go module proxy for both modules.
TIDB_VERSION=v1.1.0-beta.0.20251126154744-e4e814fdc0af
PARSER_VERSION=v0.0.0-20251126154744-e4e814fdc0af

CACHE="${HELIX_CACHE:-/var/cache/helix}"
DIR="$CACHE/tidb"
BIN="$DIR/bin/tidb-server-$TIDB_VERSION"
PORT="${HELIX_TIDB_PORT:-4001}"
STATUS_PORT=$((PORT + 6079)) # tidb's default status port is 10080; keep it off the default
log() { echo "tidb-server: $*" >&2; }

build() {
  if [ -x "$BIN" ]; then echo "$BIN"; return; fi
  local mod="$DIR/wrapper"
  mkdir -p "$mod" "$DIR/bin"
  log "downloading TiDB $TIDB_VERSION's go.mod"
  local gomod
  gomod=$(cd "$mod" && GOFLAGS=-mod=mod go mod download -json "github.com/pingcap/tidb@$TIDB_VERSION" |
    sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p')
  {
    echo "module helix.local/tidbwrapper"
    echo
    echo "go 1.26"
    echo
    echo "require ("
    echo "	github.com/pingcap/tidb $TIDB_VERSION"
    echo "	github.com/pingcap/tidb/pkg/parser $PARSER_VERSION"
    echo ")"
    echo
    echo "replace ("
    # TiDB's replace block, minus its local pkg/parser path.
    awk '/^replace \(/{on=1; next} on && /^\)/{on=0} on' "$gomod" |
      grep '=>' | grep -v '=> \./'
    echo ")"
  } >"$mod/go.mod"
  log "building tidb-server (about 20 min on 2 cores; log: $DIR/build.log)"
  (cd "$mod" && GOFLAGS="-mod=mod -p=1" nice -n 19 \
    go build -trimpath -o "$BIN.tmp" github.com/pingcap/tidb/cmd/tidb-server) >"$DIR/build.log" 2>&1 ||
    { tail -n 30 "$DIR/build.log" >&2; exit 1; }
  mv "$BIN.tmp" "$BIN"
  echo "$BIN"
}

alive() {
  # mysqladmin ping (MariaDB's client) answers "alive" as soon as the server speaks the protocol.
  mysqladmin -uroot -h127.0.0.1 -P"$PORT" --connect-timeout=2 ping >/dev/null 2>&1
}

start() {
  local dsn="root@tcp(127.0.0.1:$PORT)/"
  if alive; then log "already running on 127.0.0.1:$PORT"; echo "$dsn"; return; fi
  build >/dev/null
  log "starting on 127.0.0.1:$PORT (log: $DIR/server.log)"
  # Run from the cache folder and name the slow-query log: tidb-server otherwise writes
  # tidb-slow.log into the current directory (a checkout, say).
  setsid nohup env -C "$DIR" "$BIN" -store unistore -path '' -host 127.0.0.1 -P "$PORT" \
    -status "$STATUS_PORT" -log-file "$DIR/server.log" -log-slow-query "$DIR/slow.log" \
    >/dev/null 2>&1 </dev/null &
  echo $! >"$DIR/server.pid"
  for _ in $(seq 1 60); do
    if alive; then log "ready"; echo "$dsn"; return; fi
    sleep 1
  done
  log "not ready after 60 s"; tail -n 20 "$DIR/server.log" >&2; exit 1
}

stop() {
  [ -f "$DIR/server.pid" ] || return 0
  kill "$(cat "$DIR/server.pid")" 2>/dev/null || true
  rm -f "$DIR/server.pid"
}

case "${1:-start}" in
  build) build ;;
  start) start ;;
  stop) stop ;;
  *) echo "usage: $0 build|start|stop" >&2; exit 2 ;;
esac
