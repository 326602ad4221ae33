//! Any byte string a peer validator sends on the gossip channel either fails to decode as a
//! batch with an error, or decodes to a batch within the bounds whose encoding is exactly those
//! bytes (decoding is canonical). Nothing panics.
#![no_main]

use libfuzzer_sys::fuzz_target;

// The codec depends on nothing but `std` and `pazar_types`; compiling its file here fuzzes the
// exact code the validators run without building the consensus engine under instrumentation.
#[path = "../../crates/consensus/src/gossip/batch.rs"]
#[allow(dead_code)]
mod batch;

use batch::{Batch, MAX_BATCH_BYTES, MAX_BATCH_TXS};

fuzz_target!(|data: &[u8]| {
    let Ok(b) = Batch::decode(data) else {
        return;
    };
    assert!(!b.is_empty() && b.len() <= MAX_BATCH_TXS);
    assert!(b.txs().iter().map(Vec::len).sum::<usize>() <= MAX_BATCH_BYTES);
    assert_eq!(b.encode(), data, "decoding is canonical");
});
