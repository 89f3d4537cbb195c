#!/usr/bin/env bash
# tools/fuzz.sh BUILD — runs each libFuzzer target of BUILD/fuzz/ for
# FUZZ_SECONDS (default 30) seconds. Seeds are read from tests/fuzz/corpus/<target>/
# (kept in the repository); what a run finds goes to BUILD/corpus/<target>/.
# Exit status non-zero when a target crashes; the crashing input is kept
# as BUILD/crash-* and printed.
set -uo pipefail
cd "$(dirname "$0")/.."
build=${1:-build-fuzz}
secs=${FUZZ_SECONDS:-30}
failed=0; passed=0
for t in "$build"/fuzz/*; do
  [ -x "$t" ] || continue
  name=$(basename "$t")
  mkdir -p "$build/corpus/$name" "tests/fuzz/corpus/$name"
  echo "=== fuzz/$name for ${secs}s"
  if "$t" -max_total_time="$secs" -max_len=4096 -timeout=10 -rss_limit_mb=2048 \
       -artifact_prefix="$build/crash-$name-" -print_final_stats=1 \
       "$build/corpus/$name" "tests/fuzz/corpus/$name" 2>"$build/$name.log"; then
    passed=$((passed + 1))
    grep -E 'stat::number_of_executed_units|Done' "$build/$name.log" | tail -2
  else
    failed=$((failed + 1))
    echo "fuzz/$name found a crash:"; grep -E -A30 'ERROR|runtime error|deadly signal' "$build/$name.log" | head -40
    ls "$build"/crash-"$name"-* 2>/dev/null
  fi
done
echo "$passed passed, $failed failed"
[ $failed -eq 0 ]
