#!/usr/bin/env bash
# tests/http/test_failover.sh — a PostgreSQL primary fails and its streaming
# replica is promoted while the server runs (issue 9, point 3).
#
# Its own primary (synchronous replication to one standby, so a commit is
# acknowledged only once the standby has it: DESIGN.md's "nothing
# acknowledged is lost" across a crash needs that), the standby made by
# pg_basebackup, and Redis, on private ports. cqrsd serve gets a two-host
# DATABASE_URL with target_session_attrs=read-write (libpq, PostgreSQL docs
# §34.1.1 and §34.1.2). A client sends add-item commands, each with its own
# Idempotency-Key, retrying a 503 or 504 with the same key; midway the
# primary is killed (pg_ctl -m immediate: no shutdown, no last WAL sent) and
# the standby promoted. Then:
#   - every answer while no primary was there was 503 with Retry-After (or
#     504, an ambiguous outcome the client retries with its key): never a 500;
#   - the server writes again on the promoted standby, without a restart;
#   - every acknowledged command is in the store exactly once, and nothing
#     else is;
#   - the cart read model agrees with the events.
# Needs CQRSD_BIN (make test sets it); starts its own services.
set -uo pipefail
fail() {
  echo "test_failover: $*" >&2
  [ -f "${dir:-}/server.log" ] && { echo "test_failover: the server's last records:" >&2; tail -5 "$dir/server.log" >&2; }
  exit 1
}
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
as_pg() { if [ "$(id -u)" -eq 0 ]; then (cd / && runuser -u postgres -- "$@"); else "$@"; fi; }

PRIMARY=18115 STANDBY=18116 REDISPORT=18117 ADDR=127.0.0.1:18118
dir=$(realpath -m .run/test/failover)
standby=$(mktemp -u /tmp/cqrsd-standby-XXXXXX)
server=
cleanup() {
  [ -n "$server" ] && kill "$server" 2>/dev/null && wait "$server" 2>/dev/null
  as_pg "$PGBIN/pg_ctl" -D "$standby" -m immediate -w stop >/dev/null 2>&1
  bash tools/services.sh stop "$dir" "$PRIMARY" "$REDISPORT" >/dev/null 2>&1
  rm -rf "$standby"
  if [ -L "$dir/pg" ]; then rm -rf "$(readlink "$dir/pg")"; fi
  rm -rf "$dir"
}
trap cleanup EXIT
cleanup
mkdir -p "$dir"

# the primary, with synchronous replication to any standby
bash tools/services.sh start "$dir" "$PRIMARY" "$REDISPORT" >/dev/null || fail "services did not start"
pgdata=$(readlink -f "$dir/pg")
as_pg "$PGBIN/pg_basebackup" -h 127.0.0.1 -p "$PRIMARY" -U cqrsd -D "$standby" -R -X stream \
  >"$dir/basebackup.log" 2>&1 || fail "pg_basebackup failed: $(tail -3 "$dir/basebackup.log")"
# after the copy: the standby, once promoted, has no standby of its own to wait for
as_pg sh -c "printf '%s\n' \"synchronous_standby_names = '*'\" >> '$pgdata/postgresql.conf'"
as_pg "$PGBIN/pg_ctl" -D "$pgdata" reload >/dev/null || fail "reload of the primary failed"
as_pg "$PGBIN/pg_ctl" -D "$standby" -l "$standby/server.log" -o "-p $STANDBY" -w -t 60 start \
  >/dev/null || fail "the standby did not start: $(as_pg tail -5 "$standby/server.log")"
psql_at() { psql -X -q -tA -h 127.0.0.1 -p "$1" -U cqrsd -d cqrsd -c "$2"; }
for _ in $(seq 100); do
  [ "$(psql_at "$PRIMARY" "SELECT count(*) FROM pg_stat_replication WHERE sync_state = 'sync'")" = 1 ] && break
  sleep 0.1
done
[ "$(psql_at "$PRIMARY" "SELECT count(*) FROM pg_stat_replication WHERE sync_state = 'sync'")" = 1 ] \
  || fail "the standby is not a synchronous replica"
[ "$(psql_at "$STANDBY" "SELECT pg_is_in_recovery()")" = t ] || fail "the standby is not in recovery"

export DATABASE_URL="postgresql://cqrsd@127.0.0.1:$PRIMARY,127.0.0.1:$STANDBY/cqrsd?target_session_attrs=read-write"
export REDIS_URL="redis://127.0.0.1:$REDISPORT/0"
"$CQRSD_BIN" migrate >"$dir/migrate.log" 2>&1 || fail "migrate failed: $(tail -3 "$dir/migrate.log")"
CQRSD_HTTP_ADDR=$ADDR CQRSD_AUTH=off "$CQRSD_BIN" serve 2>"$dir/server.log" &
server=$!
for _ in $(seq 100); do curl -fsS -m 1 "http://$ADDR/readyz" >/dev/null 2>&1 && break; sleep 0.1; done
curl -fsS -m 1 "http://$ADDR/readyz" >/dev/null || fail "the server is not ready: $(tail -3 "$dir/server.log")"

CARTS=5 N=150
for c in $(seq $CARTS); do
  code=$(curl -sS -o /dev/null -w '%{http_code}' -X POST "http://$ADDR/carts" \
           -H 'Content-Type: application/json' -d "{\"cart_id\":\"fo-$c\"}")
  [ "$code" = 201 ] || fail "opening cart fo-$c answered $code"
done

# the client: add-item i to cart fo-(i mod CARTS), key fo-i, retried on 503,
# 504 and no answer, every answer logged as "i status retry-after"
client() {
  for i in $(seq "$N"); do
    local c=$(( i % CARTS + 1 )) tries=0
    while :; do
      local out status ra
      out=$(curl -sS -m 10 -o /dev/null -D - -w '%{http_code}' -X POST "http://$ADDR/carts/fo-$c/items" \
              -H 'Content-Type: application/json' -H "Idempotency-Key: fo-$i" \
              -d '{"sku":"85123A","quantity":1,"unit_price":"2.55"}' 2>/dev/null)
      status=${out##*$'\n'}
      ra=$(grep -i '^retry-after:' <<<"$out" | tr -d '\r' | awk '{print $2}')
      echo "$i ${status:-000} ${ra:--}" >>"$dir/answers"
      case "$status" in
        2*) echo "$i" >>"$dir/acked"; break ;;
        503|504|000) tries=$((tries + 1)); [ $tries -gt 600 ] && { echo "$i gave up" >>"$dir/answers"; break; }
                     sleep 0.05 ;;
        *) break ;;
      esac
    done
  done
}
: >"$dir/answers"; : >"$dir/acked"
client &
cpid=$!
for _ in $(seq 200); do [ "$(wc -l <"$dir/acked")" -ge 40 ] && break; sleep 0.05; done
[ "$(wc -l <"$dir/acked")" -ge 40 ] || fail "the client got fewer than 40 commands acknowledged before the failover"

# the primary dies: no shutdown checkpoint, no last WAL sent
as_pg "$PGBIN/pg_ctl" -D "$pgdata" -m immediate -w stop >/dev/null || fail "could not kill the primary"
killed_at=$(wc -l <"$dir/answers")
sleep 1.5 # commands meanwhile: only a read-only standby is there
as_pg "$PGBIN/pg_ctl" -D "$standby" -w promote >/dev/null || fail "promote failed"
promoted_at=$(wc -l <"$dir/answers")
wait "$cpid"

bad=$(awk '$2 !~ /^2/ && !(($2 == 503 && $3 != "-") || $2 == 504)' "$dir/answers")
[ -z "$bad" ] || fail "answers other than 2xx, 503 with Retry-After or 504: $(head -5 <<<"$bad")"
grep -q 'gave up' "$dir/answers" && fail "the client gave up on a command: $(grep 'gave up' "$dir/answers" | head -3)"
unavailable=$(awk -v a="$killed_at" -v b="$promoted_at" 'NR > a && NR <= b && $2 == 503' "$dir/answers" | wc -l)
[ "$unavailable" -ge 1 ] || fail "no 503 while only the read-only standby was there (answers $killed_at to $promoted_at)"
acked=$(sort -n -u "$dir/acked" | wc -l)
[ "$acked" = "$N" ] || fail "$acked of $N commands acknowledged"
after=$(awk -v b="$promoted_at" 'NR > b && $2 ~ /^2/' "$dir/answers" | wc -l)
[ "$after" -ge 1 ] || fail "no command acknowledged after the promotion"

# the store, on the promoted standby: each command once, nothing else
[ "$(psql_at "$STANDBY" "SELECT pg_is_in_recovery()")" = f ] || fail "the standby was not promoted"
stored=$(psql_at "$STANDBY" "SELECT count(*) FROM events WHERE stream_id LIKE 'cart-fo-%' AND type = 'ItemAdded'")
[ "$stored" = "$N" ] || fail "$stored ItemAdded events stored for $N acknowledged commands"
# the read model: the quantities of the five carts add up to N
for _ in $(seq 100); do
  units=0
  for c in $(seq $CARTS); do
    q=$(curl -fsS "http://$ADDR/carts/fo-$c" | jq '[.lines[].quantity] | add // 0')
    units=$((units + q))
  done
  [ "$units" = "$N" ] && break
  sleep 0.1
done
[ "$units" = "$N" ] || fail "the carts' read model holds $units units, the store $N"
echo "test_failover: primary killed and standby promoted under a command load: $N commands" \
     "acknowledged, each stored once; $unavailable answered 503 with Retry-After while no" \
     "primary was there, $after acknowledged after the promotion; read model equal"
