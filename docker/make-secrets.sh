#!/usr/bin/env bash
# Generates every secret the reference deployment (docker/compose.yaml) reads, as files, into DIR
# (default docker/secrets, git-ignored). Nothing secret is ever in the compose file or .env: the
# services get these files as Docker secrets (/run/secrets/<name>) and read them through the
# `*_FILE` variables (src/config/secretFiles.ts) or the images' own `*_FILE` support.
#
#   docker/make-secrets.sh [DIR]      existing files are kept (rerunning adds only what is missing)
#
# Files: control_secret (policy-stream MAC key, control plane and recorders), keyring (the
# recordings' key-encryption keys), s3_access_key / s3_secret_key (the optin user of Ceph RGW),
# softphone_join_secret and sip_leg_secret (recorder call control: softphone joins, SIP-gateway legs), pg_password / pg_replication_password and
# database_url (PostgreSQL), integrations (the control plane's bootstrap credentials: hashes only)
# with integration-tokens.txt beside it (the tokens to hand to the IVR, WFM and HR systems: not
# mounted anywhere), ca_cert / ca_key (a private CA), tls_cert / tls_key / tls_bundle (the control
# plane's and the API balancer's certificate, for the names control, control-1, control-2,
# api-lb and $OPTIN_API_HOSTNAME), grafana_admin_password, audit_hmac_key (the audit trail's HMAC
# key) and s3_audit_access_key / s3_audit_secret_key (the audit principal, its own RGW user).
#
# The directory is made 0700; the files 0644 inside it, because a bind-mounted secret keeps its
# mode and the services read it as their own non-root users (node 1000, postgres 999, grafana 472);
# but audit_hmac_key, 0600 and owned by uid 1000 (its reader refuses a key others can read).
set -euo pipefail
DIR="${1:-$(cd "$(dirname "$0")" && pwd)/secrets}"
API_HOST="${OPTIN_API_HOSTNAME:-optin-api.example.internal}"
mkdir -p "$DIR"
chmod 700 "$DIR"
cd "$DIR"

rand() { openssl rand -base64 48 | tr -d '\n=' | tr '+/' '-_'; }
put() { # name value: written once
  [[ -s $1 ]] && return 0
  printf '%s\n' "$2" >"$1"
  chmod 644 "$1"
}

put control_secret "$(rand)"
put keyring "{\"activeKeyId\":\"k1\",\"keys\":{\"k1\":\"$(openssl rand -base64 32)\"}}"
put s3_access_key "optin-$(openssl rand -hex 6)"
put s3_secret_key "$(rand)"
put softphone_join_secret "$(rand)"
put sip_leg_secret "$(rand)"
put pg_password "$(openssl rand -hex 24)"
put pg_replication_password "$(openssl rand -hex 24)"
put database_url "postgres://optin:$(tr -d '\n' <pg_password)@pg-primary:5432/optin"
put grafana_admin_password "$(openssl rand -hex 16)"
put s3_audit_access_key "optin-audit-$(openssl rand -hex 6)"
put s3_audit_secret_key "$(rand)"
# The audit HMAC key: its reader refuses a file others can read (src/audit/auditKey.ts), so 0600,
# owned by the image's `node` user (uid 1000: recorders and control planes) when run as root.
if [[ ! -s audit_hmac_key ]]; then
  (umask 077 && openssl rand -hex 32 >audit_hmac_key)
  chmod 600 audit_hmac_key
  if [[ $(id -u) -eq 0 ]]; then chown 1000:1000 audit_hmac_key; fi
fi

if [[ ! -s integrations ]]; then
  entries=() tokens=()
  for id in ivr wfm hr ops; do
    secret="$(openssl rand -base64 32 | tr -d '\n=' | tr '+/' '-_')"
    entries+=("{\"id\":\"$id\",\"scopes\":[\"$id\"],\"secretSha256\":\"$(printf '%s' "$secret" | sha256sum | cut -d' ' -f1)\"}")
    tokens+=("$id: $id.$secret")
  done
  (IFS=,; printf '[%s]\n' "${entries[*]}") >integrations
  printf '%s\n' "${tokens[@]}" >integration-tokens.txt
  chmod 644 integrations
  chmod 600 integration-tokens.txt
fi

if [[ ! -s ca_cert ]]; then
  openssl req -x509 -newkey rsa:3072 -nodes -days 825 -subj "/CN=optin deployment CA" \
    -keyout ca_key -out ca_cert >/dev/null 2>&1
  chmod 600 ca_key
  chmod 644 ca_cert
fi
if [[ ! -s tls_cert ]]; then
  openssl req -newkey rsa:3072 -nodes -subj "/CN=control" -keyout tls_key -out tls.csr >/dev/null 2>&1
  printf 'subjectAltName=DNS:control,DNS:control-1,DNS:control-2,DNS:api-lb,DNS:localhost,DNS:%s\nextendedKeyUsage=serverAuth\n' "$API_HOST" >tls.ext
  openssl x509 -req -in tls.csr -CA ca_cert -CAkey ca_key -CAcreateserial -days 397 -extfile tls.ext -out tls_cert >/dev/null 2>&1
  rm -f tls.csr tls.ext ca_cert.srl
  cat tls_cert tls_key >tls_bundle
  chmod 644 tls_cert tls_key tls_bundle
fi
echo "secrets in $DIR (tokens for the integrations: $DIR/integration-tokens.txt)"
