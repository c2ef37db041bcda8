#!/usr/bin/env bash
# Proof that the simulation finds bugs: apply each patch in sim/mutants/
# (each reintroduces a bug drover really had), run the simulation over its
# seed budget, and require it to fail. Seeds the real code fails (run
# first, unpatched) are left out, so a mutant is caught only by a seed
# that its patch made fail. Exits non-zero if any mutant
# survives (or a patch no longer applies). The tree is restored after
# each mutant, also on interrupt.
#
#   scripts/sim-mutants.sh                 every mutant, DROVER_MUTANT_SEEDS seeds each (default 60)
#   scripts/sim-mutants.sh NAME...         only these (file names without .patch)
set -euo pipefail
cd "$(dirname "$0")/.."
budget="${DROVER_MUTANT_SEEDS:-60}"
if [ "$#" -gt 0 ]; then
  patches=(); for n in "$@"; do patches+=("sim/mutants/$n.patch"); done
else
  patches=(sim/mutants/*.patch)
fi
# The real code first: its failing seeds (if any) do not count.
baseline="$(mktemp)"
cargo test --release --locked --test sim -- --seeds "$budget" --jobs 2 >"$baseline" 2>&1 || true
if ! grep -q "passed, .* failed" "$baseline"; then
  echo "the unpatched simulation did not run:" >&2; tail -20 "$baseline" >&2; exit 1
fi
skip="$( (grep -o '^FAILED seed [0-9]*' "$baseline" || true) | awk '{print $3}' | paste -sd, -)"
rm -f "$baseline"
if [ -n "$skip" ]; then echo "the real code fails seeds $skip (see scripts/sim.sh --seed S): left out" >&2; fi
applied=""
restore() { if [ -n "$applied" ]; then git apply -R "$applied"; applied=""; fi; }
trap restore EXIT
survived=0
for p in "${patches[@]}"; do
  name="$(basename "$p" .patch)"
  if ! git apply --check "$p" 2>/dev/null; then
    echo "mutant $name: the patch no longer applies" >&2; survived=1; continue
  fi
  git apply "$p"; applied="$p"
  log="$(mktemp)"
  if cargo test --release --locked --test sim -- --seeds "$budget" --jobs 2 --stop-at-first --skip "${skip:-0}" >"$log" 2>&1; then
    echo "mutant $name: SURVIVED $budget seeds" >&2; survived=1
  else
    first="$(grep -m1 '^FAILED seed' "$log" || true)"
    if [ -n "$first" ]; then
      inv="$(grep -m1 -A1 '^FAILED seed' "$log" | tail -1 | sed 's/^ *//' | cut -c1-200)"
      echo "mutant $name: caught: $first $inv" >&2
    else
      echo "mutant $name: the build or the harness failed, no seed failed:" >&2; tail -20 "$log" >&2; survived=1
    fi
  fi
  rm -f "$log"
  restore
done
exit "$survived"
