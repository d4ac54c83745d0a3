#!/usr/bin/env bash
# Builds every fuzz target once, seeds the corpora, then runs each target for SECONDS (default
# 60) at the lowest CPU priority, printing libFuzzer's final line ("Done N runs in S second(s)").
# Crashes land in fuzz/artifacts/<target>/. Stable toolchain: RUSTC_BOOTSTRAP=1 unlocks -Z flags.
set -u
cd "$(dirname "$0")"
SECONDS_PER_TARGET=${1:-60}
export RUSTC_BOOTSTRAP=1
nice -n 19 cargo fuzz build || exit 1
python3 seed.py
for t in $(cargo fuzz list); do
  mkdir -p "corpus/$t" "artifacts/$t"
  # -rss_limit_mb/-malloc_limit_mb: a single input asking for more than 2 GiB is reported.
  nice -n 19 cargo fuzz run "$t" "corpus/$t" -- -max_total_time="$SECONDS_PER_TARGET" \
    -rss_limit_mb=2048 -malloc_limit_mb=2048 -print_final_stats=1 > "artifacts/$t.log" 2>&1
  echo "$t: exit $? $(grep -E '^Done [0-9]+ runs' "artifacts/$t.log")" \
    "$(grep -c 'ERROR: libFuzzer\|panicked at' "artifacts/$t.log") crash reports"
done
