//! One test per ledger rule, each named after the behaviour it proves.

use crate::common;

use common::*;
use pazar_ledger::{BlockError, BlockHeader};
use pazar_types::market::{BidState, GroupState, LeaseCloseReason, LeaseState, OrderState, SignedBy};
use pazar_types::{Attribute, Event, KeyScheme, Msg, OrderId, Price, SigningKey, TxBody};

struct Market {
    chain: Chain,
    tenant: SigningKey,
    provider: SigningKey,
    provider2: SigningKey,
    stranger: SigningKey,
}

fn market() -> Market {
    let tenant = key(KeyScheme::Ed25519, 1);
    let provider = key(KeyScheme::Ed25519, 2);
    let provider2 = key(KeyScheme::Eth, 3);
    let stranger = key(KeyScheme::Ed25519, 4);
    let mut chain = Chain::new(&[&tenant, &provider, &provider2, &stranger]);
    chain.ok(&provider, vec![create_provider(vec![Attribute::new("region", "eu")])]);
    chain.ok(&provider2, vec![create_provider(vec![Attribute::new("region", "us")])]);
    Market {
        chain,
        tenant,
        provider,
        provider2,
        stranger,
    }
}

fn order1(m: &Market, dseq: u64) -> OrderId {
    pazar_types::DeploymentId {
        owner: m.tenant.address(),
        dseq,
    }
    .group(1)
    .order(1)
}

fn bid(order: &OrderId, price: &str, denom: &pazar_types::Denom) -> Msg {
    Msg::CreateBid {
        order: order.clone(),
        price: Price {
            denom: denom.clone(),
            amount: dec(price),
        },
        deposit: coin(500_000, &upzr()),
    }
}

/// A deployment in uusd at max 100,000/block with a lease from `provider` at `price`.
fn leased(m: &mut Market, price: &str, deposit: u128) -> OrderId {
    let t = m.tenant.clone();
    m.chain.ok(
        &t,
        vec![create_deployment(
            1,
            vec![group("web", "100000", &uusd())],
            coin(deposit, &uusd()),
        )],
    );
    let o = order1(m, 1);
    let p = m.provider.clone();
    m.chain.ok(&p, vec![bid(&o, price, &uusd())]);
    m.chain.ok(
        &t,
        vec![Msg::CreateLease {
            bid: o.bid(p.address()),
        }],
    );
    o
}

#[test]
fn send_moves_coins_and_charges_the_fee() {
    let mut m = market();
    let (t, s) = (m.tenant.clone(), m.stranger.clone());
    let before = m.chain.bal(&t, &upzr());
    let r = m.chain.ok(
        &t,
        vec![Msg::Send {
            to: s.address(),
            amount: coin(5_000, &upzr()),
        }],
    );
    assert_eq!(m.chain.bal(&t, &upzr()), before - 5_000 - FEE);
    assert_eq!(m.chain.bal(&s, &upzr()), 1_000_000_000 + 5_000);
    assert!(r.events.contains(&Event::Transfer {
        from: t.address(),
        to: s.address(),
        amount: coin(5_000, &upzr())
    }));
    assert_eq!(m.chain.state.balance(&m.chain.state.fee_pool(), &upzr()), 3 * FEE);
}

#[test]
fn failed_message_pays_fee_and_uses_sequence_but_changes_nothing_else() {
    let mut m = market();
    let t = m.tenant.clone();
    let before = m.chain.bal(&t, &uusd());
    let r = m.chain.tx(
        &t,
        vec![
            Msg::Send {
                to: m.stranger.address(),
                amount: coin(10, &uusd()),
            },
            Msg::Send {
                to: m.stranger.address(),
                amount: coin(u128::MAX, &uusd()),
            },
        ],
    );
    expect_err(&r, "bank", 2);
    assert_eq!(r.fee, Some(coin(2 * FEE, &upzr())));
    assert_eq!(m.chain.bal(&t, &uusd()), before, "first send rolled back");
    assert_eq!(m.chain.state.account(&t.address()).sequence, 1);
    // The next sequence works.
    m.chain.ok(
        &t,
        vec![Msg::Send {
            to: m.stranger.address(),
            amount: coin(1, &uusd()),
        }],
    );
}

#[test]
fn replayed_transaction_is_refused_without_fee() {
    let mut m = market();
    let t = m.tenant.clone();
    let bytes = m.chain.sign(
        &t,
        vec![Msg::Send {
            to: m.stranger.address(),
            amount: coin(1, &upzr()),
        }],
    );
    let first = m.chain.block(vec![bytes.clone()]);
    assert!(first.receipts[0].is_ok());
    let bal = m.chain.bal(&t, &upzr());
    let again = m.chain.block(vec![bytes]);
    expect_err(&again.receipts[0], "auth", 4);
    assert_eq!(again.receipts[0].fee, None);
    assert_eq!(m.chain.bal(&t, &upzr()), bal);
}

#[test]
fn wrong_chain_id_is_refused() {
    let mut m = market();
    let t = m.tenant.clone();
    let body = TxBody {
        chain_id: "other-chain".into(),
        sender: t.address(),
        sequence: 0,
        fee: coin(FEE, &upzr()),
        msgs: vec![Msg::Send {
            to: m.stranger.address(),
            amount: coin(1, &upzr()),
        }],
        memo: String::new(),
    };
    let out = m.chain.block(vec![body.sign(&t).encode()]);
    expect_err(&out.receipts[0], "auth", 2);
}

#[test]
fn forged_signature_is_refused_for_both_key_schemes() {
    for scheme in [KeyScheme::Ed25519, KeyScheme::Eth] {
        let mut m = market();
        let victim = m.tenant.clone();
        let thief = key(scheme, 9);
        // The thief signs a body that claims to come from the victim.
        let body = TxBody {
            chain_id: CHAIN.into(),
            sender: victim.address(),
            sequence: 0,
            fee: coin(FEE, &upzr()),
            msgs: vec![Msg::Send {
                to: thief.address(),
                amount: coin(1_000, &upzr()),
            }],
            memo: String::new(),
        };
        let out = m.chain.block(vec![body.clone().sign(&thief).encode()]);
        expect_err(&out.receipts[0], "auth", 3);
        // A valid signature over different bytes (tampered after signing) fails too.
        let mut tx = body.sign(&victim);
        tx.body.msgs = vec![Msg::Send {
            to: thief.address(),
            amount: coin(2_000, &upzr()),
        }];
        let out = m.chain.block(vec![tx.encode()]);
        expect_err(&out.receipts[0], "auth", 3);
        assert_eq!(m.chain.bal(&thief, &upzr()), 0);
    }
}

#[test]
fn one_bad_signature_in_a_batch_fails_only_its_transaction() {
    let mut m = market();
    let (t, s) = (m.tenant.clone(), m.stranger.clone());
    let good1 = m.chain.sign(
        &t,
        vec![Msg::Send {
            to: s.address(),
            amount: coin(1, &upzr()),
        }],
    );
    let mut bad = pazar_types::Tx::decode(&m.chain.sign(
        &s,
        vec![Msg::Send {
            to: t.address(),
            amount: coin(1, &upzr()),
        }],
    ))
    .expect("valid");
    if let pazar_types::TxSignature::Ed25519 { sig, .. } = &mut bad.signature {
        sig[10] ^= 1;
    }
    let good2 = m.chain.sign(
        &t,
        vec![Msg::Send {
            to: s.address(),
            amount: coin(2, &upzr()),
        }],
    );
    let out = m.chain.block(vec![good1, bad.encode(), good2]);
    assert!(out.receipts[0].is_ok());
    expect_err(&out.receipts[1], "auth", 3);
    assert!(out.receipts[2].is_ok());
}

#[test]
fn eth_account_signs_with_personal_sign_and_transacts() {
    let mut m = market();
    let p2 = m.provider2.clone();
    assert!(p2.address().is_eth());
    let r = m.chain.ok(
        &p2,
        vec![Msg::Send {
            to: m.tenant.address(),
            amount: coin(7, &uusd()),
        }],
    );
    assert!(r.is_ok());
    let tx = pazar_types::Tx::decode(&m.chain.blocks.last().expect("block").1[0]).expect("valid");
    let text = tx.body.readable(&tx.body.sign_digest());
    assert!(text.starts_with("Pazar transaction\nchain: pazar-test-1\n"), "{text}");
    assert!(text.contains("\"type\": \"send\""), "{text}");
}

#[test]
fn garbage_and_truncated_bytes_get_decode_errors() {
    let mut m = market();
    let t = m.tenant.clone();
    let good = m.chain.sign(
        &t,
        vec![Msg::Send {
            to: m.stranger.address(),
            amount: coin(1, &upzr()),
        }],
    );
    let mut trailing = good.clone();
    trailing.push(0);
    let out = m.chain.block(vec![
        vec![0xff; 10],
        good[..good.len() - 1].to_vec(),
        trailing,
        vec![0; 70_000],
    ]);
    for r in &out.receipts {
        expect_err(r, "auth", 1);
        assert_eq!(r.fee, None);
    }
}

#[test]
fn zero_amounts_are_rejected_at_decode() {
    let mut m = market();
    let t = m.tenant.clone();
    let body = TxBody {
        chain_id: CHAIN.into(),
        sender: t.address(),
        sequence: 0,
        fee: coin(FEE, &upzr()),
        msgs: vec![Msg::DepositDeployment {
            id: pazar_types::DeploymentId {
                owner: t.address(),
                dseq: 1,
            },
            amount: coin(0, &uusd()),
        }],
        memo: String::new(),
    };
    let out = m.chain.block(vec![body.sign(&t).encode()]);
    expect_err(&out.receipts[0], "auth", 1);
    assert!(
        out.receipts[0].log.contains("must be greater than zero"),
        "{}",
        out.receipts[0].log
    );
}

#[test]
fn unknown_denom_and_low_fee_are_refused() {
    let mut m = market();
    let t = m.tenant.clone();
    let r = m.chain.tx(
        &t,
        vec![Msg::Send {
            to: m.stranger.address(),
            amount: coin(1, &pazar_types::Denom::new("uatom").expect("ok")),
        }],
    );
    expect_err(&r, "bank", 1);
    let body = TxBody {
        chain_id: CHAIN.into(),
        sender: t.address(),
        sequence: 1,
        fee: coin(FEE - 1, &upzr()),
        msgs: vec![Msg::Send {
            to: m.stranger.address(),
            amount: coin(1, &upzr()),
        }],
        memo: String::new(),
    };
    let out = m.chain.block(vec![body.sign(&t).encode()]);
    expect_err(&out.receipts[0], "auth", 6);
}

#[test]
fn block_with_wrong_height_or_chain_is_refused_whole() {
    let mut m = market();
    let h = m.chain.state.height;
    let hash = m.chain.state.state_hash();
    let bad = BlockHeader {
        chain_id: CHAIN.into(),
        height: h + 2,
        time_ms: 0,
    };
    assert_eq!(
        m.chain.state.apply_block(&bad, &[]),
        Err(BlockError::WrongHeight { current: h, got: h + 2 })
    );
    let bad = BlockHeader {
        chain_id: "x".into(),
        height: h + 1,
        time_ms: 0,
    };
    assert!(matches!(
        m.chain.state.apply_block(&bad, &[]),
        Err(BlockError::WrongChain { .. })
    ));
    assert_eq!(m.chain.state.state_hash(), hash);
}

#[test]
fn provider_registers_updates_and_cannot_deregister_while_busy() {
    let mut m = market();
    let p = m.provider.clone();
    expect_err(&m.chain.tx(&p, vec![create_provider(vec![])]), "provider", 1);
    m.chain.ok(
        &p,
        vec![Msg::UpdateProvider {
            host_uri: "https://new.example.com".into(),
            tls_fingerprint: [9; 32],
            attributes: vec![Attribute::new("region", "asia")],
            info: pazar_types::ProviderInfo {
                email: String::new(),
                website: String::new(),
            },
        }],
    );
    assert_eq!(
        m.chain.state.provider(&p.address()).expect("exists").host_uri,
        "https://new.example.com"
    );
    let o = leased(&mut m, "1", 10_000_000);
    let _ = o;
    expect_err(&m.chain.tx(&p, vec![Msg::DeleteProvider]), "provider", 3);
    let s = m.stranger.clone();
    expect_err(&m.chain.tx(&s, vec![Msg::DeleteProvider]), "provider", 2);
}

#[test]
fn provider_host_uri_must_be_https_without_path() {
    let mut m = market();
    let s = m.stranger.clone();
    for uri in ["http://x.com", "https://x.com/path", "https://", "ftp://x"] {
        let r = m.chain.tx(
            &s,
            vec![Msg::CreateProvider {
                host_uri: uri.into(),
                tls_fingerprint: [0; 32],
                attributes: vec![],
                info: pazar_types::ProviderInfo {
                    email: String::new(),
                    website: String::new(),
                },
            }],
        );
        expect_err(&r, "auth", 1);
    }
}

#[test]
fn deployment_needs_the_minimum_deposit_in_its_price_denom() {
    let mut m = market();
    let t = m.tenant.clone();
    let r = m.chain.tx(
        &t,
        vec![create_deployment(
            1,
            vec![group("g", "1", &uusd())],
            coin(499_999, &uusd()),
        )],
    );
    expect_err(&r, "escrow", 1);
    let r = m.chain.tx(
        &t,
        vec![create_deployment(
            1,
            vec![group("g", "1", &uusd())],
            coin(500_000, &upzr()),
        )],
    );
    expect_err(&r, "escrow", 2);
    let r = m.chain.tx(
        &t,
        vec![create_deployment(
            1,
            vec![group("g", "1", &pazar_types::Denom::new("uakt").expect("ok"))],
            coin(500_000, &uusd()),
        )],
    );
    expect_err(&r, "market", 25);
    let r = m.chain.ok(
        &t,
        vec![create_deployment(
            1,
            vec![group("a", "1", &uusd()), group("b", "2", &uusd())],
            coin(500_000, &uusd()),
        )],
    );
    let orders: Vec<_> = r
        .events
        .iter()
        .filter(|e| matches!(e, Event::OrderCreated { .. }))
        .collect();
    assert_eq!(orders.len(), 2, "one order per group");
    expect_err(
        &m.chain.tx(
            &t,
            vec![create_deployment(
                1,
                vec![group("a", "1", &uusd())],
                coin(500_000, &uusd()),
            )],
        ),
        "market",
        1,
    );
}

#[test]
fn bid_must_satisfy_price_denom_and_provider_rules() {
    let mut m = market();
    let (t, p, s) = (m.tenant.clone(), m.provider.clone(), m.stranger.clone());
    m.chain.ok(
        &t,
        vec![create_deployment(
            1,
            vec![group("web", "10", &uusd())],
            coin(1_000_000, &uusd()),
        )],
    );
    let o = order1(&m, 1);
    expect_err(&m.chain.tx(&s, vec![bid(&o, "1", &uusd())]), "market", 14);
    expect_err(
        &m.chain.tx(&p, vec![bid(&o, "10.000000000000000001", &uusd())]),
        "market",
        16,
    );
    expect_err(&m.chain.tx(&p, vec![bid(&o, "1", &upzr())]), "market", 15);
    let small = Msg::CreateBid {
        order: o.clone(),
        price: Price {
            denom: uusd(),
            amount: dec("1"),
        },
        deposit: coin(1, &upzr()),
    };
    expect_err(&m.chain.tx(&p, vec![small]), "escrow", 4);
    let missing = pazar_types::DeploymentId {
        owner: t.address(),
        dseq: 99,
    }
    .group(1)
    .order(1);
    expect_err(&m.chain.tx(&p, vec![bid(&missing, "1", &uusd())]), "market", 7);
    m.chain.ok(&p, vec![bid(&o, "10", &uusd())]);
    expect_err(&m.chain.tx(&p, vec![bid(&o, "9", &uusd())]), "market", 9);
}

#[test]
fn bid_deposit_is_locked_and_returned_when_the_bid_closes() {
    let mut m = market();
    let (t, p) = (m.tenant.clone(), m.provider.clone());
    m.chain.ok(
        &t,
        vec![create_deployment(
            1,
            vec![group("web", "10", &uusd())],
            coin(1_000_000, &uusd()),
        )],
    );
    let o = order1(&m, 1);
    let before = m.chain.bal(&p, &upzr());
    m.chain.ok(&p, vec![bid(&o, "5", &uusd())]);
    assert_eq!(m.chain.bal(&p, &upzr()), before - 500_000 - FEE);
    let s = m.stranger.clone();
    expect_err(
        &m.chain.tx(
            &s,
            vec![Msg::CloseBid {
                bid: o.bid(p.address()),
            }],
        ),
        "market",
        19,
    );
    m.chain.ok(
        &p,
        vec![Msg::CloseBid {
            bid: o.bid(p.address()),
        }],
    );
    assert_eq!(m.chain.bal(&p, &upzr()), before - 2 * FEE);
    // A withdrawn bid leaves no record: closing it again finds nothing.
    expect_err(
        &m.chain.tx(
            &p,
            vec![Msg::CloseBid {
                bid: o.bid(p.address()),
            }],
        ),
        "market",
        10,
    );
}

#[test]
fn order_accepts_at_most_the_maximum_number_of_bids() {
    let tenant = key(KeyScheme::Ed25519, 1);
    let providers: Vec<SigningKey> = (10..32).map(|i| key(KeyScheme::Ed25519, i)).collect();
    let mut all: Vec<&SigningKey> = providers.iter().collect();
    all.push(&tenant);
    let mut chain = Chain::new(&all);
    chain.ok(
        &tenant,
        vec![create_deployment(
            1,
            vec![group("g", "10", &uusd())],
            coin(1_000_000, &uusd()),
        )],
    );
    let o = pazar_types::DeploymentId {
        owner: tenant.address(),
        dseq: 1,
    }
    .group(1)
    .order(1);
    for (i, p) in providers.iter().enumerate() {
        chain.ok(p, vec![create_provider(vec![])]);
        let r = chain.tx(p, vec![bid(&o, "1", &uusd())]);
        if i < 20 {
            assert!(r.is_ok(), "{}", r.log);
        } else {
            expect_err(&r, "market", 13);
        }
    }
}

#[test]
fn placement_attributes_and_gpu_models_must_match() {
    let mut m = market();
    let (t, p) = (m.tenant.clone(), m.provider.clone());
    let mut g = group("gpu", "10", &uusd());
    g.requirements.attributes = vec![Attribute::new("region", "eu")];
    g.resources[0].resources.gpu = pazar_types::market::Gpu {
        units: 1,
        attributes: vec![Attribute::new("vendor/nvidia/model/h100", "true")],
    };
    m.chain
        .ok(&t, vec![create_deployment(1, vec![g], coin(1_000_000, &uusd()))]);
    let o = order1(&m, 1);
    let r = m.chain.tx(&p, vec![bid(&o, "1", &uusd())]);
    expect_err(&r, "market", 17);
    assert!(r.log.contains("GPU"), "{}", r.log);
    let p2 = m.provider2.clone();
    let r = m.chain.tx(&p2, vec![bid(&o, "1", &uusd())]);
    expect_err(&r, "market", 17);
    assert!(r.log.contains("region=eu"), "{}", r.log);
    m.chain.ok(
        &p,
        vec![Msg::UpdateProvider {
            host_uri: "https://provider.example.com".into(),
            tls_fingerprint: [1; 32],
            attributes: vec![
                Attribute::new("region", "eu"),
                Attribute::new("capabilities/gpu/vendor/nvidia/model/h100", "true"),
            ],
            info: pazar_types::ProviderInfo {
                email: String::new(),
                website: String::new(),
            },
        }],
    );
    m.chain.ok(&p, vec![bid(&o, "1", &uusd())]);
}

#[test]
fn signed_by_requires_auditor_attestations() {
    let mut m = market();
    let (t, p, auditor) = (m.tenant.clone(), m.provider.clone(), m.stranger.clone());
    let mut g = group("audited", "10", &uusd());
    g.requirements.attributes = vec![Attribute::new("region", "eu")];
    g.requirements.signed_by = SignedBy {
        all_of: vec![],
        any_of: vec![auditor.address()],
    };
    // The auditor vouches for another provider first: a placement may only name auditors.
    let p2 = m.provider2.clone();
    m.chain.ok(
        &auditor,
        vec![Msg::SignProviderAttributes {
            provider: p2.address(),
            attributes: vec![Attribute::new("region", "us")],
        }],
    );
    m.chain
        .ok(&t, vec![create_deployment(1, vec![g], coin(1_000_000, &uusd()))]);
    let o = order1(&m, 1);
    expect_err(&m.chain.tx(&p, vec![bid(&o, "1", &uusd())]), "market", 17);
    m.chain.ok(
        &auditor,
        vec![Msg::SignProviderAttributes {
            provider: p.address(),
            attributes: vec![Attribute::new("region", "eu")],
        }],
    );
    m.chain.ok(&p, vec![bid(&o, "1", &uusd())]);
    // Revocation: the auditor withdraws; a new order would not match any more.
    m.chain.ok(
        &auditor,
        vec![Msg::DeleteProviderAttributes {
            provider: p.address(),
            keys: vec![],
        }],
    );
    assert!(m
        .chain
        .state
        .audited_attributes(&p.address(), &auditor.address())
        .is_none());
    expect_err(
        &m.chain.tx(
            &auditor,
            vec![Msg::DeleteProviderAttributes {
                provider: p.address(),
                keys: vec![],
            }],
        ),
        "audit",
        2,
    );
    expect_err(
        &m.chain.tx(
            &auditor,
            vec![Msg::SignProviderAttributes {
                provider: t.address(),
                attributes: vec![Attribute::new("a1", "b")],
            }],
        ),
        "audit",
        1,
    );
}

#[test]
fn lease_on_someone_elses_deployment_is_refused() {
    let mut m = market();
    let (t, p, s) = (m.tenant.clone(), m.provider.clone(), m.stranger.clone());
    m.chain.ok(
        &t,
        vec![create_deployment(
            1,
            vec![group("web", "10", &uusd())],
            coin(1_000_000, &uusd()),
        )],
    );
    let o = order1(&m, 1);
    m.chain.ok(&p, vec![bid(&o, "1", &uusd())]);
    expect_err(
        &m.chain.tx(
            &s,
            vec![Msg::CreateLease {
                bid: o.bid(p.address()),
            }],
        ),
        "market",
        18,
    );
}

#[test]
fn accepting_a_bid_makes_a_lease_and_refunds_losing_bids() {
    let mut m = market();
    let (t, p, p2) = (m.tenant.clone(), m.provider.clone(), m.provider2.clone());
    m.chain.ok(
        &t,
        vec![create_deployment(
            1,
            vec![group("web", "10", &uusd())],
            coin(1_000_000, &uusd()),
        )],
    );
    let o = order1(&m, 1);
    m.chain.ok(&p, vec![bid(&o, "2", &uusd())]);
    m.chain.ok(&p2, vec![bid(&o, "1", &uusd())]);
    let p2_before = m.chain.bal(&p2, &upzr());
    let r = m.chain.ok(
        &t,
        vec![Msg::CreateLease {
            bid: o.bid(p.address()),
        }],
    );
    assert!(r.events.contains(&Event::BidClosed {
        id: o.bid(p2.address()),
        lost: true
    }));
    assert_eq!(m.chain.bal(&p2, &upzr()), p2_before + 500_000);
    let st = &m.chain.state;
    assert_eq!(st.lease(&o.bid(p.address())).expect("lease").state, LeaseState::Active);
    assert_eq!(st.bid(&o.bid(p2.address())).expect("bid").state, BidState::Lost);
    assert_eq!(st.order(&o).expect("order").state, OrderState::Active);
    // A bid on an order that is no longer open is refused.
    let s = m.stranger.clone();
    m.chain.ok(&s, vec![create_provider(vec![])]);
    let r = m.chain.tx(&s, vec![bid(&o, "1", &uusd())]);
    expect_err(&r, "market", 8);
}

#[test]
fn lease_pays_every_block_and_provider_withdraws_minus_take() {
    for (denom, take_pct) in [(uusd(), 20u128), (upzr(), 4u128)] {
        let mut m = market();
        let (t, p) = (m.tenant.clone(), m.provider.clone());
        m.chain.ok(
            &t,
            vec![create_deployment(
                1,
                vec![group("web", "1000", &denom)],
                coin(10_000_000, &denom),
            )],
        );
        let o = order1(&m, 1);
        m.chain.ok(&p, vec![bid(&o, "1000", &denom)]);
        let r = m.chain.ok(
            &t,
            vec![Msg::CreateLease {
                bid: o.bid(p.address()),
            }],
        );
        let _ = r;
        let start = m.chain.state.height;
        m.chain.advance_to(start + 10);
        let before = m.chain.bal(&p, &denom);
        let r = m.chain.ok(
            &p,
            vec![Msg::WithdrawLease {
                lease: o.bid(p.address()),
            }],
        );
        // 11 blocks have passed at the withdraw's height.
        let gross = 1000 * 11;
        let take = gross * take_pct / 100;
        let fee_in_denom = if denom == upzr() { FEE } else { 0 };
        assert_eq!(m.chain.bal(&p, &denom), before + gross - take - fee_in_denom);
        assert!(r.events.contains(&Event::LeaseWithdrawn {
            id: o.bid(p.address()),
            paid: coin(gross - take, &denom),
            take: coin(take, &denom),
        }));
    }
}

#[test]
fn fractional_prices_accrue_exactly_with_carried_remainders() {
    let mut m = market();
    let (t, p) = (m.tenant.clone(), m.provider.clone());
    m.chain.ok(
        &t,
        vec![create_deployment(
            1,
            vec![group("web", "10", &uusd())],
            coin(1_000_000, &uusd()),
        )],
    );
    let o = order1(&m, 1);
    m.chain.ok(&p, vec![bid(&o, "0.3", &uusd())]);
    m.chain.ok(
        &t,
        vec![Msg::CreateLease {
            bid: o.bid(p.address()),
        }],
    );
    let start = m.chain.state.height;
    // Withdraw at uneven intervals; the total must be floor(0.3 × blocks).
    for gap in [1u64, 2, 3, 7, 1] {
        m.chain.advance_to(m.chain.state.height + gap - 1);
        m.chain.ok(
            &p,
            vec![Msg::WithdrawLease {
                lease: o.bid(p.address()),
            }],
        );
    }
    let blocks = m.chain.state.height - start;
    let pay = m.chain.state.payment(&o.bid(p.address())).expect("payment");
    assert_eq!(pay.received, (3 * u128::from(blocks)) / 10);
    assert_eq!(pay.carry, (u128::from(blocks) * 3 % 10) * pazar_types::DEC_SCALE / 10);
}

#[test]
fn withdraw_by_a_stranger_or_the_tenant_is_refused() {
    let mut m = market();
    let o = leased(&mut m, "1", 1_000_000);
    let (t, s, p) = (m.tenant.clone(), m.stranger.clone(), m.provider.clone());
    expect_err(
        &m.chain.tx(
            &s,
            vec![Msg::WithdrawLease {
                lease: o.bid(p.address()),
            }],
        ),
        "escrow",
        6,
    );
    expect_err(
        &m.chain.tx(
            &t,
            vec![Msg::WithdrawLease {
                lease: o.bid(p.address()),
            }],
        ),
        "escrow",
        6,
    );
}

#[test]
fn escrow_running_dry_puts_the_lease_in_grace_at_the_predicted_height_then_closes_it_and_keeps_the_deployment() {
    let mut m = market();
    // 500,000 deposit at 1,000/block: runs dry after 500 blocks.
    let o = leased(&mut m, "1000", 500_000);
    let p = m.provider.clone();
    let lease = o.bid(p.address());
    let created = m.chain.state.lease(&lease).expect("lease").created_at;
    let id = lease.deployment();
    let view = m.chain.state.escrow_view(&id, m.chain.state.height).expect("escrow");
    assert_eq!(view.depletes_at, Some(created + 501));
    let events = m.chain.advance_to(created + 500);
    assert!(events.is_empty(), "still paying: {events:?}");
    assert_eq!(m.chain.state.lease(&lease).expect("lease").state, LeaseState::Active);
    let events = m.chain.advance_to(created + 501);
    assert!(events.contains(&Event::EscrowDepleted { id: id.clone() }), "{events:?}");
    let grace = m.chain.state.params.grace_blocks;
    let until = created + 501 + grace;
    assert!(events.contains(&Event::LeaseGrace {
        id: lease.clone(),
        until
    }));
    assert_eq!(m.chain.state.lease(&lease).expect("lease").state, LeaseState::Grace);
    // In grace the provider is not paid and the group keeps its lease.
    let received = m.chain.state.payment(&lease).expect("payment").received;
    let events = m.chain.advance_to(until - 1);
    assert!(events.is_empty(), "{events:?}");
    assert_eq!(m.chain.state.payment(&lease).expect("payment").received, received);
    assert_eq!(m.chain.state.group(&o.group()).expect("group").state, GroupState::Open);
    let events = m.chain.advance_to(until);
    assert!(events.contains(&Event::LeaseClosed {
        id: lease.clone(),
        reason: LeaseCloseReason::InsufficientFunds
    }));
    let st = &m.chain.state;
    assert_eq!(st.lease(&lease).expect("lease").state, LeaseState::InsufficientFunds);
    assert_eq!(
        st.group(&o.group()).expect("group").state,
        GroupState::InsufficientFunds
    );
    assert_eq!(
        st.deployment(&id).expect("dep").state,
        pazar_types::market::DeploymentState::Active
    );
    let pay = st.payment(&lease).expect("payment");
    assert_eq!(pay.received, 500_000, "every deposited token reached the provider");
    // The tenant tops up and restarts the group: a fresh order opens.
    let t = m.tenant.clone();
    m.chain.ok(
        &t,
        vec![Msg::DepositDeployment {
            id: id.clone(),
            amount: coin(1_000_000, &uusd()),
        }],
    );
    let r = m.chain.ok(&t, vec![Msg::StartGroup { dseq: 1, gseq: 1 }]);
    assert!(r.events.contains(&Event::OrderCreated { id: o.group().order(2) }));
}

#[test]
fn deposit_extends_runway_and_is_refunded_to_each_depositor_on_close() {
    let mut m = market();
    let o = leased(&mut m, "1000", 600_000);
    let (t, s, p) = (m.tenant.clone(), m.stranger.clone(), m.provider.clone());
    let id = o.deployment();
    let before = m
        .chain
        .state
        .escrow_view(&id, m.chain.state.height)
        .expect("view")
        .depletes_at
        .expect("dry");
    // A friend tops up the tenant's deployment.
    m.chain.ok(
        &s,
        vec![Msg::DepositDeployment {
            id: id.clone(),
            amount: coin(400_000, &uusd()),
        }],
    );
    let after = m
        .chain
        .state
        .escrow_view(&id, m.chain.state.height)
        .expect("view")
        .depletes_at
        .expect("dry");
    assert_eq!(after, before + 400);
    m.chain.advance_to(m.chain.state.height + 5);
    let (t0, s0, p0) = (
        m.chain.bal(&t, &uusd()),
        m.chain.bal(&s, &uusd()),
        m.chain.bal(&p, &uusd()),
    );
    let r = m.chain.ok(&t, vec![Msg::CloseDeployment { dseq: 1 }]);
    let acct = m.chain.state.escrow_account(&id).expect("acct").clone();
    assert!(acct.closed);
    let spent = acct.transferred;
    // FIFO: the tenant's 600,000 is spent first; the friend gets all of theirs back.
    assert_eq!(m.chain.bal(&s, &uusd()) - s0, 400_000);
    assert_eq!(m.chain.bal(&t, &uusd()) - t0, 600_000 - spent);
    let take = spent / 5;
    assert_eq!(m.chain.bal(&p, &uusd()) - p0, spent - take, "final payout on close");
    assert!(r.events.contains(&Event::LeaseClosed {
        id: o.bid(p.address()),
        reason: LeaseCloseReason::Owner
    }));
    expect_err(&m.chain.tx(&t, vec![Msg::CloseDeployment { dseq: 1 }]), "market", 3);
    expect_err(
        &m.chain.tx(
            &t,
            vec![Msg::DepositDeployment {
                id,
                amount: coin(1, &uusd()),
            }],
        ),
        "market",
        3,
    );
}

#[test]
fn tenant_closing_a_lease_reopens_a_new_order() {
    let mut m = market();
    let o = leased(&mut m, "1", 1_000_000);
    let (t, p) = (m.tenant.clone(), m.provider.clone());
    let r = m.chain.tx(
        &t,
        vec![Msg::CloseLease {
            lease: o.bid(p.address()),
            reason: LeaseCloseReason::Unstable,
        }],
    );
    expect_err(&r, "market", 23);
    let r = m.chain.ok(
        &t,
        vec![Msg::CloseLease {
            lease: o.bid(p.address()),
            reason: LeaseCloseReason::Owner,
        }],
    );
    assert!(r.events.contains(&Event::OrderCreated { id: o.group().order(2) }));
    assert_eq!(m.chain.state.group(&o.group()).expect("g").state, GroupState::Open);
    let r = m.chain.tx(
        &t,
        vec![Msg::CloseLease {
            lease: o.bid(p.address()),
            reason: LeaseCloseReason::Owner,
        }],
    );
    expect_err(&r, "market", 21);
}

#[test]
fn provider_closing_a_lease_pauses_the_group() {
    let mut m = market();
    let o = leased(&mut m, "1", 1_000_000);
    let (p, s, t) = (m.provider.clone(), m.stranger.clone(), m.tenant.clone());
    expect_err(
        &m.chain.tx(
            &s,
            vec![Msg::CloseLease {
                lease: o.bid(p.address()),
                reason: LeaseCloseReason::Owner,
            }],
        ),
        "market",
        22,
    );
    expect_err(
        &m.chain.tx(
            &p,
            vec![Msg::CloseLease {
                lease: o.bid(p.address()),
                reason: LeaseCloseReason::Owner,
            }],
        ),
        "market",
        23,
    );
    expect_err(
        &m.chain.tx(
            &p,
            vec![Msg::CloseBid {
                bid: o.bid(p.address()),
            }],
        ),
        "market",
        12,
    );
    m.chain.ok(
        &p,
        vec![Msg::CloseLease {
            lease: o.bid(p.address()),
            reason: LeaseCloseReason::ManifestTimeout,
        }],
    );
    assert_eq!(m.chain.state.group(&o.group()).expect("g").state, GroupState::Paused);
    let l = m.chain.state.lease(&o.bid(p.address())).expect("lease");
    assert_eq!(l.reason, Some(LeaseCloseReason::ManifestTimeout));
    m.chain.ok(&t, vec![Msg::StartGroup { dseq: 1, gseq: 1 }]);
    expect_err(&m.chain.tx(&t, vec![Msg::StartGroup { dseq: 1, gseq: 1 }]), "market", 6);
}

#[test]
fn update_deployment_requires_a_new_version() {
    let mut m = market();
    let t = m.tenant.clone();
    m.chain.ok(
        &t,
        vec![create_deployment(
            1,
            vec![group("g", "1", &uusd())],
            coin(500_000, &uusd()),
        )],
    );
    expect_err(
        &m.chain.tx(
            &t,
            vec![Msg::UpdateDeployment {
                dseq: 1,
                version: [1; 32],
            }],
        ),
        "market",
        4,
    );
    m.chain.ok(
        &t,
        vec![Msg::UpdateDeployment {
            dseq: 1,
            version: [2; 32],
        }],
    );
    let s = m.stranger.clone();
    expect_err(
        &m.chain.tx(
            &s,
            vec![Msg::UpdateDeployment {
                dseq: 1,
                version: [3; 32],
            }],
        ),
        "market",
        2,
    );
}

#[test]
fn auto_accept_leases_the_lowest_bid_after_the_delay() {
    let mut m = market();
    let (t, p, p2) = (m.tenant.clone(), m.provider.clone(), m.provider2.clone());
    m.chain.ok(
        &t,
        vec![Msg::CreateDeployment {
            dseq: 1,
            version: [1; 32],
            groups: vec![group("g", "10", &uusd())],
            deposit: coin(1_000_000, &uusd()),
            auto_accept_after: Some(3),
        }],
    );
    let created = m.chain.state.height;
    let o = order1(&m, 1);
    m.chain.ok(&p, vec![bid(&o, "5", &uusd())]);
    m.chain.ok(&p2, vec![bid(&o, "4", &uusd())]);
    let events = m.chain.advance_to(created + 3);
    assert!(
        events.contains(&Event::LeaseCreated {
            id: o.bid(p2.address()),
            price: Price {
                denom: uusd(),
                amount: dec("4")
            }
        }),
        "{events:?}"
    );
}

#[test]
fn pause_and_close_group_end_the_lease_and_settle() {
    let mut m = market();
    let o = leased(&mut m, "2", 1_000_000);
    let (t, p) = (m.tenant.clone(), m.provider.clone());
    m.chain.advance_to(m.chain.state.height + 4);
    m.chain.ok(&t, vec![Msg::PauseGroup { dseq: 1, gseq: 1 }]);
    assert_eq!(
        m.chain.state.lease(&o.bid(p.address())).expect("l").state,
        LeaseState::Closed
    );
    let paid = m.chain.state.payment(&o.bid(p.address())).expect("p").received;
    // Leased at h, paused at h + 5: five blocks at 2 per block.
    assert_eq!(paid, 2 * 5);
    m.chain.ok(&t, vec![Msg::CloseGroup { dseq: 1, gseq: 1 }]);
    expect_err(&m.chain.tx(&t, vec![Msg::CloseGroup { dseq: 1, gseq: 1 }]), "market", 6);
}

#[test]
fn lease_is_refused_when_escrow_cannot_pay_one_block() {
    let mut m = market();
    let (t, p) = (m.tenant.clone(), m.provider.clone());
    let mut g = group("big", "10", &uusd());
    g.resources[0].price.amount = dec("1000000");
    m.chain
        .ok(&t, vec![create_deployment(1, vec![g], coin(500_000, &uusd()))]);
    let o = order1(&m, 1);
    m.chain.ok(&p, vec![bid(&o, "600000", &uusd())]);
    expect_err(
        &m.chain.tx(
            &t,
            vec![Msg::CreateLease {
                bid: o.bid(p.address()),
            }],
        ),
        "escrow",
        5,
    );
}

#[test]
fn same_blocks_give_the_same_state_hash() {
    let mut m = market();
    leased(&mut m, "1.5", 1_000_000);
    m.chain.advance_to(m.chain.state.height + 3);
    let blocks = m.chain.blocks.clone();
    let mut replay = Chain::new(&[&m.tenant, &m.provider, &m.provider2, &m.stranger]);
    for (h, txs) in &blocks {
        replay.state.apply_block(h, txs).expect("replays");
    }
    assert_eq!(replay.state.state_hash(), m.chain.state.state_hash());
    let t = m.tenant.clone();
    m.chain.ok(
        &t,
        vec![Msg::Send {
            to: m.stranger.address(),
            amount: coin(1, &uusd()),
        }],
    );
    assert_ne!(replay.state.state_hash(), m.chain.state.state_hash());
}

#[test]
fn genesis_rejects_supply_overflow_unknown_denoms_and_module_accounts() {
    use pazar_ledger::state::{GenesisBalance, GenesisError};
    use pazar_ledger::{Genesis, Params, State};
    let a = key(KeyScheme::Ed25519, 1).address();
    let b = key(KeyScheme::Ed25519, 2).address();
    let genesis = |balances| Genesis {
        chain_id: CHAIN.into(),
        params: Params::devnet("upzr", "uusd"),
        balances,
    };
    let overflow = genesis(vec![
        GenesisBalance {
            address: a,
            coins: vec![coin(u128::MAX, &upzr())],
        },
        GenesisBalance {
            address: b,
            coins: vec![coin(1, &upzr())],
        },
    ]);
    assert_eq!(
        State::from_genesis(&overflow).err(),
        Some(GenesisError::Overflow(upzr()))
    );
    let unknown = genesis(vec![GenesisBalance {
        address: a,
        coins: vec![coin(1, &pazar_types::Denom::new("uatom").expect("ok"))],
    }]);
    assert!(matches!(
        State::from_genesis(&unknown),
        Err(GenesisError::UnknownDenom { .. })
    ));
    let module = genesis(vec![GenesisBalance {
        address: pazar_types::Address::module("escrow"),
        coins: vec![coin(1, &upzr())],
    }]);
    assert!(matches!(
        State::from_genesis(&module),
        Err(GenesisError::ModuleAccount(_))
    ));
}

#[test]
fn bid_on_a_closed_order_is_refused() {
    let mut m = market();
    let (t, p) = (m.tenant.clone(), m.provider.clone());
    m.chain.ok(
        &t,
        vec![create_deployment(
            1,
            vec![group("web", "10", &uusd())],
            coin(1_000_000, &uusd()),
        )],
    );
    let o = order1(&m, 1);
    m.chain.ok(&t, vec![Msg::CloseDeployment { dseq: 1 }]);
    assert_eq!(m.chain.state.order(&o).expect("order").state, OrderState::Closed);
    let r = m.chain.tx(&p, vec![bid(&o, "1", &uusd())]);
    expect_err(&r, "market", 8);
    assert!(r.log.contains("Closed"), "{}", r.log);
}

/// `market()` with short timeouts: bids expire 5 blocks after they are placed, orders 12.
fn short_market() -> Market {
    let mut params = pazar_ledger::Params::devnet("upzr", "uusd");
    params.bid_timeout_blocks = 5;
    params.order_timeout_blocks = 12;
    params.max_auto_accept_blocks = 3;
    let tenant = key(KeyScheme::Ed25519, 1);
    let provider = key(KeyScheme::Ed25519, 2);
    let provider2 = key(KeyScheme::Eth, 3);
    let stranger = key(KeyScheme::Ed25519, 4);
    let mut chain = Chain::with_params(&[&tenant, &provider, &provider2, &stranger], params);
    chain.ok(&provider, vec![create_provider(vec![Attribute::new("region", "eu")])]);
    chain.ok(&provider2, vec![create_provider(vec![Attribute::new("region", "us")])]);
    Market {
        chain,
        tenant,
        provider,
        provider2,
        stranger,
    }
}

/// A deployment of one group priced in uusd; returns its first order and the creation height.
fn deployed(m: &mut Market, dseq: u64) -> (OrderId, u64) {
    let t = m.tenant.clone();
    m.chain.ok(
        &t,
        vec![create_deployment(
            dseq,
            vec![group("web", "10", &uusd())],
            coin(1_000_000, &uusd()),
        )],
    );
    (order1(m, dseq), m.chain.state.height)
}

#[test]
fn an_unaccepted_bid_expires_and_its_deposit_returns_exactly() {
    let mut m = short_market();
    let p = m.provider.clone();
    let (o, _) = deployed(&mut m, 1);
    let before = m.chain.bal(&p, &upzr());
    m.chain.ok(&p, vec![bid(&o, "5", &uusd())]);
    let placed = m.chain.state.height;
    let b = m.chain.state.bid(&o.bid(p.address())).expect("bid").clone();
    assert_eq!(b.expires_at, placed + 5);
    assert_eq!(m.chain.state.provider_load(&p.address()).open_bids, 1);

    // Open through its last block.
    m.chain.advance_to(placed + 4);
    assert_eq!(
        m.chain.state.bid(&o.bid(p.address())).expect("bid").state,
        BidState::Open
    );
    let events = m.chain.advance_to(placed + 5);
    assert_eq!(
        events,
        vec![Event::BidClosed {
            id: o.bid(p.address()),
            lost: false,
        }]
    );
    let b = m.chain.state.bid(&o.bid(p.address())).expect("bid");
    assert_eq!((b.state, b.expired), (BidState::Closed, true));
    // Exactly the deposit came back: the provider is down only the fee of its bid.
    assert_eq!(m.chain.bal(&p, &upzr()), before - FEE);
    assert_eq!(m.chain.state.provider_load(&p.address()).open_bids, 0);
    // The order is still open for other bids, and the tenant can no longer take this one.
    assert_eq!(m.chain.state.order(&o).expect("order").state, OrderState::Open);
    let t = m.tenant.clone();
    expect_err(
        &m.chain.tx(
            &t,
            vec![Msg::CreateLease {
                bid: o.bid(p.address()),
            }],
        ),
        "market",
        11,
    );
}

#[test]
fn a_bid_accepted_in_its_last_block_becomes_a_lease() {
    let mut m = short_market();
    let (t, p) = (m.tenant.clone(), m.provider.clone());
    let (o, _) = deployed(&mut m, 1);
    m.chain.ok(&p, vec![bid(&o, "5", &uusd())]);
    let placed = m.chain.state.height;
    m.chain.advance_to(placed + 4);
    // The lease is made in block placed + 5, at whose end the bid would have expired.
    let r = m.chain.ok(
        &t,
        vec![Msg::CreateLease {
            bid: o.bid(p.address()),
        }],
    );
    assert_eq!(m.chain.state.height, placed + 5);
    assert!(r.events.iter().any(|e| matches!(e, Event::LeaseCreated { .. })));
    let events = m.chain.advance_to(placed + 20);
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, Event::BidClosed { .. } | Event::OrderClosed { .. })),
        "{events:?}"
    );
    assert_eq!(
        m.chain.state.lease(&o.bid(p.address())).expect("lease").state,
        LeaseState::Active
    );
    assert_eq!(m.chain.state.order(&o).expect("order").state, OrderState::Active);
}

#[test]
fn an_order_without_a_lease_expires_closing_its_bids_and_pausing_its_group() {
    let mut m = short_market();
    let (t, p, p2) = (m.tenant.clone(), m.provider.clone(), m.provider2.clone());
    let (o, created) = deployed(&mut m, 1);
    assert_eq!(m.chain.state.order(&o).expect("order").expires_at, created + 12);
    // A late bid lives only as long as its order.
    m.chain.advance_to(created + 9);
    m.chain.ok(&p, vec![bid(&o, "5", &uusd())]);
    m.chain.ok(&p2, vec![bid(&o, "6", &uusd())]);
    assert_eq!(
        m.chain.state.bid(&o.bid(p.address())).expect("bid").expires_at,
        created + 12
    );
    let (before, before2) = (m.chain.bal(&p, &upzr()), m.chain.bal(&p2, &upzr()));
    let events = m.chain.advance_to(created + 12);
    let gid = o.group();
    for e in [
        Event::BidClosed {
            id: o.bid(p.address()),
            lost: false,
        },
        Event::BidClosed {
            id: o.bid(p2.address()),
            lost: false,
        },
        Event::OrderClosed { id: o.clone() },
        Event::GroupStateChanged {
            id: gid.clone(),
            state: GroupState::Paused,
        },
    ] {
        assert!(events.contains(&e), "{e:?} missing from {events:?}");
    }
    assert_eq!(m.chain.bal(&p, &upzr()), before + 500_000);
    assert_eq!(m.chain.bal(&p2, &upzr()), before2 + 500_000);
    let order = m.chain.state.order(&o).expect("order");
    assert_eq!((order.state, order.expired), (OrderState::Closed, true));
    assert_eq!(m.chain.state.group(&gid).expect("group").state, GroupState::Paused);
    // The escrow is untouched (no lease ran) and the deployment stays for the tenant to decide.
    let acct = m.chain.state.escrow_account(&o.deployment()).expect("escrow");
    assert_eq!(acct.balance, 1_000_000);
    // Starting the group again opens a fresh order with its own timeout.
    m.chain.ok(&t, vec![Msg::StartGroup { dseq: 1, gseq: 1 }]);
    let o2 = gid.order(2);
    let now = m.chain.state.height;
    assert_eq!(m.chain.state.order(&o2).expect("order 2").expires_at, now + 12);
    m.chain.ok(&p, vec![bid(&o2, "5", &uusd())]);
    m.chain.ok(&t, vec![Msg::CloseDeployment { dseq: 1 }]);
    assert_eq!(m.chain.bal(&t, &uusd()), 1_000_000_000);
}

#[test]
fn auto_accept_takes_bids_before_they_can_expire() {
    let mut m = short_market();
    let (t, p) = (m.tenant.clone(), m.provider.clone());
    m.chain.ok(
        &t,
        vec![Msg::CreateDeployment {
            dseq: 1,
            version: [1; 32],
            groups: vec![group("g", "10", &uusd())],
            deposit: coin(1_000_000, &uusd()),
            auto_accept_after: Some(3),
        }],
    );
    let created = m.chain.state.height;
    let o = order1(&m, 1);
    m.chain.ok(&p, vec![bid(&o, "5", &uusd())]);
    m.chain.advance_to(created + 3);
    assert_eq!(
        m.chain.state.lease(&o.bid(p.address())).expect("auto-accepted").state,
        LeaseState::Active
    );
    // A delay at or beyond the bid timeout is refused at genesis (below), and above the
    // chain's maximum at deployment.
    let r = m.chain.tx(
        &t,
        vec![Msg::CreateDeployment {
            dseq: 2,
            version: [2; 32],
            groups: vec![group("g", "10", &uusd())],
            deposit: coin(1_000_000, &uusd()),
            auto_accept_after: Some(4),
        }],
    );
    expect_err(&r, "market", 24);
}

#[test]
fn genesis_refuses_timeouts_that_would_expire_before_auto_accept() {
    use pazar_ledger::state::GenesisError;
    use pazar_ledger::{Genesis, Params, State};
    let with = |f: &dyn Fn(&mut Params)| {
        let mut params = Params::devnet("upzr", "uusd");
        f(&mut params);
        State::from_genesis(&Genesis {
            chain_id: CHAIN.into(),
            params,
            balances: vec![],
        })
        .err()
    };
    assert_eq!(with(&|_| {}), None);
    assert_eq!(
        with(&|p| p.bid_timeout_blocks = 0),
        Some(GenesisError::ZeroTimeout("bid_timeout_blocks"))
    );
    assert_eq!(
        with(&|p| p.order_timeout_blocks = 0),
        Some(GenesisError::ZeroTimeout("order_timeout_blocks"))
    );
    // A resumption minimum of 0 would let a deposit of nothing end a grace.
    assert_eq!(
        with(&|p| p.resume_min_blocks = 0),
        Some(GenesisError::ZeroTimeout("resume_min_blocks"))
    );
    assert_eq!(with(&|p| p.resume_min_blocks = 1), None);
    let late = with(&|p| p.max_auto_accept_blocks = p.bid_timeout_blocks);
    assert!(
        matches!(late, Some(GenesisError::AutoAcceptAfterExpiry { .. })),
        "{late:?}"
    );
    let late = with(&|p| {
        p.order_timeout_blocks = 10;
        p.max_auto_accept_blocks = 10;
    });
    assert!(
        matches!(late, Some(GenesisError::AutoAcceptAfterExpiry { .. })),
        "{late:?}"
    );
}

#[test]
fn a_placement_naming_an_auditor_who_audited_nobody_is_refused() {
    let mut m = market();
    let (t, p, auditor) = (m.tenant.clone(), m.provider.clone(), m.stranger.clone());
    let with = |all_of: Vec<pazar_types::Address>, any_of: Vec<pazar_types::Address>| {
        let mut g = group("audited", "10", &uusd());
        g.requirements.signed_by = SignedBy { all_of, any_of };
        g
    };
    let nobody = key(KeyScheme::Ed25519, 99).address();
    let r = m.chain.tx(
        &t,
        vec![create_deployment(
            1,
            vec![with(vec![nobody], vec![])],
            coin(1_000_000, &uusd()),
        )],
    );
    expect_err(&r, "market", 26);
    assert!(r.log.contains("audited no provider"), "{}", r.log);
    let r = m.chain.tx(
        &t,
        vec![create_deployment(
            1,
            vec![with(vec![], vec![nobody, auditor.address()])],
            coin(1_000_000, &uusd()),
        )],
    );
    expect_err(&r, "market", 27);
    // Once the auditor vouches for a provider, both forms are accepted; an unknown address
    // beside a known one in anyOf narrows nothing and is accepted.
    m.chain.ok(
        &auditor,
        vec![Msg::SignProviderAttributes {
            provider: p.address(),
            attributes: vec![Attribute::new("region", "eu")],
        }],
    );
    assert!(m.chain.state.is_auditor(&auditor.address()));
    m.chain.ok(
        &t,
        vec![create_deployment(
            1,
            vec![with(vec![auditor.address()], vec![])],
            coin(1_000_000, &uusd()),
        )],
    );
    m.chain.ok(
        &t,
        vec![create_deployment(
            2,
            vec![with(vec![], vec![nobody, auditor.address()])],
            coin(1_000_000, &uusd()),
        )],
    );
    // Withdrawing the last attestation makes the address unknown again.
    m.chain.ok(
        &auditor,
        vec![Msg::DeleteProviderAttributes {
            provider: p.address(),
            keys: vec![],
        }],
    );
    assert!(!m.chain.state.is_auditor(&auditor.address()));
    let r = m.chain.tx(
        &t,
        vec![create_deployment(
            3,
            vec![with(vec![auditor.address()], vec![])],
            coin(1_000_000, &uusd()),
        )],
    );
    expect_err(&r, "market", 26);
}

#[test]
fn a_leased_ip_is_bid_on_only_by_a_provider_that_leases_ips() {
    let mut m = market();
    let (t, p) = (m.tenant.clone(), m.provider.clone());
    let mut g = group("ip", "10", &uusd());
    g.resources[0].resources.endpoints.push(pazar_types::market::Endpoint {
        kind: pazar_types::market::EndpointKind::LeasedIp,
        sequence: 1,
    });
    m.chain
        .ok(&t, vec![create_deployment(1, vec![g], coin(1_000_000, &uusd()))]);
    let o = order1(&m, 1);
    let r = m.chain.tx(&p, vec![bid(&o, "1", &uusd())]);
    expect_err(&r, "market", 17);
    assert!(r.log.contains("leased IP"), "{}", r.log);
    m.chain.ok(
        &p,
        vec![Msg::UpdateProvider {
            host_uri: "https://provider.example.com:8443".into(),
            tls_fingerprint: [7; 32],
            attributes: vec![
                Attribute::new("region", "eu"),
                Attribute::new(pazar_types::market::LEASED_IP_ATTRIBUTE, "true"),
            ],
            info: pazar_types::ProviderInfo {
                email: "ops@example.com".into(),
                website: String::new(),
            },
        }],
    );
    m.chain.ok(&p, vec![bid(&o, "1", &uusd())]);
}
