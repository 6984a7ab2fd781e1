#!/usr/bin/env bash
# What the pricing keeper costs in TON with the default configuration and flat prices (6 assets,
# interval 60 s, heartbeat 240 s, UPDATE_VALUE_TON=auto), against the local stand-ins, time
# running 60x faster (interval 1 s, heartbeat 4 s; the TON per day is scaled back). Prints TON
# per batch and per day; the README reports the figure. Optional argument: wall seconds of
# steady state to measure (default 240, i.e. 4 simulated hours).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked --bin pricing-oracle-keeper --bin bench_cost
# The keeper runs without a database or Redis here; the harness only wants addresses to proxy.
export KEEPERS_TEST_PG_URL="${KEEPERS_TEST_PG_URL:-postgres://postgres@127.0.0.1:1/postgres}"
export KEEPERS_TEST_REDIS_URL="${KEEPERS_TEST_REDIS_URL:-redis://127.0.0.1:2/0}"
exec "${CARGO_TARGET_DIR:-target}/release/bench_cost" "$@"
