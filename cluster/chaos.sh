#!/usr/bin/env bash
# The chaos suite: a fresh Docker cluster, seeded random faults (kill, pause,
# partition, isolate the leader, a wrong clock, a full disk) under continuous
# load, then every guarantee checked. Bounded by default; longer on demand:
#
#   cluster/chaos.sh                       # 60 s of faults (CI)
#   DROVER_CHAOS_DURATION=20m cluster/chaos.sh --nodes 5
#   cluster/chaos.sh --seed 1234           # replay a run
#   DROVER_CHAOS_TLS=1 cluster/chaos.sh    # nodes, clients and workers over (mutual) TLS
#   DROVER_CHAOS_TLS=1 DROVER_CHAOS_AUTH=1 cluster/chaos.sh   # and with auth on (tokens, roles)
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
if [ "${DROVER_CHAOS_TLS:-0}" = 1 ]; then
  # Fresh certificates per run: node i's names its container IP; the
  # client pair is the CLI's, the workers' and the checker's.
  certs="$root/target/chaos/certs"
  rm -rf "$certs"
  hosts=()
  for i in 1 2 3 4 5; do hosts+=(--host "172.28.0.1$i"); done
  "$bin" admin certs --out "$certs" --nodes 5 "${hosts[@]}" --host 127.0.0.1 --host localhost >/dev/null
  export DROVER_TLS_DIR="$certs" DROVER_CA="$certs/ca.pem" DROVER_CERT="$certs/client.pem" DROVER_KEY="$certs/client-key.pem"
  echo "chaos: TLS on (certificates in $certs)" >&2
fi
extra=()
if [ "${DROVER_CHAOS_AUTH:-0}" = 1 ]; then
  # Auth needs TLS (peers must prove who they are).
  [ "${DROVER_CHAOS_TLS:-0}" = 1 ] || { echo "chaos: DROVER_CHAOS_AUTH=1 needs DROVER_CHAOS_TLS=1" >&2; exit 2; }
  extra+=(--auth)
fi
# A disk fault needs each node's data on a small filesystem of its own.
case " $* " in *disk*) export DROVER_DISK_FAULTS=1 ;; esac
exec "$bin" chaos run --cluster-dir "$here" --out "$root/target/chaos" --duration "${DROVER_CHAOS_DURATION:-60s}" "${extra[@]}" "$@"
