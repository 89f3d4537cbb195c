#!/usr/bin/env bash
# tests/http/test_compose.sh — docker/compose.yaml and its proxy (issue 9,
# point 1) without a container engine:
#   - compose.yaml: PostgreSQL, Redis, the migrate job, two cqrsd replicas
#     with their health check on /readyz and no port of their own, the proxy
#     publishing 8080 with docker/haproxy.cfg; every setting it gives cqrsd is
#     one `cqrsd --help` names;
#   - docker/haproxy.cfg passes `haproxy -c`;
#   - the same proxy configuration, pointed at two real servers here (its
#     Docker DNS template replaced by their addresses), spreads requests over
#     both, and a command load through it sees no failure while one server is
#     drained by SIGTERM and the other answers.
# Needs CQRSD_BIN, DATABASE_URL, REDIS_URL (make test sets them) and haproxy.
set -uo pipefail
fail() { echo "test_compose: $*" >&2; exit 1; }
command -v haproxy >/dev/null || fail "haproxy is not installed (bash tools/deps.sh --test)"
help=$("$CQRSD_BIN" --help)
out=$(/usr/bin/python3 - docker/compose.yaml "$help" <<'EOF'
import re, sys, yaml
d, help_text = yaml.safe_load(open(sys.argv[1])), sys.argv[2]
s, bad = d["services"], []
if sorted(s) != ["cqrsd", "migrate", "postgres", "proxy", "redis"]:
    bad.append(f"services {sorted(s)}")
c = s.get("cqrsd", {})
if c.get("deploy", {}).get("replicas", 1) < 2:
    bad.append("fewer than two cqrsd replicas")
if c.get("ports"):
    bad.append("the replicas publish ports of their own (the proxy does)")
if "/readyz" not in " ".join(c.get("healthcheck", {}).get("test", [])):
    bad.append("the cqrsd health check is not /readyz")
known = set(re.findall(r"\b(?:CQRSD_[A-Z_]+|DATABASE_URL|REDIS_URL)\b", help_text))
for k in c.get("environment", {}):
    if k not in known:
        bad.append(f"setting {k} is not one cqrsd --help names")
p = s.get("proxy", {})
if "./haproxy.cfg:/usr/local/etc/haproxy/haproxy.cfg:ro" not in p.get("volumes", []):
    bad.append("the proxy does not mount docker/haproxy.cfg")
if not any(str(x).endswith(":8080:8080") for x in p.get("ports", [])):
    bad.append("the proxy does not publish 8080")
if s.get("migrate", {}).get("command") != ["migrate"]:
    bad.append("the migrate job does not run migrate")
print("\n".join(bad)); sys.exit(1 if bad else 0)
EOF
) || fail "$out"
haproxy -c -f docker/haproxy.cfg >/dev/null 2>&1 || fail "haproxy -c: $(haproxy -c -f docker/haproxy.cfg 2>&1 | tail -3)"
echo "compose.yaml: two replicas behind the proxy, health on /readyz; haproxy.cfg valid"

tmp=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done; rm -rf "$tmp"; }
trap cleanup EXIT
a=127.0.0.1:18112 b=127.0.0.1:18113 front=127.0.0.1:18114
for addr in $a $b; do
  CQRSD_HTTP_ADDR=$addr CQRSD_AUTH=off "$CQRSD_BIN" serve 2>>"$tmp/servers.log" &
  pids+=($!)
done
spid_a=${pids[0]}
for addr in $a $b; do
  for _ in $(seq 100); do curl -fsS -m 1 "http://$addr/readyz" >/dev/null 2>&1 && break; sleep 0.1; done
done
# the compose proxy's configuration, with the two servers here for Docker's DNS
sed -e "s|^    bind :8080|    bind $front|" -e '/^resolvers docker/,/^$/d' -e 's| resolvers docker||' \
    -e "s|^    server-template cqrsd 4 cqrsd:8080|    server a $a\n    server b $b|" \
    -e 's|check inter 2s|check inter 200ms|' docker/haproxy.cfg >"$tmp/haproxy.cfg"
haproxy -f "$tmp/haproxy.cfg" -db >"$tmp/haproxy.log" 2>&1 &
pids+=($!)
for _ in $(seq 50); do curl -fsS -m 1 "http://$front/readyz" >/dev/null 2>&1 && break; sleep 0.1; done
sleep 0.5 # both servers checked up
cart="compose-$$-$RANDOM"
[ "$(curl -s -o /dev/null -w '%{http_code}' -X POST "http://$front/carts" -H 'Content-Type: application/json' -d "{\"cart_id\":\"$cart\"}")" = 201 ] ||
  fail "POST /carts through the proxy failed: $(tail -3 "$tmp/haproxy.log")"
count() { curl -s "http://$1/metrics" | awk '/^cqrsd_http_requests_total\{method="POST",route="\/carts\/\{cart_id\}\/items",status="200"\}/ {print $2} END {}' | head -1; }
fails=0 n=0
for i in $(seq 60); do
  code=$(curl -s -m 10 -o /dev/null -w '%{http_code}' -X POST "http://$front/carts/$cart/items" \
    -H 'Content-Type: application/json' -H "Idempotency-Key: compose-$$-$i" \
    -d "{\"sku\":\"C$i\",\"quantity\":1,\"unit_price\":\"1.00\"}")
  n=$((n + 1)); [ "$code" = 200 ] || fails=$((fails + 1))
done
ca=$(count $a); cb=$(count $b)
[ "${ca:-0}" -gt 0 ] && [ "${cb:-0}" -gt 0 ] || fail "the proxy did not spread the commands: $a ${ca:-0}, $b ${cb:-0}"
[ $fails -eq 0 ] || fail "$fails of $n commands through the proxy failed"
echo "through the proxy: 60 commands, $a ran ${ca}, $b ran ${cb}"
# one server drains (SIGTERM) while commands go on
( sleep 0.3; kill -TERM "$spid_a" ) &
for i in $(seq 61 160); do
  code=$(curl -s -m 10 -o "$tmp/r" -w '%{http_code}' -X POST "http://$front/carts/$cart/items" \
    -H 'Content-Type: application/json' -H "Idempotency-Key: compose-$$-$i" \
    -d "{\"sku\":\"C$i\",\"quantity\":1,\"unit_price\":\"1.00\"}")
  [ "$code" = 200 ] || { fails=$((fails + 1)); echo "command $i: $code $(cat "$tmp/r")" >&2; }
done
wait "$spid_a"; rc=$?
[ $rc -eq 0 ] || fail "the drained server exited $rc"
[ $fails -eq 0 ] || fail "$fails of 100 commands through the proxy failed while a server drained"
stored=$(psql "$DATABASE_URL" -Atc "SELECT count(*) FROM events WHERE stream_id = 'cart-$cart' AND type = 'ItemAdded'")
[ "$stored" = 160 ] || fail "$stored ItemAdded events stored for 160 acknowledged commands"
echo "100 more commands while $a drained and exited 0: none failed; 160 stored once each"
echo "test_compose: passed"
