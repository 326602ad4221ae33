//! Snapshot tests of invalid SDL files: each `tests/invalid/NAME.yaml` must fail with exactly
//! the errors in `NAME.errors` (`FILE:LINE:COL: path: message`, one per line, all of them).
//! `UPDATE_SNAPSHOTS=1 cargo test -p pazar-sdl --test it invalid::` rewrites the snapshots.

use std::path::PathBuf;

use pazar_sdl::{parse, Options};
use pazar_types::Denom;

fn options() -> Options {
    Options::new(Denom::new("upzr").expect("denom"), Denom::new("uusd").expect("denom"))
}

#[test]
fn invalid_files_fail_with_the_expected_errors_and_positions() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/invalid");
    let update = std::env::var_os("UPDATE_SNAPSHOTS").is_some();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("tests/invalid")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 30, "only {} invalid files", files.len());
    let mut mismatches = Vec::new();
    for f in &files {
        let name = f.file_name().expect("name").to_string_lossy().into_owned();
        let bytes = std::fs::read(f).expect("read");
        let got = match parse(&bytes, &options()) {
            Ok(_) => format!("{name}: unexpectedly valid\n"),
            Err(errors) => {
                assert!(!errors.is_empty(), "{name}: an error list must not be empty");
                errors.iter().map(|e| e.render(&name) + "\n").collect::<String>()
            }
        };
        let snap = f.with_extension("errors");
        if update {
            std::fs::write(&snap, &got).expect("write snapshot");
            continue;
        }
        let want = std::fs::read_to_string(&snap).unwrap_or_else(|_| format!("(no snapshot {})\n", snap.display()));
        if got != want {
            mismatches.push(format!("--- {name}\nwant:\n{want}got:\n{got}"));
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}
