#!/usr/bin/env bash
# The README's second command: the whole test suite.
#
# Starts PostgreSQL and Redis if they are not reachable (installing them on a fresh Debian
# machine), then runs every test: unit tests, the integration tests against the real services
# (each test in its own database and Redis key prefix), the property tests, the loom
# models of the handoff, and the contract test of the OpenAPI document against the running
# server (scripts/contract.sh). .ci/run runs exactly this.
#
# First it checks what the README asks of every change: `cargo fmt` and `cargo clippy` with
# warnings as errors, so a formatting or lint error fails the run before any test.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

echo "[test] cargo fmt --all -- --check" >&2
cargo fmt --all -- --check
echo "[test] cargo clippy --workspace --all-targets -- -D warnings" >&2
cargo clippy --workspace --all-targets -- -D warnings
cargo clippy --workspace --all-targets --features flashsale/failpoints -- -D warnings

scripts/services.sh
# redis-server is needed by the tests that kill and restart a Redis of their own.
if ! command -v redis-server >/dev/null 2>&1; then
  echo "[test] installing redis-server for the Redis restart tests" >&2
  sudo_cmd=""; [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq redis-server >/dev/null
fi

# A Redis Cluster of three masters for the cluster tests that share one (the chaos tests start
# their own): on the first free ports from 7000, stopped and removed when the suite ends, so a
# run leaves nothing behind and two checkouts never meet on one cluster.
port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
cluster_port=${TEST_CLUSTER_PORT:-7000}
while port_busy "$cluster_port" || port_busy $((cluster_port + 1)) || port_busy $((cluster_port + 2)) ||
    port_busy $((cluster_port + 10000)) || port_busy $((cluster_port + 10001)) || port_busy $((cluster_port + 10002)); do
  cluster_port=$((cluster_port + 3))
  ((cluster_port < 7300)) || { echo "[test] no free ports for the test cluster in 7000-7300" >&2; exit 1; }
done
stop_cluster() {
  CLUSTER_PORT=$cluster_port scripts/services.sh cluster stop || true
  rm -rf .data/redis-cluster/"$cluster_port" .data/redis-cluster/$((cluster_port + 1)) .data/redis-cluster/$((cluster_port + 2))
}
trap stop_cluster EXIT
CLUSTER_PORT=$cluster_port scripts/services.sh cluster start
export TEST_REDIS_CLUSTER_URL="redis://127.0.0.1:$cluster_port,redis://127.0.0.1:$((cluster_port + 1)),redis://127.0.0.1:$((cluster_port + 2))"

# With failpoints (the `fail` crate): the panic-policy tests make threads panic on demand.
cargo test --workspace --all-targets --features flashsale/failpoints
scripts/contract.sh target/debug/flashsale
scripts/loom.sh
echo "[test] all tests passed" >&2
