#!/usr/bin/env bash
# What a replica wait (WAIT) and Redis Cluster cost a store operation, measured straight through
# the store API (examples/store_bench.rs `redis`, no HTTP): TASKS concurrent inserts for DURATION
# seconds, then every session removed, against
#
#   - one Redis server, no replica (the plain redis:// store);
#   - a primary with two replicas behind three Sentinels, without and with WAIT 1;
#   - a six-node Redis Cluster (three primaries, a replica each), without and with WAIT 1.
#
# Every server is started here, on free loopback ports, in a temporary folder, and killed at exit.
#
# Usage: scripts/bench-redis-modes.sh
# Environment: DURATION=5, TASKS=32, PROFILE=release (or debug: quicker to build, slower client)
# Needs: cargo, redis-server, redis-cli, python3.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DURATION="${DURATION:-5}"
TASKS="${TASKS:-32}"
PROFILE="${PROFILE:-release}"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/sessionauth-redis-modes.XXXXXX")"

# shellcheck source=lib/redis-sets.sh
source "$ROOT/scripts/lib/redis-sets.sh"

cleanup() {
    local status=$?
    rs_stop
    rm -rf "$WORK"
    exit "$status"
}
trap cleanup EXIT

die() { printf 'FAIL  %s\n' "$*" >&2; exit 1; }

# server PORT [ARGS...]: a redis-server in the background.
server() { rs_server "$WORK" "$@"; }

if [[ "$PROFILE" == release ]]; then
    (cd "$ROOT" && cargo build --release --quiet --example store_bench) || die "cargo build"
else
    (cd "$ROOT" && cargo build --quiet --example store_bench) || die "cargo build"
fi
BENCH="$TARGET_DIR/$PROFILE/examples/store_bench"

mapfile -t P < <(rs_free_ports 1)
# One server.
server "${P[0]}"
rs_until 10 redis-cli -p "${P[0]}" ping || die "redis-server on ${P[0]}"
rs_start_sentinel_set "$WORK" || die "the Sentinel set did not come up"
rs_start_cluster "$WORK" || die "the cluster did not come up"
SENTINEL_URL="$RS_SENTINEL_URL"
CLUSTER_URL="$RS_CLUSTER_URL"

printf '\n%-34s %12s %12s\n' "store ($TASKS tasks, ${DURATION}s, $PROFILE)" "insert/s" "remove/s"
run() {
    local label="$1" url="$2" wait="$3" out
    out="$("$BENCH" redis --url "$url" --tasks "$TASKS" --duration "$DURATION" --wait-replicas "$wait")" ||
        die "$label: $out"
    local ins rem
    ins="$(sed -n 's/^RESULT insert_rps=\([0-9]*\).*/\1/p' <<<"$out")"
    rem="$(sed -n 's/^RESULT .*remove_rps=\([0-9]*\).*/\1/p' <<<"$out")"
    printf '%-34s %12s %12s\n' "$label" "$ins" "$rem"
}
run "redis:// (one server)" "redis://127.0.0.1:${P[0]}" 0
run "sentinel, no WAIT" "$SENTINEL_URL" 0
run "sentinel, WAIT 1" "$SENTINEL_URL" 1
run "cluster, no WAIT" "$CLUSTER_URL" 0
run "cluster, WAIT 1" "$CLUSTER_URL" 1
