#!/usr/bin/env bash
# tools/test.sh — what `make test` does after the build: fresh private
# PostgreSQL and Redis under .run/test (ports beside make run's, so both can
# be up at once), migrations, then every test:
#   build/tests/unit/*         pure tests (given/when/then cases, money, time)
#   build/tests/integration/*  against the real PostgreSQL and Redis
#   build/tests/http/*, tests/http/*.sh   against the real server on CQRSD_URL
# Services and server are stopped afterwards; exit status non-zero on any failure.
set -uo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
DIR=.run/test
PGPORT=${CQRSD_TEST_PG_PORT:-55442}
REDISPORT=${CQRSD_TEST_REDIS_PORT:-56389}
export CQRSD_HTTP_ADDR=${CQRSD_TEST_HTTP_ADDR:-127.0.0.1:18089}
export CQRSD_URL="http://$CQRSD_HTTP_ADDR"
export CQRSD_BIN="$PWD/$BUILD/cqrsd"
# the modules every test and the server load (the build's, sanitizers included)
export CQRSD_ECOMMERCE_MODULE="$PWD/$BUILD/modules/ecommerce.so"
export CQRSD_MODULES=${CQRSD_MODULES:-$CQRSD_ECOMMERCE_MODULE}
export CQRSD_TEST_MODULES="$PWD/$BUILD/tests/modules"   # fixtures of tests/modules/
export CQRSD_LOYALTY_MODULE="$PWD/$BUILD/examples/loyalty/loyalty.so"
export CQRSD_LOG_LEVEL=${CQRSD_LOG_LEVEL:-warn}
export CQRSD_AUTH=${CQRSD_AUTH:-off}   # the tests that check API keys start servers with it on
export CQRSD_BODY_TIMEOUT=${CQRSD_BODY_TIMEOUT:-3}   # test_hostile trickles a body past it

# CQRSD_VALGRIND=1: every test program and the server run under valgrind
# memcheck; an error or a definite leak fails the run
VG=()
if [ -n "${CQRSD_VALGRIND:-}" ]; then
  VG=(valgrind --quiet --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite
      --show-leak-kinds=definite --track-origins=no)
  export CQRSD_BIN_WRAPPER="${VG[*]}"
fi

passed=0; failed=0; failures=()
server=
# SIGTERM drains (up to CQRSD_SHUTDOWN_TIMEOUT, slower under valgrind); one
# still running after 60 s is killed, so that no server outlives its run and
# answers the next one's tests
stop_server() {
  if [ -n "$server" ] && kill -0 "$server" 2>/dev/null; then
    kill -TERM "$server"
    for _ in $(seq 600); do kill -0 "$server" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$server" 2>/dev/null; then
      echo "the server (pid $server) did not stop 60 s after SIGTERM: killed" >&2
      kill -KILL "$server" 2>/dev/null
    fi
  fi
}
cleanup() {
  stop_server
  bash tools/services.sh stop "$DIR" "$PGPORT" "$REDISPORT"
}
trap cleanup EXIT

bash tools/services.sh stop "$DIR" "$PGPORT" "$REDISPORT"
pglink=$(readlink "$DIR/pg" 2>/dev/null || true)   # a cluster kept in /tmp (see services.sh)
rm -rf "$DIR" ${pglink:+"$pglink"}
eval "$(bash tools/services.sh start "$DIR" "$PGPORT" "$REDISPORT")" || exit 1
"$CQRSD_BIN" migrate || exit 1

# CQRSD_ONLY=name[,name...]: run only those tests (e.g. test_reload), for working on them
run() { # name, command...
  local name=$1; shift
  if [ -n "${CQRSD_ONLY:-}" ] && ! [[ ",$CQRSD_ONLY," == *",$(basename "$name"),"* ]]; then return 0; fi
  echo "=== $name"
  if "$@"; then passed=$((passed + 1)); else failed=$((failed + 1)); failures+=("$name"); fi
}

export CQRSD_SERVER_PIDFILE="$PWD/$DIR/server.pid" CQRSD_SERVER_LOG="$PWD/$DIR/server.log"
export CQRSD_API_RECORD="$PWD/$DIR/api_record.jsonl"   # test_api writes, test_openapi.sh checks
# outage tests stop and start one service:
#   bash "$CQRSD_SERVICES" stop-pg|start-pg|stop-redis|start-redis $CQRSD_SERVICES_ARGS
export CQRSD_SERVICES="$PWD/tools/services.sh" CQRSD_SERVICES_ARGS="$PWD/$DIR $PGPORT $REDISPORT"
start_server() {
  # a server left over from an earlier run (one that outlived its stop) would
  # answer in place of this run's, on its own state: refuse to test it
  if curl -fsS -m 1 "$CQRSD_URL/healthz" >/dev/null 2>&1; then
    echo "something already answers at $CQRSD_URL before the server starts (a server left" \
         "over from an earlier run?): $(ss -ltnp 2>/dev/null | grep ":${CQRSD_HTTP_ADDR##*:} " || true)" >&2
    return 1
  fi
  "${VG[@]}" "$CQRSD_BIN" serve 2>>"$DIR/server.log" &
  server=$!
  echo "$server" > "$CQRSD_SERVER_PIDFILE"
  for _ in $(seq 300); do
    kill -0 "$server" 2>/dev/null || break
    curl -fsS -m 1 "$CQRSD_URL/healthz" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "server did not come up; see $DIR/server.log" >&2
  tail -20 "$DIR/server.log" >&2
  return 1
}

for t in "$BUILD"/tests/unit/*; do [ -x "$t" ] && run "unit/$(basename "$t")" "${VG[@]}" "$t"; done
# the example module's cases, as its own `make test` runs them
run "examples/loyalty_cases" env CQRSD_MODULES="$CQRSD_LOYALTY_MODULE" \
    "${VG[@]}" "$CQRSD_BIN" cases examples/loyalty/cases
for t in "$BUILD"/tests/integration/*; do [ -x "$t" ] && run "integration/$(basename "$t")" "${VG[@]}" "$t"; done

if start_server; then
  for t in "$BUILD"/tests/http/* tests/http/*.sh; do
    [ -e "$t" ] || continue
    case "$t" in *.sh) run "http/$(basename "$t")" bash "$t" ;; *) [ -x "$t" ] && run "http/$(basename "$t")" "$t" ;; esac
    # a test may kill and restart the server (crash tests): follow it
    server=$(cat "$CQRSD_SERVER_PIDFILE")
  done
else
  failed=$((failed + 1)); failures+=("server start")
fi

# stop the server now, so that a sanitizer build reports leaks at its exit
stop_server
if grep -qE 'ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:|definitely lost in|Invalid (read|write)|uninitialised' "$DIR/server.log" 2>/dev/null; then
  echo "=== the server's own sanitizer or valgrind report (from $DIR/server.log):"
  grep -E -B2 -A20 'ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:|definitely lost in|Invalid (read|write)|uninitialised' "$DIR/server.log" | head -80
  failed=$((failed + 1)); failures+=("server sanitizer report")
fi

echo
if [ $failed -gt 0 ]; then printf 'failed: %s\n' "${failures[@]}"; fi
echo "$passed passed, $failed failed"
[ $failed -eq 0 ]
