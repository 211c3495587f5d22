#!/usr/bin/env bash
# The README's first command: runs flashsale with the two demo products.
#
# Starts PostgreSQL and Redis if they are not reachable (scripts/services.sh installs them on a
# fresh Debian machine), builds the release binary, applies migrations, seeds the demo products
# (ids 1 and 2, only if absent) and serves on FLASHSALE_LISTEN (default 127.0.0.1:8080) until
# Ctrl-C. Every variable of docs/configuration.md's table is passed through.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

scripts/services.sh
cargo build --release --bin flashsale

if [ -z "${PAYMENT_WEBHOOK_SECRET:-}" ]; then
  # The server refuses to start without a secret; a demo run gets a throwaway one, said aloud.
  PAYMENT_WEBHOOK_SECRET=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
  export PAYMENT_WEBHOOK_SECRET
  echo "[run] PAYMENT_WEBHOOK_SECRET was not set; using a random demo secret: $PAYMENT_WEBHOOK_SECRET" >&2
fi

target/release/flashsale seed
exec target/release/flashsale serve
