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
PIDS=()

cleanup() {
    local status=$?
    for pid in "${PIDS[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$WORK"
    exit "$status"
}
trap cleanup EXIT

die() { printf 'FAIL  %s\n' "$*" >&2; exit 1; }

# free_ports N: N distinct free loopback ports, one per line.
free_ports() {
    python3 - "$1" <<'PY'
import socket, sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks:
    s.bind(("127.0.0.1", 0))
print("\n".join(str(s.getsockname()[1]) for s in socks))
PY
}

# server PORT [ARGS...]: a redis-server in the background.
server() {
    local port="$1"
    shift
    redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no --daemonize no \
        --repl-diskless-sync-delay 0 --dir "$WORK" "$@" >"$WORK/redis-$port.log" 2>&1 &
    PIDS+=($!)
}

# until_true SECONDS COMMAND...: retries COMMAND every 0.1 s.
until_true() {
    local deadline=$(($(date +%s) + $1))
    shift
    until "$@" >/dev/null 2>&1; do
        (($(date +%s) < deadline)) || die "timed out: $*"
        sleep 0.1
    done
}

if [[ "$PROFILE" == release ]]; then
    (cd "$ROOT" && cargo build --release --quiet --example store_bench) || die "cargo build"
else
    (cd "$ROOT" && cargo build --quiet --example store_bench) || die "cargo build"
fi
BENCH="$TARGET_DIR/$PROFILE/examples/store_bench"

mapfile -t P < <(free_ports 22)

# One server.
server "${P[0]}"
# A primary, two replicas, three Sentinels.
server "${P[1]}"
server "${P[2]}" --replicaof 127.0.0.1 "${P[1]}"
server "${P[3]}" --replicaof 127.0.0.1 "${P[1]}"
for i in 4 5 6; do
    cat >"$WORK/sentinel-$i.conf" <<CONF
port ${P[$i]}
bind 127.0.0.1
dir $WORK
sentinel monitor bench 127.0.0.1 ${P[1]} 2
sentinel down-after-milliseconds bench 1000
sentinel failover-timeout bench 3000
CONF
    redis-server "$WORK/sentinel-$i.conf" --sentinel >"$WORK/sentinel-$i.log" 2>&1 &
    PIDS+=($!)
done
# Six cluster nodes (client ports P[7..12], bus ports P[13..18]).
for i in 0 1 2 3 4 5; do
    server "${P[$((7 + i))]}" --cluster-enabled yes --cluster-port "${P[$((13 + i))]}" \
        --cluster-config-file "nodes-${P[$((7 + i))]}.conf" --cluster-node-timeout 2000
done
for port in "${P[@]:0:4}" "${P[@]:7:6}"; do
    until_true 10 redis-cli -p "$port" ping
done
nodes=()
for i in 0 1 2 3 4 5; do nodes+=("127.0.0.1:${P[$((7 + i))]}"); done
redis-cli --cluster create "${nodes[@]}" --cluster-replicas 1 --cluster-yes >"$WORK/create.log" 2>&1 ||
    die "redis-cli --cluster create: $(tail -n 5 "$WORK/create.log")"
cluster_ready() {
    local online=0
    for i in 0 1 2 3 4 5; do
        local port="${P[$((7 + i))]}"
        redis-cli -p "$port" cluster info | grep -q cluster_state:ok || return 1
        if redis-cli -p "$port" info replication | grep -q 'state=online'; then
            online=$((online + 1))
        fi
    done
    ((online == 3))
}
until_true 30 cluster_ready
sentinels_ready() {
    for i in 4 5 6; do
        redis-cli -p "${P[$i]}" sentinel master bench | grep -A1 -x num-other-sentinels | grep -qx 2 || return 1
        redis-cli -p "${P[$i]}" sentinel master bench | grep -A1 -x num-slaves | grep -qx 2 || return 1
    done
}
until_true 30 sentinels_ready

SENTINEL_URL="redis+sentinel://127.0.0.1:${P[4]},127.0.0.1:${P[5]},127.0.0.1:${P[6]}/bench"
CLUSTER_URL="redis+cluster://$(IFS=,; echo "${nodes[*]}")"

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
