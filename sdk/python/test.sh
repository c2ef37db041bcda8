#!/usr/bin/env bash
# The Python SDK's test command (run by scripts/test.sh): set up the venvs,
# install the package and the test tools, fail if the committed stubs drift
# from proto/drover.proto, then run pytest against real clusters.
#
#   DROVER_BIN=PATH   the drover binary the test clusters run
#                     (default: target/release/drover)
#   extra arguments go to pytest (e.g. -k conformance)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
venvs="$repo/target/python-sdk"
export DROVER_BIN="${DROVER_BIN:-$repo/target/release/drover}"
[ -x "$DROVER_BIN" ] || { echo "python sdk: no drover binary at $DROVER_BIN (build it first)" >&2; exit 1; }

# venv DIR PACKAGES...: create it and install what is missing (quick when
# everything is there already).
venv() {
  local dir="$1"; shift
  [ -x "$dir/bin/python" ] || python3 -m venv "$dir"
  "$dir/bin/python" -m pip install --quiet --disable-pip-version-check "$@"
}
# The stubs are generated with the oldest grpcio-tools the package supports;
# it pins an old protobuf, so it lives in a venv of its own.
[ -x "$venvs/tools/bin/python" ] && "$venvs/tools/bin/python" -c 'import grpc_tools' 2>/dev/null \
  || venv "$venvs/tools" "grpcio-tools==1.62.3"
gen="$(mktemp -d)"; trap 'rm -rf "$gen"' EXIT
"$here/gen_stubs.sh" "$venvs/tools/bin/python" "$gen"
if ! diff -r "$gen/drover/v1" "$here/src/drover/v1" -x __init__.py -x __pycache__ >/dev/null; then
  diff -r "$gen/drover/v1" "$here/src/drover/v1" -x __init__.py -x __pycache__ | head -40 >&2 || true
  echo "python sdk: the stubs in sdk/python/src/drover/v1 drift from proto/drover.proto;" \
    "run sdk/python/gen_stubs.sh $venvs/tools/bin/python sdk/python/src and commit them" >&2
  exit 1
fi
echo "python sdk: stubs match proto/drover.proto" >&2

# The package as a user installs it (pip install ./sdk/python), plus pytest.
venv "$venvs/test" pytest
"$venvs/test/bin/python" -m pip install --quiet --disable-pip-version-check --force-reinstall --no-deps "$here"
"$venvs/test/bin/python" -m pip install --quiet --disable-pip-version-check "$here"
cd "$here/tests"
exec "$venvs/test/bin/python" -m pytest -p no:cacheprovider -q -ra --durations=8 "$@"
