# Sourced by scripts/readme-commands.sh and scripts/openapi-conformance.sh:
# starts the service the way the quick start does (dev mode: no JWT_SECRET,
# embedded SQLite + local storage under ./data) in a scratch directory, on
# free loopback ports, and waits for its admin token and /healthz.
# Sets: work (the scratch dir), server_pid, http_port, grpc_port, TOKEN.
# The EXIT trap stops the server and removes the scratch dir.

start_dev_server() {
  local root=$1
  cargo build --locked --bin backup-service
  work=$(mktemp -d)
  server_pid=
  trap stop_dev_server EXIT
  http_port=$(free_port)
  grpc_port=$(free_port)
  (
    cd "$work"
    exec env -u JWT_SECRET -u DATABASE_URL -u STORAGE_URL \
      HTTP_ADDR="127.0.0.1:$http_port" GRPC_ADDR="127.0.0.1:$grpc_port" \
      "$root/target/debug/backup-service" >"$work/stdout" 2>"$work/stderr"
  ) &
  server_pid=$!
  TOKEN=
  for _ in $(seq 1 100); do
    TOKEN=$(grep -Eo '[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+' "$work/stdout" | head -n 1 || true)
    if [ -n "$TOKEN" ] && curl -fsS "http://127.0.0.1:$http_port/healthz" >/dev/null 2>&1; then return 0; fi
    kill -0 "$server_pid" 2>/dev/null || { cat "$work/stderr" >&2; echo "server exited" >&2; exit 1; }
    sleep 0.2
  done
  [ -n "$TOKEN" ] || { cat "$work/stderr" >&2; echo "no dev token printed" >&2; exit 1; }
  echo "the server did not answer /healthz" >&2
  exit 1
}

stop_dev_server() {
  if [ -n "${server_pid:-}" ]; then kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
  [ -z "${work:-}" ] || rm -rf "$work"
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
