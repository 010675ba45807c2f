#!/usr/bin/env bash
# Provision and start Oracle MySQL 9.7 on 127.0.0.1:3308 for the MySQL leg of the test matrix.
#
# Debian packages Oracle MySQL only in unstable (mysql-server-core), and this machine runs
# bookworm with no Docker, so the server lives in a minimal sid chroot built by debootstrap.
# Every step is skipped when its result is already there, so running the script again is a
# no-op on a warm machine (about a second) and CI can call it unconditionally.
#
# Environment (all optional):
#   HELIX_CACHE       cache folder outside the repo   (default /var/cache/helix)
#   HELIX_MYSQL_ROOT  the chroot                      (default $HELIX_CACHE/mysql-sid)
#   HELIX_MYSQL_PORT  TCP port, loopback only         (default 3308)
#   HELIX_APT_MIRROR  Debian mirror                   (default: the one apt on this machine uses)
# Prints the DSN for HELIX_TEST_MYSQL_DSN on success. Needs root (debootstrap, chroot, mount).
set -euo pipefail

CACHE="${HELIX_CACHE:-/var/cache/helix}"
ROOT="${HELIX_MYSQL_ROOT:-$CACHE/mysql-sid}"
PORT="${HELIX_MYSQL_PORT:-3308}"
DATADIR=/var/lib/helix-mysql # inside the chroot
log() { echo "mysql-server: $*" >&2; }

# The Debian mirror apt already uses here (the first non-security URI in the enabled sources),
# so provisioning goes wherever this machine is allowed to reach.
apt_mirror() {
  if [ -n "${HELIX_APT_MIRROR:-}" ]; then echo "$HELIX_APT_MIRROR"; return; fi
  local uris
  uris=$( { grep -hE '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{for (i=2;i<=NF;i++) print $i}';
            grep -hE '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null | awk '{print ($2 ~ /^\[/) ? $3 : $2}'; } |
          grep -v -- '-security' | grep -E '/debian/?$' | head -n1)
  if [ -z "$uris" ]; then log "no Debian mirror found in /etc/apt/sources.list*; set HELIX_APT_MIRROR"; exit 1; fi
  echo "${uris%/}"
}

in_root() { chroot "$ROOT" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C "$@"; }

alive() {
  [ -x "$ROOT/usr/bin/mysqladmin" ] &&
    in_root mysqladmin --no-defaults -uroot -h127.0.0.1 -P"$PORT" --connect-timeout=2 ping >/dev/null 2>&1
}

if alive; then
  log "already running on 127.0.0.1:$PORT"
  echo "root@tcp(127.0.0.1:$PORT)/"
  exit 0
fi

mkdir -p "$CACHE"
if [ ! -e "$ROOT/.helix-debootstrap-done" ]; then
  if ! command -v debootstrap >/dev/null; then
    log "installing debootstrap"
    # A fresh machine may have no package lists yet.
    apt-get install -y debootstrap >&2 || { apt-get update >&2 && apt-get install -y debootstrap >&2; }
  fi
  mirror=$(apt_mirror)
  log "debootstrap sid from $mirror into $ROOT (about 80 s)"
  # An interrupted run may have left file systems mounted inside: never delete through them.
  for m in proc sys dev/pts dev; do mountpoint -q "$ROOT/$m" 2>/dev/null && umount -l "$ROOT/$m"; done
  rm -rf --one-file-system "$ROOT"
  debootstrap --variant=minbase sid "$ROOT" "$mirror" >&2
  touch "$ROOT/.helix-debootstrap-done"
fi

mountpoint -q "$ROOT/proc" || mount -t proc proc "$ROOT/proc"

if [ ! -e "$ROOT/.helix-mysql-installed" ]; then
  log "installing mysql-server-core and mysql-client-core in the chroot (about 50 s)"
  # sid's Release files can be older than their Valid-Until on a snapshot mirror.
  in_root apt-get -o Acquire::Check-Valid-Until=false update >&2
  in_root env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
    mysql-server-core mysql-client-core >&2
  touch "$ROOT/.helix-mysql-installed"
fi

if [ ! -e "$ROOT$DATADIR/.helix-initialized" ]; then
  log "initializing the data directory (root, empty password)"
  rm -rf "${ROOT:?}$DATADIR"
  in_root mysqld --no-defaults --initialize-insecure --user=root --datadir="$DATADIR" >&2
  touch "$ROOT$DATADIR/.helix-initialized"
fi

# --max-connections: the default 151 is too few when go test runs the MySQL-backed
# packages side by side (every store, e2e node and helix command has its own pool).
log "starting mysqld on 127.0.0.1:$PORT"
# setsid + nohup: the server outlives this script and the CI step that ran it.
setsid nohup chroot "$ROOT" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C \
  mysqld --no-defaults --user=root --datadir="$DATADIR" \
  --port="$PORT" --bind-address=127.0.0.1 --mysqlx=OFF --secure-file-priv='' \
  --socket=/tmp/helix-mysqld.sock --pid-file="$DATADIR/mysqld.pid" \
  --max-connections=1000 \
  --log-error="$DATADIR/error.log" \
  >/dev/null 2>&1 </dev/null &

for _ in $(seq 1 60); do
  if alive; then
    log "ready on 127.0.0.1:$PORT"
    echo "root@tcp(127.0.0.1:$PORT)/"
    exit 0
  fi
  sleep 1
done
log "mysqld did not become ready in 60 s; its log:"
tail -n 30 "$ROOT$DATADIR/error.log" >&2 || true
exit 1
