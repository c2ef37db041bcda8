#!/usr/bin/env bash
# Install what building drover needs, if it is missing: a C++ compiler and
# libclang (RocksDB and its bindgen bindings), and protoc (gRPC code
# generation), plus jq and objcopy for the cluster/ scripts and faketime
# (libfaketime) for the wrong-clock tests.
#
# On Debian/Ubuntu every prerequisite is checked by package name with
# `dpkg-query`, never by a file glob: a loose glob once matched
# libclang-cpp.so.14 (a different library, from libclang-cpp14), skipped
# libclang-dev, and the RocksDB build then failed in clang-sys on a fresh
# machine. Elsewhere it checks for exactly the files the build loads and says
# what to install.
#
# With --tests it also installs what only the test command uses: chromium
# (headless, for the web console's browser test) and Python 3 with its venv
# module (the Python SDK's tests run in virtual environments).
#
#   scripts/prereqs.sh          install what is missing to build and run
#   scripts/prereqs.sh --tests  ... and to run the tests (scripts/test.sh)
#   scripts/prereqs.sh --check  only report; exit 1 if anything is missing
set -euo pipefail

check_only=0
tests=0
for arg in "$@"; do
  case "$arg" in
    --check) check_only=1 ;;
    --tests) tests=1 ;;
    *) echo "drover: unknown option $arg (use --tests or --check)" >&2; exit 2 ;;
  esac
done

if ! command -v cargo >/dev/null 2>&1; then
  echo "drover: cargo is missing; install Rust from https://rustup.rs and run this again" >&2
  exit 1
fi

missing=()
if command -v dpkg-query >/dev/null 2>&1; then
  installed() {
    [ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null || true)" = "install ok installed" ]
  }
  # libclang-dev provides the unversioned libclang.so that clang-sys loads.
  for pkg in libclang-dev protobuf-compiler g++ make jq binutils faketime; do
    installed "$pkg" || missing+=("$pkg")
  done
  if [ "$tests" = 1 ]; then
    installed chromium || missing+=(chromium)
    # python3 -m venv needs python3-venv (ensurepip) on Debian.
    for pkg in python3 python3-venv; do
      installed "$pkg" || missing+=("$pkg")
    done
  fi
else
  # Not Debian: look for exactly what the build uses.
  command -v protoc >/dev/null 2>&1 || missing+=("protoc (protobuf-compiler)")
  command -v g++ >/dev/null 2>&1 || missing+=("g++")
  command -v make >/dev/null 2>&1 || missing+=("make")
  command -v jq >/dev/null 2>&1 || missing+=("jq")
  command -v objcopy >/dev/null 2>&1 || missing+=("objcopy (binutils)")
  command -v faketime >/dev/null 2>&1 || missing+=("faketime (libfaketime)")
  if [ "$tests" = 1 ]; then
    command -v chromium >/dev/null 2>&1 || missing+=("chromium (headless, for the browser test)")
    python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || missing+=("python3 with venv and ensurepip")
  fi
  found_libclang=0
  for dir in ${LIBCLANG_PATH:-} /usr/lib /usr/lib64 /usr/local/lib /usr/lib/*-linux-gnu /usr/lib/llvm-*/lib /usr/lib/llvm/*/lib; do
    # The names clang-sys accepts: libclang.so or libclang-<version>.so.
    if [ -e "$dir/libclang.so" ] || compgen -G "$dir/libclang-[0-9]*.so" >/dev/null; then
      found_libclang=1
      break
    fi
  done
  [ "$found_libclang" = 1 ] || missing+=("libclang (the libclang.so development library)")
fi

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
if [ "$check_only" = 1 ]; then
  echo "drover: missing: ${missing[*]}" >&2
  exit 1
fi
echo "drover: installing ${missing[*]}" >&2
if ! command -v apt-get >/dev/null 2>&1 || ! command -v dpkg-query >/dev/null 2>&1; then
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
