#!/usr/bin/env bash
# The contract test: drives a running server from the repository's own OpenAPI document
# (openapi.json) with schemathesis, and fails on any 5xx, any status the document does not
# list for an operation, any response off its schema, content type or headers, any
# schema-valid request refused and any schema-violating one accepted.
#
# Usage: scripts/contract.sh [BINARY]   (default target/debug/flashsale, built if missing)
#
# It creates a Python virtual environment in .data/venv (git-ignored) with pinned versions
# of schemathesis and openapi-spec-validator, validates the document, starts the server on a
# free loopback port with its own database (flashsale_contract, dropped and created again),
# its own Redis key prefix and an admin token, seeds the demo products, runs schemathesis
# (every check, `--checks all`; coverage, fuzzing and stateful phases; CONTRACT_MAX_EXAMPLES
# per operation, default 30; what a schema cannot say is in scripts/contract/), and stops
# the server. PostgreSQL and Redis must be running (scripts/services.sh).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

BIN=${1:-target/debug/flashsale}
VENV=.data/venv
MAX_EXAMPLES=${CONTRACT_MAX_EXAMPLES:-30}
DB=flashsale_contract
BASE_URL=${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/flashsale}
ROOT_URL=${BASE_URL%/*}
log() { printf '[contract] %s\n' "$*" >&2; }

if [[ ! -x $BIN ]]; then
    cargo build --bin flashsale
fi

if [[ ! -x $VENV/bin/schemathesis ]]; then
    log "creating $VENV with schemathesis (once)"
    mkdir -p .data
    if ! python3 -m venv "$VENV" >/dev/null 2>&1; then
        # Debian's own python3 needs its venv module as a package.
        sudo_cmd=""; [[ $(id -u) -ne 0 ]] && sudo_cmd="sudo"
        $sudo_cmd apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq python3-venv >/dev/null
        rm -rf "$VENV"
        python3 -m venv "$VENV"
    fi
    "$VENV/bin/pip" install -q --disable-pip-version-check \
        schemathesis==4.32.5 openapi-spec-validator==0.9.0
fi

"$VENV/bin/openapi-spec-validator" openapi.json >&2

PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
ADMIN_TOKEN=contract-admin-token-0123456789abcdef0123456789
psql "$ROOT_URL/postgres" -qX -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" -c "CREATE DATABASE $DB" >/dev/null
export DATABASE_URL=$ROOT_URL/$DB
export FLASHSALE_REDIS_PREFIX=contract$$
export PAYMENT_WEBHOOK_SECRET=contract-secret
export FLASHSALE_ADMIN_TOKEN=$ADMIN_TOKEN
# schemathesis sends wrong tokens on purpose (its negative authentication cases): with the
# default limit they would turn every later admin call into 429 and leave it untested.
export FLASHSALE_ADMIN_FAILURES_PER_MINUTE=100000
export FLASHSALE_LISTEN=127.0.0.1:$PORT
export RUST_LOG=flashsale=warn
"$BIN" seed >/dev/null
LOG=$(mktemp)
"$BIN" serve >"$LOG" 2>&1 &
SERVER=$!
cleanup() {
    kill "$SERVER" 2>/dev/null || true
    wait "$SERVER" 2>/dev/null || true
    redis-cli -u "${REDIS_URL:-redis://127.0.0.1:6379/0}" --scan --pattern "contract$$:*" 2>/dev/null |
        xargs -r -n 200 redis-cli -u "${REDIS_URL:-redis://127.0.0.1:6379/0}" DEL >/dev/null 2>&1 || true
    psql "$ROOT_URL/postgres" -qX -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1 || true
    rm -f "$LOG"
}
trap cleanup EXIT
for _ in $(seq 100); do
    curl -fsS "http://127.0.0.1:$PORT/health" >/dev/null 2>&1 && break
    sleep 0.1
done

log "schemathesis against $BIN on port $PORT, $MAX_EXAMPLES examples per operation"
if ! "$VENV/bin/schemathesis" \
    --config-file scripts/contract/schemathesis.toml run openapi.json \
    --url "http://127.0.0.1:$PORT" \
    -H "Authorization: Bearer $ADMIN_TOKEN" \
    --checks all \
    --max-examples "$MAX_EXAMPLES" \
    --phases coverage,fuzzing,stateful \
    --no-color; then
    log "FAILED; the server's log:"
    cat "$LOG" >&2
    exit 1
fi
if grep -q panicked "$LOG"; then
    log "the server panicked:"
    cat "$LOG" >&2
    exit 1
fi
log "passed"
