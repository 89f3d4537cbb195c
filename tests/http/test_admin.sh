#!/usr/bin/env bash
# tests/http/test_admin.sh — pause and resume, and the admin page (issue 8,
# point 3), against make test's server ($CQRSD_URL):
#   - POST /admin/projections/cart_view/pause: 200, state "paused" in GET
#     /admin/projections; a new cart leaves cart_view behind (lag 1 or more)
#     while the others catch up; cqrsd_projection_state says paused;
#   - GET /admin rendered by headless Chromium: the page names every
#     projection with its state, the functions and the parked events; a
#     screenshot is written and its path printed;
#   - POST .../resume: cart_view catches up, state "running";
#   - pause of a projection not loaded: 404 problem.
# Needs CQRSD_URL (make test sets it) and chromium (tools/deps.sh --test).
set -uo pipefail
url=${CQRSD_URL:?run it with make test}
shots=${CQRSD_TEST_ARTIFACTS:-$PWD/.run/test}
mkdir -p "$shots"
tmp=$(mktemp -d)
resume() { curl -s -X POST "$url/admin/projections/cart_view/resume" >/dev/null; }
trap 'resume; rm -rf "$tmp"' EXIT
fail() { echo "test_admin: $*" >&2; exit 1; }
state() { curl -s "$url/admin/projections" | jq -r --arg n "$1" '.projections[] | select(.name == $n) | .state'; }
lag() { curl -s "$url/admin/projections" | jq -r --arg n "$1" '.projections[] | select(.name == $n) | .lag_events'; }
command -v chromium >/dev/null || fail "chromium is not installed (bash tools/deps.sh --test)"

code=$(curl -s -o "$tmp/p.json" -w '%{http_code}' -X POST "$url/admin/projections/cart_view/pause")
[ "$code" = 200 ] || fail "pause answered $code: $(cat "$tmp/p.json")"
jq -e '.state == "paused" and (.paused_at | test("^20..-..-..T..:..:..(\\.[0-9]+)?[+-]..:..$"))' "$tmp/p.json" >/dev/null ||
  fail "pause replied $(cat "$tmp/p.json")"
# again: the same, paused since the first time
code=$(curl -s -o "$tmp/p2.json" -w '%{http_code}' -X POST "$url/admin/projections/cart_view/pause")
[ "$code" = 200 ] && [ "$(jq -r .paused_at "$tmp/p2.json")" = "$(jq -r .paused_at "$tmp/p.json")" ] ||
  fail "a second pause: $code $(cat "$tmp/p2.json")"
[ "$(state cart_view)" = paused ] || fail "state after pause: $(state cart_view)"
echo "paused: $(cat "$tmp/p.json")"

cart="admin-$$-$RANDOM"
code=$(curl -s -o /dev/null -w '%{http_code}' -X POST "$url/carts" -H 'Content-Type: application/json' -d "{\"cart_id\":\"$cart\"}")
[ "$code" = 201 ] || fail "POST /carts answered $code"
for _ in $(seq 100); do [ "$(lag order_view)" = 0 ] && [ "$(lag stats)" = 0 ] && break; sleep 0.1; done
sleep 0.5 # the runner has had rounds since: cart_view stays where it was
l=$(lag cart_view)
[ "$l" -ge 1 ] || fail "cart_view is paused but its lag is $l"
[ "$(state cart_view)" = paused ] || fail "state: $(state cart_view)"
code=$(curl -s -o /dev/null -w '%{http_code}' "$url/carts/$cart")
[ "$code" = 404 ] || fail "a paused cart_view served the new cart: $code"
metrics=$(curl -s "$url/metrics")
grep -qx 'cqrsd_projection_state{projection="cart_view",version="1",state="paused"} 1' <<<"$metrics" ||
  fail "the metrics do not say cart_view is paused: $(grep 'state{projection="cart_view"' <<<"$metrics")"
echo "cart_view paused with lag $l; the others caught up"

# the page, rendered (its script fetched the admin routes and filled the tables)
timeout 60 chromium --headless --no-sandbox --disable-gpu --hide-scrollbars --window-size=1200,1000 \
  --virtual-time-budget=5000 --dump-dom "$url/admin" >"$tmp/dom.html" 2>"$tmp/chromium.log" ||
  fail "chromium --dump-dom failed: $(tail -3 "$tmp/chromium.log")"
timeout 60 chromium --headless --no-sandbox --disable-gpu --hide-scrollbars --window-size=1200,1000 \
  --virtual-time-budget=5000 --screenshot="$shots/admin.png" "$url/admin" >/dev/null 2>>"$tmp/chromium.log" ||
  fail "chromium --screenshot failed: $(tail -3 "$tmp/chromium.log")"
[ -s "$shots/admin.png" ] || fail "no screenshot"
for p in cart_view order_view customer product stats; do
  grep -q "<tr><td>$p</td>" "$tmp/dom.html" || fail "the rendered page has no row for $p"
done
grep -q '<tr><td>cart_view</td><td class="num">1</td><td class="state-paused">paused</td>' "$tmp/dom.html" ||
  fail "the rendered page does not show cart_view paused: $(grep -o '<tr><td>cart_view.\{0,200\}' "$tmp/dom.html")"
grep -q '<button>resume</button>' "$tmp/dom.html" || fail "no resume button for the paused projection"
for t in '<td>cart.open</td><td>command</td><td>POST /carts</td>' 'Parked events' 'Recent errors' ' behind · '; do
  grep -qF "$t" "$tmp/dom.html" || fail "the rendered page lacks \"$t\""
done
grep -q '<div id="error"></div>' "$tmp/dom.html" || fail "the page shows an error: $(grep -o '<div id="error">[^<]*' "$tmp/dom.html")"
echo "GET /admin rendered: 5 projections, cart_view paused; screenshot $shots/admin.png ($(stat -c %s "$shots/admin.png") bytes)"

code=$(curl -s -o "$tmp/r.json" -w '%{http_code}' -X POST "$url/admin/projections/cart_view/resume")
[ "$code" = 200 ] && jq -e '.state == "resumed" and .paused_at == null' "$tmp/r.json" >/dev/null ||
  fail "resume: $code $(cat "$tmp/r.json")"
for _ in $(seq 100); do [ "$(lag cart_view)" = 0 ] && break; sleep 0.1; done
[ "$(lag cart_view)" = 0 ] || fail "cart_view did not catch up after resume (lag $(lag cart_view))"
[ "$(state cart_view)" = running ] || fail "state after resume: $(state cart_view)"
code=$(curl -s -o /dev/null -w '%{http_code}' "$url/carts/$cart")
[ "$code" = 200 ] || fail "after resume GET /carts/$cart answered $code"
echo "resumed: cart_view caught up"

code=$(curl -s -o "$tmp/n.json" -w '%{http_code}' -X POST "$url/admin/projections/nope/pause")
[ "$code" = 404 ] && grep -q 'no projection \\"nope\\"' "$tmp/n.json" || fail "pause of nope: $code $(cat "$tmp/n.json")"
echo "test_admin: passed"
