#!/usr/bin/env bash
# tests/http/test_image.sh — the container image's run stage without an engine
# (issue 9, point 1): tools/image.sh assembles its file tree into a folder
# and checks every library linked comes from a package docker/Dockerfile's
# run stage installs; then cqrsd runs from that tree, as an unprivileged user
# when this runs as root (the image's USER), on make test's database:
#   - migrate is current, serve answers /readyz 200 with the module found at
#     the image's default path (/usr/local/lib/cqrsd/modules inside the tree);
#   - `cqrsd load` of the data set the image ships (a 200-line slice) is
#     applied and its summary printed.
# Needs CQRSD_BIN's build, DATABASE_URL and REDIS_URL (make test sets them).
set -uo pipefail
fail() { echo "test_image: $*" >&2; [ -f "${tmp:-/nonexistent}/serve.log" ] && tail -5 "$tmp/serve.log" >&2; exit 1; }
tmp=$(mktemp -d)
chmod 755 "$tmp"
tree=$tmp/rootfs
addr=127.0.0.1:18106
pid=
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT

out=$(bash tools/image.sh build "$tree" 2>&1) || fail "tools/image.sh build: $out"
echo "$out"
# run from a copy of the script: the unprivileged user may not read the clone
mkdir -p "$tmp/tools" && cp tools/image.sh "$tmp/tools/" && chmod -R a+rX "$tmp"
img=$tmp/tools/image.sh
as=()
if [ "$(id -u)" -eq 0 ]; then as=(runuser -u nobody --); fi # the image runs as a user of its own
"${as[@]}" env DATABASE_URL="$DATABASE_URL" bash "$img" run "$tree" migrate >/dev/null ||
  fail "migrate from the tree failed"
"${as[@]}" env -u CQRSD_MODULES DATABASE_URL="$DATABASE_URL" REDIS_URL="$REDIS_URL" CQRSD_HTTP_ADDR=$addr \
  CQRSD_AUTH=off CQRSD_LOG_LEVEL=info bash "$img" run "$tree" serve 2>"$tmp/serve.log" &
pid=$!
for _ in $(seq 100); do curl -fsS -m 1 "http://$addr/readyz" >/dev/null 2>&1 && break; sleep 0.1; done
code=$(curl -s -o "$tmp/ready.json" -w '%{http_code}' "http://$addr/readyz")
[ "$code" = 200 ] || fail "/readyz from the tree answered $code: $(cat "$tmp/ready.json")"
mods=$(curl -s "http://$addr/admin/modules")
grep -qF "\"path\":\"$tree/usr/local/bin/../lib/cqrsd/modules/ecommerce.so\"" <<<"$mods" ||
  fail "the module is not the tree's: $mods"
if [ -n "${as[*]}" ]; then
  pgrep -u nobody -f "$tree/usr/local/bin/cqrsd serve" >/dev/null || fail "the server does not run as nobody"
  pgrep -u root -f "$tree/usr/local/bin/cqrsd serve" >/dev/null && fail "the server runs as root"
fi
echo "serve from the tree as ${as[*]:+nobody}${as[*]:-this user}: ready; module $tree/usr/local/bin/../lib/cqrsd/modules/ecommerce.so"
zcat "$tree/usr/share/cqrsd/online-retail/online_retail_I.csv.gz" | head -201 >"$tmp/slice.csv"
chmod 644 "$tmp/slice.csv"
"${as[@]}" bash "$img" run "$tree" load "$tmp/slice.csv" --url "http://$addr" --quiet \
  >"$tmp/load.out" 2>"$tmp/load.err" || fail "load from the tree: $(tail -3 "$tmp/load.err")"
grep -q "^lines read *200$" "$tmp/load.out" && grep -q "^errors *0$" "$tmp/load.out" || fail "load summary: $(cat "$tmp/load.out")"
echo "load from the tree of the image's data set (200 lines): $(tr '\n' ' ' <"$tmp/load.out" | cut -c1-160)"
echo "test_image: passed"
