#!/usr/bin/env bash
# Compression benchmark: backup-service (release build) writing the same
# ~1M-row database with each compression (none, gzip, zstd), side by side
# with `pg_dump -Fc` (and `pg_dump -Fp` for reference), in one run.
#
#   bench/compression.sh [--rounds N] [--reseed] [--no-build]
#
# Environment:
#   ROUNDS            timed rounds (default 7; --rounds wins)
#   WARMUP            untimed warm-up rounds before the timed ones (default 1)
#   CARGO_TARGET_DIR  where the release binary is built (default <repo>/target)
#   PGHOST, PGPORT    PostgreSQL server (default 127.0.0.1:5432, user postgres, trust auth)
#   BENCH_DB          database to seed and dump (default bench_loans)
#   BENCH_SSLMODE     optional sslmode for pg_dump and the server's DATABASE_URL
#   DUMP_PARALLELISM  the server's parallel dump connections (default 2, as in bench/dump.sh)
#
# Every round runs five contenders, each timed as wall clock around one
# command (for ours the CLI, so process start and the gRPC round trip count):
#   pg_dump -Fc -f FILE DB                       (its default zlib level)
#   pg_dump -Fp -f FILE DB
#   backup-service create --compression none|gzip|zstd
# Odd rounds run them in the order  -Fc, zstd, -Fp, gzip, none  and even
# rounds in the reverse order, so every pair that is compared below swaps
# places from round to round. One long-running server takes all backups
# (its connection pool is warm after the warm-up round); BACKUP_COMPRESSION
# and encryption settings are cleared for it, every backup names its
# compression. Outputs are checked (status, row count, file name, size, magic
# bytes; in the warm-up also `backup-service verify` and `pg_restore -l`) and
# deleted after every round. The database is kept afterwards.
#
# Peak RSS: before each of our backups the server's VmHWM is reset
# (`echo 5 > /proc/PID/clear_refs`) and read afterwards, so each backup's own
# peak is known; where the reset is not allowed, the values are cumulative.
#
# Reported: per contender median wall time, output size, CPU (server CPU for
# ours, pg_dump's own user+sys for pg_dump) and our per-backup peak RSS; then
# medians of per-round paired ratios:
#   zstd / pg_dump -Fc   time (target <= 0.70x) and size (target <= 0.50x)
#   gzip / pg_dump -Fc   time and size (information)
#   none / pg_dump -Fp   time and size (information)

set -euo pipefail

# shellcheck disable=SC2034  # read by lib.sh
BENCH_NAME=compression-bench
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ROUNDS="${ROUNDS:-7}"
WARMUP="${WARMUP:-1}"
PARALLELISM="${DUMP_PARALLELISM:-2}"
RESEED=0
BUILD=1
while [ $# -gt 0 ]; do
    case "$1" in
        --rounds) ROUNDS="$2"; shift 2 ;;
        --rounds=*) ROUNDS="${1#*=}"; shift ;;
        --reseed) RESEED=1; shift ;;
        --no-build) BUILD=0; shift ;;
        -h|--help) sed -n '2,40p' "$0"; exit 0 ;;
        *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
done
case "$ROUNDS" in ''|*[!0-9]*|0) echo "ROUNDS must be a positive integer" >&2; exit 2 ;; esac
case "$WARMUP" in ''|*[!0-9]*) echo "WARMUP must be a non-negative integer" >&2; exit 2 ;; esac
case "$PARALLELISM" in ''|*[!0-9]*|0) echo "DUMP_PARALLELISM must be a positive integer" >&2; exit 2 ;; esac

# The server inherits the environment: keep the comparison to compression alone.
unset BACKUP_COMPRESSION BACKUP_ENCRYPTION_KEY BACKUP_ENCRYPTION_KEY_FILE BACKUP_DECRYPTION_KEYS \
      BACKUP_SCHEDULE 2>/dev/null || true

bench_pg_env
bench_build "$BUILD"
bench_seed "$RESEED"

bench_workdir
RESULTS="$WORK/results.tsv"
: > "$RESULTS"
trap bench_cleanup EXIT
trap 'exit 130' INT TERM
bench_token

GNU_TIME=""
if [ -x /usr/bin/time ] && /usr/bin/time -f '%U' -o /dev/null true 2>/dev/null; then GNU_TIME=/usr/bin/time; fi

# ---------------------------------------------------------------- runs
# Each run sets LAST_SECONDS, LAST_BYTES, LAST_CPU ("-" if unknown),
# LAST_HWM (KiB, ours only) and LAST_JOB (server-side job seconds, ours only).

# run_pg FORMAT(c|p) CHECK(check|no)
run_pg() {
    local fmt="$1" out="$WORK/pg_dump.F$1" t0 t1
    t0=$(now)
    if [ -n "$GNU_TIME" ]; then
        "$GNU_TIME" -f '%U %S' -o "$WORK/pg_time" pg_dump "-F$fmt" -f "$out" "$DB"
    else
        pg_dump "-F$fmt" -f "$out" "$DB"
    fi
    t1=$(now)
    LAST_SECONDS=$(elapsed "$t0" "$t1")
    LAST_BYTES=$(stat -c %s "$out")
    LAST_CPU="-"
    if [ -n "$GNU_TIME" ]; then
        LAST_CPU=$(awk 'NF == 2 { u = $1; s = $2 } END { printf "%.2f", u + s }' "$WORK/pg_time")
    fi
    LAST_HWM="-"; LAST_JOB="-"
    if [ "$2" = check ] && [ "$fmt" = c ]; then
        pg_restore -l "$out" >/dev/null || die "pg_restore -l cannot read the -Fc archive"
    fi
    rm -f "$out"
}

# magic_of FILE: the first four bytes in hex
magic_of() { od -An -N4 -tx1 "$1" | tr -d ' \n'; }

HWM_RESETS=1
reset_hwm() {
    if [ "$HWM_RESETS" = 1 ] && ! { echo 5 > "/proc/$SERVER_PID/clear_refs"; } 2>/dev/null; then
        HWM_RESETS=0
        log "cannot reset VmHWM through /proc/$SERVER_PID/clear_refs: peak RSS values are cumulative"
    fi
}

# run_ours COMPRESSION LABEL CHECK(check|no)
run_ours() {
    local comp="$1" t0 t1 c0 c1 json id size status rows filename file want_ext magic done0 done1 v
    done0=$(grep -c 'backup completed' "$SERVER_LOG" || true)
    reset_hwm
    c0=$(proc_cpu_ticks "$SERVER_PID")
    t0=$(now)
    json=$(BACKUP_TOKEN="$TOKEN" "$BIN" create --server "http://$GRPC" --compression "$comp" \
        --description "compression bench $2 $comp")
    t1=$(now)
    c1=$(proc_cpu_ticks "$SERVER_PID")
    LAST_HWM=$(proc_kib "$SERVER_PID" VmHWM)
    read -r id size status rows filename < <(printf '%s' "$json" | python3 -c '
import json, sys
r = json.load(sys.stdin)
print(r["backupId"], r["size"], r["status"], sum(int(v) for v in r["rowCounts"].values()), r["filename"])')
    [ "$status" = COMPLETED ] || die "$comp backup not completed: $json"
    [ "$rows" = "$EXPECTED_ROWS" ] || die "$comp backup has $rows rows, expected $EXPECTED_ROWS: $json"
    case "$comp" in
        none) want_ext=.json; magic="" ;;
        gzip) want_ext=.json.gz; magic=1f8b ;;
        zstd) want_ext=.json.zst; magic=28b52ffd ;;
    esac
    [ "$filename" = "$id$want_ext" ] || die "$comp backup stored as $filename, expected $id$want_ext"
    file="$STORAGE/$filename"
    [ -f "$file" ] || die "backup file $file missing"
    [ "$(stat -c %s "$file")" = "$size" ] || die "backup file size differs from reported size $size"
    if [ -n "$magic" ]; then
        case "$(magic_of "$file")" in "$magic"*) ;; *) die "$file does not start with the $comp magic $magic" ;; esac
    else
        [ "$(head -c1 "$file")" = "{" ] || die "$file does not start with {"
    fi
    if [ "$3" = check ]; then
        v=$(BACKUP_TOKEN="$TOKEN" "$BIN" verify "$id" --server "http://$GRPC") || die "verify failed for the $comp backup: $v"
        log "verified the $comp backup $id"
    fi
    rm -f "$file"
    done1=$(grep -c 'backup completed' "$SERVER_LOG" || true)
    LAST_JOB="-"
    if [ "$done1" = $(( done0 + 1 )) ]; then
        LAST_JOB=$(sed 's/\x1b\[[0-9;]*m//g' "$SERVER_LOG" | grep 'backup completed' | tail -1 \
            | grep -o 'seconds=[0-9.]*' | cut -d= -f2)
        LAST_JOB="${LAST_JOB:--}"
    fi
    LAST_SECONDS=$(elapsed "$t0" "$t1")
    LAST_BYTES=$size
    LAST_CPU=$(awk -v a="$c0" -v b="$c1" -v hz="$CLK_TCK" 'BEGIN { printf "%.2f", (b - a) / hz }')
}

CONTENDERS=(pg_fc zstd pg_fp gzip none)

# run_one NAME LABEL CHECK
run_one() {
    case "$1" in
        pg_fc) run_pg c "$3" ;;
        pg_fp) run_pg p "$3" ;;
        *) run_ours "$1" "$2" "$3" ;;
    esac
}

# bench_round KIND ROUND FORWARD(1|0): runs all contenders, one result line each
bench_round() {
    local kind="$1" round="$2" forward="$3" order=() pos=0 name check=no summary=""
    if [ "$forward" = 1 ]; then
        order=("${CONTENDERS[@]}")
    else
        for (( i = ${#CONTENDERS[@]} - 1; i >= 0; i-- )); do order+=("${CONTENDERS[$i]}"); done
    fi
    [ "$kind" = warmup ] && check=check
    for name in "${order[@]}"; do
        pos=$(( pos + 1 ))
        run_one "$name" "$kind-$round" "$check"
        printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$kind" "$round" "$pos" "$name" \
            "$LAST_SECONDS" "$LAST_BYTES" "$LAST_CPU" "$LAST_HWM" "$LAST_JOB" >> "$RESULTS"
        summary="$summary $name ${LAST_SECONDS}s"
    done
    log "$kind round $round:$summary"
}

COMMIT=$(git -C "$REPO" describe --always --dirty 2>/dev/null || echo "${BENCH_COMMIT:-unknown}")
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
start_server "$PARALLELISM" compression
RSS_START=$(proc_kib "$SERVER_PID" VmRSS)
HWM_START=$(proc_kib "$SERVER_PID" VmHWM)
for w in $(seq 1 "$WARMUP"); do
    log "warm-up round $w (untimed; outputs verified)"
    bench_round warmup "$w" 1
done
for r in $(seq 1 "$ROUNDS"); do
    bench_round main "$r" $(( r % 2 ))
done
RSS_END=$(proc_kib "$SERVER_PID" VmRSS)
SERVER_COMPLETED=$(grep -c 'backup completed' "$SERVER_LOG" || true)
stop_server
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)

# ---------------------------------------------------------------- report
python3 - "$RESULTS" <<PY
import statistics, sys

rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1]) if l.strip()]
main = [r for r in rows if r[0] == "main"]
names = ["pg_fc", "pg_fp", "none", "gzip", "zstd"]
label = {"pg_fc": "pg_dump -Fc", "pg_fp": "pg_dump -Fp", "none": "ours none",
         "gzip": "ours gzip", "zstd": "ours zstd"}
# per round: name -> (seconds, bytes, cpu, hwm KiB, job seconds, position)
rounds = {}
for _, n, pos, name, s, b, cpu, hwm, job in main:
    rounds.setdefault(int(n), {})[name] = (float(s), int(b), cpu, hwm, job, int(pos))
med = statistics.median

def col(name, i):
    return [rounds[n][name][i] for n in sorted(rounds)]

def num(xs):
    return [float(x) for x in xs if x != "-"]

def fmt_med(xs, f="%.2f"):
    xs = num(xs)
    return f % med(xs) if xs else "-"

print()
print("=== backup-service compression benchmark ===")
print("commit        : $COMMIT")
print("database      : $DB, $EXPECTED_ROWS rows in ${#TABLES[@]} tables, %.0f MB in PostgreSQL $PG_VERSION (ssl=$SSL_ON, sslmode=${BENCH_SSLMODE:-default})" % ($DB_BYTES / 1e6))
print("ours          : DUMP_PARALLELISM=$PARALLELISM; gzip = flate2 fast level, zstd = level 1 with a 32 MiB long-distance window, both in the column-block layout; pg_dump -Fc at its default zlib level")
print("machine       : $(nproc) CPUs; load average before $LOAD_BEFORE, after $LOAD_AFTER")
print("rounds        : ${ROUNDS} timed after ${WARMUP} warm-up; odd rounds -Fc, zstd, -Fp, gzip, none, even rounds reversed; MB = 10^6 bytes")
print()
print("wall time (s) per round")
print("round  " + "  ".join("%11s" % label[k] for k in names))
for n in sorted(rounds):
    print("%5d  " % n + "  ".join("%11.3f" % rounds[n][k][0] for k in names))
print()
print("%-12s %9s %15s %9s %9s %7s %10s %11s" % ("", "median s", "min / max s", "size MB", "vs none", "CPU s", "job s", "peak RSS MiB"))
none_b = med(col("none", 1))
for k in names:
    t = col(k, 0); b = med(col(k, 1)); hwm = num(col(k, 3))
    print("%-12s %9.3f %7.3f / %5.3f %9.1f %8.2fx %7s %10s %11s" % (
        label[k], med(t), min(t), max(t), b / 1e6, b / none_b, fmt_med(col(k, 2)),
        fmt_med(col(k, 4), "%.3f"), "%.1f" % (max(hwm) / 1024) if hwm else "-"))
print("(CPU s: pg_dump's own user+sys, or the server's CPU for ours; job s: server-side job time from its log;")
print(" peak RSS: the highest of the server's per-backup VmHWM%s)" % (
    "; VmHWM restarts from the current RSS, so equal values mean no backup rose above what earlier ones left resident"
    if $HWM_RESETS else ", cumulative: reset not allowed"))
print()

def paired(a, b):
    t = [rounds[n][a][0] / rounds[n][b][0] for n in sorted(rounds)]
    s = [rounds[n][a][1] / rounds[n][b][1] for n in sorted(rounds)]
    return t, s

results = {}
print("paired ratios (median over rounds, min / max)")
for a, b in (("zstd", "pg_fc"), ("gzip", "pg_fc"), ("none", "pg_fp")):
    t, s = paired(a, b)
    results[a] = (med(t), med(s))
    print("  %-9s / %-11s  time %.2fx (%.2f / %.2f)   size %.3fx (%.3f / %.3f)" % (
        label[a], label[b], med(t), min(t), max(t), med(s), min(s), max(s)))
print()
hwm_all = num(r[7] for r in rows if r[3] in ("none", "gzip", "zstd"))
print("server RSS after start      : %.1f MiB (VmHWM %.1f MiB)" % ($RSS_START / 1024, $HWM_START / 1024))
print("server RSS after all rounds : %.1f MiB" % ($RSS_END / 1024))
print("server peak RSS (VmHWM)     : %.1f MiB over %d backups (none %s, gzip %s, zstd %s MiB)" % (
    max(hwm_all + [$HWM_START]) / 1024, $SERVER_COMPLETED,
    *("%.1f" % (max(num(r[7] for r in rows if r[3] == k)) / 1024) for k in ("none", "gzip", "zstd"))))
print()
zt, zs = results["zstd"]
print("target zstd time <= 0.70x pg_dump -Fc : %s (%.2fx)" % ("MET" if zt <= 0.70 else "NOT MET", zt))
print("target zstd size <= 0.50x pg_dump -Fc : %s (%.3fx)" % ("MET" if zs <= 0.50 else "NOT MET", zs))
PY
