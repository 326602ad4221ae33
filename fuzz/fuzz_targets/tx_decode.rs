//! Any byte string either fails to decode with an error or decodes to a transaction whose
//! canonical encoding is exactly those bytes; signature checks never panic either.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(tx) = pazar_types::Tx::decode(data) {
        assert_eq!(tx.encode(), data, "decoding is canonical");
        let _ = tx.verify_signature();
        let _ = tx.body.readable(&tx.body.sign_digest());
    }
});
