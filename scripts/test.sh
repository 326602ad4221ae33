#!/usr/bin/env bash
# Sets up and runs every test on a fresh machine: formatting, lints (warnings fail), unit,
# property and end-to-end tests, and a short fuzz smoke run of every fuzz target.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null; then
    echo "cargo is required (rustup toolchain)" >&2
    exit 1
fi
rustup component list --installed 2>/dev/null | grep -q clippy || rustup component add clippy rustfmt || true
./scripts/setup.sh

# One build, so incremental state is only disk spent (CI machines have little to spare).
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"

# The Python clients the local-inference tests drive (llama.cpp's binding, built from source, and
# the official OpenAI client): built in the background while Rust compiles (the C++ build keeps
# the cores busy where cargo's link steps leave one idle), awaited before the tests run.
mkdir -p target
(./scripts/llama_cpp.sh && ./scripts/openai_venv.sh) >target/python-clients.log 2>&1 &
python_clients=$!

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked --tests --no-run
if ! wait "$python_clients"; then
    cat target/python-clients.log >&2
    echo "installing the Python clients of the inference tests failed" >&2
    exit 1
fi
cargo test --workspace --locked --tests

# Fuzz smoke: every decoder and parser that takes another party's bytes (transactions, the
# node's request bodies, SDL files, the provider's manifests, validators' gossip batches,
# training workers' update blobs, model bundles, providers' snapshot answers) for FUZZ_SECONDS each (default 10: eight targets, and CI's whole
# run must stay under 30 minutes). scripts/fuzz.sh builds them with stable flags (no cargo-fuzz
# to install, no sanitizer), so 10 s is half a million inputs or more for most targets; longer
# runs are `scripts/fuzz.sh TARGET SECONDS`.
if [ "${PAZAR_SKIP_FUZZ:-0}" != "1" ]; then
    # The fuzz build has its own target directory; on CI the test build is dropped first so
    # the two never need the disk at once.
    if [ "${PAZAR_FREE_DISK_BEFORE_FUZZ:-0}" = "1" ]; then
        rm -rf target/debug
    fi
    for target in tx_decode rpc_request sdl_parse manifest_decode gossip_batch update_decode bundle_decode snapshot_decode; do
        ./scripts/fuzz.sh "$target" "${FUZZ_SECONDS:-10}"
    done
fi
