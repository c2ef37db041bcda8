#!/usr/bin/env bash
# The rolling-upgrade tests (tests/it/upgrade.rs), in one command:
#   tests/upgrade/run.sh
# 1. builds the previous release (the commit in tests/upgrade/PREVIOUS_RELEASE)
#    from git into target/upgrade-from/ (`git archive` of the commit, then
#    `cargo build --release --locked` with this checkout's target dir, so
#    only the old drover crate compiles: its dependencies are reused);
# 2. builds this checkout (through `cargo test`, with the features the test
#    command builds with, so the dependencies are not built a second time);
# 3. runs the upgrade tests with DROVER_PREVIOUS_BIN set, printing each
#    step's longest unavailability.
# Needs a git checkout (the previous release is read from its history).
set -euo pipefail
cd "$(dirname "$0")/../.."
root="$(pwd)"
commit="$(tr -d '[:space:]' < tests/upgrade/PREVIOUS_RELEASE)"
target="${CARGO_TARGET_DIR:-$root/target}"
src="$target/upgrade-from/src-$commit"
out="$target/upgrade-from/drover-$commit"
# A shallow clone lacks it: try to fetch that one commit from origin first.
git cat-file -e "$commit^{commit}" 2>/dev/null || git fetch --quiet --depth 1 origin "$commit" 2>/dev/null || true
if ! git cat-file -e "$commit^{commit}" 2>/dev/null; then
  echo "upgrade: the previous release's commit $commit is not in this clone (a shallow clone?):" \
    "git fetch --unshallow, or DROVER_UPGRADE=0 to skip these tests" >&2
  exit 1
fi
if [ ! -x "$out" ]; then
  start=$(date +%s)
  rm -rf "$src"; mkdir -p "$src"
  git archive "$commit" | tar -x -C "$src"
  # The old crate, in its own directory but on this target dir: the shared
  # dependencies are not built again. Its binary is copied out before this
  # checkout's build overwrites target/release/drover.
  (cd "$src" && DROVER_COMMIT="$(git -C "$root" rev-parse --short=12 "$commit")" \
    CARGO_TARGET_DIR="$target" cargo build --release --locked --bin drover)
  cp "$target/release/drover" "$out"
  echo "upgrade: previous release $commit built in $(( $(date +%s) - start ))s" >&2
  # Let this checkout's next build relink its own binary.
  touch "$root/src/main.rs"
fi
DROVER_PREVIOUS_BIN="$out" cargo test --release --locked --test it upgrade:: -- --ignored --nocapture --test-threads 1 "$@"
