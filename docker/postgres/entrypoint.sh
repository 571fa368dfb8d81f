#!/bin/sh
# pg-entrypoint -- docker/postgres/Dockerfile's entrypoint: make the cluster on first
# start, then run postgres as PID 1. Environment: POSTGRES_PASSWORD (required on first
# start), POSTGRES_USER (default postgres), POSTGRES_DB (made if set and not postgres).
set -eu
say() { printf 'pg-entrypoint: %s\n' "$*" >&2; }

if [ ! -s "$PGDATA/PG_VERSION" ]; then
    user=${POSTGRES_USER:-postgres}
    if [ -z "${POSTGRES_PASSWORD:-}" ]; then
        say "the data directory is empty and POSTGRES_PASSWORD is not set: set it to make the cluster"
        exit 1
    fi
    pwfile=$(mktemp)
    printf '%s\n' "$POSTGRES_PASSWORD" >"$pwfile"
    initdb -D "$PGDATA" -U "$user" --pwfile="$pwfile" --auth-local=trust \
        --auth-host=scram-sha-256 -E UTF8 --locale=C.UTF-8 >/dev/null
    rm -f "$pwfile"
    {
        echo "listen_addresses = '*'"
        echo "unix_socket_directories = '/run/postgresql'"
    } >>"$PGDATA/postgresql.conf"
    echo "host all all all scram-sha-256" >>"$PGDATA/pg_hba.conf"
    if [ -n "${POSTGRES_DB:-}" ] && [ "$POSTGRES_DB" != postgres ]; then
        postgres --single -D "$PGDATA" postgres >/dev/null <<SQL
CREATE DATABASE "$POSTGRES_DB" OWNER "$user";
SQL
    fi
    say "cluster made in $PGDATA (superuser $user${POSTGRES_DB:+, database $POSTGRES_DB})"
fi
exec postgres -D "$PGDATA" "$@"
