//! What a provider sends a tenant's snapshot store: chunk answers (binary frames) and volume
//! listings (JSON). Any byte string either fails to decode with an error or decodes to answers
//! whose encoding is exactly the input; a listing either fails to parse or its check answers
//! without panicking, and a listing that passes reads back the same from its own JSON.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pazar_api::provider::{ChunkFrames, VolumeSnapshot};

fuzz_target!(|data: &[u8]| {
    let Some((&asked, rest)) = data.split_first() else {
        return;
    };
    let asked = usize::from(asked % 8);
    if let Ok(answers) = ChunkFrames::decode(rest, asked) {
        assert_eq!(answers.len(), asked);
        let mut again = Vec::new();
        for a in &answers {
            ChunkFrames::push(&mut again, a);
        }
        assert_eq!(again, rest, "frames are canonical");
    }
    if let Ok(snap) = serde_json::from_slice::<VolumeSnapshot>(rest) {
        if snap.check(Some(1 << 30)).is_ok() {
            let text = serde_json::to_vec(&snap).expect("a listing encodes");
            let back: VolumeSnapshot = serde_json::from_slice(&text).expect("a checked listing reads back");
            assert_eq!(back, snap);
        }
    }
});
