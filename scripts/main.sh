#!/usr/bin/env bash
# The main job. Until the node and the end-to-end demo land, it builds the ledger and runs
# its benchmark, which prints one JSON object (see README.md).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked -p pazar
exec ./target/release/pazar bench ledger "$@"
