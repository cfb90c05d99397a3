#!/usr/bin/env bash
# A small replicated Ceph cluster on loopback for the cluster test (test/integration/cluster/):
# one monitor, three OSDs on memstore (RAM), the RGW pools replicated three times (I/O continues
# with two), and two RADOS Gateways. Each daemon is started by docker/ceph/ceph-node.sh, the
# script the reference deployment's containers run (docker/compose.yaml), with cephx on.
#
#   scripts/ceph/cluster.sh start          start afresh (a running one is stopped first); prints the env
#   scripts/ceph/cluster.sh stop           SIGTERM, then SIGKILL, of our recorded daemons only
#   scripts/ceph/cluster.sh kill osd ID    SIGKILL one daemon (osd 0..2, rgw a|b, mon a): a crash
#   scripts/ceph/cluster.sh start-osd ID   start a killed OSD again (memstore: it rejoins empty and backfills)
#   scripts/ceph/cluster.sh wait-osds N    until exactly N OSDs are up (a killed one is marked down)
#   scripts/ceph/cluster.sh wait-io        until a write to every placement group of a probe pool returns
#   scripts/ceph/cluster.sh status         `ceph -s`
#   scripts/ceph/cluster.sh env            OPTIN_CEPH_RGW_ENDPOINTS (space separated), S3 keys (store and audit users)
#
# Its own ports, so it runs beside scripts/s3/rgw.sh's single-node gateway (3300, 6800-7300, 7480):
# monitor 3310, daemons 7310-7400, gateways 7491 and 7492. One per machine (a lock serialises
# start/stop). State in $OPTIN_STATE_DIR/ceph-cluster (default ~/.cache/optin/ceph-cluster).
# Measured on an idle 2-core machine: start ~15 s; three OSDs and two gateways hold ~1 GB.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
NODE_SCRIPT="$(cd "$HERE/../../docker/ceph" && pwd)/ceph-node.sh"
STATE_ROOT="${OPTIN_STATE_DIR:-${HOME:-/tmp}/.cache/optin}"
STATE="$STATE_ROOT/ceph-cluster"
ETC="$STATE/etc"
DATA="$STATE/data"
CONF="$ETC/ceph.conf"
RUN="$STATE/pids"
LOGS="$STATE/log"
HOST=127.0.0.1
MON_PORT=3310
# OPTIN_CLUSTER_MONS=3 (monitors a, b, c on 3310-3312) and OPTIN_CLUSTER_OBJECTSTORE=bluestore (a
# sparse 4 GiB file per OSD) run the deployment's shapes of docker/compose.yaml on loopback; the
# cluster test uses the defaults (1 monitor, memstore), which start fastest.
MON_IDS=(a b c)
MON_COUNT="${OPTIN_CLUSTER_MONS:-1}"
OBJECTSTORE="${OPTIN_CLUSTER_OBJECTSTORE:-memstore}"
declare -A RGW_PORTS=([a]=7491 [b]=7492)
OSDS=(0 1 2)
# Fixed test keys: these gateways listen on loopback only and hold throwaway data.
ACCESS_KEY="optin-cluster-access"
SECRET_KEY="optin-cluster-secret-0123456789abcdef"
# The audit principal: a second RGW user, which owns the object-locked audit bucket.
AUDIT_ACCESS_KEY="optin-cluster-audit"
AUDIT_SECRET_KEY="optin-cluster-audit-secret-0123456789"

log() { printf '[ceph-cluster] %s\n' "$*" >&2; }
die() { printf '[ceph-cluster] error: %s\n' "$*" >&2; exit 1; }

mons=""
for ((i = 0; i < MON_COUNT; i++)); do mons+="${mons:+ }${MON_IDS[$i]}=$HOST:$((MON_PORT + i))"; done
osd_bytes=1073741824
[[ $OBJECTSTORE == memstore ]] || osd_bytes=4294967296
export CEPH_CONF_DIR="$ETC" CEPH_DATA_DIR="$DATA" CEPH_MONS="$mons" CEPH_PUBLIC_NETWORK="127.0.0.0/8" \
  CEPH_OBJECTSTORE="$OBJECTSTORE" CEPH_OSD_BYTES="$osd_bytes" CEPH_MS_PORTS=7310-7400 CEPH_FAST_FAILURE=1 \
  CEPH_EXPECTED_OSDS=${#OSDS[@]} CEPH_POOL_SIZE=3 CEPH_POOL_MIN_SIZE=2 \
  S3_ACCESS_KEY_FILE="$STATE/s3_access_key" S3_SECRET_KEY_FILE="$STATE/s3_secret_key" \
  S3_AUDIT_ACCESS_KEY_FILE="$STATE/s3_audit_access_key" S3_AUDIT_SECRET_KEY_FILE="$STATE/s3_audit_secret_key"

cephq() { timeout 30 ceph -c "$CONF" --connect-timeout 10 "$@"; }

alive() {
  local stat
  stat="$(cat "/proc/$1/stat" 2>/dev/null)" || return 1
  stat="${stat##*) }"
  [[ -n $stat && ${stat:0:1} != Z ]]
}

# Ours: alive and started by us (its command line names our node script or our config file), so
# a recycled pid is never signalled.
is_ours() {
  local pid="$1" cmd
  [[ -n $pid ]] && alive "$pid" || return 1
  cmd="$({ tr '\0' ' ' <"/proc/$pid/cmdline"; } 2>/dev/null)" || return 1
  [[ $cmd == *"$CONF"* || $cmd == *"$NODE_SCRIPT"* ]]
}

pid_of() { [[ -s $RUN/$1.pid ]] && cat "$RUN/$1.pid" || true; }

spawn() {
  local name="$1"; shift
  # setsid: out of the caller's process group (a test runner's exit must not kill it halfway).
  # 9>&-: the daemon must not inherit the lock. The node script execs into the daemon: same pid.
  setsid bash "$NODE_SCRIPT" "$@" </dev/null >>"$LOGS/$name.log" 2>&1 9>&- &
  echo $! >"$RUN/$name.pid"
}

wait_for() {
  local what="$1" tries="$2"; shift 2
  local i
  for ((i = 0; i < tries; i++)); do
    "$@" >/dev/null 2>&1 && return 0
    sleep 0.25
  done
  die "timed out waiting for $what; logs in $LOGS"
}

http_ok() { curl -fsS -m 2 -o /dev/null "http://$HOST:$1/"; }

osds_up() { cephq osd stat 2>/dev/null | grep -Eq "(^| )$1 up"; }

# Every placement group serves I/O: a write to each of a probe pool's PGs (16 objects over 8 PGs)
# returns. (`ceph pg stat` would say it directly but needs a manager daemon, which Debian ships
# in a package this machine does not have; the probe pool peers as the RGW pools do.)
io_ok() {
  local i
  for ((i = 0; i < 16; i++)); do
    printf 'probe %s\n' "$i" | timeout 5 rados -c "$CONF" -p optin-probe put "probe-$i" - 2>/dev/null || return 1
  done
}

signal_all() {
  local sig="$1"; shift
  local pid
  for pid in "$@"; do kill "-$sig" "$pid" 2>/dev/null || true; done
}

stop_pids() {
  local pids=("$@") pid i any
  ((${#pids[@]} == 0)) && return 0
  signal_all TERM "${pids[@]}"
  # Memstore: nothing to flush. One second for a clean exit, then SIGKILL.
  for ((i = 0; i < 10; i++)); do
    any=0
    for pid in "${pids[@]}"; do alive "$pid" && any=1; done
    ((any == 0)) && return 0
    sleep 0.1
  done
  signal_all KILL "${pids[@]}"
  for ((i = 0; i < 20; i++)); do
    any=0
    for pid in "${pids[@]}"; do alive "$pid" && any=1; done
    ((any == 0)) && return 0
    sleep 0.1
  done
}

do_stop() {
  local clients=() mons=() f name pid dir cmd
  for f in "$RUN"/*.pid; do
    [[ -e $f ]] || continue
    name="${f##*/}"; name="${name%.pid}"
    pid="$(cat "$f")"
    if is_ours "$pid"; then
      if [[ $name == mon.* ]]; then mons+=("$pid"); else clients+=("$pid"); fi
    fi
    rm -f "$f"
  done
  # Daemons whose pid files were lost (a crashed run), found by our config in their command line.
  for dir in /proc/[0-9]*; do
    pid="${dir#/proc/}"
    cmd="$({ tr '\0' ' ' <"$dir/cmdline"; } 2>/dev/null)" || continue
    [[ $cmd == *"-c $CONF "* ]] || continue
    case "$cmd" in
      *ceph-mon*) mons+=("$pid") ;;
      *ceph-osd* | *radosgw*) clients+=("$pid") ;;
    esac
  done
  # Gateways and OSDs first: a stopping OSD waits for the monitor's acknowledgement.
  local -a c m
  mapfile -t c < <(((${#clients[@]} > 0)) && printf '%s\n' "${clients[@]}" | sort -u)
  mapfile -t m < <(((${#mons[@]} > 0)) && printf '%s\n' "${mons[@]}" | sort -u)
  stop_pids "${c[@]}"
  stop_pids "${m[@]}"
}

start_osd() {
  local id="$1"
  spawn "osd.$id" osd "$id"
}

do_start() {
  local t0=$SECONDS port
  # A start that fails halfway stops what it started: no daemon outlives a failed start.
  # SIGPIPE ignored first: the caller may be gone (its stderr closed), and a log line must not
  # kill the clean-up halfway.
  trap 'rc=$?; if ((rc != 0)); then trap "" PIPE; do_stop; log "start failed: stopped the daemons it started"; fi' EXIT
  trap 'exit 143' TERM # a caller's timeout: the EXIT trap above still stops the daemons
  trap 'exit 130' INT
  for p in ceph-mon ceph-osd radosgw ceph-common; do
    dpkg -s "$p" >/dev/null 2>&1 || die "Debian package $p is not installed (scripts/setup.sh installs it)"
  done
  do_stop
  for port in $(seq "$MON_PORT" $((MON_PORT + MON_COUNT - 1))) "${RGW_PORTS[@]}"; do
    [[ -z "$(ss -ltnH "sport = :$port" 2>/dev/null)" ]] || die "port $port is in use by another process"
  done
  rm -rf "$ETC" "$DATA" "$LOGS"
  mkdir -p "$ETC" "$DATA" "$LOGS" "$RUN"
  printf '%s\n' "$ACCESS_KEY" >"$S3_ACCESS_KEY_FILE"
  printf '%s\n' "$SECRET_KEY" >"$S3_SECRET_KEY_FILE"
  printf '%s\n' "$AUDIT_ACCESS_KEY" >"$S3_AUDIT_ACCESS_KEY_FILE"
  printf '%s\n' "$AUDIT_SECRET_KEY" >"$S3_AUDIT_SECRET_KEY_FILE"
  chmod 600 "$S3_ACCESS_KEY_FILE" "$S3_SECRET_KEY_FILE" "$S3_AUDIT_ACCESS_KEY_FILE" "$S3_AUDIT_SECRET_KEY_FILE"

  bash "$NODE_SCRIPT" bootstrap >>"$LOGS/bootstrap.log" 2>&1 || die "bootstrap failed; see $LOGS/bootstrap.log"
  for ((i = 0; i < MON_COUNT; i++)); do spawn "mon.${MON_IDS[$i]}" mon "${MON_IDS[$i]}"; done
  wait_for "the monitors' quorum" 120 cephq mon stat
  log "monitor up at +$((SECONDS - t0)) s"
  local id
  for id in "${OSDS[@]}"; do start_osd "$id"; done
  cephq osd pool create optin-probe 8 8 replicated >/dev/null 2>&1
  # setup makes the pools (size 3, min_size 2) while the OSDs boot, waits for them, then makes
  # the S3 user.
  bash "$NODE_SCRIPT" setup >>"$LOGS/setup.log" 2>&1 || die "setup failed; see $LOGS/setup.log"
  log "OSDs up, pools and S3 user made at +$((SECONDS - t0)) s"
  local name
  for name in "${!RGW_PORTS[@]}"; do
    CEPH_RGW_ENDPOINT="$HOST:${RGW_PORTS[$name]}" spawn "rgw.$name" rgw "$name"
  done
  for name in "${!RGW_PORTS[@]}"; do wait_for "gateway $name" 240 http_ok "${RGW_PORTS[$name]}"; done
  log "gateways answer at +$((SECONDS - t0)) s"
  wait_for "I/O on every placement group" 240 io_ok
  log "ready in $((SECONDS - t0)) s: $MON_COUNT mon, ${#OSDS[@]} OSDs ($OBJECTSTORE), pools x3 (min 2), gateways on ports ${RGW_PORTS[*]}"
  trap - EXIT TERM INT
  print_env
}

print_env() {
  local name endpoints=()
  for name in $(printf '%s\n' "${!RGW_PORTS[@]}" | sort); do endpoints+=("http://$HOST:${RGW_PORTS[$name]}"); done
  printf 'export OPTIN_CEPH_RGW_ENDPOINTS="%s"\n' "${endpoints[*]}"
  printf 'export OPTIN_S3_ACCESS_KEY=%s\n' "$ACCESS_KEY"
  printf 'export OPTIN_S3_SECRET_KEY=%s\n' "$SECRET_KEY"
  printf 'export OPTIN_S3_AUDIT_ACCESS_KEY=%s\n' "$AUDIT_ACCESS_KEY"
  printf 'export OPTIN_S3_AUDIT_SECRET_KEY=%s\n' "$AUDIT_SECRET_KEY"
}

do_kill() {
  local kind="$1" id="$2" pid
  pid="$(pid_of "$kind.$id")"
  is_ours "$pid" || die "$kind.$id is not running"
  kill -KILL "$pid"
  local i
  for ((i = 0; i < 50; i++)); do alive "$pid" || break; sleep 0.1; done
  rm -f "$RUN/$kind.$id.pid"
  log "killed $kind.$id (pid $pid)"
}

main() {
  local cmd="${1:-}"
  mkdir -p "$STATE" "$RUN"
  case "$cmd" in
    start | stop | kill | start-osd)
      exec 9>"$STATE/.lock"
      flock -w 300 9 || die "another cluster.sh holds $STATE/.lock"
      case "$cmd" in
        start) do_start ;;
        stop) do_stop; log "stopped" ;;
        kill) [[ $# -eq 3 ]] || die "usage: $0 kill osd|rgw|mon ID"; do_kill "$2" "$3" ;;
        start-osd) [[ $# -eq 2 ]] || die "usage: $0 start-osd ID"; start_osd "$2" ;;
      esac
      ;;
    wait-osds) wait_for "$2 OSDs up" 240 osds_up "$2" ;;
    wait-io) wait_for "I/O on every placement group" 480 io_ok ;;
    status) cephq -s ;;
    env) print_env ;;
    *)
      echo "usage: $0 start|stop|kill KIND ID|start-osd ID|wait-osds N|wait-io|status|env" >&2
      exit 2
      ;;
  esac
}

main "$@"
