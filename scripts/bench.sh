#!/usr/bin/env bash
# Benchmarks sessionauth with oha over real mutual TLS against a null server, side by side in
# one run. The null server (bench/, built here when missing) is hyper 1 + tokio-rustls on the
# same rustls and crypto provider with the same TLS settings, answering every request with a
# static 200: the ratio is what sessionauth costs above TLS and HTTP. Where nginx is installed,
# nginx with mutual TLS answering a static 200 is a second reference (the same certificates;
# two workers, one per core; session cache and tickets off for the full-handshake row). Each
# row sends the same request to every server:
#
#   keep-alive   POST /sessionauth/v1/authenticate   (client certificate → new session)  goal ≥ 0.85
#   keep-alive   GET  /health                                                             goal ≥ 0.95
#   keep-alive   GET  /pod/v2/sessioninfo            (sessionToken header → UserV2)
#   full handshake, TLS resumption off on both servers:
#                POST /sessionauth/v1/authenticate
#
# and, for each store in BENCH_FILL_STORES, keep-alive POST /sessionauth/v1/authenticate on a
# server of that store already holding BENCH_FILL live sessions (goal for memory ≥ 0.85 of the
# null server; the other stores are also given as a ratio of the memory store's row).
#
# ROUNDS rounds; in each, every row runs on every server, the order rotating from round to
# round. Printed: each round's rates, then the medians and their ratios, and the load average
# before each round and at the end. Then scripts/bench-rsa.sh: keep-alive RS512 JWT
# authentication, 2048/4096-bit keys.
#
# Usage: scripts/bench.sh [DURATION] [CONNECTIONS]     (defaults: 10s, 32)
# Environment:
#   BENCH_STORE=memory   the store under test: memory, embedded, or a redis:// URL (see below)
#   BENCH_ROUNDS=3       rounds
#   BENCH_RSA=1          0 skips the RSA rows
#   BENCH_FILL=1000000   live sessions each filled sessionauth server holds before the rounds,
#                        spread over BENCH_FILL_USERS=10000 users (a power of ten): on-behalf-of
#                        sessions of demo-app, minted over HTTP with oha. Its row is keep-alive
#                        authenticate, beside the empty server's; its resident memory before and
#                        after the fill is printed. 0 skips them.
#   BENCH_FILL_STORES="memory embedded redis"   one filled server per store (redis: the Redis
#                        at SESSIONAUTH_BENCH_REDIS_URL, else SESSIONAUTH_TEST_REDIS_URL, else
#                        redis://127.0.0.1:6379/15, under a random key prefix the run deletes;
#                        left out when no Redis answers there)
#   BENCH_NGINX=1        0 leaves nginx out (it is left out anyway when not installed)
#   SESSIONAUTH_BIN      default target/release/sessionauth, built when missing
#   NULL_SERVER_BIN      default bench/target/release/null-server, built when missing (build
#                        both with `--no-default-features --features ring` to measure *ring*)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DURATION=${1:-10s}
CONNS=${2:-32}
BIN=${SESSIONAUTH_BIN:-$ROOT/target/release/sessionauth}
NULL_BIN=${NULL_SERVER_BIN:-$ROOT/bench/target/release/null-server}
ROUNDS=${BENCH_ROUNDS:-3}
FILL=${BENCH_FILL:-1000000}
FILL_USERS=${BENCH_FILL_USERS:-10000}
REDIS_URL=${SESSIONAUTH_BENCH_REDIS_URL:-${SESSIONAUTH_TEST_REDIS_URL:-redis://127.0.0.1:6379/15}}
REDIS_PREFIX="sessionauth-bench:$(od -An -N6 -tx1 /dev/urandom | tr -d ' \n'):"
REDIS_USED=""
read -r -a FILL_STORES <<<"${BENCH_FILL_STORES:-memory embedded redis}"
NGINX=${BENCH_NGINX:-1}
if [[ $NGINX == 1 ]] && ! command -v nginx >/dev/null 2>&1; then
  echo "nginx is not installed: its column is left out (apt-get install nginx-light)" >&2
  NGINX=0
fi

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
  if [[ -n $REDIS_USED ]]; then
    redis-cli -u "$REDIS_URL" --scan --pattern "${REDIS_PREFIX}*" 2>/dev/null |
      xargs -r -n 500 redis-cli -u "$REDIS_URL" DEL >/dev/null 2>&1 || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT

"$BIN" certs init --dir "$WORK/certs" >/dev/null
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# The session store under test: memory by default, so that these rows measure TLS, HTTP and
# the authenticator itself; scripts/bench-stores.sh compares the stores. BENCH_STORE=embedded
# (each server gets its own data folder) or a redis:// URL measures the same rows on that store.
BENCH_STORE=${BENCH_STORE:-memory}
# store_config NAME [STORE]: the config lines for STORE (default BENCH_STORE); "redis" is the
# Redis at REDIS_URL under the run's prefix.
store_config() {
  case ${2:-$BENCH_STORE} in
    embedded) printf 'store = "embedded"\ndata_dir = "data-%s"\n' "$1" ;;
    redis)
      # (start_server notes REDIS_USED: this runs in a subshell)
      printf 'store = "%s"\nredis_prefix = "%s"\n' "$REDIS_URL" "$REDIS_PREFIX"
      ;;
    *) printf 'store = "%s"\n' "${2:-$BENCH_STORE}" ;;
  esac
}

# wait_ready NAME PORT: until the server answers GET /health, or exits with its log.
wait_ready() {
  local name=$1 port=$2
  for _ in $(seq 1 100); do
    # With a client certificate: nginx asks for one on every request.
    if curl -sf --cacert "$WORK/certs/ca.pem" --cert "$WORK/certs/bot.user.pem" \
      --key "$WORK/certs/bot.user-key.pem" "https://localhost:$port/health" >/dev/null; then
      return
    fi
    sleep 0.1
  done
  echo "server $name did not start:" >&2
  cat "$WORK/$name.log" >&2
  [[ $name != nginx ]] || cat "$WORK/nginx/error.log" >&2
  exit 1
}

# start_server NAME RESUMPTION [DIRECTORY] [STORE] → sets PORT and SERVER_PID. Not run in a
# subshell, so that the server's pid reaches PIDS and the exit trap stops it.
start_server() {
  local name=$1 resumption=$2 directory=${3:-} store=${4:-} port
  port=$(free_port)
  [[ ${store:-$BENCH_STORE} != redis ]] || REDIS_USED=1
  cat >"$WORK/$name.toml" <<TOML
listen = "127.0.0.1:$port"
$(store_config "$name" "$store")
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

# start_nginx → sets NGX_KA (keep-alive, session cache and tickets on) and NGX_FH (both off):
# one nginx, two workers, answering every request with a static 200 after mutual TLS.
start_nginx() {
  NGX_KA=$(free_port)
  NGX_FH=$(free_port)
  mkdir -p "$WORK/nginx"
  local c=$WORK/certs
  cat >"$WORK/nginx.conf" <<NGINX
daemon off;
worker_processes 2;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $WORK/nginx/body;
  proxy_temp_path $WORK/nginx/proxy;
  fastcgi_temp_path $WORK/nginx/fastcgi;
  uwsgi_temp_path $WORK/nginx/uwsgi;
  scgi_temp_path $WORK/nginx/scgi;
  keepalive_requests 100000000;
  ssl_certificate $c/server.pem;
  ssl_certificate_key $c/server-key.pem;
  ssl_client_certificate $c/ca.pem;
  ssl_verify_client on;
  ssl_protocols TLSv1.2 TLSv1.3;
  server {
    listen 127.0.0.1:$NGX_KA ssl;
    ssl_session_cache shared:tls:10m;
    location / { default_type application/json; return 200 '{"ok":true}'; }
  }
  server {
    listen 127.0.0.1:$NGX_FH ssl;
    ssl_session_cache off;
    ssl_session_tickets off;
    location / { default_type application/json; return 200 '{"ok":true}'; }
  }
}
NGINX
  nginx -c "$WORK/nginx.conf" -p "$WORK/nginx" >"$WORK/nginx.log" 2>&1 &
  PIDS+=($!)
  wait_ready nginx "$NGX_KA"
}

start_server keepalive true
PORT_KA=$PORT
start_server fullhandshake false
PORT_FH=$PORT
start_null null-keepalive
NULL_KA=$PORT
start_null null-fullhandshake --no-resumption
NULL_FH=$PORT
NGX_KA=- NGX_FH=-
if [[ $NGINX == 1 ]]; then
  start_nginx
fi

C="$WORK/certs"
TLS=(--cacert "$C/ca.pem" --cert "$C/bot.user.pem" --key "$C/bot.user-key.pem")
# The session info row's token belongs to another user than the authenticate row's, whose
# per-user cap (limits.max_sessions_per_user) would otherwise evict it within a second.
TOKEN=$(curl -sf --cacert "$C/ca.pem" --cert "$C/admin.bot.pem" --key "$C/admin.bot-key.pem" \
  -X POST "https://localhost:$PORT_KA/sessionauth/v1/authenticate" |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')

# rss_kib PID: the process's resident memory.
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }

# The filled servers, one per store in FILL_STORES: the sample directory plus FILL_USERS normal
# users (ids 100000 and up) who installed demo-app, each server holding FILL on-behalf-of
# sessions of demo-app for them, users drawn at random (oha's --rand-regex-url over the id's
# last digits).
FILLED=()
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
  prefix=$(printf '1%0*d' $((5 - digits)) 0)
  ((digits < 5)) || prefix=1
  APP_TLS=(--cacert "$C/ca.pem" --cert "$C/demo-app.pem" --key "$C/demo-app-key.pem")
  for store in "${FILL_STORES[@]}"; do
    if [[ $store == redis ]] && [[ "$(redis-cli -u "$REDIS_URL" ping 2>/dev/null)" != PONG ]]; then
      echo "no Redis answers at $REDIS_URL: the redis row is left out" >&2
      continue
    fi
    start_server "filled-$store" true "$WORK/fill-directory.toml" "$store"
    port_fill=$PORT
    rss_before=$(rss_kib "$SERVER_PID")
    APP_TOKEN=$(curl -sf "${APP_TLS[@]}" -X POST "https://localhost:$port_fill/sessionauth/v1/app/authenticate" |
      python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')
    started=$(date +%s)
    fill_out=$(oha --no-tui --output-format json -n "$FILL" -c "$CONNS" "${APP_TLS[@]}" -m POST \
      -H "sessionToken: $APP_TOKEN" \
      --rand-regex-url "https://localhost:$port_fill/sessionauth/v1/app/user/$prefix[0-9]{$digits}/authenticate")
    python3 -c '
import json, sys
codes = json.loads(sys.argv[1]).get("statusCodeDistribution", {})
if set(codes) != {"200"}:
    sys.exit("fill: responses other than 200: %s" % codes)' "$fill_out"
    live=$(curl -sf "${TLS[@]}" "https://localhost:$port_fill/metrics" |
      awk '/^sessionauth_sessions_live\{/ {n += $2} END {print n}')
    rss_after=$(rss_kib "$SERVER_PID")
    echo "filled ($store store): $live live sessions over $FILL_USERS users in $(($(date +%s) - started)) s;" \
      "resident memory $rss_before KiB before, $rss_after KiB after," \
      "$(((rss_after - rss_before) * 1024 / FILL)) bytes per session"
    FILLED+=("$store:$port_fill")
  done
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

# The rows: label | goal (- for none) | sessionauth's port | the null server's | nginx's (- for
# none) | oha's arguments, split on spaces, with HOST standing for localhost:PORT of the server
# measured.
ROWS=(
  "keep-alive POST /sessionauth/v1/authenticate|0.85|$PORT_KA|$NULL_KA|$NGX_KA|-m POST https://HOST/sessionauth/v1/authenticate"
  "keep-alive GET /health|0.95|$PORT_KA|$NULL_KA|$NGX_KA|https://HOST/health"
  "keep-alive GET /pod/v2/sessioninfo|-|$PORT_KA|$NULL_KA|$NGX_KA|-H sessionToken:$TOKEN https://HOST/pod/v2/sessioninfo"
  "full handshake POST /sessionauth/v1/authenticate|-|$PORT_FH|$NULL_FH|$NGX_FH|--disable-keepalive -m POST https://HOST/sessionauth/v1/authenticate"
)
for filled in "${FILLED[@]}"; do
  store=${filled%%:*}
  goal=-
  [[ $store != memory ]] || goal=0.85
  ROWS+=("keep-alive authenticate, $FILL live, $store|$goal|${filled##*:}|$NULL_KA|$NGX_KA|-m POST https://HOST/sessionauth/v1/authenticate")
done

echo "sessionauth vs null server: $DURATION per row, $CONNS connections, $ROUNDS rounds, store $BENCH_STORE, oha $(oha --version | awk '{print $2}'), $(nproc) cores, $(date -u '+%Y-%m-%d %H:%M UTC')"
echo "$(head -1 "$WORK/null-keepalive.log")"
RESULTS="$WORK/results"
: >"$RESULTS"
SERVERS=(sessionauth null)
[[ $NGINX != 1 ]] || SERVERS+=(nginx)
for round in $(seq 1 "$ROUNDS"); do
  echo "round $round, load average $(loadavg)"
  # The order rotates: each server goes first in turn.
  order=()
  for j in "${!SERVERS[@]}"; do
    order+=("${SERVERS[$(((j + round - 1) % ${#SERVERS[@]}))]}")
  done
  for i in "${!ROWS[@]}"; do
    IFS='|' read -r label _ port null ngx args <<<"${ROWS[$i]}"
    for server in "${order[@]}"; do
      case $server in
        sessionauth) p=$port ;;
        null) p=$null ;;
        nginx) p=$ngx ;;
      esac
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
def median(i, server):
    return statistics.median(r for r, _ in runs[(i, server)]) if (i, server) in runs else None
print("%-50s %14s %10s %6s %-11s %9s %6s %s" % ("scenario (medians)", "sessionauth/s", "null/s",
      "ratio", "goal", "nginx/s", "ratio", "non-2xx"))
filled = {}
for i, (label, goal) in enumerate(rows):
    m_sa, m_null, m_ngx = median(i, "sessionauth"), median(i, "null"), median(i, "nginx")
    ratio = m_sa / m_null
    verdict = "-" if goal == "-" else ">= %s %s" % (goal, "met" if ratio >= float(goal) else "MISSED")
    bad = sum(b for (j, _), rs in runs.items() if j == i for _, b in rs)
    ngx = ("%9.0f %6.2f" % (m_ngx, m_sa / m_ngx)) if m_ngx else "%9s %6s" % ("-", "-")
    print("%-50s %14.0f %10.0f %6.2f %-11s %s %d" % (label, m_sa, m_null, ratio, verdict, ngx, bad))
    if ", live, " in label or " live, " in label:
        filled[label.rsplit(", ", 1)[1]] = m_sa
if "memory" in filled and len(filled) > 1:
    print()
    print("filled stores as a ratio of the filled memory store (embedded goal >= 0.7):")
    for store, rps in filled.items():
        if store != "memory":
            print("  %-10s %8.0f/s  %.2f of memory" % (store, rps, rps / filled["memory"]))
PY

# RSA (signed JWT) authentication, 2048- and 4096-bit keys, on a server of its own.
if [[ ${BENCH_RSA:-1} != 0 ]]; then
  echo
  BENCH_STORE=$BENCH_STORE "$ROOT/scripts/bench-rsa.sh" "$DURATION" "$CONNS"
fi
