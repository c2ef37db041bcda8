#!/usr/bin/env bash
# The test command (README, CI): install prerequisites if missing, then run
# every test in one (release) profile, so RocksDB is compiled once.
#
#   DROVER_TEST_SCALE=N   run the heavier tests with N times the writes
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/prereqs.sh
cargo fmt --all -- --check
cargo clippy --release --locked --all-targets -- -D warnings
cargo test --release --locked -- --test-threads 2 "$@"
