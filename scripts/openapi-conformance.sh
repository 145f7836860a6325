#!/usr/bin/env bash
# Checks the live /api/openapi.json of a real server (dev mode, embedded
# SQLite, local storage in a scratch directory) with the tools users point at
# it: `@redocly/cli lint` (rules: redocly.yaml) and a bounded schemathesis
# run with a valid admin token (no 5xx, responses must match the schema).
# Tools go under target/ (npm prefix, Python venv), never a global install.
# SCHEMATHESIS_MAX_EXAMPLES bounds the run (default 10 cases per operation).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

log() { printf '==> %s\n' "$*"; }

redocly="$root/target/tools/node_modules/.bin/redocly"
if [ ! -x "$redocly" ]; then
  log "installing @redocly/cli under target/tools"
  npm install --silent --no-audit --no-fund --prefix "$root/target/tools" @redocly/cli >/dev/null
fi
# shellcheck source=scripts/python-venv.sh
source "$root/scripts/python-venv.sh"
ensure_python_packages schemathesis=schemathesis
venv="$PYTHON_VENV"

cargo build --locked --bin backup-service
work=$(mktemp -d)
server_pid=
cleanup() {
  if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
http_port=$(free_port)
grpc_port=$(free_port)
(
  cd "$work"
  exec env -u JWT_SECRET -u DATABASE_URL -u STORAGE_URL \
    HTTP_ADDR="127.0.0.1:$http_port" GRPC_ADDR="127.0.0.1:$grpc_port" \
    "$root/target/debug/backup-service" >"$work/stdout" 2>"$work/stderr"
) &
server_pid=$!
base="http://127.0.0.1:$http_port"
token=
for _ in $(seq 1 100); do
  token=$(grep -Eo '[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+' "$work/stdout" | head -n 1 || true)
  if [ -n "$token" ] && curl -fsS "$base/healthz" >/dev/null 2>&1; then break; fi
  kill -0 "$server_pid" 2>/dev/null || { cat "$work/stderr" >&2; echo "server exited" >&2; exit 1; }
  sleep 0.2
done
[ -n "$token" ] || { cat "$work/stderr" >&2; echo "no dev token printed" >&2; exit 1; }

curl -fsS "$base/api/openapi.json" -o "$work/openapi.json"
log "redocly lint (live /api/openapi.json)"
"$redocly" lint "$work/openapi.json" --config "$root/redocly.yaml"

log "schemathesis (live /api/openapi.json)"
"$venv/bin/schemathesis" run "$base/api/openapi.json" \
  --header "Authorization: Bearer $token" \
  --checks all \
  --exclude-checks positive_data_acceptance \
  --max-examples "${SCHEMATHESIS_MAX_EXAMPLES:-10}" \
  --request-timeout 30 \
  --no-color
