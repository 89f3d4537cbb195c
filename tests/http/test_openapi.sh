#!/usr/bin/env bash
# tests/http/test_openapi.sh — GET /openapi.json against the real replies of
# tests/http/test_api.c (issue 8, point 8): tests/http/check_openapi.py.
# Needs CQRSD_URL and CQRSD_API_RECORD (make test sets them; test_api runs
# first and writes the record) and python3-jsonschema (tools/deps.sh --test).
set -uo pipefail
[ -s "${CQRSD_API_RECORD:?run it with make test}" ] || { echo "test_openapi: $CQRSD_API_RECORD is empty: test_api did not run" >&2; exit 1; }
exec /usr/bin/python3 "$(dirname "$0")/check_openapi.py" "${CQRSD_URL:?}" "$CQRSD_API_RECORD"
