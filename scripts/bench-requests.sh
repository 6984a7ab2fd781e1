#!/usr/bin/env bash
# TON API requests per publishing and per idle tick of the pricing and bridge keepers, per
# method, counted by the local toncenter stand-in (one `--once` run each). Needs the test
# PostgreSQL and Redis: KEEPERS_TEST_PG_URL and KEEPERS_TEST_REDIS_URL.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --locked --bin pricing-oracle-keeper --bin bridge-health-keeper --bin bench_requests
exec "${CARGO_TARGET_DIR:-target}/debug/bench_requests" "$@"
