//! Any byte string a training worker serves as its update either fails to decode with an error,
//! or decodes to an update whose canonical encoding is exactly those bytes (so the hash a worker
//! committed names one update), whose dense vector has n finite entries, and whose mean alone is
//! that vector. Nothing panics and nothing allocates beyond what the bytes pay for.
#![no_main]

use libfuzzer_sys::fuzz_target;

// The codec needs only `sha2` and `thiserror`: compiling its file here fuzzes the exact code the
// workers run without building the training crate's server and client under instrumentation.
#[path = "../../crates/train/src/compress.rs"]
#[allow(dead_code)]
mod compress;

use compress::{average, Update, HEADER_BYTES};

/// The largest parameter count this target expands to a dense vector (the decoder itself never
/// allocates for n; an aggregator passes the model's own n).
const MAX_DENSE: u32 = 1 << 20;

fuzz_target!(|data: &[u8]| {
    // Expect the n the header claims, so the fuzzer reaches the payload checks; a different n
    // is refused before anything else is read.
    let claimed = match data.get(8..12) {
        Some(b) => u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
        None => 0,
    };
    let Ok(u) = Update::decode(data, claimed, 1 << 22) else {
        return;
    };
    assert!(data.len() >= HEADER_BYTES);
    assert_eq!(u.encode(), data, "decoding is canonical");
    assert_eq!(u.n(), claimed);
    assert!(u.k() <= u.n());
    assert!(u.indices().windows(2).all(|w| w[0] < w[1]));
    assert!(u.indices().iter().all(|&i| i < u.n()));
    if u.n() <= MAX_DENSE {
        let dense = u.decompress();
        assert_eq!(dense.len(), u.n() as usize);
        assert!(dense.iter().all(|x| x.is_finite()));
        let mean = average(std::slice::from_ref(&u), u.n()).expect("one update averages");
        // The mean of one update is its dense vector summed onto +0.0 (which turns -0.0 into
        // +0.0) and scaled by 1.
        assert!(mean
            .iter()
            .zip(&dense)
            .all(|(a, b)| a.to_bits() == ((0.0 + b) * 1.0f32).to_bits()));
    }
});
