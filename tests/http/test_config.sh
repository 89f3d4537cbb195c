#!/usr/bin/env bash
# tests/http/test_config.sh — strict settings and logs (issue 8, points 2 and 7),
# against real servers started here:
#   - a bad setting stops `cqrsd serve` before it listens, exit 2, with a
#     message naming the variable (CQRSD_LOG_LEVEL=verbose, CQRSD_LOG_FORMAT=xml,
#     CQRSD_TIMEZONE=Mars/Base, REDIS_URL=.../99, a number out of range);
#   - a second server on an address already served is refused;
#   - REDIS_URL credentials are sent: a Redis with requirepass is "up" in
#     /readyz with the right password, "down" with a wrong one (the log says
#     Redis refused the credentials);
#   - the logs are one JSON object per line; each request gets an access
#     record at info with its X-Request-Id (given, or generated and echoed).
# Needs CQRSD_BIN, DATABASE_URL, CQRSD_URL (make test sets them) and redis-server.
set -uo pipefail
fail() { echo "test_config: $*" >&2; for f in "$tmp"/*.log; do [ -e "$f" ] && { echo "--- $f" >&2; tail -5 "$f" >&2; }; done; exit 1; }
addr=127.0.0.1:18102
tmp=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done; rm -rf "$tmp"; }
trap cleanup EXIT

# 1. each bad setting: exit 2 naming it, nothing listening
refused() { # VAR=value ... , then the text the message must hold
  local want=${*: -1} args=("${@:1:$#-1}") err rc
  err=$(env "${args[@]}" CQRSD_HTTP_ADDR=$addr timeout 10 "$CQRSD_BIN" serve 2>&1 >/dev/null); rc=$?
  [ "$rc" -eq 2 ] || fail "${args[*]}: exit $rc, not 2 ($err)"
  grep -qF -- "$want" <<<"$err" || fail "${args[*]}: said \"$err\", not \"$want\""
  (exec 3<>"/dev/tcp/${addr%:*}/${addr#*:}") 2>/dev/null && fail "${args[*]}: a server listens on $addr"
  echo "${args[*]}: exit 2, $err"
}
refused CQRSD_LOG_LEVEL=verbose 'CQRSD_LOG_LEVEL must be debug, info, warn or error, got "verbose"'
refused CQRSD_LOG_FORMAT=xml 'CQRSD_LOG_FORMAT must be json or text'
refused CQRSD_TIMEZONE=Mars/Base 'CQRSD_TIMEZONE "Mars/Base" is not a zone of the tz database'
refused CQRSD_TIMEZONE=../../../etc/passwd 'CQRSD_TIMEZONE "../../../etc/passwd" is not a zone'
refused REDIS_URL=redis://127.0.0.1:6379/99 'REDIS_URL "redis://127.0.0.1:6379/99" has a bad database number'
refused REDIS_URL=redis://:topsecret@127.0.0.1:6379/99 'REDIS_URL "redis://:***@127.0.0.1:6379/99" has a bad database number'
refused REDIS_URL=http://127.0.0.1:6379 'REDIS_URL "http://127.0.0.1:6379" is not redis://'
refused REDIS_URL=redis://user@127.0.0.1:6379 'REDIS_URL has a user but no password'
refused REDIS_URL=redis-sentinel://127.0.0.1:26379/0 'names no master: end it with #'
refused REDIS_URL=redis://a:6379,b:6379/0 'names several hosts: that is a Sentinel set'
refused REDIS_URL=redis-sentinel://:pw@a,b,c,d,e,f,g,h,i/0#m 'names more than 8 Sentinels'
refused REDIS_URL="redis-sentinel://$(printf 'h%.0s,' {1..600})h/0#m" 'is longer than 1023 bytes'
refused CQRSD_WORKERS=0 'CQRSD_WORKERS must be an integer from 1 to 256, got "0"'
refused CQRSD_ACCESS_LOG=yes 'CQRSD_ACCESS_LOG must be an integer from 0 to 1'

# 2. a Redis that wants a password, and servers on it
rport=18110  # below the ephemeral range (a client socket could hold a port in it)
redis-server --port $rport --bind 127.0.0.1 --save '' --appendonly no --requirepass 's3cr@t' \
  --daemonize no >"$tmp/redis.log" 2>&1 &
pids+=($!)
for _ in $(seq 50); do redis-cli -p $rport -a 's3cr@t' --no-auth-warning ping 2>/dev/null | grep -q PONG && break; sleep 0.1; done
start() { # addr, REDIS_URL, log file: starts a server, waits for /healthz
  CQRSD_HTTP_ADDR=$1 REDIS_URL=$2 CQRSD_LOG_LEVEL=info CQRSD_LOG_FORMAT=json \
    "$CQRSD_BIN" serve 2>"$3" &
  pids+=($!)
  for _ in $(seq 100); do curl -fsS -m 1 "http://$1/healthz" >/dev/null 2>&1 && return 0; sleep 0.1; done
  fail "the server on $1 did not start: $(tail -5 "$3")"
}
# the password percent-encoded, as RFC 3986 wants '@' in userinfo
start $addr "redis://:s3cr%40t@127.0.0.1:$rport/3" "$tmp/a.log"
ready=$(curl -s "http://$addr/readyz")
grep -q '"redis":"up"' <<<"$ready" || fail "with the password, /readyz says: $ready"
echo "REDIS_URL with the password: redis up"

# a second server on the same address: refused, the first still serves
err=$(CQRSD_HTTP_ADDR=$addr REDIS_URL="redis://:s3cr%40t@127.0.0.1:$rport/3" timeout 10 "$CQRSD_BIN" serve 2>&1 >/dev/null); rc=$?
[ "$rc" -ne 0 ] || fail "a second server on $addr exited 0"
grep -q "could not listen on $addr" <<<"$err" || fail "a second server on $addr said: $err"
curl -fsS "http://$addr/healthz" >/dev/null || fail "the first server stopped answering"
echo "second server on $addr: refused ($err)"

addr2=127.0.0.1:18103
start $addr2 "redis://:wrong@127.0.0.1:$rport/3" "$tmp/b.log"
ready=$(curl -s -o "$tmp/b.json" -w '%{http_code}' "http://$addr2/readyz")
[ "$ready" = 503 ] || fail "with a wrong password, /readyz answered $ready: $(cat "$tmp/b.json")"
grep -q '"redis":"down"' "$tmp/b.json" || fail "with a wrong password: $(cat "$tmp/b.json")"
grep -q 'refused the credentials of REDIS_URL' "$tmp/b.log" || fail "no log of the refused AUTH: $(tail -5 "$tmp/b.log")"
grep -q 's3cr\|wrong' "$tmp/b.log" && fail "the log shows the password: $(grep 'wrong' "$tmp/b.log" | head -2)"
echo "REDIS_URL with a wrong password: 503, redis down, logged without the password"

# 3. the logs: JSON lines, an access record per request with its request id
hdr=$(curl -s -D - -o /dev/null -H 'X-Request-Id: test-config.1' "http://$addr/carts/nobody")
grep -qi '^x-request-id: test-config.1' <<<"$hdr" || fail "X-Request-Id not echoed: $hdr"
gen=$(curl -s -D - -o /dev/null "http://$addr/carts/nobody" | tr -d '\r' | sed -n 's/^[Xx]-[Rr]equest-[Ii]d: //p')
[[ "$gen" =~ ^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$ ]] || fail "generated request id \"$gen\" is not a UUID"
bad=$(curl -s -D - -o /dev/null -H 'X-Request-Id: has space' "http://$addr/carts/nobody" | tr -d '\r' | sed -n 's/^[Xx]-[Rr]equest-[Ii]d: //p')
[ "$bad" != "has space" ] && [ -n "$bad" ] || fail "an id with a space was taken: \"$bad\""
for _ in $(seq 20); do grep -q "$gen" "$tmp/a.log" && break; sleep 0.1; done
while IFS= read -r line; do
  jq -e . >/dev/null 2>&1 <<<"$line" || fail "log line is not JSON: $line"
done <"$tmp/a.log"
rec=$(grep '"request_id":"test-config.1"' "$tmp/a.log") || fail "no access record of test-config.1: $(tail -3 "$tmp/a.log")"
for k in '"level":"info"' '"method":"GET"' '"path":"/carts/nobody"' '"route":"/carts/{cart_id}"' '"status":404' '"duration_ms":' '"time":"20'; do
  grep -qF "$k" <<<"$rec" || fail "the access record lacks $k: $rec"
done
grep -q "\"request_id\":\"$gen\"" "$tmp/a.log" || fail "no access record of the generated id $gen"
echo "access record: $rec"
echo "test_config: passed"
