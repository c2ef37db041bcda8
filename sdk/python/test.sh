#!/usr/bin/env bash
# The Python SDK's test command (run by scripts/test.sh):
#  1. fail if the committed stubs drift from proto/drover.proto;
#  2. build the sdist and wheel with `python -m build`, and fail if the
#     package's version is not the Rust crate's (Cargo.toml);
#  3. type-check the package and its examples: `mypy --strict`, and pyright
#     in strict mode (the `pyright[nodejs]` PyPI package: its wheel bundles
#     pyright, and the extra brings node as a wheel, so nothing comes from
#     npm or a system node);
#  4. run pytest against real clusters with the wheel installed: on the
#     oldest setup the package supports, and in a fresh venv with the newest
#     dependencies.
#
#   DROVER_BIN=PATH   the drover binary the test clusters run
#                     (default: target/release/drover)
#   DROVER_PY_OLDEST=0  skip the oldest-dependency run (and say so)
#   extra arguments go to pytest (e.g. -k conformance)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
venvs="$repo/target/python-sdk"
export DROVER_BIN="${DROVER_BIN:-$repo/target/release/drover}"
[ -x "$DROVER_BIN" ] || { echo "python sdk: no drover binary at $DROVER_BIN (build it first)" >&2; exit 1; }
# grpcio 1.62 (the oldest run's) can hang a forked child before it execs
# (see tests/conftest.py); the tests fork on Python 3.9.
export GRPC_ENABLE_FORK_SUPPORT=0
pip_() { "$1" -m pip install --quiet --disable-pip-version-check "${@:2}"; }

# venv DIR PACKAGES...: create it and install what is missing (quick when
# everything is there already).
venv() {
  local dir="$1"; shift
  [ -x "$dir/bin/python" ] || python3 -m venv "$dir"
  pip_ "$dir/bin/python" "$@"
}

# 1. The stubs are generated with the oldest grpcio-tools the package
# supports; it pins an old protobuf, so it lives in a venv of its own.
[ -x "$venvs/tools/bin/python" ] && "$venvs/tools/bin/python" -c 'import grpc_tools' 2>/dev/null \
  || venv "$venvs/tools" "grpcio-tools==1.62.3"
gen="$(mktemp -d)"; dist="$(mktemp -d)"; trap 'rm -rf "$gen" "$dist"' EXIT
"$here/gen_stubs.sh" "$venvs/tools/bin/python" "$gen"
if ! diff -r "$gen/drover/v1" "$here/src/drover/v1" -x __init__.py -x __pycache__ >/dev/null; then
  diff -r "$gen/drover/v1" "$here/src/drover/v1" -x __init__.py -x __pycache__ | head -40 >&2 || true
  echo "python sdk: the stubs in sdk/python/src/drover/v1 drift from proto/drover.proto;" \
    "run sdk/python/gen_stubs.sh $venvs/tools/bin/python sdk/python/src and commit them" >&2
  exit 1
fi
echo "python sdk: stubs match proto/drover.proto" >&2

# 2. The wheel (and sdist), as a release would build them.
venv "$venvs/build" build
"$venvs/build/bin/python" -m build --outdir "$dist" "$here" >"$dist/build.log" 2>&1 \
  || { cat "$dist/build.log" >&2; exit 1; }
crate="$(sed -n '/^\[package\]/,/^\[/s/^version *= *"\(.*\)"/\1/p' "$repo/Cargo.toml" | head -1)"
wheel="$(ls "$dist"/drover-*-py3-none-any.whl)"
case "$(basename "$wheel")" in
  "drover-$crate-py3-none-any.whl") echo "python sdk: built $(basename "$wheel") and its sdist (the crate's version)" >&2 ;;
  *) echo "python sdk: built $(basename "$wheel"), but the crate's version is $crate:" \
       "set it in sdk/python/src/drover/_version.py" >&2; exit 1 ;;
esac

# 3. Types: the package from its source, the examples against the installed
# wheel (as a user's code sees it: py.typed and the stubs shipped).
venv "$venvs/typecheck" mypy "pyright[nodejs]" types-grpcio types-protobuf fastapi opentelemetry-api
pip_ "$venvs/typecheck/bin/python" --force-reinstall --no-deps "$wheel"
pip_ "$venvs/typecheck/bin/python" "$wheel"
(
  cd "$here"
  tc="$venvs/typecheck/bin"
  echo "python sdk: $("$tc/mypy" --version): mypy --strict src/drover, then examples" >&2
  "$tc/mypy" --strict src/drover
  "$tc/mypy" --strict --python-executable "$tc/python" examples
  # No look-up of a newer pyright at run time.
  export PYRIGHT_PYTHON_IGNORE_WARNINGS=1
  echo "python sdk: $("$tc/pyright" --version) (strict): src/drover and examples" >&2
  "$tc/pyright" --pythonpath "$tc/python"
)

# install VENV: the wheel, as a user installs it (pip install drover-*.whl).
install() {
  pip_ "$1/bin/python" --force-reinstall --no-deps "$wheel"
  pip_ "$1/bin/python" "$wheel"
}
# The examples' own dependency, FastAPI, and an HTTP client for its
# TestClient: httpx where Python 3.9's Starlette wants it, httpx2 for the
# newest (which deprecates httpx).
cd "$here/tests"
# 4a. The oldest supported setup: Python 3.9 with the oldest grpcio and
# protobuf the package allows (every test but the 1,000-task leader kill).
if [ "${DROVER_PY_OLDEST:-1}" = 0 ]; then
  echo "python sdk: oldest-dependency run SKIPPED (DROVER_PY_OLDEST=0)" >&2
else
  py39=""
  for c in python3.9 "$(pyenv root 2>/dev/null || echo /nonexistent)"/versions/3.9*/bin/python3.9; do
    if "$c" --version >/dev/null 2>&1; then py39="$c"; break; fi
  done
  [ -n "$py39" ] || { echo "python sdk: no python3.9 on PATH; the oldest-dependency run uses $(python3 --version)" >&2; py39=python3; }
  [ -x "$venvs/oldest/bin/python" ] || "$py39" -m venv "$venvs/oldest"
  # OpenTelemetry (the trace test's producer, exporter and receiver): 1.24
  # is the last release that runs on protobuf 4.
  pip_ "$venvs/oldest/bin/python" "grpcio==1.62.3" "protobuf==4.25.3" pytest fastapi httpx \
    "opentelemetry-sdk==1.24.0" "opentelemetry-exporter-otlp-proto-grpc==1.24.0"
  install "$venvs/oldest"
  echo "python sdk: tests on $("$venvs/oldest/bin/python" --version), grpcio 1.62.3, protobuf 4.25.3" >&2
  "$venvs/oldest/bin/python" -m pytest -p no:cacheprovider -q -ra -k "not 1000_tasks" "$@"
fi
# 4b. The newest: a fresh venv on this machine's python3, with the newest
# grpcio and protobuf pip finds.
rm -rf "$venvs/test"
python3 -m venv "$venvs/test"
pip_ "$venvs/test/bin/python" "$wheel" pytest fastapi httpx2 opentelemetry-sdk opentelemetry-exporter-otlp-proto-grpc
echo "python sdk: tests on $("$venvs/test/bin/python" --version) with grpcio $("$venvs/test/bin/python" -c "import grpc; print(grpc.__version__)"), protobuf $("$venvs/test/bin/python" -c "import google.protobuf as p; print(p.__version__)") (a fresh venv)" >&2
"$venvs/test/bin/python" -m pytest -p no:cacheprovider -q -ra --durations=8 "$@"
