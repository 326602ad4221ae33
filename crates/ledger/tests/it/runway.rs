//! Runway rules: `escrow_low` once per crossing, automatic top-ups under an allowance (limit,
//! expiry, the owner's balance), grace instead of an immediate close, resumption by a deposit
//! that pays the resumption minimum (never by one block's price), top-ups retried in grace for
//! an owner funded again, and the policy's own checks. Every block goes through `Chain::block`, which checks every
//! invariant (tokens conserved, escrow and payment accounting exact, indexes exact).

use crate::common::*;
use pazar_ledger::{Params, TOP_UP_RETRY_BLOCKS};
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
    lease_with(Params::devnet("upzr", "uusd"), deposit)
}

/// Like [`lease`] on a chain with `params`.
fn lease_with(params: Params, deposit: u128) -> Lease {
    let tenant = key(KeyScheme::Ed25519, 1);
    let provider = key(KeyScheme::Ed25519, 2);
    let mut chain = Chain::with_params(&[&tenant, &provider], params);
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

fn deposit(l: &Lease, amount: u128) -> Msg {
    Msg::DepositDeployment {
        id: l.id.clone(),
        amount: coin(amount, &uusd()),
    }
}

/// One block with `msgs` from `key`: its receipts' events and its end-block events together.
fn block_with(l: &mut Lease, key: &SigningKey, msgs: Vec<Msg>) -> Vec<Event> {
    let tx = l.chain.sign(key, msgs);
    let out = l.chain.block(vec![tx]);
    assert!(out.receipts.iter().all(|r| r.is_ok()), "{:?}", out.receipts);
    out.receipts
        .into_iter()
        .flat_map(|r| r.events)
        .chain(out.end_block_events)
        .collect()
}

fn lease_state(l: &Lease) -> (LeaseState, Option<u64>) {
    let lease = l.chain.state.lease(&l.lease).expect("lease");
    (lease.state, lease.grace_until)
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
    // Nothing left to draw: no retries in grace, only a new policy could help.
    let events = l.chain.advance_to(l.chain.state.height + 5 * TOP_UP_RETRY_BLOCKS);
    assert_eq!(
        count(&events, |e| matches!(e, Event::EscrowTopUpSkipped { .. })),
        0,
        "{events:?}"
    );
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
    // Less than one block, then 100 blocks: still in grace, the deposits kept in the escrow.
    for amount in [500, 99_500] {
        let r = l.chain.ok(&t, vec![deposit(&l, amount)]);
        assert!(!r.events.iter().any(|e| matches!(e, Event::LeaseResumed { .. })));
        assert_eq!(lease_state(&l), (LeaseState::Grace, Some(until)));
    }
    // The resumption minimum to the unit: one short of it is not enough, the last unit is.
    let resume = l.chain.state.resume_blocks();
    assert_eq!(resume, pazar_types::records::DEFAULT_RESUME_MIN_BLOCKS);
    let short = u128::from(resume) * 1_000 - 100_000 - 1;
    let r = l.chain.ok(&t, vec![deposit(&l, short)]);
    assert!(!r.events.iter().any(|e| matches!(e, Event::LeaseResumed { .. })));
    assert_eq!(lease_state(&l), (LeaseState::Grace, Some(until)));
    let r = l.chain.ok(&t, vec![deposit(&l, 1)]);
    assert!(
        r.events.contains(&Event::LeaseResumed { id: l.lease.clone() }),
        "{:?}",
        r.events
    );
    let resumed_at = l.chain.state.height;
    assert_eq!(lease_state(&l), (LeaseState::Active, None));
    // What was deposited pays exactly `resume` blocks from the resumption.
    assert_eq!(depletes_at(&l), resumed_at + resume + 1);
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
    // A target of 200 blocks is below the resumption minimum: the top-up brings the minimum.
    let resume = l.chain.state.resume_blocks();
    assert!(resume > 200);
    let r = l.chain.ok(&t, vec![policy(10, Some((10_000_000, 200, None)))]);
    assert!(
        r.events.contains(&Event::LeaseResumed { id: l.lease.clone() }),
        "{:?}",
        r.events
    );
    assert!(r.events.contains(&Event::EscrowToppedUp {
        id: l.id.clone(),
        from: t.address(),
        amount: coin(u128::from(resume) * 1_000, &uusd()),
        remaining: 10_000_000 - u128::from(resume) * 1_000,
    }));
    let view = l.chain.state.escrow_view(&l.id, l.chain.state.height).expect("view");
    assert_eq!(view.runway_blocks, Some(resume + 1));
}

#[test]
fn an_allowance_too_small_to_resume_moves_what_it_may_and_the_lease_stays_in_grace() {
    let mut l = lease(600_000);
    let t = l.tenant.clone();
    let dry = depletes_at(&l);
    l.chain.advance_to(dry + 3);
    let until = dry + l.chain.state.params.grace_blocks;
    let r = l.chain.ok(&t, vec![policy(10, Some((1_000_000, 200, None)))]);
    assert!(
        !r.events.iter().any(|e| matches!(e, Event::LeaseResumed { .. })),
        "{:?}",
        r.events
    );
    assert_eq!(lease_state(&l), (LeaseState::Grace, Some(until)));
    // The whole allowance is in the escrow, kept for the tenant (refunded on close).
    let view = l.chain.state.escrow_view(&l.id, l.chain.state.height).expect("view");
    assert_eq!(view.balance, 1_000_000);
    let events = l.chain.advance_to(until);
    assert!(events.contains(&Event::LeaseClosed {
        id: l.lease.clone(),
        reason: LeaseCloseReason::InsufficientFunds
    }));
}

#[test]
fn deposits_of_one_block_s_price_in_grace_buy_no_fresh_grace() {
    let mut l = lease(600_000);
    let t = l.tenant.clone();
    let dry = depletes_at(&l);
    l.chain.advance_to(dry);
    let until = dry + l.chain.state.params.grace_blocks;
    assert_eq!(lease_state(&l), (LeaseState::Grace, Some(until)));
    // Every 100 blocks the tenant pays one block: not one resumes the lease, not one moves the
    // end of its grace, and the provider never works for it.
    let mut deposits = 0u128;
    while l.chain.state.height + 100 < until {
        l.chain.advance_to(l.chain.state.height + 99);
        let r = l.chain.ok(&t, vec![deposit(&l, 1_000)]);
        deposits += 1_000;
        assert!(
            !r.events
                .iter()
                .any(|e| matches!(e, Event::LeaseResumed { .. } | Event::LeaseGrace { .. })),
            "{:?}",
            r.events
        );
        assert_eq!(lease_state(&l), (LeaseState::Grace, Some(until)));
    }
    assert!(deposits >= 30_000);
    let events = l.chain.advance_to(until);
    assert!(events.contains(&Event::LeaseClosed {
        id: l.lease.clone(),
        reason: LeaseCloseReason::InsufficientFunds
    }));
    // Nothing of them was paid out: they wait in the escrow for the tenant.
    assert_eq!(l.chain.state.payment(&l.lease).expect("payment").received, 600_000);
    let view = l.chain.state.escrow_view(&l.id, l.chain.state.height).expect("view");
    assert_eq!(view.balance, deposits);
}

#[test]
fn a_chain_with_a_short_grace_asks_a_whole_grace_of_payment_to_resume() {
    let mut params = Params::devnet("upzr", "uusd");
    params.grace_blocks = 20;
    let mut l = lease_with(params, 600_000);
    let t = l.tenant.clone();
    // `resume_min_blocks` stays at its default, above the grace: the grace bounds it.
    assert!(l.chain.state.params.resume_min_blocks > 20);
    assert_eq!(l.chain.state.resume_blocks(), 20);
    l.chain.advance_to(depletes_at(&l) + 2);
    let r = l.chain.ok(&t, vec![deposit(&l, 19_000)]);
    assert!(!r.events.iter().any(|e| matches!(e, Event::LeaseResumed { .. })));
    let r = l.chain.ok(&t, vec![deposit(&l, 1_000)]);
    assert!(
        r.events.contains(&Event::LeaseResumed { id: l.lease.clone() }),
        "{:?}",
        r.events
    );
}

#[test]
fn an_owner_out_of_funds_when_the_escrow_ran_dry_is_drawn_on_once_funded_and_the_lease_resumes() {
    let mut l = lease(600_000);
    let (t, p) = (l.tenant.clone(), l.provider.clone());
    l.chain.ok(&t, vec![policy(50, Some((10_000_000, 300, None)))]);
    let give = l.chain.bal(&t, &uusd());
    l.chain.ok(
        &t,
        vec![Msg::Send {
            to: p.address(),
            amount: coin(give, &uusd()),
        }],
    );
    let dry = depletes_at(&l);
    let events = l.chain.advance_to(dry);
    assert!(events.contains(&Event::EscrowTopUpSkipped {
        id: l.id.clone(),
        reason: TopUpSkipped::NoFunds
    }));
    let (state, until) = lease_state(&l);
    assert_eq!(state, LeaseState::Grace);
    let until = until.expect("grace end");
    // Unfunded: one retry every TOP_UP_RETRY_BLOCKS, each saying why, none announcing the
    // crossing again. A stranger's deposits in between do not push the retries back.
    let k = TOP_UP_RETRY_BLOCKS;
    let (mut events, mut strangers) = (Vec::new(), 0u128);
    while l.chain.state.height < dry + 3 * k {
        let one = deposit(&l, 1);
        events.extend(block_with(&mut l, &p, vec![one]));
        strangers += 1;
    }
    let skipped = |e: &Event| {
        matches!(
            e,
            Event::EscrowTopUpSkipped {
                reason: TopUpSkipped::NoFunds,
                ..
            }
        )
    };
    assert_eq!(count(&events, skipped), 3, "{events:?}");
    assert_eq!(
        count(&events, |e| matches!(e, Event::EscrowLow { .. })),
        0,
        "{events:?}"
    );
    assert_eq!(lease_state(&l).0, LeaseState::Grace);
    // Funded again (by anyone): the next retry draws on the allowance and the lease resumes,
    // long before its grace ends.
    let funded_at = l.chain.state.height + 1;
    l.chain.ok(
        &p,
        vec![Msg::Send {
            to: t.address(),
            amount: coin(5_000_000, &uusd()),
        }],
    );
    let events = l.chain.advance_to(funded_at + k);
    let resumed = events
        .iter()
        .position(|e| *e == Event::LeaseResumed { id: l.lease.clone() })
        .expect("resumed by a retried top-up");
    assert!(
        events[..resumed]
            .iter()
            .any(|e| matches!(e, Event::EscrowToppedUp { .. })),
        "{events:?}"
    );
    assert_eq!(lease_state(&l), (LeaseState::Active, None));
    assert!(l.chain.state.height < until);
    // The top-up brought the resumption minimum (more than the target of 300 blocks), less
    // what the stranger had deposited.
    let resume = u128::from(l.chain.state.resume_blocks());
    assert_eq!(l.chain.bal(&t, &uusd()), 5_000_000 - (resume * 1_000 - strangers));
}

#[test]
fn a_grace_shorter_than_the_retry_period_is_retried_in_its_last_block() {
    let mut params = Params::devnet("upzr", "uusd");
    params.grace_blocks = TOP_UP_RETRY_BLOCKS / 2;
    let mut l = lease_with(params, 600_000);
    let (t, p) = (l.tenant.clone(), l.provider.clone());
    l.chain.ok(&t, vec![policy(0, Some((10_000_000, 300, None)))]);
    let give = l.chain.bal(&t, &uusd());
    l.chain.ok(
        &t,
        vec![Msg::Send {
            to: p.address(),
            amount: coin(give, &uusd()),
        }],
    );
    let dry = depletes_at(&l);
    l.chain.advance_to(dry);
    let until = lease_state(&l).1.expect("in grace");
    assert_eq!(until, dry + TOP_UP_RETRY_BLOCKS / 2);
    l.chain.ok(
        &p,
        vec![Msg::Send {
            to: t.address(),
            amount: coin(5_000_000, &uusd()),
        }],
    );
    let events = l.chain.advance_to(until);
    assert!(
        events.contains(&Event::LeaseResumed { id: l.lease.clone() }),
        "{events:?}"
    );
    assert!(
        !events.iter().any(|e| matches!(e, Event::LeaseClosed { .. })),
        "{events:?}"
    );
    assert_eq!(lease_state(&l), (LeaseState::Active, None));
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
