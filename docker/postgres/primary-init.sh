#!/usr/bin/env bash
# /docker-entrypoint-initdb.d/ of the primary (postgres:15 image): runs once, on an empty data
# directory, as the postgres user, against the image's temporary server. The database `optin` and
# its owner come from POSTGRES_DB / POSTGRES_USER / POSTGRES_PASSWORD_FILE.
set -euo pipefail
# The password reaches psql through its environment and \getenv (psql 15), never a command line;
# :'pw' quotes it as a literal.
OPTIN_REPL_PASSWORD="$(tr -d '\r\n' </run/secrets/pg_replication_password)"
export OPTIN_REPL_PASSWORD
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" <<'SQL'
\getenv pw OPTIN_REPL_PASSWORD
CREATE ROLE replicator WITH REPLICATION LOGIN PASSWORD :'pw';
-- Commits wait until the standby has flushed them (PostgreSQL 15 docs, 27.2.8 "Synchronous
-- Replication"): an answer the control plane gave survives the primary's loss. Set here, not on
-- the command line, so the image's temporary init server does not wait for a standby that does
-- not exist yet. With one standby, writes stop while it is down: see docs/operations.md.
ALTER SYSTEM SET synchronous_standby_names = 'standby1';
ALTER SYSTEM SET synchronous_commit = 'on';
SQL
unset OPTIN_REPL_PASSWORD
# Replication connections from the database network only, with SCRAM passwords.
echo "host replication replicator samenet scram-sha-256" >>"$PGDATA/pg_hba.conf"
