//! `--dry-run` and the simulation before every broadcast, against a real devnet: a dry run
//! changes nothing and costs no fee; a transaction the node says would fail is not broadcast.

use crate::common;

use pazar_api::node::{AccountInfo, SimulateResult};
use pazar_types::Address;

fn account(net: &common::Devnet, name: &str) -> AccountInfo {
    let a: Address = net.address(name).parse().expect("an address");
    net.rpc().account(&a, false).expect("the account").item
}

#[test]
fn a_dry_run_simulates_and_submits_nothing_and_a_failing_send_is_not_broadcast() {
    let net = common::devnet(100);
    let (alice0, bob0) = (account(&net, "alice"), account(&net, "bob"));

    // A dry-run send: the node's answer, with the transfer among its events; exit 0.
    let out = net.cli_raw(&["tx", "send", "bob", "1000upzr", "--from", "alice", "--dry-run"], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let sim: SimulateResult = serde_json::from_slice(&out.stdout).expect("a SimulateResult on stdout");
    assert!(sim.would_succeed && sim.admission.is_none(), "{sim:?}");
    assert_eq!(sim.receipt.code, 0);
    let events = serde_json::to_string(&sim.receipt.events).expect("JSON");
    assert!(events.contains("transfer"), "{events}");
    // Blocks pass; nothing was submitted, so no balance and no sequence moved.
    net.wait_height(net.height() + 2);
    assert!(
        !net.rpc().tx(&sim.hash).is_ok_and(|t| t.tx.is_some()),
        "the dry run was committed"
    );
    let (alice, bob) = (account(&net, "alice"), account(&net, "bob"));
    assert_eq!((alice.sequence, &alice.balances), (alice0.sequence, &alice0.balances));
    assert_eq!(bob.balances, bob0.balances);

    // A dry run of a send of more than the balance: exit 2 with the ledger's reason.
    let out = net.cli_raw(
        &[
            "tx",
            "send",
            "bob",
            "999999999999999999upzr",
            "--from",
            "alice",
            "--dry-run",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(2));
    let sim: SimulateResult = serde_json::from_slice(&out.stdout).expect("a SimulateResult on stdout");
    assert!(!sim.would_succeed, "{sim:?}");
    assert!(sim.receipt.log.contains("insufficient funds"), "{sim:?}");

    // Without --dry-run the same send is refused before it is broadcast: exit 2, the ledger's
    // reason, and the sender's sequence and balances did not move (no fee was charged).
    let out = net.cli_raw(&["tx", "send", "bob", "999999999999999999upzr", "--from", "alice"], &[]);
    assert_eq!(out.status.code(), Some(2));
    let e = common::cli_error(&out);
    assert_eq!(e.code, "tx_failed");
    assert!(
        e.message.contains("not broadcast") && e.message.contains("insufficient funds"),
        "{}",
        e.message
    );
    net.wait_height(net.height() + 2);
    let alice = account(&net, "alice");
    assert_eq!((alice.sequence, &alice.balances), (alice0.sequence, &alice0.balances));

    // A good send still goes through, simulated first.
    net.tx_ok(&["tx", "send", "bob", "1000upzr", "--from", "alice"]);
    assert_eq!(account(&net, "alice").sequence, alice0.sequence + 1);
}
