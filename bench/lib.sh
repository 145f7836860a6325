# Shared by the benchmark scripts (bench/dump.sh, bench/restore.sh).
# Source it after `set -euo pipefail` and after setting BENCH_NAME (the log
# prefix); it defines constants and functions and changes nothing else
# until bench_pg_env is called.
#
#   bench_pg_env          PGHOST/PGPORT/PGUSER, DB, DATABASE_URL (+ BENCH_SSLMODE)
#   bench_build BUILD     sets TARGET_DIR, BIN; builds the release binary if BUILD=1
#   bench_seed RESEED     seeds $DB unless it already holds the current seed;
#                         sets DB_BYTES, SSL_ON, PG_VERSION
#   bench_workdir         makes WORK (removed by bench_cleanup)
#   bench_token           sets JWT_SECRET, TOKEN (an ADMIN token)
#   start_server P LABEL [STORAGE]   sets SERVER_PID, GRPC, SERVER_LOG, STORAGE
#   stop_server, bench_cleanup

BENCH_LIB_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$BENCH_LIB_DIR/.." && pwd)"
SEED_SQL="$REPO/bench/seed_loans.sql"
# Bump SEED_TAG whenever seed_loans.sql changes, so old seeds are replaced.
SEED_TAG="backup-service dump bench seed v1"
EXPECTED_ROWS=982142
# Parents before children.
TABLES=(Union Branch LoanType Setting User UnionMember Loan Guarantor LoanStatusHistory
        RepaymentScheduleItem Repayment LoanDocument AuditLog Notification)
BENCH_NAME="${BENCH_NAME:-bench}"

log() { printf '[%s %(%H:%M:%S)T] %s\n' "$BENCH_NAME" -1 "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
now() { echo "$EPOCHREALTIME"; }
# elapsed T0 T1: seconds between two now() stamps, 3 decimals
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }
psql_q() { psql -X -v ON_ERROR_STOP=1 -qAt "$@"; }

bench_pg_env() {
    PGHOST="${PGHOST:-127.0.0.1}"
    PGPORT="${PGPORT:-5432}"
    PGUSER=postgres
    DB="${BENCH_DB:-bench_loans}"
    export PGHOST PGPORT PGUSER
    unset PGDATABASE PGPASSWORD 2>/dev/null || true
    DATABASE_URL="postgres://$PGUSER@$PGHOST:$PGPORT/$DB"
    if [ -n "${BENCH_SSLMODE:-}" ]; then
        export PGSSLMODE="$BENCH_SSLMODE"
        DATABASE_URL="$DATABASE_URL?sslmode=$BENCH_SSLMODE"
    fi
}

# ---------------------------------------------------------------- build
bench_build() {
    TARGET_DIR="${CARGO_TARGET_DIR:-$REPO/target}"
    BIN="$TARGET_DIR/release/backup-service"
    if [ "$1" = 1 ]; then
        log "building release binary into $TARGET_DIR (a cold build takes several minutes)"
        (cd "$REPO" && CARGO_TARGET_DIR="$TARGET_DIR" cargo build --release --quiet --bin backup-service)
    fi
    [ -x "$BIN" ] || die "no binary at $BIN (build it or drop --no-build)"
}

# ---------------------------------------------------------------- seed
# count_rows [DATABASE]: total rows over TABLES (0 if unreadable)
count_rows() {
    local db="${1:-$DB}" sql="SELECT 0" t
    for t in "${TABLES[@]}"; do sql="$sql + (SELECT count(*) FROM \"$t\")"; done
    psql_q -d "$db" -c "$sql" 2>/dev/null || echo 0
}

seed_is_current() {
    local exists tag
    exists=$(psql_q -d postgres -c "SELECT 1 FROM pg_database WHERE datname = '$DB'")
    [ "$exists" = 1 ] || return 1
    tag=$(psql_q -d postgres -c "SELECT coalesce(shobj_description(oid, 'pg_database'), '') FROM pg_database WHERE datname = '$DB'")
    [ "$tag" = "$SEED_TAG" ] || return 1
    [ "$(count_rows)" = "$EXPECTED_ROWS" ]
}

bench_seed() {
    local rows
    if [ "$1" = 1 ] || ! seed_is_current; then
        log "seeding database $DB ($EXPECTED_ROWS rows; takes about half a minute)"
        psql_q -d postgres -c "DROP DATABASE IF EXISTS \"$DB\" WITH (FORCE)"
        psql_q -d postgres -c "CREATE DATABASE \"$DB\""
        psql_q -d "$DB" --single-transaction -f "$SEED_SQL"
        # Frozen, hinted and analysed, so the first reader pays no write-back.
        psql_q -d "$DB" -c "VACUUM (FREEZE, ANALYZE)"
        psql_q -d postgres -c "CHECKPOINT"
        rows=$(count_rows)
        [ "$rows" = "$EXPECTED_ROWS" ] || die "seeded $rows rows, expected $EXPECTED_ROWS"
        psql_q -d postgres -c "COMMENT ON DATABASE \"$DB\" IS '$SEED_TAG'"
    else
        log "reusing database $DB ($EXPECTED_ROWS rows; --reseed to rebuild)"
    fi
    DB_BYTES=$(psql_q -d postgres -c "SELECT pg_database_size('$DB')")
    SSL_ON=$(psql_q -d postgres -c "SHOW ssl")
    PG_VERSION=$(psql_q -d postgres -c "SHOW server_version")
}

# ---------------------------------------------------------------- server
SERVER_PID=""

bench_workdir() {
    WORK=$(mktemp -d "${TMPDIR:-/tmp}/backup-$BENCH_NAME.XXXXXX")
}

stop_server() {
    if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill -TERM "$SERVER_PID" 2>/dev/null || true
        for _ in $(seq 1 50); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    SERVER_PID=""
}

bench_cleanup() {
    stop_server
    if [ -n "${WORK:-}" ]; then rm -rf "$WORK"; fi
}

bench_token() {
    JWT_SECRET=$(od -An -N24 -tx1 /dev/urandom | tr -d ' \n')
    TOKEN=$(JWT_SECRET="$JWT_SECRET" "$BIN" token --role ADMIN --ttl 2h)
}

proc_kib() { awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/status"; }
proc_cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
proc_wchar() { awk '$1 == "wchar:" { print $2 }' "/proc/$1/io"; }
CLK_TCK=$(getconf CLK_TCK)

# start_server PARALLELISM LABEL [STORAGE]: sets SERVER_PID, GRPC, SERVER_LOG, STORAGE
start_server() {
    local parallelism="$1" label="$2"
    STORAGE="${3:-$WORK/storage-$label}"
    SERVER_LOG="$WORK/server-$label.log"
    mkdir -p "$STORAGE"
    DATABASE_URL="$DATABASE_URL" STORAGE_URL="$STORAGE" \
    GRPC_ADDR=127.0.0.1:0 HTTP_ADDR=127.0.0.1:0 JWT_SECRET="$JWT_SECRET" \
    DUMP_PARALLELISM="$parallelism" LOG_FORMAT=text RUST_LOG=info NO_COLOR=1 \
        "$BIN" serve >"$SERVER_LOG.out" 2>"$SERVER_LOG" &
    SERVER_PID=$!
    local line=""
    for _ in $(seq 1 300); do
        line=$(grep -m1 'listening' "$SERVER_LOG" 2>/dev/null || true)
        [ -n "$line" ] && break
        kill -0 "$SERVER_PID" 2>/dev/null || { cat "$SERVER_LOG" >&2; die "server exited during start"; }
        sleep 0.1
    done
    [ -n "$line" ] || { cat "$SERVER_LOG" >&2; die "server did not log 'listening' within 30 s"; }
    # Strip ANSI colour codes in case the logger adds them anyway.
    line=$(printf '%s' "$line" | sed 's/\x1b\[[0-9;]*m//g')
    GRPC=$(printf '%s' "$line" | grep -o 'grpc_addr=[^ ]*' | head -1 | cut -d= -f2)
    [ -n "$GRPC" ] || die "no grpc_addr= in: $line"
    log "server ($label, DUMP_PARALLELISM=$parallelism) pid $SERVER_PID on $GRPC"
}
