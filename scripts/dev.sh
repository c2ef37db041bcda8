#!/usr/bin/env bash
# Quick start: install prerequisites if missing, build drover (release), and
# start a local 3-node cluster on 127.0.0.1:7001-7003. Ctrl-C stops it;
# running this again resumes from .drover-dev/. Arguments go to `drover dev`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/prereqs.sh
cargo build --release --locked --bin drover
exec target/release/drover dev "$@"
