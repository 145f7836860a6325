#!/usr/bin/env bash
# Runs the README's curl examples as written against a server started the way
# the quick start starts it (dev mode, embedded SQLite + local storage under
# ./data), in a scratch directory. Fails on the first command that fails.
#
# Only two substitutions are made: the port (the README's 8080 may be taken
# on a shared machine; a free one is used instead) and the example backup id
# and page token, replaced by real ones from this run. Every curl also gets
# -sS --fail-with-body so an HTTP error fails the command.
# grpcurl examples are not run: no package registry reachable here ships
# grpcurl (it is a Go binary distributed as release downloads).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

log() { printf '==> %s\n' "$*"; }

# The quick start's `cargo run` with no JWT_SECRET: dev mode, token on stdout.
# shellcheck source=scripts/dev-server.sh
source "$root/scripts/dev-server.sh"
start_dev_server "$root"
export TOKEN

# The REST section's sh block, with backslash continuations joined.
commands=$(awk '
  /^## REST \(curl\)/ { section = 1; next }
  section && /^## / { exit }
  section && /^```sh/ { inblock = 1; next }
  inblock && /^```/ { exit }
  inblock { print }
' README.md | sed -e ':a' -e '/\\$/N; s/\\\n//; ta')
[ -n "$commands" ] || { echo "no curl block found in README.md" >&2; exit 1; }

example_id=backup_2026-03-11T12-00-00-000Z
backup_id=
next_page_token=
count=0
cd "$work"
while IFS= read -r line; do
  case "$line" in ''|'#'*) continue ;; esac
  line=${line//localhost:8080/127.0.0.1:$http_port}
  if [ -n "$backup_id" ]; then line=${line//$example_id/$backup_id}; fi
  line=${line//NEXT_PAGE_TOKEN/$next_page_token}
  case "$line" in
    curl\ *) line="curl -sS --fail-with-body ${line#curl }" ;;
  esac
  log "$line"
  if [[ "$line" =~ ^[A-Za-z_]+= ]]; then eval "$line"; continue; fi
  output=$(eval "$line") || { echo "$output" >&2; echo "README command failed: $line" >&2; exit 1; }
  printf '%s\n' "$output" | head -c 400; echo
  count=$((count + 1))
  # The first create names the backup the later examples use.
  if [ -z "$backup_id" ]; then
    backup_id=$(printf '%s' "$output" | grep -Eo '"backupId" *: *"[^"]+"' | head -n 1 | sed -E 's/.*"([^"]+)"$/\1/' || true)
  fi
  if [[ "$line" == *"pageSize=20\""* ]]; then
    next_page_token=$(printf '%s' "$output" | grep -Eo '"nextPageToken" *: *"[^"]*"' | sed -E 's/.*"([^"]*)"$/\1/' || true)
  fi
done <<<"$commands"
[ -n "$backup_id" ] || { echo "the README's create example made no backup" >&2; exit 1; }
# Both download forms saved the same, whole file.
cmp "$work/$backup_id".json* "$work/backup.download"
log "README curl commands: $count passed, 0 failed"
