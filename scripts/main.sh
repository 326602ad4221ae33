#!/usr/bin/env bash
# The main job: build `pazar` and start the embedded single-validator devnet (keys and genesis
# are created on first run under $PAZAR_HOME, default ~/.pazar). Arguments go to `pazar devnet`,
# e.g. --rpc-listen 127.0.0.1:0 --block-time-ms 500 --reset. Ctrl-C stops it; running it again
# resumes from the last committed block.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked -p pazar
exec ./target/release/pazar devnet "$@"
