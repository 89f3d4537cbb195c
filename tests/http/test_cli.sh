#!/usr/bin/env bash
# tests/http/test_cli.sh — every subcommand answers --help with its usage on
# stdout and exit 0, and does nothing else: `serve --help` starts no server
# (the address it would serve stays free); a subcommand that takes no
# argument refuses one with exit 2 and its usage.
# Needs CQRSD_BIN (make test sets it).
set -uo pipefail
fail() { echo "test_cli: $*" >&2; exit 1; }
addr=127.0.0.1:18097
for sub in serve migrate projections replay cases new load; do
  out=$(CQRSD_HTTP_ADDR=$addr timeout 5 "$CQRSD_BIN" "$sub" --help 2>/dev/null); rc=$?
  [ "$rc" -eq 0 ] || fail "cqrsd $sub --help exited $rc"
  grep -q "^usage: cqrsd $sub" <<<"$out" || fail "cqrsd $sub --help printed: $out"
  echo "cqrsd $sub --help: ok"
done
# nothing listens where serve --help would have served
(exec 3<>"/dev/tcp/${addr%:*}/${addr#*:}") 2>/dev/null && fail "serve --help left a server on $addr"
for sub in serve migrate projections; do
  err=$("$CQRSD_BIN" "$sub" extra 2>&1 >/dev/null); rc=$?
  [ "$rc" -eq 2 ] || fail "cqrsd $sub extra exited $rc"
  grep -q "takes no arguments, got \"extra\"" <<<"$err" || fail "cqrsd $sub extra said: $err"
  echo "cqrsd $sub extra: exit 2"
done
echo "test_cli: passed"
