#!/usr/bin/env bash
# Restore benchmark: `backup-service restore` (release build, through a
# running server) against `pg_restore --data-only` of a `pg_dump -Fc --data-only` archive,
# both loading the ~1M-row loan database (bench/seed_loans.sql) into a
# schema-only copy of it that has its indexes and foreign keys in place.
#
#   bench/restore.sh [--rounds N] [--reseed] [--no-build] [--keep-target]
#
# Environment:
#   ROUNDS            timed rounds (default 7; --rounds wins)
#   WARMUP            untimed warm-up rounds before the timed ones (default 1)
#   CARGO_TARGET_DIR  where the release binary is built (default <repo>/target)
#   PGHOST, PGPORT    PostgreSQL server (default 127.0.0.1:5432, user postgres, trust auth)
#   BENCH_DB          source database, seeded if needed (default bench_loans)
#   TARGET_DB         restore target, dropped and re-created from
#                     `pg_dump --schema-only BENCH_DB` on every run
#                     (default bench_restore_target; dropped at exit unless --keep-target)
#   BENCH_SSLMODE     optional sslmode for psql/pg_* and the server's URLs
#   BACKUP_COMPRESSION, BACKUP_ENCRYPTION_KEY  passed through to the server
#                     (default: its own, i.e. no compression, no encryption)
#   RSS_GROWTH_LIMIT_MIB  allowed growth of the server's peak RSS over the
#                     restores, for the "memory flat" target (default 32)
#
# One backup is taken with the server and one `pg_dump -Fc --data-only`
# archive is written (data-only, so its tables are in foreign-key order); the server is then restarted on the same storage, so its peak RSS
# reflects restores only, and maintenance mode is turned on once. Each round
# empties the target (one TRUNCATE of all tables, then CHECKPOINT; not timed)
# before each of the two restores, and alternates which goes first:
#   pg_restore --data-only -d TARGET_DB dump.fc
#   backup-service restore ID --target-url URL --skip-safety-backup
# Ours is timed as wall clock around the CLI (process start, gRPC, the
# server's verification read of the whole file, then the load in one
# transaction). After every load the target's per-table row counts are
# checked against the backup's. Each round also times, for information, a
# dry run (`restore --dry-run`: the verification read and schema check only).
#
# Targets: ours <= 1.0x pg_restore wall time (median of paired ratios);
# memory flat: server VmHWM after the rounds <= VmHWM after start + RSS_GROWTH_LIMIT_MIB.

set -euo pipefail

BENCH_NAME=restore-bench
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ROUNDS="${ROUNDS:-7}"
WARMUP="${WARMUP:-1}"
RSS_GROWTH_LIMIT_MIB="${RSS_GROWTH_LIMIT_MIB:-32}"
RESEED=0
BUILD=1
KEEP_TARGET=0
while [ $# -gt 0 ]; do
    case "$1" in
        --rounds) ROUNDS="$2"; shift 2 ;;
        --rounds=*) ROUNDS="${1#*=}"; shift ;;
        --reseed) RESEED=1; shift ;;
        --no-build) BUILD=0; shift ;;
        --keep-target) KEEP_TARGET=1; shift ;;
        -h|--help) sed -n '2,38p' "$0"; exit 0 ;;
        *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
done
case "$ROUNDS" in ''|*[!0-9]*|0) echo "ROUNDS must be a positive integer" >&2; exit 2 ;; esac
case "$WARMUP" in ''|*[!0-9]*) echo "WARMUP must be a non-negative integer" >&2; exit 2 ;; esac

bench_pg_env
TARGET_DB="${TARGET_DB:-bench_restore_target}"
[ "$TARGET_DB" != "$DB" ] || die "TARGET_DB must differ from BENCH_DB"
TARGET_URL="postgres://$PGUSER@$PGHOST:$PGPORT/$TARGET_DB"
[ -z "${BENCH_SSLMODE:-}" ] || TARGET_URL="$TARGET_URL?sslmode=$BENCH_SSLMODE"

bench_build "$BUILD"
bench_seed "$RESEED"

bench_workdir
RESULTS="$WORK/results.tsv"
: > "$RESULTS"
restore_cleanup() {
    bench_cleanup
    if [ "$KEEP_TARGET" = 0 ] && [ -n "${TARGET_CREATED:-}" ]; then
        psql_q -d postgres -c "DROP DATABASE IF EXISTS \"$TARGET_DB\" WITH (FORCE)" 2>/dev/null || true
    fi
}
trap restore_cleanup EXIT
trap 'exit 130' INT TERM
bench_token

# ---------------------------------------------------------------- target
log "creating $TARGET_DB from pg_dump --schema-only $DB"
PGOPTIONS="-c client_min_messages=warning" psql_q -d postgres -c "DROP DATABASE IF EXISTS \"$TARGET_DB\" WITH (FORCE)"
psql_q -d postgres -c "CREATE DATABASE \"$TARGET_DB\""
TARGET_CREATED=1
pg_dump --schema-only --no-owner "$DB" | psql_q -d "$TARGET_DB" >/dev/null
TARGET_INDEXES=$(psql_q -d "$TARGET_DB" -c "SELECT count(*) FROM pg_indexes WHERE schemaname = 'public'")
TARGET_FKS=$(psql_q -d "$TARGET_DB" -c "SELECT count(*) FROM pg_constraint WHERE contype = 'f'")
[ "$(count_rows "$TARGET_DB")" = 0 ] || die "$TARGET_DB is not empty after creation"

TRUNCATE_SQL="TRUNCATE TABLE"
sep=" "
for t in "${TABLES[@]}"; do TRUNCATE_SQL="$TRUNCATE_SQL$sep\"$t\""; sep=", "; done

# Not timed: both restores start from empty tables with the same indexes and
# a fresh checkpoint, so neither pays for the other's dirty pages.
empty_target() {
    psql_q -d "$TARGET_DB" -c "$TRUNCATE_SQL"
    psql_q -d postgres -c "CHECKPOINT"
}

# table_counts DATABASE: "table<TAB>count" per table
table_counts() {
    local sql="" t
    for t in "${TABLES[@]}"; do
        [ -z "$sql" ] || sql="$sql UNION ALL "
        sql="${sql}SELECT '$t', count(*) FROM \"$t\""
    done
    psql_q -F $'\t' -d "$1" -c "$sql"
}

# ---------------------------------------------------------------- sources
start_server 2 backup
log "taking one backup with the server"
t0=$(now)
BACKUP_JSON=$(BACKUP_TOKEN="$TOKEN" "$BIN" create --server "http://$GRPC" --description "restore bench")
t1=$(now)
CREATE_SECONDS=$(elapsed "$t0" "$t1")
printf '%s' "$BACKUP_JSON" > "$WORK/backup.json"
read -r BACKUP_ID BACKUP_SIZE BACKUP_STATUS BACKUP_ROWS < <(python3 -c '
import json, sys
r = json.load(open(sys.argv[1]))
print(r["backupId"], r["size"], r["status"], sum(int(v) for v in r["rowCounts"].values()))' "$WORK/backup.json")
[ "$BACKUP_STATUS" = COMPLETED ] || die "backup not completed: $BACKUP_JSON"
[ "$BACKUP_ROWS" = "$EXPECTED_ROWS" ] || die "backup has $BACKUP_ROWS rows, expected $EXPECTED_ROWS"
HWM_BACKUP=$(proc_kib "$SERVER_PID" VmHWM)
stop_server

DUMP="$WORK/dump.fc"
# --data-only at dump time: only then does pg_dump order the table data
# parents first, so that the plain pg_restore below passes the target's
# foreign keys (a full archive lists table data by name, and without
# --disable-triggers children would be loaded before their parents).
log "writing pg_dump -Fc --data-only archive"
t0=$(now)
pg_dump -Fc --data-only -f "$DUMP" "$DB"
t1=$(now)
PGDUMP_SECONDS=$(elapsed "$t0" "$t1")
DUMP_SIZE=$(stat -c %s "$DUMP")

# A fresh server on the same storage: its peak RSS is the restores' alone.
start_server 2 restore "$STORAGE"
BACKUP_FILE="$STORAGE/$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["filename"])' "$WORK/backup.json")"
[ -f "$BACKUP_FILE" ] || die "backup file $BACKUP_FILE missing"
BACKUP_TOKEN="$TOKEN" "$BIN" maintenance on --server "http://$GRPC" --reason "restore bench" >/dev/null
RSS_START=$(proc_kib "$SERVER_PID" VmRSS)
HWM_START=$(proc_kib "$SERVER_PID" VmHWM)

# ---------------------------------------------------------------- rounds
# check_counts LABEL: the target's per-table counts equal the backup's
check_counts() {
    table_counts "$TARGET_DB" > "$WORK/counts.tsv"
    python3 - "$WORK/backup.json" "$WORK/counts.tsv" "$1" <<'PY' || die "row counts differ after $1"
import json, sys
want = {k.split(".", 1)[-1].strip('"'): int(v) for k, v in json.load(open(sys.argv[1]))["rowCounts"].items()}
got = {}
for line in open(sys.argv[2]):
    t, n = line.rstrip("\n").split("\t")
    got[t] = int(n)
if want != got:
    bad = sorted(set(want) | set(got))
    for t in bad:
        if want.get(t) != got.get(t):
            print("  %s: backup %s, target %s" % (t, want.get(t), got.get(t)), file=sys.stderr)
    sys.exit(1)
PY
}

run_pg() {
    local t0 t1
    empty_target
    t0=$(now)
    pg_restore --data-only -d "$TARGET_DB" "$DUMP" || die "pg_restore failed"
    t1=$(now)
    LAST_SECONDS=$(elapsed "$t0" "$t1")
    if [ "$1" = check ]; then check_counts "pg_restore"; fi
}

# Stamps each progress line of the CLI with the time it arrived.
stamp_lines() { local l; while IFS= read -r l; do printf '%s %s\n' "$EPOCHREALTIME" "$l"; done; }

# run_ours LABEL: sets LAST_SECONDS, LAST_CPU, LAST_PROGRESS (stamped CLI progress)
run_ours() {
    local t0 t1 c0 c1 json phase
    empty_target
    LAST_PROGRESS="$WORK/progress-$1.log"
    c0=$(proc_cpu_ticks "$SERVER_PID")
    t0=$(now)
    echo "$t0 START" > "$LAST_PROGRESS"
    # stdout to a file, progress (stderr) through the stamper.
    if ! BACKUP_TOKEN="$TOKEN" "$BIN" restore "$BACKUP_ID" --server "http://$GRPC" \
        --target-url "$TARGET_URL" --skip-safety-backup 2>&1 >"$WORK/restore.json" \
        | stamp_lines >> "$LAST_PROGRESS"; then
        cat "$LAST_PROGRESS" >&2
        die "our restore failed"
    fi
    t1=$(now)
    c1=$(proc_cpu_ticks "$SERVER_PID")
    echo "$t1 END" >> "$LAST_PROGRESS"
    json=$(cat "$WORK/restore.json")
    phase=$(printf '%s' "$json" | python3 -c 'import json, sys; print(json.load(sys.stdin)["phase"].removeprefix("RESTORE_PHASE_"))')
    [ "$phase" = COMMITTED ] || die "restore ended in phase $phase: $json"
    LAST_SECONDS=$(elapsed "$t0" "$t1")
    LAST_CPU=$(awk -v a="$c0" -v b="$c1" -v hz="$CLK_TCK" 'BEGIN { printf "%.2f", (b - a) / hz }')
    check_counts "our restore"
}

run_dry() {
    local t0 t1 json phase
    t0=$(now)
    json=$(BACKUP_TOKEN="$TOKEN" "$BIN" restore "$BACKUP_ID" --server "http://$GRPC" \
        --target-url "$TARGET_URL" --dry-run 2>/dev/null)
    t1=$(now)
    phase=$(printf '%s' "$json" | python3 -c 'import json, sys; print(json.load(sys.stdin)["phase"].removeprefix("RESTORE_PHASE_"))')
    [ "$phase" = DRY_RUN_PASSED ] || die "dry run ended in phase $phase: $json"
    LAST_SECONDS=$(elapsed "$t0" "$t1")
}

# paired_round KIND ROUND PG_FIRST
paired_round() {
    local kind="$1" round="$2" pg_first="$3" pg_s our_s our_cpu dry_s first check=no hwm
    [ "$round" = 1 ] && check=check
    if [ "$pg_first" = 1 ]; then
        run_pg "$check"; pg_s=$LAST_SECONDS
        run_ours "$kind-$round"; our_s=$LAST_SECONDS; our_cpu=$LAST_CPU
        first=pg_restore
    else
        run_ours "$kind-$round"; our_s=$LAST_SECONDS; our_cpu=$LAST_CPU
        run_pg "$check"; pg_s=$LAST_SECONDS
        first=ours
    fi
    run_dry; dry_s=$LAST_SECONDS
    hwm=$(proc_kib "$SERVER_PID" VmHWM)
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$kind" "$round" "$first" "$pg_s" "$our_s" "$our_cpu" "$dry_s" "$hwm" "$LAST_PROGRESS" >> "$RESULTS"
    log "$kind round $round ($first first): pg_restore ${pg_s}s, ours ${our_s}s (server CPU ${our_cpu}s), dry run ${dry_s}s, server VmHWM $((hwm / 1024)) MiB"
}

COMMIT=$(git -C "$REPO" describe --always --dirty 2>/dev/null || echo "${BENCH_COMMIT:-unknown}")
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
for w in $(seq 1 "$WARMUP"); do
    log "warm-up round $w (untimed)"
    paired_round warmup "$w" 1
done
for r in $(seq 1 "$ROUNDS"); do
    paired_round main "$r" $(( r % 2 ))
done
RSS_END=$(proc_kib "$SERVER_PID" VmRSS)
HWM_END=$(proc_kib "$SERVER_PID" VmHWM)
RESTORES=$(grep -c 'restore committed' "$SERVER_LOG" || true)
BACKUP_TOKEN="$TOKEN" "$BIN" maintenance off --server "http://$GRPC" >/dev/null
stop_server
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)

# ---------------------------------------------------------------- report
python3 - "$RESULTS" <<PY
import statistics, sys

rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1]) if l.strip()]
main = [r for r in rows if r[0] == "main"]
MiB = 1024.0

def phases(path):
    """Splits one of our restores by the CLI's stamped progress lines."""
    first = {}
    start = end = None
    for line in open(path):
        parts = line.split()
        if len(parts) < 2:
            continue
        t, what = float(parts[0]), parts[1].removeprefix("RESTORE_PHASE_")
        if what == "START": start = t
        elif what == "END": end = t
        else: first.setdefault(what, t)
    v, s, l, c = (first.get(k) for k in ("VERIFYING", "CHECKING_SCHEMA", "LOADING", "COMMITTED"))
    if None in (start, end, v, s, l, c):
        return None
    return {"until verify": v - start, "verify": s - v, "schema": l - s, "load+commit": c - l, "after": end - c}

print()
print("=== backup-service restore benchmark ===")
print("commit        : $COMMIT")
print("source        : $DB, $EXPECTED_ROWS rows in ${#TABLES[@]} tables, %.0f MB in PostgreSQL $PG_VERSION (ssl=$SSL_ON, sslmode=${BENCH_SSLMODE:-default})" % ($DB_BYTES / 1e6))
print("target        : $TARGET_DB, schema-only copy with $TARGET_INDEXES indexes and $TARGET_FKS foreign keys; emptied (TRUNCATE + CHECKPOINT, untimed) before every restore")
print("inputs        : our backup %.1f MB (created in %.2f s), pg_dump -Fc --data-only archive %.1f MB (written in %.2f s)" % ($BACKUP_SIZE / 1e6, $CREATE_SECONDS, $DUMP_SIZE / 1e6, $PGDUMP_SECONDS))
print("machine       : $(nproc) CPUs; load average before $LOAD_BEFORE, after $LOAD_AFTER")
print("rounds        : ${ROUNDS} timed after ${WARMUP} warm-up; order alternates; row counts checked after every one of ours")
print()
print("round  first       pg_restore s   ours s   ratio   server CPU s   dry run s   server VmHWM MiB")
ratios = []
for r in main:
    _, n, first, ps, os_, cpu, dry, hwm, _p = r
    ratio = float(os_) / float(ps)
    ratios.append(ratio)
    print("%5s  %-10s  %12.3f  %7.3f  %5.2fx  %13s  %10.3f  %17.1f" % (n, first, float(ps), float(os_), ratio, cpu, float(dry), int(hwm) / MiB))
pg_t = [float(r[3]) for r in main]
our_t = [float(r[4]) for r in main]
dry_t = [float(r[6]) for r in main]
cpu_t = [float(r[5]) for r in main]
med_ratio = statistics.median(ratios)
print()
print("                       pg_restore        backup-service    (dry run: verify only)")
print("median time (s)      %12.3f      %12.3f      %12.3f" % (statistics.median(pg_t), statistics.median(our_t), statistics.median(dry_t)))
print("min / max time (s)   %5.3f / %5.3f     %5.3f / %5.3f     %5.3f / %5.3f" % (min(pg_t), max(pg_t), min(our_t), max(our_t), min(dry_t), max(dry_t)))
print("rows/s at median     %12.0f      %12.0f" % ($EXPECTED_ROWS / statistics.median(pg_t), $EXPECTED_ROWS / statistics.median(our_t)))
print()
print("paired ratio ours/pg_restore: median %.2fx (min %.2fx, max %.2fx)" % (med_ratio, min(ratios), max(ratios)))
print("dry run (verification read + schema check) = %.0f%% of our median restore time; server CPU per restore median %.2f s"
      % (100 * statistics.median(dry_t) / statistics.median(our_t), statistics.median(cpu_t)))
split = [p for p in (phases(r[8]) for r in main) if p]
if split:
    keys = list(split[0])
    print("our restore by phase (median s, from the CLI's progress stream): " +
          ", ".join("%s %.3f" % (k, statistics.median(p[k] for p in split)) for k in keys))
print()
growth = ($HWM_END - $HWM_START) / MiB
print("server RSS after start      : %.1f MiB (VmHWM %.1f MiB); the backup-taking server peaked at %.1f MiB" % ($RSS_START / MiB, $HWM_START / MiB, $HWM_BACKUP / MiB))
print("server RSS after all rounds : %.1f MiB" % ($RSS_END / MiB))
print("server peak RSS (VmHWM)     : %.1f MiB over %d restores and %d dry runs (+%.1f MiB over start; backup file %.0f MiB)"
      % ($HWM_END / MiB, $RESTORES, len(rows), growth, $BACKUP_SIZE / 2**20))
print()
t1 = med_ratio <= 1.0
t2 = growth <= $RSS_GROWTH_LIMIT_MIB
print("target time <= 1.00x pg_restore       : %s (%.2fx)" % ("MET" if t1 else "NOT MET", med_ratio))
print("target memory flat (+<= $RSS_GROWTH_LIMIT_MIB MiB VmHWM) : %s (+%.1f MiB)" % ("MET" if t2 else "NOT MET", growth))
PY
