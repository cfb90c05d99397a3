#!/usr/bin/env bash
# Builds (or fetches) the mediasoup worker binary and prints its path on stdout.
#
# mediasoup's own install downloads a prebuilt worker from GitHub and, failing
# that, builds from source with dependencies fetched from GitHub too. Where
# GitHub is reachable and the binary matches the checksum pinned in
# prebuilt.sha256 we take the official prebuilt; otherwise we build the same
# sources against Debian's packages (see debian.patch and compat/). The result
# is cached outside the clone, keyed by mediasoup version and a hash of our
# patch, so a rerun costs nothing.
#
# Environment: OPTIN_CACHE_DIR (cache root), OPTIN_WORKER_FROM_SOURCE=1 (skip the prebuilt),
# OPTIN_WORKER_RELEASES_URL (a mirror of the GitHub release downloads), OPTIN_WORKER_CHECKSUMS
# (another pinned-checksum file, e.g. for a site's own mirror), OPTIN_WORKER_NO_SOURCE_BUILD=1
# (fail instead of building: CI that must not spend 7 minutes).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
log() { echo "[mediasoup-worker] $*" >&2; }

version="$(node -p "require('$root/package.json').dependencies.mediasoup.replace(/^[^0-9]*/, '')")"
patch_hash="$(cat "$here/debian.patch" "$here/compat/srtp.h" "$here/compat/ankerl/unordered_dense.h" | sha256sum | cut -c1-12)"
cache_root="${OPTIN_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/optin}"
cache_dir="$cache_root/mediasoup-worker/$version-$patch_hash"
bin="$cache_dir/mediasoup-worker"

# A worker started without MEDIASOUP_VERSION exits with its own code 41: proof that the
# binary and its shared libraries load on this machine.
runs_as_worker() {
  [ -x "$1" ] || return 1
  local rc=0
  env -u MEDIASOUP_VERSION "$1" >/dev/null 2>&1 || rc=$?
  [ "$rc" -eq 41 ]
}

if runs_as_worker "$bin"; then
  echo "$bin"
  exit 0
fi
mkdir -p "$cache_dir"

# 1. The official prebuilt, where the network allows (a user's machine), and only when the binary
#    matches the checksum pinned in prebuilt.sha256 (an unpinned asset is never run).
if [ "${OPTIN_WORKER_FROM_SOURCE:-0}" != "1" ]; then
  kernel_major="$(uname -r | cut -d. -f1)"
  asset="mediasoup-worker-$version-linux-$(node -p process.arch)-kernel$kernel_major"
  url="${OPTIN_WORKER_RELEASES_URL:-https://github.com/versatica/mediasoup/releases/download}/$version/$asset.tgz"
  pinned="$(awk -v a="$asset" '$1 !~ /^#/ && $2 == a { print $1 }' "${OPTIN_WORKER_CHECKSUMS:-$here/prebuilt.sha256}")"
  tmp="$(mktemp -d)"
  if [ -z "$pinned" ]; then
    log "no pinned checksum for $asset in prebuilt.sha256: not downloading it"
  elif curl -fsSL --connect-timeout 5 --max-time 120 -o "$tmp/w.tgz" "$url" 2>/dev/null \
       && tar -xzf "$tmp/w.tgz" -C "$tmp" mediasoup-worker; then
    actual="$(sha256sum "$tmp/mediasoup-worker" | cut -d' ' -f1)"
    if [ "$actual" != "$pinned" ]; then
      log "REFUSED $asset: sha256 $actual is not the pinned $pinned (see prebuilt.sha256)"
    elif runs_as_worker "$tmp/mediasoup-worker"; then
      mv "$tmp/mediasoup-worker" "$bin.tmp" && mv "$bin.tmp" "$bin"
      rm -rf "$tmp"
      log "using the official prebuilt worker $version (sha256 $actual, as pinned)"
      echo "$bin"
      exit 0
    fi
  else
    log "official prebuilt $asset not reachable"
  fi
  rm -rf "$tmp"
  if [ "${OPTIN_WORKER_NO_SOURCE_BUILD:-0}" = "1" ]; then
    log "no usable prebuilt and OPTIN_WORKER_NO_SOURCE_BUILD=1: giving up"
    exit 1
  fi
  log "building from source against Debian packages"
fi

# 2. Build from the npm tarball's sources with Debian's libraries.
src_pkg="$root/node_modules/mediasoup"
if [ ! -f "$src_pkg/worker/meson.build" ]; then
  log "node_modules/mediasoup is missing: run npm ci first"
  exit 1
fi
work="$(mktemp -d "${TMPDIR:-/tmp}/optin-ms-build.XXXXXX")"
trap 'rm -rf "$work"' EXIT
cp -r "$src_pkg/worker" "$work/worker"
(cd "$work" && patch -p1 --quiet -d worker < "$here/debian.patch")
cp -r "$here/compat" "$work/worker/optin-compat"
log "building mediasoup-worker $version (about 7 minutes on 2 cores)"
(
  cd "$work/worker"
  meson setup --buildtype release -Db_ndebug=true --wrap-mode=nofallback build >"$work/meson.log" 2>&1 \
    || { cat "$work/meson.log" >&2; exit 1; }
  ninja -C build mediasoup-worker >"$work/ninja.log" 2>&1 \
    || { tail -60 "$work/ninja.log" >&2; exit 1; }
)
cp "$work/worker/build/mediasoup-worker" "$bin.tmp"
runs_as_worker "$bin.tmp" || { log "the built worker does not start"; exit 1; }
mv "$bin.tmp" "$bin"
log "built $bin"
echo "$bin"
