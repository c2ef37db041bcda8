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

# install VENV: the package as a user installs it (pip install ./sdk/python).
install() {
  "$1/bin/python" -m pip install --quiet --disable-pip-version-check --force-reinstall --no-deps "$here"
  "$1/bin/python" -m pip install --quiet --disable-pip-version-check "$here"
}
cd "$here/tests"
# The oldest supported setup: Python 3.9 with the oldest grpcio and protobuf
# the package allows (every test but the 1,000-task leader kill).
# DROVER_PY_OLDEST=0 skips it (and says so).
if [ "${DROVER_PY_OLDEST:-1}" = 0 ]; then
  echo "python sdk: oldest-dependency run SKIPPED (DROVER_PY_OLDEST=0)" >&2
else
  py39=""
  for c in python3.9 "$(pyenv root 2>/dev/null || echo /nonexistent)"/versions/3.9*/bin/python3.9; do
    if "$c" --version >/dev/null 2>&1; then py39="$c"; break; fi
  done
  [ -n "$py39" ] || { echo "python sdk: no python3.9 on PATH; the oldest-dependency run uses $(python3 --version)" >&2; py39=python3; }
  [ -x "$venvs/oldest/bin/python" ] || "$py39" -m venv "$venvs/oldest"
  "$venvs/oldest/bin/python" -m pip install --quiet --disable-pip-version-check "grpcio==1.62.3" "protobuf==4.25.3" pytest
  install "$venvs/oldest"
  echo "python sdk: tests on $("$venvs/oldest/bin/python" --version), grpcio 1.62.3, protobuf 4.25.3" >&2
  "$venvs/oldest/bin/python" -m pytest -p no:cacheprovider -q -ra -k "not 1000_tasks" "$@"
fi
# The newest: this machine's python3 with the grpcio and protobuf pip chose (the newest when the venv was made).
venv "$venvs/test" pytest
install "$venvs/test"
echo "python sdk: tests on $("$venvs/test/bin/python" --version) with grpcio $("$venvs/test/bin/python" -c "import grpc; print(grpc.__version__)"), protobuf $("$venvs/test/bin/python" -c "import google.protobuf as p; print(p.__version__)")" >&2
exec "$venvs/test/bin/python" -m pytest -p no:cacheprovider -q -ra --durations=8 "$@"
