#!/usr/bin/env bash
# Whole-process benchmark of pricing-oracle-keeper against the local stand-ins (no database,
# no Redis, no internet): start to ready, cycle wall time with 400 ms upstreams, and peak RSS
# after 200 ticks at a 100 ms interval. Results are reported in the README.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked --bin pricing-oracle-keeper --bin bench_pricing
# The keeper runs without a database or Redis here; the harness only wants addresses to proxy.
export KEEPERS_TEST_PG_URL="${KEEPERS_TEST_PG_URL:-postgres://postgres@127.0.0.1:1/postgres}"
export KEEPERS_TEST_REDIS_URL="${KEEPERS_TEST_REDIS_URL:-redis://127.0.0.1:2/0}"
exec target/release/bench_pricing
