#!/usr/bin/env bash
# RSA authentication with nothing but curl and openssl: a JWT made by hand, signed with the bot's
# RSA key, exchanged for a session token; then an access token for resource servers.
#
#   1. `sessionauth certs init` makes the dev PKI and, for every service user and app, an RSA key
#      pair: certs/<name>-rsa.pem (private) and certs/<name>-rsa.pub.pem (public).
#   2. The server starts with `public_key_dir = "certs"`: principals take those public keys.
#   3. JWT = base64url(header) . base64url(claims) . base64url(RS512 signature), where
#      header = {"alg":"RS512","typ":"JWT"} and claims = {"sub":"bot.user","exp":<now + 290>};
#      the signature is `openssl dgst -sha512 -sign certs/bot.user-rsa.pem` (RSASSA-PKCS1-v1_5).
#   4. POST /login/pubkey/authenticate {"token": JWT} → {"name":"sessionToken","token":"…"}.
#
# Usage: scripts/curl-rsa-example.sh
# Environment: SESSIONAUTH_BIN (default target/release/sessionauth, built when missing).
# Prints PASS/FAIL per step; exits non-zero on any unexpected status.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN=${SESSIONAUTH_BIN:-$ROOT/target/release/sessionauth}
if [[ ! -x $BIN ]]; then
  (cd "$ROOT" && cargo build --release)
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

PASSED=0
pass() { PASSED=$((PASSED + 1)); echo "PASS  $*"; }
fail() {
  echo "FAIL  $1" >&2
  shift
  for line in "$@"; do echo "      $line" >&2; done
  exit 1
}

b64url() { openssl base64 -A | tr '+/' '-_' | tr -d '='; }

# make_jwt KEY SUB EXP → a compact RS512 JWS
make_jwt() {
  local key=$1 sub=$2 exp=$3 header claims signature
  header=$(printf '{"alg":"RS512","typ":"JWT"}' | b64url)
  claims=$(printf '{"sub":"%s","exp":%s}' "$sub" "$exp" | b64url)
  signature=$(printf '%s.%s' "$header" "$claims" | openssl dgst -sha512 -sign "$key" -binary | b64url)
  printf '%s.%s.%s' "$header" "$claims" "$signature"
}

# call EXPECTED_STATUS STEP curl-args... → the body in $BODY
call() {
  local expected=$1 step=$2 status
  shift 2
  status=$(curl -sS -o "$WORK/body" -w '%{http_code}' --cacert "$WORK/certs/ca.pem" "$@") ||
    fail "$step" "curl failed"
  BODY=$(cat "$WORK/body")
  if [[ $status != "$expected" ]]; then
    fail "$step" "expected HTTP $expected, got $status" "body: $BODY"
  fi
  pass "$step (HTTP $status)"
}

json_field() { python3 -c 'import json,sys; print(json.loads(sys.argv[1])[sys.argv[2]])' "$1" "$2"; }

"$BIN" certs init --dir "$WORK/certs" >/dev/null
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat >"$WORK/sessionauth.toml" <<TOML
listen = "127.0.0.1:$PORT"
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
  curl -sf --cacert "$WORK/certs/ca.pem" "$BASE/health" >/dev/null 2>&1 && break
  kill -0 "$SERVER_PID" 2>/dev/null || fail "server start" "$(cat "$WORK/server.log")"
  sleep 0.1
done

NOW=$(date +%s)
JWT=$(make_jwt "$WORK/certs/bot.user-rsa.pem" bot.user $((NOW + 290)))
echo "JWT header.claims: $(printf '%s' "$JWT" | cut -d. -f1-2)   (signature not shown)"

call 200 "POST /login/pubkey/authenticate with an RS512 JWT" \
  -X POST -H 'Content-Type: application/json' -d "{\"token\":\"$JWT\"}" "$BASE/login/pubkey/authenticate"
[[ $(json_field "$BODY" name) == sessionToken ]] || fail "response names sessionToken" "$BODY"
SESSION=$(json_field "$BODY" token)

call 200 "POST /relay/pubkey/authenticate (the same JWT again: no replay rejection)" \
  -X POST -H 'Content-Type: application/json' -d "{\"token\":\"$JWT\"}" "$BASE/relay/pubkey/authenticate"
[[ $(json_field "$BODY" name) == keyManagerToken ]] || fail "response names keyManagerToken" "$BODY"

call 200 "GET /pod/v2/sessioninfo with the session token" \
  -H "sessionToken: $SESSION" "$BASE/pod/v2/sessioninfo"
[[ $(json_field "$BODY" username) == bot.user ]] || fail "session belongs to bot.user" "$BODY"

call 200 "POST /login/idm/tokens?scope=demo (a short-lived access token)" \
  -X POST -H "sessionToken: $SESSION" "$BASE/login/idm/tokens?scope=demo"
[[ $(json_field "$BODY" token_type) == Bearer ]] || fail "token_type is Bearer" "$BODY"

call 200 "GET /login/idm/keys (the JWKS that verifies it)" "$BASE/login/idm/keys"

call 403 "POST /login/idm/tokens?scope=admin (a scope the directory does not grant bot.user)" \
  -X POST -H "sessionToken: $SESSION" "$BASE/login/idm/tokens?scope=admin"

EXPIRED=$(make_jwt "$WORK/certs/bot.user-rsa.pem" bot.user $((NOW - 120)))
call 401 "an expired JWT is refused" \
  -X POST -H 'Content-Type: application/json' -d "{\"token\":\"$EXPIRED\"}" "$BASE/login/pubkey/authenticate"
echo "      message: $(json_field "$BODY" message)"

WRONG=$(make_jwt "$WORK/certs/admin.bot-rsa.pem" bot.user $((NOW + 290)))
call 401 "a JWT signed with another principal's key is refused" \
  -X POST -H 'Content-Type: application/json' -d "{\"token\":\"$WRONG\"}" "$BASE/login/pubkey/authenticate"
echo "      message: $(json_field "$BODY" message)"

echo "curl RSA example: $PASSED passed, 0 failed"
