//! Runway rules: `escrow_low` once per crossing, automatic top-ups under an allowance (limit,
//! expiry, the owner's balance), grace instead of an immediate close, resumption by a deposit,
//! and the policy's own checks. Every block goes through `Chain::block`, which checks every
//! invariant (tokens conserved, escrow and payment accounting exact, indexes exact).

use crate::common::*;
use pazar_types::event::TopUpSkipped;
use pazar_types::market::{GroupState, LeaseCloseReason, LeaseState};
use pazar_types::records::{EscrowPolicySpec, TopUpSpec};
use pazar_types::{DeploymentId, Event, KeyScheme, LeaseId, Msg, Price, SigningKey};

struct Lease {
    chain: Chain,
    tenant: SigningKey,
    provider: SigningKey,
    id: DeploymentId,
    lease: LeaseId,
    /// Height the lease was made.
    start: u64,
}

/// One deployment in uusd with `deposit`, leased at 1,000 uusd a block (dry after
/// `deposit / 1000` blocks).
fn lease(deposit: u128) -> Lease {
    let tenant = key(KeyScheme::Ed25519, 1);
    let provider = key(KeyScheme::Ed25519, 2);
    let mut chain = Chain::new(&[&tenant, &provider]);
    chain.ok(&provider, vec![create_provider(vec![])]);
    chain.ok(
        &tenant,
        vec![create_deployment(
            1,
            vec![group("web", "100000", &uusd())],
            coin(deposit, &uusd()),
        )],
    );
    let id = DeploymentId {
        owner: tenant.address(),
        dseq: 1,
    };
    let order = id.group(1).order(1);
    chain.ok(
        &provider,
        vec![Msg::CreateBid {
            order: order.clone(),
            price: Price {
                denom: uusd(),
                amount: dec("1000"),
            },
            deposit: coin(500_000, &upzr()),
        }],
    );
    let lease = order.bid(provider.address());
    chain.ok(&tenant, vec![Msg::CreateLease { bid: lease.clone() }]);
    let start = chain.state.height;
    Lease {
        chain,
        tenant,
        provider,
        id,
        lease,
        start,
    }
}

fn policy(low_blocks: u64, top_up: Option<(u128, u64, Option<u64>)>) -> Msg {
    Msg::SetEscrowPolicy {
        dseq: 1,
        policy: EscrowPolicySpec {
            low_blocks,
            top_up: top_up.map(|(limit, target_blocks, expires_at)| TopUpSpec {
                limit: coin(limit, &uusd()),
                target_blocks,
                expires_at,
            }),
        },
    }
}

fn depletes_at(l: &Lease) -> u64 {
    l.chain
        .state
        .escrow_view(&l.id, l.chain.state.height)
        .and_then(|v| v.depletes_at)
        .expect("a paying escrow runs dry at some height")
}

fn count(events: &[Event], f: impl Fn(&Event) -> bool) -> usize {
    events.iter().filter(|e| f(e)).count()
}

#[test]
fn escrow_low_is_announced_once_when_the_runway_reaches_the_threshold_and_again_after_a_rise() {
    let mut l = lease(600_000);
    let t = l.tenant.clone();
    l.chain.ok(&t, vec![policy(100, None)]);
    let dry = depletes_at(&l);
    assert_eq!(dry, l.start + 601);
    // Quiet until the runway is 100 blocks.
    let events = l.chain.advance_to(dry - 101);
    assert_eq!(
        count(&events, |e| matches!(e, Event::EscrowLow { .. })),
        0,
        "{events:?}"
    );
    let events = l.chain.advance_to(dry - 100);
    assert!(
        events.contains(&Event::EscrowLow {
            id: l.id.clone(),
            runway_blocks: 100,
            low_blocks: 100
        }),
        "{events:?}"
    );
    // Once per crossing.
    let events = l.chain.advance_to(dry - 50);
    assert_eq!(
        count(&events, |e| matches!(e, Event::EscrowLow { .. })),
        0,
        "{events:?}"
    );
    // A deposit lifts the runway above the threshold and re-arms the alert.
    l.chain.ok(
        &t,
        vec![Msg::DepositDeployment {
            id: l.id.clone(),
            amount: coin(200_000, &uusd()),
        }],
    );
    let dry = depletes_at(&l);
    let events = l.chain.advance_to(dry - 100);
    assert_eq!(
        count(&events, |e| matches!(e, Event::EscrowLow { .. })),
        1,
        "{events:?}"
    );
}

#[test]
fn a_policy_set_below_its_threshold_announces_at_the_end_of_that_block() {
    let mut l = lease(600_000);
    let t = l.tenant.clone();
    let r = l.chain.ok(&t, vec![policy(10_000, None)]);
    assert!(r.events.iter().any(|e| matches!(e, Event::EscrowPolicySet { .. })));
    let events = l.chain.advance_to(l.chain.state.height + 1);
    assert_eq!(
        count(&events, |e| matches!(e, Event::EscrowLow { .. })),
        0,
        "{events:?}"
    );
    // The announcement was in the block of the policy itself.
    let policy = l.chain.state.escrow_policy(&l.id).expect("policy");
    assert!(policy.alerted);
}

#[test]
fn top_up_refills_the_escrow_to_its_target_from_the_owner_without_a_tenant_command() {
    let mut l = lease(600_000);
    let t = l.tenant.clone();
    l.chain.ok(&t, vec![policy(50, Some((5_000_000, 300, None)))]);
    let owner_before = l.chain.bal(&t, &uusd());
    // The first deposit pays 600 blocks; run for 2,000 with no tenant command.
    let events = l.chain.advance_to(l.start + 2_000);
    let tops: Vec<u128> = events
        .iter()
        .filter_map(|e| match e {
            Event::EscrowToppedUp { amount, from, .. } => {
                assert_eq!(*from, t.address());
                Some(amount.amount)
            }
            _ => None,
        })
        .collect();
    assert!(tops.len() >= 5, "top-ups {tops:?}");
    assert_eq!(l.chain.state.lease(&l.lease).expect("lease").state, LeaseState::Active);
    assert_eq!(
        count(&events, |e| matches!(
            e,
            Event::EscrowDepleted { .. } | Event::LeaseGrace { .. }
        )),
        0
    );
    // Each top-up brought the runway to 300 blocks: 250 blocks were below 50... exactly what
    // the target asks, to the unit (1,000 a block).
    let topped: u128 = tops.iter().sum();
    assert_eq!(l.chain.bal(&t, &uusd()), owner_before - topped);
    let a = l
        .chain
        .state
        .escrow_policy(&l.id)
        .and_then(|p| p.top_up.clone())
        .expect("allowance");
    assert_eq!(a.spent, topped);
    assert_eq!(a.remaining, 5_000_000 - topped);
    let view = l.chain.state.escrow_view(&l.id, l.chain.state.height).expect("view");
    assert!(view.runway_blocks.expect("paying") > 50);
    // The provider was paid for every block.
    let owed = u128::from(l.chain.state.height - l.start) * 1_000;
    let p = l.chain.state.payment(&l.lease).expect("payment");
    assert_eq!(
        p.received
            + l.chain
                .state
                .escrow_view(&l.id, l.chain.state.height)
                .expect("v")
                .accrued,
        owed
    );
}

#[test]
fn a_spent_allowance_lets_the_escrow_run_dry_and_says_why() {
    let mut l = lease(600_000);
    let t = l.tenant.clone();
    // Enough for one top-up of about 250 blocks, not two.
    l.chain.ok(&t, vec![policy(50, Some((300_000, 300, None)))]);
    let events = l.chain.advance_to(l.start + 2_000);
    assert_eq!(
        count(&events, |e| matches!(e, Event::EscrowToppedUp { .. })),
        2,
        "{events:?}"
    );
    assert!(events.contains(&Event::EscrowTopUpSkipped {
        id: l.id.clone(),
        reason: TopUpSkipped::AllowanceSpent
    }));
    assert!(events.iter().any(|e| matches!(e, Event::LeaseGrace { .. })));
    let a = l
        .chain
        .state
        .escrow_policy(&l.id)
        .and_then(|p| p.top_up.clone())
        .expect("allowance");
    assert_eq!((a.spent, a.remaining), (300_000, 0));
}

#[test]
fn an_expired_allowance_tops_up_nothing() {
    let mut l = lease(600_000);
    let t = l.tenant.clone();
    let expires = l.chain.state.height + 10;
    l.chain.ok(&t, vec![policy(50, Some((5_000_000, 300, Some(expires))))]);
    let dry = depletes_at(&l);
    let events = l.chain.advance_to(dry);
    assert!(events.contains(&Event::EscrowTopUpSkipped {
        id: l.id.clone(),
        reason: TopUpSkipped::Expired
    }));
    assert_eq!(count(&events, |e| matches!(e, Event::EscrowToppedUp { .. })), 0);
    assert_eq!(l.chain.state.lease(&l.lease).expect("lease").state, LeaseState::Grace);
}

#[test]
fn an_owner_without_funds_gets_a_partial_top_up_then_none() {
    let mut l = lease(600_000);
    let (t, p) = (l.tenant.clone(), l.provider.clone());
    l.chain.ok(&t, vec![policy(50, Some((5_000_000, 300, None)))]);
    // The owner keeps 100,000 uusd: a tenth of what the allowance would take.
    let keep = 100_000;
    let give = l.chain.bal(&t, &uusd()) - keep;
    l.chain.ok(
        &t,
        vec![Msg::Send {
            to: p.address(),
            amount: coin(give, &uusd()),
        }],
    );
    let events = l.chain.advance_to(l.start + 2_000);
    let tops: Vec<u128> = events
        .iter()
        .filter_map(|e| match e {
            Event::EscrowToppedUp { amount, .. } => Some(amount.amount),
            _ => None,
        })
        .collect();
    assert_eq!(tops, vec![keep]);
    assert!(events.contains(&Event::EscrowTopUpSkipped {
        id: l.id.clone(),
        reason: TopUpSkipped::NoFunds
    }));
    assert_eq!(l.chain.bal(&t, &uusd()), 0);
}

#[test]
fn revoking_the_allowance_stops_top_ups() {
    let mut l = lease(600_000);
    let t = l.tenant.clone();
    l.chain.ok(&t, vec![policy(50, Some((5_000_000, 300, None)))]);
    l.chain.ok(&t, vec![policy(0, None)]);
    assert!(l.chain.state.escrow_policy(&l.id).is_none());
    let events = l.chain.advance_to(depletes_at(&l));
    assert_eq!(count(&events, |e| matches!(e, Event::EscrowToppedUp { .. })), 0);
    assert!(events.iter().any(|e| matches!(e, Event::LeaseGrace { .. })));
}

#[test]
fn a_deposit_in_grace_resumes_the_lease_and_the_provider_is_paid_again_from_then() {
    let mut l = lease(600_000);
    let t = l.tenant.clone();
    let dry = depletes_at(&l);
    let events = l.chain.advance_to(dry);
    let until = dry + l.chain.state.params.grace_blocks;
    assert!(events.contains(&Event::LeaseGrace {
        id: l.lease.clone(),
        until
    }));
    let lease = l.chain.state.lease(&l.lease).expect("lease").clone();
    assert_eq!((lease.state, lease.grace_until), (LeaseState::Grace, Some(until)));
    let paid_before = l.chain.state.payment(&l.lease).expect("payment").received;
    assert_eq!(paid_before, 600_000);
    // 20 blocks of grace: nobody pays, nobody is paid.
    l.chain.advance_to(dry + 20);
    // Less than one block: still in grace.
    let r = l.chain.ok(
        &t,
        vec![Msg::DepositDeployment {
            id: l.id.clone(),
            amount: coin(500, &uusd()),
        }],
    );
    assert!(!r.events.iter().any(|e| matches!(e, Event::LeaseResumed { .. })));
    assert_eq!(l.chain.state.lease(&l.lease).expect("lease").state, LeaseState::Grace);
    let r = l.chain.ok(
        &t,
        vec![Msg::DepositDeployment {
            id: l.id.clone(),
            amount: coin(99_500, &uusd()),
        }],
    );
    assert!(
        r.events.contains(&Event::LeaseResumed { id: l.lease.clone() }),
        "{:?}",
        r.events
    );
    let resumed_at = l.chain.state.height;
    let lease = l.chain.state.lease(&l.lease).expect("lease").clone();
    assert_eq!((lease.state, lease.grace_until), (LeaseState::Active, None));
    // 100,000 pays exactly 100 blocks from the resumption.
    assert_eq!(depletes_at(&l), resumed_at + 101);
    l.chain.advance_to(resumed_at + 40);
    let p = l.chain.state.payment(&l.lease).expect("payment");
    let view = l.chain.state.escrow_view(&l.id, l.chain.state.height).expect("view");
    assert_eq!(p.received + view.accrued - paid_before, 40 * 1_000);
    // The grace end that was indexed no longer closes it.
    let events = l.chain.advance_to(until.max(resumed_at + 41));
    assert!(
        !events.iter().any(|e| matches!(e, Event::LeaseClosed { .. })),
        "{events:?}"
    );
}

#[test]
fn an_allowance_granted_in_grace_resumes_the_lease_at_once() {
    let mut l = lease(600_000);
    let t = l.tenant.clone();
    l.chain.advance_to(depletes_at(&l) + 3);
    assert_eq!(l.chain.state.lease(&l.lease).expect("lease").state, LeaseState::Grace);
    let r = l.chain.ok(&t, vec![policy(10, Some((1_000_000, 200, None)))]);
    assert!(
        r.events.contains(&Event::LeaseResumed { id: l.lease.clone() }),
        "{:?}",
        r.events
    );
    assert!(r.events.iter().any(|e| matches!(e, Event::EscrowToppedUp { .. })));
    let view = l.chain.state.escrow_view(&l.id, l.chain.state.height).expect("view");
    assert_eq!(view.runway_blocks, Some(201));
}

#[test]
fn grace_that_runs_out_closes_the_lease_and_either_party_may_close_it_before() {
    let mut l = lease(600_000);
    let dry = depletes_at(&l);
    let until = dry + l.chain.state.params.grace_blocks;
    let events = l.chain.advance_to(until);
    assert!(events.contains(&Event::LeaseClosed {
        id: l.lease.clone(),
        reason: LeaseCloseReason::InsufficientFunds
    }));
    assert_eq!(
        l.chain.state.lease(&l.lease).expect("lease").state,
        LeaseState::InsufficientFunds
    );
    assert_eq!(
        l.chain.state.group(&l.id.group(1)).expect("group").state,
        GroupState::InsufficientFunds
    );
    // The provider's bid deposit came back and its load is free.
    let load = l.chain.state.provider_load(&l.provider.address());
    assert_eq!(load.active_leases, 0);

    // In grace, the tenant closes with `provider_unresponsive` (a tenant's reason).
    let mut l = lease(600_000);
    let t = l.tenant.clone();
    l.chain.advance_to(depletes_at(&l));
    let r = l.chain.ok(
        &t,
        vec![Msg::CloseLease {
            lease: l.lease.clone(),
            reason: LeaseCloseReason::ProviderUnresponsive,
        }],
    );
    assert!(r.events.contains(&Event::LeaseClosed {
        id: l.lease.clone(),
        reason: LeaseCloseReason::ProviderUnresponsive
    }));
    let events = l
        .chain
        .advance_to(l.chain.state.height + l.chain.state.params.grace_blocks + 1);
    assert!(
        !events.iter().any(|e| matches!(e, Event::LeaseClosed { .. })),
        "{events:?}"
    );
}

#[test]
fn a_provider_may_not_close_with_a_tenant_s_reason() {
    let mut l = lease(600_000);
    let p = l.provider.clone();
    let r = l.chain.tx(
        &p,
        vec![Msg::CloseLease {
            lease: l.lease.clone(),
            reason: LeaseCloseReason::ProviderUnresponsive,
        }],
    );
    assert!(!r.is_ok());
    assert_eq!(l.chain.state.lease(&l.lease).expect("lease").state, LeaseState::Active);
}

#[test]
fn bad_policies_are_refused_with_the_field_named() {
    let mut l = lease(600_000);
    let (t, p) = (l.tenant.clone(), l.provider.clone());
    // A target at or below the threshold would fire again at once.
    let r = l.chain.tx(&t, vec![policy(100, Some((1_000, 100, None)))]);
    assert!(!r.is_ok() && r.log.contains("target_blocks"), "{}", r.log);
    // A zero limit.
    let r = l.chain.tx(&t, vec![policy(10, Some((0, 100, None)))]);
    assert!(!r.is_ok() && r.log.contains("limit"), "{}", r.log);
    // Another denomination than the escrow's.
    let r = l.chain.tx(
        &t,
        vec![Msg::SetEscrowPolicy {
            dseq: 1,
            policy: EscrowPolicySpec {
                low_blocks: 10,
                top_up: Some(TopUpSpec {
                    limit: coin(1_000, &upzr()),
                    target_blocks: 100,
                    expires_at: None,
                }),
            },
        }],
    );
    assert!(!r.is_ok() && r.log.contains("denomination"), "{}", r.log);
    // Already expired.
    let past = l.chain.state.height - 1;
    let r = l.chain.tx(&t, vec![policy(10, Some((1_000, 100, Some(past))))]);
    assert!(!r.is_ok() && r.log.contains("expires"), "{}", r.log);
    // Out of bounds.
    let r = l.chain.tx(&t, vec![policy(u64::MAX, None)]);
    assert!(!r.is_ok() && r.log.contains("low_blocks"), "{}", r.log);
    // Someone else's deployment: the message names the sender's own dseq, which it lacks.
    let r = l.chain.tx(&p, vec![policy(10, Some((1_000, 100, None)))]);
    assert!(!r.is_ok());
    assert!(l.chain.state.escrow_policy(&l.id).is_none());
}

#[test]
fn closing_the_deployment_drops_its_policy_and_refunds_nothing_the_allowance_did_not_move() {
    let mut l = lease(600_000);
    let t = l.tenant.clone();
    l.chain.ok(&t, vec![policy(50, Some((5_000_000, 300, None)))]);
    let before = l.chain.bal(&t, &uusd());
    l.chain.ok(&t, vec![Msg::CloseDeployment { dseq: 1 }]);
    assert!(l.chain.state.escrow_policy(&l.id).is_none());
    // The escrow's remainder came back; the allowance was never held.
    assert!(l.chain.bal(&t, &uusd()) > before);
    let events = l.chain.advance_to(l.chain.state.height + 1_000);
    assert!(!events
        .iter()
        .any(|e| matches!(e, Event::EscrowToppedUp { .. } | Event::EscrowLow { .. })));
}

#[test]
fn a_deposit_below_the_threshold_does_not_announce_the_same_crossing_again() {
    let mut l = lease(600_000);
    let (t, p) = (l.tenant.clone(), l.provider.clone());
    l.chain.ok(&t, vec![policy(100, None)]);
    let dry = depletes_at(&l);
    let events = l.chain.advance_to(dry - 100);
    assert_eq!(
        count(&events, |e| matches!(e, Event::EscrowLow { .. })),
        1,
        "{events:?}"
    );
    l.chain.advance_to(dry - 60);
    // A stranger's tiny deposit settles the account and leaves the runway below 100.
    let r = l.chain.ok(
        &p,
        vec![Msg::DepositDeployment {
            id: l.id.clone(),
            amount: coin(1_000, &uusd()),
        }],
    );
    assert!(!r.events.iter().any(|e| matches!(e, Event::EscrowLow { .. })));
    let events = l.chain.advance_to(dry - 30);
    assert_eq!(
        count(&events, |e| matches!(e, Event::EscrowLow { .. })),
        0,
        "{events:?}"
    );
}

#[test]
fn a_settlement_in_the_dry_block_tops_up_without_stopping_the_lease() {
    let mut l = lease(600_000);
    let (t, p) = (l.tenant.clone(), l.provider.clone());
    // No alert, top-up only: due in the very block the escrow would run dry.
    l.chain.ok(&t, vec![policy(0, Some((5_000_000, 300, None)))]);
    let dry = depletes_at(&l);
    l.chain.advance_to(dry - 1);
    // In that block, before its end, the provider withdraws: the settlement finds it dry.
    let r = l.chain.ok(&p, vec![Msg::WithdrawLease { lease: l.lease.clone() }]);
    assert!(
        r.events.iter().any(|e| matches!(e, Event::EscrowToppedUp { .. })),
        "{:?}",
        r.events
    );
    assert!(
        !r.events
            .iter()
            .any(|e| matches!(e, Event::LeaseGrace { .. } | Event::EscrowDepleted { .. })),
        "{:?}",
        r.events
    );
    assert_eq!(l.chain.state.lease(&l.lease).expect("lease").state, LeaseState::Active);
}

#[test]
fn an_allowance_revoked_in_the_dry_block_pays_for_nothing() {
    let mut l = lease(600_000);
    let t = l.tenant.clone();
    l.chain.ok(&t, vec![policy(0, Some((5_000_000, 300, None)))]);
    let dry = depletes_at(&l);
    l.chain.advance_to(dry - 1);
    let before = l.chain.bal(&t, &uusd());
    // Revoked in the block it would have been drawn on: the settlement finds the escrow dry
    // with no allowance left to draw.
    let r = l.chain.ok(&t, vec![policy(0, None)]);
    assert!(
        !r.events.iter().any(|e| matches!(e, Event::EscrowToppedUp { .. })),
        "{:?}",
        r.events
    );
    assert!(
        r.events.iter().any(|e| matches!(e, Event::LeaseGrace { .. })),
        "{:?}",
        r.events
    );
    // Fees are in upzr: not one uusd left the owner.
    assert_eq!(l.chain.bal(&t, &uusd()), before);
}
