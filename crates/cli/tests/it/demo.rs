//! `pazar demo`, the main job, runs start to finish on this machine: devnet, provider daemon,
//! locally built image, a real SDL deployed and served, escrow paying, withdrawal with the take,
//! close, and balances whose changes sum to zero.

use crate::common;

use std::process::Command;

#[test]
fn the_demo_runs_end_to_end_and_accounts_for_every_token() {
    demo("docker", "docker runtime");
}

#[test]
fn the_demo_runs_end_to_end_on_the_sandbox_runtime() {
    demo("sandbox", "sandbox runtime");
}

fn demo(runtime: &str, says: &str) {
    let home = tempfile::tempdir().expect("tempdir");
    let out = Command::new(common::bin())
        .args([
            "demo",
            "--blocks",
            "3",
            "--block-time-ms",
            "250",
            "--runtime",
            runtime,
            "--home",
        ])
        .arg(home.path())
        .output()
        .expect("runs pazar demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "demo failed:\n{stdout}\n{}\nprovider log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        std::fs::read_to_string(home.path().join("provider.log")).unwrap_or_default()
    );
    for step in [
        says,
        "[8/8]",
        "HTTP/1.1 200 OK",
        "Hello from a Pazar lease",
        ".ingress.localhost:",
        "through the ingress",
        "serving on :8080",
        "take to the fee pool",
        "Σ changes in uusd: 0",
        "Every token is accounted for",
    ] {
        assert!(stdout.contains(step), "missing {step:?} in:\n{stdout}");
    }
}
