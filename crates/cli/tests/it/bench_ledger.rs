//! Runs the real `pazar` binary: the ledger benchmark prints one JSON object with every field,
//! and every transaction of its blocks succeeds on both states.

use std::process::Command;

#[test]
fn bench_ledger_prints_json_with_every_field_and_no_failed_txs() {
    let out = Command::new(env!("CARGO_BIN_EXE_pazar"))
        .args(["bench", "ledger", "--leases", "3000", "--blocks", "2"])
        .output()
        .expect("pazar runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("stdout is one JSON object");
    for field in [
        "apply_tx_per_s",
        "ed25519_verify_per_s",
        "apply_ratio",
        "block_ms_10_leases",
        "block_ms_1m_leases",
        "settle_ratio",
        "block_ms_1m_allowances",
        "allowance_ratio",
    ] {
        let v = report[field]
            .as_f64()
            .unwrap_or_else(|| panic!("{field} missing in {report}"));
        assert!(v > 0.0, "{field} = {v}");
    }
    assert_eq!(report["failed_txs_small"], 0, "{report}");
    assert_eq!(report["failed_txs_large"], 0, "{report}");
    assert_eq!(report["failed_txs_allowances"], 0, "{report}");
    // One deployment in a thousand reaches its threshold in the measured blocks: 3 of 3,000.
    assert_eq!(report["top_ups_measured"], 3, "{report}");
    assert_eq!(report["open_leases_large_state"], 3010);
}

#[test]
fn bench_ledger_rejects_zero_blocks_with_a_clear_error() {
    let out = Command::new(env!("CARGO_BIN_EXE_pazar"))
        .args(["bench", "ledger", "--leases", "10", "--blocks", "0"])
        .output()
        .expect("pazar runs");
    // A bench prints JSON, its errors too: `{"error": {"code", "message"}}` on stdout, exit 1.
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("a JSON error");
    assert_eq!(v["error"]["code"], "invalid_input", "{v}");
    assert_eq!(v["error"]["message"], "--blocks must be at least 1", "{v}");
}
