#!/usr/bin/env bash
# A throwaway single-node Ceph RADOS Gateway (S3) on loopback, for tests and the demo.
#
# Why Ceph: no MinIO server binary can be installed here (neither npm nor Debian ship one),
# while Debian ships Ceph. One monitor, one OSD on `memstore` (RAM only: nothing persists,
# nothing touches the disk but logs and a few small state files) and one radosgw.
#
#   scripts/s3/rgw.sh start    start (idempotent: prints the env if already running and healthy)
#   scripts/s3/rgw.sh stop     SIGTERM, wait, then SIGKILL -- of the recorded pids only
#   scripts/s3/rgw.sh status   exit 0 when running and answering HTTP, 1 otherwise
#   scripts/s3/rgw.sh env      shell exports: OPTIN_S3_ENDPOINT, OPTIN_S3_ACCESS_KEY, OPTIN_S3_SECRET_KEY
#
# Shared use by test runs (scripts/s3/devServer.ts; engineers share the machine):
#   scripts/s3/rgw.sh start --lease PID   start or reuse, and record that process PID uses it
#   scripts/s3/rgw.sh release PID         PID is done; stop the gateway only if PID started it
#                                         (or inherited it from a finished starter) and no other
#                                         live process holds a lease. A gateway started by hand
#                                         (no --lease) is never stopped by a release.
#
# Environment:
#   OPTIN_STATE_DIR               state root (default $HOME/.cache/optin); ours is <root>/rgw
#   OPTIN_RGW_LC_DEBUG_INTERVAL   seconds that a lifecycle "day" lasts (default 10), so expiry
#                                 tests see lifecycle rules act within seconds
#
# Ports are fixed (mon 3300, OSD 6800-7300, S3 7480): one instance per machine. Several
# callers may race to start it (parallel test runs), so start/stop/release hold a lock file.
# A start takes ~4 s on an idle 2-core machine (mostly monitor and OSD boot; `paxos propose
# interval` below saves ~12 s) and the three daemons hold ~150-250 MB; a stop takes up to ~5 s.
set -euo pipefail

STATE_ROOT="${OPTIN_STATE_DIR:-${HOME:-/tmp}/.cache/optin}"
STATE="$STATE_ROOT/rgw"
CONF="$STATE/ceph.conf"
RUN="$STATE/run"
LOGS="$STATE/log"
LC_INTERVAL="${OPTIN_RGW_LC_DEBUG_INTERVAL:-10}"

HOST=127.0.0.1
S3_PORT=7480
MON_PORT=3300
ENDPOINT="http://$HOST:$S3_PORT"
# Fixed test credentials: this gateway only ever listens on loopback and holds throwaway data.
ACCESS_KEY="optin-test-access"
SECRET_KEY="optin-test-secret-0123456789abcdef"
DAEMONS=(mon osd rgw)
RGW_POOLS=(.rgw.root default.rgw.log default.rgw.control default.rgw.meta
  default.rgw.buckets.index default.rgw.buckets.data default.rgw.buckets.non-ec)

log() { printf '[rgw] %s\n' "$*" >&2; }
die() { printf '[rgw] error: %s\n' "$*" >&2; exit 1; }

ensure_packages() {
  local missing=() p
  for p in ceph-mon ceph-osd radosgw ceph-common; do
    # dpkg -s succeeds only for an installed package; checking first keeps `start` offline and fast.
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
  done
  ((${#missing[@]} == 0)) && return 0
  [[ $(id -u) -eq 0 ]] || die "missing packages ${missing[*]}: run as root or 'sudo apt-get install -y ${missing[*]}'"
  log "installing ${missing[*]} (apt-get)"
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" >"$STATE_ROOT/apt.log" 2>&1 ||
    { apt-get update >>"$STATE_ROOT/apt.log" 2>&1 &&
      DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" >>"$STATE_ROOT/apt.log" 2>&1; } ||
    die "apt-get install ${missing[*]} failed; see $STATE_ROOT/apt.log"
}

pid_of() { [[ -s "$RUN/$1.pid" ]] && cat "$RUN/$1.pid" || true; }

# Alive and not a zombie: our daemons are re-parented to PID 1 when this script exits, and it
# may reap them late, so `kill -0` alone would see a dead daemon as running.
alive() {
  local pid="$1" stat
  stat="$(cat "/proc/$pid/stat" 2>/dev/null)" || return 1
  stat="${stat##*) }"
  [[ -n "$stat" && "${stat:0:1}" != Z ]]
}

# A pid counts as ours only if it is alive AND its command line names our config file: a
# recycled pid (after a reboot or crash) must never be signalled.
is_ours() {
  local pid="$1"
  [[ -n "$pid" ]] && alive "$pid" || return 1
  { tr '\0' ' ' <"/proc/$pid/cmdline"; } 2>/dev/null | grep -qF -- "$CONF"
}

http_ok() { curl -fsS -m 2 -o /dev/null "$ENDPOINT/" 2>/dev/null; }

healthy() {
  local d
  for d in "${DAEMONS[@]}"; do is_ours "$(pid_of "$d")" || return 1; done
  http_ok
}

print_env() {
  printf 'export OPTIN_S3_ENDPOINT=%s\n' "$ENDPOINT"
  printf 'export OPTIN_S3_ACCESS_KEY=%s\n' "$ACCESS_KEY"
  printf 'export OPTIN_S3_SECRET_KEY=%s\n' "$SECRET_KEY"
}

# Pids listening on a TCP port (needs root to see other users' sockets; we are root here).
listeners() { ss -ltnpH "sport = :$1" 2>/dev/null | grep -o 'pid=[0-9]*' | cut -d= -f2 | sort -u || true; }

# SIGTERM, up to 3 s for a clean exit, then SIGKILL. The data is in RAM and thrown away anyway;
# radosgw alone would take ~10 s to finish its lifecycle thread's sleep after SIGTERM.
stop_pids() {
  local pids=("$@") pid i any
  ((${#pids[@]} == 0)) && return 0
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for ((i = 0; i < 30; i++)); do
    any=0
    for pid in "${pids[@]}"; do alive "$pid" && any=1; done
    ((any == 0)) && return 0
    sleep 0.1
  done
  for pid in "${pids[@]}"; do
    if alive "$pid"; then kill -KILL "$pid" 2>/dev/null || true; fi
  done
  for ((i = 0; i < 20; i++)); do
    any=0
    for pid in "${pids[@]}"; do alive "$pid" && any=1; done
    ((any == 0)) && return 0
    sleep 0.1
  done
}

do_stop() {
  local clients=() mons=() d pid port
  for d in rgw osd mon; do
    pid="$(pid_of "$d")"
    if is_ours "$pid"; then
      if [[ $d == mon ]]; then mons+=("$pid"); else clients+=("$pid"); fi
    fi
  done
  # Daemons of an earlier instance whose pid files were lost (a crashed run): found by their
  # command line naming our own config file -- never by process name, which would also hit
  # other people's daemons.
  local cmdline
  local dir
  for dir in /proc/[0-9]*; do
    pid="${dir#/proc/}"
    cmdline="$({ tr '\0' ' ' <"$dir/cmdline"; } 2>/dev/null)" || continue
    [[ $cmdline == *"-c $CONF"* ]] || continue
    case "$cmdline" in
      ceph-mon* | */ceph-mon*) is_ours "$pid" && mons+=("$pid") ;;
      ceph-osd* | */ceph-osd* | radosgw* | */radosgw*) is_ours "$pid" && clients+=("$pid") ;;
    esac
  done
  # Gateway and OSD first, monitor last: a stopping OSD tells the monitor it goes down and waits
  # for the answer, so with the monitor gone first it would hang for its shutdown timeout.
  local -a c m
  mapfile -t c < <(((${#clients[@]} > 0)) && printf '%s\n' "${clients[@]}" | sort -u)
  mapfile -t m < <(((${#mons[@]} > 0)) && printf '%s\n' "${mons[@]}" | sort -u)
  if ((${#c[@]} + ${#m[@]} > 0)); then log "stopping pids ${c[*]} ${m[*]}"; fi
  stop_pids "${c[@]}"
  stop_pids "${m[@]}"
  for d in rgw osd mon; do rm -f "$RUN/$d.pid"; done
  # Written by devServer.ts for the test run that started the instance: void once it is gone.
  rm -f "$STATE/owner"
}

write_conf() {
  local fsid="$1"
  cat >"$CONF" <<EOF
# Generated by scripts/s3/rgw.sh: throwaway single-node cluster on loopback.
[global]
fsid = $fsid
mon host = [v2:$HOST:$MON_PORT]
public addr = $HOST
ms bind ipv6 = false
ms bind msgr1 = false
# No cephx: loopback only, throwaway data. Without the crc mode radosgw loops on auth.
auth cluster required = none
auth service required = none
auth client required = none
ms mon client mode = crc
run dir = $RUN
admin socket = $RUN/\$name.asok
log file = $LOGS/\$name.log
log to stderr = false
err to stderr = true
keyring = $STATE/keyring
# One OSD in RAM: replicas of one, PGs placed on OSDs (not hosts), few PGs per pool.
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
osd crush chooseleaf type = 0
mon allow pool size one = true
mon allow pool delete = true
mon warn on pool no redundancy = false
mon_max_pg_per_osd = 1000
# Commit map changes (pool creation, OSD boot) at once instead of batching them for 1 s each.
paxos propose interval = 0.01

[mon.a]
mon data = $STATE/mon

[osd.0]
osd data = $STATE/osd0
osd objectstore = memstore
memstore device bytes = 4294967296
osd memory target = 268435456
# Bounds how long a stopping OSD waits for the monitor's acknowledgement.
osd mon shutdown timeout = 1
osd max object name len = 460
osd max object namespace len = 64

[client.rgw.a]
host = localhost
rgw data = $STATE/rgw
# tcp_nodelay: without it small GETs wait ~45 ms on delayed ACKs.
rgw frontends = beast endpoint=$HOST:$S3_PORT tcp_nodelay=1
rgw dns name = localhost
# Lifecycle: a "day" lasts N seconds and LC may run at any hour, so expiry tests finish quickly.
rgw lc debug interval = $LC_INTERVAL
rgw lifecycle work time = 00:00-23:59
rgw enable usage log = false
rgw thread pool size = 64
EOF
}

# `ceph` CLI against our cluster, bounded so a dead monitor fails fast instead of hanging.
cephq() { timeout 20 ceph -c "$CONF" --connect-timeout 10 "$@"; }

spawn() {
  # setsid: the daemon leaves our process group (a Ctrl-C in the caller's terminal or the test
  # runner's exit must not kill it halfway); -f keeps it in the foreground so $! is its pid.
  # 9>&-: the daemon must not inherit the lock fd, or it would hold the lock for its lifetime.
  local name="$1"; shift
  setsid "$@" -f -c "$CONF" </dev/null >>"$LOGS/$name.out" 2>&1 9>&- &
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

do_start() {
  if healthy; then
    log "already running at $ENDPOINT"
    # Machine-readable for scripts/s3/devServer.ts (a comment, so `eval` ignores it): the
    # caller did not start this instance and must not stop it.
    echo "# rgw: already-running"
    print_env
    return 0
  fi
  ensure_packages
  # Anything left from a crashed run (half-started daemons, stale pid files) goes first.
  do_stop
  for port in "$S3_PORT" "$MON_PORT"; do
    [[ -z "$(listeners "$port")" ]] || die "port $port is in use by another process (pids $(listeners "$port" | tr '\n' ' ')); stop it or run this on another machine"
  done

  local t0=$SECONDS fsid osd_uuid
  # The previous run's logs are kept one generation, for the post-mortem of a crashed run.
  rm -rf "$STATE/mon" "$STATE/osd0" "$STATE/rgw" "$RUN" "$LOGS.prev" "$STATE/monmap" "$STATE/keyring"
  if [[ -d $LOGS ]]; then mv "$LOGS" "$LOGS.prev"; fi
  mkdir -p "$STATE/mon" "$STATE/osd0" "$STATE/rgw" "$RUN" "$LOGS"
  fsid="$(uuidgen)"
  osd_uuid="$(uuidgen)"
  write_conf "$fsid"

  # ceph-mon --mkfs insists on a keyring even with auth disabled.
  ceph-authtool --create-keyring "$STATE/keyring" --gen-key -n mon. --cap mon 'allow *' >/dev/null
  monmaptool --create --fsid "$fsid" --addv a "[v2:$HOST:$MON_PORT]" "$STATE/monmap" >/dev/null
  ceph-mon -c "$CONF" -i a --mkfs --monmap "$STATE/monmap" --keyring "$STATE/keyring" >>"$LOGS/mkfs.out" 2>&1 ||
    die "ceph-mon --mkfs failed; see $LOGS/mkfs.out"
  spawn mon ceph-mon -i a
  wait_for "the monitor" 80 cephq mon stat

  cephq osd new "$osd_uuid" 0 >/dev/null
  ceph-osd -c "$CONF" -i 0 --mkfs --osd-uuid "$osd_uuid" >>"$LOGS/mkfs.out" 2>&1 ||
    die "ceph-osd --mkfs failed; see $LOGS/mkfs.out"
  spawn osd ceph-osd -i 0

  # Pools radosgw would otherwise create one by one on first use (~2 s); created while the
  # OSD boots. Pool creation is a monitor operation, so it does not wait for the OSD.
  # One CLI process reads all commands from stdin (each `ceph` start costs ~0.3 s of Python).
  local pool
  for pool in "${RGW_POOLS[@]}"; do
    printf 'osd pool create %s 8 8\nosd pool application enable %s rgw\n' "$pool" "$pool"
  done | cephq >>"$LOGS/pools.out" 2>&1 || die "creating the rgw pools failed; see $LOGS/pools.out"
  wait_for "the OSD" 120 bash -c "timeout 20 ceph -c '$CONF' osd dump 2>/dev/null | grep -q '^osd.0 up'"

  # The keys live in RADOS (memstore), so the user is created anew on every start.
  timeout 60 radosgw-admin -c "$CONF" user create --uid optin --display-name "optin tests" \
    --access-key "$ACCESS_KEY" --secret-key "$SECRET_KEY" >>"$LOGS/radosgw-admin.out" 2>&1 ||
    die "radosgw-admin user create failed; see $LOGS/radosgw-admin.out"

  spawn rgw radosgw -n client.rgw.a
  # Readiness: an anonymous GET / answers with a ListAllMyBuckets XML once beast is serving.
  wait_for "radosgw on $ENDPOINT" 240 http_ok
  log "ready at $ENDPOINT in $((SECONDS - t0)) s (state in $STATE)"
  echo "# rgw: started"
  print_env
}

do_status() {
  if healthy; then
    log "running at $ENDPOINT (pids mon=$(pid_of mon) osd=$(pid_of osd) rgw=$(pid_of rgw))"
    return 0
  fi
  log "not running"
  return 1
}

# Leases live in $STATE/leases/<pid>; the starter's pid in $STATE/owner. Both are read and
# written under the lock only, so a release can never stop a gateway that a concurrent start
# has just handed out.
live_leases() {
  local f pid live=()
  for f in "$STATE/leases"/*; do
    [[ -e $f ]] || continue
    pid="${f##*/}"
    if [[ $pid =~ ^[0-9]+$ ]] && alive "$pid"; then live+=("$pid"); else rm -f "$f"; fi
  done
  echo "${live[*]}"
}

do_release() {
  local pid="$1" owner others
  rm -f "$STATE/leases/$pid"
  others="$(live_leases)"
  if [[ -n $others ]]; then
    log "still in use by pids $others: left running"
    return 0
  fi
  owner="$(cat "$STATE/owner" 2>/dev/null || true)"
  if [[ -n $owner && ($owner == "$pid" || ! -d /proc/$owner) ]]; then
    do_stop
    log "stopped (last user gone)"
  else
    log "not started by a test run (or its starter is alive): left running"
  fi
}

main() {
  local cmd="${1:-}" lease=""
  case "$cmd" in
    start | stop | release)
      if [[ $cmd == start && ${2:-} == --lease ]]; then
        lease="${3:-}"
        [[ $lease =~ ^[0-9]+$ ]] || die "start --lease needs a pid"
      fi
      if [[ $cmd == release ]]; then
        lease="${2:-}"
        [[ $lease =~ ^[0-9]+$ ]] || die "release needs a pid"
      fi
      mkdir -p "$STATE" "$RUN" "$STATE/leases"
      # Serialise start/stop/release (two test runs at once would race on the same ports).
      exec 9>"$STATE/.lock"
      flock -w 300 9 || die "another rgw.sh holds $STATE/.lock"
      case "$cmd" in
        start)
          [[ -z $lease ]] || date -u +%FT%TZ >"$STATE/leases/$lease"
          local out
          out="$(do_start)" || { [[ -z $lease ]] || rm -f "$STATE/leases/$lease"; exit 1; }
          # Only the run that really started the gateway may be its owner.
          if [[ -n $lease && $out == *"# rgw: started"* ]]; then echo "$lease" >"$STATE/owner"; fi
          printf '%s\n' "$out"
          ;;
        stop) do_stop; log "stopped" ;;
        release) do_release "$lease" ;;
      esac
      ;;
    status) do_status ;;
    env) print_env ;;
    *)
      echo "usage: $0 start [--lease PID]|stop|release PID|status|env" >&2
      exit 2
      ;;
  esac
}

main "$@"
