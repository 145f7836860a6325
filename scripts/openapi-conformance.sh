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

# shellcheck source=scripts/dev-server.sh
source "$root/scripts/dev-server.sh"
start_dev_server "$root"
base="http://127.0.0.1:$http_port"
token=$TOKEN

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
