#!/usr/bin/env bash
# A runnable tour of sessionauth with plain curl.
#
# It starts its own server (a fresh dev PKI and config in a temp dir, a free port on 127.0.0.1),
# then walks through every certificate flow a Symphony bot or app uses, and every refusal.
# Each step prints PASS or FAIL; the first unexpected answer stops the run with exit status 1.
#
#   scripts/curl-walkthrough.sh                      # uses target/release/sessionauth
#   SESSIONAUTH_BIN=/path/to/sessionauth scripts/curl-walkthrough.sh
#   VERBOSE=1 scripts/curl-walkthrough.sh            # also print each curl command
#   KEEP_WORK=1 scripts/curl-walkthrough.sh          # keep certs, config and server.log
#
# The last sections reload the server (SIGHUP): a bot deactivated in the directory file, and a
# certificate revoked by a CRL made with `openssl ca`.
#
# Tokens are secrets: the script never prints them, and at the end it checks that none of the
# tokens it received appears in the server's log.
set -euo pipefail

# shellcheck source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"

sa_init
sa_dev_pki "$WORK/certs" # sessionauth certs init --dir $WORK/certs
C="$SA_CERTS"

# --- Trust that can change while the server runs ---------------------------------------------
# The server reads its directory from a copy of the sample (examples/directory.toml) with two
# more service users, reload.bot and crl.bot, so that the reload steps at the end can deactivate
# one and revoke the other's certificate without touching the bots the other steps use. It also
# checks client certificates against a CRL that the dev CA signs with openssl; the CRL starts
# empty (a configured CRL file must exist when the server starts).
DIRECTORY="$WORK/directory.toml"
cp "$SA_ROOT/examples/directory.toml" "$DIRECTORY"
cat >>"$DIRECTORY" <<'EOF'

# Added by scripts/curl-walkthrough.sh for its reload steps.
[[user]]
id = 1101
username = "reload.bot"
displayName = "Reload Bot"
accountType = "SYSTEM"
active = true # reload.bot
roles = ["INDIVIDUAL"]

[[user]]
id = 1102
username = "crl.bot"
displayName = "CRL Bot"
accountType = "SYSTEM"
active = true # crl.bot
roles = ["INDIVIDUAL"]
EOF
for cn in reload.bot crl.bot; do
    "$SA_BIN" certs issue --cn "$cn" --dir "$C" >>"$WORK/issue.log" 2>&1 \
        || { cat "$WORK/issue.log" >&2; die "sessionauth certs issue --cn $cn failed"; }
done

# A minimal `openssl ca` set-up in $WORK/crl: an index of revoked certificates, a CRL number and
# the dev CA's certificate and key. `openssl ca -gencrl` then writes a CRL of what the index
# holds, signed by the CA (the issuer the server matches it to).
CRL_DIR="$WORK/crl"
CRL="$CRL_DIR/crl.pem"
mkdir -p "$CRL_DIR"
: >"$CRL_DIR/index.txt"
echo 01 >"$CRL_DIR/crlnumber"
cat >"$CRL_DIR/openssl-ca.cnf" <<EOF
[ ca ]
default_ca = dev_ca

[ dev_ca ]
database = $CRL_DIR/index.txt
crlnumber = $CRL_DIR/crlnumber
certificate = $C/ca.pem
private_key = $C/ca-key.pem
default_md = sha256
default_crl_days = 1
crl_extensions = crl_ext

[ crl_ext ]
authorityKeyIdentifier = keyid:always
EOF
# make_crl: write $CRL from the index (no revocation yet: an empty CRL).
make_crl() {
    openssl ca -batch -config "$CRL_DIR/openssl-ca.cnf" -gencrl -out "$CRL" >>"$CRL_DIR/openssl.log" 2>&1 \
        || { cat "$CRL_DIR/openssl.log" >&2; die "openssl ca -gencrl failed"; }
}
make_crl

SA_CONFIG_EXTRA="directory = \"$DIRECTORY\""
SA_TLS_EXTRA="crl = [\"$CRL\"]"
sa_start_server

# --- The curl options, spelled out ---------------------------------------------------------------
# Every call verifies the server against the dev CA (--cacert) and reaches it as "localhost", the
# name in the server certificate's SAN. A client identifies itself with its certificate, given
# either as a separate certificate and key (--cert FILE --key FILE) or as one bundle PEM holding
# both (--cert FILE.bundle.pem), the form the Symphony BDK's `certificate.path` uses.
# expect_status (lib/common.sh) runs each curl line as written, adding only -sS, a timeout,
# --resolve localhost:PORT:127.0.0.1 and the capture of status, headers and body; VERBOSE=1
# prints the exact command (tokens shown as <token>).
CA=(--cacert "$C/ca.pem")
BOT=(--cert "$C/bot.user.pem" --key "$C/bot.user-key.pem")
ADMIN_BOT=(--cert "$C/admin.bot.pem" --key "$C/admin.bot-key.pem")
RETIRED=(--cert "$C/retired.bot.pem" --key "$C/retired.bot-key.pem")
DEMO_APP=(--cert "$C/demo-app.pem" --key "$C/demo-app-key.pem")
OTHER_APP=(--cert "$C/other-app.pem" --key "$C/other-app-key.pem")
NO_OBO_APP=(--cert "$C/no-obo-app.pem" --key "$C/no-obo-app-key.pem")
RELOAD_BOT=(--cert "$C/reload.bot.pem" --key "$C/reload.bot-key.pem")
CRL_BOT=(--cert "$C/crl.bot.pem" --key "$C/crl.bot-key.pem")
URL="$SA_BASE"
TOKEN_RE='[A-Za-z0-9_-]{43}'
FORBIDDEN_CN='Forbidden: Certificate authentication is not allowed for the requested user.'

# token_from VAR FIELD: read a token out of the last response body into VAR, and remember it as
# a secret (never printed; checked against the server log at the end).
token_from() {
    local t
    t="$(json_get "$LAST_BODY" "$2")"
    sa_secret "$t"
    printf -v "$1" '%s' "$t"
}

section "Bot: session token, key-manager token, session info"

# A service user (bot) authenticates with its certificate alone: no body, no header.
expect_status "bot.user gets a session token (separate --cert/--key)" 200 \
    -j name=sessionToken -j "token~$TOKEN_RE" -- \
    curl "${CA[@]}" "${BOT[@]}" -X POST "$URL/sessionauth/v1/authenticate"
token_from BOT_TOKEN token

# The same call with the bundle PEM (certificate + key in one file), and the BDK's headers.
expect_status "bot.user gets a second session token (bundle --cert, empty JSON body)" 200 \
    -j name=sessionToken -j "token~$TOKEN_RE" -- \
    curl "${CA[@]}" --cert "$C/bot.user.bundle.pem" -X POST \
    -H 'Content-Type: application/json' -H 'Content-Length: 0' -H 'X-Trace-Id: walk01' \
    "$URL/sessionauth/v1/authenticate"
token_from BOT_TOKEN2 token
check "the two session tokens differ" test "$BOT_TOKEN" != "$BOT_TOKEN2"

# The same bot with its PKCS#12 keystore (certificate, key and CA chain in one file, the Java
# BDK's `bot.certificate` form), password changeit: curl reads it with --cert-type P12.
expect_status "bot.user gets a session token with its PKCS#12 keystore (--cert-type P12)" 200 \
    -j name=sessionToken -j "token~$TOKEN_RE" -- \
    curl "${CA[@]}" --cert-type P12 --cert "$C/bot.user.p12:changeit" -X POST \
    "$URL/sessionauth/v1/authenticate"
token_from P12_TOKEN token
expect_tls_failure "the keystore with a wrong password is refused (by curl)" -- \
    curl "${CA[@]}" --cert-type P12 --cert "$C/bot.user.p12:wrong" -X POST \
    "$URL/sessionauth/v1/authenticate"

# The key manager hands out its own kind of token, under /keyauth.
expect_status "bot.user gets a key-manager token" 200 \
    -j name=keyManagerToken -j "token~$TOKEN_RE" -- \
    curl "${CA[@]}" "${BOT[@]}" -X POST "$URL/keyauth/v1/authenticate"
token_from KM_TOKEN token

# /session/authenticate is the older alias of /sessionauth/v1/authenticate.
expect_status "alias /session/authenticate gives a session token" 200 \
    -j name=sessionToken -j "token~$TOKEN_RE" -- \
    curl "${CA[@]}" "${BOT[@]}" -X POST "$URL/session/authenticate"
token_from ALIAS_TOKEN token

# /pod needs no certificate: the sessionToken header alone says who is calling.
expect_status "sessioninfo names bot.user" 200 \
    -j username=bot.user -j id=1001 -j accountType=SYSTEM -- \
    curl "${CA[@]}" -H "sessionToken: $BOT_TOKEN" "$URL/pod/v2/sessioninfo"
expect_status "sessioninfo of the alias token names bot.user" 200 -j username=bot.user -- \
    curl "${CA[@]}" -H "sessionToken: $ALIAS_TOKEN" "$URL/pod/v2/sessioninfo"

section "App: app session, on-behalf-of sessions, logout"

# An extension app authenticates with its own certificate (here the bundle form).
expect_status "demo-app gets an app session (bundle --cert)" 200 \
    -j name=sessionToken -j "token~$TOKEN_RE" -- \
    curl "${CA[@]}" --cert "$C/demo-app.bundle.pem" -X POST "$URL/sessionauth/v1/app/authenticate"
token_from APP_TOKEN token

# An app session is not a user session: /pod refuses it.
expect_status "sessioninfo with the app's own session is refused" 403 -j code=403 -- \
    curl "${CA[@]}" -H "sessionToken: $APP_TOKEN" "$URL/pod/v2/sessioninfo"

# On behalf of a user who installed the app: app certificate + the app session in the header.
expect_status "OBO for alice by user id 2001" 200 -j "sessionToken~$TOKEN_RE" -- \
    curl "${CA[@]}" "${DEMO_APP[@]}" -H "sessionToken: $APP_TOKEN" -X POST \
    "$URL/sessionauth/v1/app/user/2001/authenticate"
token_from OBO_BY_ID sessionToken

expect_status "OBO for alice by username" 200 -j "sessionToken~$TOKEN_RE" -- \
    curl "${CA[@]}" "${DEMO_APP[@]}" -H "sessionToken: $APP_TOKEN" -X POST \
    "$URL/sessionauth/v1/app/username/alice/authenticate"
token_from OBO_BY_NAME sessionToken

expect_status "sessioninfo of the OBO session (by id) names alice" 200 \
    -j username=alice -j id=2001 -j accountType=NORMAL -- \
    curl "${CA[@]}" -H "sessionToken: $OBO_BY_ID" "$URL/pod/v2/sessioninfo"
expect_status "sessioninfo of the OBO session (by username) names alice" 200 -j username=alice -- \
    curl "${CA[@]}" -H "sessionToken: $OBO_BY_NAME" "$URL/pod/v2/sessioninfo"

# The app that minted an OBO session may end it; exactly that session ends.
expect_status "demo-app logs out alice's OBO session" 200 -j 'message~.+' -- \
    curl "${CA[@]}" "${DEMO_APP[@]}" -H "sessionToken: $OBO_BY_ID" -X POST "$URL/sessionauth/v1/logout"
expect_status "the logged-out OBO session is invalid" 401 -j code=401 -j 'message=Invalid session' -- \
    curl "${CA[@]}" -H "sessionToken: $OBO_BY_ID" "$URL/pod/v2/sessioninfo"
expect_status "alice's other OBO session still works" 200 -j username=alice -- \
    curl "${CA[@]}" -H "sessionToken: $OBO_BY_NAME" "$URL/pod/v2/sessioninfo"

section "Bot logout"

expect_status "bot.user logs out its own session" 200 -j 'message=Logout successful' -- \
    curl "${CA[@]}" "${BOT[@]}" -H "sessionToken: $BOT_TOKEN" -X POST "$URL/sessionauth/v1/logout"
expect_status "the logged-out session is invalid on /pod" 401 -j 'message=Invalid session' -- \
    curl "${CA[@]}" -H "sessionToken: $BOT_TOKEN" "$URL/pod/v2/sessioninfo"
expect_status "a second logout of the same token is refused" 401 -j code=401 -- \
    curl "${CA[@]}" "${BOT[@]}" -H "sessionToken: $BOT_TOKEN" -X POST "$URL/sessionauth/v1/logout"
expect_status "bot.user's other session still works" 200 -j username=bot.user -- \
    curl "${CA[@]}" -H "sessionToken: $BOT_TOKEN2" "$URL/pod/v2/sessioninfo"

section "Refusals: who may authenticate"

expect_status "no client certificate: 401" 401 -j code=401 -- \
    curl "${CA[@]}" -X POST "$URL/sessionauth/v1/authenticate"
expect_status "no client certificate on the app path: 401" 401 -j code=401 -- \
    curl "${CA[@]}" -X POST "$URL/sessionauth/v1/app/authenticate"

# A certificate from a CA the server does not trust: the TLS handshake itself fails, even though
# the CN is a real service user. Make such a CA and certificate with openssl.
# (sa_foreign_client_cert in lib/common.sh shows the openssl commands.)
F="$WORK/foreign"
sa_foreign_client_cert "$F" bot.user
expect_tls_failure "certificate from a foreign CA (CN=bot.user): TLS handshake fails" -- \
    curl "${CA[@]}" --cert "$F/bot.user.pem" --key "$F/bot.user-key.pem" -X POST \
    "$URL/sessionauth/v1/authenticate"

# A certificate from the right CA, for a name the directory does not know.
"$SA_BIN" certs issue --cn stranger --dir "$C" >"$WORK/issue.log" 2>&1 \
    || { cat "$WORK/issue.log" >&2; die "sessionauth certs issue failed"; }
expect_status "unknown CN 'stranger': 403" 403 -j code=403 -j "message=$FORBIDDEN_CN" -- \
    curl "${CA[@]}" --cert "$C/stranger.pem" --key "$C/stranger-key.pem" -X POST \
    "$URL/sessionauth/v1/authenticate"
expect_status "inactive service user retired.bot: 403" 403 -j "message=$FORBIDDEN_CN" -- \
    curl "${CA[@]}" "${RETIRED[@]}" -X POST "$URL/sessionauth/v1/authenticate"
expect_status "inactive retired.bot on /keyauth: 403" 403 -j code=403 -- \
    curl "${CA[@]}" "${RETIRED[@]}" -X POST "$URL/keyauth/v1/authenticate"
expect_status "app certificate on the bot path: 403" 403 -j "message=$FORBIDDEN_CN" -- \
    curl "${CA[@]}" "${DEMO_APP[@]}" -X POST "$URL/sessionauth/v1/authenticate"
expect_status "bot certificate on the app path: 403" 403 -j code=403 -- \
    curl "${CA[@]}" "${BOT[@]}" -X POST "$URL/sessionauth/v1/app/authenticate"

section "Refusals: on-behalf-of"

OBO_ALICE="$URL/sessionauth/v1/app/user/2001/authenticate"
expect_status "OBO without the sessionToken header: 400" 400 -j code=400 -- \
    curl "${CA[@]}" "${DEMO_APP[@]}" -X POST "$OBO_ALICE"
expect_status "OBO with a bot's session token: 401" 401 -j code=401 -- \
    curl "${CA[@]}" "${DEMO_APP[@]}" -H "sessionToken: $BOT_TOKEN2" -X POST "$OBO_ALICE"
expect_status "OBO with a garbage token: 401" 401 -j code=401 -- \
    curl "${CA[@]}" "${DEMO_APP[@]}" -H 'sessionToken: not-a-real-token' -X POST "$OBO_ALICE"

expect_status "other-app gets its own app session" 200 -j "token~$TOKEN_RE" -- \
    curl "${CA[@]}" "${OTHER_APP[@]}" -X POST "$URL/sessionauth/v1/app/authenticate"
token_from OTHER_APP_TOKEN token
expect_status "OBO with other-app's session from demo-app's certificate: 403" 403 -j code=403 -- \
    curl "${CA[@]}" "${DEMO_APP[@]}" -H "sessionToken: $OTHER_APP_TOKEN" -X POST "$OBO_ALICE"

expect_status "OBO for bob, who did not install demo-app: 403" 403 -j code=403 -- \
    curl "${CA[@]}" "${DEMO_APP[@]}" -H "sessionToken: $APP_TOKEN" -X POST \
    "$URL/sessionauth/v1/app/user/2002/authenticate"
expect_status "OBO for carol, an inactive user: 403" 403 -j code=403 -- \
    curl "${CA[@]}" "${DEMO_APP[@]}" -H "sessionToken: $APP_TOKEN" -X POST \
    "$URL/sessionauth/v1/app/username/carol/authenticate"
expect_status "OBO for unknown user id 999: 404" 404 -j code=404 -j 'message=User id not found' -- \
    curl "${CA[@]}" "${DEMO_APP[@]}" -H "sessionToken: $APP_TOKEN" -X POST \
    "$URL/sessionauth/v1/app/user/999/authenticate"
expect_status "OBO for unknown username: 404" 404 -j 'message=Username not found' -- \
    curl "${CA[@]}" "${DEMO_APP[@]}" -H "sessionToken: $APP_TOKEN" -X POST \
    "$URL/sessionauth/v1/app/username/nobody/authenticate"
expect_status "OBO with a user id that is not an integer: 400" 400 -j code=400 -- \
    curl "${CA[@]}" "${DEMO_APP[@]}" -H "sessionToken: $APP_TOKEN" -X POST \
    "$URL/sessionauth/v1/app/user/alice/authenticate"

expect_status "no-obo-app gets an app session" 200 -j "token~$TOKEN_RE" -- \
    curl "${CA[@]}" "${NO_OBO_APP[@]}" -X POST "$URL/sessionauth/v1/app/authenticate"
token_from NO_OBO_TOKEN token
expect_status "no-obo-app (allowOnBehalfOf=false) doing OBO for alice: 403" 403 -j code=403 -- \
    curl "${CA[@]}" "${NO_OBO_APP[@]}" -H "sessionToken: $NO_OBO_TOKEN" -X POST "$OBO_ALICE"

section "Refusals: logout and tokens"

expect_status "admin.bot logging out bot.user's session: 403" 403 -j code=403 -- \
    curl "${CA[@]}" "${ADMIN_BOT[@]}" -H "sessionToken: $BOT_TOKEN2" -X POST "$URL/sessionauth/v1/logout"
expect_status "bot.user's session survived that attempt" 200 -j username=bot.user -- \
    curl "${CA[@]}" -H "sessionToken: $BOT_TOKEN2" "$URL/pod/v2/sessioninfo"
expect_status "logout without the sessionToken header: 400" 400 -j code=400 -- \
    curl "${CA[@]}" "${BOT[@]}" -X POST "$URL/sessionauth/v1/logout"
expect_status "key-manager token on /pod/v2/sessioninfo: 401" 401 -j 'message=Invalid session' -- \
    curl "${CA[@]}" -H "sessionToken: $KM_TOKEN" "$URL/pod/v2/sessioninfo"
expect_status "key-manager token on /sessionauth/v1/logout: 401" 401 -j code=401 -- \
    curl "${CA[@]}" "${BOT[@]}" -H "sessionToken: $KM_TOKEN" -X POST "$URL/sessionauth/v1/logout"
expect_status "garbage token on /pod/v2/sessioninfo: 401" 401 -j code=401 -j 'message=Invalid session' -- \
    curl "${CA[@]}" -H 'sessionToken: garbage' "$URL/pod/v2/sessioninfo"
expect_status "no token on /pod/v2/sessioninfo: 401" 401 -j code=401 -- \
    curl "${CA[@]}" "$URL/pod/v2/sessioninfo"
expect_status "bot.user logs out its key-manager token on /keyauth" 200 -j 'message~.+' -- \
    curl "${CA[@]}" "${BOT[@]}" -H "sessionToken: $KM_TOKEN" -X POST "$URL/keyauth/v1/logout"

section "Refusals: HTTP"

expect_status "unknown path: 404" 404 -j code=404 -- \
    curl "${CA[@]}" "$URL/no/such/path"
expect_status "wrong method (GET on authenticate): 405 with Allow" 405 -j code=405 -H 'allow~.*POST.*' -- \
    curl "${CA[@]}" "${BOT[@]}" "$URL/sessionauth/v1/authenticate"
head -c 70000 /dev/zero | tr '\0' 'x' >"$WORK/big.body" # 70 000 bytes > 64 KiB
expect_status "body over 64 KiB: 413" 413 -j code=413 -- \
    curl "${CA[@]}" "${BOT[@]}" -X POST -H 'Content-Type: application/json' \
    --data-binary "@$WORK/big.body" "$URL/sessionauth/v1/authenticate"

section "App logout"

# An app ends its own app session; the token then answers 401 everywhere.
expect_status "demo-app logs out its own app session" 200 -j 'message~.+' -- \
    curl "${CA[@]}" "${DEMO_APP[@]}" -H "sessionToken: $APP_TOKEN" -X POST "$URL/sessionauth/v1/logout"
expect_status "the logged-out app session is invalid on /pod" 401 -j 'message=Invalid session' -- \
    curl "${CA[@]}" -H "sessionToken: $APP_TOKEN" "$URL/pod/v2/sessioninfo"
expect_status "the logged-out app session cannot mint OBO sessions" 401 -j code=401 -- \
    curl "${CA[@]}" "${DEMO_APP[@]}" -H "sessionToken: $APP_TOKEN" -X POST "$OBO_ALICE"
# An app session's logout cascades: the on-behalf-of sessions it minted end with it, and the
# answer's `count` says how many sessions ended (here the app session and alice's OBO session).
expect_status "alice's OBO session ended with the app session that minted it" 401 \
    -j 'message=Invalid session' -- \
    curl "${CA[@]}" -H "sessionToken: $OBO_BY_NAME" "$URL/pod/v2/sessioninfo"
expect_status "demo-app gets another app session" 200 -j "token~$TOKEN_RE" -- \
    curl "${CA[@]}" "${DEMO_APP[@]}" -X POST "$URL/sessionauth/v1/app/authenticate"
token_from CASCADE_APP token
expect_status "(and mints an OBO session for alice with it)" 200 -j "sessionToken~$TOKEN_RE" -- \
    curl "${CA[@]}" "${DEMO_APP[@]}" -H "sessionToken: $CASCADE_APP" -X POST "$OBO_ALICE"
token_from CASCADE_OBO sessionToken
expect_status "logging out that app session ends 2 sessions (count=2)" 200 \
    -j 'message=Logout successful' -j count=2 -- \
    curl "${CA[@]}" "${DEMO_APP[@]}" -H "sessionToken: $CASCADE_APP" -X POST "$URL/sessionauth/v1/logout"
expect_status "the cascaded OBO session is invalid" 401 -j 'message=Invalid session' -- \
    curl "${CA[@]}" -H "sessionToken: $CASCADE_OBO" "$URL/pod/v2/sessioninfo"

section "Session administration (administrator role: admin.bot)"

# An administrator authenticates like any bot; its own session token then authorizes the pod's
# user-session API. Sessions are named by a public sessionId, never by token.
expect_status "admin.bot gets a session token" 200 -j "token~$TOKEN_RE" -- \
    curl "${CA[@]}" "${ADMIN_BOT[@]}" -X POST "$URL/sessionauth/v1/authenticate"
token_from ADMIN_TOKEN token
expect_status "bot.user gets two more sessions" 200 -j "token~$TOKEN_RE" -- \
    curl "${CA[@]}" "${BOT[@]}" -X POST "$URL/sessionauth/v1/authenticate"
token_from ADM_T1 token
expect_status "(the second)" 200 -j "token~$TOKEN_RE" -- \
    curl "${CA[@]}" "${BOT[@]}" -X POST "$URL/sessionauth/v1/authenticate"
token_from ADM_T2 token
expect_status "admin lists bot.user's sessions" 200 -j 'sessions.0.userId=1001' -j '!sessions.0.token' -- \
    curl "${CA[@]}" -H "sessionToken: $ADMIN_TOKEN" "$URL/pod/v1/users/1001/sessions"
ADM_SIDS="$(python3 -c 'import json,sys; print(" ".join(str(s["sessionId"]) for s in json.load(open(sys.argv[1]))["sessions"]))' "$LAST_BODY")"
check "the listing holds no token" bash -c '! grep -qF "$1" "$2"' _ "$ADM_T1" "$LAST_BODY"
expect_status "a non-administrator (bot.user) may not list sessions: 403" 403 -j code=403 -- \
    curl "${CA[@]}" -H "sessionToken: $ADM_T1" "$URL/pod/v1/users/1001/sessions"
expect_status "a garbage admin token: 401" 401 -j code=401 -- \
    curl "${CA[@]}" -H "sessionToken: nope" "$URL/pod/v1/users/1001/sessions"
expect_status "sessions of an unknown user: 404" 404 -j code=404 -- \
    curl "${CA[@]}" -H "sessionToken: $ADMIN_TOKEN" "$URL/pod/v1/users/999/sessions"
ADM_FIRST="${ADM_SIDS%% *}"
expect_status "admin ends one of bot.user's sessions by id" 200 -j count=1 -j format=TEXT -- \
    curl "${CA[@]}" -H "sessionToken: $ADMIN_TOKEN" -X POST "$URL/pod/v1/users/1001/sessions/$ADM_FIRST/logout"
expect_status "ending the same session id again: 404" 404 -j code=404 -- \
    curl "${CA[@]}" -H "sessionToken: $ADMIN_TOKEN" -X POST "$URL/pod/v1/users/1001/sessions/$ADM_FIRST/logout"
expect_status "admin ends every session of bot.user" 200 -j 'count~[1-9][0-9]*' -- \
    curl "${CA[@]}" -H "sessionToken: $ADMIN_TOKEN" -X POST "$URL/pod/v1/users/1001/sessions/logout"
expect_status "bot.user's sessions are all invalid now" 401 -j 'message=Invalid session' -- \
    curl "${CA[@]}" -H "sessionToken: $ADM_T2" "$URL/pod/v2/sessioninfo"
expect_status "demo-app gets a fresh app session" 200 -j "token~$TOKEN_RE" -- \
    curl "${CA[@]}" "${DEMO_APP[@]}" -X POST "$URL/sessionauth/v1/app/authenticate"
token_from ADM_APP token
expect_status "and an OBO session for alice" 200 -j "sessionToken~$TOKEN_RE" -- \
    curl "${CA[@]}" "${DEMO_APP[@]}" -H "sessionToken: $ADM_APP" -X POST "$URL/sessionauth/v1/app/user/2001/authenticate"
token_from ADM_OBO sessionToken
expect_status "an OBO session of alice may not administer: 403" 403 -j code=403 -- \
    curl "${CA[@]}" -H "sessionToken: $ADM_OBO" "$URL/pod/v1/users/1001/sessions"
expect_status "admin ends every session demo-app holds (app and OBO): 2" 200 -j count=2 -- \
    curl "${CA[@]}" -H "sessionToken: $ADMIN_TOKEN" -X POST "$URL/pod/v1/apps/demo-app/sessions/logout"
expect_status "demo-app's OBO session for alice is invalid" 401 -j 'message=Invalid session' -- \
    curl "${CA[@]}" -H "sessionToken: $ADM_OBO" "$URL/pod/v2/sessioninfo"
expect_status "the administrator's own session is untouched" 200 -j username=admin.bot -- \
    curl "${CA[@]}" -H "sessionToken: $ADMIN_TOKEN" "$URL/pod/v2/sessioninfo"

section "Reload (SIGHUP): deactivating a bot in the directory"

# The server reads the directory file, the CRLs and the TLS files again on SIGHUP, swaps them in
# at once and ends the sessions the change revokes; its log then has one summary line,
# "reloaded the directory, certificates and CRLs" (with counts and took_ms), or "reload refused"
# with the error (and nothing changes). sa_reload (lib/common.sh) sends the signal and waits for
# that line.
expect_status "reload.bot gets a session token" 200 -j "token~$TOKEN_RE" -- \
    curl "${CA[@]}" "${RELOAD_BOT[@]}" -X POST "$URL/sessionauth/v1/authenticate"
token_from RELOAD_TOKEN token
expect_status "bot.user gets a session token" 200 -j "token~$TOKEN_RE" -- \
    curl "${CA[@]}" "${BOT[@]}" -X POST "$URL/sessionauth/v1/authenticate"
token_from STAY_TOKEN token

# An invalid directory is refused whole: the server keeps serving on what it had.
cp "$DIRECTORY" "$WORK/directory.good"
printf '\n[[user]]\nid = 1101\nusername = "duplicate.id"\naccountType = "SYSTEM"\n' >>"$DIRECTORY"
SA_RELOAD_EXPECT=refused sa_reload "SIGHUP with a duplicate user id in the directory"
check "the refusal names the directory file" grep -qF "$DIRECTORY" <<<"$SA_RELOAD_LINE"
expect_status "reload.bot's session survived the refused reload" 200 -j username=reload.bot -- \
    curl "${CA[@]}" -H "sessionToken: $RELOAD_TOKEN" "$URL/pod/v2/sessioninfo"
cp "$WORK/directory.good" "$DIRECTORY"

# Deactivate reload.bot in the directory file, then SIGHUP.
sed -i 's/^active = true # reload.bot$/active = false # reload.bot/' "$DIRECTORY"
check "reload.bot is now active = false in the directory file" \
    grep -qx 'active = false # reload.bot' "$DIRECTORY"
sa_reload "kill -HUP $SERVER_PID: the directory is reloaded"
check "the reload ended reload.bot's session (sessions_ended=1)" \
    grep -qE 'sessions_ended=1( |$)' <<<"$SA_RELOAD_LINE"
expect_status "reload.bot's old token: 401" 401 -j code=401 -j 'message=Invalid session' -- \
    curl "${CA[@]}" -H "sessionToken: $RELOAD_TOKEN" "$URL/pod/v2/sessioninfo"
expect_status "reload.bot authenticating again: 403" 403 -j code=403 -j "message=$FORBIDDEN_CN" -- \
    curl "${CA[@]}" "${RELOAD_BOT[@]}" -X POST "$URL/sessionauth/v1/authenticate"
expect_status "bot.user's session is untouched by the reload" 200 -j username=bot.user -- \
    curl "${CA[@]}" -H "sessionToken: $STAY_TOKEN" "$URL/pod/v2/sessioninfo"

section "Reload (SIGHUP): revoking a certificate with a CRL"

# The server has checked client certificates against $CRL since start-up; it was empty.
expect_status "crl.bot gets a session token" 200 -j "token~$TOKEN_RE" -- \
    curl "${CA[@]}" "${CRL_BOT[@]}" -X POST "$URL/sessionauth/v1/authenticate"
token_from CRL_TOKEN token
expect_status "(and a second one)" 200 -j "token~$TOKEN_RE" -- \
    curl "${CA[@]}" "${CRL_BOT[@]}" -X POST "$URL/sessionauth/v1/authenticate"
token_from CRL_TOKEN2 token

# Revoke crl.bot's certificate in the openssl CA's index, and write the new CRL over the old one.
#   openssl ca -config openssl-ca.cnf -revoke crl.bot.pem -crl_reason keyCompromise
#   openssl ca -config openssl-ca.cnf -gencrl -out crl.pem
CRL_SERIAL="$(openssl x509 -in "$C/crl.bot.pem" -noout -serial | cut -d= -f2)"
openssl ca -batch -config "$CRL_DIR/openssl-ca.cnf" -revoke "$C/crl.bot.pem" \
    -crl_reason keyCompromise >>"$CRL_DIR/openssl.log" 2>&1 \
    || { cat "$CRL_DIR/openssl.log" >&2; die "openssl ca -revoke failed"; }
make_crl
check "the new CRL lists crl.bot's serial $CRL_SERIAL" \
    bash -c 'openssl crl -in "$1" -noout -text | tr -d " :" | grep -qi "SerialNumber$2"' _ "$CRL" "$CRL_SERIAL"
expect_status "before the reload, crl.bot's certificate still works" 200 -j username=crl.bot -- \
    curl "${CA[@]}" -H "sessionToken: $CRL_TOKEN" "$URL/pod/v2/sessioninfo"
sa_reload "kill -HUP $SERVER_PID: the CRL is reloaded"
check "the reload counts one revoked certificate and ended crl.bot's 2 sessions" \
    grep -qE 'revoked_certificates=1 .*sessions_ended=2( |$)' <<<"$SA_RELOAD_LINE"
expect_tls_failure "crl.bot's revoked certificate: TLS handshake refused" -- \
    curl "${CA[@]}" "${CRL_BOT[@]}" -X POST "$URL/sessionauth/v1/authenticate"
expect_status "crl.bot's first session: 401" 401 -j 'message=Invalid session' -- \
    curl "${CA[@]}" -H "sessionToken: $CRL_TOKEN" "$URL/pod/v2/sessioninfo"
expect_status "crl.bot's second session: 401" 401 -j 'message=Invalid session' -- \
    curl "${CA[@]}" -H "sessionToken: $CRL_TOKEN2" "$URL/pod/v2/sessioninfo"
expect_status "bot.user (not revoked) still authenticates" 200 -j "token~$TOKEN_RE" -- \
    curl "${CA[@]}" "${BOT[@]}" -X POST "$URL/sessionauth/v1/authenticate"
token_from AFTER_CRL_TOKEN token
expect_status "and bot.user's earlier session still works" 200 -j username=bot.user -- \
    curl "${CA[@]}" -H "sessionToken: $STAY_TOKEN" "$URL/pod/v2/sessioninfo"

section "Hygiene"
sa_check_log_clean
check "the X-Trace-Id sent with a request is in its access-log line" \
    grep -qE 'trace_id="?walk01' "$WORK/server.log"
