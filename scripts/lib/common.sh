# shellcheck shell=bash
# Shared helpers for the walkthrough scripts in scripts/. Source it, do not run it:
#
#   source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
#   sa_init                 # binary, temp work dir, EXIT trap
#   sa_dev_pki              # `sessionauth certs init --dir $WORK/certs`
#   sa_start_server         # config in $WORK, server in the background, waits for /health
#   expect_status "step" 200 -j name=sessionToken -- curl --cacert ... https://...
#
# Needs only bash, curl, openssl and python3. Works from any directory, without a TTY or stdin.
#
# Environment:
#   SESSIONAUTH_BIN   the binary to test (default: <repo>/target/release/sessionauth)
#   KEEP_WORK=1       keep the temp work dir (certs, config, server.log); KEEP_WORK=on-failure
#                     keeps it only when the run fails
#   VERBOSE=1         print every curl command line before running it
#
# Globals set here: SA_ROOT SA_BIN WORK SA_CERTS SA_CONFIG SA_PORT SA_BASE SERVER_PID
# LAST_STATUS LAST_BODY LAST_HEADERS LAST_CURL_EXIT SA_PASSED SA_FAILED.

# These globals are read by the scripts that source this file.
# shellcheck disable=SC2034
if [[ -n "${_SA_COMMON_LOADED:-}" ]]; then
    return 0
fi
_SA_COMMON_LOADED=1

# The repository root, from this file's own location (scripts/lib/common.sh).
SA_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"

SA_PASSED=0
SA_FAILED=0
SERVER_PID=""
WORK=""
SA_PORT=""
SA_BASE=""
SA_CERTS=""
SA_CONFIG=""
SA_CONFIG_EXTRA="${SA_CONFIG_EXTRA:-}"
SA_TLS_EXTRA="${SA_TLS_EXTRA:-}"
LAST_STATUS=""
LAST_BODY=""
LAST_HEADERS=""
LAST_CURL_EXIT=0
_SA_SECRETS=()
_SA_SUMMARY_PRINTED=""
_SA_REPORTED=""

# ---------------------------------------------------------------------------------------------
# Reporting

# die MESSAGE: print an error and exit non-zero (the EXIT trap cleans up).
die() {
    printf 'ERROR: %s\n' "$*" >&2
    _SA_REPORTED=1
    exit 1
}

# info MESSAGE: a plain progress line.
info() {
    printf '%s\n' "$*"
}

# section TITLE: a heading in the output.
section() {
    printf '\n== %s ==\n' "$*"
}

# pass STEP: record and print a passing step.
pass() {
    SA_PASSED=$((SA_PASSED + 1))
    printf 'PASS  %s\n' "$*"
}

# fail STEP DETAIL...: record and print a failing step, then exit non-zero.
fail() {
    local step="$1"
    shift
    SA_FAILED=$((SA_FAILED + 1))
    _SA_REPORTED=1
    printf 'FAIL  %s\n' "$step" >&2
    local line
    for line in "$@"; do
        printf '      %s\n' "$line" >&2
    done
    exit 1
}

# sa_summary: the final "N passed, M failed" line (printed once, also from the EXIT trap).
sa_summary() {
    if [[ -z "$_SA_SUMMARY_PRINTED" ]]; then
        _SA_SUMMARY_PRINTED=1
        printf '\n%d passed, %d failed\n' "$SA_PASSED" "$SA_FAILED"
    fi
}

# ---------------------------------------------------------------------------------------------
# Setup and cleanup

# sa_need_tools TOOL...: fail clearly when a tool the script depends on is missing.
sa_need_tools() {
    local tool
    for tool in "$@"; do
        command -v "$tool" >/dev/null 2>&1 || die "'$tool' is required but not on PATH"
    done
}

# sa_locate_binary: set SA_BIN from $SESSIONAUTH_BIN or the release build; fail clearly if missing.
sa_locate_binary() {
    SA_BIN="${SESSIONAUTH_BIN:-$SA_ROOT/target/release/sessionauth}"
    if [[ ! -x "$SA_BIN" ]]; then
        die "sessionauth binary not found or not executable: $SA_BIN
       build it with:  (cd '$SA_ROOT' && cargo build --release)
       or point SESSIONAUTH_BIN at an existing binary"
    fi
}

# sa_make_workdir: a fresh private temp dir in $WORK.
sa_make_workdir() {
    WORK="$(mktemp -d "${TMPDIR:-/tmp}/sessionauth-walk.XXXXXX")"
    chmod 700 "$WORK"
}

# sa_cleanup: EXIT trap. Stops only the server this script started, prints the server log tail
# when the script failed, removes the work dir (unless KEEP_WORK=1) and prints the summary.
sa_cleanup() {
    local rc=$? cmd="$BASH_COMMAND"
    set +e
    if [[ $rc -eq 130 || $rc -eq 143 ]]; then
        printf 'ERROR: interrupted (exit status %d)\n' "$rc" >&2
    elif [[ $rc -ne 0 && -z "$_SA_REPORTED" ]]; then
        # set -e stopped the script outside a step: say where.
        printf 'ERROR: unexpected exit status %d from: %s\n' "$rc" "$cmd" >&2
    fi
    sa_stop_server
    if [[ $rc -ne 0 && -n "$WORK" && -s "$WORK/server.log" ]]; then
        printf '\n--- last 30 lines of %s ---\n' "$WORK/server.log" >&2
        tail -n 30 "$WORK/server.log" >&2
        printf -- '--- end of server log ---\n' >&2
    fi
    if [[ -n "$WORK" && -d "$WORK" ]]; then
        if [[ "${KEEP_WORK:-0}" == 1 || ( $rc -ne 0 && "${KEEP_WORK:-}" == on-failure ) ]]; then
            printf 'work dir kept: %s\n' "$WORK" >&2
        else
            rm -rf -- "$WORK"
        fi
    fi
    if [[ $rc -ne 0 && $SA_FAILED -eq 0 ]]; then
        # An error outside a step (setup, a helper): still count it as a failure.
        SA_FAILED=1
    fi
    sa_summary
    exit "$rc"
}

# sa_init: tools, binary, work dir and the EXIT trap. Call once at the top of a script (a script
# that needs more tools calls sa_need_tools TOOL... first).
sa_init() {
    sa_need_tools curl openssl python3
    sa_locate_binary
    sa_make_workdir
    trap sa_cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
}

# sa_dev_pki [DIR]: the dev PKI from the binary itself (default $WORK/certs); sets SA_CERTS.
sa_dev_pki() {
    SA_CERTS="${1:-$WORK/certs}"
    "$SA_BIN" certs init --dir "$SA_CERTS" >"$WORK/certs-init.log" 2>&1 \
        || { cat "$WORK/certs-init.log" >&2; die "sessionauth certs init failed"; }
}

# sa_free_port: print a currently free TCP port on 127.0.0.1.
sa_free_port() {
    python3 -c 'import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()'
}

# sa_write_config PORT: write $WORK/sessionauth.toml for the PKI in $SA_CERTS (ca.pem,
# server.pem, server-key.pem). Extra TOML lines may be given in $SA_CONFIG_EXTRA (top level) and
# $SA_TLS_EXTRA (inside [tls], e.g. crl = [...]).
sa_write_config() {
    local port="$1"
    SA_CONFIG="$WORK/sessionauth.toml"
    cat >"$SA_CONFIG" <<EOF
# Written by scripts/lib/common.sh for a walkthrough run.
listen = "127.0.0.1:$port"
$SA_CONFIG_EXTRA

[tls]
cert = "$SA_CERTS/server.pem"
key = "$SA_CERTS/server-key.pem"
client_ca = ["$SA_CERTS/ca.pem"]
$SA_TLS_EXTRA
EOF
}

# sa_health_ok: true when GET /health answers 200 over verified TLS.
sa_health_ok() {
    local code
    code="$(curl -sS -o /dev/null -w '%{http_code}' --max-time 2 \
        --resolve "localhost:$SA_PORT:127.0.0.1" --cacert "$SA_CERTS/ca.pem" \
        "https://localhost:$SA_PORT/health" 2>/dev/null)" || return 1
    [[ "$code" == 200 ]]
}

# sa_start_server: pick a free port, write the config, start the server in the background
# (logs in $WORK/server.log) and wait until /health answers. Bounded: 3 attempts (a port taken
# between the probe and the bind gets a second chance), each waiting at most ~10 s.
sa_start_server() {
    [[ -n "$SA_CERTS" ]] || die "sa_start_server: no PKI (call sa_dev_pki first)"
    local attempt
    for attempt in 1 2 3; do
        SA_PORT="$(sa_free_port)"
        SA_BASE="https://localhost:$SA_PORT"
        sa_write_config "$SA_PORT"
        NO_COLOR=1 "$SA_BIN" serve --config "$SA_CONFIG" </dev/null >>"$WORK/server.log" 2>&1 &
        SERVER_PID=$!
        for _ in $(seq 1 100); do
            if ! kill -0 "$SERVER_PID" 2>/dev/null; then
                wait "$SERVER_PID" 2>/dev/null || true
                info "server exited during start-up (attempt $attempt); log tail:"
                tail -n 5 "$WORK/server.log"
                SERVER_PID=""
                break
            fi
            if sa_health_ok; then
                info "server pid $SERVER_PID listening on 127.0.0.1:$SA_PORT (config $SA_CONFIG)"
                return 0
            fi
            sleep 0.1
        done
        if [[ -n "$SERVER_PID" ]]; then
            die "server (pid $SERVER_PID) did not answer GET /health within 10 s"
        fi
    done
    die "server did not start after 3 attempts"
}

# sa_stop_server: stop the server this script started (its PID only), gracefully first.
sa_stop_server() {
    local pid="$SERVER_PID"
    [[ -n "$pid" ]] || return 0
    SERVER_PID=""
    kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
}

# ---------------------------------------------------------------------------------------------
# Secrets

# sa_secret TOKEN: remember a token so that sa_check_log_clean can prove it never hit the log.
sa_secret() {
    _SA_SECRETS+=("$1")
}

# sa_redact TEXT: TEXT with the remembered tokens replaced by "<token>".
sa_redact() {
    local text="$1" s
    for s in "${_SA_SECRETS[@]+"${_SA_SECRETS[@]}"}"; do
        [[ -n "$s" ]] && text="${text//"$s"/<token>}"
    done
    printf '%s' "$text"
}

# sa_quote WORD...: the words as one shell-quoted command line (for display).
sa_quote() {
    local out
    printf -v out '%q ' "$@"
    printf '%s' "${out% }"
}

# sa_check_log_clean: a step that fails if any remembered token appears in server.log.
sa_check_log_clean() {
    local s n=0
    for s in "${_SA_SECRETS[@]+"${_SA_SECRETS[@]}"}"; do
        n=$((n + 1))
        if grep -qF -- "$s" "$WORK/server.log"; then
            fail "server log holds no token" "a token issued during this run appears in server.log"
        fi
    done
    pass "server log holds none of the $n tokens issued during this run"
}

# ---------------------------------------------------------------------------------------------
# JSON

# json_get FILE KEY: print a field of a JSON object (dotted path, e.g. "a.b" or "roles.0").
json_get() {
    python3 -c '
import json, sys
v = json.load(open(sys.argv[1]))
for k in sys.argv[2].split("."):
    v = v[int(k)] if isinstance(v, list) else v[k]
print(v if isinstance(v, str) else json.dumps(v))
' "$1" "$2"
}

# json_check FILE SPEC...: print nothing and succeed when every SPEC holds, else print why.
#   key=value   the field, as a string (numbers compare by their JSON text), equals value
#   key~regex   the field matches the regex (re.fullmatch)
#   !key        the field is absent
json_check() {
    python3 -c '
import json, re, sys
try:
    doc = json.load(open(sys.argv[1]))
except Exception as e:
    print("body is not JSON: %s" % e)
    sys.exit(1)
bad = []
def lookup(path):
    v = doc
    for k in path.split("."):
        v = v[int(k)] if isinstance(v, list) else v[k]
    return v
for spec in sys.argv[2:]:
    if spec.startswith("!"):
        try:
            lookup(spec[1:])
            bad.append("field %r should be absent" % spec[1:])
        except (KeyError, IndexError, TypeError, ValueError):
            pass
        continue
    m = re.match(r"^([^=~]+)([=~])(.*)$", spec, re.S)
    if not m:
        bad.append("bad spec %r" % spec)
        continue
    key, op, want = m.groups()
    try:
        v = lookup(key)
    except (KeyError, IndexError, TypeError, ValueError):
        bad.append("field %r missing" % key)
        continue
    got = v if isinstance(v, str) else json.dumps(v)
    if op == "=" and got != want:
        bad.append("field %r is %r, expected %r" % (key, got, want))
    if op == "~" and not re.fullmatch(want, got):
        bad.append("field %r is %r, expected to match /%s/" % (key, got, want))
for b in bad:
    print(b)
sys.exit(1 if bad else 0)
' "$@"
}

# ---------------------------------------------------------------------------------------------
# Steps

# expect_status STEP STATUS [-j SPEC]... [-H HEADER~REGEX]... -- curl ARGS...
#
# Runs the curl command (the word "curl" first, so that the call reads like the command a person
# would type), adding -sS, a timeout, --resolve localhost:PORT:127.0.0.1, and capture of the
# status, headers and body. Then compares the HTTP status, the Content-Type (application/json
# whenever there is a body), each JSON SPEC (see json_check) and each header regex
# (case-insensitive name, e.g. -H 'allow~.*POST.*'). On mismatch: a FAIL line, and exit 1.
# Afterwards: LAST_STATUS, LAST_BODY (file), LAST_HEADERS (file).
expect_status() {
    local step="$1" want="$2"
    shift 2
    local -a specs=() hdrs=()
    while [[ $# -gt 0 && "$1" != "--" ]]; do
        case "$1" in
            -j) specs+=("$2"); shift 2 ;;
            -H) hdrs+=("$2"); shift 2 ;;
            *) die "expect_status: unknown option '$1' (step: $step)" ;;
        esac
    done
    [[ "${1:-}" == "--" ]] || die "expect_status: missing '--' before the curl command (step: $step)"
    shift
    [[ "${1:-}" == curl ]] || die "expect_status: the command must start with 'curl' (step: $step)"
    shift

    LAST_BODY="$WORK/last.body"
    LAST_HEADERS="$WORK/last.headers"
    : >"$LAST_BODY"
    : >"$LAST_HEADERS"
    if [[ "${VERBOSE:-0}" == 1 ]]; then
        info "      \$ $(sa_redact "$(sa_quote curl "$@")")"
    fi
    local err="$WORK/last.stderr"
    LAST_CURL_EXIT=0
    LAST_STATUS="$(curl -sS --max-time 15 --resolve "localhost:$SA_PORT:127.0.0.1" \
        -o "$LAST_BODY" -D "$LAST_HEADERS" -w '%{http_code}' "$@" 2>"$err")" || LAST_CURL_EXIT=$?

    local -a problems=()
    if [[ $LAST_CURL_EXIT -ne 0 ]]; then
        problems+=("curl exited $LAST_CURL_EXIT: $(tr '\n' ' ' <"$err")")
    fi
    if [[ "$LAST_STATUS" != "$want" ]]; then
        problems+=("HTTP status $LAST_STATUS, expected $want")
    fi
    if [[ ${#problems[@]} -eq 0 && -s "$LAST_BODY" ]]; then
        if ! grep -qiE '^content-type:[[:space:]]*application/json' "$LAST_HEADERS"; then
            problems+=("Content-Type is not application/json: $({ grep -i '^content-type:' "$LAST_HEADERS" || true; } | tr -d '\r')")
        fi
    fi
    if [[ ${#problems[@]} -eq 0 && ${#specs[@]} -gt 0 ]]; then
        local why
        if ! why="$(json_check "$LAST_BODY" "${specs[@]}")"; then
            while IFS= read -r line; do problems+=("$line"); done <<<"$why"
        fi
    fi
    if [[ ${#problems[@]} -eq 0 ]]; then
        local h name re
        for h in "${hdrs[@]+"${hdrs[@]}"}"; do
            name="${h%%~*}"
            re="${h#*~}"
            if ! tr -d '\r' <"$LAST_HEADERS" | grep -iE "^${name}:[[:space:]]*${re}\$" >/dev/null; then
                problems+=("header '$name' missing or not matching /$re/")
            fi
        done
    fi

    if [[ ${#problems[@]} -gt 0 ]]; then
        problems+=("command: $(sa_redact "$(sa_quote curl "$@")")")
        if [[ -s "$LAST_BODY" ]]; then
            problems+=("body: $(sa_redact "$(head -c 400 "$LAST_BODY")")")
        fi
        fail "$step" "${problems[@]}"
    fi
    pass "$step (HTTP $LAST_STATUS)"
}

# expect_tls_failure STEP -- curl ARGS...: the call must fail at the TLS layer: curl exits 35
# (handshake), 56 (receive failure: the alert that TLS 1.3 delivers after the client's Finished)
# or 58 (local certificate problem), and no HTTP status is received.
expect_tls_failure() {
    local step="$1"
    shift
    [[ "${1:-}" == "--" ]] || die "expect_tls_failure: missing '--' (step: $step)"
    shift
    [[ "${1:-}" == curl ]] || die "expect_tls_failure: the command must start with 'curl' (step: $step)"
    shift
    local err="$WORK/last.stderr" code rc=0
    if [[ "${VERBOSE:-0}" == 1 ]]; then
        info "      \$ $(sa_quote curl "$@")"
    fi
    code="$(curl -sS --max-time 15 --resolve "localhost:$SA_PORT:127.0.0.1" \
        -o /dev/null -w '%{http_code}' "$@" 2>"$err")" || rc=$?
    case "$rc" in
        35 | 56 | 58)
            if [[ "$code" != 000 ]]; then
                fail "$step" "curl exited $rc but an HTTP status $code was received"
            fi
            pass "$step (curl exit $rc: $(head -n 1 "$err" | tr -d '\r'))"
            ;;
        0) fail "$step" "the request succeeded with HTTP $code; a TLS failure was expected" ;;
        *) fail "$step" "curl exited $rc, expected a TLS error (35, 56 or 58): $(tr '\n' ' ' <"$err")" ;;
    esac
}

# sa_foreign_client_cert DIR CN: with openssl, a throw-away CA that the server does not trust
# (DIR/ca.pem) and a client certificate from it for CN (DIR/CN.pem, DIR/CN-key.pem).
sa_foreign_client_cert() {
    local dir="$1" cn="$2"
    mkdir -p "$dir"
    (
        umask 077
        openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
            -subj '/CN=Foreign Walkthrough CA' -keyout "$dir/ca-key.pem" -out "$dir/ca.pem" \
            -addext 'basicConstraints=critical,CA:TRUE' \
            -addext 'keyUsage=critical,keyCertSign,cRLSign'
        openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
            -subj "/CN=$cn" -keyout "$dir/$cn-key.pem" -out "$dir/$cn.csr"
        printf 'basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n' \
            >"$dir/client.ext"
        openssl x509 -req -in "$dir/$cn.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca-key.pem" \
            -CAcreateserial -days 2 -extfile "$dir/client.ext" -out "$dir/$cn.pem"
    ) >"$dir/openssl.log" 2>&1 || { cat "$dir/openssl.log" >&2; die "openssl could not make the foreign CA"; }
}

# sa_reload STEP: send SIGHUP to the server this script started and wait (at most 10 s) for the
# log line that reports the reload's outcome; the step passes on "reloaded the directory,
# certificates and CRLs" and fails on "reload refused" or silence. With SA_RELOAD_EXPECT=refused
# the reverse. Afterwards SA_RELOAD_LINE holds that log line.
SA_RELOAD_LINE=""
sa_reload() {
    local step="$1" want="${SA_RELOAD_EXPECT:-reloaded}" before line=""
    [[ -n "$SERVER_PID" ]] || die "sa_reload: no server running"
    before="$(grep -cE 'reloaded the directory, certificates and CRLs|reload refused' "$WORK/server.log" || true)"
    kill -HUP "$SERVER_PID"
    # The server is idle here: the reload must happen without any client connecting.
    local i
    for i in $(seq 1 100); do
        line="$(grep -E 'reloaded the directory, certificates and CRLs|reload refused' "$WORK/server.log" \
            | sed -n "$((before + 1))p" || true)"
        [[ -n "$line" ]] && break
        sleep 0.1
    done
    SA_RELOAD_LINE="$line"
    if [[ -z "$line" ]]; then
        fail "$step" "no reload line in server.log within 10 s of SIGHUP to pid $SERVER_PID"
    fi
    local summary
    summary="$(printf '%s' "$line" | sed -E 's/^[^ ]+ +[A-Z]+ +[^ ]+ //')"
    case "$want:$line" in
        reloaded:*"reloaded the directory, certificates and CRLs"* | refused:*"reload refused"*)
            pass "$step: $summary" ;;
        *) fail "$step" "expected a '$want' reload, the log says: $line" ;;
    esac
}

# check STEP COMMAND...: a step that passes when COMMAND succeeds.
check() {
    local step="$1"
    shift
    if "$@"; then
        pass "$step"
    else
        fail "$step" "command failed: $*"
    fi
}
