#!/usr/bin/env bash
# One-off machine setup, idempotent and cached: safe to run before every demo and test run.
#   1. Debian packages (build tools for the mediasoup worker, ffmpeg/sox/espeak-ng, Ceph RGW as the
#      local S3 server, Chromium for browser tests). Needs root the first time; skipped when present.
#   2. npm dependencies (npm ci), without mediasoup's postinstall (it downloads from GitHub).
#   3. The mediasoup worker binary: official prebuilt where reachable, else built from source
#      against Debian's libraries; cached outside the clone (scripts/mediasoup-worker/build.sh).
#   4. Media fixtures generated from Debian tools (media-fixtures/generate.sh).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
log() { echo "[setup] $*" >&2; }
t0=$(date +%s)

APT_PACKAGES=(
  # mediasoup worker build from Debian sources
  g++ pkg-config meson ninja-build flatbuffers-compiler libflatbuffers-dev libuv1-dev libssl-dev
  libsrtp2-dev libabsl-dev patch curl ca-certificates
  # mediasoup worker runtime
  libuv1 libssl3 libsrtp2-1 libabsl20220623 libnss3
  # media tools
  ffmpeg sox espeak-ng
  # local S3-compatible server (Ceph RADOS Gateway on loopback)
  ceph-mon ceph-osd radosgw ceph-common
  # browser tests
  chromium
  # validates docker/compose.yaml without an engine
  docker-compose
  # the control plane's real PostgreSQL server (tests start a throwaway cluster per run)
  postgresql-15
  # a real SIP user agent for the plain-leg and SIPREC tests
  baresip-core
  # promtool checks the alert rules
  prometheus
)

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    log "missing Debian packages: ${missing[*]}"
    log "run as root: apt-get update && apt-get install -y ${missing[*]}"
    exit 1
  fi
  log "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >/dev/null
  apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
fi

# mediasoup's postinstall would try GitHub; MEDIASOUP_WORKER_BIN makes it skip (npm 11 does not run
# install scripts of dependencies by default anyway).
export MEDIASOUP_WORKER_BIN="${MEDIASOUP_WORKER_BIN:-/nonexistent/built-by-optin-setup}"
stamp=node_modules/.optin-lock-sha
lock_sha="$(sha256sum package-lock.json | cut -c1-16)"
if [ -L node_modules ]; then
  # A git worktree sharing another checkout's node_modules through a symlink: `npm ci` would empty
  # the shared directory (it follows the link) and install here instead, breaking every checkout
  # that shares it. The owner of the shared checkout installs; here we only use it.
  [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$lock_sha" ] || log "node_modules is a shared symlink: not installing (run npm ci in $(readlink -f node_modules)/.. if it is out of date)"
elif [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$lock_sha" ]; then
  log "installing npm dependencies"
  npm ci --no-audit --no-fund --loglevel=error >&2
  echo "$lock_sha" > "$stamp"
fi

mkdir -p var
worker_bin="$(bash scripts/mediasoup-worker/build.sh)"
echo "$worker_bin" > var/mediasoup-worker-bin

bash media-fixtures/generate.sh >&2

log "ready in $(( $(date +%s) - t0 )) s (worker: $worker_bin)"
