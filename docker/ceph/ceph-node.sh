#!/usr/bin/env bash
# One Ceph daemon of optin's reference object store, by role. The same script runs in the
# containers of docker/compose.yaml (image quay.io/ceph/ceph) and on loopback in the cluster test
# (scripts/ceph/cluster.sh, Debian's ceph packages), so the test exercises what the deployment runs.
#
#   ceph-node.sh bootstrap   once: fsid, cephx keys (mon., client.admin), monmap, ceph.conf
#   ceph-node.sh mon ID      a monitor (first start: mkfs from the shared monmap and keyring)
#   ceph-node.sh mgr ID      a manager (health, metrics; RGW works without one)
#   ceph-node.sh osd ID      an OSD (first start: registered with its own cephx key, mkfs)
#   ceph-node.sh setup       once, after the OSDs: RGW pools replicated CEPH_POOL_SIZE times,
#                            and the S3 user optin writes with (keys from files)
#   ceph-node.sh rgw NAME    a RADOS Gateway (S3) on CEPH_RGW_ENDPOINT
#
# Daemons stay in the foreground (`exec ... -f`): the container runtime, or the caller, owns them.
# Every first-start step is skipped when its result exists, so a restarted container resumes.
#
# Environment (defaults are the containers'):
#   CEPH_CONF_DIR      ceph.conf and the admin/mon/rgw keyrings (a volume shared by every node)  /etc/ceph
#   CEPH_DATA_DIR      this node's daemon data                                                   /var/lib/ceph
#   CEPH_MONS          monitors, `ID=ADDR:PORT` separated by spaces (bootstrap)                  a=172.30.0.11:3300 ...
#   CEPH_PUBLIC_NETWORK  CIDR the daemons bind in (bootstrap)                                    172.30.0.0/24
#   CEPH_OBJECTSTORE   bluestore (a sparse file in CEPH_DATA_DIR/osd/) | memstore (RAM, tests)
#   CEPH_OSD_BYTES     size of each OSD's store                                                  20 GiB
#   CEPH_POOL_SIZE / CEPH_POOL_MIN_SIZE   replicas / replicas needed for I/O (bootstrap)      3 / 2
#   CEPH_EXPECTED_OSDS  OSDs setup waits for                                                     3
#   CEPH_MS_PORTS      port range daemons bind (bootstrap), MIN-MAX                              6800-7300
#   CEPH_FAST_FAILURE  1: seconds-scale failure detection (the loopback test), 0: Ceph's defaults
#   CEPH_RGW_ENDPOINT  ADDR:PORT the gateway serves S3 on (rgw)                                  0.0.0.0:7480
#   S3_ACCESS_KEY_FILE / S3_SECRET_KEY_FILE  the optin user's keys (setup)   /run/secrets/s3_access_key, ..._secret_key
#   S3_AUDIT_ACCESS_KEY_FILE / S3_AUDIT_SECRET_KEY_FILE  the optin-audit user's keys (setup; optional)
set -euo pipefail

CONF_DIR="${CEPH_CONF_DIR:-/etc/ceph}"
DATA_DIR="${CEPH_DATA_DIR:-/var/lib/ceph}"
CONF="$CONF_DIR/ceph.conf"
ADMIN_KEYRING="$CONF_DIR/ceph.client.admin.keyring"

log() { printf '[ceph-node %s] %s\n' "${ROLE:-?}" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# The ceph CLI against our cluster, bounded: a monitor that is not up yet fails fast.
cephq() { timeout 30 ceph -c "$CONF" --connect-timeout 10 "$@"; }

wait_until() {
  local what="$1" tries="$2"; shift 2
  local i
  for ((i = 0; i < tries; i++)); do
    "$@" >/dev/null 2>&1 && return 0
    sleep 0.5
  done
  die "timed out waiting for $what"
}

bootstrap() {
  if [[ -s $CONF && -s $CONF_DIR/monmap ]]; then
    log "already bootstrapped ($CONF)"
    return 0
  fi
  local mons="${CEPH_MONS:-a=172.30.0.11:3300 b=172.30.0.12:3300 c=172.30.0.13:3300}"
  local network="${CEPH_PUBLIC_NETWORK:-172.30.0.0/24}"
  local objectstore="${CEPH_OBJECTSTORE:-bluestore}"
  local size="${CEPH_POOL_SIZE:-3}" min_size="${CEPH_POOL_MIN_SIZE:-2}"
  local ports="${CEPH_MS_PORTS:-6800-7300}"
  local fsid mon_host="" monmap_args=() entry id addr
  fsid="$(uuidgen)"
  for entry in $mons; do
    id="${entry%%=*}"
    addr="${entry#*=}"
    mon_host+="${mon_host:+,}[v2:$addr]"
    monmap_args+=(--addv "$id" "[v2:$addr]")
  done
  mkdir -p "$CONF_DIR"
  local tmp="$CONF_DIR/.bootstrap"
  rm -rf "$tmp" && mkdir -p "$tmp"

  {
    cat <<EOF
# Written by docker/ceph/ceph-node.sh bootstrap.
[global]
fsid = $fsid
mon host = $mon_host
public network = $network
ms bind ipv6 = false
ms bind msgr1 = false
ms bind port min = ${ports%-*}
ms bind port max = ${ports#*-}
auth cluster required = cephx
auth service required = cephx
auth client required = cephx
auth allow insecure global id reclaim = false
keyring = $CONF_DIR/\$cluster.\$name.keyring
log to stderr = true
err to stderr = true
log file =
run dir = $DATA_DIR/run
admin socket = $DATA_DIR/run/\$name.asok
osd pool default size = $size
osd pool default min size = $min_size
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
mon max pg per osd = 1000
mon allow pool delete = false
# Replicas on distinct OSDs; in this topology every OSD is its own host.
osd crush chooseleaf type = 0
osd objectstore = $objectstore
osd max object name len = 460
osd max object namespace len = 64

[mon]
mon data = $DATA_DIR/mon/\$cluster-\$id
keyring = \$mon_data/keyring

[mgr]
mgr data = $DATA_DIR/mgr/\$cluster-\$id
keyring = \$mgr_data/keyring

[osd]
osd data = $DATA_DIR/osd/\$cluster-\$id
keyring = \$osd_data/keyring
EOF
    if [[ $objectstore == memstore ]]; then
      echo "memstore device bytes = ${CEPH_OSD_BYTES:-1073741824}"
      echo "osd memory target = 268435456"
    else
      # Beside the OSD's data directory, not inside it: bluestore links <osd data>/block to it.
      echo "bluestore block path = $DATA_DIR/osd/\$cluster-\$id.block"
      echo "bluestore block create = true"
      echo "bluestore block size = ${CEPH_OSD_BYTES:-21474836480}"
    fi
    if [[ ${CEPH_FAST_FAILURE:-0} == 1 ]]; then
      cat <<'EOF'
# Seconds-scale failure detection for the loopback cluster test: a killed OSD is reported by its
# peers at once (connection refused) and marked down, and its PGs re-peer within seconds. The
# defaults (6 s heartbeats, 20 s grace) suit real networks better.
osd heartbeat interval = 1
osd heartbeat grace = 4
mon osd min down reporters = 1
osd mon report interval = 1
osd mon shutdown timeout = 1
paxos propose interval = 0.01
mon osd down out interval = 60
EOF
    fi
    cat <<EOF

[client]
rgw data = $DATA_DIR/rgw/\$cluster-\$id
# tcp_nodelay in the frontend: without it small GETs wait ~45 ms on delayed ACKs.
rgw thread pool size = 64
rgw enable usage log = false
EOF
  } >"$tmp/ceph.conf"

  # cephx: the monitors' key, and the administrator's (every other key is made from it).
  ceph-authtool --create-keyring "$tmp/ceph.mon.keyring" --gen-key -n mon. --cap mon 'allow *' >/dev/null
  ceph-authtool --create-keyring "$tmp/ceph.client.admin.keyring" --gen-key -n client.admin \
    --cap mon 'allow *' --cap osd 'allow *' --cap mgr 'allow *' --cap mds 'allow *' >/dev/null
  ceph-authtool "$tmp/ceph.mon.keyring" --import-keyring "$tmp/ceph.client.admin.keyring" >/dev/null
  monmaptool --create --fsid "$fsid" "${monmap_args[@]}" "$tmp/monmap" >/dev/null
  chmod 600 "$tmp"/*.keyring
  mv "$tmp/ceph.mon.keyring" "$tmp/ceph.client.admin.keyring" "$tmp/monmap" "$CONF_DIR/"
  mv "$tmp/ceph.conf" "$CONF"  # last: its presence means "bootstrapped"
  rmdir "$tmp"
  log "bootstrapped fsid $fsid, monitors: $mon_host"
}

need_conf() { [[ -s $CONF ]] || die "$CONF is missing: run the bootstrap role first"; }

mon() {
  local id="$1"
  need_conf
  local data="$DATA_DIR/mon/ceph-$id"
  mkdir -p "$DATA_DIR/run"
  if [[ ! -e $data/done ]]; then
    rm -rf "$data" && mkdir -p "$data"
    ceph-mon -c "$CONF" -i "$id" --mkfs --monmap "$CONF_DIR/monmap" --keyring "$CONF_DIR/ceph.mon.keyring" >&2
    touch "$data/done"
    log "monitor $id created"
  fi
  # It binds the address the monmap gives mon.$id.
  exec ceph-mon -c "$CONF" -f -i "$id"
}

mgr() {
  local id="$1"
  need_conf
  local data="$DATA_DIR/mgr/ceph-$id"
  mkdir -p "$data" "$DATA_DIR/run"
  wait_until "the monitors" 240 cephq mon stat
  [[ -s $data/keyring ]] || cephq auth get-or-create "mgr.$id" mon 'allow profile mgr' osd 'allow *' mds 'allow *' -o "$data/keyring"
  exec ceph-mgr -c "$CONF" -f -i "$id"
}

osd() {
  local id="$1"
  need_conf
  local data="$DATA_DIR/osd/ceph-$id"
  mkdir -p "$data" "$DATA_DIR/run"
  wait_until "the monitors" 240 cephq mon stat
  # memstore keeps nothing across a restart: such an OSD is always created afresh.
  if [[ ! -e $data/done ]] || grep -q '^osd objectstore = memstore' "$CONF"; then
    local uuid secret
    uuid="$(uuidgen)"
    secret="$(ceph-authtool --gen-print-key)"
    find "$data" -mindepth 1 -delete
    # Registered under its id with its own cephx key ("osd new" grants the OSD profile). An id
    # in use already (a memstore OSD restarting empty) is destroyed first (it keeps its place in
    # the CRUSH map; its data is recovered from the other replicas), then registered again.
    if ! printf '{"cephx_secret": "%s"}' "$secret" | cephq osd new "$uuid" "$id" -i - >/dev/null 2>&1; then
      wait_until "osd.$id marked down" 120 bash -c "timeout 20 ceph -c '$CONF' osd dump 2>/dev/null | grep -q '^osd.$id down'"
      cephq osd destroy "$id" --yes-i-really-mean-it >&2
      printf '{"cephx_secret": "%s"}' "$secret" | cephq osd new "$uuid" "$id" -i - >/dev/null
    fi
    ceph-authtool --create-keyring "$data/keyring" --name "osd.$id" --add-key "$secret" >/dev/null
    ceph-osd -c "$CONF" -i "$id" --mkfs --osd-uuid "$uuid" >&2
    touch "$data/done"
    log "osd.$id created"
  fi
  exec ceph-osd -c "$CONF" -f -i "$id"
}

setup() {
  need_conf
  local expected="${CEPH_EXPECTED_OSDS:-3}"
  local access_file="${S3_ACCESS_KEY_FILE:-/run/secrets/s3_access_key}" secret_file="${S3_SECRET_KEY_FILE:-/run/secrets/s3_secret_key}"
  wait_until "the monitors" 240 cephq mon stat
  # The pools radosgw would create on first use, made here (while the OSDs boot: pool creation is a
  # monitor operation) so that each is replicated as the configuration says (size and min_size
  # come from "osd pool default size / min size"). One CLI process reads every command.
  local pool
  for pool in .rgw.root default.rgw.log default.rgw.control default.rgw.meta \
    default.rgw.buckets.index default.rgw.buckets.data default.rgw.buckets.non-ec; do
    printf 'osd pool create %s 8 8 replicated\nosd pool application enable %s rgw\n' "$pool" "$pool"
  done | cephq >&2
  wait_until "$expected OSDs up" 480 bash -c "timeout 20 ceph -c '$CONF' osd stat 2>/dev/null | grep -Eq '$expected up'"
  local access secret
  access="$(tr -d '\r\n' <"$access_file")"
  secret="$(tr -d '\r\n' <"$secret_file")"
  if timeout 60 radosgw-admin -c "$CONF" user info --uid optin >/dev/null 2>&1; then
    log "S3 user optin exists"
  else
    # Keys on the command line are visible in this one-shot job's process list only, briefly.
    timeout 60 radosgw-admin -c "$CONF" user create --uid optin --display-name "optin recorders and control plane" \
      --access-key "$access" --secret-key "$secret" >/dev/null
    log "S3 user optin created"
  fi
  # The audit principal (optional: given when both key files are): its own RGW user. The audit
  # trail creates its bucket with object lock under this user, so the optin user (recorders'
  # media and keys) cannot touch it, and locked versions cannot be deleted by anyone.
  local audit_access_file="${S3_AUDIT_ACCESS_KEY_FILE:-}" audit_secret_file="${S3_AUDIT_SECRET_KEY_FILE:-}"
  if [[ -n $audit_access_file && -n $audit_secret_file ]]; then
    if timeout 60 radosgw-admin -c "$CONF" user info --uid optin-audit >/dev/null 2>&1; then
      log "S3 user optin-audit exists"
    else
      timeout 60 radosgw-admin -c "$CONF" user create --uid optin-audit --display-name "optin audit trail" \
        --access-key "$(tr -d '\r\n' <"$audit_access_file")" --secret-key "$(tr -d '\r\n' <"$audit_secret_file")" >/dev/null
      log "S3 user optin-audit created"
    fi
  fi
  log "RGW pools: $(cephq osd pool ls detail 2>/dev/null | grep -c "size ${CEPH_POOL_SIZE:-3} min_size ${CEPH_POOL_MIN_SIZE:-2}") replicated x${CEPH_POOL_SIZE:-3} (min ${CEPH_POOL_MIN_SIZE:-2}); $expected OSDs up"
}

rgw() {
  local name="$1" endpoint="${CEPH_RGW_ENDPOINT:-0.0.0.0:7480}"
  need_conf
  mkdir -p "$DATA_DIR/rgw/ceph-rgw.$name" "$DATA_DIR/run"
  wait_until "the monitors" 240 cephq mon stat
  local keyring="$CONF_DIR/ceph.client.rgw.$name.keyring"
  [[ -s $keyring ]] || cephq auth get-or-create "client.rgw.$name" mon 'allow rw' osd 'allow rwx' -o "$keyring"
  exec radosgw -c "$CONF" -f -n "client.rgw.$name" --rgw-frontends "beast endpoint=$endpoint tcp_nodelay=1"
}

ROLE="${1:-}"
case "$ROLE" in
  bootstrap) bootstrap ;;
  setup) setup ;;
  mon | mgr | osd | rgw)
    [[ -n ${2:-} ]] || die "usage: $0 $ROLE ID"
    "$ROLE" "$2"
    ;;
  *)
    echo "usage: $0 bootstrap | mon ID | mgr ID | osd ID | setup | rgw NAME" >&2
    exit 2
    ;;
esac
