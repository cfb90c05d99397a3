#!/usr/bin/env bash
# Entrypoint of the hot standby (postgres:15 image, run as the postgres user): on an empty data
# directory, a base backup of the primary with -R (standby.signal and primary_conninfo, under the
# name standby1 that the primary's synchronous_standby_names waits for); then the server.
#
# Failover (docs/operations.md): `docker compose exec pg-standby pg_ctl promote -D "$PGDATA"`,
# then point database_url at pg-standby and restart the control-plane replicas.
set -euo pipefail
if [[ ! -s "$PGDATA/PG_VERSION" ]]; then
  export PGPASSWORD
  PGPASSWORD="$(tr -d '\r\n' </run/secrets/pg_replication_password)"
  until pg_isready -h pg-primary -p 5432 -q; do sleep 1; done
  pg_basebackup -h pg-primary -p 5432 -U replicator -D "$PGDATA" -R -X stream -d "application_name=standby1"
  chmod 700 "$PGDATA"
  unset PGPASSWORD
fi
exec postgres -c hot_standby=on
