#!/usr/bin/env bash
# Regenerate the gRPC stubs in src/drover/v1 from proto/drover.proto, with
# the oldest grpcio-tools the package supports (the generated code then runs
# on every grpcio/protobuf runtime from that one on).
#   gen_stubs.sh PYTHON OUT_DIR   (PYTHON has grpcio-tools==1.62.3)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
py="$1"; out="$2"
src="$(mktemp -d)"; trap 'rm -rf "$src"' EXIT
mkdir -p "$src/drover/v1" "$out/drover/v1"
cp "$here/../../proto/drover.proto" "$src/drover/v1/drover.proto"
"$py" -m grpc_tools.protoc -I "$src" --python_out="$out" --pyi_out="$out" --grpc_python_out="$out" "$src/drover/v1/drover.proto"
