//! Snapshot tests of valid SDL files that carry warnings: each `tests/warnings/NAME.yaml` must
//! parse and yield exactly the warnings in `NAME.warnings` (`FILE:LINE:COL: path: message`, one
//! per line, all of them). An unknown field below the top level is one of them, at any depth:
//! ignored, as Akash's reader ignores it, and named with the field it most likely means.
//! `UPDATE_SNAPSHOTS=1 cargo test -p pazar-sdl --test it warnings::` rewrites the snapshots.

use crate::common;

use std::path::PathBuf;

use common::options;
use pazar_sdl::parse;

#[test]
fn files_with_warnings_parse_with_the_expected_warnings_and_positions() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/warnings");
    let update = std::env::var_os("UPDATE_SNAPSHOTS").is_some();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("tests/warnings")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 7, "only {} files with warnings", files.len());
    let mut mismatches = Vec::new();
    for f in &files {
        let name = f.file_name().expect("name").to_string_lossy().into_owned();
        let bytes = std::fs::read(f).expect("read");
        let got = match parse(&bytes, &options()) {
            Ok(d) => {
                assert!(!d.warnings.is_empty(), "{name}: a file here must have warnings");
                d.warnings.iter().map(|w| w.render(&name) + "\n").collect::<String>()
            }
            Err(errors) => {
                let lines: String = errors.iter().map(|e| e.render(&name) + "\n").collect();
                format!("{name}: unexpectedly invalid\n{lines}")
            }
        };
        let snap = f.with_extension("warnings");
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

#[test]
fn gpu_ram_in_whole_gib_is_written_as_providers_advertise_it() {
    let f = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/warnings/gpu-ram-not-in-whole-gib.yaml");
    let d = parse(&std::fs::read(f).expect("read"), &options()).expect("valid");
    let keys: Vec<String> = d
        .groups
        .iter()
        .flat_map(|g| g.resources.iter())
        .flat_map(|u| u.resources.gpu.attributes.iter().map(|a| a.key.clone()))
        .collect();
    assert!(
        keys.contains(&"vendor/nvidia/model/a100/ram/80Gi".to_string()),
        "{keys:?}"
    );
    assert!(
        keys.contains(&"vendor/nvidia/model/h100/ram/80G".to_string()),
        "{keys:?}"
    );
}
