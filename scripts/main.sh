#!/usr/bin/env bash
# The main job: set up (busybox-static, iptables; Docker must be running), build `pazar`, and run
# `pazar demo`: an embedded devnet, a provider daemon on Docker, the demo image built locally,
# examples/demo/deploy.yaml deployed by a tenant and served over HTTP, the escrow paying every
# block, the provider withdrawing with the take, then everything closed and every token
# accounted for. Arguments go to `pazar demo` (e.g. --blocks 10). `pazar devnet` runs just the
# chain.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
cargo build --release --locked -p pazar
exec ./target/release/pazar demo "$@"
