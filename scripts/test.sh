#!/usr/bin/env bash
# Sets up and runs every test on a fresh machine: formatting, lints (warnings fail), unit,
# property and end-to-end tests, and a short fuzz smoke run when cargo-fuzz can be installed.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null; then
    echo "cargo is required (rustup toolchain)" >&2
    exit 1
fi
rustup component list --installed 2>/dev/null | grep -q clippy || rustup component add clippy rustfmt || true
./scripts/setup.sh

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked

# Fuzz smoke: the transaction decoder and the SDL parser for FUZZ_SECONDS each (default 60).
# cargo-fuzz needs nightly flags; RUSTC_BOOTSTRAP lets the pinned stable toolchain accept them.
if [ "${PAZAR_SKIP_FUZZ:-0}" != "1" ]; then
    ./scripts/fuzz.sh tx_decode "${FUZZ_SECONDS:-60}"
    ./scripts/fuzz.sh sdl_parse "${FUZZ_SECONDS:-60}"
fi
