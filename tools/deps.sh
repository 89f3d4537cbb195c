#!/usr/bin/env bash
# tools/deps.sh — make sure the Debian packages cqrsd builds and runs with are installed.
#
# As root, installs what is missing with apt-get. Otherwise prints the exact
# apt-get line to run and exits 1. Prints nothing and exits 0 when all is there.
set -euo pipefail

PKGS=(gcc make pkg-config
      libpq-dev libmicrohttpd-dev libjansson-dev libhiredis-dev libcmocka-dev
      libcurl4-openssl-dev libssl-dev zlib1g-dev libcsv-dev
      postgresql-15 postgresql-client-15 redis-server redis-tools
      tzdata curl ca-certificates procps)
if [ "${1:-}" = "--test" ] || [ "${1:-}" = "--extra" ]; then
  # the tests read JSON (jq), render GET /admin (chromium), make a TLS
  # certificate (openssl), check replies against /openapi.json (jsonschema)
  # parse deploy/k8s and docker/compose.yaml (yaml) and run the compose
  # proxy's configuration (haproxy)
  PKGS+=(jq chromium openssl python3-jsonschema python3-yaml haproxy)
fi
if [ "${1:-}" = "--extra" ]; then
  PKGS+=(clang valgrind libclang-rt-14-dev)
elif [ "${1:-}" = "--bench" ]; then
  PKGS+=(wrk)  # pgbench is in postgresql-client-15, redis-benchmark in redis-tools
fi

missing=()
for p in "${PKGS[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
  echo "cqrsd: missing Debian packages: ${missing[*]}" >&2
  echo "run as root:  apt-get update && apt-get install -y ${missing[*]}" >&2
  exit 1
fi
echo "cqrsd: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
