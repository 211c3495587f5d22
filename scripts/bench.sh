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
# 0.95x `none` (the median of the per-round ratios; each ratio within one round), with no
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
# and its Redis keys are deleted. The pool fits the 131,072 tokens each worker keeps verified,
# so after a token's first request on a worker its check is a hash lookup: the steady state
# of buyers repeating requests. ed25519-miss (BENCH_AUTH_MISS_TOKENS other buyers' Ed25519
# tokens, default 300000, 0 for none): more tokens than a worker's cache holds, so nearly
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
# results.md (machine + table), chart.png, measurements.json, the raw wrk/ab outputs, the
# server logs and /metrics snapshots.
#
# Layout: this script only makes sure python3 is there and runs scripts/bench/main.py (the
# mode registry and the steps of a run), which uses scripts/bench/common.py (services, build,
# database, servers, wrk, CPU sampling, the wait for PostgreSQL), scripts/bench/rounds.py
# (the alternating rounds of every A/B mode), scripts/bench/report.py (parsers, tables,
# charts) and one module per mode in scripts/bench/modes/; the other files of scripts/bench/
# are the clients and samplers they run (cpu.py, drain.py, idle_conns.py, attack.py,
# auth.py, webhooks.py, *.lua for wrk).
#
# Environment:
#   BENCH_DURATION     seconds per wrk run (default 10)
#   BENCH_RUNS         repetitions of scenarios 1-3 per driver (default 3; median reported);
#                      --compare, --auth: rounds (default 3); --attack: rounds (default 2)
#   BENCH_AUTH_TOKENS  --auth: buyers in the token pool (default 1000)
#   BENCH_AUTH_MISS_TOKENS
#                      --auth: tokens of the ed25519-miss slot (default 300000; 0: no such slot)
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

# The harness is Python (standard library only): install python3 when it is missing. Every
# other tool (wrk, ab, curl, matplotlib, cryptography) is installed by the harness itself
# when a mode needs it, with its log in the results folder.
if ! command -v python3 >/dev/null 2>&1; then
    sudo=()
    if [[ $EUID -ne 0 ]]; then sudo=(sudo -n); fi
    printf '[bench %s] installing with apt-get: python3\n' "$(date +%T)" >&2
    "${sudo[@]}" apt-get update >/dev/null 2>&1 || true
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends python3 \
        >/dev/null 2>&1 || {
        printf '[bench %s] error: could not install python3\n' "$(date +%T)" >&2
        exit 1
    }
fi
exec python3 "$SCRIPT_DIR/bench/main.py" "$@"
