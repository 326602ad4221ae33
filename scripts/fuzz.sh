#!/usr/bin/env bash
# Runs one fuzz target: scripts/fuzz.sh TARGET SECONDS. Installs cargo-fuzz when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
target="${1:-tx_decode}"
seconds="${2:-60}"
if ! command -v cargo-fuzz >/dev/null; then
    cargo install cargo-fuzz --locked --version 0.13.1
fi
export RUSTC_BOOTSTRAP=1
mkdir -p "fuzz/corpus/$target"
if [ "$target" = sdl_parse ]; then
    # Seed with real files and the invalid snapshots so the fuzzer starts from valid structure.
    for f in crates/sdl/tests/corpus/*.yaml crates/sdl/tests/invalid/*.yaml; do
        [ -f "$f" ] && cp -n "$f" "fuzz/corpus/$target/" 2>/dev/null || true
    done
fi
cargo fuzz run "$target" --fuzz-dir fuzz -- -max_total_time="$seconds" -rss_limit_mb=2048 "fuzz/corpus/$target"
