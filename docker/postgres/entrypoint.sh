#!/bin/sh
# The lab's PostgreSQL: on first start, a cluster in the data volume with the role and database
# `cti` (password POSTGRES_PASSWORD, scram-sha-256 over TCP); then the server on 127.0.0.1:$PGPORT.
set -eu
: "${POSTGRES_PASSWORD:?POSTGRES_PASSWORD must be set}"

if [ ! -s "$PGDATA/PG_VERSION" ]; then
    initdb --username=postgres --auth-local=peer --auth-host=scram-sha-256 --encoding=UTF8 \
        --locale=C.UTF-8 -D "$PGDATA" >/dev/null
    # Set up over the Unix socket only: nothing listens on TCP until the role exists.
    pg_ctl -D "$PGDATA" -o "-c listen_addresses='' -c unix_socket_directories=/run/postgresql" \
        -w start >/dev/null
    psql -v ON_ERROR_STOP=1 -q -h /run/postgresql -U postgres -d postgres -v password="$POSTGRES_PASSWORD" <<'SQL'
CREATE ROLE cti LOGIN PASSWORD :'password';
CREATE DATABASE cti OWNER cti;
SQL
    pg_ctl -D "$PGDATA" -m fast -w stop >/dev/null
fi

exec postgres -D "$PGDATA" -c listen_addresses=127.0.0.1 -c port="$PGPORT" \
    -c unix_socket_directories=/run/postgresql
