//! Runs the real `pazar` binary: the testnet benchmark (4 validator processes, then 1, and a
//! small simulation) prints one JSON object holding every measured field, each sane, and
//! nothing it did not measure. Small parameters; no timing is asserted. Its deployments run on
//! Docker, as the demo's do.

use std::process::Command;

use serde::Deserialize;

use crate::common::one_testnet_at_a_time;

/// What `pazar bench testnet` prints (the CLI's `TestnetBenchReport`); an unknown field, such
/// as a placeholder for a figure the bench does not measure, fails the parse.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Report {
    bench: String,
    block_time_ms: u64,
    txs: usize,
    senders: usize,
    committed_tx_per_s_4_validators: f64,
    commit_span_s_4_validators: f64,
    blocks_used_4_validators: usize,
    committed_tx_per_s_1_validator: f64,
    commit_span_s_1_validator: f64,
    blocks_used_1_validator: usize,
    finality_p50_ms: f64,
    finality_p90_ms: f64,
    finality_txs: usize,
    recovery_ms: f64,
    recovery_blocks_behind: u64,
    recovery_load_txs_accepted: usize,
    deploy_to_serving_p50_ms: f64,
    deploy_to_serving_max_ms: f64,
    deployments: usize,
    deploy_runtime: String,
    sim_100_validators_finality_p50_ms: u64,
    sim_median_rtt_ms: u64,
    sim_validators: usize,
    sim_heights: u64,
    sim_wall_s: f64,
}

#[test]
fn bench_testnet_prints_every_measured_field_and_no_placeholders() {
    // Four validator processes, then one, and the deployments' Docker workloads.
    let _one = one_testnet_at_a_time();
    let out = Command::new(env!("CARGO_BIN_EXE_pazar"))
        .args([
            "bench",
            "testnet",
            "--block-time-ms",
            "250",
            "--txs",
            "400",
            "--senders",
            "40",
            "--batch",
            "100",
            "--finality-txs",
            "4",
            "--recovery-blocks",
            "3",
            "--recovery-load-tx-per-s",
            "100",
            "--deployments",
            "1",
            "--runtime",
            "docker",
            "--sim-validators",
            "4",
            "--sim-heights",
            "4",
        ])
        .output()
        .expect("pazar runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let r: Report =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)));
    assert_eq!(
        (r.bench.as_str(), r.block_time_ms, r.txs, r.senders),
        ("testnet", 250, 400, 40)
    );
    for (name, v) in [
        ("committed_tx_per_s_4_validators", r.committed_tx_per_s_4_validators),
        ("committed_tx_per_s_1_validator", r.committed_tx_per_s_1_validator),
        ("commit_span_s_4_validators", r.commit_span_s_4_validators),
        ("commit_span_s_1_validator", r.commit_span_s_1_validator),
        ("finality_p50_ms", r.finality_p50_ms),
        ("recovery_ms", r.recovery_ms),
        ("deploy_to_serving_p50_ms", r.deploy_to_serving_p50_ms),
        ("sim_wall_s", r.sim_wall_s),
    ] {
        assert!(v.is_finite() && v > 0.0, "{name} = {v} in {r:?}");
    }
    assert!(r.finality_p90_ms >= r.finality_p50_ms, "{r:?}");
    assert_eq!(r.finality_txs, 4);
    assert!(
        r.blocks_used_4_validators >= 1 && r.blocks_used_1_validator >= 1,
        "{r:?}"
    );
    assert!(r.recovery_blocks_behind >= 3, "{r:?}");
    assert!(r.recovery_load_txs_accepted > 0, "{r:?}");
    assert_eq!((r.deployments, r.deploy_runtime.as_str()), (1, "docker"), "{r:?}");
    assert!(r.deploy_to_serving_max_ms >= r.deploy_to_serving_p50_ms, "{r:?}");
    assert_eq!((r.sim_validators, r.sim_heights), (4, 4), "{r:?}");
    // Simulated links are 50-200 ms one way: a round trip is 100-400 ms, and a block is final
    // no sooner than one hop after its proposal.
    assert!((100..=400).contains(&r.sim_median_rtt_ms), "{r:?}");
    assert!(r.sim_100_validators_finality_p50_ms >= 50, "{r:?}");
}

#[test]
fn bench_testnet_refuses_a_simulation_of_fewer_than_four_validators() {
    let out = Command::new(env!("CARGO_BIN_EXE_pazar"))
        .args(["bench", "testnet", "--sim-validators", "3"])
        .output()
        .expect("pazar runs");
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("a JSON error");
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("--sim-validators")),
        "{v}"
    );
}

#[test]
fn bench_testnet_rejects_zero_transactions_with_a_clear_error() {
    let out = Command::new(env!("CARGO_BIN_EXE_pazar"))
        .args(["bench", "testnet", "--txs", "0"])
        .output()
        .expect("pazar runs");
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("a JSON error");
    assert!(
        v["error"]["message"].as_str().is_some_and(|m| m.contains("--txs")),
        "{v}"
    );
}
