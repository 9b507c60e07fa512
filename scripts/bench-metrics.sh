#!/usr/bin/env bash
# What recording metrics costs: keep-alive POST /sessionauth/v1/authenticate (memory store) on
# two servers that differ only in `metrics = true` / `metrics = false`, side by side in one run,
# rounds interleaved (on, off, then off, on, ...) so that drift on a shared machine falls on
# both, medians compared. The goal: metrics on at least 0.97 of off.
#
# Usage: scripts/bench-metrics.sh [DURATION] [CONNECTIONS] [ROUNDS]   (defaults: 10s, 32, 3)
# Environment: SESSIONAUTH_BIN (default target/release/sessionauth, built when missing).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DURATION=${1:-10s}
CONNS=${2:-32}
ROUNDS=${3:-3}
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

# start_server NAME METRICS → sets PORT.
start_server() {
  local name=$1 metrics=$2 port
  port=$(free_port)
  cat >"$WORK/$name.toml" <<TOML
listen = "127.0.0.1:$port"
store = "memory"
metrics = $metrics
[tls]
cert = "certs/server.pem"
key = "certs/server-key.pem"
client_ca = ["certs/ca.pem"]
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

start_server on true
PORT_ON=$PORT
start_server off false
PORT_OFF=$PORT
# The servers differ as meant: one serves /metrics, the other answers 404.
C="$WORK/certs"
TLS=(--cacert "$C/ca.pem" --cert "$C/bot.user.pem" --key "$C/bot.user-key.pem")
curl -sf "${TLS[@]}" "https://localhost:$PORT_ON/metrics" | grep -q '^sessionauth_build_info' ||
  { echo "the metrics-on server serves no metrics" >&2; exit 1; }
[[ $(curl -s -o /dev/null -w '%{http_code}' "${TLS[@]}" "https://localhost:$PORT_OFF/metrics") == 404 ]] ||
  { echo "the metrics-off server serves metrics" >&2; exit 1; }

# rate PORT → requests per second of keep-alive authenticate; fails on any non-2xx answer.
rate() {
  local out
  out=$(oha --no-tui --output-format json -z "$DURATION" -c "$CONNS" "${TLS[@]}" -m POST \
    "https://localhost:$1/sessionauth/v1/authenticate")
  python3 -c '
import json, sys
r = json.loads(sys.argv[1])
bad = sum(v for k, v in r.get("statusCodeDistribution", {}).items() if not k.startswith("2"))
if bad:
    sys.exit("%d non-2xx answers" % bad)
print("%.0f" % r["summary"]["requestsPerSec"])' "$out"
}

echo "metrics on vs off: keep-alive POST /sessionauth/v1/authenticate, memory store, $DURATION per run, $CONNS connections, $ROUNDS rounds, oha $(oha --version | awk '{print $2}'), $(nproc) cores"
ON=()
OFF=()
for round in $(seq 1 "$ROUNDS"); do
  if ((round % 2)); then
    ON+=("$(rate "$PORT_ON")")
    OFF+=("$(rate "$PORT_OFF")")
  else
    OFF+=("$(rate "$PORT_OFF")")
    ON+=("$(rate "$PORT_ON")")
  fi
  printf 'round %d: on %s/s, off %s/s\n' "$round" "${ON[-1]}" "${OFF[-1]}"
done
python3 - "${ON[*]}" "${OFF[*]}" <<'PY'
import statistics, sys
on = [float(x) for x in sys.argv[1].split()]
off = [float(x) for x in sys.argv[2].split()]
m_on, m_off = statistics.median(on), statistics.median(off)
ratio = m_on / m_off
print(f"median: on {m_on:.0f}/s, off {m_off:.0f}/s, ratio on/off {ratio:.3f} (goal >= 0.97: {'met' if ratio >= 0.97 else 'MISSED'})")
PY
