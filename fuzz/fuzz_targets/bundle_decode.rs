//! Any byte string handed to `pazar model verify` as a model bundle either fails to read with an
//! error, or reads to a bundle whose encoding is exactly those bytes (one file, one bundle), and
//! then verifies or is refused with an error: nothing panics, and nothing allocates beyond what
//! the bytes pay for (the metadata and the weights are bounded by the file's length first).
#![no_main]

use libfuzzer_sys::fuzz_target;

use pazar_infer::bundle::{Anchor, Bundle, FinalityCheck};

/// Accepts every header: the target reaches every check after finality's.
struct AnyHeader;

impl FinalityCheck for AnyHeader {
    fn check(&self, _: &Anchor) -> Result<String, String> {
        Ok("fuzzing".into())
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(b) = Bundle::read_from(data, data.len() as u64) else {
        return;
    };
    let mut again = Vec::new();
    b.write_to(&mut again).expect("writing to memory");
    assert_eq!(again, data, "reading is canonical");
    let _ = b.verify(&AnyHeader);
});
