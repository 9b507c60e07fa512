#!/usr/bin/env bash
# Conformance: runs the real, unmodified Symphony Python BDK (symphony-bdk-python 3.0.0 from PyPI)
# against a built sessionauth binary.
#
#   bash scripts/bdk-conformance.sh
#
# - creates (or reuses) a venv at target/bdk-venv with the pinned BDK;
# - makes a temporary work dir with a dev PKI (`sessionauth certs init`) and a server config that
#   listens on 127.0.0.1:0 (the kernel picks a free port; the script reads it from the log);
# - starts the server in the background and waits (bounded) for GET /health;
# - writes the BDK configurations and runs scripts/bdk_conformance.py (certificate mode), then
#   scripts/bdk_conformance_rsa.py (RSA mode); both also run the session-administration and
#   app-logout-cascade checks of scripts/bdk_revocation.py. Before them, scripts/p12_check.py
#   loads the PKCS#12 keystores with cryptography and authenticates with one. Exit 1 when any
#   of these fails.
#
# Environment:
#   SESSIONAUTH_BIN   the binary to test (default: target/release/sessionauth; never built here)
#   PYTHON            the interpreter that creates the venv (default: python3)
#   KEEP_WORK=1       keep the work dir (PKI, configs, server log) for inspection
#
# Exit code: the Python script's; 2 when the environment cannot be set up (no binary, no venv,
# pip failure, server not starting).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BDK_PACKAGE="symphony-bdk-python"
BDK_VERSION="3.0.0"
VENV="$REPO/target/bdk-venv"
BIN="${SESSIONAUTH_BIN:-$REPO/target/release/sessionauth}"
PYTHON="${PYTHON:-python3}"
STARTUP_TIMEOUT_S=20 # until the server logs its address
HEALTH_TIMEOUT_S=10  # until GET /health answers 200
RUN_TIMEOUT_S=210    # the Python checks; they have their own, shorter, timeouts too

WORK=""
SERVER_PID=""

pass() { printf 'PASS: %s\n' "$*"; }
fail() { printf 'FAIL: %s\n' "$*"; }
die() {
    fail "$*"
    exit 2
}

# shellcheck disable=SC2329 # invoked by the EXIT trap
cleanup() {
    local rc=$?
    trap - EXIT
    if [[ -n "$SERVER_PID" ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill -TERM "$SERVER_PID" 2>/dev/null || true
        # Bounded wait for a graceful exit, then force it. Only this PID is ever signalled.
        for _ in $(seq 1 50); do
            kill -0 "$SERVER_PID" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    if [[ $rc -ne 0 && -n "$WORK" && -f "$WORK/server.log" ]]; then
        echo "---- server log (last 40 lines) ----"
        tail -n 40 "$WORK/server.log" || true
        echo "------------------------------------"
    fi
    if [[ -n "$WORK" && -d "$WORK" ]]; then
        if [[ "${KEEP_WORK:-}" == "1" ]]; then
            echo "work dir kept: $WORK"
        else
            rm -rf -- "$WORK"
        fi
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---- the binary under test -------------------------------------------------------------------
if [[ ! -x "$BIN" ]]; then
    die "sessionauth binary not found or not executable at $BIN (run 'cargo build --release' or set SESSIONAUTH_BIN)"
fi
pass "binary $BIN"

# ---- the venv with the pinned BDK ------------------------------------------------------------
bdk_version() {
    "$VENV/bin/python" -c 'import importlib.metadata as m, sys; print(m.version(sys.argv[1]))' \
        "$BDK_PACKAGE" 2>/dev/null || true
}

if [[ -e "$VENV" ]] && ! "$VENV/bin/python" -c 'import sys' >/dev/null 2>&1; then
    echo "venv at $VENV is broken; recreating it"
    rm -rf -- "$VENV"
fi
if [[ ! -e "$VENV" ]]; then
    mkdir -p "$(dirname "$VENV")"
    "$PYTHON" -m venv "$VENV" </dev/null ||
        die "'$PYTHON -m venv $VENV' failed (on Debian/Ubuntu: install python3-venv)"
fi
if [[ "$(bdk_version)" != "$BDK_VERSION" ]]; then
    echo "installing $BDK_PACKAGE==$BDK_VERSION into $VENV"
    PIP_NO_INPUT=1 "$VENV/bin/python" -m pip install -q --disable-pip-version-check \
        "$BDK_PACKAGE==$BDK_VERSION" </dev/null ||
        die "pip install $BDK_PACKAGE==$BDK_VERSION failed"
fi
[[ "$(bdk_version)" == "$BDK_VERSION" ]] ||
    die "$BDK_PACKAGE in $VENV is '$(bdk_version)', expected $BDK_VERSION"
pass "venv $VENV has $BDK_PACKAGE $BDK_VERSION"

# ---- PKI and server configuration ------------------------------------------------------------
WORK="$(mktemp -d "${TMPDIR:-/tmp}/bdk-conformance.XXXXXX")"
"$BIN" certs init --dir "$WORK/certs" >"$WORK/certs-init.log" 2>&1 </dev/null || {
    cat "$WORK/certs-init.log"
    die "sessionauth certs init --dir $WORK/certs"
}
for f in ca.pem server.pem bot.user.bundle.pem retired.bot.bundle.pem admin.bot.bundle.pem \
    demo-app.bundle.pem bot.user-rsa.pem retired.bot-rsa.pem admin.bot-rsa.pem demo-app-rsa.pem \
    bot.user.p12 truststore.p12; do
    [[ -s "$WORK/certs/$f" ]] || die "certs init did not create $f"
done
pass "dev PKI in $WORK/certs"

cat >"$WORK/sessionauth.toml" <<EOF
# Written by scripts/bdk-conformance.sh. Port 0: the kernel picks a free one.
listen = "127.0.0.1:0"
# RSA mode: principals take the public keys \`certs init\` made (certs/<name>-rsa.pub.pem).
public_key_dir = "certs"

[tls]
cert = "certs/server.pem"
key = "certs/server-key.pem"
client_ca = ["certs/ca.pem"]
EOF

# ---- start the server ------------------------------------------------------------------------
# NO_COLOR keeps ANSI escapes out of the log that is parsed below.
NO_COLOR=1 "$BIN" serve --config "$WORK/sessionauth.toml" \
    >"$WORK/server.out" 2>"$WORK/server.log" </dev/null &
SERVER_PID=$!

PORT=""
deadline=$((SECONDS + STARTUP_TIMEOUT_S))
while [[ -z "$PORT" ]]; do
    kill -0 "$SERVER_PID" 2>/dev/null || die "sessionauth exited during start-up"
    ((SECONDS < deadline)) || die "sessionauth did not log its address within ${STARTUP_TIMEOUT_S}s"
    # "sessionauth listening (https) addr=127.0.0.1:PORT" (escapes stripped in case of colour)
    PORT="$(sed 's/\x1b\[[0-9;]*m//g' "$WORK/server.log" |
        sed -n 's/.*sessionauth listening.*addr=127\.0\.0\.1:\([0-9][0-9]*\).*/\1/p' | head -n 1)"
    [[ -n "$PORT" ]] || sleep 0.1
done
[[ "$PORT" != "8443" ]] || die "the server bound 8443, which this script must never use"
pass "sessionauth (pid $SERVER_PID) listening on 127.0.0.1:$PORT"

# GET /health over TLS, trusting only the dev CA and checking the name localhost.
health_ok() {
    "$VENV/bin/python" - "$PORT" "$WORK/certs/ca.pem" <<'EOF' >/dev/null 2>&1
import json, ssl, sys, urllib.request
port, ca = sys.argv[1], sys.argv[2]
ctx = ssl.create_default_context(cafile=ca)
with urllib.request.urlopen(f"https://localhost:{port}/health", context=ctx, timeout=2) as r:
    sys.exit(0 if r.status == 200 and json.load(r).get("status") == "UP" else 1)
EOF
}
deadline=$((SECONDS + HEALTH_TIMEOUT_S))
until health_ok; do
    kill -0 "$SERVER_PID" 2>/dev/null || die "sessionauth exited before answering /health"
    ((SECONDS < deadline)) || die "GET https://localhost:$PORT/health did not answer 200 within ${HEALTH_TIMEOUT_S}s"
    sleep 0.2
done
pass "GET /health answers 200 {\"status\":\"UP\"}"

# ---- the PKCS#12 keystores, as a Python client reads them -------------------------------------
# cryptography (a BDK dependency, so in the venv) loads bot.user.p12 and truststore.p12, and the
# key and chain taken out of the keystore authenticate, as a PKCS#12 adapter for requests does.
echo "---- PKCS#12 keystores (cryptography) ----"
PYTHONDONTWRITEBYTECODE=1 "$VENV/bin/python" -u "$REPO/scripts/p12_check.py" \
    --certs "$WORK/certs" --port "$PORT" </dev/null || {
    fail "the PKCS#12 keystores do not load or authenticate in Python"
    exit 1
}

# ---- BDK configurations (the documented shape: host, port, trust store, bot, app) -------------
write_bdk_config() { # $1 file, $2 bot username
    cat >"$1" <<EOF
host: localhost
port: $PORT
ssl:
  trustStore:
    path: '$WORK/certs/ca.pem'
bot:
  username: '$2'
  certificate:
    path: '$WORK/certs/$2.bundle.pem'
app:
  appId: demo-app
  certificate:
    path: '$WORK/certs/demo-app.bundle.pem'
EOF
}
write_bdk_config "$WORK/bot.yaml" bot.user
write_bdk_config "$WORK/retired.yaml" retired.bot
# The sample directory's administrator (SUPER_ADMINISTRATOR): the session-administration checks.
write_bdk_config "$WORK/admin.yaml" admin.bot

# ---- run the BDK checks ----------------------------------------------------------------------
runner=()
if command -v timeout >/dev/null 2>&1; then
    runner=(timeout --kill-after=10 "$RUN_TIMEOUT_S")
fi
# Both scripts import scripts/bdk_revocation.py: keep its bytecode out of the source tree.
export PYTHONDONTWRITEBYTECODE=1
set +e
echo "---- certificate mode (bot.certificate, app.certificate) ----"
(cd "$WORK" && "${runner[@]}" "$VENV/bin/python" -u "$REPO/scripts/bdk_conformance.py" \
    --config "$WORK/bot.yaml" --refused-config "$WORK/retired.yaml" \
    --admin-config "$WORK/admin.yaml" </dev/null)
rc=$?
echo "---- RSA mode (bot.privateKey, app.privateKey) ----"
(cd "$WORK" && "${runner[@]}" "$VENV/bin/python" -u "$REPO/scripts/bdk_conformance_rsa.py" \
    --port "$PORT" --certs "$WORK/certs" --ca "$WORK/certs/ca.pem" </dev/null)
rc_rsa=$?
set -e
if [[ $rc -eq 124 || $rc -eq 137 || $rc_rsa -eq 124 || $rc_rsa -eq 137 ]]; then
    fail "a BDK conformance run was stopped after ${RUN_TIMEOUT_S}s"
fi
if [[ $rc -ne 0 || $rc_rsa -ne 0 ]]; then
    exit 1
fi
exit 0
