#!/usr/bin/env bash
# tools/services.sh — private PostgreSQL 15 and Redis for one cqrsd instance.
#
#   tools/services.sh start DIR PGPORT REDISPORT   start both (reuse them if already up)
#   tools/services.sh stop  DIR PGPORT REDISPORT   stop both (data is kept)
#   tools/services.sh env   DIR PGPORT REDISPORT   print DATABASE_URL and REDIS_URL exports
#   tools/services.sh stop-pg|start-pg|stop-redis|start-redis DIR PGPORT REDISPORT
#                                                  one service only (outage tests)
#
# Both listen on 127.0.0.1 only, keep their data and logs under DIR, and use
# no Unix sockets, so several instances (make run, make test) live side by side.
# PostgreSQL refuses to run as root: as root, the cluster runs as the postgres
# user; when DIR is not reachable by that user (a clone under /root, say), the
# cluster lives in /tmp/cqrsd-pg-<hash of DIR> and DIR/pg links to it.
set -euo pipefail

PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
cmd=${1:?usage: services.sh start|stop|env DIR PGPORT REDISPORT}
dir=$(realpath -m "${2:?missing DIR}")
pgport=${3:?missing PGPORT}
redisport=${4:?missing REDISPORT}

as_pg() { # from / : the postgres user may not be allowed into the current folder
  if [ "$(id -u)" -eq 0 ]; then (cd / && runuser -u postgres -- "$@"); else "$@"; fi
}

pgdata_dir() {
  if [ -L "$dir/pg" ]; then readlink "$dir/pg"; return; fi
  if [ "$(id -u)" -eq 0 ] && ! runuser -u postgres -- test -x "$dir" 2>/dev/null; then
    local h; h=$(printf '%s' "$dir" | md5sum | cut -c1-12)
    echo "/tmp/cqrsd-pg-$h"
  else
    echo "$dir/pg"
  fi
}

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

start_pg() {
  local data; data=$(pgdata_dir)
  mkdir -p "$dir"
  if [ "$data" != "$dir/pg" ] && [ ! -e "$dir/pg" ]; then
    mkdir -p "$data"; ln -s "$data" "$dir/pg"
  fi
  mkdir -p "$data"
  [ "$(id -u)" -eq 0 ] && chown postgres: "$data" && chmod 700 "$data"
  if [ ! -f "$data/PG_VERSION" ]; then
    as_pg "$PGBIN/initdb" -D "$data" -U cqrsd --auth=trust -E UTF8 --no-locale >"$dir/initdb.log" 2>&1 \
      || { echo "services: initdb failed, see $dir/initdb.log" >&2; exit 1; }
    cat >>"$data/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
unix_socket_directories = ''
max_connections = 100
shared_buffers = 256MB
log_min_messages = warning
log_min_error_statement = panic
CONF
  fi
  if as_pg "$PGBIN/pg_ctl" -D "$data" status >/dev/null 2>&1; then
    return 0
  fi
  if port_busy "$pgport"; then
    echo "services: port $pgport is taken by another program; cannot start PostgreSQL" >&2; exit 1
  fi
  local log="$data/server.log"
  as_pg "$PGBIN/pg_ctl" -D "$data" -l "$log" -o "-p $pgport" -w -t 60 start >/dev/null \
    || { echo "services: PostgreSQL did not start, see $log" >&2; tail -5 "$log" >&2; exit 1; }
  as_pg "$PGBIN/psql" -X -q -h 127.0.0.1 -p "$pgport" -U cqrsd -d postgres -tAc \
    "SELECT 1 FROM pg_database WHERE datname='cqrsd'" | grep -q 1 \
    || as_pg "$PGBIN/createdb" -h 127.0.0.1 -p "$pgport" -U cqrsd cqrsd
}

start_redis() {
  mkdir -p "$dir/redis"
  if redis-cli -h 127.0.0.1 -p "$redisport" ping 2>/dev/null | grep -q PONG; then
    if [ -f "$dir/redis.pid" ] && kill -0 "$(cat "$dir/redis.pid")" 2>/dev/null; then return 0; fi
    echo "services: port $redisport is taken by another program; cannot start Redis" >&2; exit 1
  fi
  redis-server --bind 127.0.0.1 --port "$redisport" --dir "$dir/redis" \
    --daemonize yes --pidfile "$dir/redis.pid" --logfile "$dir/redis.log" \
    --appendonly yes --appendfsync everysec --save '' >/dev/null
  for _ in $(seq 100); do
    redis-cli -h 127.0.0.1 -p "$redisport" ping 2>/dev/null | grep -q PONG && return 0
    sleep 0.1
  done
  echo "services: Redis did not start, see $dir/redis.log" >&2; exit 1
}

stop_pg() {
  local data; data=$(pgdata_dir)
  if [ -f "$data/PG_VERSION" ]; then
    as_pg "$PGBIN/pg_ctl" -D "$data" -m fast -w stop >/dev/null 2>&1 || true
  fi
}

stop_redis() {
  if [ -f "$dir/redis.pid" ] && kill -0 "$(cat "$dir/redis.pid")" 2>/dev/null; then
    redis-cli -h 127.0.0.1 -p "$redisport" shutdown >/dev/null 2>&1 || kill "$(cat "$dir/redis.pid")" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$(cat "$dir/redis.pid" 2>/dev/null)" 2>/dev/null || break; sleep 0.1; done
  fi
}

stop_all() { stop_pg; stop_redis; }

case "$cmd" in
  start) start_pg; start_redis ;;
  stop)  stop_all ;;
  start-pg) start_pg ;;
  stop-pg) stop_pg ;;
  start-redis) start_redis ;;
  stop-redis) stop_redis ;;
  env)   ;;
  *) echo "services: unknown command '$cmd'" >&2; exit 2 ;;
esac
if [ "$cmd" = start ] || [ "$cmd" = env ]; then
  echo "export DATABASE_URL=postgresql://cqrsd@127.0.0.1:$pgport/cqrsd"
  echo "export REDIS_URL=redis://127.0.0.1:$redisport/0"
fi
