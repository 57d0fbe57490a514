#!/usr/bin/env bash
# Makes sure a PgBouncer binary exists (the pooler tests start their own).
set -euo pipefail
if command -v pgbouncer >/dev/null 2>&1 || [ -x /usr/sbin/pgbouncer ]; then exit 0; fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing pgbouncer from Debian's packages" >&2
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq pgbouncer >/dev/null
    exit 0
fi
echo "pgbouncer is needed by the pooler tests: apt-get install pgbouncer (Debian/Ubuntu) or brew install pgbouncer" >&2
exit 1
