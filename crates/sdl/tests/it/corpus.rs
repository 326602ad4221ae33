//! Every real deploy.yaml of the vendored corpus (crates/sdl/tests/corpus, taken from awesome-akash, Apache-2.0)
//! parses and validates, and yields groups the ledger accepts.

use std::path::PathBuf;

use crate::common;

use common::{options, with_pazar_auditor};
use pazar_sdl::parse;

fn corpus_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/corpus")
}

/// The message of an Akash auditor that would be the only audit requirement left.
const AKASH_AUDITOR_REFUSED: &str = "an Akash auditor has no Pazar identity, so no provider could ever satisfy";

/// Every file passes, except that an Akash auditor (`akash1…`) standing alone in `signedBy` is
/// refused with its reason, never dropped; naming a Pazar auditor in its place is all it takes.
#[test]
fn every_corpus_file_passes_once_its_akash_auditor_is_a_pazar_one() {
    let dir = corpus_dir();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("corpus {} unreadable: {e}", dir.display()))
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .collect();
    files.sort();
    assert!(files.len() >= 200, "corpus has only {} files", files.len());
    let mut failures = Vec::new();
    let mut audited = 0;
    for f in &files {
        let text = std::fs::read_to_string(f).expect("read");
        let name = f.file_name().expect("name").to_string_lossy().into_owned();
        if let Err(errors) = parse(text.as_bytes(), &options()) {
            if errors.iter().all(|e| e.message.starts_with(AKASH_AUDITOR_REFUSED)) {
                audited += 1;
            } else {
                failures.extend(errors.iter().map(|e| e.render(&name)));
                continue;
            }
        }
        // Unchanged, with the tenant's consent to unaudited providers: Akash users' files deploy as
        // they are, the dropped auditor named in a warning.
        let consent = pazar_sdl::Options {
            accept_unaudited: true,
            ..options()
        };
        match parse(text.as_bytes(), &consent) {
            Ok(d) if text.contains("akash1") => {
                assert!(
                    d.warnings.iter().any(|w| w.message.contains("--accept-unaudited")),
                    "{name}: an Akash auditor was dropped without a word"
                );
            }
            Ok(_) => {}
            Err(errors) => failures.extend(errors.iter().map(|e| e.render(&name))),
        }
        match parse(with_pazar_auditor(&text).as_bytes(), &options()) {
            Ok(d) => {
                assert!(!d.groups.is_empty(), "{name}: no groups");
                assert_eq!(d.manifest.groups.len(), d.groups.len(), "{name}");
                // The audit requirement reached the ledger's group, not dropped on the way.
                if text.contains("akash1") && d.groups.len() == 1 {
                    let sb = &d.groups[0].requirements.signed_by;
                    assert!(!sb.any_of.is_empty() || !sb.all_of.is_empty(), "{name}: auditors lost");
                }
            }
            Err(errors) => failures.extend(errors.iter().map(|e| e.render(&name))),
        }
    }
    assert!(
        failures.is_empty(),
        "{} errors:\n{}",
        failures.len(),
        failures.join("\n")
    );
    // Most awesome-akash files name Akash's auditor: the refusal is real, not hypothetical.
    assert!(audited >= 100, "only {audited} files were refused for an Akash auditor");
}
