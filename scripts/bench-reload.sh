#!/usr/bin/env bash
# Reload benchmark: SIGHUP with a large directory and a large store, under keep-alive load.
#
#   1. a directory of PRINCIPALS service users (ids 1000000...) and 5 apps, plus load.bot;
#   2. an embedded store filled with SESSIONS live sessions spread over the first 10,000 users
#      (examples/store_bench.rs fill: straight into the data dir, no HTTP);
#   3. the release binary on that store (loopback only), and a baseline keep-alive authenticate
#      load (store_bench http, load.bot, 32 connections) for DURATION seconds;
#   4. the same load again; 3 s into it, DEACTIVATE users (each holding SESSIONS/10,000
#      sessions) are set active = false in the directory file and the server gets SIGHUP;
#   5. from the log: the reload line's took_ms and sessions_ended, and the time from SIGHUP to
#      that line.
#
# Usage: scripts/bench-reload.sh [PRINCIPALS] [SESSIONS] [DEACTIVATE] [DURATION]
#        (defaults: 100000 1000000 1000 10)
# Environment: SESSIONAUTH_BIN, STORE_BENCH (default target/release/examples/store_bench).
# Every wait is bounded; only the processes this script starts are stopped.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PRINCIPALS=${1:-100000}
SESSIONS=${2:-1000000}
DEACTIVATE=${3:-1000}
DURATION=${4:-10}
BIN=${SESSIONAUTH_BIN:-$ROOT/target/release/sessionauth}
BENCH=${STORE_BENCH:-$ROOT/target/release/examples/store_bench}
[[ -x $BIN && -x $BENCH ]] || {
    echo "build first: cargo build --release --bin sessionauth --example store_bench" >&2
    exit 1
}
(( PRINCIPALS >= 10000 && DEACTIVATE <= 10000 )) || { echo "PRINCIPALS >= 10000, DEACTIVATE <= 10000" >&2; exit 1; }

WORK=$(mktemp -d "${TMPDIR:-/tmp}/sessionauth-bench-reload.XXXXXX")
PID=""
cleanup() {
    if [[ -n $PID ]]; then
        kill -TERM "$PID" 2>/dev/null || true
        for _ in $(seq 1 100); do kill -0 "$PID" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$PID" 2>/dev/null || true
        wait "$PID" 2>/dev/null || true
    fi
    [[ ${KEEP_WORK:-0} == 1 ]] && echo "work dir kept: $WORK" || rm -rf "$WORK"
}
trap cleanup EXIT
now_ms() { date +%s%3N; }

"$BIN" certs init --dir "$WORK/certs" >/dev/null
"$BIN" certs issue --cn load.bot --dir "$WORK/certs" >/dev/null

# 1. The directory.
python3 - "$WORK/directory.toml" "$PRINCIPALS" <<'EOF'
import sys
path, n = sys.argv[1], int(sys.argv[2])
with open(path, "w") as f:
    f.write('[[user]]\nid = 999\nusername = "load.bot"\naccountType = "SYSTEM"\nactive = true\n\n')
    for i in range(n):
        f.write('[[user]]\nid = %d\nusername = "svc%06d"\naccountType = "SYSTEM"\nactive = true\n\n'
                % (1000000 + i, i))
    for a in range(5):
        f.write('[[app]]\nappId = "bench-app-%d"\nname = "Bench app %d"\nactive = true\nallowOnBehalfOf = true\n\n' % (a, a))
EOF
echo "directory: $((PRINCIPALS + 1)) users, 5 apps ($(du -h "$WORK/directory.toml" | cut -f1))"

# 2. The store.
started=$(now_ms)
"$BENCH" fill --data-dir "$WORK/data" --sessions "$SESSIONS" | grep -v '^RESULT'
echo "fill: $(( ($(now_ms) - started) / 1000 )) s"

# 3. The server.
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat >"$WORK/sessionauth.toml" <<EOF
listen = "127.0.0.1:$PORT"
directory = "directory.toml"
store = "embedded"
data_dir = "data"
[tls]
cert = "certs/server.pem"
key = "certs/server-key.pem"
client_ca = ["certs/ca.pem"]
EOF
started=$(now_ms)
NO_COLOR=1 "$BIN" serve --config "$WORK/sessionauth.toml" </dev/null >"$WORK/server.log" 2>&1 &
PID=$!
health() {
    curl -s -o /dev/null --max-time 2 --cacert "$WORK/certs/ca.pem" \
        --resolve "localhost:$PORT:127.0.0.1" "https://localhost:$PORT/health"
}
for _ in $(seq 1 600); do health && break; kill -0 "$PID" || { cat "$WORK/server.log"; exit 1; }; sleep 0.1; done
health || { echo "server did not answer within 60 s" >&2; exit 1; }
echo "start-up to first /health: $(( $(now_ms) - started )) ms; rss $(( $(awk '/VmRSS/ {print $2}' /proc/$PID/status) / 1024 )) MiB"

load() { "$BENCH" http --addr "127.0.0.1:$PORT" --certs "$WORK/certs" --cn load.bot --duration "$DURATION"; }

echo "--- before: authenticate load, no reload"
load | tee "$WORK/before.txt" | grep -v '^RESULT'

echo "--- during: the same load; after 3 s, $DEACTIVATE users deactivated + SIGHUP"
load >"$WORK/during.txt" &
LOAD=$!
sleep 3
python3 - "$WORK/directory.toml" "$DEACTIVATE" <<'EOF'
import re, sys
path, k = sys.argv[1], int(sys.argv[2])
text = open(path).read()
def off(m):
    return m.group(0).replace("active = true", "active = false") if int(m.group(1)) < 1000000 + k else m.group(0)
text = re.sub(r'id = (\d+)\nusername = "svc\d+"\naccountType = "SYSTEM"\nactive = true', off, text)
open(path, "w").write(text)
EOF
hup_ms=$(now_ms)
kill -HUP "$PID"
line=""
for i in $(seq 1 1200); do # at most ~120 s
    line=$(grep -E 'reloaded the directory|reload refused' "$WORK/server.log" || true)
    [[ -n $line ]] && break
    # The server takes a reload request only when a new connection arrives, and keep-alive load
    # brings none (see docs/benchmarks.md): connect once per poll until the reload line appears.
    health || true
    sleep 0.1
done
seen_ms=$(( $(now_ms) - hup_ms ))
wait "$LOAD"
grep -v '^RESULT' "$WORK/during.txt"
[[ -n $line ]] || { echo "no reload line within 120 s" >&2; exit 1; }
echo "--- reload"
echo "$line" | sed -E 's/^[^ ]+ +[A-Z]+ +[^ ]+ //'
echo "SIGHUP to reload line in the log: ~$seen_ms ms (with a /health connection every 0.1 s)"
took=$(sed -nE 's/.*took_ms=([0-9]+).*/\1/p' <<<"$line")
ended=$(sed -nE 's/.*sessions_ended=([0-9]+).*/\1/p' <<<"$line")
before=$(sed -nE 's/^RESULT authenticate_rps=([0-9]+).*/\1/p' "$WORK/before.txt")
during=$(sed -nE 's/^RESULT authenticate_rps=([0-9]+).*/\1/p' "$WORK/during.txt")
echo "RESULT principals=$PRINCIPALS sessions=$SESSIONS deactivated=$DEACTIVATE took_ms=$took sessions_ended=$ended auth_rps_before=$before auth_rps_during=$during sighup_to_line_ms=$seen_ms"
