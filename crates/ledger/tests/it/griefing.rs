//! Griefing between market participants that breaks no token invariant (sybil bids that would
//! lock an order, strangers taking every depositor place, an auto-accept that never retried).

use crate::common;

use common::*;
use pazar_types::{Attribute, DeploymentId, KeyScheme, Msg, OrderId, Price, SigningKey};

fn order_of(tenant: &SigningKey, dseq: u64) -> OrderId {
    DeploymentId {
        owner: tenant.address(),
        dseq,
    }
    .group(1)
    .order(1)
}

fn bid(order: &OrderId, price: &str) -> Msg {
    Msg::CreateBid {
        order: order.clone(),
        price: Price {
            denom: uusd(),
            amount: dec(price),
        },
        deposit: coin(500_000, &upzr()),
    }
}

/// `max_bids_per_order` counts every bid ever placed (closed and expired included), and a
/// provider is whatever key sends `CreateProvider` with self-declared attributes. Twenty sybil
/// "providers" bid and close their bids at once: their deposits come straight back, they pay
/// only fees, and the order can never receive another bid until it times out (an hour by
/// default); the tenant then restarts the group and the attacker repeats.
#[test]
fn bids_withdrawn_at_once_do_not_use_up_an_order_s_places() {
    let tenant = key(KeyScheme::Ed25519, 1);
    let honest = key(KeyScheme::Ed25519, 2);
    let sybils: Vec<SigningKey> = (10..30).map(|i| key(KeyScheme::Ed25519, i)).collect();
    let mut all: Vec<&SigningKey> = sybils.iter().collect();
    all.push(&tenant);
    all.push(&honest);
    let mut chain = Chain::new(&all);
    chain.ok(&honest, vec![create_provider(vec![Attribute::new("region", "eu")])]);
    chain.ok(
        &tenant,
        vec![create_deployment(
            1,
            vec![group("web", "10", &uusd())],
            coin(1_000_000, &uusd()),
        )],
    );
    let o = order_of(&tenant, 1);
    let before: Vec<u128> = sybils.iter().map(|s| chain.bal(s, &upzr())).collect();
    for s in &sybils {
        // One transaction: register, bid, close the bid (deposit returned in the same tx).
        chain.ok(
            s,
            vec![
                create_provider(vec![]),
                bid(&o, "10"),
                Msg::CloseBid {
                    bid: o.bid(s.address()),
                },
            ],
        );
    }
    for (s, b) in sybils.iter().zip(before) {
        // Each sybil paid three message fees and nothing else.
        assert_eq!(b - chain.bal(s, &upzr()), 3 * FEE);
    }
    // The order is open, no bid on it is open, yet an honest provider cannot bid.
    assert_eq!(
        chain
            .state
            .bids_for_order(&o)
            .filter(|(_, b)| b.state == pazar_types::market::BidState::Open)
            .count(),
        0
    );
    let r = chain.tx(&honest, vec![bid(&o, "5")]);
    assert!(
        r.is_ok(),
        "honest provider locked out of an order that has no open bid: {}/{} {}",
        r.codespace,
        r.code,
        r.log
    );
}

/// Escrow accounts record at most 32 depositors, deposits are spent FIFO, and anyone may deposit
/// into anyone's deployment. Strangers may take 31 places, never the owner's: once the owner's
/// own deposit is spent it can still top up.
#[test]
fn strangers_cannot_take_the_owner_s_depositor_place() {
    let tenant = key(KeyScheme::Ed25519, 1);
    let provider = key(KeyScheme::Ed25519, 2);
    let strangers: Vec<SigningKey> = (40..72).map(|i| key(KeyScheme::Ed25519, i)).collect();
    let mut all: Vec<&SigningKey> = strangers.iter().collect();
    all.push(&tenant);
    all.push(&provider);
    let mut chain = Chain::new(&all);
    chain.ok(&provider, vec![create_provider(vec![])]);
    // Price 1,000/block, deposit 500,000: runway 500 blocks.
    chain.ok(
        &tenant,
        vec![create_deployment(
            1,
            vec![group("web", "1000", &uusd())],
            coin(500_000, &uusd()),
        )],
    );
    let o = order_of(&tenant, 1);
    let d = o.deployment();
    chain.ok(&provider, vec![bid(&o, "1000")]);
    chain.ok(
        &tenant,
        vec![Msg::CreateLease {
            bid: o.bid(provider.address()),
        }],
    );
    let leased_at = chain.state.height;
    // 32 strangers each deposit 20,000 (an attacker splitting 640,000 over 32 keys; the money
    // is not lost: it pays the lease, and whatever is left is refunded to them at close).
    for s in strangers.iter().take(31) {
        chain.ok(
            s,
            vec![Msg::DepositDeployment {
                id: d.clone(),
                amount: coin(20_000, &uusd()),
            }],
        );
    }
    // Run until the owner's 500,000 are spent (FIFO): the owner drops out of the list.
    chain.advance_to(leased_at + 500);
    chain.ok(
        &provider,
        vec![Msg::WithdrawLease {
            lease: o.bid(provider.address()),
        }],
    );
    let acct = chain.state.escrow_account(&d).expect("account");
    assert!(acct.deposits.iter().all(|x| x.depositor != tenant.address()));
    // The last place is the owner's: a 32nd stranger is refused.
    let r = chain.tx(
        &strangers[31],
        vec![Msg::DepositDeployment {
            id: d.clone(),
            amount: coin(1, &uusd()),
        }],
    );
    expect_err(&r, "escrow", 3);
    // The owner now wants to top up before the lease runs dry.
    let r = chain.tx(
        &tenant,
        vec![Msg::DepositDeployment {
            id: d.clone(),
            amount: coin(10_000_000, &uusd()),
        }],
    );
    assert!(
        r.is_ok(),
        "owner cannot top up their own deployment: {}/{} {}",
        r.codespace,
        r.code,
        r.log
    );
}

/// `due_auto_accepts` takes the order off the auto-accept index and commits that before
/// `auto_accept` runs; when the accept fails (escrow cannot pay one block at the best price) the
/// rollback keeps the order open but its index entry is gone for good. A tenant who tops up
/// right after never gets the auto-accept it asked for: the bids sit until they expire.
#[test]
fn a_failed_auto_accept_is_tried_again_after_the_tenant_tops_up() {
    let tenant = key(KeyScheme::Ed25519, 1);
    let provider = key(KeyScheme::Ed25519, 2);
    let mut chain = Chain::new(&[&tenant, &provider]);
    chain.ok(&provider, vec![create_provider(vec![])]);
    chain.ok(
        &tenant,
        vec![Msg::CreateDeployment {
            dseq: 1,
            version: [1; 32],
            groups: vec![group("web", "1000000", &uusd())],
            deposit: coin(500_000, &uusd()),
            auto_accept_after: Some(5),
        }],
    );
    let created = chain.state.height;
    let o = order_of(&tenant, 1);
    chain.ok(&provider, vec![bid(&o, "600000")]);
    chain.advance_to(created + 5); // auto-accept due: 600,000 > 500,000, refused
    assert!(chain.state.lease(&o.bid(provider.address())).is_none());
    chain.ok(
        &tenant,
        vec![Msg::DepositDeployment {
            id: o.deployment(),
            amount: coin(10_000_000, &uusd()),
        }],
    );
    chain.advance_to(created + 20);
    assert!(
        chain.state.lease(&o.bid(provider.address())).is_some(),
        "order open, bid open, escrow funded, auto-accept asked for: still no lease"
    );
}
