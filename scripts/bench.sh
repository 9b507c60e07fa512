#!/usr/bin/env bash
# Benchmarks sessionauth with oha over real mutual TLS, side by side in one run:
#
#   keep-alive   GET  /health                        (baseline: the cheapest route)
#   keep-alive   POST /sessionauth/v1/authenticate   (client certificate → new session)
#   keep-alive   GET  /pod/v2/sessioninfo            (sessionToken header → UserV2)
#   full handshake, TLS resumption off on the server:
#                GET  /health                        (baseline)
#                POST /sessionauth/v1/authenticate
#
# Each row shows requests per second and the ratio to its baseline on the same server.
# Then scripts/bench-rsa.sh: keep-alive RS512 JWT authentication with 2048- and 4096-bit keys.
# Usage: scripts/bench.sh [DURATION] [CONNECTIONS]     (defaults: 10s, 32)
#        BENCH_STORE=embedded scripts/bench.sh         (default store: memory; see below)
# Environment: SESSIONAUTH_BIN (default target/release/sessionauth, built when missing).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DURATION=${1:-10s}
CONNS=${2:-32}
BIN=${SESSIONAUTH_BIN:-$ROOT/target/release/sessionauth}

if [[ ! -x $BIN ]]; then
  (cd "$ROOT" && cargo build --release)
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

# start_server NAME RESUMPTION → sets PORT. Not run in a subshell, so that the server's pid
# reaches PIDS and the exit trap stops it.
start_server() {
  local name=$1 resumption=$2 port
  port=$(free_port)
  cat >"$WORK/$name.toml" <<TOML
listen = "127.0.0.1:$port"
$(store_config "$name")
[tls]
cert = "certs/server.pem"
key = "certs/server-key.pem"
client_ca = ["certs/ca.pem"]
resumption = $resumption
TOML
  SESSIONAUTH_LOG=warn "$BIN" serve --config "$WORK/$name.toml" >"$WORK/$name.log" 2>&1 &
  PIDS+=($!)
  for _ in $(seq 1 100); do
    if curl -sf --cacert "$WORK/certs/ca.pem" "https://localhost:$port/health" >/dev/null; then
      PORT=$port
      return
    fi
    sleep 0.1
  done
  echo "server $name did not start:" >&2
  cat "$WORK/$name.log" >&2
  exit 1
}

start_server keepalive true
PORT_KA=$PORT
start_server fullhandshake false
PORT_FH=$PORT

C="$WORK/certs"
TLS=(--cacert "$C/ca.pem" --cert "$C/bot.user.pem" --key "$C/bot.user-key.pem")
TOKEN=$(curl -sf "${TLS[@]}" -X POST "https://localhost:$PORT_KA/sessionauth/v1/authenticate" |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')

# run LABEL oha-args... → prints "rps non2xx"
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

echo "sessionauth benchmark: $DURATION per row, $CONNS connections, store $BENCH_STORE, oha $(oha --version | awk '{print $2}'), $(nproc) cores"
printf '%-46s %12s %10s %8s\n' "scenario" "req/s" "vs base" "non-2xx"
row() {
  local label=$1 base=$2 result rps bad
  shift 2
  result=$(run "$@")
  rps=${result% *}
  bad=${result#* }
  if [[ $base == - ]]; then
    printf '%-46s %12s %10s %8s\n' "$label" "$rps" "1.00" "$bad" >&2
  else
    printf '%-46s %12s %10s %8s\n' "$label" "$rps" "$(python3 -c "print(f'{$rps/$base:.2f}')")" "$bad" >&2
  fi
  echo "$rps"
}
BASE=$(row "keep-alive GET /health (baseline)" - "https://localhost:$PORT_KA/health")
row "keep-alive POST /sessionauth/v1/authenticate" "$BASE" -m POST "https://localhost:$PORT_KA/sessionauth/v1/authenticate" >/dev/null
row "keep-alive GET /pod/v2/sessioninfo" "$BASE" -H "sessionToken: $TOKEN" "https://localhost:$PORT_KA/pod/v2/sessioninfo" >/dev/null
BASE_FH=$(row "full handshake GET /health (baseline)" - --disable-keepalive "https://localhost:$PORT_FH/health")
row "full handshake POST /sessionauth/v1/authenticate" "$BASE_FH" --disable-keepalive -m POST "https://localhost:$PORT_FH/sessionauth/v1/authenticate" >/dev/null

# RSA (signed JWT) authentication, 2048- and 4096-bit keys, on a server of its own.
echo >&2
BENCH_STORE=$BENCH_STORE "$ROOT/scripts/bench-rsa.sh" "$DURATION" "$CONNS"
