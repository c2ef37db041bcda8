#!/usr/bin/env bash
# The deterministic simulation (tests/sim, DESIGN.md "Deterministic
# simulation"): a whole cluster in one process per seed.
#
#   scripts/sim.sh                     determinism check + DROVER_SIM_SEEDS seeds (default 12)
#   scripts/sim.sh --seeds 10000       a long sweep (seeds 1..10000; --from S to start elsewhere)
#   scripts/sim.sh --seed S            replay seed S exactly (DROVER_SIM_TRACE=1: print its trace)
#   scripts/sim.sh --twice N           run seeds 1..N twice each; fail if a trace hash differs
#   DROVER_SIM_STRICT=1                also fail on known violations
#   --jobs J                           seeds run in parallel (default 2)
#
# A failed seed is printed with its violated invariants and the command
# that replays it; the script then exits non-zero.
set -euo pipefail
cd "$(dirname "$0")/.."
exec cargo test --release --locked --test sim -- "$@"
