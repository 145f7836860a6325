#!/usr/bin/env bash
# Dump benchmark: backup-service (release build) against `pg_dump -Fp` on a
# ~1M-row loan-management database in a local PostgreSQL.
#
#   bench/dump.sh [--rounds N] [--reseed] [--no-build] [--no-p1]
#
# Environment:
#   ROUNDS            timed rounds (default 7; --rounds wins)
#   CARGO_TARGET_DIR  where the release binary is built (default <repo>/target)
#   PGHOST, PGPORT    PostgreSQL server (default 127.0.0.1:5432, user postgres, trust auth)
#   BENCH_DB          database to seed and dump (default bench_loans)
#   BENCH_SSLMODE     optional sslmode for both pg_dump and the server's
#                     DATABASE_URL (unset: both use their default, "prefer")
#   WARMUP            untimed warm-up rounds before the timed ones (default 1)
#
# Each round runs `pg_dump -Fp -f FILE` and `backup-service create` (wall clock
# around the client command, so it includes the CLI's process start and gRPC
# round trip), alternating which goes first. The server is long-running, as in
# production, so its connection pool is warm after the warm-up round.
# Outputs are deleted after every round. The database is kept afterwards.
#
# Targets: ours <= 0.8x pg_dump -Fp wall time (median of paired ratios),
# server peak RSS (VmHWM) < 64 MiB.

set -euo pipefail

BENCH_NAME=dump-bench
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ROUNDS="${ROUNDS:-7}"
WARMUP="${WARMUP:-1}"
RESEED=0
BUILD=1
P1_ROUND=1
while [ $# -gt 0 ]; do
    case "$1" in
        --rounds) ROUNDS="$2"; shift 2 ;;
        --rounds=*) ROUNDS="${1#*=}"; shift ;;
        --reseed) RESEED=1; shift ;;
        --no-build) BUILD=0; shift ;;
        --no-p1) P1_ROUND=0; shift ;;
        -h|--help) sed -n '2,24p' "$0"; exit 0 ;;
        *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
done
case "$ROUNDS" in ''|*[!0-9]*|0) echo "ROUNDS must be a positive integer" >&2; exit 2 ;; esac

bench_pg_env
bench_build "$BUILD"
bench_seed "$RESEED"

bench_workdir
RESULTS="$WORK/results.tsv"
: > "$RESULTS"
trap bench_cleanup EXIT
trap 'exit 130' INT TERM
bench_token

# ---------------------------------------------------------------- rounds
PG_OUT="$WORK/pg_dump.sql"

# run_pg ROUND: appends "pg ROUND seconds bytes"
run_pg() {
    local t0 t1 bytes
    t0=$(now)
    pg_dump -Fp -f "$PG_OUT" "$DB"
    t1=$(now)
    bytes=$(stat -c %s "$PG_OUT")
    rm -f "$PG_OUT"
    LAST_SECONDS=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')
    LAST_BYTES=$bytes
}

# run_ours ROUND: wall clock around the client, plus the server's CPU time
run_ours() {
    local t0 t1 c0 c1 w0 w1 json id size status rows file
    c0=$(proc_cpu_ticks "$SERVER_PID")
    w0=$(proc_wchar "$SERVER_PID")
    t0=$(now)
    json=$(BACKUP_TOKEN="$TOKEN" "$BIN" create --server "http://$GRPC" --description "dump bench $1")
    t1=$(now)
    c1=$(proc_cpu_ticks "$SERVER_PID")
    w1=$(proc_wchar "$SERVER_PID")
    read -r id size status rows < <(printf '%s' "$json" | python3 -c '
import json, sys
r = json.load(sys.stdin)
print(r["backupId"], r["size"], r["status"], sum(int(v) for v in r["rowCounts"].values()))')
    [ "$status" = COMPLETED ] || die "backup not completed: $json"
    [ "$rows" = "$EXPECTED_ROWS" ] || die "backup has $rows rows, expected $EXPECTED_ROWS: $json"
    file="$STORAGE/$id.json"
    [ -f "$file" ] || die "backup file $file missing"
    [ "$(stat -c %s "$file")" = "$size" ] || die "backup file size differs from reported size $size"
    rm -f "$file"
    LAST_SECONDS=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')
    LAST_BYTES=$size
    LAST_CPU=$(awk -v a="$c0" -v b="$c1" -v hz="$CLK_TCK" 'BEGIN { printf "%.2f", (b - a) / hz }')
    LAST_WRITTEN=$(( w1 - w0 ))
}

# paired_round KIND ROUND PG_FIRST: runs both, records one line of results
paired_round() {
    local kind="$1" round="$2" pg_first="$3" pg_s pg_b our_s our_b our_cpu our_w first
    if [ "$pg_first" = 1 ]; then
        run_pg; pg_s=$LAST_SECONDS; pg_b=$LAST_BYTES
        run_ours "$round"; our_s=$LAST_SECONDS; our_b=$LAST_BYTES; our_cpu=$LAST_CPU; our_w=$LAST_WRITTEN
        first=pg_dump
    else
        run_ours "$round"; our_s=$LAST_SECONDS; our_b=$LAST_BYTES; our_cpu=$LAST_CPU; our_w=$LAST_WRITTEN
        run_pg; pg_s=$LAST_SECONDS; pg_b=$LAST_BYTES
        first=ours
    fi
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$kind" "$round" "$first" "$pg_s" "$pg_b" "$our_s" "$our_b" "$our_cpu" "$our_w" >> "$RESULTS"
    log "$kind round $round ($first first): pg_dump ${pg_s}s, ours ${our_s}s (server CPU ${our_cpu}s)"
}

COMMIT=$(git -C "$REPO" describe --always --dirty 2>/dev/null || echo "${BENCH_COMMIT:-unknown}")
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
start_server 2 p2
RSS_START=$(proc_kib "$SERVER_PID" VmRSS)
HWM_START=$(proc_kib "$SERVER_PID" VmHWM)
for w in $(seq 1 "$WARMUP"); do
    log "warm-up round $w (untimed)"
    paired_round warmup "$w" 1
done
for r in $(seq 1 "$ROUNDS"); do
    paired_round main "$r" $(( r % 2 ))
done
RSS_END=$(proc_kib "$SERVER_PID" VmRSS)
HWM_END=$(proc_kib "$SERVER_PID" VmHWM)
SERVER_COMPLETED=$(grep -c 'backup completed' "$SERVER_LOG" || true)
SERVER_SECONDS=$(sed 's/\x1b\[[0-9;]*m//g' "$SERVER_LOG" | grep 'backup completed' | grep -o 'seconds=[0-9.]*' | cut -d= -f2 | tail -n "$ROUNDS" | tr '\n' ' ')
stop_server

P1_HWM=""
if [ "$P1_ROUND" = 1 ]; then
    start_server 1 p1
    log "DUMP_PARALLELISM=1: one untimed warm-up backup, then one paired round"
    run_ours p1-warmup
    paired_round p1 1 1
    P1_HWM=$(proc_kib "$SERVER_PID" VmHWM)
    stop_server
fi
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)

# ---------------------------------------------------------------- report
python3 - "$RESULTS" <<PY
import statistics, sys

rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1]) if l.strip()]
main = [r for r in rows if r[0] == "main"]
p1 = [r for r in rows if r[0] == "p1"]

def mbps(b, s):
    return int(b) / 1e6 / float(s)

print()
print("=== backup-service dump benchmark ===")
print("commit        : $COMMIT")
print("database      : $DB, $EXPECTED_ROWS rows in ${#TABLES[@]} tables, %.0f MB (%.0f MiB) in PostgreSQL $PG_VERSION (ssl=$SSL_ON, sslmode=${BENCH_SSLMODE:-default})" % ($DB_BYTES / 1e6, $DB_BYTES / 2**20))
print("machine       : $(nproc) CPUs; load average before $LOAD_BEFORE, after $LOAD_AFTER")
print("rounds        : ${ROUNDS} timed after ${WARMUP} warm-up; order alternates; MB = 10^6 bytes")
print()
print("round  first    pg_dump -Fp s   ours s   ratio   pg MB/s  ours MB/s  server CPU s")
ratios = []
for r in main:
    _, n, first, ps, pb, os_, ob, cpu, _w = r
    ratio = float(os_) / float(ps)
    ratios.append(ratio)
    print("%5s  %-7s  %13.3f  %7.3f  %5.2fx  %8.1f  %9.1f  %12s" % (n, first, float(ps), float(os_), ratio, mbps(pb, ps), mbps(ob, os_), cpu))
pg_t = [float(r[3]) for r in main]
our_t = [float(r[5]) for r in main]
pg_b = int(main[-1][4]); our_b = int(main[-1][6])
med_ratio = statistics.median(ratios)
print()
print("                       pg_dump -Fp     backup-service (P=2)")
print("median time (s)      %12.3f     %12.3f" % (statistics.median(pg_t), statistics.median(our_t)))
print("min / max time (s)   %5.3f / %5.3f    %5.3f / %5.3f" % (min(pg_t), max(pg_t), min(our_t), max(our_t)))
print("output size (MB)     %12.1f     %12.1f" % (pg_b / 1e6, our_b / 1e6))
print("MB/s at median time  %12.1f     %12.1f" % (pg_b / 1e6 / statistics.median(pg_t), our_b / 1e6 / statistics.median(our_t)))
print()
print("paired ratio ours/pg_dump: median %.2fx (min %.2fx, max %.2fx)" % (med_ratio, min(ratios), max(ratios)))
print("server-side job time (s, from log):", " ".join("%.3f" % float(x) for x in "$SERVER_SECONDS".split()))
written = statistics.median(int(r[8]) for r in main)
print("server bytes written per backup (write syscalls, incl. temp files): %.1f MB = %.2fx the backup size" % (written / 1e6, written / our_b))
if p1:
    _, n, first, ps, pb, os_, ob, cpu, w = p1[0]
    print("DUMP_PARALLELISM=1 round (info): pg_dump %.3f s, ours %.3f s, ratio %.2fx, server CPU %s s, written %.2fx, peak RSS %.1f MiB"
          % (float(ps), float(os_), float(os_) / float(ps), cpu, int(w) / int(ob), int("${P1_HWM:-0}") / 1024))
print()
print("server RSS after start      : %.1f MiB (VmHWM %.1f MiB)" % ($RSS_START / 1024, $HWM_START / 1024))
print("server RSS after all rounds : %.1f MiB" % ($RSS_END / 1024))
print("server peak RSS (VmHWM)     : %.1f MiB over %d backups" % ($HWM_END / 1024, $SERVER_COMPLETED))
print()
t1 = med_ratio <= 0.8
t2 = $HWM_END / 1024 < 64
print("target time <= 0.80x pg_dump -Fp : %s (%.2fx)" % ("MET" if t1 else "NOT MET", med_ratio))
print("target peak RSS < 64 MiB         : %s (%.1f MiB)" % ("MET" if t2 else "NOT MET", $HWM_END / 1024))
PY
