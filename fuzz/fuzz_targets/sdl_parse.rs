//! Any bytes given to the SDL parser give a valid deployment or a non-empty list of located
//! errors: never a panic, an overflow or unbounded memory (aliases are bounded). A valid result
//! has a version equal to the SHA-256 of its canonical manifest and groups the ledger accepts.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pazar_sdl::{parse, Options};
use pazar_types::Denom;
use sha2::{Digest, Sha256};

fuzz_target!(|data: &[u8]| {
    let opts = Options::new(
        Denom::new("upzr").expect("denom"),
        Denom::new("uusd").expect("denom"),
    );
    match parse(data, &opts) {
        Ok(d) => {
            let h: [u8; 32] = Sha256::digest(d.manifest.canonical_bytes()).into();
            assert_eq!(h, d.manifest_version);
            for (i, g) in d.groups.iter().enumerate() {
                assert!(g.validate(&format!("groups[{i}]")).is_ok());
            }
        }
        Err(errors) => {
            assert!(!errors.is_empty());
            assert!(errors.iter().all(|e| e.pos.line >= 1 && e.pos.col >= 1));
        }
    }
});
