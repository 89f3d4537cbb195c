#!/usr/bin/env bash
# tools/bench/bench.sh — what `make bench` runs after the -O2 build: each figure
# of cqrsd beside a raw limit of this machine measured in the same run, on the
# same PostgreSQL and Redis (issue 7). Benchmarks, not tests: nothing here
# passes or fails on a number.
#
#   commands    add-item to random carts out of 1000, at 1, 8 and 64 clients (wrk
#               with tools/bench/carts.lua); baseline: pgbench (prepared
#               statements, as cqrsd's), one INSERT of the same event row per
#               transaction (tools/bench/insert.sql)
#   queries     GET /carts/{id} at 64 connections (wrk); baseline: a bare
#               libmicrohttpd server with cqrsd's flags and threads answering a
#               body of the same size (tools/bench/bare.c)
#   visibility  command reply to read model at 8 clients (tools/bench/vis.c)
#   memory      the server's peak RSS (VmHWM) after the query run
#   load        `cqrsd load --concurrency 32` of the Online Retail file, commands/s
#   replay      `cqrsd replay --all` over what was loaded, events/s to the switch
#               (replay's own summary: the new builds serve); baseline:
#               redis-benchmark's pipelined SET rate
#
# Writes bench/results.json and bench/RESULTS.md. BENCH_QUICK=1: 4 s runs and
# the first 20,000 lines of the file (under 2 minutes); else 15 s runs and the
# whole file. Ports: PostgreSQL 55442, Redis 56389, cqrsd 18190, bare 18191.
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build}
BIN=$BUILD/cqrsd
DIR=.run/bench
PGPORT=55442
REDISPORT=56389
ADDR=127.0.0.1:18190
URL=http://$ADDR
BAREPORT=18191
QUICK=${BENCH_QUICK:-0}
if [ "$QUICK" = 1 ]; then D=4; LIMIT=(--limit 20000); else D=15; LIMIT=(); fi
FILE=data/online-retail/online_retail_I.csv.gz
OUT=bench
TMP=$DIR/tmp
CARTS=1000
export CARTS

server=; bare=
cleanup() {
  trap - EXIT INT TERM
  for p in $server $bare; do kill -TERM "$p" 2>/dev/null && wait "$p" 2>/dev/null || true; done
  bash tools/services.sh stop "$DIR" "$PGPORT" "$REDISPORT" >/dev/null 2>&1 || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM

say() { printf 'bench: %s\n' "$*" >&2; }

# a fresh store for every run: the figures do not depend on earlier runs
bash tools/services.sh stop "$DIR" "$PGPORT" "$REDISPORT" >/dev/null 2>&1 || true
if [ -L "$DIR/pg" ]; then rm -rf "$(readlink "$DIR/pg")"; fi
rm -rf "$DIR"
mkdir -p "$TMP" "$OUT"
eval "$(bash tools/services.sh start "$DIR" "$PGPORT" "$REDISPORT")"
"$BIN" migrate >/dev/null 2>&1
PSQL=(psql -X -q -tA -h 127.0.0.1 -p "$PGPORT" -U cqrsd -d cqrsd)

start_server() {
  CQRSD_HTTP_ADDR=$ADDR CQRSD_LOG_LEVEL=warn CQRSD_AUTH=off "$BIN" serve 2>>"$DIR/server.log" &
  server=$!
  for _ in $(seq 100); do
    curl -fsS -m 1 "$URL/healthz" >/dev/null 2>&1 && return 0
    kill -0 "$server" 2>/dev/null || { say "the server exited ($DIR/server.log):"; tail -3 "$DIR/server.log" >&2; exit 1; }
    sleep 0.1
  done
  say "the server did not answer /healthz"; exit 1
}
stop_server() { kill -TERM "$server"; wait "$server" 2>/dev/null || true; server=; }

# wrk's result line ("result requests N duration_us N p50_us N p99_us N non2xx N
# errors N") as: rate p50_ms p99_ms failed
wrk_run() { # CONNS THREADS MODE URL (MODE: add_item or get, see tools/bench/carts.lua)
  local line
  line=$(MODE=$3 wrk -t"$2" -c"$1" -d"${D}s" --timeout 10s -s tools/bench/carts.lua "$4" | grep '^result ')
  awk '{printf "%.0f %.2f %.2f %d\n", $3 / ($5 / 1e6), $7 / 1e3, $9 / 1e3, $11 + $13}' <<<"$line"
}

# pgbench's rate and, from its per-transaction log, p50/p99 in ms
pgbench_run() { # CLIENTS
  local j=$(( $1 < 2 ? 1 : 2 )) out rate
  rm -f "$TMP"/pgbench_log.*
  out=$(cd "$TMP" && pgbench -n -M prepared -h 127.0.0.1 -p "$PGPORT" -U cqrsd -f "$OLDPWD/tools/bench/insert.sql" \
          -c "$1" -j "$j" -T "$D" -l cqrsd 2>&1)
  rate=$(sed -n 's/^tps = \([0-9.]*\) .*/\1/p' <<<"$out" | head -1)
  cat "$TMP"/pgbench_log.* | awk '{print $3}' | sort -n | awk -v r="$rate" '
    { a[NR] = $1 } END { printf "%.0f %.2f %.2f 0\n", r, a[int(NR * 0.5) + 1] / 1e3, a[int(NR * 0.99) + 1] / 1e3 }'
}

results=()
rows=()
# record NAME UNIT VALUE BASELINE BASELINE_WHAT [NOTE]: a figure, its baseline
# and their ratio (empty baseline: no ratio)
record() {
  local ratio=null
  if [ -n "$4" ]; then ratio=$(awk -v a="$3" -v b="$4" 'BEGIN { printf "%.3f", (b > 0 ? a / b : 0) }'); fi
  results+=("$(printf '  "%s": {"unit": "%s", "value": %s, "baseline": %s, "baseline_is": "%s", "ratio": %s}' \
    "$1" "$2" "$3" "${4:-null}" "$5" "$ratio")")
  rows+=("| $1 | $3 $2 | ${4:-–} | $5 | ${ratio/null/–} | ${6:-} |")
  say "$1: $3 $2 (baseline ${4:-none}, ratio ${ratio})"
}

start_server

say "opening $CARTS carts"
: >"$TMP/open.curl"
for i in $(seq "$CARTS"); do
  [ "$i" -gt 1 ] && echo next >>"$TMP/open.curl"
  printf 'url = "%s/carts"\nheader = "Content-Type: application/json"\ndata = "{\\"cart_id\\":\\"bench-%d\\"}"\noutput = "/dev/null"\n' \
    "$URL" "$i" >>"$TMP/open.curl"
done
curl -sS --no-progress-meter --parallel --parallel-max 8 -K "$TMP/open.curl"
opened=$("${PSQL[@]}" -c "SELECT count(*) FROM streams WHERE stream_id LIKE 'cart-bench-%'")
[ "$opened" -eq "$CARTS" ] || { say "only $opened of $CARTS carts opened"; exit 1; }

"${PSQL[@]}" -c "CREATE TABLE bench_events (LIKE events INCLUDING ALL); CREATE SEQUENCE bench_version;"
# group commit's counters (GET /admin/functions): "groups commands"
groups_now() {
  curl -fsS "$URL/admin/functions" | tr -d ' \n' \
    | sed -n 's/.*"group_commit":{"groups":\([0-9]*\),"commands":\([0-9]*\)}.*/\1 \2/p'
  echo # the reply has no final newline, and read wants one
}
for c in 1 8 64; do
  t=$(( c < 2 ? 1 : 2 ))
  read -r g0 n0 < <(groups_now)
  read -r rate p50 p99 failed < <(wrk_run "$c" "$t" add_item "$URL")
  read -r g1 n1 < <(groups_now)
  gsize=$(awk -v g=$((g1 - g0)) -v n=$((n1 - n0)) 'BEGIN { printf "%.1f", (g > 0 ? n / g : 0) }')
  read -r brate bp50 bp99 _ < <(pgbench_run "$c")
  record "commands_c$c" "commands/s" "$rate" "$brate" "pgbench INSERT/s" "p50 $p50 ms, p99 $p99 ms (pgbench p50 $bp50, p99 $bp99); $gsize commands per group; failed $failed"
  results+=("$(printf '  "commands_c%s_latency": {"unit": "ms", "p50": %s, "p99": %s, "baseline_p50": %s, "baseline_p99": %s, "commands_per_group": %s, "failed": %s}' \
    "$c" "$p50" "$p99" "$bp50" "$bp99" "$gsize" "$failed")")
done
"${PSQL[@]}" -c "DROP TABLE bench_events; DROP SEQUENCE bench_version;"

# queries: wait until the read models hold every add-item, so GETs see full carts
for _ in $(seq 300); do
  curl -fsS "$URL/readyz" | grep -q '"caught_up": *false' || break
  sleep 0.1
done
curl -fsS "$URL/carts/bench-1" -o "$TMP/body.json"
read -r rate p50 p99 failed < <(wrk_run 64 2 get "$URL")
rss=$(awk '/^VmHWM/ {print $2}' "/proc/$server/status")
"$BUILD/bench/bare" "$BAREPORT" "$TMP/body.json" 2 &
bare=$!
sleep 0.3
kill -0 "$bare" 2>/dev/null || { say "the bare server did not start (port $BAREPORT taken?)"; exit 1; }
read -r brate bp50 bp99 _ < <(wrk_run 64 2 get "http://127.0.0.1:$BAREPORT")
kill -TERM "$bare"; wait "$bare" 2>/dev/null || true; bare=
record queries_c64 "requests/s" "$rate" "$brate" "bare libmicrohttpd requests/s" "p50 $p50 ms, p99 $p99 ms (bare p50 $bp50, p99 $bp99); body $(stat -c %s "$TMP/body.json") bytes; failed $failed"
results+=("$(printf '  "queries_c64_latency": {"unit": "ms", "p50": %s, "p99": %s, "baseline_p50": %s, "baseline_p99": %s, "failed": %s}' \
  "$p50" "$p99" "$bp50" "$bp99" "$failed")")
record peak_rss "MB" "$(awk -v k="$rss" 'BEGIN { printf "%.1f", k / 1024 }')" "" "" "VmHWM of the server after the query run"

read -r _ _ _ _ vp50 _ vp99 _ vmax < <("$BUILD/bench/vis" "$URL" 8 "$D" "vis$$")
record visibility_p99_c8 "ms" "$vp99" "" "" "reply to read model at 8 clients: p50 $vp50 ms, max $vmax ms"
results+=("$(printf '  "visibility_c8": {"unit": "ms", "p50": %s, "p99": %s, "max": %s}' "$vp50" "$vp99" "$vmax")")

# the same with a transaction holding an id open in another database of the
# server the whole time (issue 7, point 3): the ratio to the figure above
psql -X -q -tA -h 127.0.0.1 -p "$PGPORT" -U cqrsd -d postgres -c "BEGIN; SELECT pg_current_xact_id(); SELECT pg_sleep($((D + 10))); COMMIT" >/dev/null 2>&1 &
stranger=$!
sleep 0.5
read -r _ _ _ _ sp50 _ sp99 _ smax < <("$BUILD/bench/vis" "$URL" 8 "$D" "vs$$")
open=$("${PSQL[@]}" -c "SELECT count(*) FROM pg_stat_activity WHERE datname = 'postgres' AND backend_xid IS NOT NULL")
kill "$stranger" 2>/dev/null; wait "$stranger" 2>/dev/null || true
"${PSQL[@]}" -c "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = 'postgres' AND pid <> pg_backend_pid()" >/dev/null
record visibility_p99_c8_stranger "ms" "$sp99" "$vp99" "p99 without it" "the same, with a transaction open in database postgres throughout ($open open at the end): p50 $sp50 ms, max $smax ms"

say "loading ${LIMIT[*]:-the whole file} $FILE"
"$BUILD/cqrsd-load" "$FILE" --url "$URL" --quiet --concurrency 32 "${LIMIT[@]}" >"$TMP/load.txt" 2>&1 \
  || { cat "$TMP/load.txt" >&2; exit 1; }
read -r ncmd secs lrate < <(awk '$1 == "commands" {gsub(/s$/, "", $4); gsub(/[(]/, "", $5); print $2, $4, $5}' "$TMP/load.txt")
record load "commands/s" "$lrate" "" "" "$ncmd commands in $secs s, read models caught up"
stop_server

events=$("${PSQL[@]}" -c "SELECT count(*) FROM events")
t0=$(date +%s%N)
"$BIN" replay --all >"$TMP/replay.txt" 2>"$TMP/replay.err"
t1=$(date +%s%N)
# the rate to the switch (the rebuilt read models serve), from replay's own
# summary; the wall time with the old builds deleted goes in the notes
read -r rs < <(sed -n 's/^[0-9]* events rebuilt in \([0-9.]*\) s.*/\1/p' "$TMP/replay.txt")
rrate=$(awk -v n="$events" -v s="$rs" 'BEGIN { printf "%.0f", n / s }')
redis=$(redis-benchmark -h 127.0.0.1 -p "$REDISPORT" -t set -P 64 -n 2000000 -r 100000 -q 2>/dev/null \
          | tr '\r' '\n' | sed -n 's/^SET: \([0-9.]*\) requests per second.*/\1/p' | tail -1)
redis-cli -h 127.0.0.1 -p "$REDISPORT" del key:__rand_int__ >/dev/null
record replay "events/s" "$rrate" "${redis%.*}" "redis-benchmark SET -P 64 per s" "$events events, every projection, rebuilt blue/green in $rs s to the switch; $(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", (b - a) / 1e9 }') s with the old builds deleted"

cores=$(nproc)
when=$(date -u +%Y-%m-%dT%H:%M:%SZ)
mode=$([ "$QUICK" = 1 ] && echo "quick (BENCH_QUICK=1: ${D} s runs, 20,000 lines)" || echo "full (${D} s runs, the whole file)")
{
  printf '{\n  "date": "%s", "cores": %s, "mode": "%s", "commit": "%s",\n' "$when" "$cores" "$mode" \
    "$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
  (IFS=$'\n'; echo "${results[*]}") | sed '$!s/$/,/'
  printf '}\n'
} >"$OUT/results.json"
{
  printf '# cqrsd benchmark results\n\n'
  printf 'Written by `make bench` on %s: %s cores (%s), %s; load generator, PostgreSQL 15, Redis\n' \
    "$when" "$cores" "$(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1)" "$mode"
  printf 'and cqrsd all on the same cores. Commit %s.\n\n' "$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
  printf '| figure | cqrsd | baseline | baseline is | ratio | notes |\n|---|---|---|---|---|---|\n'
  (IFS=$'\n'; echo "${rows[*]}")
  if [ -f "$OUT/ANALYSIS.md" ]; then printf '\n'; cat "$OUT/ANALYSIS.md"; fi
} >"$OUT/RESULTS.md"
say "wrote $OUT/results.json and $OUT/RESULTS.md"
cat "$OUT/RESULTS.md"
