#!/usr/bin/env bash
# Runs "$@" with a local AWS Secrets Manager: moto_server (PyPI moto[server],
# installed into .venv by `make tools`) on a free loopback port, reached through
# AWS_ENDPOINT_URL with dummy credentials. Stops it afterwards.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
moto=${MOTO_SERVER:-$here/.venv/bin/moto_server}
if [ ! -x "$moto" ]; then
    echo "with-moto.sh: $moto not found; run 'make tools'" >&2
    exit 1
fi
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
log="${TMPDIR:-/tmp}/moto-$port.log"
"$moto" -H 127.0.0.1 -p "$port" >"$log" 2>&1 &
pid=$!
trap 'kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null || true' EXIT
for _ in $(seq 1 150); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then break; fi
    kill -0 "$pid" 2>/dev/null || { echo "with-moto.sh: moto_server exited; see $log" >&2; exit 1; }
    sleep 0.1
done
export AWS_ENDPOINT_URL="http://127.0.0.1:$port"
export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_SESSION_TOKEN=testing
export AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1 AWS_EC2_METADATA_DISABLED=true
"$@"
