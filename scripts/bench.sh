#!/usr/bin/env bash
# Measure the flashsale server end to end and print one Markdown table.
#
# Usage:
#   scripts/bench.sh                 the benchmark (about 3-4 minutes with the defaults)
#   scripts/bench.sh --soak MINUTES  only the memory-flatness soak: overload POST /api/orders
#                                    for MINUTES minutes, sampling the server's RSS every 10 s
#   scripts/bench.sh --compare OLD_BINARY
#                                    A/B of two builds: OLD_BINARY against the freshly built
#                                    target/release/flashsale (NEW), alternating (see below)
#   scripts/bench.sh --attack        reservations and paced payment webhooks beside hostile
#                                    clients, each attack in turn, against baselines without
#                                    one (about 3 minutes with the defaults; see below)
#   scripts/bench.sh --auth          reservations/s with buyer identity from JWTs (HS256 and
#                                    Ed25519) against `none`, alternating, same binary (about 6
#                                    minutes with the defaults; see below)
#   scripts/bench.sh --cluster       reservations/s and CPU per reservation on a local Redis
#                                    Cluster of 3 masters against the single Redis, same
#                                    binary, alternating (about 3 minutes with the defaults)
#   scripts/bench.sh --help
#
# What it does: installs wrk, ab (apache2-utils), curl and python3 (+ python3-matplotlib for
# the chart) with apt-get when missing; starts PostgreSQL and Redis with scripts/services.sh;
# builds `cargo build --release`; drops and recreates its own database; runs
# `flashsale migrate`; starts `flashsale serve` on a free loopback port with its own Redis key
# prefix (bench<random>-<driver>) and runs these scenarios against it:
#   1. GET /health                          wrk -t1 -c64 --latency (the no-op ceiling)
#   2. POST /api/orders qty 1 (large stock) wrk -t1 -c64 --latency; reservations/s (202s only)
#      and its ratio to the health run just before it, non-2xx
#   3. PostgreSQL lag after (2): wrk end -> Redis journal empty and the order row count stable
#   4. (1)-(3) again with the server on monoio's legacy epoll driver (MONOIO_FORCE_LEGACY_DRIVER=1)
#   5. sell-out of a fresh 10000-unit product, wrk -t1 -c256: PASS when PostgreSQL holds
#      exactly 10000 units in orders and Redis stock is 0 (FAIL exits non-zero)
#   6. the reference service's command: ab -n 1000 -c 100 -k -p body.json -T application/json
#   7. server RSS idle, after the load, and with 10000 idle keep-alive connections open
#      (and whether GET /health still answers then)
# During every run of 1 and 2 it samples the CPU time of every process (bench/cpu.py) and
# reports a second table: µs of CPU per request for wrk, the server's workers and writer,
# Redis, PostgreSQL and the rest, and the idle share: what limits the ratio of 2 to 1.
# Scenarios 1 and 2 (with 3) run BENCH_RUNS times per driver; the table shows the medians.
# At the end it stops the servers it started, deletes its Redis keys and drops its database.
#
# --compare OLD_BINARY: only scenarios 1 and 2 (with 3's wait for PostgreSQL, and the CPU
# sampling), io_uring driver, for two binaries: OLD_BINARY and NEW (target/release/flashsale,
# built unless BENCH_BUILD=0); both are copied to a private directory first. BENCH_RUNS
# rounds (default 3); in each, each binary gets a slot: a fresh `flashsale serve` with its
# own Redis key prefix and a new large-stock product, then (1) and (2). The order alternates
# (round 1 OLD then NEW, round 2 NEW then OLD, ...), so drift over the run (the orders table
# growing, other load on the machine) does not favour one of them. The table gives every
# slot, the medians per binary and NEW ÷ OLD of the medians; the header names both binaries
# (path, size, mtime, sha256; for NEW the checkout's commit). The benchmark database is
# migrated by NEW (`serve` applies whatever else OLD has). No chart.
#
# --attack: do hostile clients hurt legitimate ones? Every slot is a fresh server of the
# current binary (target/release/flashsale, built unless BENCH_BUILD=0, copied aside first)
# with two legitimate loads for BENCH_DURATION seconds: wrk -t1 -c32 POST /api/orders on a
# large-stock product (202s counted) and bench/webhooks.py paying, at BENCH_WEBHOOK_RATE a
# second (default 200) over 32 keep-alive connections, orders it reserved on a second product
# before the load (and PostgreSQL wrote), each reference once, timing each webhook. Beside
# them, from 2 s before the load to its end, one attack (or none: the baseline):
#   chunks   4 connections (bench/attack.py chunks) each sending a chunked POST /api/orders
#            whose first chunk line never ends (`1;` and an endless extension of `a`, 128-byte
#            sends), reconnecting whenever the server answers or closes; the server's RSS is
#            sampled every 0.1 s
#   idle     BENCH_ATTACK_IDLE_CONNS connections (default 20000, capped by the open-file
#            limit) from 127.0.0.2 that never send a byte, each reopened as soon as the server
#            closes it (503 over FLASHSALE_MAX_CONNECTIONS_PER_IP, or its header timeout)
#   lookups  wrk -t1 -c32 (bench/lookups.lua): GET /api/orders/<made-up reference>,
#            GET /api/products/<unknown id> and POST /api/orders for unknown products, at
#            random, statuses counted
# Order: baseline, then the attacks, then a baseline again; BENCH_RUNS rounds (default 2 for
# --attack), the attacks in reverse order in even rounds, each round ending with a baseline,
# so each attack slot lies between two baselines and is compared with their mean. Targets:
# reservations/s >= 0.90x and webhook p99 <= 2x that mean, and every webhook paid (200);
# PASS/FAIL per slot and per attack (the mean of its slots); exits 1 when an attack FAILs.
# The table also gives the attack's intensity, the server's RSS max and the CPU share of the
# server and of the attacker (bench/cpu.py). No chart.
#
# --auth: what verifying buyers' bearer tokens costs (FLASHSALE_BUYER_AUTH=jwt against none).
# Target: reservations/s of `jwt` with HS256 tokens, and with Ed25519 tokens, each at least
# 0.90x `none` (the median of the per-round ratios; each ratio within one round), with no
# 401 or 422 in their orders runs; PASS/FAIL per mode, exits 1 on a FAIL. One binary
# (target/release/flashsale, built unless BENCH_BUILD=0, or BENCH_BIN, never built; copied
# aside first). bench/auth.py mints, once per run, BENCH_AUTH_TOKENS buyers (default 1000,
# buyer-000001...) with an HS256 token (a random secret) and an Ed25519 token (a fresh key,
# its public half in a JWKS file with a kid) each, exp 24 h on; it needs Python's
# `cryptography`, found in python3, /usr/bin/python3 or .data/venv-bench, else installed
# there (a venv, pip; apt's python3-cryptography if that fails). BENCH_RUNS rounds (default
# 3) of slots, in order none, hs256, ed25519[, ed25519-miss] in odd rounds and reversed in even
# ones; each slot a fresh server (own Redis key prefix; FLASHSALE_BUYER_AUTH and its key set
# for the slot, the other key, iss/aud and the rate limits unset) with a new large-stock
# product without per-user limit, then:
#   a probe: one order with the first buyer (want 202) and, for jwt, one without a token
#            (want 401: the server really is in jwt mode)
#   (1) GET /health, wrk -t1 -c64 (the ceiling)
#   (2) POST /api/orders qty 1, wrk -t1 -c64 -s bench/orders_auth.lua: each request for the
#       next buyer of the pool in turn, `none` with the body's user_id, `jwt` with
#       `Authorization: Bearer <token>` and no user_id; reservations (202s) counted, with
#       3's wait for PostgreSQL; the server's own POST /api/orders statuses during it (from
#       /metrics before and after) must hold no 401 or 422, and some 202s
# and its Redis keys are deleted. The pool fits the 16,384 tokens each worker keeps verified,
# so after a token's first request on a worker its check is a hash lookup: the steady state
# of buyers repeating requests. ed25519-miss (BENCH_AUTH_MISS_TOKENS other buyers' Ed25519
# tokens, default 50000, 0 for none): more tokens than a worker's cache holds, so nearly
# every request verifies a signature; for information, no target. CPU sampled as in (1)/(2)
# (bench/cpu.py). The table gives every slot (health req/s, reservations/s, ÷ the none slot of
# its round, p99, CPU µs per reservation and the server's share of it, statuses), the medians
# per mode and the verdicts, then the CPU per process. No chart.
#
# --cluster: what routing over a Redis Cluster costs (FLASHSALE_REDIS_MODE=cluster against
# single). Starts (or reuses) the local cluster of `scripts/services.sh cluster` on
# BENCH_CLUSTER_PORT (default 7000; 3 masters, no replicas) and, for the run, gives its nodes
# the single Redis's `appendonly` setting (restored at the end), so both store the same way.
# One binary (target/release/flashsale, built unless BENCH_BUILD=0). BENCH_RUNS rounds
# (default 3) of two slots, single then cluster in odd rounds, reversed in even ones; each
# slot a fresh server (own Redis key prefix) with a new large-stock product (whose slot is on
# one master: a sale's products spread over the masters, one product's reservations do not),
# then (1) and (2) of --compare, the journal drained through the product's master, and the
# slot's keys deleted on every node. Target: CPU per reservation of all processes (wrk,
# server, every redis-server, PostgreSQL) in cluster mode within 1.15x single mode (medians);
# PASS/FAIL, exits 1 on a FAIL. The table is --compare's with single as OLD and cluster as NEW.
#
# Output: the table on stdout, progress on stderr, and in bench-results/<UTC timestamp>/:
# results.md (machine + table), chart.png, measurements.tsv, the raw wrk/ab outputs, the
# server logs and /metrics snapshots.
#
# Environment:
#   BENCH_DURATION     seconds per wrk run (default 10)
#   BENCH_RUNS         repetitions of scenarios 1-3 per driver (default 3; median reported);
#                      --compare, --auth: rounds (default 3); --attack: rounds (default 2)
#   BENCH_AUTH_TOKENS  --auth: buyers in the token pool (default 1000)
#   BENCH_AUTH_MISS_TOKENS
#                      --auth: tokens of the ed25519-miss slot (default 50000; 0: no such slot)
#   BENCH_CLUSTER_PORT --cluster: first port of the local cluster (default 7000)
#   BENCH_BIN          --auth: the binary to measure instead of target/release/flashsale (not built)
#   BENCH_WEBHOOK_RATE --attack: webhooks a second (default 200)
#   BENCH_ATTACK_IDLE_CONNS
#                      --attack: connections of the idle flood (default 20000)
#   BENCH_IDLE_CONNS   idle keep-alive connections for scenario 7 (default 10000)
#   BENCH_DB           database name (default flashsale_bench; dropped and recreated)
#   BENCH_KEEP_DB=1    keep the database at the end (Redis keys are always deleted)
#   BENCH_BUILD=0      skip `cargo build --release` and use the existing target/release/flashsale
#   DATABASE_URL       server and credentials to use (default postgres://postgres@127.0.0.1:5432/…);
#                      its database name is replaced by BENCH_DB
#   REDIS_URL          default redis://127.0.0.1:6379/0
#   SOAK_QUEUE_CAPACITY, SOAK_BATCH_ROWS, SOAK_HOLD_SECS, SOAK_CONNECTIONS
#                      --soak settings (defaults 4096, 1, 20, 256): one-row writer batches
#                      with fsync keep the writer saturated, so the bounded queue fills and
#                      the overflow is answered 503
#   Other FLASHSALE_* variables (e.g. FLASHSALE_WORKERS) are passed to the server.
set -euo pipefail

SCRIPT_DIR=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd -P)
REPO_ROOT=$(cd -- "$SCRIPT_DIR/.." && pwd -P)
HELPERS=$SCRIPT_DIR/bench
BUILT_BIN=$REPO_ROOT/target/release/flashsale
BIN= # a private copy of BUILT_BIN, so a rebuild during the run cannot swap it
NEW_BIN='' OLD_BIN='' # --compare: private copies of BUILT_BIN and of the OLD binary; BIN is one of them
TMPDIR_BENCH=
T_START=$(date +%s)

DURATION=${BENCH_DURATION:-10}
RUNS=${BENCH_RUNS:-}
IDLE_CONNS=${BENCH_IDLE_CONNS:-10000}
BENCH_DB=${BENCH_DB:-flashsale_bench}
BASE_DATABASE_URL=${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/flashsale}
REDIS_URL=${REDIS_URL:-redis://127.0.0.1:6379/0}
SOAK_MINUTES=
COMPARE_OLD= # --compare: the OLD binary as given
ATTACK=0     # --attack
WEBHOOK_RATE=${BENCH_WEBHOOK_RATE:-200}
ATTACK_IDLE_CONNS=${BENCH_ATTACK_IDLE_CONNS:-20000}
ATTACK_WARMUP=2 # seconds an attack runs before the legitimate load starts
AUTH=0 # --auth
CLUSTER=0 # --cluster
CLUSTER_PORT=${BENCH_CLUSTER_PORT:-7000}
CLUSTER_URL='' # --cluster: the seeds, one URL per node
CLUSTER_AOF='' # --cluster: the nodes' appendonly before the run, restored by cleanup
SLOT_CLUSTER=0 # --cluster: the current slot's server runs on the cluster
AUTH_TOKENS=${BENCH_AUTH_TOKENS:-1000}
AUTH_MISS_TOKENS=${BENCH_AUTH_MISS_TOKENS:-50000}
AUTH_BIN=${BENCH_BIN:-} # --auth: the binary to measure instead of BUILT_BIN (not built)
AUTH_EXP_SECS=86400     # --auth: lifetime of the minted tokens
AUTH_VENV=$REPO_ROOT/.data/venv-bench
AUTH_CRYPTOGRAPHY=cryptography==50.0.2 # pip's pin when .data/venv-bench has to be made
WEBHOOK_SECRET=bench
# --attack: keep-alive connections of the webhook client: enough that it keeps its pace while
# webhooks take ~50 ms on average (as under attack on a 2-core VM); 8 fell behind by seconds.
WEBHOOK_CONNS=32
LARGE_STOCK=1000000000
SELLOUT_STOCK=10000

log() { printf '[bench %s] %s\n' "$(date +%T)" "$*" >&2; }
warn() { printf '[bench %s] warning: %s\n' "$(date +%T)" "$*" >&2; }
die() {
    printf '[bench %s] error: %s\n' "$(date +%T)" "$*" >&2
    exit 1
}
usage() { sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"; }

while (($#)); do
    case $1 in
    --soak)
        [[ $# -ge 2 ]] || die "--soak needs a number of minutes"
        SOAK_MINUTES=$2
        shift 2
        ;;
    --soak=*)
        SOAK_MINUTES=${1#--soak=}
        shift
        ;;
    --compare)
        [[ $# -ge 2 ]] || die "--compare needs the path of the old flashsale binary"
        COMPARE_OLD=$2
        shift 2
        ;;
    --compare=*)
        COMPARE_OLD=${1#--compare=}
        shift
        ;;
    --attack)
        ATTACK=1
        shift
        ;;
    --auth)
        AUTH=1
        shift
        ;;
    --cluster)
        CLUSTER=1
        shift
        ;;
    -h | --help)
        usage
        exit 0
        ;;
    *)
        usage >&2
        die "unknown argument '$1'"
        ;;
    esac
done

is_uint() { [[ $1 =~ ^[0-9]+$ ]] && ((10#$1 >= ${2:-1})); }
if [[ -z $RUNS ]]; then
    if ((ATTACK)); then RUNS=2; else RUNS=3; fi
fi
is_uint "$DURATION" || die "BENCH_DURATION='$DURATION': expected whole seconds >= 1"
is_uint "$RUNS" || die "BENCH_RUNS='$RUNS': expected a whole number >= 1"
is_uint "$IDLE_CONNS" 0 || die "BENCH_IDLE_CONNS='$IDLE_CONNS': expected a whole number"
[[ $BENCH_DB =~ ^[a-z_][a-z0-9_]{0,62}$ ]] || die "BENCH_DB='$BENCH_DB': use lowercase letters, digits and _"
if [[ -n $SOAK_MINUTES ]]; then
    is_uint "$SOAK_MINUTES" || die "--soak '$SOAK_MINUTES': expected whole minutes >= 1"
fi
if [[ -n $COMPARE_OLD ]]; then
    [[ -z $SOAK_MINUTES ]] || die "--compare and --soak cannot be combined"
    [[ -f $COMPARE_OLD && -x $COMPARE_OLD ]] || die "--compare '$COMPARE_OLD': not an executable file"
    COMPARE_OLD=$(cd -- "$(dirname -- "$COMPARE_OLD")" && pwd -P)/$(basename -- "$COMPARE_OLD")
fi
if ((ATTACK)); then
    [[ -z $SOAK_MINUTES && -z $COMPARE_OLD ]] || die "--attack cannot be combined with --soak or --compare"
    is_uint "$WEBHOOK_RATE" || die "BENCH_WEBHOOK_RATE='$WEBHOOK_RATE': expected a whole number >= 1"
    is_uint "$ATTACK_IDLE_CONNS" || die "BENCH_ATTACK_IDLE_CONNS='$ATTACK_IDLE_CONNS': expected a whole number >= 1"
    WEBHOOK_RATE=$((10#$WEBHOOK_RATE))
    ATTACK_IDLE_CONNS=$((10#$ATTACK_IDLE_CONNS))
fi
if ((AUTH)); then
    if [[ -n $SOAK_MINUTES || -n $COMPARE_OLD ]] || ((ATTACK)); then
        die "--auth cannot be combined with --soak, --compare or --attack"
    fi
    is_uint "$AUTH_TOKENS" || die "BENCH_AUTH_TOKENS='$AUTH_TOKENS': expected a whole number >= 1"
    is_uint "$AUTH_MISS_TOKENS" 0 || die "BENCH_AUTH_MISS_TOKENS='$AUTH_MISS_TOKENS': expected a whole number"
    AUTH_TOKENS=$((10#$AUTH_TOKENS))
    AUTH_MISS_TOKENS=$((10#$AUTH_MISS_TOKENS))
    if [[ -n $AUTH_BIN ]]; then
        [[ -f $AUTH_BIN && -x $AUTH_BIN ]] || die "BENCH_BIN='$AUTH_BIN': not an executable file"
        AUTH_BIN=$(cd -- "$(dirname -- "$AUTH_BIN")" && pwd -P)/$(basename -- "$AUTH_BIN")
        BUILT_BIN=$AUTH_BIN
    fi
fi
if ((CLUSTER)); then
    if [[ -n $SOAK_MINUTES || -n $COMPARE_OLD ]] || ((ATTACK || AUTH)); then
        die "--cluster cannot be combined with --soak, --compare, --attack or --auth"
    fi
    is_uint "$CLUSTER_PORT" || die "BENCH_CLUSTER_PORT='$CLUSTER_PORT': expected a port"
    CLUSTER_PORT=$((10#$CLUSTER_PORT))
    CLUSTER_URL="redis://127.0.0.1:$CLUSTER_PORT,redis://127.0.0.1:$((CLUSTER_PORT + 1)),redis://127.0.0.1:$((CLUSTER_PORT + 2))"
fi
DURATION=$((10#$DURATION))
RUNS=$((10#$RUNS))
IDLE_CONNS=$((10#$IDLE_CONNS))

# Database URLs: same server and credentials as DATABASE_URL, other database names.
db_url_for() {
    local url=$BASE_DATABASE_URL base query root
    base=${url%%\?*}
    query=${url:${#base}}
    if [[ ${base#*://} == */* ]]; then root=${base%/*}; else root=$base; fi
    printf '%s/%s%s' "$root" "$1" "$query"
}
BENCH_DATABASE_URL=$(db_url_for "$BENCH_DB")
ADMIN_DATABASE_URL=$(db_url_for postgres)
PREFIX=bench$(od -An -N4 -tx1 /dev/urandom | tr -d ' \n')

TS=$(date -u +%Y%m%dT%H%M%SZ)
OUT=$REPO_ROOT/bench-results/$TS
if [[ -n $SOAK_MINUTES ]]; then OUT=$OUT-soak; fi
mkdir -p "$OUT"
MEAS=$OUT/measurements.tsv
PROBLEMS=$OUT/problems.txt
: >"$MEAS"
: >"$PROBLEMS"

put() { printf '%s\t%s\n' "$1" "$2" >>"$MEAS"; }
problem() {
    warn "$*"
    printf -- '- %s\n' "$*" >>"$PROBLEMS"
}

# ------------------------------------------------------------------ cleanup

SERVER_PID=
SERVER_LABEL=
SERVER_PREFIX=
BUILD_SECS='?'
BUILD_INFO='?'
BG_PIDS=()
SERVICES_UP=0
DB_CREATED=0
FAILED=0

kill_bg() {
    local p
    for p in "${BG_PIDS[@]}"; do
        if kill -0 "$p" 2>/dev/null; then
            kill -TERM "$p" 2>/dev/null || true
            wait "$p" 2>/dev/null || true
        fi
    done
    BG_PIDS=()
}

redis() { redis-cli -u "$REDIS_URL" "$@"; }
psql_db() { psql "$BENCH_DATABASE_URL" -v ON_ERROR_STOP=1 -qtAX "$@"; }

# Deletes the keys matching PATTERN (default: every key of this run; all servers' prefixes
# start with $PREFIX-).
clean_redis_keys() { # [PATTERN]
    local pattern=${1:-$PREFIX-*} keys=$OUT/.redis-keys before after
    if [[ -n $CLUSTER_URL ]]; then clean_cluster_keys "$pattern"; fi
    if ! redis --scan --pattern "$pattern" >"$keys"; then
        warn "could not list the Redis keys under $pattern (left in place)"
        return 0
    fi
    before=$(wc -l <"$keys")
    # UNLINK in batches of 200 keys, streamed through one connection: an inline command line
    # must stay under Redis's 64 KiB limit (1000 keys of 66 characters did not, and Redis
    # closed the connection when the line arrived in more than one read).
    awk -v n=200 '{ b = b " " $0; if (++c == n) { print "UNLINK" b; b = ""; c = 0 } }
                   END { if (c) print "UNLINK" b }' "$keys" | redis --pipe >/dev/null ||
        warn "redis-cli --pipe failed while deleting keys"
    rm -f "$keys"
    if ! after=$(redis --scan --pattern "$pattern" | wc -l) || ((after != 0)); then
        warn "${after:-some} Redis keys under $pattern are left (of $before)"
    else
        log "deleted the $before Redis keys under $pattern"
    fi
}

# The keys matching PATTERN on every node of the --cluster cluster, one UNLINK each (keys of
# several slots cannot share a command there).
clean_cluster_keys() { # PATTERN
    local port n=0 c
    for port in $CLUSTER_PORT $((CLUSTER_PORT + 1)) $((CLUSTER_PORT + 2)); do
        c=$(redis-cli -p "$port" --scan --pattern "$1" | awk '{ print "UNLINK " $0 } END { print "PING" }' |
            redis-cli -p "$port" --pipe 2>/dev/null | sed -n 's/.*replies: \([0-9]*\).*/\1/p') || true
        n=$((n + ${c:-1} - 1))
    done
    log "deleted $n keys under $1 on the cluster's nodes"
}

cleanup() {
    local rc=$?
    set +e
    trap - EXIT INT TERM
    kill_bg
    if [[ -n $SERVER_PID ]]; then stop_server; fi
    if [[ -n $CLUSTER_AOF ]]; then
        for port in $CLUSTER_PORT $((CLUSTER_PORT + 1)) $((CLUSTER_PORT + 2)); do
            redis-cli -p "$port" config set appendonly "$CLUSTER_AOF" >/dev/null 2>&1 || true
        done
        log "cluster nodes: appendonly back to $CLUSTER_AOF"
    fi
    if ((SERVICES_UP)); then
        clean_redis_keys
        if ((DB_CREATED)) && [[ ${BENCH_KEEP_DB:-0} != 1 ]]; then
            psql "$ADMIN_DATABASE_URL" -qX -c "DROP DATABASE IF EXISTS \"$BENCH_DB\" WITH (FORCE)" >/dev/null 2>&1 &&
                log "dropped database $BENCH_DB"
        fi
    fi
    [[ -z $TMPDIR_BENCH ]] || rm -rf "$TMPDIR_BENCH"
    ((rc != 0)) || ((FAILED == 0)) || rc=1
    log "finished in $(($(date +%s) - T_START)) s (exit $rc); results in ${OUT#"$REPO_ROOT"/}/"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ------------------------------------------------------------------ installs

APT_UPDATED=0
apt_install() {
    local sudo=()
    if [[ $EUID -ne 0 ]]; then
        command -v sudo >/dev/null 2>&1 || {
            warn "need root or sudo to install: $*"
            return 1
        }
        sudo=(sudo -n)
    fi
    log "installing with apt-get: $* (log: ${OUT#"$REPO_ROOT"/}/install.log)"
    if ((APT_UPDATED == 0)); then
        "${sudo[@]}" apt-get update >>"$OUT/install.log" 2>&1 || true
        APT_UPDATED=1
    fi
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@" \
        >>"$OUT/install.log" 2>&1
}

ensure_tools() {
    local missing=()
    command -v wrk >/dev/null 2>&1 || missing+=(wrk)
    command -v ab >/dev/null 2>&1 || missing+=(apache2-utils)
    command -v curl >/dev/null 2>&1 || missing+=(curl)
    command -v python3 >/dev/null 2>&1 || missing+=(python3)
    if ((${#missing[@]})); then
        apt_install "${missing[@]}" || die "could not install ${missing[*]} (see $OUT/install.log)"
    fi
    local t
    for t in wrk ab curl python3; do
        command -v "$t" >/dev/null 2>&1 || die "$t is still missing"
    done
    # The interpreter itself, not a wrapper (pyenv's shim forks several processes first, up
    # to seconds when the cores are saturated, which would shift cpu.py's window).
    PY=$(python3 -c 'import sys; print(sys.executable)' 2>/dev/null) || true
    [[ -n $PY && -x $PY ]] || PY=python3
    command -v cargo >/dev/null 2>&1 || die "cargo is not installed (install Rust with rustup)"
}

# A python3 that has matplotlib, installing python3-matplotlib if none has; empty if none.
find_mpl_python() {
    local py
    for py in python3 /usr/bin/python3; do
        if command -v "$py" >/dev/null 2>&1 && "$py" -c 'import matplotlib' >/dev/null 2>&1; then
            MPL_PY=$py
            return 0
        fi
    done
    if apt_install python3-matplotlib; then
        for py in /usr/bin/python3 python3; do
            if command -v "$py" >/dev/null 2>&1 && "$py" -c 'import matplotlib' >/dev/null 2>&1; then
                MPL_PY=$py
                return 0
            fi
        done
    fi
    MPL_PY=
    warn "matplotlib is not available (python3-matplotlib did not install): no chart.png"
}

raise_nofile() {
    local hard want
    hard=$(ulimit -Hn)
    if [[ $hard == unlimited ]]; then want=1048576; else want=$hard; fi
    ulimit -n "$want" 2>/dev/null || warn "could not raise the open-file limit to $want"
    if ((IDLE_CONNS + 64 > $(ulimit -n))); then
        warn "open-file limit $(ulimit -n) is below BENCH_IDLE_CONNS=$IDLE_CONNS; opening $(($(ulimit -n) - 64))"
        IDLE_CONNS=$(($(ulimit -n) - 64))
    fi
}

machine_info() {
    local cpu
    cpu=$(awk -F': *' '/^model name/ { print $2; exit }' /proc/cpuinfo 2>/dev/null || true)
    [[ -n $cpu ]] || cpu=$(awk -F': *' '/^(Hardware|cpu model|Processor)/ { print $2; exit }' /proc/cpuinfo 2>/dev/null || true)
    [[ -n $cpu ]] || cpu=unknown
    MACHINE="nproc $(nproc), kernel $(uname -r), CPU: $cpu, load average at start $(cut -d' ' -f1-3 /proc/loadavg)"
    put machine "$MACHINE"
}

checkout_info() {
    printf 'checkout at commit %s with %s uncommitted changes' \
        "$(git -C "$REPO_ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')" \
        "$(git -C "$REPO_ROOT" status --porcelain 2>/dev/null | wc -l)"
}

# binary_info SOURCE COPY: SOURCE's path with the size, mtime and sha256 of its private COPY.
binary_info() {
    printf '%s (%s bytes, modified %s, sha256 %s)' "$1" "$(stat -c %s "$2")" \
        "$(date -u -r "$2" +%Y-%m-%dT%H:%M:%SZ)" "$(sha256sum "$2" | cut -c1-16)"
}

# ------------------------------------------------------------------ server

free_port() {
    "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# start_server LABEL [VAR=VALUE...]: starts `flashsale serve`, sets SERVER_PID, ADDR, PORT.
start_server() {
    local label=$1 line='' i
    shift
    PORT=$(free_port)
    SERVER_LABEL=$label
    SERVER_LOG=$OUT/server-$label.log
    # Each server gets its own key prefix, so the second one does not start on the first
    # one's pending orders (it would re-arm its expiry timers from them).
    SERVER_PREFIX=$PREFIX-$label
    : >"$SERVER_LOG"
    env -u MONOIO_FORCE_LEGACY_DRIVER \
        PAYMENT_WEBHOOK_SECRET="$WEBHOOK_SECRET" \
        FLASHSALE_LISTEN="127.0.0.1:$PORT" \
        DATABASE_URL="$BENCH_DATABASE_URL" \
        REDIS_URL="$REDIS_URL" \
        FLASHSALE_REDIS_PREFIX="$SERVER_PREFIX" \
        RUST_LOG=flashsale=warn \
        "$@" "$BIN" serve >"$SERVER_LOG" 2>&1 &
    SERVER_PID=$!
    for ((i = 0; i < 600; i++)); do
        line=$(grep -s -m1 -o 'flashsale listening on http://[^[:space:]]*' "$SERVER_LOG" || true)
        [[ -z $line ]] || break
        if ! kill -0 "$SERVER_PID" 2>/dev/null; then
            tail -n 20 "$SERVER_LOG" >&2 || true
            wait "$SERVER_PID" 2>/dev/null || true
            SERVER_PID=
            die "flashsale serve ($label) exited during start-up (log: $SERVER_LOG)"
        fi
        sleep 0.1
    done
    [[ -n $line ]] || die "flashsale serve ($label) printed no 'listening' line within 60 s (log: $SERVER_LOG)"
    ADDR=${line#flashsale listening on http://}
    # Ready when Redis and PostgreSQL are (a new prefix's restart check scans Redis first).
    for ((i = 0; i < 600; i++)); do
        [[ $(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "http://$ADDR/ready") == 200 ]] && break
        sleep 0.1
    done
    ((i < 600)) || die "flashsale serve ($label) is not ready (GET /ready) within 60 s (log: $SERVER_LOG)"
    log "server ($label) pid $SERVER_PID listening on $ADDR"
}

assert_alive() {
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then
        local rc=0
        wait "$SERVER_PID" 2>/dev/null || rc=$?
        SERVER_PID=
        problem "the server ($SERVER_LABEL) died (exit $rc) during: $1; log tail: $(tail -n 5 "$SERVER_LOG" | tr '\n' ' ')"
        die "the server died during $1 (log: $SERVER_LOG)"
    fi
}

rss_kb() { awk '/^VmRSS:/ { print $2 }' "/proc/$SERVER_PID/status"; }

driver_check() {
    local n
    n=$(find "/proc/$SERVER_PID/fd" -lname 'anon_inode:\[io_uring\]' 2>/dev/null | wc -l)
    if ((n > 0)); then printf 'io_uring (%d rings)' "$n"; else printf 'epoll (no io_uring ring)'; fi
}

stop_server() {
    local pid=$SERVER_PID rc=0 i
    SERVER_PID=
    [[ -n $pid ]] || return 0
    if curl -s --max-time 5 "http://$ADDR/metrics" >"$OUT/metrics-$SERVER_LABEL.txt" 2>/dev/null; then
        "$PY" "$HELPERS/report.py" metrics "$OUT/metrics-$SERVER_LABEL.txt" "$SERVER_LABEL.m" >>"$MEAS" || true
    fi
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 300; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        problem "the server ($SERVER_LABEL) did not exit within 30 s of SIGTERM; killed"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || rc=$?
    if ((rc != 0)); then
        problem "the server ($SERVER_LABEL) exited with status $rc after SIGTERM (log: ${SERVER_LOG#"$REPO_ROOT"/})"
    else
        log "server ($SERVER_LABEL) stopped (exit 0)"
    fi
    if [[ -s $SERVER_LOG ]] && grep -qE ' (WARN|ERROR) ' "$SERVER_LOG"; then
        problem "server ($SERVER_LABEL) log has $(grep -cE ' (WARN|ERROR) ' "$SERVER_LOG") WARN/ERROR lines, first: $(grep -m1 -E ' (WARN|ERROR) ' "$SERVER_LOG" | cut -c1-300)"
    fi
}

# The server's totals so far from /metrics: POST /api/orders statuses (and why 503), writer.
order_statuses() {
    curl -s --max-time 5 "http://$ADDR/metrics" 2>/dev/null | "$PY" "$HELPERS/report.py" metrics-brief - ||
        true
}

# ------------------------------------------------------------------ data

new_product() { # NAME STOCK -> id
    psql_db -c "INSERT INTO products (name, price_cents, stock, max_per_order) VALUES ('$1', 100, $2, 10) RETURNING id"
}

journal_key() { printf '%s:{p:%s}:journal' "$SERVER_PREFIX" "$1"; }

# ------------------------------------------------------------------ scenarios

wrk_parse() { # FILE -> sets W_RPS W_P50 W_P99 W_REQ W_NON2XX W_SOCKERR
    read -r W_RPS W_P50 W_P99 W_REQ W_NON2XX W_SOCKERR < <("$PY" "$HELPERS/report.py" wrk "$1")
}

# cpu_start FILE [GROUP=PID...]: samples where the CPU goes during the wrk run about to start
# (bench/cpu.py; the processes named are counted as their GROUP), from 1 s after its start to
# 1 s before its end. cpu_end KEY records it.
cpu_start() {
    CPU_FILE=$1
    shift
    "$PY" "$HELPERS/cpu.py" 1 "$((DURATION > 3 ? DURATION - 2 : 1))" "$SERVER_PID" "$@" >"$CPU_FILE" 2>&1 &
    CPU_PID=$!
}
cpu_end() {
    wait "$CPU_PID" 2>/dev/null || problem "CPU sampling failed: $(head -c 300 "$CPU_FILE")"
    # One line of group=percent pairs; ';' because report.py joins repeated keys with ','.
    put "$1" "$(tr ',' ';' <"$CPU_FILE")"
}

run_health() { # DRIVER RUN
    local f=$OUT/wrk-$1-health-$2.txt
    log "[$1] run $2/$RUNS: GET /health, wrk -t1 -c64 -d${DURATION}s"
    cpu_start "$OUT/cpu-$1-health-$2.txt"
    wrk -t1 -c64 -d"${DURATION}s" --latency "http://$ADDR/health" >"$f" 2>&1 ||
        die "wrk failed (see $f)"
    cpu_end "$1.health.cpu"
    assert_alive "GET /health ($1)"
    wrk_parse "$f"
    put "$1.health.rps" "$W_RPS"
    put "$1.health.p50" "$W_P50"
    put "$1.health.p99" "$W_P99"
    put "$1.health.non2xx" "$W_NON2XX"
    put "$1.health.sockerr" "$W_SOCKERR"
    # The orders run that follows is compared with this one (a ratio within one pair of runs).
    HEALTH_RPS=$W_RPS HEALTH_P99=$W_P99
    log "[$1] GET /health: $W_RPS req/s, p50 $W_P50 ms, p99 $W_P99 ms, non-2xx $W_NON2XX"
    ((W_NON2XX == 0)) || problem "[$1] GET /health run $2: $W_NON2XX non-2xx responses"
    ((W_SOCKERR == 0)) || problem "[$1] GET /health run $2: $W_SOCKERR socket errors (see ${f#"$REPO_ROOT"/})"
}

# drain_run FILE PRODUCT -- COMMAND...: runs COMMAND via drain.py; sets D_* from its output.
drain_run() {
    local f=$1 pid=$2 out kv
    shift 3
    local redis_args=(--redis-url "$REDIS_URL")
    if ((SLOT_CLUSTER)); then redis_args=(--redis-url "redis://127.0.0.1:$CLUSTER_PORT" --redis-cluster); fi
    out=$(BENCH_PRODUCT_ID=$pid "$PY" "$HELPERS/drain.py" --out "$f" "${redis_args[@]}" \
        --db-url "$BENCH_DATABASE_URL" --journal-key "$(journal_key "$pid")" --product "$pid" \
        --timeout 120 -- "$@") || die "drain.py failed for $f"
    D_RC='' D_LAG='' D_ROWS_BEFORE='' D_ROWS='' D_JOURNAL='' D_DRAINED=''
    for kv in $out; do
        case ${kv%%=*} in
        rc) D_RC=${kv#*=} ;;
        lag_ms) D_LAG=${kv#*=} ;;
        rows_before) D_ROWS_BEFORE=${kv#*=} ;;
        rows) D_ROWS=${kv#*=} ;;
        journal_at_end) D_JOURNAL=${kv#*=} ;;
        drained) D_DRAINED=${kv#*=} ;;
        esac
    done
    [[ $D_RC == 0 ]] || die "the load generator failed (exit $D_RC; see $f)"
    ((D_DRAINED == 1)) || problem "PostgreSQL did not catch up within 120 s after ${f#"$REPO_ROOT"/} (rows $D_ROWS)"
}

run_orders() { # DRIVER RUN PRODUCT
    local dv=$1 run=$2 pid=$3 f=$OUT/wrk-$1-orders-$2.txt accepted
    log "[$dv] run $run/$RUNS: POST /api/orders (product $pid), wrk -t1 -c64 -d${DURATION}s"
    cpu_start "$OUT/cpu-$dv-orders-$run.txt"
    # ORDERS_LUA: --auth's slots set their own script (and its environment).
    drain_run "$f" "$pid" -- wrk -t1 -c64 -d"${DURATION}s" --latency -s "${ORDERS_LUA:-$HELPERS/orders.lua}" \
        "http://$ADDR/api/orders"
    cpu_end "$dv.orders.cpu"
    assert_alive "POST /api/orders ($dv)"
    wrk_parse "$f"
    accepted=$((W_REQ - W_NON2XX))
    # Throughput counts reservations (202s), not answers: a 503 costs the server almost nothing.
    local accepted_rps ratio p99_ratio
    read -r accepted_rps ratio p99_ratio < <(awk -v r="$W_RPS" -v n="$W_REQ" -v a="$accepted" \
        -v h="$HEALTH_RPS" -v p="$W_P99" -v hp="$HEALTH_P99" \
        'BEGIN { ar = (n > 0 ? r * a / n : 0); printf "%.2f %.4f %.3f\n", ar, (h > 0 ? ar / h : 0), (hp > 0 ? p / hp : 0) }')
    put "$dv.orders.rps" "$W_RPS"
    put "$dv.orders.accepted_rps" "$accepted_rps"
    put "$dv.ratio" "$ratio"
    put "$dv.p99_ratio" "$p99_ratio"
    put "$dv.orders.p50" "$W_P50"
    put "$dv.orders.p99" "$W_P99"
    put "$dv.orders.non2xx" "$W_NON2XX"
    put "$dv.orders.sockerr" "$W_SOCKERR"
    put "$dv.lag.ms" "$D_LAG"
    put "$dv.lag.rows" "$D_ROWS"
    put "$dv.lag.added" "$((D_ROWS - D_ROWS_BEFORE))"
    put "$dv.lag.accepted" "$accepted"
    put "$dv.lag.journal" "$D_JOURNAL"
    log "[$dv] POST /api/orders: $W_RPS req/s ($accepted_rps reservations/s, ${ratio}x the health run before it), p50 $W_P50 ms, p99 $W_P99 ms, non-2xx $W_NON2XX;" \
        "journal $D_JOURNAL at wrk end, every 202 a row after $D_LAG ms ($((D_ROWS - D_ROWS_BEFORE)) rows added, $accepted 202s seen by wrk)"
    ((W_NON2XX == 0)) || problem "[$dv] POST /api/orders run $run: $W_NON2XX non-2xx responses (server totals so far: $(order_statuses))"
    ((W_SOCKERR == 0)) || problem "[$dv] POST /api/orders run $run: $W_SOCKERR socket errors (see ${f#"$REPO_ROOT"/})"
    ((D_ROWS - D_ROWS_BEFORE >= accepted)) ||
        problem "[$dv] POST /api/orders run $run: only $((D_ROWS - D_ROWS_BEFORE)) new rows for $accepted 202 responses"
}

run_idle_conns() { # DRIVER
    local dv=$1 f=$OUT/idle-$1.out ipid i line open failed still health rss
    if ((IDLE_CONNS == 0)); then return 0; fi
    log "[$dv] opening $IDLE_CONNS idle keep-alive connections"
    : >"$f"
    "$PY" "$HELPERS/idle_conns.py" 127.0.0.1 "$PORT" "$IDLE_CONNS" 120 >"$f" 2>"$OUT/idle-$dv.err" &
    ipid=$!
    BG_PIDS+=("$ipid")
    for ((i = 0; i < 900; i++)); do
        line=$(grep -s -m1 '^OPEN ' "$f" || true)
        [[ -z $line ]] || break
        kill -0 "$ipid" 2>/dev/null || break
        sleep 0.1
    done
    if [[ -z $line ]]; then
        problem "[$dv] idle_conns.py did not report its connections (see ${f#"$REPO_ROOT"/} and idle-$dv.err)"
        kill_bg
        return 0
    fi
    read -r _ open failed <<<"$line"
    sleep 1
    assert_alive "$IDLE_CONNS idle connections ($dv)"
    rss=$(rss_kb)
    put "$dv.rss.conns_kb" "$rss"
    put "$dv.conns.open" "$open"
    put "$dv.conns.failed" "$failed"
    health=$(curl -s -o /dev/null -w '%{http_code} %{time_total}' --max-time 5 "http://$ADDR/health" || true)
    health=$(awk '{ if ($1 == "000" || $1 == "") print "no answer"; else printf "%s in %.1f ms", $1, $2 * 1000 }' <<<"$health")
    put "$dv.conns.health" "$health"
    [[ $health == 200* ]] || problem "[$dv] GET /health with $open idle connections open: $health"
    ((failed == 0)) || problem "[$dv] $failed of $IDLE_CONNS idle connections could not be opened and served (see ${OUT#"$REPO_ROOT"/}/idle-$dv.err)"
    kill -TERM "$ipid" 2>/dev/null || true
    wait "$ipid" 2>/dev/null || true
    BG_PIDS=()
    still=$(awk '/^STILL_OPEN/ { print $2 }' "$f")
    put "$dv.conns.still_open" "${still:-0}"
    log "[$dv] $open idle connections ($failed failed): RSS $rss kB, /health $health, ${still:-?} still open when closed"
}

run_sellout() {
    local pid f=$OUT/wrk-io_uring-sellout.txt sum stock pending pgstock accepted verdict
    pid=$(new_product "bench sell-out" "$SELLOUT_STOCK")
    log "[io_uring] sell-out: product $pid with $SELLOUT_STOCK units, wrk -t1 -c256 -d${DURATION}s"
    drain_run "$f" "$pid" -- wrk -t1 -c256 -d"${DURATION}s" --latency -s "$HELPERS/orders.lua" \
        "http://$ADDR/api/orders"
    assert_alive "sell-out"
    wrk_parse "$f"
    sum=$(psql_db -c "SELECT coalesce(sum(qty), 0) FROM orders WHERE product_id = $pid")
    pending=$(psql_db -c "SELECT coalesce(sum(qty), 0) FROM orders WHERE product_id = $pid AND status = 'pending'")
    pgstock=$(psql_db -c "SELECT stock FROM products WHERE id = $pid")
    stock=$(redis GET "$SERVER_PREFIX:{p:$pid}:stock")
    accepted=$((W_REQ - W_NON2XX))
    if [[ $sum == "$SELLOUT_STOCK" && $stock == 0 ]]; then verdict=PASS; else verdict=FAIL; fi
    put sellout.verdict "$verdict"
    put sellout.sum_qty "$sum"
    put sellout.redis_stock "${stock:-(missing)}"
    put sellout.accepted "$accepted"
    put sellout.lag_ms "$D_LAG"
    put sellout.rps "$W_RPS"
    put sellout.p50 "$W_P50"
    put sellout.p99 "$W_P99"
    put sellout.requests "$W_REQ"
    put sellout.non2xx "$W_NON2XX"
    put sellout.sockerr "$W_SOCKERR"
    log "[io_uring] sell-out $verdict: $sum units in orders, Redis stock ${stock:-(missing)}, $accepted 202s seen by wrk; server totals so far: $(order_statuses)"
    if [[ $verdict == FAIL ]]; then
        FAILED=1
        problem "sell-out FAIL: PostgreSQL has $sum units in orders (want $SELLOUT_STOCK), Redis stock '${stock:-(missing)}' (want 0)"
    fi
    ((W_SOCKERR == 0)) || problem "sell-out: $W_SOCKERR socket errors (see ${f#"$REPO_ROOT"/})"
    ((accepted <= SELLOUT_STOCK)) || problem "sell-out: wrk saw $accepted non-error responses for $SELLOUT_STOCK units"
    [[ -z $stock || -z $pgstock || $((stock + pending)) == "$pgstock" ]] ||
        problem "sell-out: conservation broken: Redis $stock + pending $pending != PostgreSQL stock $pgstock"
}

run_ab() { # PRODUCT
    local f=$OUT/ab-io_uring.txt rps p50 p99 complete failed non2xx ka
    printf '{"product_id":%s,"qty":1}' "$1" >"$OUT/body.json"
    log "[io_uring] ab -n 1000 -c 100 -k -p body.json -T application/json http://$ADDR/api/orders"
    ab -n 1000 -c 100 -k -p "$OUT/body.json" -T application/json "http://$ADDR/api/orders" >"$f" 2>&1 ||
        problem "ab exited non-zero (see ${f#"$REPO_ROOT"/}): $(tail -n 1 "$f")"
    assert_alive "ab"
    read -r rps p50 p99 complete failed non2xx ka < <("$PY" "$HELPERS/report.py" ab "$f")
    put ab.rps "$rps"
    put ab.p50 "$p50"
    put ab.p99 "$p99"
    put ab.failed "$failed"
    put ab.non2xx "$non2xx"
    put ab.keepalive "$ka"
    log "[io_uring] ab: $rps req/s ($complete complete, $failed failed, $non2xx non-2xx, $ka keep-alive)"
    ((failed == 0 && non2xx == 0)) || problem "ab: $failed failed and $non2xx non-2xx of $complete requests (see ${f#"$REPO_ROOT"/})"
    ((ka == complete)) || problem "ab -k: only $ka of $complete requests reused a keep-alive connection (HTTP/1.0 keep-alive)"
}

# serve_fresh KEY LABEL [VAR=VALUE...]: start_server LABEL, then records the idle RSS and the
# I/O driver under KEY.
serve_fresh() {
    local key=$1
    shift
    start_server "$@"
    sleep 1
    put "$key.rss.idle_kb" "$(rss_kb)"
    put "$key.driver" "$(driver_check)"
    log "[$key] idle RSS $(rss_kb) kB; driver: $(driver_check)"
}

# One driver's block: server start, idle RSS, RUNS x (health, orders+lag), [extra], RSS, conns.
run_driver() { # DRIVER EXTRA_FN [VAR=VALUE...]
    local dv=$1 extra=$2 large r
    shift 2
    serve_fresh "$dv" "$dv" "$@"
    large=$(new_product "bench large ($dv)" "$LARGE_STOCK")
    for ((r = 1; r <= RUNS; r++)); do
        run_health "$dv" "$r"
        run_orders "$dv" "$r" "$large"
    done
    if [[ -n $extra ]]; then "$extra" "$large"; fi
    put "$dv.rss.after_kb" "$(rss_kb)"
    curl -s --max-time 5 "http://$ADDR/metrics" 2>/dev/null |
        "$PY" "$HELPERS/report.py" metrics - "$dv.after" | grep reaper_pending >>"$MEAS" || true
    log "[$dv] RSS after the load $(rss_kb) kB"
    run_idle_conns "$dv"
    stop_server
}

io_uring_extras() { # LARGE_PRODUCT
    run_sellout
    run_ab "$1"
}

# ------------------------------------------------------------------ compare

# One slot of --compare: WHO (old|new) on a fresh server (label WHO-ROUND, so its own Redis
# prefix and log) with a new large product: (1) then (2), measurements under WHO.
run_slot() { # WHO ROUND POSITION
    local who=$1 round=$2 large src
    if [[ $who == old ]]; then BIN=$OLD_BIN src=$COMPARE_OLD; else BIN=$NEW_BIN src=$BUILT_BIN; fi
    log "[$who] round $round/$RUNS, slot $3 of 2: the copy of $src"
    put "$who.position" "$3"
    serve_fresh "$who" "$who-$round"
    large=$(new_product "bench compare ($who, round $round)" "$LARGE_STOCK")
    run_health "$who" "$round"
    run_orders "$who" "$round" "$large"
    stop_server
    # Every slot starts on the same Redis: with the keys of earlier slots left in place
    # (~450k per slot), Redis's own work grew round by round (2% of a core during round 1's
    # health run, 87% during round 5's) and the later rounds measured Redis, not the binary.
    clean_redis_keys "$SERVER_PREFIX:*"
}

# RUNS rounds of slots, one per NAME: in the order given in odd rounds, reversed in even ones,
# so drift over the run (the orders table growing, other load on the machine) favours none.
# Each slot is SLOT_FN NAME ROUND POSITION (--compare, --cluster and --auth).
alternate() { # SLOT_FN NAME...
    local slot_fn=$1 r i
    shift
    local names=("$@") n=$#
    for ((r = 1; r <= RUNS; r++)); do
        for ((i = 0; i < n; i++)); do
            if ((r % 2)); then
                "$slot_fn" "${names[i]}" "$r" "$((i + 1))"
            else
                "$slot_fn" "${names[n - 1 - i]}" "$r" "$((i + 1))"
            fi
        done
    done
}

# ------------------------------------------------------------------ cluster

# One slot of --cluster: MODE (single|cluster) on a fresh server of the one binary, measured
# under --compare's keys (single as old, cluster as new) so its table serves.
run_cluster_slot() { # MODE ROUND POSITION
    local mode=$1 round=$2 large key=old
    local env=(FLASHSALE_REDIS_MODE=single)
    SLOT_CLUSTER=0
    if [[ $mode == cluster ]]; then
        env=(FLASHSALE_REDIS_MODE=cluster "REDIS_URL=$CLUSTER_URL")
        SLOT_CLUSTER=1 key=new
    fi
    log "[$mode] round $round/$RUNS, slot $3 of 2"
    put "$key.position" "$3"
    serve_fresh "$key" "$mode-$round" "${env[@]}"
    large=$(new_product "bench cluster ($mode, round $round)" "$LARGE_STOCK")
    run_health "$key" "$round"
    run_orders "$key" "$round" "$large"
    stop_server
    SLOT_CLUSTER=0
    clean_redis_keys "$SERVER_PREFIX:*" # on the single Redis and on the cluster's nodes
}

# Starts the local cluster (scripts/services.sh cluster) and gives its nodes the single
# Redis's appendonly for the run.
cluster_up() {
    local port aof
    CLUSTER_PORT=$CLUSTER_PORT "$REPO_ROOT/scripts/services.sh" cluster start >&2
    aof=$(redis config get appendonly | sed -n 2p)
    CLUSTER_AOF=$(redis-cli -p "$CLUSTER_PORT" config get appendonly | sed -n 2p)
    for port in $CLUSTER_PORT $((CLUSTER_PORT + 1)) $((CLUSTER_PORT + 2)); do
        redis-cli -p "$port" config set appendonly "$aof" >/dev/null ||
            die "could not set appendonly on the cluster node $port"
    done
    put cluster.info "3 masters on 127.0.0.1:$CLUSTER_PORT-$((CLUSTER_PORT + 2)), appendonly $aof as the single Redis (was $CLUSTER_AOF); single Redis $REDIS_URL"
    log "cluster nodes: appendonly $aof for the run, as the single Redis (was $CLUSTER_AOF)"
}

# ------------------------------------------------------------------ attack

# sample_server PID FILE: the VmRSS (kB) of PID every 0.1 s, one a line, and every second
# after it on the same line the number of its open descriptors, until PID ends or this
# background job is killed.
sample_server() {
    local k v _ i=0 fds
    while [[ -r /proc/$1/status ]]; do
        while read -r k v _; do
            if [[ $k == VmRSS: ]]; then
                if ((i++ % 10 == 0)); then
                    fds=("/proc/$1/fd"/*)
                    printf '%s %s\n' "$v" "${#fds[@]}"
                else
                    printf '%s\n' "$v"
                fi
                break
            fi
        done <"/proc/$1/status" || break
        sleep 0.1
    done >"$2" 2>/dev/null
}

# stop_bg PID SIGNAL: sends SIGNAL to a background job of this script, waits for it (10 s,
# then SIGKILL) and takes it out of BG_PIDS.
stop_bg() {
    local pid=$1 i p rest=()
    kill -"$2" "$pid" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        problem "process $pid did not stop within 10 s of SIG$2; killed"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
    for p in "${BG_PIDS[@]}"; do [[ $p == "$pid" ]] || rest+=("$p"); done
    BG_PIDS=("${rest[@]}")
}

# await_bg PID SECS: waits up to SECS for a background job to end on its own, then stop_bg TERM.
await_bg() {
    local i
    for ((i = 0; i < $2 * 10; i++)); do
        kill -0 "$1" 2>/dev/null || break
        sleep 0.1
    done
    stop_bg "$1" TERM
}

# kv LINE KEY: the value of KEY in a line of key=value pairs (empty when absent).
kv() {
    local words w
    read -ra words <<<"$1"
    for w in "${words[@]}"; do
        if [[ ${w%%=*} == "$2" ]]; then
            printf '%s' "${w#*=}"
            return 0
        fi
    done
}

# One slot of --attack: a fresh server; the webhook client's orders reserved (and written to
# PostgreSQL); SCENARIO's attack (none for baseline), then ATTACK_WARMUP s later the two
# legitimate loads for DURATION s; the attack stopped. Measurements under a<N>.
run_attack_slot() { # N SCENARIO
    local n=$1 sc=$2 key=a$1 label large wprod refs apid='' wpid spid f line groups=()
    local accepted res_rps rss_max fds wh o_p99 o_non2xx
    label=$key-$sc
    log "[attack] slot $n of ${#ATTACK_SEQ[@]}: $sc"
    start_server "$label"
    sleep 0.5
    put "$key.scenario" "$sc"
    put "$key.label" "$label"
    put "$key.rss_idle_kb" "$(rss_kb)"
    large=$(new_product "bench attack $n: orders" "$LARGE_STOCK")
    wprod=$(new_product "bench attack $n: webhooks" "$LARGE_STOCK")
    refs=$OUT/refs-$label.txt
    drain_run "$OUT/reserve-$label.txt" "$wprod" -- "$PY" "$HELPERS/webhooks.py" reserve \
        --addr "$ADDR" --product "$wprod" --count "$((WEBHOOK_RATE * (DURATION + 1)))" --out "$refs"

    sample_server "$SERVER_PID" "$OUT/rss-$label.txt" &
    spid=$!
    BG_PIDS+=("$spid")
    f=$OUT/attack-$label.txt
    case $sc in
    chunks)
        "$PY" "$HELPERS/attack.py" chunks --addr "$ADDR" --conns 4 --piece 128 \
            --warmup "$ATTACK_WARMUP" >"$f" 2>&1 &
        apid=$!
        ;;
    idle)
        "$PY" "$HELPERS/attack.py" idle --addr "$ADDR" --source 127.0.0.2 \
            --conns "$ATTACK_IDLE_CONNS" --warmup "$ATTACK_WARMUP" >"$f" 2>&1 &
        apid=$!
        ;;
    lookups)
        # Stopped with SIGINT at the end of the load (wrk then prints its summary); the
        # duration is only a bound.
        wrk -t1 -c32 -d"$((ATTACK_WARMUP + DURATION + 60))s" --latency -s "$HELPERS/lookups.lua" \
            "http://$ADDR" >"$f" 2>&1 &
        apid=$!
        ;;
    baseline) ;;
    *) die "unknown attack scenario $sc" ;;
    esac
    if [[ -n $apid ]]; then
        BG_PIDS+=("$apid")
        groups+=("attacker=$apid")
    fi
    sleep "$ATTACK_WARMUP" # in the baseline too, so every slot has the same timing
    if [[ -n $apid ]] && ! kill -0 "$apid" 2>/dev/null; then
        die "the $sc attacker exited before the load started: $(tail -n 5 "$f" | tr '\n' ' ')"
    fi

    log "[attack] $sc: POST /api/orders (product $large) wrk -t1 -c32 -d${DURATION}s, webhooks at $WEBHOOK_RATE/s (product $wprod)"
    "$PY" "$HELPERS/webhooks.py" send --addr "$ADDR" --refs "$refs" --secret "$WEBHOOK_SECRET" \
        --rate "$WEBHOOK_RATE" --conns "$WEBHOOK_CONNS" --duration "$DURATION" --latencies "$OUT/webhook-latencies-$label.txt" \
        >"$OUT/webhooks-$label.txt" 2>"$OUT/webhooks-$label.err" &
    wpid=$!
    BG_PIDS+=("$wpid")
    cpu_start "$OUT/cpu-$label.txt" "webhooks=$wpid" "${groups[@]}"
    BENCH_PRODUCT_ID=$large wrk -t1 -c32 -d"${DURATION}s" --latency -s "$HELPERS/orders.lua" \
        "http://$ADDR/api/orders" >"$OUT/wrk-$label.txt" 2>&1 || die "wrk failed (see $OUT/wrk-$label.txt)"
    await_bg "$wpid" 15 # it stops on its own after DURATION s
    cpu_end "$key.cpu"
    if [[ -n $apid ]]; then
        if [[ $sc == lookups ]]; then stop_bg "$apid" INT; else stop_bg "$apid" TERM; fi
    fi
    stop_bg "$spid" TERM
    assert_alive "the $sc attack"

    wrk_parse "$OUT/wrk-$label.txt"
    accepted=$((W_REQ - W_NON2XX))
    res_rps=$(awk -v r="$W_RPS" -v n="$W_REQ" -v a="$accepted" 'BEGIN { printf "%.2f", (n > 0 ? r * a / n : 0) }')
    put "$key.res_rps" "$res_rps"
    put "$key.rps" "$W_RPS"
    put "$key.p50" "$W_P50"
    put "$key.p99" "$W_P99"
    put "$key.non2xx" "$W_NON2XX"
    put "$key.sockerr" "$W_SOCKERR"
    o_p99=$W_P99 o_non2xx=$W_NON2XX
    wh=$(grep -m1 '^sent=' "$OUT/webhooks-$label.txt" || true)
    [[ -n $wh ]] || die "webhooks.py printed no result (see $OUT/webhooks-$label.txt and .err)"
    put "$key.webhooks" "$wh"
    [[ ! -s $OUT/webhooks-$label.err ]] ||
        problem "[$label] webhooks.py: $(head -c 300 "$OUT/webhooks-$label.err")"
    case $sc in
    baseline) line='' ;;
    lookups)
        wrk_parse "$f"
        line="rps=$W_RPS requests=$W_REQ non2xx=$W_NON2XX sockerr=$W_SOCKERR p99_ms=$W_P99"
        line+=" statuses=$(awk '/^LOOKUP_STATUSES/ { print $2 }' "$f")"
        ;;
    *)
        line=$(grep -m1 '^seconds=' "$f" || true)
        [[ -n $line ]] || problem "[$label] the attacker printed no result: $(tail -n 3 "$f" | tr '\n' ' ')"
        ;;
    esac
    put "$key.attack" "${line:-none}"
    read -r rss_max fds < <(awk '$1 > m { m = $1 }
        NF > 1 { if (!n) first = $2; n++; sum += $2; if ($2 > fm) fm = $2 }
        END { printf "%d before:%d,average:%.0f,max:%d\n", m, first, (n ? sum / n : 0), fm }' "$OUT/rss-$label.txt")
    put "$key.rss_max_kb" "$rss_max"
    put "$key.fds" "$fds"
    log "[attack] $sc: $res_rps reservations/s (orders p99 $o_p99 ms, non-2xx $o_non2xx); webhooks: $(kv "$wh" paid) paid of $(kv "$wh" sent), p50 $(kv "$wh" p50_ms) ms, p99 $(kv "$wh" p99_ms) ms; server RSS max $rss_max kB; attack: ${line:-none}"
    stop_server
    # As in --compare: every slot starts on the same Redis. With ~200k keys left per slot, the
    # baselines fell from 35k to 24k reservations/s within one run, and a new server's restart
    # check (one SCAN of the whole keyspace before it serves) outlasted webhooks.py's start.
    clean_redis_keys "$SERVER_PREFIX:*"
}

# Baseline, then for each of RUNS rounds the three attacks (reversed in even rounds) and a
# baseline: every attack slot lies between two baselines.
run_attack() {
    local r n=0 sc
    ATTACK_SEQ=(baseline)
    for ((r = 1; r <= RUNS; r++)); do
        if ((r % 2)); then ATTACK_SEQ+=(chunks idle lookups baseline); else ATTACK_SEQ+=(lookups idle chunks baseline); fi
    done
    put attack.slots "${#ATTACK_SEQ[@]}"
    put attack.webhook_rate "$WEBHOOK_RATE"
    put attack.idle_conns "$ATTACK_IDLE_CONNS"
    put attack.warmup "$ATTACK_WARMUP"
    for sc in "${ATTACK_SEQ[@]}"; do
        n=$((n + 1))
        run_attack_slot "$n" "$sc"
    done
}

# ------------------------------------------------------------------ auth

has_cryptography() { # PYTHON
    [[ -x $1 ]] && "$1" -c 'from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey' \
        >/dev/null 2>&1
}

# Sets AUTH_PY to a Python with the `cryptography` package (bench/auth.py signs Ed25519 tokens
# with it): python3, /usr/bin/python3 or .data/venv-bench when one has it; else makes
# .data/venv-bench (python3 -m venv, with apt's python3-venv when the module is missing, and
# pip install AUTH_CRYPTOGRAPHY), and if that fails installs apt's python3-cryptography.
ensure_auth_python() {
    local py
    for py in "$PY" /usr/bin/python3 "$AUTH_VENV/bin/python"; do
        if has_cryptography "$py"; then
            AUTH_PY=$py
            return 0
        fi
    done
    log "no python3 with the cryptography package: making ${AUTH_VENV#"$REPO_ROOT"/} with $AUTH_CRYPTOGRAPHY (log: ${OUT#"$REPO_ROOT"/}/install.log)"
    mkdir -p "$(dirname -- "$AUTH_VENV")"
    if [[ ! -x $AUTH_VENV/bin/pip ]]; then
        rm -rf "$AUTH_VENV"
        if ! "$PY" -m venv "$AUTH_VENV" >>"$OUT/install.log" 2>&1; then
            # Debian's own python3 needs its venv module as a package.
            rm -rf "$AUTH_VENV"
            if apt_install python3-venv; then
                "$PY" -m venv "$AUTH_VENV" >>"$OUT/install.log" 2>&1 || rm -rf "$AUTH_VENV"
            fi
        fi
    fi
    if [[ -x $AUTH_VENV/bin/pip ]]; then
        "$AUTH_VENV/bin/pip" install -q --disable-pip-version-check "$AUTH_CRYPTOGRAPHY" >>"$OUT/install.log" 2>&1 ||
            warn "pip could not install $AUTH_CRYPTOGRAPHY into ${AUTH_VENV#"$REPO_ROOT"/}"
        if has_cryptography "$AUTH_VENV/bin/python"; then
            AUTH_PY=$AUTH_VENV/bin/python
            return 0
        fi
    fi
    apt_install python3-cryptography || true
    if has_cryptography /usr/bin/python3; then
        AUTH_PY=/usr/bin/python3
        return 0
    fi
    die "no Python with the cryptography package could be found or installed (see $OUT/install.log)"
}

# Mints the token pools into AUTH_DIR (bench/auth.py mint) and reads the HS256 secret.
auth_tokens() {
    local line what="$AUTH_TOKENS buyers' HS256 and Ed25519 tokens"
    ((AUTH_MISS_TOKENS == 0)) || what+=" and $AUTH_MISS_TOKENS other buyers' Ed25519 tokens"
    AUTH_DIR=$OUT/auth
    mkdir -p "$AUTH_DIR"
    log "minting $what (bench/auth.py with $AUTH_PY)"
    line=$("$AUTH_PY" "$HELPERS/auth.py" mint "$AUTH_DIR" "$AUTH_TOKENS" "$AUTH_MISS_TOKENS" "$AUTH_EXP_SECS") ||
        die "bench/auth.py mint failed"
    log "tokens: $line"
    put auth.tokens "$AUTH_TOKENS"
    put auth.miss_tokens "$AUTH_MISS_TOKENS"
    put auth.mint "$line"
    AUTH_SECRET=$(<"$AUTH_DIR/hs256.secret")
    ((AUTH_TOKENS >= 1000)) || problem "BENCH_AUTH_TOKENS=$AUTH_TOKENS: fewer buyers than the 1,000 the target is stated for"
}

# auth_probe MODE PRODUCT: one order by the pool's first buyer must be a 202, and in the jwt
# modes one without a token a 401 (so the server is in the mode the slot is named after).
auth_probe() {
    local mode=$1 first code f=$OUT/probe-$SERVER_LABEL.txt
    first=$(head -n 1 "$BENCH_AUTH_FILE")
    if [[ $mode == none ]]; then
        code=$(curl -s -o "$f" -w '%{http_code}' --max-time 5 -H 'Content-Type: application/json' \
            -d "{\"product_id\":$2,\"qty\":1,\"user_id\":\"$first\"}" "http://$ADDR/api/orders" || true)
    else
        code=$(curl -s -o "$f" -w '%{http_code}' --max-time 5 -H 'Content-Type: application/json' \
            -H "Authorization: Bearer $first" -d "{\"product_id\":$2,\"qty\":1}" "http://$ADDR/api/orders" || true)
    fi
    [[ $code == 202 ]] || die "[$mode] the probe order of buyer 1 got ${code:-no answer}, not 202: $(head -c 300 "$f")"
    if [[ $mode != none ]]; then
        code=$(curl -s -o "$f" -w '%{http_code}' --max-time 5 -H 'Content-Type: application/json' \
            -d "{\"product_id\":$2,\"qty\":1}" "http://$ADDR/api/orders" || true)
        [[ $code == 401 ]] || die "[$mode] an order without a bearer token got ${code:-no answer}, not 401: is the server in jwt mode? $(head -c 300 "$f")"
    fi
    log "[$mode] probe: buyer 1's order 202$([[ $mode == none ]] || echo ', no token 401')"
}

# One slot of --auth: MODE (none, hs256, ed25519, ed25519-miss) on a fresh server (label
# MODE-ROUND: own Redis prefix and log) with a new large product: the probe, (1), (2) with the
# mode's pool, the server's statuses of (2) checked; measurements under MODE.
run_auth_slot() { # MODE ROUND POSITION
    local mode=$1 round=$2 label=$1-$2 large statuses n202 n401 n422 env pool as
    local -x BENCH_AUTH_FILE BENCH_AUTH_AS
    local ORDERS_LUA=$HELPERS/orders_auth.lua # read by run_orders
    # Only the slot's own key; no iss/aud and no rate limits, whatever the environment says.
    env=(FLASHSALE_JWT_ISSUER= FLASHSALE_JWT_AUDIENCE= FLASHSALE_RATE_LIMIT_IP= FLASHSALE_RATE_LIMIT_IP_BURST=
        FLASHSALE_RATE_LIMIT_BUYER= FLASHSALE_RATE_LIMIT_BUYER_BURST=)
    case $mode in
    none)
        env+=(FLASHSALE_BUYER_AUTH=none FLASHSALE_JWT_HS256_SECRET= FLASHSALE_JWT_PUBLIC_KEYS=)
        pool=buyers.txt as=user_id
        ;;
    hs256)
        env+=(FLASHSALE_BUYER_AUTH=jwt "FLASHSALE_JWT_HS256_SECRET=$AUTH_SECRET" FLASHSALE_JWT_PUBLIC_KEYS=)
        pool=hs256.txt as=bearer
        ;;
    ed25519 | ed25519-miss)
        env+=(FLASHSALE_BUYER_AUTH=jwt FLASHSALE_JWT_HS256_SECRET= "FLASHSALE_JWT_PUBLIC_KEYS=$AUTH_DIR/jwks.json")
        pool=$mode.txt as=bearer
        ;;
    *) die "unknown --auth mode $mode" ;;
    esac
    BENCH_AUTH_FILE=$AUTH_DIR/$pool BENCH_AUTH_AS=$as
    log "[$mode] round $round/$RUNS, slot $3 of ${#AUTH_SLOTS[@]}: FLASHSALE_BUYER_AUTH=$([[ $mode == none ]] && echo none || echo jwt), $(wc -l <"$BENCH_AUTH_FILE") buyers ($pool) as $as"
    put "$mode.position" "$3"
    serve_fresh "$mode" "$label" "${env[@]}"
    large=$(new_product "bench auth ($mode, round $round)" "$LARGE_STOCK")
    auth_probe "$mode" "$large"
    run_health "$mode" "$round"
    curl -s --max-time 5 "http://$ADDR/metrics" >"$OUT/metrics-$label-before.txt" 2>/dev/null ||
        : >"$OUT/metrics-$label-before.txt"
    run_orders "$mode" "$round" "$large"
    stop_server
    clean_redis_keys "$SERVER_PREFIX:*"
    if ! statuses=$("$PY" "$HELPERS/auth.py" statuses "$OUT/metrics-$label-before.txt" "$OUT/metrics-$label.txt" 2>&1); then
        FAILED=1
        problem "[$mode] round $round: the server's POST /api/orders statuses could not be read ($statuses)"
        put "$mode.load_statuses" "unknown"
        return 0
    fi
    put "$mode.load_statuses" "$statuses"
    n202=$(kv "$statuses" 202) n401=$(kv "$statuses" 401) n422=$(kv "$statuses" 422)
    log "[$mode] the server's POST /api/orders answers during the orders run: $statuses"
    if ((${n401:-0} + ${n422:-0} > 0)); then
        FAILED=1
        problem "[$mode] round $round: ${n401:-0} × 401 and ${n422:-0} × 422 among the orders run's answers ($statuses): buyers refused"
    fi
    if ((${n202:-0} == 0)); then
        FAILED=1
        problem "[$mode] round $round: no 202 in the orders run ($statuses)"
    fi
}

# ------------------------------------------------------------------ soak

run_soak() {
    local minutes=$SOAK_MINUTES qcap=${SOAK_QUEUE_CAPACITY:-4096} brows=${SOAK_BATCH_ROWS:-1}
    local hold=${SOAK_HOLD_SECS:-20} conns=${SOAK_CONNECTIONS:-256} large f=$OUT/wrk-soak.txt
    local wpid t0 now next rss r1='' rmax=0 last='' statuses
    start_server soak FLASHSALE_QUEUE_CAPACITY="$qcap" FLASHSALE_BATCH_ROWS="$brows" FLASHSALE_HOLD_SECS="$hold"
    sleep 1
    put soak.rss_idle_kb "$(rss_kb)"
    put soak.settings "FLASHSALE_QUEUE_CAPACITY=$qcap FLASHSALE_BATCH_ROWS=$brows FLASHSALE_HOLD_SECS=$hold; driver $(driver_check)"
    put soak.load "wrk -t1 -c$conns -d${minutes}m POST /api/orders"
    large=$(new_product "bench soak" "$LARGE_STOCK")
    log "[soak] overloading POST /api/orders for $minutes min (wrk -t1 -c$conns; queue $qcap, batch rows $brows, hold ${hold}s); RSS every 10 s"
    printf 'seconds\trss_kb\n' >"$OUT/soak-rss.tsv"
    BENCH_PRODUCT_ID=$large wrk -t1 -c"$conns" -d"${minutes}m" --latency -s "$HELPERS/orders.lua" \
        "http://$ADDR/api/orders" >"$f" 2>&1 &
    wpid=$!
    BG_PIDS+=("$wpid")
    t0=$(date +%s)
    next=0
    while kill -0 "$wpid" 2>/dev/null; do
        now=$(($(date +%s) - t0))
        if ((now >= next)); then
            assert_alive "soak"
            rss=$(rss_kb)
            printf '%s\t%s\n' "$now" "$rss" >>"$OUT/soak-rss.tsv"
            ((rss > rmax)) && rmax=$rss
            if [[ -z $r1 ]] && ((now >= 60)); then
                r1=$rss
                log "[soak] RSS after 1 minute: $r1 kB"
            fi
            last=$rss
            ((now % 60 < 10)) && log "[soak] t=${now}s RSS $rss kB"
            next=$((next + 10))
        fi
        sleep 0.5
    done
    wait "$wpid" || die "wrk failed during the soak (see $f)"
    BG_PIDS=()
    assert_alive "soak"
    rss=$(rss_kb)
    printf '%s\t%s\n' "$(($(date +%s) - t0))" "$rss" >>"$OUT/soak-rss.tsv"
    ((rss > rmax)) && rmax=$rss
    last=$rss
    put soak.rss_1min_kb "${r1:-}"
    if [[ -n $r1 ]] && ((last * 4 > r1 * 5)); then
        problem "[soak] server RSS is not flat: $r1 kB after 1 minute, $last kB at the end (×$(awk -v a="$last" -v b="$r1" 'BEGIN { printf "%.2f", a / b }'))"
    fi
    put soak.rss_end_kb "$last"
    put soak.rss_max_kb "$rmax"
    statuses=$(order_statuses)
    put soak.statuses "$statuses"
    wrk_parse "$f"
    put soak.rps "$W_RPS"
    put soak.p50 "$W_P50"
    put soak.p99 "$W_P99"
    put soak.requests "$W_REQ"
    put soak.non2xx "$W_NON2XX"
    log "[soak] load done: $W_RPS req/s, statuses $statuses; waiting for PostgreSQL to catch up"
    drain_run "$OUT/soak-drain.txt" "$large" -- true
    put soak.rows "$D_ROWS"
    stop_server
}

# ------------------------------------------------------------------ main

main() {
    ensure_tools
    raise_nofile
    machine_info
    put duration "$DURATION"
    put runs "$RUNS"
    put idle_conns "$IDLE_CONNS"
    log "results go to ${OUT#"$REPO_ROOT"/}/"
    log "starting PostgreSQL and Redis (scripts/services.sh)"
    DATABASE_URL=$BENCH_DATABASE_URL REDIS_URL=$REDIS_URL "$REPO_ROOT/scripts/services.sh" start >&2
    SERVICES_UP=1
    [[ -n $COMPARE_OLD ]] || ((ATTACK || AUTH || CLUSTER)) || find_mpl_python # only the plain run and --soak draw a chart
    if ((CLUSTER)); then cluster_up; fi
    if ((AUTH)); then
        AUTH_SLOTS=(none hs256 ed25519)
        ((AUTH_MISS_TOKENS == 0)) || AUTH_SLOTS+=(ed25519-miss)
        ensure_auth_python
        auth_tokens
    fi

    local t_build=$SECONDS
    if [[ -n $AUTH_BIN ]]; then
        log "BENCH_BIN: measuring $AUTH_BIN, not building"
        BUILD_SECS=0
    elif [[ ${BENCH_BUILD:-1} == 0 ]]; then
        log "BENCH_BUILD=0: using the existing ${BUILT_BIN#"$REPO_ROOT"/} without building"
        BUILD_SECS=0
    else
        log "building: cargo build --release (log: ${OUT#"$REPO_ROOT"/}/build.log)"
        if ! (cd "$REPO_ROOT" && cargo build --release) >"$OUT/build.log" 2>&1; then
            tail -n 30 "$OUT/build.log" >&2
            die "cargo build --release failed"
        fi
        BUILD_SECS=$((SECONDS - t_build))
        log "build done in $BUILD_SECS s"
    fi
    [[ -x $BUILT_BIN ]] || die "$BUILT_BIN is missing"
    TMPDIR_BENCH=$(mktemp -d "${TMPDIR:-/tmp}/flashsale-bench.XXXXXX")
    BIN=$TMPDIR_BENCH/flashsale
    cp -p "$BUILT_BIN" "$BIN"
    BUILD_INFO="binary built $(date -u -r "$BUILT_BIN" +%Y-%m-%dT%H:%M:%SZ), $(checkout_info)"
    if [[ -n $AUTH_BIN ]]; then
        BUILD_INFO="BENCH_BIN $(binary_info "$AUTH_BIN" "$BIN"); $(checkout_info)"
    elif ((AUTH)); then
        BUILD_INFO="$(binary_info "${BUILT_BIN#"$REPO_ROOT"/}" "$BIN"), $(checkout_info)"
        if ((BUILD_SECS == 0)); then BUILD_INFO+=" (not rebuilt: BENCH_BUILD=0)"; fi
    fi
    put build "$BUILD_INFO"
    if [[ -z $AUTH_BIN && ${BENCH_BUILD:-1} == 0 ]]; then
        local newer
        newer=$(find "$REPO_ROOT/src" "$REPO_ROOT/lua" "$REPO_ROOT/migrations" "$REPO_ROOT/Cargo.toml" \
            "$REPO_ROOT/Cargo.lock" -type f -newer "$BUILT_BIN" 2>/dev/null | sed "s|^$REPO_ROOT/||" | sort)
        [[ -z $newer ]] || problem "BENCH_BUILD=0 and ${BUILT_BIN#"$REPO_ROOT"/} is older than $(wc -l <<<"$newer") file(s) of the checkout ($(head -n 3 <<<"$newer" | tr '\n' ' ')...): the figures are those of an older build"
    fi
    local compare_info=''
    if [[ -n $COMPARE_OLD ]]; then
        NEW_BIN=$BIN
        OLD_BIN=$TMPDIR_BENCH/flashsale-old
        cp -p "$COMPARE_OLD" "$OLD_BIN"
        local old_info new_info
        old_info=$(binary_info "$COMPARE_OLD" "$OLD_BIN")
        new_info="$(binary_info "${BUILT_BIN#"$REPO_ROOT"/}" "$NEW_BIN"), $(checkout_info)"
        if ((BUILD_SECS == 0)); then new_info+=" (not rebuilt: BENCH_BUILD=0)"; fi
        put old.binary "$old_info"
        put new.binary "$new_info"
        compare_info="- **OLD**: $old_info"$'\n'"- **NEW**: $new_info"
        if cmp -s "$OLD_BIN" "$NEW_BIN"; then
            compare_info+=$'\n\n'"The two binaries are byte-identical: NEW ÷ OLD shows only the noise."
        fi
        log "OLD: $old_info"
        log "NEW: $new_info"
    fi

    log "recreating database $BENCH_DB; Redis key prefixes $PREFIX-<server label>"
    psql "$ADMIN_DATABASE_URL" -v ON_ERROR_STOP=1 -qX \
        -c "DROP DATABASE IF EXISTS \"$BENCH_DB\" WITH (FORCE)" \
        -c "CREATE DATABASE \"$BENCH_DB\"" >/dev/null
    DB_CREATED=1
    DATABASE_URL=$BENCH_DATABASE_URL REDIS_URL=$REDIS_URL \
        RUST_LOG=flashsale=warn "$BIN" migrate >"$OUT/migrate.log" 2>&1 ||
        die "flashsale migrate failed: $(tail -n 5 "$OUT/migrate.log")"

    local header t_measure=$SECONDS
    if [[ -n $SOAK_MINUTES ]]; then
        run_soak
        header="## flashsale soak ($TS)"
    elif [[ -n $COMPARE_OLD ]]; then
        alternate run_slot old new
        header="## flashsale A/B comparison: OLD against NEW, alternating ($TS)"
    elif ((ATTACK)); then
        run_attack
        header="## flashsale under attack: legitimate load beside hostile clients ($TS)"
    elif ((AUTH)); then
        alternate run_auth_slot "${AUTH_SLOTS[@]}"
        header="## flashsale buyer identity: \`jwt\` (HS256, Ed25519) against \`none\`, same binary, alternating ($TS)"
    elif ((CLUSTER)); then
        alternate run_cluster_slot single cluster
        header="## flashsale on a Redis Cluster of 3 masters against one Redis, same binary, alternating ($TS)"
    else
        run_driver io_uring io_uring_extras
        run_driver epoll "" MONOIO_FORCE_LEGACY_DRIVER=1
        header="## flashsale benchmark ($TS)"
    fi

    # The report.
    local table note
    if [[ -n $SOAK_MINUTES ]]; then
        table=$("$PY" "$HELPERS/report.py" soak-table "$MEAS")
    elif [[ -n $COMPARE_OLD ]]; then
        table=$("$PY" "$HELPERS/report.py" compare-table "$MEAS")
        table+=$'\n\n'$("$PY" "$HELPERS/report.py" cpu-table "$MEAS" old new)
    elif ((ATTACK)); then
        table=$("$PY" "$HELPERS/report.py" attack-table "$MEAS" "$OUT")
        local sc verdict
        while read -r sc verdict; do
            [[ $verdict == PASS ]] || {
                FAILED=1
                problem "--attack: $sc $verdict against the targets"
            }
        done < <("$PY" "$HELPERS/report.py" attack-verdicts "$MEAS")
    elif ((CLUSTER)); then
        table=$("$PY" "$HELPERS/report.py" compare-table "$MEAS" single cluster)
        table+=$'\n\n'$("$PY" "$HELPERS/report.py" cpu-table "$MEAS" old=single new=cluster)
        local verdict ratio
        read -r verdict ratio < <("$PY" "$HELPERS/report.py" cluster-verdict "$MEAS")
        log "--cluster: $verdict (median CPU per reservation, cluster ÷ single: $ratio)"
        [[ $verdict == PASS ]] || {
            FAILED=1
            problem "--cluster: $verdict: CPU per reservation cluster ÷ single $ratio (target <= 1.15)"
        }
    elif ((AUTH)); then
        table=$("$PY" "$HELPERS/auth.py" table "$MEAS")
        table+=$'\n\n'$("$PY" "$HELPERS/report.py" cpu-table "$MEAS" "${AUTH_SLOTS[@]}")
        local mode verdict ratio
        while read -r mode verdict ratio; do
            log "--auth: $mode $verdict (median reservations/s ÷ none: $ratio)"
            [[ $verdict == PASS ]] || {
                FAILED=1
                problem "--auth: $mode $verdict: median reservations/s ÷ none $ratio (target >= 0.90, no 401/422)"
            }
        done < <("$PY" "$HELPERS/auth.py" verdicts "$MEAS")
    else
        table=$("$PY" "$HELPERS/report.py" table "$MEAS")
        table+=$'\n\n'$("$PY" "$HELPERS/report.py" cpu-table "$MEAS")
    fi
    note="The load generator (wrk/ab, one thread) shares these cores with the server, Redis and PostgreSQL, so every figure is for the whole box, not the server alone."
    {
        printf '%s\n\n' "$header"
        if [[ -n $COMPARE_OLD ]]; then
            printf 'Machine: %s.\n%s\n\n%s\n\n' "$MACHINE" "$note" "$compare_info"
            # shellcheck disable=SC2016 # Markdown code spans, not command substitutions
            printf 'Settings: %s round(s); in each, each binary serves one slot: a fresh server (own Redis key prefix, a new product with %s units, io_uring driver), then `GET /health` and `POST /api/orders` with wrk -t1 -c64 -d%ss, reservations (202s) counted. Order: OLD first in odd rounds, NEW first in even ones. Same database for all slots (migrated by NEW). Server RUST_LOG=flashsale=warn, default FLASHSALE_* settings unless set in the environment.\n\n' "$RUNS" "$LARGE_STOCK" "$DURATION"
        elif ((ATTACK)); then
            printf 'Machine: %s.\n%s\n\nBuild: %s.\n\n' "$MACHINE" "$note" "$BUILD_INFO"
            # shellcheck disable=SC2016 # Markdown code spans, not command substitutions
            printf 'Settings: %s slot(s), each a fresh server (own Redis key prefix, io_uring driver, default FLASHSALE_* settings unless set in the environment, RUST_LOG=flashsale=warn) with two legitimate loads for %s s: `POST /api/orders` qty 1 with wrk -t1 -c32 on a product with %s units (reservations = 202s), and `POST /api/payments/webhook` (success, signed) at %s/s over %s keep-alive connections for orders reserved on a second product before the load, each once. The attack of the slot runs from %s s before the load to its end: chunks = 4 connections sending an endless chunk extension in 128-byte writes, reconnecting when closed; idle = %s silent connections from 127.0.0.2 (fewer if the open-file limit says so), reopened when closed; lookups = wrk -t1 -c32 on unknown orders and products. Targets: reservations/s ≥ 0.90× and webhook p99 ≤ 2× the mean of the baselines just before and after the slot, and every webhook paid.\n\n' \
                "$(grep -m1 $'^attack.slots\t' "$MEAS" | cut -f2)" "$DURATION" "$LARGE_STOCK" "$WEBHOOK_RATE" "$WEBHOOK_CONNS" "$ATTACK_WARMUP" "$ATTACK_IDLE_CONNS"
        elif ((CLUSTER)); then
            printf 'Machine: %s.\n%s\n\nBinary (every slot): %s.\n\n' "$MACHINE" "$note" "$BUILD_INFO"
            # shellcheck disable=SC2016 # Markdown code spans, not command substitutions
            printf 'Settings: %s round(s) of two slots (single then cluster in odd rounds, reversed in even ones); each slot a fresh server (own Redis key prefix, io_uring driver, RUST_LOG=flashsale=warn, `FLASHSALE_REDIS_MODE` single or cluster, other FLASHSALE_* settings from the environment) with a new product of %s units, then `GET /health` and `POST /api/orders` with wrk -t1 -c64 -d%ss. Redis: %s. Target: CPU per reservation (all processes) cluster ÷ single <= 1.15.\n\n' \
                "$RUNS" "$LARGE_STOCK" "$DURATION" "$(grep -m1 $'^cluster.info\t' "$MEAS" | cut -f2)"
        elif ((AUTH)); then
            printf 'Machine: %s.\n%s\n\nBinary (every slot): %s.\n\n' "$MACHINE" "$note" "$BUILD_INFO"
            # shellcheck disable=SC2016 # Markdown code spans, not command substitutions
            printf 'Settings: %s round(s) of %s slots (%s in odd rounds, reversed in even ones); each slot a fresh server (own Redis key prefix, io_uring driver, RUST_LOG=flashsale=warn, `FLASHSALE_BUYER_AUTH` and only its key set for the slot: `FLASHSALE_JWT_HS256_SECRET` for HS256, `FLASHSALE_JWT_PUBLIC_KEYS` (a JWKS file of one Ed25519 key) for Ed25519; no `iss`/`aud`, rate limits off; other FLASHSALE_* settings from the environment) with a new product of %s units without per-user limit, then `GET /health` and `POST /api/orders` with wrk -t1 -c64 -d%ss. Tokens: %s.\n\n' \
                "$RUNS" "${#AUTH_SLOTS[@]}" "${AUTH_SLOTS[*]}" "$LARGE_STOCK" "$DURATION" "$(grep -m1 $'^auth.mint\t' "$MEAS" | cut -f2)"
        else
            printf 'Machine: %s.\n%s\n\nBuild: %s.\n\n' "$MACHINE" "$note" "$BUILD_INFO"
            if [[ -z $SOAK_MINUTES ]]; then
                printf 'Settings: wrk %s s per run, %s run(s) of scenarios 1-3 per driver (medians shown), server RUST_LOG=flashsale=warn, default FLASHSALE_* settings unless set in the environment.\n\n' "$DURATION" "$RUNS"
            fi
        fi
        printf '%s\n' "$table"
        printf '\nTiming: build %s s, measurements %s s; whole script %s s up to this report.\n' \
            "$BUILD_SECS" "$((SECONDS - t_measure))" "$(($(date +%s) - T_START))"
        if [[ -s $PROBLEMS ]]; then
            printf '\nObservations:\n'
            cat "$PROBLEMS"
        fi
    } >"$OUT/results.md"
    cat "$OUT/results.md"

    if [[ -n $COMPARE_OLD ]] || ((ATTACK || AUTH || CLUSTER)); then
        : # no chart: the table is the result
    elif [[ -n $MPL_PY ]]; then
        if [[ -n $SOAK_MINUTES ]]; then
            "$MPL_PY" "$HELPERS/report.py" soak-chart "$MEAS" "$OUT/soak-rss.tsv" "$OUT/chart.png" 2>"$OUT/chart.log" ||
                warn "chart failed (see $OUT/chart.log)"
        else
            "$MPL_PY" "$HELPERS/report.py" chart "$MEAS" "$OUT/chart.png" 2>"$OUT/chart.log" ||
                warn "chart failed (see $OUT/chart.log)"
        fi
        [[ -s $OUT/chart.png ]] && log "chart: ${OUT#"$REPO_ROOT"/}/chart.png"
    else
        printf '\n(no chart.png: matplotlib is not available)\n' | tee -a "$OUT/results.md"
    fi
}

main
