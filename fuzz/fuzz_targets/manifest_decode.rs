//! Any byte string either fails to decode as a manifest with an error, or decodes to a valid
//! manifest whose canonical encoding decodes again to the same manifest (so the version a
//! provider computes is stable); a valid manifest's groups are valid on their own, read back
//! from their JSON as a restarted provider does. Nothing panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pazar_api::manifest::{ValidGroup, ValidManifest};

fuzz_target!(|data: &[u8]| {
    let Ok(m) = ValidManifest::decode(data) else {
        return;
    };
    let canonical = m.canonical_bytes();
    let again = ValidManifest::decode(&canonical).expect("a valid manifest's canonical bytes decode");
    assert_eq!(again, m, "decoding is stable");
    assert_eq!(again.version(), m.version());
    for g in &m.groups {
        let valid = m.group(&g.name).expect("every group of a valid manifest is valid");
        let text = serde_json::to_vec(&valid).expect("a group encodes");
        let back: ValidGroup = serde_json::from_slice(&text).expect("a valid group reads back");
        assert_eq!(back, valid);
    }
});
