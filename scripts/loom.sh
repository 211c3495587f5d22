#!/usr/bin/env bash
# Runs the loom models of the handoff and the writer's batch collector (loom-tests/).
#
# `--cfg loom` reaches every crate of this build, so it only builds `flashsale` without its
# `server` feature (no tokio, whose networking breaks under loom), and it uses its own target
# dir so the normal build is not invalidated. Extra arguments go to the test binary, e.g.
#   scripts/loom.sh c_barrier          # one model
#   LOOM_MAX_PREEMPTIONS=3 scripts/loom.sh
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

export RUSTFLAGS="${RUSTFLAGS:-} --cfg loom"
export LOOM_MAX_PREEMPTIONS="${LOOM_MAX_PREEMPTIONS:-2}"

# Refuse to go on if the loom build would pull in tokio (or anything else that breaks under
# `--cfg loom`): that means a `server`-only dependency leaked into the loom build.
deps="$(cargo tree -p flashsale-loom-tests -e normal --prefix none)"
if grep -E '^(tokio|monoio|mio) ' <<<"$deps" >/dev/null; then
    echo "loom.sh: the loom build depends on tokio/monoio/mio; check flashsale's features" >&2
    exit 1
fi

start=$(date +%s)
cargo test --release -p flashsale-loom-tests --target-dir target/loom -- --test-threads=1 "$@"
echo "loom.sh: all models passed in $(( $(date +%s) - start ))s (LOOM_MAX_PREEMPTIONS=$LOOM_MAX_PREEMPTIONS)"
