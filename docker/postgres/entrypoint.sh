#!/bin/sh
# The lab's PostgreSQL: on first start, a cluster in the data volume with the role and database
# `cti` (password POSTGRES_PASSWORD, scram-sha-256 over TCP). On every start, Asterisk's records
# (docs/asterisk.md, deploy step 6): the roles `asterisk` (CTI_LAB_ASTERISK_DB_PASSWORD) and
# `cti_reader` (CTI_LAB_READER_DB_PASSWORD), the database `asterisk` owned by asterisk, the tables
# of the shipped asterisk-conf/postgresql-tables.sql (mounted at $CTI_LAB_RECORDS_SQL) and its
# grants: whatever is missing is made, so a volume from before gets them too, and the two
# passwords follow the environment. Then the server on 127.0.0.1:$PGPORT.
set -eu
: "${POSTGRES_PASSWORD:?POSTGRES_PASSWORD must be set}"
: "${CTI_LAB_ASTERISK_DB_PASSWORD:?CTI_LAB_ASTERISK_DB_PASSWORD must be set}"
: "${CTI_LAB_READER_DB_PASSWORD:?CTI_LAB_READER_DB_PASSWORD must be set}"
tables="${CTI_LAB_RECORDS_SQL:-/opt/cti/postgresql-tables.sql}"
[ -r "$tables" ] || { echo "cti-postgres: $tables is missing (asterisk-conf/postgresql-tables.sql)" >&2; exit 1; }

psql_local() {  # psql as the superuser over the Unix socket
    PGOPTIONS="-c client_min_messages=warning" psql -v ON_ERROR_STOP=1 -q -h /run/postgresql -U postgres "$@"
}

first=""
if [ ! -s "$PGDATA/PG_VERSION" ]; then
    initdb --username=postgres --auth-local=peer --auth-host=scram-sha-256 --encoding=UTF8 \
        --locale=C.UTF-8 -D "$PGDATA" >/dev/null
    first=1
fi

# Set up over the Unix socket only: nothing listens on TCP until the roles and tables exist (the
# healthcheck, and so Asterisk's start, wait for that).
pg_ctl -D "$PGDATA" -o "-c listen_addresses='' -c unix_socket_directories=/run/postgresql" \
    -w start >/dev/null
if [ -n "$first" ]; then
    psql_local -d postgres -v password="$POSTGRES_PASSWORD" <<'SQL'
CREATE ROLE cti LOGIN PASSWORD :'password';
CREATE DATABASE cti OWNER cti;
SQL
fi
psql_local -d postgres -v writer="$CTI_LAB_ASTERISK_DB_PASSWORD" -v reader="$CTI_LAB_READER_DB_PASSWORD" <<'SQL'
SELECT 'CREATE ROLE asterisk LOGIN' WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'asterisk') \gexec
SELECT 'CREATE ROLE cti_reader LOGIN' WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'cti_reader') \gexec
ALTER ROLE asterisk LOGIN PASSWORD :'writer';
ALTER ROLE cti_reader LOGIN PASSWORD :'reader';
SELECT 'CREATE DATABASE asterisk OWNER asterisk'
 WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = 'asterisk') \gexec
SQL
# The tables (the file creates only what is missing), then the grants its last lines say: Asterisk
# may insert, cti's reader may read, neither anything else.
{
    cat "$tables"
    echo "GRANT INSERT ON queue_log, cel TO asterisk;"
    echo "GRANT USAGE ON SEQUENCE queue_log_id_seq, cel_id_seq TO asterisk;"
    echo "GRANT SELECT ON queue_log, cel TO cti_reader;"
} | psql_local -d asterisk >/dev/null
pg_ctl -D "$PGDATA" -m fast -w stop >/dev/null

exec postgres -D "$PGDATA" -c listen_addresses=127.0.0.1 -c port="$PGPORT" \
    -c unix_socket_directories=/run/postgresql
