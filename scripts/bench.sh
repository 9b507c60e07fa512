#!/usr/bin/env bash
# Benchmarks sessionauth with oha over real mutual TLS against a null server, side by side in
# one run. The null server (bench/, built here when missing) is hyper 1 + tokio-rustls on the
# same rustls and crypto provider with the same TLS settings, answering every request with a
# static 200: the ratio is what sessionauth costs above TLS and HTTP. Each row sends the same
# request to both servers:
#
#   keep-alive   POST /sessionauth/v1/authenticate   (client certificate → new session)  goal ≥ 0.85
#   keep-alive   GET  /health                                                             goal ≥ 0.95
#   keep-alive   GET  /pod/v2/sessioninfo            (sessionToken header → UserV2)
#   full handshake, TLS resumption off on both servers:
#                POST /sessionauth/v1/authenticate
#
# ROUNDS rounds; in each, every row runs on both servers, the order alternating from round to
# round (sessionauth first in odd rounds, the null server first in even ones). Printed: each
# round's rates, then the medians and their ratio, and the load average before each round and
# at the end. Then scripts/bench-rsa.sh: keep-alive RS512 JWT authentication, 2048/4096-bit keys.
#
# Usage: scripts/bench.sh [DURATION] [CONNECTIONS]     (defaults: 10s, 32)
# Environment:
#   BENCH_STORE=memory   the store under test: memory, embedded, or a redis:// URL (see below)
#   BENCH_ROUNDS=3       rounds
#   BENCH_RSA=1          0 skips the RSA rows
#   BENCH_FILL=1000000   live sessions a third sessionauth server holds before the rounds, spread
#                        over BENCH_FILL_USERS=10000 users (a power of ten): on-behalf-of
#                        sessions of demo-app, minted over HTTP with oha. Its row is keep-alive
#                        authenticate, beside the empty server's; its resident memory before and
#                        after the fill is printed. 0 skips it.
#   SESSIONAUTH_BIN      default target/release/sessionauth, built when missing
#   NULL_SERVER_BIN      default bench/target/release/null-server, built when missing (build
#                        bench/ with `--features aws-lc-rs` to measure that provider instead)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DURATION=${1:-10s}
CONNS=${2:-32}
BIN=${SESSIONAUTH_BIN:-$ROOT/target/release/sessionauth}
NULL_BIN=${NULL_SERVER_BIN:-$ROOT/bench/target/release/null-server}
ROUNDS=${BENCH_ROUNDS:-3}
FILL=${BENCH_FILL:-1000000}
FILL_USERS=${BENCH_FILL_USERS:-10000}

if [[ ! -x $BIN ]]; then
  (cd "$ROOT" && cargo build --release)
fi
if [[ ! -x $NULL_BIN ]]; then
  cargo build --release --manifest-path "$ROOT/bench/Cargo.toml"
fi
if ! command -v oha >/dev/null 2>&1; then
  export PATH="$HOME/.cargo/bin:$PATH"
  command -v oha >/dev/null 2>&1 || cargo install --locked oha
fi

WORK=$(mktemp -d)
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

"$BIN" certs init --dir "$WORK/certs" >/dev/null
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# The session store under test: memory by default, so that these rows measure TLS, HTTP and
# the authenticator itself; scripts/bench-stores.sh compares the stores. BENCH_STORE=embedded
# (each server gets its own data folder) or a redis:// URL measures the same rows on that store.
BENCH_STORE=${BENCH_STORE:-memory}
store_config() {
  case $BENCH_STORE in
    embedded) printf 'store = "embedded"\ndata_dir = "data-%s"\n' "$1" ;;
    *) printf 'store = "%s"\n' "$BENCH_STORE" ;;
  esac
}

# wait_ready NAME PORT: until the server answers GET /health, or exits with its log.
wait_ready() {
  local name=$1 port=$2
  for _ in $(seq 1 100); do
    if curl -sf --cacert "$WORK/certs/ca.pem" "https://localhost:$port/health" >/dev/null; then
      return
    fi
    sleep 0.1
  done
  echo "server $name did not start:" >&2
  cat "$WORK/$name.log" >&2
  exit 1
}

# start_server NAME RESUMPTION [DIRECTORY] → sets PORT and SERVER_PID. Not run in a subshell,
# so that the server's pid reaches PIDS and the exit trap stops it.
start_server() {
  local name=$1 resumption=$2 directory=${3:-} port
  port=$(free_port)
  cat >"$WORK/$name.toml" <<TOML
listen = "127.0.0.1:$port"
$(store_config "$name")
${directory:+directory = \"$directory\"}
[tls]
cert = "certs/server.pem"
key = "certs/server-key.pem"
client_ca = ["certs/ca.pem"]
resumption = $resumption
TOML
  SESSIONAUTH_LOG=warn "$BIN" serve --config "$WORK/$name.toml" >"$WORK/$name.log" 2>&1 &
  SERVER_PID=$!
  PIDS+=("$SERVER_PID")
  wait_ready "$name" "$port"
  PORT=$port
}

# start_null NAME [--no-resumption] → sets PORT. The same certificate, key and client CA.
start_null() {
  local name=$1 port
  shift
  port=$(free_port)
  "$NULL_BIN" --listen "127.0.0.1:$port" --cert "$WORK/certs/server.pem" \
    --key "$WORK/certs/server-key.pem" --client-ca "$WORK/certs/ca.pem" "$@" \
    >"$WORK/$name.log" 2>&1 &
  PIDS+=($!)
  wait_ready "$name" "$port"
  PORT=$port
}

start_server keepalive true
PORT_KA=$PORT
start_server fullhandshake false
PORT_FH=$PORT
start_null null-keepalive
NULL_KA=$PORT
start_null null-fullhandshake --no-resumption
NULL_FH=$PORT

C="$WORK/certs"
TLS=(--cacert "$C/ca.pem" --cert "$C/bot.user.pem" --key "$C/bot.user-key.pem")
# The session info row's token belongs to another user than the authenticate row's, whose
# per-user cap (limits.max_sessions_per_user) would otherwise evict it within a second.
TOKEN=$(curl -sf --cacert "$C/ca.pem" --cert "$C/admin.bot.pem" --key "$C/admin.bot-key.pem" \
  -X POST "https://localhost:$PORT_KA/sessionauth/v1/authenticate" |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')

# rss_kib PID: the process's resident memory.
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }

# The filled server: the sample directory plus FILL_USERS normal users (ids 100000 and up) who
# installed demo-app, holding FILL on-behalf-of sessions of demo-app for them, users drawn at
# random (oha's --rand-regex-url over the id's last digits).
if ((FILL > 0)); then
  digits=$(python3 -c 'import math, sys
n = int(sys.argv[1]); d = round(math.log10(n)) if n > 0 else -1
if 10 ** d != n or d > 5:
    sys.exit("BENCH_FILL_USERS must be a power of ten up to 100000")
print(d)' "$FILL_USERS")
  python3 - "$ROOT/examples/directory.toml" "$FILL_USERS" >"$WORK/fill-directory.toml" <<'PY'
import sys
print(open(sys.argv[1]).read())
for uid in range(100000, 100000 + int(sys.argv[2])):
    print('[[user]]\nid = %d\nusername = "fill.%d"\naccountType = "NORMAL"\nactive = true\n'
          'installedApps = ["demo-app"]\n' % (uid, uid))
PY
  start_server filled true "$WORK/fill-directory.toml"
  PORT_FILL=$PORT
  FILL_PID=$SERVER_PID
  rss_before=$(rss_kib "$FILL_PID")
  APP_TLS=(--cacert "$C/ca.pem" --cert "$C/demo-app.pem" --key "$C/demo-app-key.pem")
  APP_TOKEN=$(curl -sf "${APP_TLS[@]}" -X POST "https://localhost:$PORT_FILL/sessionauth/v1/app/authenticate" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')
  prefix=$(printf '1%0*d' $((5 - digits)) 0)
  ((digits < 5)) || prefix=1
  started=$(date +%s)
  fill_out=$(oha --no-tui --output-format json -n "$FILL" -c "$CONNS" "${APP_TLS[@]}" -m POST \
    -H "sessionToken: $APP_TOKEN" \
    --rand-regex-url "https://localhost:$PORT_FILL/sessionauth/v1/app/user/$prefix[0-9]{$digits}/authenticate")
  python3 -c '
import json, sys
codes = json.loads(sys.argv[1]).get("statusCodeDistribution", {})
if set(codes) != {"200"}:
    sys.exit("fill: responses other than 200: %s" % codes)' "$fill_out"
  live=$(curl -sf "${TLS[@]}" "https://localhost:$PORT_FILL/metrics" |
    awk '/^sessionauth_sessions_live\{/ {n += $2} END {print n}')
  rss_after=$(rss_kib "$FILL_PID")
  echo "filled: $live live sessions over $FILL_USERS users in $(($(date +%s) - started)) s;" \
    "resident memory $rss_before KiB before, $rss_after KiB after," \
    "$(((rss_after - rss_before) * 1024 / FILL)) bytes per session"
fi

# run oha-args... → prints "rps non2xx"
run() {
  local out
  out=$(oha --no-tui --output-format json -z "$DURATION" -c "$CONNS" "${TLS[@]}" "$@")
  python3 -c '
import json, sys
r = json.loads(sys.argv[1])
codes = r.get("statusCodeDistribution", {})
bad = sum(v for k, v in codes.items() if not k.startswith("2"))
rps = r["summary"]["requestsPerSec"]
print("%.0f %d" % (rps, bad))' "$out"
}

loadavg() { cut -d' ' -f1-3 /proc/loadavg; }

# The rows: label | goal (- for none) | sessionauth's port | the null server's port | oha's
# arguments, split on spaces, with HOST standing for localhost:PORT of the server measured.
ROWS=(
  "keep-alive POST /sessionauth/v1/authenticate|0.85|$PORT_KA|$NULL_KA|-m POST https://HOST/sessionauth/v1/authenticate"
  "keep-alive GET /health|0.95|$PORT_KA|$NULL_KA|https://HOST/health"
  "keep-alive GET /pod/v2/sessioninfo|-|$PORT_KA|$NULL_KA|-H sessionToken:$TOKEN https://HOST/pod/v2/sessioninfo"
  "full handshake POST /sessionauth/v1/authenticate|-|$PORT_FH|$NULL_FH|--disable-keepalive -m POST https://HOST/sessionauth/v1/authenticate"
)
if ((FILL > 0)); then
  ROWS+=("keep-alive POST /sessionauth/v1/authenticate, $FILL live|0.85|$PORT_FILL|$NULL_KA|-m POST https://HOST/sessionauth/v1/authenticate")
fi

echo "sessionauth vs null server: $DURATION per row, $CONNS connections, $ROUNDS rounds, store $BENCH_STORE, oha $(oha --version | awk '{print $2}'), $(nproc) cores, $(date -u '+%Y-%m-%d %H:%M UTC')"
echo "$(head -1 "$WORK/null-keepalive.log")"
RESULTS="$WORK/results"
: >"$RESULTS"
for round in $(seq 1 "$ROUNDS"); do
  echo "round $round, load average $(loadavg)"
  if ((round % 2)); then order=(sessionauth null); else order=(null sessionauth); fi
  for i in "${!ROWS[@]}"; do
    IFS='|' read -r label _ port null args <<<"${ROWS[$i]}"
    for server in "${order[@]}"; do
      if [[ $server == sessionauth ]]; then p=$port; else p=$null; fi
      read -r -a argv <<<"${args//HOST/localhost:$p}"
      result=$(run "${argv[@]}")
      echo "$i $server $result" >>"$RESULTS"
      printf '  %-50s %-12s %8s req/s  non-2xx %s\n' "$label" "$server" "${result% *}" "${result#* }"
    done
  done
done
echo "end, load average $(loadavg)"
echo

# Medians per row and server, their ratio, and the goal.
for row in "${ROWS[@]}"; do
  IFS='|' read -r label goal _ <<<"$row"
  printf '%s|%s\n' "$label" "$goal"
done >"$WORK/rows"
python3 - "$WORK/rows" "$RESULTS" <<'PY'
import statistics, sys
rows = [line.rstrip("\n").split("|") for line in open(sys.argv[1])]
runs = {}
for line in open(sys.argv[2]):
    i, server, rps, bad = line.split()
    runs.setdefault((int(i), server), []).append((float(rps), int(bad)))
print("%-50s %14s %10s %6s %-11s %s" % ("scenario (medians)", "sessionauth/s", "null/s", "ratio", "goal", "non-2xx"))
for i, (label, goal) in enumerate(rows):
    sa, null = runs[(i, "sessionauth")], runs[(i, "null")]
    m_sa = statistics.median(r for r, _ in sa)
    m_null = statistics.median(r for r, _ in null)
    ratio = m_sa / m_null
    verdict = "-" if goal == "-" else ">= %s %s" % (goal, "met" if ratio >= float(goal) else "MISSED")
    bad = sum(b for _, b in sa) + sum(b for _, b in null)
    print("%-50s %14.0f %10.0f %6.2f %-11s %d" % (label, m_sa, m_null, ratio, verdict, bad))
PY

# RSA (signed JWT) authentication, 2048- and 4096-bit keys, on a server of its own.
if [[ ${BENCH_RSA:-1} != 0 ]]; then
  echo
  BENCH_STORE=$BENCH_STORE "$ROOT/scripts/bench-rsa.sh" "$DURATION" "$CONNS"
fi
