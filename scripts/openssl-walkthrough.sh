#!/usr/bin/env bash
# sessionauth spoken to in raw HTTP/1.1 over `openssl s_client`: no HTTP client library at all.
#
# Useful for seeing exactly what goes over the wire, and for debugging TLS: every connection
# verifies the server (chain to the dev CA, SAN localhost / 127.0.0.1) with -verify_return_error,
# so a wrong server certificate stops the handshake instead of being waved through.
#
#   scripts/openssl-walkthrough.sh
#   SESSIONAUTH_BIN=/path/to/sessionauth VERBOSE=1 scripts/openssl-walkthrough.sh
#
# Each request is written on s_client's stdin with `Connection: close`, so that the server closes
# the connection after its answer and s_client (-quiet implies -ign_eof) exits.
set -euo pipefail

# shellcheck source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"

sa_need_tools timeout
sa_init
sa_dev_pki "$WORK/certs"
sa_start_server
C="$SA_CERTS"

# The s_client options shared by every connection:
#   -connect      the TCP address; -servername: the SNI name
#   -CAfile       the CA that must have signed the server certificate
#   -verify_return_error -verify_hostname localhost
#                 abort the handshake unless the chain verifies and the SAN holds DNS:localhost
#   -quiet        no session dump; only the server's bytes reach stdout
S_CLIENT=(-connect "127.0.0.1:$SA_PORT" -servername localhost -CAfile "$C/ca.pem"
    -verify_return_error -verify_hostname localhost -quiet)
BOT=(-cert "$C/bot.user.pem" -key "$C/bot.user-key.pem")

# http_request METHOD PATH [HEADER...]: an HTTP/1.1 request without a body (raw_exchange adds the
# final "\n" that "$(...)" strips).
http_request() {
    local method="$1" path="$2" h
    shift 2
    printf '%s %s HTTP/1.1\r\n' "$method" "$path"
    printf 'Host: localhost:%s\r\n' "$SA_PORT"
    printf 'User-Agent: openssl-walkthrough\r\n'
    for h in "$@"; do printf '%s\r\n' "$h"; done
    [[ "$method" == POST ]] && printf 'Content-Length: 0\r\n'
    printf 'Connection: close\r\n\r\n'
}

# raw_exchange REQUEST openssl s_client ARGS...: send REQUEST over a fresh TLS connection.
# Sets RAW_RC (s_client's exit status), RAW_STATUS (the status code, or "none" when no HTTP
# status line came back) and writes the body to $LAST_BODY, the head to $LAST_HEADERS and
# s_client's diagnostics to $RAW_ERR.
raw_exchange() {
    local request="$1"
    shift
    [[ "${1:-} ${2:-}" == "openssl s_client" ]] || die "raw_exchange: expected 'openssl s_client ...'"
    shift 2
    LAST_BODY="$WORK/last.body"
    LAST_HEADERS="$WORK/last.headers"
    RAW_ERR="$WORK/last.stderr"
    local raw="$WORK/last.raw"
    if [[ "${VERBOSE:-0}" == 1 ]]; then
        info "      \$ printf '$(printf '%s' "$(sa_redact "$request")" | sed -e 's/\r$/\\r\\n/' | tr -d '\n')' | $(sa_quote openssl s_client "$@")"
    fi
    RAW_RC=0
    # "$(http_request ...)" lost the request's final "\n" (command substitution strips trailing
    # newlines): put it back, or the head never ends and the server waits for more.
    printf '%s\n' "$request" | timeout 15 openssl s_client "$@" >"$raw" 2>"$RAW_ERR" || RAW_RC=$?
    # Split the response: status line, head, body (Content-Length or chunked).
    RAW_STATUS="$(python3 -c '
import re, sys
raw = open(sys.argv[1], "rb").read()
head, sep, body = raw.partition(b"\r\n\r\n")
m = re.match(rb"HTTP/1\.[01] (\d{3})", head)
if not m or not sep:
    open(sys.argv[2], "wb").close(); open(sys.argv[3], "wb").close()
    print("none"); sys.exit(0)
headers = {}
for line in head.split(b"\r\n")[1:]:
    k, _, v = line.partition(b":")
    headers[k.strip().lower()] = v.strip()
if headers.get(b"transfer-encoding", b"").lower() == b"chunked":
    out = b""
    while body:
        size_line, _, body = body.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out += body[:size]
        body = body[size + 2:]
    body = out
elif b"content-length" in headers:
    body = body[:int(headers[b"content-length"])]
open(sys.argv[2], "wb").write(head + b"\r\n")
open(sys.argv[3], "wb").write(body)
print(m.group(1).decode())
' "$raw" "$LAST_HEADERS" "$LAST_BODY")"
}

# s_client_diag: s_client's error lines (without the verify chatter), on one line.
s_client_diag() {
    { grep -v '^depth=\|^verify return' "$RAW_ERR" || true; } | head -n 3 | tr '\n' ' '
}

# expect_raw STEP STATUS [-j SPEC]... REQUEST -- openssl s_client ARGS...
# The HTTP status must be STATUS, the Content-Type application/json, each JSON SPEC must hold
# (see json_check in lib/common.sh); otherwise a FAIL line and exit 1.
expect_raw() {
    local step="$1" want="$2"
    shift 2
    local -a specs=()
    while [[ "$1" == -j ]]; do
        specs+=("$2")
        shift 2
    done
    local request="$1"
    shift
    [[ "${1:-}" == "--" ]] || die "expect_raw: missing '--' (step: $step)"
    shift
    raw_exchange "$request" "$@"
    local -a problems=()
    if [[ "$RAW_STATUS" != "$want" ]]; then
        problems+=("HTTP status $RAW_STATUS, expected $want (s_client exit $RAW_RC)")
        local diag
        diag="$(s_client_diag)"
        [[ -n "$diag" ]] && problems+=("s_client: $diag")
    elif ! grep -qiE '^content-type:[[:space:]]*application/json' "$LAST_HEADERS"; then
        problems+=("Content-Type is not application/json")
    elif [[ ${#specs[@]} -gt 0 ]]; then
        local why line
        if ! why="$(json_check "$LAST_BODY" "${specs[@]}")"; then
            while IFS= read -r line; do problems+=("$line"); done <<<"$why"
        fi
    fi
    if [[ ${#problems[@]} -gt 0 ]]; then
        [[ -s "$LAST_BODY" ]] && problems+=("body: $(sa_redact "$(head -c 400 "$LAST_BODY")")")
        fail "$step" "${problems[@]}"
    fi
    pass "$step (HTTP $RAW_STATUS)"
}

# expect_no_http STEP REGEX REQUEST -- openssl s_client ARGS...: the connection must fail before
# any HTTP answer: s_client exits non-zero, no status line arrives, and its diagnostics match REGEX.
expect_no_http() {
    local step="$1" regex="$2" request="$3"
    shift 3
    [[ "${1:-}" == "--" ]] || die "expect_no_http: missing '--' (step: $step)"
    shift
    raw_exchange "$request" "$@"
    local diag
    diag="$(s_client_diag)"
    if [[ "$RAW_STATUS" != none ]]; then
        fail "$step" "an HTTP answer ($RAW_STATUS) arrived; the TLS handshake should have failed"
    fi
    if [[ "$RAW_RC" -eq 0 ]]; then
        fail "$step" "s_client exited 0; expected a failure" "s_client: $diag"
    fi
    if ! grep -qE -- "$regex" "$RAW_ERR"; then
        fail "$step" "s_client's error does not match /$regex/" "s_client: $diag"
    fi
    pass "$step (s_client exit $RAW_RC: $(grep -oE -- "$regex" "$RAW_ERR" | head -n 1))"
}

section "Server verification"

# Health needs no client certificate; the handshake proves the server chain and SAN DNS:localhost.
expect_raw "GET /health, server verified by chain and SAN DNS:localhost" 200 -j status=UP \
    "$(http_request GET /health)" -- openssl s_client "${S_CLIENT[@]}"
# The SAN also holds IP:127.0.0.1 (clients that connect by address check that one).
expect_raw "GET /health, server verified by SAN IP:127.0.0.1" 200 -j status=UP \
    "$(http_request GET /health)" -- openssl s_client -connect "127.0.0.1:$SA_PORT" \
    -CAfile "$C/ca.pem" -verify_return_error -verify_ip 127.0.0.1 -quiet
# Negative controls: verification really is on. A name not in the SAN, or a CA that did not sign
# the server certificate, stops the handshake on the client side.
expect_no_http "a host name not in the server's SAN is rejected" 'hostname mismatch|verify failed' \
    "$(http_request GET /health)" -- openssl s_client -connect "127.0.0.1:$SA_PORT" \
    -servername localhost -CAfile "$C/ca.pem" -verify_return_error -verify_hostname wrong.example -quiet
sa_foreign_client_cert "$WORK/foreign" bot.user
expect_no_http "a server checked against the wrong CA is rejected" 'unable to get local issuer certificate|verify failed' \
    "$(http_request GET /health)" -- openssl s_client -connect "127.0.0.1:$SA_PORT" \
    -servername localhost -CAfile "$WORK/foreign/ca.pem" -verify_return_error -quiet

section "Session lifecycle over raw HTTP"

expect_raw "bot.user authenticates with its certificate" 200 -j name=sessionToken \
    -j 'token~[A-Za-z0-9_-]{43}' \
    "$(http_request POST /sessionauth/v1/authenticate 'X-Trace-Id: ossl01')" -- \
    openssl s_client "${S_CLIENT[@]}" "${BOT[@]}"
TOKEN="$(json_get "$LAST_BODY" token)"
sa_secret "$TOKEN"

# The bundle form: -cert with a PEM holding certificate and key (s_client reads the key from it).
expect_raw "bot.user authenticates with its bundle PEM (-cert only)" 200 -j name=sessionToken \
    "$(http_request POST /sessionauth/v1/authenticate)" -- \
    openssl s_client "${S_CLIENT[@]}" -cert "$C/bot.user.bundle.pem"
sa_secret "$(json_get "$LAST_BODY" token)"

# /pod needs no client certificate: the token in the header identifies the caller.
expect_raw "sessioninfo with that token names bot.user" 200 -j username=bot.user -j id=1001 \
    "$(http_request GET /pod/v2/sessioninfo "sessionToken: $TOKEN")" -- \
    openssl s_client "${S_CLIENT[@]}"
expect_raw "bot.user logs the token out" 200 -j 'message=Logout successful' \
    "$(http_request POST /sessionauth/v1/logout "sessionToken: $TOKEN")" -- \
    openssl s_client "${S_CLIENT[@]}" "${BOT[@]}"
expect_raw "sessioninfo with the logged-out token" 401 -j code=401 -j 'message=Invalid session' \
    "$(http_request GET /pod/v2/sessioninfo "sessionToken: $TOKEN")" -- \
    openssl s_client "${S_CLIENT[@]}"

section "Refusals"

expect_raw "authenticate without a client certificate" 401 -j code=401 \
    "$(http_request POST /sessionauth/v1/authenticate)" -- openssl s_client "${S_CLIENT[@]}"
# A client certificate that does not chain to the server's client CA: the server aborts the
# handshake with an alert (with TLS 1.3 it arrives after the client sent its request), and no
# HTTP answer ever comes back.
expect_no_http "client certificate from a foreign CA: handshake refused" \
    'alert (unknown ca|certificate unknown|bad certificate|decrypt error)|alert number' \
    "$(http_request POST /sessionauth/v1/authenticate)" -- \
    openssl s_client "${S_CLIENT[@]}" -cert "$WORK/foreign/bot.user.pem" -key "$WORK/foreign/bot.user-key.pem"

section "Hygiene"
sa_check_log_clean
check "the X-Trace-Id sent with a request is in its access-log line" \
    grep -qE 'trace_id="?ossl01' "$WORK/server.log"
