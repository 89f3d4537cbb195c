#!/usr/bin/env bash
# tests/http/test_auth.sh — API keys and TLS (issue 8, point 6), against a
# real server of its own with CQRSD_AUTH=on, serving HTTPS with a self-signed
# certificate made here (127.0.0.1:18105), on make test's database:
#   - `cqrsd keys create` prints a key once; PostgreSQL holds only its
#     SHA-256; `keys list` shows no secret; a bad scope is exit 2;
#   - no key: 401 problem with WWW-Authenticate: Bearer; a query key runs
#     queries and gets 403 for a command and for /metrics; a command key sends
#     commands; an admin key reads /admin/projections and /metrics;
#     /healthz, /readyz, /openapi.json and /problems/* need none;
#   - a revoked key is refused within a second;
#   - TLS: plain HTTP to the port gets no answer, HTTPS with the certificate
#     does; a key file that is no key stops serve with a message.
# Needs CQRSD_BIN, DATABASE_URL (make test sets them), openssl and jq.
set -uo pipefail
fail() { echo "test_auth: $*" >&2; [ -n "${log:-}" ] && tail -5 "$log" >&2; exit 1; }
addr=127.0.0.1:18105
url=https://$addr
tmp=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done; rm -rf "$tmp"; }
trap cleanup EXIT

# keys
out=$("$CQRSD_BIN" keys create --scope query --name "test_auth query" 2>"$tmp/create.err") || fail "keys create: $(cat "$tmp/create.err")"
kq=$(tail -1 <<<"$out")
[[ "$kq" =~ ^cqrsd_[0-9a-f]{64}$ ]] || fail "keys create printed \"$out\""
idq=$(grep -o 'API key [0-9]*' "$tmp/create.err" | grep -o '[0-9]*$')
kc=$("$CQRSD_BIN" keys create --scope command 2>/dev/null)
ka=$("$CQRSD_BIN" keys create --scope admin,query 2>/dev/null)
[ -n "$idq" ] && [ -n "$kc" ] && [ -n "$ka" ] || fail "could not create the keys"
list=$("$CQRSD_BIN" keys list) || fail "keys list failed"
grep -q "^$idq .*query .*test_auth query" <<<"$list" || fail "keys list lacks key $idq: $list"
grep -q "${kq#cqrsd_}" <<<"$list" && fail "keys list shows a secret"
stored=$(psql "$DATABASE_URL" -Atc "SELECT encode(hash, 'hex') FROM api_keys WHERE id = $idq")
[ "$stored" = "$(printf %s "$kq" | sha256sum | cut -d' ' -f1)" ] || fail "stored hash $stored is not the key's SHA-256"
psql "$DATABASE_URL" -Atc "SELECT count(*) FROM api_keys WHERE hash::text LIKE '%${kq#cqrsd_}%' OR name LIKE '%${kq#cqrsd_}%'" | grep -qx 0 || fail "the key is stored in clear"
err=$("$CQRSD_BIN" keys create --scope commands 2>&1); rc=$?
[ $rc -eq 2 ] && grep -q 'scope "commands" is not one of command, query, admin' <<<"$err" || fail "a bad scope: exit $rc: $err"
echo "keys: created $idq and two more; list shows prefixes only; SHA-256 stored"

# a self-signed certificate for 127.0.0.1
openssl req -x509 -newkey rsa:2048 -nodes -keyout "$tmp/key.pem" -out "$tmp/cert.pem" -days 1 \
  -subj "/CN=127.0.0.1" -addext "subjectAltName=IP:127.0.0.1" 2>"$tmp/openssl.log" || fail "openssl: $(cat "$tmp/openssl.log")"
err=$(CQRSD_HTTP_ADDR=$addr CQRSD_AUTH=on CQRSD_TLS_CERT="$tmp/cert.pem" CQRSD_TLS_KEY="$tmp/cert.pem" timeout 10 "$CQRSD_BIN" serve 2>&1 >/dev/null); rc=$?
[ $rc -eq 2 ] && grep -q "could not serve TLS" <<<"$err" || fail "a certificate as the key: exit $rc: $(tail -1 <<<"$err")"
log=$tmp/server.log
CQRSD_HTTP_ADDR=$addr CQRSD_AUTH=on CQRSD_TLS_CERT="$tmp/cert.pem" CQRSD_TLS_KEY="$tmp/key.pem" \
  CQRSD_LOG_LEVEL=info "$CQRSD_BIN" serve 2>"$log" &
pids+=($!)
C=(curl -s -m 10 --cacert "$tmp/cert.pem")
for _ in $(seq 100); do "${C[@]}" -f "$url/healthz" >/dev/null 2>&1 && break; sleep 0.1; done
"${C[@]}" -f "$url/healthz" >/dev/null || fail "the HTTPS server did not start"
code=$(curl -s -m 3 -o /dev/null -w '%{http_code}' "http://$addr/healthz")
[ "$code" = 000 ] || fail "plain HTTP to the TLS port answered $code"
grep -q "serving on https://$addr" "$log" || fail "the log does not say https"
echo "TLS: HTTPS answers with the self-signed certificate, plain HTTP does not"

st() { # method path key [body]: the status; the body in $tmp/body
  local a=()
  [ -n "$3" ] && a+=(-H "Authorization: Bearer $3")
  [ -n "${4:-}" ] && a+=(-H 'Content-Type: application/json' -d "$4")
  "${C[@]}" -o "$tmp/body" -D "$tmp/headers" -w '%{http_code}' -X "$1" "${a[@]}" "$url$2"
}
[ "$(st GET /carts/nobody "")" = 401 ] || fail "no key: $(cat "$tmp/body")"
grep -qi '^WWW-Authenticate: Bearer realm="cqrsd"' "$tmp/headers" || fail "no WWW-Authenticate on the 401"
jq -e '.type == "/problems/unauthorized" and .status == 401' "$tmp/body" >/dev/null || fail "401 body: $(cat "$tmp/body")"
grep -qi '^content-type: application/problem+json' "$tmp/headers" || fail "401 is not problem+json"
[ "$(st GET /carts/nobody "cqrsd_0000")" = 401 ] && grep -q 'not valid' "$tmp/body" || fail "a wrong key: $(cat "$tmp/body")"
[ "$(st GET /carts/nobody "$kq")" = 404 ] || fail "a query key on a query: $(cat "$tmp/body")"
[ "$(st POST /carts "$kq" '{}')" = 403 ] && jq -e '.type == "/problems/forbidden"' "$tmp/body" >/dev/null &&
  grep -q "has no command scope" "$tmp/body" || fail "a query key on a command: $(cat "$tmp/body")"
[ "$(st POST /carts "$kc" '{}')" = 201 ] || fail "a command key on a command: $(cat "$tmp/body")"
[ "$(st GET /metrics "$kq")" = 403 ] || fail "a query key on /metrics: $(cat "$tmp/body")"
[ "$(st GET /metrics "$ka")" = 200 ] || fail "an admin key on /metrics: $(cat "$tmp/body")"
[ "$(st GET /admin/projections "$ka")" = 200 ] || fail "an admin key on /admin/projections: $(cat "$tmp/body")"
[ "$(st GET /admin/projections "")" = 401 ] || fail "/admin/projections without a key: $(cat "$tmp/body")"
for p in /healthz /readyz /openapi.json /problems/unauthorized /admin; do
  [ "$(st GET "$p" "")" = 200 ] || fail "$p without a key: $(head -c 300 "$tmp/body")"
done
jq -e '.components.securitySchemes.bearer.scheme == "bearer" and (.paths["/carts"].post.security | length == 1) and (.paths["/carts"].post.responses | has("401") and has("403"))' \
  <("${C[@]}" "$url/openapi.json") >/dev/null || fail "/openapi.json does not describe the keys"
echo "scopes: 401 without a key, 403 without the scope, 200/201 with it; probes and docs open"

"$CQRSD_BIN" keys revoke "$idq" >/dev/null || fail "keys revoke $idq failed"
t0=$(date +%s%N)
for _ in $(seq 40); do [ "$(st GET /carts/nobody "$kq")" = 401 ] && break; sleep 0.05; done
ms=$(( ($(date +%s%N) - t0) / 1000000 ))
[ "$(st GET /carts/nobody "$kq")" = 401 ] || fail "the revoked key still works after $ms ms"
[ "$ms" -le 1000 ] || fail "the revocation took $ms ms"
"$CQRSD_BIN" keys revoke 999999999 2>/dev/null && fail "revoking no key exited 0"
echo "revoked key $idq: refused after $ms ms"
echo "test_auth: passed"
