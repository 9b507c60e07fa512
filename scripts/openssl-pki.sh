#!/usr/bin/env bash
# Bring your own PKI: a CA, a server certificate and client certificates made with plain openssl,
# for people who do not want the dev PKI of `sessionauth certs init`.
#
#   scripts/openssl-pki.sh DIR CN [CN...]   make (or complete) the PKI in DIR
#   scripts/openssl-pki.sh --selftest       prove such a PKI works with the server
#   scripts/openssl-pki.sh --help
#
# In DIR:
#   ca.pem, ca-key.pem                 the CA: basicConstraints=critical,CA:TRUE,
#                                      keyUsage=critical,keyCertSign,cRLSign, SKI and AKI
#   server.pem, server-key.pem         CN=localhost, SAN DNS:localhost, IP:127.0.0.1, IP:::1,
#                                      extendedKeyUsage=serverAuth
#   <cn>.pem, <cn>-key.pem, <cn>.bundle.pem
#                                      a client certificate per CN (a service user's username
#                                      or an app's id), extendedKeyUsage=clientAuth; the bundle
#                                      holds certificate and key, for the Symphony Python BDK
#   <cn>.p12                           PKCS#12 keystore: certificate, key and CA, friendly name
#                                      the CN (AES-256-CBC, PBKDF2, HMAC-SHA256), for the Java
#                                      BDK's bot.certificate and the legacy SDKs
#   truststore.p12                     the CA as a PKCS#12 truststore, for the Java BDK's
#                                      ssl.trustStore: a trusted-certificate entry made with
#                                      `openssl pkcs12 -jdktrust` (OpenSSL 3.2+) or else keytool
# Keys are PKCS#8, unencrypted, mode 0600 (umask 077), as are keystores; certificates are 0644.
# Existing files are never overwritten: run again with more CNs to add clients signed by the
# same CA.
#
# Environment: PKI_KEY_TYPE=ec (P-256, the default) or rsa (2048 bits); PKI_DAYS (leaf validity,
# default 365); PKI_CA_DAYS (default 3650); PKI_P12_PASSWORD (the keystores', default changeit).
#
# Point sessionauth at it with:
#   [tls]
#   cert = "DIR/server.pem"
#   key = "DIR/server-key.pem"
#   client_ca = ["DIR/ca.pem"]
set -euo pipefail

# shellcheck source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"

# This script's absolute path: the self-test runs it as a child, from any directory.
SELF="$SA_ROOT/scripts/$(basename "${BASH_SOURCE[0]}")"

usage() {
    sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '/^set -euo/d' -e 's/^# \{0,1\}//'
}

# --------------------------------------------------------------------------------------------
# Making the PKI

# The extension profiles, in a config of our own so that the system openssl.cnf cannot add or
# duplicate extensions.
write_openssl_config() {
    cat >"$1" <<'EOF'
[req]
distinguished_name = dn
prompt = no
[dn]
[v3_ca]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
[v3_server]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost,IP:127.0.0.1,IP:::1
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid,issuer
[v3_client]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid,issuer
EOF
}

# new_key FILE: a fresh private key (PKCS#8 PEM), mode 0600 through the umask.
new_key() {
    case "${PKI_KEY_TYPE:-ec}" in
        ec) openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" ;;
        rsa) openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$1" ;;
        *) die "PKI_KEY_TYPE must be ec or rsa, not '${PKI_KEY_TYPE}'" ;;
    esac
}

# sign NAME CN PROFILE: DIR/NAME.pem from the key DIR/NAME-key.pem, signed by the CA.
sign() {
    local name="$1" cn="$2" profile="$3"
    openssl req -new -config "$CNF" -key "$DIR/$name-key.pem" -subj "/CN=$cn" -out "$TMP/$name.csr"
    openssl x509 -req -in "$TMP/$name.csr" -CA "$DIR/ca.pem" -CAkey "$DIR/ca-key.pem" \
        -CAserial "$DIR/ca.srl" -CAcreateserial -days "${PKI_DAYS:-365}" -sha256 \
        -extfile "$CNF" -extensions "$profile" -out "$DIR/$name.pem"
    chmod 644 "$DIR/$name.pem"
}

# run QUIET-COMMAND...: run an openssl command, showing its output only when it fails.
run() {
    if ! "$@" >"$TMP/openssl.log" 2>&1; then
        cat "$TMP/openssl.log" >&2
        die "failed: $*"
    fi
}

make_pki() {
    DIR="$1"
    shift
    [[ $# -ge 1 ]] || die "at least one client CN is needed (usage: $0 DIR CN [CN...])"
    local cn
    for cn in "$@"; do
        [[ "$cn" =~ ^[A-Za-z0-9][A-Za-z0-9._@+-]*$ ]] \
            || die "CN '$cn' has characters this script does not put in a file name or subject"
        [[ "$cn" != ca && "$cn" != server ]] || die "CN '$cn' would overwrite the CA or server files"
    done
    umask 077
    mkdir -p "$DIR"
    DIR="$(cd "$DIR" && pwd)"
    TMP="$(mktemp -d "${TMPDIR:-/tmp}/openssl-pki.XXXXXX")"
    trap 'rm -rf -- "$TMP"' EXIT
    CNF="$TMP/openssl.cnf"
    write_openssl_config "$CNF"

    # The CA (self-signed).
    if [[ -e "$DIR/ca.pem" || -e "$DIR/ca-key.pem" ]]; then
        [[ -s "$DIR/ca.pem" && -s "$DIR/ca-key.pem" ]] || die "$DIR has only half a CA (ca.pem / ca-key.pem)"
        info "kept    $DIR/ca.pem"
    else
        run new_key "$DIR/ca-key.pem"
        run openssl req -x509 -new -config "$CNF" -extensions v3_ca -key "$DIR/ca-key.pem" \
            -subj "/CN=sessionauth openssl CA" -days "${PKI_CA_DAYS:-3650}" -sha256 -out "$DIR/ca.pem"
        chmod 644 "$DIR/ca.pem"
        info "created $DIR/ca.pem, $DIR/ca-key.pem"
    fi

    # The server certificate: the name clients connect to is localhost (or 127.0.0.1 / ::1).
    if [[ -e "$DIR/server.pem" ]]; then
        info "kept    $DIR/server.pem"
    else
        [[ -e "$DIR/server-key.pem" ]] || run new_key "$DIR/server-key.pem"
        run sign server localhost v3_server
        info "created $DIR/server.pem, $DIR/server-key.pem"
    fi

    # A client certificate per CN, and its bundle (certificate then key).
    for cn in "$@"; do
        if [[ -e "$DIR/$cn.pem" ]]; then
            info "kept    $DIR/$cn.pem"
            continue
        fi
        [[ -e "$DIR/$cn-key.pem" ]] || run new_key "$DIR/$cn-key.pem"
        run sign "$cn" "$cn" v3_client
        cat "$DIR/$cn.pem" "$DIR/$cn-key.pem" >"$DIR/$cn.bundle.pem"
        chmod 600 "$DIR/$cn.bundle.pem"
        info "created $DIR/$cn.pem, $DIR/$cn-key.pem, $DIR/$cn.bundle.pem"
    done

    # A PKCS#12 keystore per CN: the certificate, its key and the CA, named by the CN.
    local pass="pass:${PKI_P12_PASSWORD:-changeit}" shown=changeit
    [[ -z "${PKI_P12_PASSWORD:-}" ]] || shown="from PKI_P12_PASSWORD"
    for cn in "$@"; do
        if [[ -e "$DIR/$cn.p12" ]]; then
            info "kept    $DIR/$cn.p12"
            continue
        fi
        run openssl pkcs12 -export -in "$DIR/$cn.pem" -inkey "$DIR/$cn-key.pem" \
            -certfile "$DIR/ca.pem" -name "$cn" -keypbe AES-256-CBC -certpbe AES-256-CBC \
            -macalg sha256 -passout "$pass" -out "$DIR/$cn.p12"
        info "created $DIR/$cn.p12 (password $shown)"
    done
    # The truststore: Java takes a certificate without a key as trusted only when it carries
    # Oracle's trusted-key-usage attribute, which `-jdktrust` (OpenSSL 3.2+) or keytool writes.
    if [[ -e "$DIR/truststore.p12" ]]; then
        info "kept    $DIR/truststore.p12"
    elif openssl pkcs12 -help 2>&1 | grep -q -- -jdktrust; then
        run openssl pkcs12 -export -nokeys -in "$DIR/ca.pem" -name ca -jdktrust anyExtendedKeyUsage \
            -certpbe AES-256-CBC -macalg sha256 -passout "$pass" -out "$DIR/truststore.p12"
        info "created $DIR/truststore.p12 (openssl -jdktrust)"
    elif command -v keytool >/dev/null 2>&1; then
        run keytool -importcert -noprompt -storetype PKCS12 -keystore "$DIR/truststore.p12" \
            -storepass "${PKI_P12_PASSWORD:-changeit}" -alias ca -file "$DIR/ca.pem"
        info "created $DIR/truststore.p12 (keytool)"
    else
        run openssl pkcs12 -export -nokeys -in "$DIR/ca.pem" -name ca \
            -certpbe AES-256-CBC -macalg sha256 -passout "$pass" -out "$DIR/truststore.p12"
        info "created $DIR/truststore.p12 (this openssl has no -jdktrust and there is no keytool: Java will not see the CA in it; use ca.pem or keytool)"
    fi

    # Check what was made, with openssl's own verifier and purposes.
    run openssl verify -CAfile "$DIR/ca.pem" -purpose sslserver -verify_hostname localhost "$DIR/server.pem"
    for cn in "$@"; do
        run openssl verify -CAfile "$DIR/ca.pem" -purpose sslclient "$DIR/$cn.pem"
    done
    info "ok: server.pem and $# client certificate(s) verify against $DIR/ca.pem"
}

# --------------------------------------------------------------------------------------------
# Self-test: the openssl-made PKI against the real server

# cert_has FILE REGEX STEP: a step that passes when `openssl x509 -text` of FILE matches REGEX.
cert_has() {
    local file="$1" regex="$2" step="$3"
    if openssl x509 -in "$file" -noout -text | tr '\n' ' ' | grep -qE -- "$regex"; then
        pass "$step"
    else
        fail "$step" "$(basename "$file") does not match /$regex/"
    fi
}

# selftest_one KEYTYPE: a fresh PKI of that key type, a server on it, and the checks.
selftest_one() {
    local type="$1" pki="$WORK/pki-$1"
    section "PKI with $type keys"
    PKI_KEY_TYPE="$type" bash "$SELF" "$pki" bot.user demo-app admin.bot >"$WORK/make-$type.log" 2>&1 \
        || { cat "$WORK/make-$type.log" >&2; fail "scripts/openssl-pki.sh $pki bot.user demo-app admin.bot"; }
    pass "scripts/openssl-pki.sh made CA, server and 3 client certificates ($type)"

    cert_has "$pki/ca.pem" 'Basic Constraints: critical +CA:TRUE' "CA: basicConstraints=critical,CA:TRUE"
    cert_has "$pki/ca.pem" 'Key Usage: critical +Certificate Sign, CRL Sign' "CA: keyUsage=critical,keyCertSign,cRLSign"
    cert_has "$pki/ca.pem" 'Subject Key Identifier.*Authority Key Identifier' "CA: subject and authority key identifiers"
    cert_has "$pki/server.pem" 'DNS:localhost, IP Address:127\.0\.0\.1, IP Address:0:0:0:0:0:0:0:1' \
        "server: SAN DNS:localhost, IP:127.0.0.1, IP:::1"
    cert_has "$pki/server.pem" 'Extended Key Usage: +TLS Web Server Authentication' "server: extendedKeyUsage=serverAuth"
    cert_has "$pki/bot.user.pem" 'Extended Key Usage: +TLS Web Client Authentication' "client: extendedKeyUsage=clientAuth"
    cert_has "$pki/bot.user.pem" 'Authority Key Identifier' "client: authority key identifier"

    local f mode bad=""
    for f in "$pki"/*-key.pem "$pki"/*.bundle.pem "$pki"/*.p12; do
        mode="$(stat -c %a "$f" 2>/dev/null || stat -f %Lp "$f")"
        [[ "$mode" == 600 ]] || bad+=" $(basename "$f"):$mode"
    done
    [[ -z "$bad" ]] || fail "keys, bundles and keystores are mode 0600" "wrong modes:$bad"
    pass "keys, bundles and keystores are mode 0600"
    openssl pkcs12 -info -in "$pki/bot.user.p12" -passin pass:changeit -noout >/dev/null 2>&1 \
        || fail "openssl pkcs12 -info reads bot.user.p12 with the password changeit"
    ! openssl pkcs12 -info -in "$pki/bot.user.p12" -passin pass:wrong -noout >/dev/null 2>&1 \
        || fail "openssl pkcs12 refuses bot.user.p12 with a wrong password"
    pass "openssl pkcs12 reads bot.user.p12 with changeit, and not with another password"
    [[ "$(openssl pkcs12 -in "$pki/truststore.p12" -passin pass:changeit -nokeys 2>/dev/null \
        | grep -c 'BEGIN CERTIFICATE')" == 1 ]] || fail "truststore.p12 holds the CA"
    pass "truststore.p12 holds the CA"

    # Re-running keeps everything and only adds the new CN.
    local before
    before="$(cat "$pki/ca.pem" "$pki/bot.user-key.pem" | openssl dgst -sha256)"
    PKI_KEY_TYPE="$type" bash "$SELF" "$pki" bot.user other-app >"$WORK/make2-$type.log" 2>&1 \
        || { cat "$WORK/make2-$type.log" >&2; fail "second run of openssl-pki.sh"; }
    [[ "$before" == "$(cat "$pki/ca.pem" "$pki/bot.user-key.pem" | openssl dgst -sha256)" && -s "$pki/other-app.pem" ]] \
        || fail "a second run keeps the CA and keys and adds other-app"
    pass "a second run keeps the CA and keys and adds other-app"

    # The server itself: its config check, then a real start on this PKI.
    SA_CERTS="$pki"
    sa_write_config 0
    "$SA_BIN" check --config "$SA_CONFIG" >"$WORK/check-$type.log" 2>&1 \
        || { cat "$WORK/check-$type.log" >&2; fail "sessionauth check accepts the openssl PKI"; }
    pass "sessionauth check accepts the openssl PKI"
    sa_start_server # waits for GET /health, verified with --cacert $pki/ca.pem
    pass "server starts on the openssl PKI; GET /health verified against its CA"

    local -a CA=(--cacert "$pki/ca.pem")
    expect_status "bot.user authenticates (openssl client certificate)" 200 -j name=sessionToken -- \
        curl "${CA[@]}" --cert "$pki/bot.user.pem" --key "$pki/bot.user-key.pem" -X POST \
        "$SA_BASE/sessionauth/v1/authenticate"
    local token
    token="$(json_get "$LAST_BODY" token)"
    sa_secret "$token"
    expect_status "bot.user authenticates with its bundle PEM" 200 -j name=sessionToken -- \
        curl "${CA[@]}" --cert "$pki/bot.user.bundle.pem" -X POST "$SA_BASE/sessionauth/v1/authenticate"
    sa_secret "$(json_get "$LAST_BODY" token)"
    expect_status "bot.user authenticates with its openssl-made PKCS#12 keystore" 200 -j name=sessionToken -- \
        curl "${CA[@]}" --cert-type P12 --cert "$pki/bot.user.p12:changeit" -X POST \
        "$SA_BASE/sessionauth/v1/authenticate"
    sa_secret "$(json_get "$LAST_BODY" token)"
    expect_status "sessioninfo names bot.user" 200 -j username=bot.user -- \
        curl "${CA[@]}" -H "sessionToken: $token" "$SA_BASE/pod/v2/sessioninfo"
    expect_status "demo-app gets an app session" 200 -j name=sessionToken -- \
        curl "${CA[@]}" --cert "$pki/demo-app.bundle.pem" -X POST "$SA_BASE/sessionauth/v1/app/authenticate"
    sa_secret "$(json_get "$LAST_BODY" token)"
    expect_status "other-app (added by the second run) gets an app session" 200 -j name=sessionToken -- \
        curl "${CA[@]}" --cert "$pki/other-app.bundle.pem" -X POST "$SA_BASE/sessionauth/v1/app/authenticate"
    sa_secret "$(json_get "$LAST_BODY" token)"
    # Negative: the server trusts this CA only. A bot.user certificate from the binary's own dev
    # PKI fails the handshake.
    expect_tls_failure "a dev-PKI certificate for bot.user is refused at the handshake" -- \
        curl "${CA[@]}" --cert "$WORK/devpki/bot.user.pem" --key "$WORK/devpki/bot.user-key.pem" -X POST \
        "$SA_BASE/sessionauth/v1/authenticate"
    sa_check_log_clean
    sa_stop_server
}

selftest() {
    sa_init
    # A second, unrelated CA for the negative test: the binary's own dev PKI.
    "$SA_BIN" certs init --dir "$WORK/devpki" >"$WORK/devpki.log" 2>&1 \
        || { cat "$WORK/devpki.log" >&2; die "sessionauth certs init failed"; }
    selftest_one ec
    selftest_one rsa
}

case "${1:-}" in
    --selftest)
        [[ $# -eq 1 ]] || die "--selftest takes no arguments"
        selftest
        ;;
    -h | --help)
        usage
        ;;
    "" | -*)
        usage >&2
        exit 2
        ;;
    *)
        make_pki "$@"
        ;;
esac
