#!/usr/bin/env bash
# Benchmarks the session stores side by side, in one run, on the release binary:
#
#   1. For each store (memory, embedded, redis, sentinel, cluster, postgres): keep-alive authenticate with oha, and keep-alive
#      logout with examples/store_bench.rs, both at 32 concurrent connections over mTLS.
#      oha sends the same request over and over, and a logout needs a fresh token each time, so
#      store_bench first authenticates for DURATION seconds on 32 connections (keeping every
#      token) and then logs all of them out on the same connections; its logout rate is the
#      logout figure. Goals: embedded at least 0.7 of memory's requests per second (issue 11),
#      redis at least 0.5
#      (Redis behind Sentinel and Redis Cluster, both started here with WAIT for one replica,
#      and PostgreSQL are measured and compared with memory, without a goal).
#   2. With FILL (default 1,000,000) live sessions in the embedded store: start-up time (exec to
#      the "listening" log line) after a clean stop and after SIGKILL, authenticate throughput,
#      resident memory (VmRSS) compared with an empty store after the same load, and the
#      database's size on disk per session.
#
# Usage: scripts/bench-stores.sh            (from anywhere; builds what it needs)
# Environment:
#   DURATION=10              seconds per measurement
#   FILL=1000000             sessions for part 2 (0 skips part 2)
#   CAP=0                    limits.max_sessions_per_user (0: none). With CAP=1000, the
#                            default, every authenticate past the first 1,000 also evicts the
#                            bot's oldest session (the single-user case of issue 11); the
#                            logout runs are then skipped (most tokens would be evicted)
#   SESSIONAUTH_BENCH_REDIS_URL (else SESSIONAUTH_TEST_REDIS_URL, else redis://127.0.0.1:6379/15)
#                            the Redis to use; keys go under a random prefix, deleted at exit
#   SESSIONAUTH_BENCH_POSTGRES_URL (else SESSIONAUTH_TEST_POSTGRES_URL, else
#                            postgres://postgres@127.0.0.1:5432/test) the PostgreSQL database to
#                            use; tables go under a random prefix, dropped at exit
#   KEEP_WORK=1              keep the work folder (configs, logs, oha output)
#
# Prints PASS/FAIL per step and exits non-zero on any failure, including a missed goal.
# Needs: cargo, python3, redis-cli (for the Redis store; it is skipped without a reachable Redis),
# psql (for the PostgreSQL store; skipped likewise).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DURATION="${DURATION:-10}"
FILL="${FILL:-1000000}"
CAP="${CAP:-0}"
CONNS=32
REDIS_URL="${SESSIONAUTH_BENCH_REDIS_URL:-${SESSIONAUTH_TEST_REDIS_URL:-redis://127.0.0.1:6379/15}}"
PG_URL="${SESSIONAUTH_BENCH_POSTGRES_URL:-${SESSIONAUTH_TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/test}}"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
BIN="$TARGET_DIR/release/sessionauth"
BENCH="$TARGET_DIR/release/examples/store_bench"

WORK="$(mktemp -d "${TMPDIR:-/tmp}/sessionauth-bench.XXXXXX")"
REDIS_PREFIX="sessionauth-bench:$(od -An -N6 -tx1 /dev/urandom | tr -d ' \n'):"
REDIS_USED=""
PG_PREFIX="sessionauth_bench_$(od -An -N6 -tx1 /dev/urandom | tr -d ' \n')_"
PG_USED=""
SERVER_PID=""
FAILED=0

cleanup() {
    local status=$?
    if [[ -n "$SERVER_PID" ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill -KILL "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    rs_stop
    if [[ -n "$REDIS_USED" ]]; then
        redis-cli -u "$REDIS_URL" --scan --pattern "${REDIS_PREFIX}*" 2>/dev/null |
            xargs -r -n 500 redis-cli -u "$REDIS_URL" DEL >/dev/null 2>&1 || true
    fi
    if [[ -n "$PG_USED" ]]; then
        psql "$PG_URL" -qc "DROP TABLE IF EXISTS ${PG_PREFIX}sessions, ${PG_PREFIX}notes, ${PG_PREFIX}meta" \
            >/dev/null 2>&1 || true
    fi
    if [[ "${KEEP_WORK:-}" == 1 ]]; then
        echo "work folder kept: $WORK"
    else
        rm -rf "$WORK"
    fi
    exit "$status"
}
trap cleanup EXIT
# shellcheck source=lib/redis-sets.sh
source "$ROOT/scripts/lib/redis-sets.sh"

pass() { printf 'PASS  %s\n' "$*"; }
fail() {
    printf 'FAIL  %s\n' "$*" >&2
    FAILED=1
}
die() {
    printf 'FAIL  %s\n' "$*" >&2
    exit 1
}
now_ms() { date +%s%3N; }
rss_kb() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }

# ---------------------------------------------------------------------------------------------
# Tools

OHA="$(command -v oha || true)"
if [[ -z "$OHA" && -x "$HOME/.cargo/bin/oha" ]]; then
    OHA="$HOME/.cargo/bin/oha"
fi
if [[ -z "$OHA" ]]; then
    echo "oha not found: installing it with cargo install --locked oha"
    cargo install --locked oha || die "install oha"
    OHA="$HOME/.cargo/bin/oha"
fi
pass "oha: $("$OHA" --version)"

(cd "$ROOT" && cargo build --release --quiet --bin sessionauth --example store_bench) ||
    die "cargo build --release"
pass "built $BIN and $BENCH"

"$BIN" certs init --dir "$WORK/certs" >/dev/null || die "dev PKI"
CERTS="$WORK/certs"
pass "dev PKI in $CERTS"

# ---------------------------------------------------------------------------------------------
# Servers

# start_server NAME STORE_LINES: config $WORK/NAME.toml, server in the background, waits for its
# "listening" line. Sets SERVER_PID, PORT, STARTUP_MS.
start_server() {
    local name="$1" store_lines="$2" log="$WORK/$1.log" started deadline
    cat >"$WORK/$name.toml" <<EOF
listen = "127.0.0.1:0"
$store_lines

[tls]
cert = "certs/server.pem"
key = "certs/server-key.pem"
client_ca = ["certs/ca.pem"]

# One bot makes every session here: the per-owner cap would end all but its newest 1,000
# before the logout run reaches them (CAP sets it, for the authenticate rows at the cap).
[limits]
max_sessions_per_user = $CAP
EOF
    started="$(now_ms)"
    NO_COLOR=1 SESSIONAUTH_LOG="warn,sessionauth=info,sessionauth::access=warn,sessionauth::session=warn" \
        "$BIN" serve --config "$WORK/$name.toml" 2>"$log" >/dev/null &
    SERVER_PID=$!
    deadline=$((started + 120000))
    PORT=""
    while [[ -z "$PORT" ]]; do
        PORT="$(grep -o 'sessionauth listening (https) addr=127.0.0.1:[0-9]*' "$log" 2>/dev/null | head -n1 | sed 's/.*://' || true)"
        if [[ -z "$PORT" ]]; then
            kill -0 "$SERVER_PID" 2>/dev/null || die "$name: server exited: $(tail -n 5 "$log")"
            (($(now_ms) < deadline)) || die "$name: no listening line within 120 s"
            sleep 0.005
        fi
    done
    STARTUP_MS=$(($(now_ms) - started))
}

stop_server() {
    kill -TERM "$SERVER_PID"
    wait "$SERVER_PID" || true
    SERVER_PID=""
}

kill_server() {
    kill -KILL "$SERVER_PID"
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=""
}

# oha_authenticate LABEL: DURATION seconds of keep-alive authenticate at CONNS connections.
# Sets OHA_RPS and OHA_OK (200 answers); fails the step on any other status.
oha_authenticate() {
    local label="$1" out="$WORK/oha-$1.json"
    "$OHA" --no-tui --output-format json -z "${DURATION}s" -c "$CONNS" -m POST \
        --cacert "$CERTS/ca.pem" --cert "$CERTS/bot.user.pem" --key "$CERTS/bot.user-key.pem" \
        "https://localhost:$PORT/sessionauth/v1/authenticate" >"$out" || die "$label: oha"
    read -r OHA_RPS OHA_OK OHA_OTHER < <(python3 - "$out" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
codes = r.get("statusCodeDistribution", {})
ok = codes.get("200", 0)
print(round(r["summary"]["requestsPerSec"]), ok, sum(codes.values()) - ok)
EOF
    )
    if [[ "$OHA_OTHER" != 0 || "$OHA_OK" == 0 ]]; then
        fail "$label: authenticate answered $OHA_OTHER non-200 responses ($OHA_OK ok)"
    else
        pass "$label: authenticate $OHA_RPS req/s ($OHA_OK sessions)"
    fi
}

# bench_logout LABEL: store_bench's authenticate-then-logout run. Sets LOGOUT_RPS.
bench_logout() {
    local label="$1" out="$WORK/logout-$1.txt"
    "$BENCH" http --addr "127.0.0.1:$PORT" --certs "$CERTS" --connections "$CONNS" \
        --duration "$DURATION" >"$out" 2>&1 || { cat "$out" >&2; die "$label: store_bench http"; }
    LOGOUT_RPS="$(sed -n 's/^RESULT .*logout_rps=\([0-9]*\).*/\1/p' "$out")"
    local n
    n="$(sed -n 's/^RESULT .*requests=\([0-9]*\).*/\1/p' "$out")"
    pass "$label: logout $LOGOUT_RPS req/s ($n sessions ended)"
}

# ---------------------------------------------------------------------------------------------
# Part 1: the stores side by side

declare -A AUTH LOGOUT
STORES=(memory embedded)
if command -v redis-cli >/dev/null && [[ "$(redis-cli -u "$REDIS_URL" ping 2>/dev/null)" == PONG ]]; then
    STORES+=(redis)
else
    echo "SKIP  redis: no Redis answers at the configured URL (set SESSIONAUTH_BENCH_REDIS_URL)"
fi
# Redis behind Sentinel and Redis Cluster, started here on loopback (SENTINEL=0 skips them),
# each write waiting for one replica as by default.
if [[ "${SENTINEL:-1}" == 1 ]] && command -v redis-server >/dev/null && command -v redis-cli >/dev/null; then
    mkdir -p "$WORK/redis-sets"
    rs_start_sentinel_set "$WORK/redis-sets" || die "the Sentinel set did not come up"
    rs_start_cluster "$WORK/redis-sets" || die "the Redis Cluster did not come up"
    STORES+=(sentinel cluster)
else
    echo "SKIP  sentinel, cluster: SENTINEL=0, or no redis-server and redis-cli"
fi
if command -v psql >/dev/null && psql "$PG_URL" -Atc 'SELECT 1' >/dev/null 2>&1; then
    STORES+=(postgres)
else
    echo "SKIP  postgres: no PostgreSQL answers at the configured URL (set SESSIONAUTH_BENCH_POSTGRES_URL)"
fi

echo
echo "== keep-alive authenticate and logout, $CONNS connections, ${DURATION}s each =="
for store in "${STORES[@]}"; do
    case "$store" in
    memory) lines='store = "memory"' ;;
    embedded) lines="store = \"embedded\"
data_dir = \"data-$store\"" ;;
    redis)
        REDIS_USED=1
        lines="store = \"$REDIS_URL\"
redis_prefix = \"$REDIS_PREFIX\""
        ;;
    sentinel) lines="store = \"$RS_SENTINEL_URL\"" ;;
    cluster) lines="store = \"$RS_CLUSTER_URL\"" ;;
    postgres)
        PG_USED=1
        lines="store = \"$PG_URL\"
postgres_table_prefix = \"$PG_PREFIX\""
        ;;
    esac
    start_server "$store" "$lines"
    # Warm-up: connections, TLS, caches (and the Redis connection).
    "$OHA" --no-tui --output-format json -z 2s -c "$CONNS" -m POST \
        --cacert "$CERTS/ca.pem" --cert "$CERTS/bot.user.pem" --key "$CERTS/bot.user-key.pem" \
        "https://localhost:$PORT/sessionauth/v1/authenticate" >/dev/null || die "$store: warm-up"
    oha_authenticate "$store"
    AUTH[$store]="$OHA_RPS"
    if ((CAP == 0)); then
        bench_logout "$store"
        LOGOUT[$store]="$LOGOUT_RPS"
    else
        LOGOUT[$store]=0
    fi
    stop_server
done

echo
printf '%-10s %16s %10s %16s %10s\n' store "authenticate/s" "vs memory" "logout/s" "vs memory"
for store in "${STORES[@]}"; do
    read -r ra rl < <(python3 -c "a, l = ${AUTH[$store]}/${AUTH[memory]}, (${LOGOUT[$store]}/${LOGOUT[memory]} if ${LOGOUT[memory]} else 0); print(f'{a:.2f} {l:.2f}')")
    printf '%-10s %16s %10s %16s %10s\n' "$store" "${AUTH[$store]}" "$ra" "${LOGOUT[$store]}" "$rl"
done
for store in "${STORES[@]}"; do
    [[ "$store" != embedded && "$store" != redis ]] && continue
    for op in authenticate logout; do
        [[ "$op" == logout ]] && ((CAP > 0)) && continue
        if [[ "$op" == authenticate ]]; then mine="${AUTH[$store]}" base="${AUTH[memory]}"; else mine="${LOGOUT[$store]}" base="${LOGOUT[memory]}"; fi
        if [[ "$store" == embedded ]]; then goal=70; else goal=50; fi
        if ((mine * 100 >= base * goal)); then
            pass "goal: $store $op >= 0.$goal x memory ($mine vs $base req/s)"
        else
            fail "goal: $store $op >= 0.$goal x memory ($mine vs $base req/s)"
        fi
    done
done

# ---------------------------------------------------------------------------------------------
# Part 2: the embedded store with FILL live sessions

if ((FILL > 0)); then
    echo
    echo "== embedded store with $FILL live sessions =="
    start_server empty 'store = "embedded"
data_dir = "data-empty"'
    empty_start="$STARTUP_MS"
    empty_rss_start="$(rss_kb "$SERVER_PID")"
    oha_authenticate empty
    empty_rss="$(rss_kb "$SERVER_PID")"
    stop_server

    started="$(now_ms)"
    "$BENCH" fill --data-dir "$WORK/data-big" --sessions "$FILL" >"$WORK/fill.txt" 2>&1 ||
        { cat "$WORK/fill.txt" >&2; die "fill $FILL sessions"; }
    pass "filled $FILL sessions in $((($(now_ms) - started) / 1000)) s"
    file_bytes="$(du -s --apparent-size -B1 "$WORK/data-big/sessions.db" | cut -f1)"
    disk_bytes="$(du -s -B1 "$WORK/data-big/sessions.db" | cut -f1)"

    big='store = "embedded"
data_dir = "data-big"'
    start_server big "$big"
    big_start="$STARTUP_MS"
    big_rss_start="$(rss_kb "$SERVER_PID")"
    oha_authenticate big
    big_rps="$OHA_RPS"
    big_rss="$(rss_kb "$SERVER_PID")"
    kill_server
    start_server big-after-kill "$big"
    crash_start="$STARTUP_MS"
    stop_server

    # The embedded store keeps its sessions in memory: measured right after start-up (the FILL
    # sessions, read back, against none), and after the same load on both (each then also holds
    # what its oha run made).
    per_session=$(((big_rss_start - empty_rss_start) * 1024 / FILL))
    per_session_loaded=$(((big_rss - empty_rss) * 1024 / FILL))
    echo
    echo "start-up, empty store:                ${empty_start} ms"
    echo "start-up, $FILL sessions:         ${big_start} ms"
    echo "start-up after SIGKILL, $FILL:    ${crash_start} ms"
    echo "authenticate with $FILL sessions: ${big_rps} req/s (empty store: ${AUTH[embedded]:-n/a} req/s in part 1)"
    echo "RSS after ${DURATION}s of load: empty ${empty_rss} KiB, $FILL sessions ${big_rss} KiB (at start ${big_rss_start} KiB)"
    echo "RSS at start: empty ${empty_rss_start} KiB, $FILL sessions ${big_rss_start} KiB"
    echo "resident memory per stored session:   ${per_session} bytes at start (${per_session_loaded} after the load)"
    echo "disk per session:                     $((file_bytes / FILL)) bytes (allocated: $((disk_bytes / FILL)) bytes)"
    if ((big_start < 1000 && crash_start < 1000)); then
        pass "start-up with $FILL sessions under 1 s (clean ${big_start} ms, after SIGKILL ${crash_start} ms)"
    else
        fail "start-up with $FILL sessions under 1 s (clean ${big_start} ms, after SIGKILL ${crash_start} ms)"
    fi
    if ((per_session <= 300)); then
        pass "resident memory per session at most 300 bytes (${per_session})"
    else
        fail "resident memory per session at most 300 bytes (${per_session})"
    fi
fi

echo
if ((FAILED)); then
    echo "FAIL: bench-stores"
    exit 1
fi
echo "PASS: bench-stores"
