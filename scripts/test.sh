#!/usr/bin/env bash
# The README's second command: the whole test suite.
#
# Starts PostgreSQL and Redis if they are not reachable (installing them on a fresh Debian
# machine), then runs every test: unit tests, the integration tests against the real services
# (each test in its own database and Redis key prefix), the property tests, the loom
# models of the handoff, and the contract test of the OpenAPI document against the running
# server (scripts/contract.sh). .ci/run runs exactly this.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

scripts/services.sh
# redis-server is needed by the tests that kill and restart a Redis of their own.
if ! command -v redis-server >/dev/null 2>&1; then
  echo "[test] installing redis-server for the Redis restart tests" >&2
  sudo_cmd=""; [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq redis-server >/dev/null
fi

cargo test --workspace --all-targets
scripts/contract.sh target/debug/flashsale
scripts/loom.sh
echo "[test] all tests passed" >&2
