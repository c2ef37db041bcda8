#!/usr/bin/env bash
# The test command (README, CI): install prerequisites if missing, then run
# every test in one (release) profile, so RocksDB is compiled once: fmt,
# clippy, unit and integration tests, a smoke run of every benchmark
# scenario, and the chaos suite.
#
#   DROVER_TEST_SCALE=N       run the heavier tests with N times the writes
#   DROVER_CHAOS_DURATION=10m run the chaos suite longer (default 60s)
#   DROVER_CHAOS=0            skip the chaos suite (it needs Docker); says so
#   DROVER_UPGRADE=0          skip the rolling upgrade from the previous
#                             release (it builds that release); says so
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/prereqs.sh --tests
cargo fmt --all -- --check
cargo clippy --release --locked --all-targets -- -D warnings
cargo test --release --locked -- --test-threads 2 "$@"
# The simulation's mutants (scripts/sim-mutants.sh, too long for here) must
# still apply, or that proof silently rots.
for p in sim/mutants/*.patch; do
  git apply --check "$p" || { echo "test: $p no longer applies: regenerate it (DESIGN.md, Mutants)" >&2; exit 1; }
done
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
# A rolling upgrade from the previous release (built from git, about 5 more
# minutes of compiling on 2 cores) under load, a rollback, and its data dir
# and backup opened by this build.
if [ "${DROVER_UPGRADE:-1}" = 0 ]; then
  echo "test: rolling upgrade from the previous release SKIPPED (DROVER_UPGRADE=0)" >&2
else
  # A clone without the previous release's commit (shallow) fetches it
  # from origin; if that fails too, the skip is said loudly.
  prev=$(tr -d '[:space:]' < tests/upgrade/PREVIOUS_RELEASE)
  git cat-file -e "$prev^{commit}" 2>/dev/null || git fetch --quiet --depth 1 origin "$prev" 2>/dev/null || true
  if git cat-file -e "$prev^{commit}" 2>/dev/null; then
    tests/upgrade/run.sh
  else
    echo "test: rolling upgrade SKIPPED: the previous release's commit $prev is not in this clone and could not be fetched (run tests/upgrade/run.sh in a full clone)" >&2
  fi
fi
if [ "${DROVER_CHAOS:-1}" = 0 ]; then
  echo "test: chaos suite SKIPPED (DROVER_CHAOS=0)" >&2
else
  # Every fault kind, a wrong clock and a full disk first (then random ones).
  # Over mutual TLS with auth on, as a secured cluster runs.
  DROVER_CHAOS_TLS=1 DROVER_CHAOS_AUTH=1 cluster/chaos.sh --faults kill,pause,partition,isolate-leader,clock,disk --first clock,disk
fi
