#!/usr/bin/env bash
# The test command (README, CI): install prerequisites if missing, then run
# every test in one (release) profile, so RocksDB is compiled once.
#
#   DROVER_TEST_SCALE=N       run the heavier tests with N times the writes
#   DROVER_CHAOS_DURATION=10m run the chaos suite longer (default 60s)
#   DROVER_CHAOS=0            skip the chaos suite (it needs Docker); says so
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/prereqs.sh
cargo fmt --all -- --check
cargo clippy --release --locked --all-targets -- -D warnings
cargo test --release --locked -- --test-threads 2 "$@"
if [ "${DROVER_CHAOS:-1}" = 0 ]; then
  echo "test: chaos suite SKIPPED (DROVER_CHAOS=0)" >&2
else
  cluster/chaos.sh
fi
