//! Every real deploy.yaml of the vendored corpus (crates/sdl/tests/corpus, taken from awesome-akash, Apache-2.0)
//! parses and validates, and yields groups the ledger accepts.

use std::path::PathBuf;

use pazar_sdl::{parse, Options};
use pazar_types::Denom;

fn corpus_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/corpus")
}

fn options() -> Options {
    Options::new(Denom::new("upzr").expect("denom"), Denom::new("uusd").expect("denom"))
}

#[test]
fn every_corpus_file_passes() {
    let dir = corpus_dir();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("corpus {} unreadable: {e}", dir.display()))
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .collect();
    files.sort();
    assert!(files.len() >= 200, "corpus has only {} files", files.len());
    let mut failures = Vec::new();
    for f in &files {
        let bytes = std::fs::read(f).expect("read");
        let name = f.file_name().expect("name").to_string_lossy().into_owned();
        match parse(&bytes, &options()) {
            Ok(d) => {
                assert!(!d.groups.is_empty(), "{name}: no groups");
                assert_eq!(d.manifest.groups.len(), d.groups.len(), "{name}");
            }
            Err(errors) => {
                for e in errors {
                    failures.push(e.render(&name));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} errors:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
