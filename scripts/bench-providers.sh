#!/usr/bin/env bash
# Compares the two crypto providers sessionauth can be built with (src/crypto.rs): AWS-LC (the
# default) and *ring* (`--no-default-features --features ring`), side by side in one run. Each
# provider has its own sessionauth and its own null server (bench/) on that provider; every round runs
# scripts/bench.sh (keep-alive authenticate, /health, sessioninfo, full-handshake authenticate,
# each beside the null server) and scripts/bench-rsa.sh (RS512 JWT login with 2048- and 4096-bit
# keys, /login/idm/tokens signed RS256) once per provider, the order alternating from round to
# round. Printed: each round's output, then per row the median rate of each provider and their
# ratio (aws-lc-rs / ring).
#
# Usage: scripts/bench-providers.sh [DURATION] [CONNECTIONS]     (defaults: 10s, 32)
# Environment:
#   BENCH_PROVIDER_ROUNDS=2   rounds (each runs every row once per provider)
#   the binaries, built when missing:
#     target/release/sessionauth, target/ring/release/sessionauth,
#     bench/target/release/null-server, bench/target/ring/release/null-server
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DURATION=${1:-10s}
CONNS=${2:-32}
ROUNDS=${BENCH_PROVIDER_ROUNDS:-2}

declare -A SA NULL
SA[aws-lc-rs]=$ROOT/target/release/sessionauth
SA[ring]=$ROOT/target/ring/release/sessionauth
NULL[aws-lc-rs]=$ROOT/bench/target/release/null-server
NULL[ring]=$ROOT/bench/target/ring/release/null-server

[[ -x ${SA[aws-lc-rs]} ]] || (cd "$ROOT" && cargo build --release)
[[ -x ${SA[ring]} ]] || (cd "$ROOT" && cargo build --release --no-default-features \
  --features ring --target-dir target/ring)
[[ -x ${NULL[aws-lc-rs]} ]] || cargo build --release --manifest-path "$ROOT/bench/Cargo.toml"
[[ -x ${NULL[ring]} ]] || cargo build --release --manifest-path "$ROOT/bench/Cargo.toml" \
  --no-default-features --features ring --target-dir "$ROOT/bench/target/ring"

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

for round in $(seq 1 "$ROUNDS"); do
  if ((round % 2)); then order=(ring aws-lc-rs); else order=(aws-lc-rs ring); fi
  for provider in "${order[@]}"; do
    echo "== round $round: $provider =="
    SESSIONAUTH_BIN=${SA[$provider]} NULL_SERVER_BIN=${NULL[$provider]} BENCH_ROUNDS=1 \
      BENCH_FILL=0 "$ROOT/scripts/bench.sh" "$DURATION" "$CONNS" | tee "$WORK/$round-$provider.txt"
  done
done

python3 - "$WORK" "$ROUNDS" <<'PY'
import glob, os, re, statistics, sys
work, rounds = sys.argv[1], int(sys.argv[2])
rates = {}  # (row, provider) -> [rates]
order = []
for path in sorted(glob.glob(os.path.join(work, "*.txt"))):
    provider = os.path.basename(path)[:-4].split("-", 1)[1]
    section = None
    for line in open(path):
        line = line.rstrip("\n")
        if line.startswith("scenario (medians)"):
            section = "bench"; continue
        if line.startswith("scenario ") and "req/s" in line:
            section = "rsa"; continue
        if not line.strip() or line.startswith(("sessionauth ", "null-server", "round", "end,", "  ")):
            if not line.strip():
                section = None if section == "bench" else section
            continue
        if section == "bench":
            m = re.match(r"^(.*?)\s+(\d+)\s+(\d+)\s+([\d.]+)\s", line)
            if m:
                for name, value in (("sessionauth", m.group(2)), ("null server", m.group(3))):
                    row = "%s (%s)" % (m.group(1), name)
                    if row not in order: order.append(row)
                    rates.setdefault((row, provider), []).append(float(value))
        elif section == "rsa":
            m = re.match(r"^(.*?)\s+(\d+)\s+\S+\s+[\d.]+\s+[\d.]+\s+\d+$", line)
            if m:
                row = m.group(1)
                if row not in order: order.append(row)
                rates.setdefault((row, provider), []).append(float(m.group(2)))
print()
print("%-70s %10s %10s %8s" % ("row (medians of %d rounds, req/s)" % rounds, "ring", "aws-lc-rs", "aws/ring"))
for row in order:
    r, a = rates.get((row, "ring")), rates.get((row, "aws-lc-rs"))
    if not r or not a:
        continue
    mr, ma = statistics.median(r), statistics.median(a)
    print("%-70s %10.0f %10.0f %8.2f" % (row, mr, ma, ma / mr))
PY
