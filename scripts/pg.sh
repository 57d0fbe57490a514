#!/usr/bin/env bash
# Prints the URL of a Postgres database that answers, starting a server if it
# has to. Usage: scripts/pg.sh [DBNAME]   (default: postgres; created if absent)
#
# Order: $DATABASE_URL if set (used as it is) → 127.0.0.1:5432 if it answers →
# a stopped Debian cluster (pg_ctlcluster) → a private cluster under
# target/pgdata on port 54329 made with the system's initdb/pg_ctl → a clear
# message saying what to install.
set -euo pipefail

db=${1:-postgres}
here=$(cd "$(dirname "$0")/.." && pwd)
private_port=54329

log() { echo "pg.sh: $*" >&2; }

answers() { # host port
    if command -v pg_isready >/dev/null 2>&1; then
        pg_isready -q -h "$1" -p "$2" -t 2
    else
        (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null
    fi
}

with_db() { # server-url dbname -> url of that database, created if missing
    local server=$1 name=$2
    if [ "$name" != postgres ] && command -v psql >/dev/null 2>&1; then
        if ! psql "$server" -XtAc "SELECT 1 FROM pg_database WHERE datname = '$name'" | grep -q 1; then
            psql "$server" -XqAc "CREATE DATABASE \"$name\"" >/dev/null
            log "created database $name"
        fi
    fi
    echo "${server%/*}/$name"
}

if [ -n "${DATABASE_URL:-}" ]; then
    echo "$DATABASE_URL"
    exit 0
fi

if answers 127.0.0.1 5432; then
    with_db "postgres://postgres@127.0.0.1:5432/postgres" "$db"
    exit 0
fi

as_postgres() {
    if [ "$(id -u)" = 0 ]; then
        if command -v runuser >/dev/null 2>&1; then runuser -u postgres -- "$@"; else su postgres -s /bin/sh -c "$(printf '%q ' "$@")"; fi
    else
        "$@"
    fi
}

# A packaged cluster that is installed but stopped.
if command -v pg_lsclusters >/dev/null 2>&1; then
    while read -r ver name port _; do
        [ "$port" = 5432 ] || continue
        log "starting Debian cluster $ver/$name"
        pg_ctlcluster --skip-systemctl-redirect "$ver" "$name" start >&2 || true
        for _ in $(seq 1 30); do answers 127.0.0.1 5432 && break; sleep 0.5; done
        if answers 127.0.0.1 5432; then
            with_db "postgres://postgres@127.0.0.1:5432/postgres" "$db"
            exit 0
        fi
    done < <(pg_lsclusters --no-header 2>/dev/null || true)
fi

# A private cluster of our own.
if answers 127.0.0.1 "$private_port"; then
    with_db "postgres://postgres@127.0.0.1:$private_port/postgres" "$db"
    exit 0
fi
bindir=""
if command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1; then
    bindir=$(dirname "$(command -v initdb)")
else
    bindir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
    [ -n "$bindir" ] && [ -x "$bindir/initdb" ] || bindir=""
fi
if [ -z "$bindir" ]; then
    log "no PostgreSQL found. Install it, or set DATABASE_URL to a server you have:"
    log "  Debian/Ubuntu: sudo apt-get install postgresql    macOS: brew install postgresql@16"
    exit 1
fi
data="$here/target/pgdata"
mkdir -p "$here/target"
if [ ! -f "$data/PG_VERSION" ]; then
    log "initialising a private cluster in $data"
    mkdir -p "$data"
    [ "$(id -u)" = 0 ] && chown postgres "$data"
    as_postgres "$bindir/initdb" -D "$data" -U postgres --auth=trust >/dev/null
fi
[ "$(id -u)" = 0 ] && chown -R postgres "$data"
log "starting the private cluster on 127.0.0.1:$private_port"
as_postgres "$bindir/pg_ctl" -D "$data" -l "$data/server.log" -w \
    -o "-p $private_port -c listen_addresses=127.0.0.1 -k /tmp" start >/dev/null
with_db "postgres://postgres@127.0.0.1:$private_port/postgres" "$db"
