#!/usr/bin/env bash
# Install what building drover needs, if it is missing: a C++ compiler and
# libclang (RocksDB and its bindgen bindings), and protoc (gRPC code
# generation). Debian/Ubuntu via apt; elsewhere it says what to install.
set -euo pipefail

missing=()
command -v protoc >/dev/null 2>&1 || missing+=(protobuf-compiler)
command -v g++ >/dev/null 2>&1 || missing+=(g++)
command -v make >/dev/null 2>&1 || missing+=(make)
# cluster/ scripts (the chaos suite): JSON parsing and stripping the binary.
command -v jq >/dev/null 2>&1 || missing+=(jq)
command -v objcopy >/dev/null 2>&1 || missing+=(binutils)
if ! ls /usr/lib/llvm-*/lib/libclang*.so* >/dev/null 2>&1 && ! ls /usr/lib/*/libclang*.so* >/dev/null 2>&1; then
  missing+=(libclang-dev)
fi
if ! command -v cargo >/dev/null 2>&1; then
  echo "drover: cargo is missing; install Rust from https://rustup.rs and run this again" >&2
  exit 1
fi
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
echo "drover: installing ${missing[*]}" >&2
if ! command -v apt-get >/dev/null 2>&1; then
  echo "drover: no apt-get here; install ${missing[*]} (or your system's equivalents) and run this again" >&2
  exit 1
fi
sudo=""
if [ "$(id -u)" != 0 ]; then
  sudo="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
