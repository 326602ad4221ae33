//! `pazar sdl check` and `pazar deploy` with the real binary: summaries and located errors,
//! bounded reads of huge files, and a real deploy.yaml becoming a deployment on a devnet whose
//! version is the manifest's hash.

use crate::common;

use std::path::PathBuf;
use std::process::{Command, Stdio};

use serde_json::Value;

fn corpus(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../sdl/tests/corpus")
        .join(name)
}

fn invalid(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../sdl/tests/invalid")
        .join(name)
}

fn check(file: &std::path::Path, json: bool) -> std::process::Output {
    let mut c = Command::new(common::bin());
    c.args(["sdl", "check"]).arg(file);
    if json {
        c.args(["--output", "json"]);
    }
    c.stdin(Stdio::null()).output().expect("runs pazar")
}

#[test]
fn check_prints_a_json_summary_for_a_valid_gpu_file() {
    let out = check(&corpus("Llama-3-8B.yaml"), true);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["valid"], true);
    assert_eq!(v["services"], serde_json::json!(["vllm"]));
    assert_eq!(v["total_gpu_units"], 1);
    assert_eq!(v["groups"][0]["name"], "dcloud");
    assert_eq!(v["groups"][0]["resources"][0]["cpu_millis"], 6000);
    assert_eq!(v["price_per_block"][0]["denom"], "uusd");
    assert_eq!(v["manifest_version"].as_str().map(str::len), Some(64));
}

#[test]
fn check_exits_1_with_every_error_as_file_line_col_path_message() {
    let f = invalid("many-errors-at-once.yaml");
    let out = check(&f, false);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains(".yaml:") && !l.ends_with("error(s)"))
        .collect();
    assert_eq!(lines.len(), 4, "{stderr}");
    let prefix = format!("{}:15:18: profiles.compute.web.resources.cpu.units: ", f.display());
    assert!(lines[0].starts_with(&prefix), "{}", lines[0]);
    // JSON mode carries the same errors.
    let out = check(&f, true);
    assert_eq!(out.status.code(), Some(1));
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["valid"], false);
    assert_eq!(v["errors"].as_array().map(Vec::len), Some(4));
    assert_eq!(v["errors"][3]["path"], "deployment.web.dc.count");
    assert_eq!(v["errors"][3]["line"], 30);
}

#[test]
fn a_100_mb_file_is_refused_without_reading_it_whole() {
    let dir = tempfile::tempdir().expect("tempdir");
    let f = dir.path().join("huge.yaml");
    let file = std::fs::File::create(&f).expect("create");
    file.set_len(100 << 20).expect("sparse 100 MB");
    let out = check(&f, false);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(":1:1: file is 104857600 bytes; an SDL file may have at most"),
        "{stderr}"
    );
}

#[test]
fn deploy_creates_the_deployment_whose_version_is_the_manifest_hash() {
    let net = common::devnet(200);
    let file = corpus("Llama-3-8B.yaml");
    let expected = check(&file, true);
    let summary: Value = serde_json::from_slice(&expected.stdout).expect("json");

    let v = net.cli(&[
        "deploy",
        file.to_str().expect("utf8"),
        "--from",
        "alice",
        "--dseq",
        "42",
        "--create-only",
    ]);
    assert_eq!(v["tx"]["status"], "committed", "{v}");
    assert_eq!(v["tx"]["receipt"]["code"], 0, "{v}");
    assert_eq!(v["version"], summary["manifest_version"]);
    let alice = net.address("alice");

    let d = net.cli(&["query", "deployment", &format!("{alice}/42")]);
    assert_eq!(d["deployment"]["state"], "active", "{d}");
    assert_eq!(d["deployment"]["version"], summary["manifest_version"], "{d}");
    let orders = net.cli(&["query", "orders", "--owner", "alice", "--state", "open"]);
    let spec = &orders["orders"][0]["group"];
    assert_eq!(spec["name"], "dcloud", "{orders}");
    assert_eq!(spec["resources"][0]["resources"]["gpu"]["units"], 1);

    // The manifest is kept locally for the provider, and hashes to the version.
    let saved = v["manifest_file"].as_str().expect("path");
    let rec: Value = serde_json::from_slice(&std::fs::read(saved).expect("saved")).expect("json");
    assert_eq!(rec["version"], summary["manifest_version"]);
    let manifest: pazar_sdl::Manifest = serde_json::from_value(rec["manifest"].clone()).expect("manifest");
    assert_eq!(
        hex::encode(manifest.version()),
        summary["manifest_version"].as_str().expect("hex")
    );

    // A broken file creates nothing and says where it is broken.
    let out = net.cli_raw(
        &[
            "deploy",
            invalid("zero-count.yaml").to_str().expect("utf8"),
            "--from",
            "alice",
            "--dseq",
            "43",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("zero-count.yaml:30:14: deployment.web.dc.count"));
    let missing = net.cli_raw(&["query", "deployment", &format!("{alice}/43")], &[]);
    assert!(!missing.status.success());
}
