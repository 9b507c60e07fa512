# shellcheck shell=bash
# Redis topologies on loopback for the benchmark scripts: a Sentinel set (a primary, two
# replicas, three Sentinels) and a six-node Redis Cluster (three primaries, a replica each).
# Source it; every process started is appended to RS_PIDS, which the caller kills at exit
# (rs_stop does it). Needs redis-server, redis-cli and python3.
#
#   source "$ROOT/scripts/lib/redis-sets.sh"
#   rs_start_sentinel_set "$WORK"   # sets RS_SENTINEL_URL (service name "bench")
#   rs_start_cluster "$WORK"        # sets RS_CLUSTER_URL
#   rs_stop

RS_PIDS=()

# rs_free_ports N: N distinct free loopback ports, one per line.
rs_free_ports() {
    python3 - "$1" <<'PY'
import socket, sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks:
    s.bind(("127.0.0.1", 0))
print("\n".join(str(s.getsockname()[1]) for s in socks))
PY
}

# rs_server DIR PORT [ARGS...]: a redis-server in the background, no persistence.
rs_server() {
    local dir="$1" port="$2"
    shift 2
    redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no --daemonize no \
        --repl-diskless-sync-delay 0 --dir "$dir" "$@" >"$dir/redis-$port.log" 2>&1 &
    RS_PIDS+=($!)
}

# rs_until SECONDS COMMAND...: retries COMMAND every 0.1 s; returns 1 on timeout.
rs_until() {
    local deadline=$(($(date +%s) + $1))
    shift
    until "$@" >/dev/null 2>&1; do
        (($(date +%s) < deadline)) || { echo "timed out: $*" >&2; return 1; }
        sleep 0.1
    done
}

# rs_start_sentinel_set DIR: a primary, two replicas and three Sentinels (quorum 2,
# down-after 1 s), ready when every Sentinel sees the others and both replicas.
rs_start_sentinel_set() {
    local dir="$1" p i
    mapfile -t p < <(rs_free_ports 6)
    rs_server "$dir" "${p[0]}"
    rs_server "$dir" "${p[1]}" --replicaof 127.0.0.1 "${p[0]}"
    rs_server "$dir" "${p[2]}" --replicaof 127.0.0.1 "${p[0]}"
    for i in 3 4 5; do
        cat >"$dir/sentinel-${p[$i]}.conf" <<CONF
port ${p[$i]}
bind 127.0.0.1
dir $dir
sentinel monitor bench 127.0.0.1 ${p[0]} 2
sentinel down-after-milliseconds bench 1000
sentinel failover-timeout bench 3000
CONF
        redis-server "$dir/sentinel-${p[$i]}.conf" --sentinel >"$dir/sentinel-${p[$i]}.log" 2>&1 &
        RS_PIDS+=($!)
    done
    for i in 0 1 2; do rs_until 10 redis-cli -p "${p[$i]}" ping || return 1; done
    _rs_sentinels_ready() {
        local port
        for port in "$@"; do
            redis-cli -p "$port" sentinel master bench | grep -A1 -x num-other-sentinels | grep -qx 2 || return 1
            redis-cli -p "$port" sentinel master bench | grep -A1 -x num-slaves | grep -qx 2 || return 1
        done
    }
    rs_until 30 _rs_sentinels_ready "${p[3]}" "${p[4]}" "${p[5]}" || return 1
    RS_SENTINEL_URL="redis+sentinel://127.0.0.1:${p[3]},127.0.0.1:${p[4]},127.0.0.1:${p[5]}/bench"
}

# rs_start_cluster DIR: six cluster nodes, three primaries with a replica each, ready when the
# cluster is ok on every node and three replicas are online.
rs_start_cluster() {
    local dir="$1" p i nodes=()
    mapfile -t p < <(rs_free_ports 12)
    for i in 0 1 2 3 4 5; do
        rs_server "$dir" "${p[$i]}" --cluster-enabled yes --cluster-port "${p[$((6 + i))]}" \
            --cluster-config-file "nodes-${p[$i]}.conf" --cluster-node-timeout 2000
    done
    for i in 0 1 2 3 4 5; do
        rs_until 10 redis-cli -p "${p[$i]}" ping || return 1
        nodes+=("127.0.0.1:${p[$i]}")
    done
    redis-cli --cluster create "${nodes[@]}" --cluster-replicas 1 --cluster-yes >"$dir/create.log" 2>&1 || {
        echo "redis-cli --cluster create: $(tail -n 5 "$dir/create.log")" >&2
        return 1
    }
    _rs_cluster_ready() {
        local online=0 port
        for port in "$@"; do
            redis-cli -p "$port" cluster info | grep -q cluster_state:ok || return 1
            if redis-cli -p "$port" info replication | grep -q 'state=online'; then
                online=$((online + 1))
            fi
        done
        ((online == 3))
    }
    rs_until 30 _rs_cluster_ready "${p[@]:0:6}" || return 1
    RS_CLUSTER_URL="redis+cluster://$(IFS=,; echo "${nodes[*]}")"
}

# rs_stop: kills every process started here.
rs_stop() {
    local pid
    for pid in "${RS_PIDS[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
    for pid in "${RS_PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    RS_PIDS=()
}
