//! Runway on the real binaries: a devnet node process and the `pazar` CLI. A deployment whose
//! first deposit pays about 20 blocks runs for three times as long with no tenant command,
//! topped up by the ledger under the allowance `pazar deployment policy` granted; the escrow
//! queries show the runway in blocks and as wall time, and the policy with what is left of it.

use crate::common;

use common::amount;

#[test]
fn an_allowance_keeps_a_lease_paid_past_its_first_deposit_with_no_tenant_command() {
    let net = common::devnet(200);
    let alice = net.address("alice");
    let provider = net.address("provider");
    net.tx_ok(&[
        "tx",
        "provider",
        "create",
        "--from",
        "provider",
        "--host-uri",
        "https://p.example:8443",
    ]);
    let groups = super::devnet::groups_file_priced(net.home.path(), 50_000);
    // 500,000 uusd at 25,000 a block: 20 blocks (4 s at 200 ms); dry in the 21st.
    net.tx_ok(&[
        "tx",
        "deployment",
        "create",
        "--from",
        "alice",
        "--dseq",
        "9",
        "--groups",
        groups.to_str().expect("utf8"),
        "--deposit",
        "500000uusd",
    ]);
    let order = format!("{alice}/9/1/1");
    net.tx_ok(&[
        "tx",
        "bid",
        "create",
        &order,
        "--from",
        "provider",
        "--price",
        "25000uusd",
        "--deposit",
        "500000uusd",
    ]);
    // The policy: alert at 5 blocks, top up to 30 blocks, at most 4,000,000 in all. A target not
    // above the alert is refused before anything is signed.
    let out = net.cli_raw(
        &[
            "deployment",
            "policy",
            "9",
            "--alert-blocks",
            "30",
            "--allowance",
            "1uusd",
            "--target-blocks",
            "30",
            "--from",
            "alice",
        ],
        &[],
    );
    let e = common::cli_error(&out);
    assert!(e.message.contains("target_blocks"), "{e:?}");
    net.tx_ok(&[
        "deployment",
        "policy",
        "9",
        "--alert-blocks",
        "5",
        "--allowance",
        "4000000uusd",
        "--target-blocks",
        "30",
        "--from",
        "alice",
    ]);
    let lease = format!("{order}/{provider}");
    let (created, _) = net.tx_ok(&["tx", "lease", "create", &lease, "--from", "alice"]);

    let e = net.cli(&["query", "escrow", "9", "--from", "alice"]);
    let runway = e["view"]["runway_blocks"].as_u64().expect("runway in blocks");
    assert!(runway <= 21, "{e}");
    let ms = e["view"]["runway_ms"].as_u64().expect("runway as wall time");
    // At the devnet's recent block time (200 ms a block, give or take the node's pace).
    assert!(
        ms >= runway * 100 && ms <= runway * 1_000,
        "{runway} blocks as {ms} ms: {e}"
    );
    assert_eq!(e["view"]["policy"]["low_blocks"], 5, "{e}");

    // Three times what the first deposit pays, with no tenant command.
    net.wait_height(created + 60);
    let l = net.cli(&["query", "lease", &lease]);
    assert_eq!(l["lease"]["state"], "active", "{l}");
    let e = net.cli(&["query", "escrow", "9", "--from", "alice"]);
    let spent = amount(&e["view"]["policy"]["top_up"]["spent"]);
    let deposited = amount(&e["account"]["deposited"]);
    assert!(spent > 0, "{e}");
    assert_eq!(
        deposited,
        500_000 + spent,
        "every deposit after the first was a top-up: {e}"
    );
    assert_eq!(
        amount(&e["view"]["policy"]["top_up"]["remaining"]),
        4_000_000 - spent,
        "{e}"
    );
    // The provider was paid for more blocks than the first deposit covers.
    let received = amount(&l["payment"]["received"]) + amount(&e["view"]["accrued"]);
    assert!(received > 500_000, "received {received}: {l}");

    // Revoked: the lease goes into grace once the escrow runs dry, and nothing more is taken.
    net.tx_ok(&["deployment", "policy", "9", "--clear", "--from", "alice"]);
    let e = net.cli(&["query", "escrow", "9", "--from", "alice"]);
    assert!(e["view"].get("policy").is_none(), "{e}");
    let dry = e["view"]["depletes_at"].as_u64().expect("a paying escrow runs dry");
    net.wait_height(dry + 1);
    let l = net.cli(&["query", "lease", &lease]);
    assert_eq!(l["lease"]["state"], "grace", "{l}");
    let until = l["lease"]["grace_until"].as_u64().expect("grace end");
    assert!(until > dry, "{l}");
    let e = net.cli(&["query", "escrow", "9", "--from", "alice"]);
    assert_eq!(amount(&e["account"]["deposited"]), deposited, "{e}");
}
