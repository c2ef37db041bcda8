#!/usr/bin/env bash
# The test command (README, CI): install prerequisites if missing, then run
# every test in one (release) profile, so RocksDB is compiled once: fmt,
# clippy, unit and integration tests, a smoke run of every benchmark
# scenario, and the chaos suite.
#
#   DROVER_TEST_SCALE=N       run the heavier tests with N times the writes
#   DROVER_CHAOS_DURATION=10m run the chaos suite longer (default 60s)
#   DROVER_CHAOS=0            skip the chaos suite (it needs Docker); says so
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/prereqs.sh --tests
cargo fmt --all -- --check
cargo clippy --release --locked --all-targets -- -D warnings
cargo test --release --locked -- --test-threads 2 "$@"
sdk/python/test.sh
# Every benchmark scenario, briefly, as a smoke test: it must complete and
# find nothing lost. Speeds are printed, never asserted.
bench() { echo "bench: $*" >&2; target/release/drover bench "$@" --local --json; }
bench schedule --clients 8 --duration 2s
bench schedule --clients 2 --batch 100 --duration 2s
bench e2e --tasks 2000
bench delayed --tasks 200 --spread 2s --lead 1s
bench failover --kills 2 --settle 1s
bench backlog --pending 20000 --duration 1s --e2e-tasks 1000
bench soak --duration 10s --baseline 4s --sample 5s --retain 2s --rate 200
if [ "${DROVER_CHAOS:-1}" = 0 ]; then
  echo "test: chaos suite SKIPPED (DROVER_CHAOS=0)" >&2
else
  # Every fault kind, a wrong clock and a full disk first (then random ones).
  # Over mutual TLS with auth on, as a secured cluster runs.
  DROVER_CHAOS_TLS=1 DROVER_CHAOS_AUTH=1 cluster/chaos.sh --faults kill,pause,partition,isolate-leader,clock,disk --first clock,disk
fi
