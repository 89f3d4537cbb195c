#!/usr/bin/env bash
# tools/run.sh [--demo] — what `make run` and `make demo` do after the build:
# start the private PostgreSQL and Redis under .run/dev, migrate, serve HTTP
# until Ctrl-C, then stop everything this script started.
# --demo: also load the whole Online Retail file, print the summary, stop.
#
# Ports: CQRSD_PG_PORT (55432), CQRSD_REDIS_PORT (56379), CQRSD_HTTP_ADDR (127.0.0.1:8080).
set -euo pipefail
cd "$(dirname "$0")/.."
demo=0
[ "${1:-}" = "--demo" ] && demo=1
BIN=${BUILD:-build}/cqrsd
DIR=.run/dev
PGPORT=${CQRSD_PG_PORT:-55432}
REDISPORT=${CQRSD_REDIS_PORT:-56379}
export CQRSD_HTTP_ADDR=${CQRSD_HTTP_ADDR:-127.0.0.1:8080}
export CQRSD_AUTH=${CQRSD_AUTH:-off}   # a server on localhost for one developer: no API keys
URL="http://$CQRSD_HTTP_ADDR"

if curl -fsS -m 2 "$URL/healthz" >/dev/null 2>&1; then
  echo "cqrsd is already serving on $URL (another make run?): nothing to start"
  if [ $demo -eq 0 ]; then exit 0; fi
  exec "$BIN" load data/online-retail/online_retail_I.csv.gz --url "$URL"
fi

server=
cleanup() {
  trap - EXIT INT TERM
  if [ -n "$server" ] && kill -0 "$server" 2>/dev/null; then
    kill -TERM "$server" 2>/dev/null || true
    wait "$server" 2>/dev/null || true
  fi
  bash tools/services.sh stop "$DIR" "$PGPORT" "$REDISPORT"
  echo "cqrsd: stopped cqrsd, PostgreSQL and Redis"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

eval "$(bash tools/services.sh start "$DIR" "$PGPORT" "$REDISPORT")"
"$BIN" migrate
"$BIN" serve &
server=$!
for _ in $(seq 100); do
  curl -fsS -m 1 "$URL/healthz" >/dev/null 2>&1 && break
  kill -0 "$server" 2>/dev/null || { echo "cqrsd: the server exited, see above" >&2; exit 1; }
  sleep 0.1
done
echo "cqrsd: serving on $URL  (PostgreSQL 127.0.0.1:$PGPORT, Redis 127.0.0.1:$REDISPORT; Ctrl-C stops all)"
if [ $demo -eq 1 ]; then
  "$BIN" load data/online-retail/online_retail_I.csv.gz --url "$URL" --concurrency "${CQRSD_LOAD_CONCURRENCY:-32}"
  exit $?
fi
wait "$server"
