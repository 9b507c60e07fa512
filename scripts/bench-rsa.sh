#!/usr/bin/env bash
# Benchmarks RSA (signed JWT) authentication with oha over keep-alive TLS, side by side with the
# cheapest route and the certificate authenticator on the same server:
#
#   GET  /health                        (baseline)
#   POST /sessionauth/v1/authenticate   (client certificate → new session; for comparison)
#   POST /login/pubkey/authenticate     RS512 JWT, 2048-bit key (bot.user)
#   POST /login/pubkey/authenticate     RS512 JWT, 4096-bit key (admin.bot)
#   POST /login/idm/tokens              an access token signed (RS256) by the server's 2048-bit key
#
# oha cannot sign a fresh JWT per request, and it need not: the server does not reject a
# repeated JWT (clients sign {sub, exp} deterministically), so one JWT made with openssl just
# before a row, valid for 290 s, is sent on every request of that row. Every RSA request still
# parses the JWT, verifies its signature and mints a new session.
#
# Usage: scripts/bench-rsa.sh [DURATION] [CONNECTIONS]     (defaults: 10s, 32; DURATION < 280s)
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
SERVER_PID=""
cleanup() {
  if [[ -n $SERVER_PID ]]; then
    kill "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT

C="$WORK/certs"
# admin.bot gets a 4096-bit key first; `certs init` keeps it and makes 2048-bit keys for the rest.
"$BIN" certs rsa --name admin.bot --bits 4096 --dir "$C" >/dev/null
"$BIN" certs init --dir "$C" >/dev/null

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat >"$WORK/sessionauth.toml" <<TOML
listen = "127.0.0.1:$PORT"
store = "${BENCH_STORE:-memory}"
public_key_dir = "certs"
[tls]
cert = "certs/server.pem"
key = "certs/server-key.pem"
client_ca = ["certs/ca.pem"]
TOML
SESSIONAUTH_LOG=warn "$BIN" serve --config "$WORK/sessionauth.toml" >"$WORK/server.log" 2>&1 &
SERVER_PID=$!
BASE="https://localhost:$PORT"
for _ in $(seq 1 100); do
  curl -sf --cacert "$C/ca.pem" "$BASE/health" >/dev/null 2>&1 && break
  if ! kill -0 "$SERVER_PID" 2>/dev/null; then
    echo "FAIL: the server did not start:" >&2
    cat "$WORK/server.log" >&2
    exit 1
  fi
  sleep 0.1
done

b64url() { openssl base64 -A | tr '+/' '-_' | tr -d '='; }
# jwt NAME → an RS512 JWT for NAME, signed with certs/NAME-rsa.pem, valid for 290 s
jwt() {
  local header claims signature
  header=$(printf '{"alg":"RS512","typ":"JWT"}' | b64url)
  claims=$(printf '{"sub":"%s","exp":%s}' "$1" "$(($(date +%s) + 290))" | b64url)
  signature=$(printf '%s.%s' "$header" "$claims" | openssl dgst -sha512 -sign "$C/$1-rsa.pem" -binary | b64url)
  printf '%s.%s.%s' "$header" "$claims" "$signature"
}

# Each JWT must be accepted before it is benchmarked.
for name in bot.user admin.bot; do
  status=$(curl -s -o /dev/null -w '%{http_code}' --cacert "$C/ca.pem" -X POST \
    -H 'Content-Type: application/json' -d "{\"token\":\"$(jwt "$name")\"}" "$BASE/login/pubkey/authenticate")
  if [[ $status != 200 ]]; then
    echo "FAIL: a JWT of $name got HTTP $status" >&2
    exit 1
  fi
done
# session: a fresh session of bot.user. Taken just before the row that uses it: the rows before
# mint far more than the per-user cap (limits.max_sessions_per_user) of bot.user's sessions, and
# each mint past the cap evicts the oldest.
session() {
  curl -sf --cacert "$C/ca.pem" -X POST -H 'Content-Type: application/json' \
    -d "{\"token\":\"$(jwt bot.user)\"}" "$BASE/login/pubkey/authenticate" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])'
}

# run oha-args... → "rps p50_ms p99_ms non2xx"
run() {
  local out
  out=$(oha --no-tui --output-format json -z "$DURATION" -c "$CONNS" --cacert "$C/ca.pem" "$@")
  python3 -c '
import json, sys
r = json.loads(sys.argv[1])
codes = r.get("statusCodeDistribution", {})
bad = sum(v for k, v in codes.items() if not k.startswith("2"))
p = r.get("latencyPercentiles", {})
ms = lambda k: (p.get(k) or 0) * 1000
print("%.0f %.2f %.2f %d" % (r["summary"]["requestsPerSec"], ms("p50"), ms("p99"), bad))' "$out"
}

echo "sessionauth RSA benchmark: keep-alive, $DURATION per row, $CONNS connections, oha $(oha --version | awk '{print $2}'), $(nproc) cores"
printf '%-58s %10s %8s %9s %9s %8s\n' "scenario" "req/s" "vs base" "p50 ms" "p99 ms" "non-2xx"
FAILED=0
RPS=0
# row LABEL BASE oha-args... → prints the row; leaves its req/s in $RPS
row() {
  local label=$1 base=$2 p50 p99 bad ratio
  shift 2
  read -r RPS p50 p99 bad < <(run "$@")
  if [[ $base == - ]]; then ratio=1.00; else ratio=$(python3 -c "print(f'{$RPS/$base:.2f}')"); fi
  printf '%-58s %10s %8s %9s %9s %8s\n' "$label" "$RPS" "$ratio" "$p50" "$p99" "$bad"
  if [[ $bad != 0 ]]; then FAILED=1; fi
}
JSON=(-m POST -H 'Content-Type: application/json')
row "GET /health (baseline)" - "$BASE/health"
BASE_RPS=$RPS
row "POST /sessionauth/v1/authenticate (client certificate)" "$BASE_RPS" \
  -m POST --cert "$C/bot.user.pem" --key "$C/bot.user-key.pem" "$BASE/sessionauth/v1/authenticate"
row "POST /login/pubkey/authenticate (RS512, 2048-bit key)" "$BASE_RPS" \
  "${JSON[@]}" -d "{\"token\":\"$(jwt bot.user)\"}" "$BASE/login/pubkey/authenticate"
row "POST /login/pubkey/authenticate (RS512, 4096-bit key)" "$BASE_RPS" \
  "${JSON[@]}" -d "{\"token\":\"$(jwt admin.bot)\"}" "$BASE/login/pubkey/authenticate"
SESSION=$(session)
row "POST /login/idm/tokens (RS256 signing, 2048-bit key)" "$BASE_RPS" \
  -m POST -H "sessionToken: $SESSION" "$BASE/login/idm/tokens"
if [[ $FAILED != 0 ]]; then
  echo "FAIL: some requests did not answer 2xx" >&2
  exit 1
fi
