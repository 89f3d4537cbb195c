#!/usr/bin/env bash
# tests/http/test_kit.sh — the README's "Write your own function", as a user
# does it: `cqrsd new tips`, build it with its Makefile against this build's
# ABI (pkg-config cqrsd-uninstalled), run its cases, then `make install` into
# a scratch prefix, build it again against the installed cqrsd.pc, serve it
# with the installed cqrsd beside the installed e-commerce module (a database
# of its own: cqrsd_kit, Redis db 6), and curl its routes.
# Needs CQRSD_BIN, DATABASE_URL, REDIS_URL (make test sets them).
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD_DIR=$(dirname "$CQRSD_BIN")
tmp=$(mktemp -d /tmp/cqrsd-kit.XXXXXX)
server=
cleanup() {
  if [ -n "$server" ]; then kill -TERM "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; fi
  rm -rf "$tmp"
}
trap cleanup EXIT
fail() { echo "test_kit: $*" >&2; exit 1; }

echo "--- cqrsd new tips"
(cd "$tmp" && "$CQRSD_BIN" new tips) | tee "$tmp/new.out"
grep -q "7 cases in tips/cases/" "$tmp/new.out" || fail "cqrsd new did not report its 7 cases"
"$CQRSD_BIN" new tips "$tmp/tips" 2>"$tmp/again.err" && fail "cqrsd new wrote over an existing folder"
grep -q "exists; nothing written" "$tmp/again.err" || fail "no message for an existing folder"
"$CQRSD_BIN" new Tips "$tmp/x" 2>/dev/null && fail "cqrsd new took a name with a capital"
(cd "$tmp" && "$CQRSD_BIN" new tips2 "" 2>/dev/null) && fail "cqrsd new took an empty DIR"
rc=0; "$CQRSD_BIN" new a b c 2>/dev/null || rc=$?
[ "$rc" = 2 ] || fail "cqrsd new with 3 arguments exited $rc, not 2"
"$CQRSD_BIN" new --help | grep -q "usage: cqrsd new" || fail "cqrsd new --help printed no usage"

echo "--- make && make test, against this build"
export PKG_CONFIG_PATH="$BUILD_DIR/pkgconfig"
make -s -C "$tmp/tips" CC="${CC:-cc}"
[ -f "$tmp/tips/build/tips.so" ] || fail "make built no build/tips.so"
make -s -C "$tmp/tips" test CQRSD="$CQRSD_BIN" | tee "$tmp/cases.out"
grep -q "7 cases: 7 passed, 0 failed, 0 skipped" "$tmp/cases.out" || fail "the cases did not all pass"

echo "--- a malformed case and a command without cases are failures, counted"
cp -r "$tmp/tips" "$tmp/bad"
mv "$tmp/bad/cases/tips.record" "$tmp/bad/tips.record.away"
mkdir -p "$tmp/bad/cases/tips.get/untyped"
cp "$tmp/bad/cases/tips.get/unknown_item/"* "$tmp/bad/cases/tips.get/untyped/"
echo '{"data": {"item_id": "x"}}' > "$tmp/bad/cases/tips.get/untyped/given.jsonl"
rc=0
(cd "$tmp/bad" && CQRSD_MODULES="$tmp/tips/build/tips.so" "$CQRSD_BIN" cases cases) \
  >"$tmp/bad.out" 2>&1 || rc=$?
cat "$tmp/bad.out"
[ "$rc" = 1 ] || fail "cqrsd cases exited $rc on a malformed case, not 1"
grep -q 'given.jsonl event 1: an event has a string "type"' "$tmp/bad.out" ||
  fail "no message names the event without a type"
grep -q "FAIL tips.record has no case folder" "$tmp/bad.out" || fail "no message for tips.record"
grep -q "^4 cases: 3 passed, 2 failed, 0 skipped" "$tmp/bad.out" || fail "the counts are wrong"

echo "--- a misspelt event type fails the build"
cp -r "$tmp/tips" "$tmp/typo"
sed -i 's/{EV_TipsRecorded, recorded}/{EV_TipsRecordd, recorded}/' "$tmp/typo/module.c"
grep -q EV_TipsRecordd "$tmp/typo/module.c" || fail "the typo was not made"
if make -s -C "$tmp/typo" clean all CC="${CC:-cc}" >"$tmp/typo.out" 2>&1; then
  fail "a module with a misspelt event type built"
fi
grep -q "EV_TipsRecordd.* undeclared" "$tmp/typo.out" || fail "no error names the misspelt type: $(cat "$tmp/typo.out")"

echo "--- make install, then the module against the installed cqrsd.pc"
make -s install PREFIX="$tmp/prefix" BUILD="$BUILD_DIR" >/dev/null
for f in bin/cqrsd bin/cqrsd-load lib/cqrsd/modules/ecommerce.so include/cqrsd/fn.h \
         include/cqrsd/err.def lib/pkgconfig/cqrsd.pc; do
  [ -e "$tmp/prefix/$f" ] || fail "make install put no $f"
done
export PKG_CONFIG_PATH="$tmp/prefix/lib/pkgconfig"
[ "$(pkg-config --variable=bindir cqrsd)" = "$tmp/prefix/bin" ] || fail "cqrsd.pc names another bindir"
make -s -C "$tmp/tips" clean all CC="${CC:-cc}"
make -s -C "$tmp/tips" test | tail -1 | grep -q "7 passed, 0 failed" || fail "cases fail with the installed cqrsd"

echo "--- serve it beside the e-commerce module and curl it"
db=cqrsd_kit
psql -q "$DATABASE_URL" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" -c "CREATE DATABASE $db" >/dev/null 2>&1 \
  || fail "could not create database $db"
dburl="${DATABASE_URL%/*}/$db"
redisurl="${REDIS_URL%/*}/6"
redis-cli -u "$redisurl" FLUSHDB >/dev/null
DATABASE_URL="$dburl" "$tmp/prefix/bin/cqrsd" migrate >/dev/null
addr=127.0.0.1:18098
url="http://$addr"
# CQRSD_MODULES names tips only beside the default: the installed e-commerce module
mods="$tmp/prefix/lib/cqrsd/modules/ecommerce.so:$tmp/tips/build/tips.so"
DATABASE_URL="$dburl" REDIS_URL="$redisurl" CQRSD_HTTP_ADDR=$addr CQRSD_MODULES="$mods" \
  "$tmp/prefix/bin/cqrsd" serve 2>>"${CQRSD_SERVER_LOG:-/dev/null}" &
server=$!
for _ in $(seq 100); do curl -fsS -m 1 "$url/healthz" >/dev/null 2>&1 && break; sleep 0.1; done
reply=$(curl -s -w '%{http_code}' -X POST "$url/tips/i1/records" -H 'Content-Type: application/json' \
  -d '{"amount":"2.50","note":"first"}')
echo "$reply"
for want in '"records":1' '"total":"2.50"' '"stream":"tips-i1"' $'}\n200'; do
  case "$reply" in *"$want"*) ;; *) fail "POST /tips/i1/records answered $reply" ;; esac
done
reply=$(curl -s -w '%{http_code}' -X POST "$url/tips/i1/records" -H 'Content-Type: application/json' \
  -d '{"amount":"-1"}')
case "$reply" in *'amounts are positive'*$'\n422') ;; *) fail "a negative amount got $reply" ;; esac
for _ in $(seq 100); do
  reply=$(curl -s "$url/tips/i1")
  [ "$reply" = '{"item_id":"i1","records":1,"total":"2.50"}' ] && break
  sleep 0.1
done
echo "$reply"
[ "$reply" = '{"item_id":"i1","records":1,"total":"2.50"}' ] || fail "GET /tips/i1 answered $reply"
curl -s "$url/admin/modules" | grep -q '"name":"tips"' || fail "/admin/modules does not list tips"
echo "test_kit: passed"
