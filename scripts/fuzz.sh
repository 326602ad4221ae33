#!/usr/bin/env bash
# Runs one fuzz target with libFuzzer: scripts/fuzz.sh TARGET SECONDS.
#
# No cargo-fuzz to install: this builds every target of fuzz/ the way `cargo fuzz build
# --sanitizer none` does (release, debug assertions and overflow checks on, libFuzzer's
# coverage instrumentation, `--cfg fuzzing`), with stable flags only, for the host triple so that
# build scripts and proc macros stay uninstrumented. The first call builds all targets; the next
# ones find them built. AddressSanitizer is left out: the decoders are safe Rust, and without it
# the build and each execution are several times faster.
set -euo pipefail
cd "$(dirname "$0")/.."
target="${1:-tx_decode}"
seconds="${2:-60}"
host="$(rustc -vV | sed -n 's/^host: //p')"
export RUSTFLAGS="--cfg fuzzing -Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares -Cdebug-assertions -Coverflow-checks"
export CARGO_PROFILE_RELEASE_DEBUG=line-tables-only
cargo build --manifest-path fuzz/Cargo.toml --locked --release --bins --target "$host" \
    --target-dir fuzz/target
mkdir -p "fuzz/corpus/$target" "fuzz/artifacts/$target"
if [ "$target" = sdl_parse ]; then
    # Seed with real files and the invalid snapshots so the fuzzer starts from valid structure.
    for f in crates/sdl/tests/corpus/*.yaml crates/sdl/tests/invalid/*.yaml; do
        [ -f "$f" ] && cp -n "$f" "fuzz/corpus/$target/" 2>/dev/null || true
    done
fi
"fuzz/target/$host/release/$target" -artifact_prefix="fuzz/artifacts/$target/" \
    -max_total_time="$seconds" -rss_limit_mb=2048 "fuzz/corpus/$target"
