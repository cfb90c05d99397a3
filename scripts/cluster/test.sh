#!/usr/bin/env bash
# `npm run test:cluster`: the cluster test (test/integration/cluster/, vitest.cluster.config.ts),
# run so that however it ends (green, red, a CI timeout's SIGTERM, Ctrl-C, its own time limit) no
# process it started outlives it: the test's own process group (vitest, its workers, the
# control-plane and recorder processes it spawned) is signalled, then the Ceph daemons
# (scripts/ceph/cluster.sh stop: its own daemons only) and the PostgreSQL pair
# (test/support/clusterHarness.ts keeps it in one fixed directory) are stopped.
#
#   OPTIN_CLUSTER_TIME_LIMIT   seconds before the run is stopped as failed (default 900)
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
# The project's Node (the npm package node@24 in node_modules/.bin), as `npm run` would put
# first on the PATH: the processes the test spawns run on process.execPath.
export PATH="$root/node_modules/.bin:$PATH"
limit="${OPTIN_CLUSTER_TIME_LIMIT:-900}"
pg_base="${TMPDIR:-/tmp}"
pg_base="${pg_base%/}/optin-cluster-pg-$(id -u)"
log() { printf '[test:cluster] %s\n' "$*" >&2; }

# On a fresh machine: the project's setup (idempotent) installs the Debian packages the cluster
# needs (Ceph, PostgreSQL 15). `npm test` has run it already in CI.
for p in ceph-mon ceph-osd radosgw ceph-common postgresql-15; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    log "Debian package $p missing: running scripts/setup.sh"
    bash scripts/setup.sh || exit 1
    break
  fi
done

# One run per machine: a second one would stop the first's cluster (cluster.sh start begins with
# a stop). Held until this script exits; not passed on to the test.
state="${OPTIN_STATE_DIR:-${HOME:-/tmp}/.cache/optin}"
mkdir -p "$state"
exec 8>"$state/test-cluster.lock"
flock -n 8 || { log "another npm run test:cluster is running on this machine ($state/test-cluster.lock)"; exit 1; }

child=""
cleanup() {
  local rc=$?
  trap '' PIPE INT TERM
  if [[ -n $child ]] && kill -0 "$child" 2>/dev/null; then
    kill -TERM -- "-$child" 2>/dev/null
    for _ in $(seq 50); do kill -0 "$child" 2>/dev/null || break; sleep 0.1; done
    kill -KILL -- "-$child" 2>/dev/null
  fi
  bash scripts/ceph/cluster.sh stop >/dev/null 2>&1 || log "scripts/ceph/cluster.sh stop failed"
  for node in standby primary; do
    [[ -d $pg_base/$node ]] && bash scripts/pg/pg.sh stop --dir "$pg_base/$node" --remove >/dev/null 2>&1
  done
  rm -rf "$pg_base"
  log "done in ${SECONDS} s (exit $rc); every daemon it started is stopped"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 143' TERM
trap 'exit 130' INT

# Job control: the test runs in its own process group, which cleanup signals as a whole.
set -m
timeout -k 10 "$limit" node_modules/.bin/vitest run --config vitest.cluster.config.ts "$@" 8>&- &
child=$!
set +m
wait "$child"
rc=$?
child=""
((rc == 124)) && log "stopped: over its ${limit} s limit (OPTIN_CLUSTER_TIME_LIMIT)"
exit "$rc"
