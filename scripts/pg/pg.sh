#!/usr/bin/env bash
# A throwaway PostgreSQL 15 cluster on loopback, for tests, benchmarks and development.
#
#   scripts/pg/pg.sh start  [--dir DIR] [--port PORT] [--fast]   init (once) and start; prints the URL
#   scripts/pg/pg.sh stop   [--dir DIR] [--remove]               fast shutdown; --remove deletes DIR
#   scripts/pg/pg.sh status [--dir DIR]                          exit 0 when running, 1 otherwise
#   scripts/pg/pg.sh url    [--dir DIR]                          the connection URL
#
# Streaming replication (the cluster test, test/integration/cluster/):
#   scripts/pg/pg.sh start   --dir P --port 5 --sync-standby NAME   a primary whose commits wait until
#                            the standby NAME has flushed them (synchronous_commit = on): an answer
#                            the control plane gave survives the primary's loss
#   scripts/pg/pg.sh standby --dir S --port 6 --primary-port 5 [--name NAME]
#                            a hot standby: pg_basebackup -R from the primary, then started
#   scripts/pg/pg.sh promote --dir S                             the standby becomes a primary
#   scripts/pg/pg.sh crash   --dir P                             SIGKILL the postmaster (no shutdown)
#
# Idempotent: `start` on a running cluster prints its URL; `stop` on a stopped one succeeds.
# DIR defaults to /tmp/optin-pg-<uid> (the `postgres` user must be able to traverse it: not
# under /root), PORT to 55432. The cluster listens on 127.0.0.1 only and trusts every local
# connection (user `postgres`, no password): it holds throwaway data and must never be exposed.
# --fast turns off fsync, full_page_writes and synchronous_commit: fine for tests (a crash loses
# the cluster, which is thrown away anyway), wrong for a benchmark of durable writes.
#
# initdb refuses to run as root, so as root every server binary runs as the `postgres` OS user
# (runuser), and DIR is handed to it. Binaries: $OPTIN_PG_BIN (default /usr/lib/postgresql/15/bin).
set -euo pipefail

PG_BIN="${OPTIN_PG_BIN:-/usr/lib/postgresql/15/bin}"
DIR="/tmp/optin-pg-$(id -u)"
PORT=55432
FAST=0
REMOVE=0
SYNC_STANDBY=""
PRIMARY_PORT=""
NAME="standby1"
CMD="${1:-}"
[[ $# -gt 0 ]] && shift
while [[ $# -gt 0 ]]; do
  case "$1" in
    --dir) DIR="$2"; shift 2 ;;
    --port) PORT="$2"; shift 2 ;;
    --fast) FAST=1; shift ;;
    --remove) REMOVE=1; shift ;;
    --sync-standby) SYNC_STANDBY="$2"; shift 2 ;;
    --primary-port) PRIMARY_PORT="$2"; shift 2 ;;
    --name) NAME="$2"; shift 2 ;;
    *) echo "[pg] unknown option $1" >&2; exit 2 ;;
  esac
done
DATA="$DIR/data"
LOG="$DIR/postgres.log"

die() { printf '[pg] error: %s\n' "$*" >&2; exit 1; }

[[ -x "$PG_BIN/initdb" && -x "$PG_BIN/pg_ctl" ]] ||
  die "PostgreSQL server binaries not found in $PG_BIN: install postgresql-15 (scripts/setup.sh does) or set OPTIN_PG_BIN"

# Run a server binary as the cluster owner.
as_owner() {
  if [[ $(id -u) -eq 0 ]]; then
    id postgres >/dev/null 2>&1 || die "running as root needs the 'postgres' OS user (created by the postgresql package)"
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

running() { [[ -f "$DATA/PG_VERSION" ]] && as_owner "$PG_BIN/pg_ctl" -D "$DATA" status >/dev/null 2>&1; }

current_port() { sed -n "s/^port = \([0-9]*\)$/\1/p" "$DATA/optin.conf" 2>/dev/null | head -1; }

print_url() { echo "postgres://postgres@127.0.0.1:$(current_port)/postgres"; }

start() {
  if running; then print_url; return 0; fi
  mkdir -p "$DIR"
  if [[ $(id -u) -eq 0 ]]; then chown postgres: "$DIR"; fi
  if [[ ! -f "$DATA/PG_VERSION" ]]; then
    as_owner "$PG_BIN/initdb" -D "$DATA" -U postgres -A trust -E UTF8 --locale=C --no-sync >"$DIR/initdb.log" 2>&1 ||
      die "initdb failed; see $DIR/initdb.log"
    echo "include_if_exists = 'optin.conf'" >>"$DATA/postgresql.conf"
  fi
  # Rewritten at every start, so a restart may move the port or the durability mode.
  {
    echo "port = $PORT"
    echo "listen_addresses = '127.0.0.1'"
    echo "unix_socket_directories = '$DIR'"
    echo "max_connections = 300"
    echo "shared_buffers = 64MB"
    if [[ $FAST -eq 1 ]]; then
      echo "fsync = off"
      echo "full_page_writes = off"
      [[ -n $SYNC_STANDBY ]] || echo "synchronous_commit = off"
    fi
    if [[ -n $SYNC_STANDBY ]]; then
      # A commit returns once the standby has flushed its WAL (PostgreSQL 15 docs, 27.2.8
      # "Synchronous Replication"). With one standby, its loss blocks writes until it returns or
      # this line is removed: durability over availability, which the consent ledger needs.
      echo "synchronous_standby_names = '$SYNC_STANDBY'"
      echo "synchronous_commit = on"
    fi
    echo "wal_level = replica"
    echo "max_wal_senders = 10"
    echo "hot_standby = on"
  } >"$DIR/optin.conf.tmp"
  if [[ $(id -u) -eq 0 ]]; then chown postgres: "$DIR/optin.conf.tmp"; fi
  as_owner mv "$DIR/optin.conf.tmp" "$DATA/optin.conf"
  as_owner "$PG_BIN/pg_ctl" -D "$DATA" -l "$LOG" -w -t 30 start >/dev/null ||
    die "pg_ctl start failed (port $PORT busy?); see $LOG"
  print_url
}

standby() {
  [[ -n $PRIMARY_PORT ]] || die "standby needs --primary-port"
  if running; then print_url; return 0; fi
  if [[ ! -f "$DATA/PG_VERSION" ]]; then
    mkdir -p "$DIR"
    if [[ $(id -u) -eq 0 ]]; then chown postgres: "$DIR"; fi
    # -R: standby.signal and primary_conninfo; -X stream: the WAL needed to start comes along.
    as_owner "$PG_BIN/pg_basebackup" -h 127.0.0.1 -p "$PRIMARY_PORT" -U postgres -D "$DATA" -R -X stream --no-sync \
      >"$DIR/basebackup.log" 2>&1 || die "pg_basebackup from port $PRIMARY_PORT failed; see $DIR/basebackup.log"
    # The name the primary's synchronous_standby_names refers to (auto.conf: its last line wins).
    echo "primary_conninfo = 'host=127.0.0.1 port=$PRIMARY_PORT user=postgres application_name=$NAME'" |
      as_owner tee -a "$DATA/postgresql.auto.conf" >/dev/null
  fi
  start
}

promote() {
  running || die "not running"
  as_owner "$PG_BIN/pg_ctl" -D "$DATA" -w -t 60 promote >/dev/null || die "pg_ctl promote failed; see $LOG"
  print_url
}

crash() {
  local pid
  pid="$(head -1 "$DATA/postmaster.pid" 2>/dev/null || true)"
  [[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null || die "no postmaster running in $DATA"
  kill -KILL "$pid"
  # Its backends notice the postmaster's death and exit on their own; wait for the port to close.
  local i
  for ((i = 0; i < 50; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
}

stop() {
  if running; then
    as_owner "$PG_BIN/pg_ctl" -D "$DATA" -m fast -w -t 30 stop >/dev/null || die "pg_ctl stop failed; see $LOG"
  fi
  if [[ $REMOVE -eq 1 && -d "$DIR" ]]; then rm -rf "$DIR"; fi
}

case "$CMD" in
  start) start ;;
  stop) stop ;;
  standby) standby ;;
  promote) promote ;;
  crash) crash ;;
  status) running ;;
  url) running || die "not running"; print_url ;;
  *) echo "usage: $0 start|stop|status|url|standby|promote|crash [--dir DIR] [--port PORT] [--fast] [--remove] [--sync-standby NAME] [--primary-port PORT] [--name NAME]" >&2; exit 2 ;;
esac
