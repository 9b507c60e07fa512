#!/usr/bin/env bash
# Runs every fuzz target in fuzz/ for a bounded time (default 30 s each) from its seeds
# (fuzz/seeds/<target>) and a scratch corpus; fails when any target crashes, hangs or runs out
# of memory. CI runs this so that a regression in a parser is caught; a long local run is
#   scripts/fuzz-smoke.sh 1800          (30 minutes per target)
# On the stable toolchain the targets are built without a sanitizer (`-s none`): libFuzzer's
# coverage guidance, panics and out-of-memory and timeout detection all work; memory errors
# cannot occur in this crate (`unsafe_code = "forbid"`).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SECS=${1:-30}
export PATH="$HOME/.cargo/bin:$PATH"
command -v cargo-fuzz >/dev/null 2>&1 || cargo install --locked cargo-fuzz

cd "$ROOT/fuzz"
cargo fuzz build -s none
failed=0
printf '%-14s %14s %10s %s\n' target executions seconds result
for target in $(cargo fuzz list); do
  corpus=$(mktemp -d)
  log=$(mktemp)
  if cargo fuzz run -s none "$target" "$corpus" "seeds/$target" -- \
      -max_total_time="$SECS" -timeout=10 -rss_limit_mb=2048 -max_len=65536 \
      -print_final_stats=1 >"$log" 2>&1; then
    result=ok
  else
    result=FAILED
    failed=1
  fi
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  took=$(sed -n 's/^Done [0-9]* runs in \([0-9]*\) second.*/\1/p' "$log" | tail -1)
  printf '%-14s %14s %10s %s\n' "$target" "${runs:-?}" "${took:-?}" "$result"
  if [[ $result == FAILED ]]; then
    tail -n 40 "$log" >&2
    ls artifacts/"$target" 2>/dev/null >&2 || true
  fi
  rm -rf "$corpus" "$log"
done
exit "$failed"
