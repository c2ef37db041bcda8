#!/usr/bin/env bash
# The chaos suite: a fresh Docker cluster, seeded random faults (kill, pause,
# partition, isolate the leader, a wrong clock, a full disk) under continuous
# load, then every guarantee checked. Bounded by default; longer on demand:
#
#   cluster/chaos.sh                       # 60 s of faults (CI)
#   DROVER_CHAOS_DURATION=20m cluster/chaos.sh --nodes 5
#   cluster/chaos.sh --seed 1234           # replay a run
#
# Extra arguments go to `drover chaos run` (see its --help). The history,
# the run records and a summary are kept in target/chaos/.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"
bin="${DROVER_BIN:-$root/target/release/drover}"
if [ ! -x "$bin" ]; then
  echo "chaos: $bin is missing; build it with: cargo build --release" >&2
  exit 1
fi
if ! command -v docker >/dev/null 2>&1 || ! docker info >/dev/null 2>&1; then
  echo "chaos: no running Docker engine; the chaos suite needs one (it does not pass without it)" >&2
  exit 1
fi
# Published host ports are not used by the suite (it talks to the node IPs);
# keep them clear of a local `drover dev` cluster.
export DROVER_HOST_PORT_BASE="${DROVER_HOST_PORT_BASE:-17000}"
export DROVER_BIN="$bin"
# A disk fault needs each node's data on a small filesystem of its own.
case " $* " in *disk*) export DROVER_DISK_FAULTS=1 ;; esac
exec "$bin" chaos run --cluster-dir "$here" --out "$root/target/chaos" --duration "${DROVER_CHAOS_DURATION:-60s}" "$@"
