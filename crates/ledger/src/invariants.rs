//! Global invariants, checked after every block in tests (and available to tools).
//!
//! For each denomination: Σ balances (module accounts included) = supply, and the escrow module
//! holds exactly Σ escrow balances + Σ unwithdrawn payments + Σ locked bid deposits. For each
//! escrow account: deposits = balance + transferred + refunded, and transferred = what its
//! payments received; for each payment: received = balance + withdrawn with the take exactly
//! `floor(withdrawn × rate)`. Market objects agree with each other; every open bid and order is
//! indexed at its expiry height, which is still ahead; the auditor index counts attestations.

use std::collections::BTreeMap;

use pazar_types::market::{BidState, LeaseState, OrderState};
use pazar_types::{Address, Denom, DEC_SCALE};

use crate::escrow::leases_of;
use crate::state::{ProviderLoad, State, BPS};

/// Checks every invariant; the error names the first one broken.
pub fn check(state: &State) -> Result<(), String> {
    let mut sums: BTreeMap<Denom, u128> = BTreeMap::new();
    for ((addr, denom), amount) in state.balances.iter() {
        if *amount == 0 {
            return Err(format!("zero balance stored for {addr} {denom}"));
        }
        let s = sums.entry(denom.clone()).or_default();
        *s = s.checked_add(*amount).ok_or("balance sum overflows")?;
    }
    for (denom, supply) in state.supply.iter() {
        let sum = sums.remove(denom).unwrap_or(0);
        if sum != *supply {
            return Err(format!("{denom}: balances sum to {sum} but supply is {supply}"));
        }
    }
    if let Some((d, _)) = sums.into_iter().next() {
        return Err(format!("balances in {d}, which has no supply entry"));
    }

    let mut held: BTreeMap<Denom, u128> = BTreeMap::new();
    let mut add = |d: &Denom, a: u128| *held.entry(d.clone()).or_default() += a;
    for (id, acct) in state.escrow.iter() {
        let deposits: u128 = acct.deposits.iter().map(|d| d.amount).sum();
        if deposits != acct.balance {
            return Err(format!(
                "escrow {id}: deposits sum {deposits} != balance {}",
                acct.balance
            ));
        }
        if acct.deposited != acct.balance + acct.transferred + acct.refunded {
            return Err(format!(
                "escrow {id}: deposited {} != balance {} + transferred {} + refunded {}",
                acct.deposited, acct.balance, acct.transferred, acct.refunded
            ));
        }
        let received: u128 = state.payments.range(leases_of(id)).map(|(_, p)| p.received).sum();
        if received != acct.transferred {
            return Err(format!(
                "escrow {id}: payments received {received} != transferred {}",
                acct.transferred
            ));
        }
        if acct.closed && (acct.balance != 0 || !acct.open_payments.is_empty()) {
            return Err(format!("escrow {id}: closed but holds funds or payments"));
        }
        match acct.depletes_at {
            Some(h) if !state.depletion.contains(&(h, id.clone())) => {
                return Err(format!("escrow {id}: depletion at {h} not indexed"))
            }
            Some(h) if h <= state.height => return Err(format!("escrow {id}: depletion at {h} is overdue")),
            _ => {}
        }
        add(&acct.denom, acct.balance);
    }
    for ((h, id), ()) in state.depletion.iter() {
        if state.escrow.get(id).and_then(|a| a.depletes_at) != Some(*h) {
            return Err(format!("stale depletion index entry ({h}, {id})"));
        }
    }
    for (lid, p) in state.payments.iter() {
        if p.received != p.balance + p.withdrawn {
            return Err(format!(
                "payment {lid}: received {} != balance {} + withdrawn {}",
                p.received, p.balance, p.withdrawn
            ));
        }
        let take = (p.withdrawn / BPS) * u128::from(p.take_bps) + (p.withdrawn % BPS) * u128::from(p.take_bps) / BPS;
        if p.take != take {
            return Err(format!(
                "payment {lid}: take {} != floor(withdrawn × rate) {take}",
                p.take
            ));
        }
        if p.carry >= DEC_SCALE {
            return Err(format!("payment {lid}: carry {} is a whole unit or more", p.carry));
        }
        // A lease in grace is not paid: only an active one has an open payment.
        let lease_active = state.leases.get(lid).is_some_and(|l| l.state == LeaseState::Active);
        if p.open != lease_active {
            return Err(format!(
                "payment {lid}: open={} but lease active={lease_active}",
                p.open
            ));
        }
        if !p.open && p.balance != 0 {
            return Err(format!("payment {lid}: closed with unwithdrawn balance"));
        }
        // Exact accrual: over its life a lease was paid floor(rate × blocks), to the unit.
        let lease = state
            .leases
            .get(lid)
            .ok_or_else(|| format!("payment {lid} without lease"))?;
        let acct = state
            .escrow
            .get(&lid.deployment())
            .ok_or_else(|| format!("payment {lid} without account"))?;
        // Over each paid stretch a lease was paid floor(rate × blocks), to the unit.
        let until = if p.open {
            acct.settled_at
        } else {
            p.stopped_at
                .ok_or_else(|| format!("payment {lid}: closed without a stop height"))?
        };
        if p.open == p.stopped_at.is_some() {
            return Err(format!(
                "payment {lid}: open={} with stop height {:?}",
                p.open, p.stopped_at
            ));
        }
        // A lease that ended stopped being paid when it ended, or earlier when it was in grace.
        if let (Some(stop), Some(closed)) = (p.stopped_at, lease.closed_at) {
            if stop > closed {
                return Err(format!(
                    "payment {lid}: stopped at {stop}, after the lease closed at {closed}"
                ));
            }
        }
        if p.since < lease.created_at {
            return Err(format!("payment {lid}: paid since {} before the lease began", p.since));
        }
        let blocks = until
            .checked_sub(p.since)
            .ok_or_else(|| format!("payment {lid} settled before it began"))?;
        let (units, frac) = p.rate.amount.accrue(blocks, 0).ok_or("accrual overflows")?;
        if p.received + p.unsettled != p.before + units {
            return Err(format!(
                "payment {lid}: received {} + unsettled {} != before {} + floor({} × {blocks}) = {units}",
                p.received, p.unsettled, p.before, p.rate.amount
            ));
        }
        if p.open && p.carry != frac {
            return Err(format!("payment {lid}: carry {} != {frac}", p.carry));
        }
        add(&p.rate.denom, p.balance);
    }
    let mut loads: BTreeMap<Address, ProviderLoad> = BTreeMap::new();
    for (bid_id, bid) in state.bids.iter() {
        let order = state
            .orders
            .get(&bid_id.order())
            .ok_or_else(|| format!("bid {bid_id} without order"))?;
        match bid.state {
            BidState::Open => {
                add(&bid.deposit.denom, bid.deposit.amount);
                loads.entry(bid_id.provider).or_default().open_bids += 1;
                if order.state != OrderState::Open {
                    return Err(format!("open bid {bid_id} on a {:?} order", order.state));
                }
            }
            BidState::Active => {
                add(&bid.deposit.denom, bid.deposit.amount);
                loads.entry(bid_id.provider).or_default().active_leases += 1;
                if order.state != OrderState::Active {
                    return Err(format!("active bid {bid_id} on a {:?} order", order.state));
                }
                if state.leases.get(bid_id).is_none_or(|l| !l.state.is_live()) {
                    return Err(format!("active bid {bid_id} without a live lease"));
                }
            }
            BidState::Lost | BidState::Closed => {}
        }
    }
    check_expiry_indexes(state)?;
    for (addr, load) in state.provider_load.iter() {
        if loads.get(addr) != Some(load) {
            return Err(format!(
                "provider {addr}: load {load:?} != counted {:?}",
                loads.get(addr)
            ));
        }
    }
    if loads.len() != state.provider_load.len() {
        return Err("provider load table misses a provider".into());
    }
    for (lid, lease) in state.leases.iter() {
        if lease.state.is_live() && state.bids.get(lid).is_none_or(|b| b.state != BidState::Active) {
            return Err(format!("live lease {lid} without an active bid"));
        }
        match (lease.state, lease.grace_until) {
            (LeaseState::Grace, Some(h)) => {
                if !state.grace_expiry.contains(&(h, lid.clone())) {
                    return Err(format!("lease {lid}: grace until {h} not indexed"));
                }
                if h < state.height {
                    return Err(format!("lease {lid}: grace until {h} is overdue"));
                }
            }
            (LeaseState::Grace, None) => return Err(format!("lease {lid}: in grace without an end")),
            (_, Some(h)) => return Err(format!("lease {lid}: {:?} with a grace end {h}", lease.state)),
            (_, None) => {}
        }
    }
    for ((h, lid), ()) in state.grace_expiry.iter() {
        if state.leases.get(lid).and_then(|l| l.grace_until) != Some(*h) {
            return Err(format!("stale grace index entry ({h}, {lid})"));
        }
    }
    for (id, p) in state.escrow_policies.iter() {
        if state.escrow.get(id).is_none_or(|a| a.closed) {
            return Err(format!("escrow policy of {id} without an open account"));
        }
        if let Some(h) = p.low_at {
            if !state.escrow_low.contains(&(h, id.clone())) {
                return Err(format!("escrow policy of {id}: threshold at {h} not indexed"));
            }
            if h < state.height {
                return Err(format!("escrow policy of {id}: threshold at {h} is overdue"));
            }
        }
        if p.alerted && p.low_at.is_some() {
            return Err(format!("escrow policy of {id}: alerted and still watched"));
        }
    }
    for ((h, id), ()) in state.escrow_low.iter() {
        if state.escrow_policies.get(id).and_then(|p| p.low_at) != Some(*h) {
            return Err(format!("stale threshold index entry ({h}, {id})"));
        }
    }
    for (gid, g) in state.groups.iter() {
        let live: Vec<u32> = (1..=g.orders)
            .filter(|o| {
                state
                    .orders
                    .get(&gid.order(*o))
                    .is_some_and(|ord| ord.state != OrderState::Closed)
            })
            .collect();
        if live.len() > 1 || live.first().copied() != g.current_order {
            return Err(format!(
                "group {gid}: live orders {live:?}, current {:?}",
                g.current_order
            ));
        }
    }
    let mut vouching: BTreeMap<Address, u32> = BTreeMap::new();
    for ((_, auditor), attrs) in state.audits.iter() {
        if attrs.is_empty() {
            return Err(format!("empty attestation stored for auditor {auditor}"));
        }
        *vouching.entry(*auditor).or_default() += 1;
    }
    let indexed: BTreeMap<Address, u32> = state.auditors.iter().map(|(a, n)| (*a, *n)).collect();
    if vouching != indexed {
        return Err(format!(
            "auditor index {indexed:?} != attestations counted {vouching:?}"
        ));
    }
    check_training(state)?;
    let escrow = state.escrow_module();
    for denom in state.params.denoms() {
        let expect = held.get(denom).copied().unwrap_or(0);
        let actual = state.balance(&escrow, denom);
        if expect != actual {
            return Err(format!(
                "{denom}: escrow module holds {actual}, escrow objects account for {expect}"
            ));
        }
    }
    Ok(())
}

/// Training: per job `budget = escrow + paid + take + refunded`, `bonds` = Σ its members'
/// bonds and `members` their number; the training escrow module holds Σ `escrow + bonds` per
/// denomination; a running job is indexed at its deadline, which is still ahead, and nothing
/// else is indexed; an ended job holds nothing; round work and audits exist only for a
/// running job's current round.
fn check_training(state: &State) -> Result<(), String> {
    use pazar_types::train::JobState;
    let mut held: BTreeMap<Denom, u128> = BTreeMap::new();
    for (id, j) in state.train_jobs() {
        let accounted = [j.escrow, j.paid, j.take, j.refunded]
            .iter()
            .try_fold(0u128, |a, b| a.checked_add(*b))
            .ok_or_else(|| format!("job {id}: budget accounting overflows"))?;
        if accounted != j.spec.budget.amount {
            return Err(format!(
                "job {id}: budget {} != escrow {} + paid {} + take {} + refunded {}",
                j.spec.budget.amount, j.escrow, j.paid, j.take, j.refunded
            ));
        }
        let (mut bonds, mut members) = (0u128, 0u16);
        for (_, m) in state.train_members(id) {
            bonds += m.bond;
            members += 1;
        }
        if bonds != j.bonds || members != j.members {
            return Err(format!(
                "job {id}: bonds {} and members {} != counted {bonds} and {members}",
                j.bonds, j.members
            ));
        }
        let running = j.state == JobState::Running;
        if running != state.train_deadlines.contains(&(j.deadline, id)) {
            return Err(format!(
                "job {id}: {:?} with deadline {} indexed={}",
                j.state, j.deadline, !running
            ));
        }
        if running && j.deadline <= state.height {
            return Err(format!("job {id}: deadline {} is overdue", j.deadline));
        }
        if matches!(j.state, JobState::Finished | JobState::Cancelled)
            && (j.escrow != 0 || j.bonds != 0 || j.members != 0)
        {
            return Err(format!("job {id}: ended but holds funds or members"));
        }
        *held.entry(j.spec.budget.denom.clone()).or_default() += j.escrow + j.bonds;
    }
    for ((h, id), ()) in state.train_deadlines.iter() {
        if state
            .train_job(*id)
            .is_none_or(|j| j.state != JobState::Running || j.deadline != *h)
        {
            return Err(format!("stale training deadline entry ({h}, {id})"));
        }
    }
    let current = |job: &u64, round: &u32| {
        state
            .train_job(*job)
            .is_some_and(|j| j.state == JobState::Running && j.round == *round)
    };
    for ((job, round, w), _) in state.train_round_work.iter() {
        if !current(job, round) {
            return Err(format!(
                "round work of {w} in job {job} round {round}, not a running round"
            ));
        }
    }
    for ((job, round, t), _) in state.train_audits.iter() {
        if !current(job, round) {
            return Err(format!("audit of {t} in job {job} round {round}, not a running round"));
        }
    }
    let module = state.train_escrow();
    for denom in state.params.denoms() {
        let expect = held.get(denom).copied().unwrap_or(0);
        let actual = state.balance(&module, denom);
        if expect != actual {
            return Err(format!(
                "{denom}: training escrow holds {actual}, jobs account for {expect}"
            ));
        }
    }
    Ok(())
}

/// Every open bid and open order has exactly one expiry entry, at its `expires_at`, which is
/// still ahead (end-of-block work closed everything due); no entry names anything else. An
/// expired object is closed.
fn check_expiry_indexes(state: &State) -> Result<(), String> {
    for (id, bid) in state.bids.iter() {
        let indexed = state.bid_expiry.contains(&(bid.expires_at, id.clone()));
        if (bid.state == BidState::Open) != indexed {
            return Err(format!(
                "bid {id} is {:?} and its expiry at {} is indexed={indexed}",
                bid.state, bid.expires_at
            ));
        }
        if bid.state == BidState::Open {
            if bid.expires_at <= state.height {
                return Err(format!("open bid {id}: expiry at {} is overdue", bid.expires_at));
            }
            let order = state
                .orders
                .get(&id.order())
                .ok_or_else(|| format!("bid {id} without order"))?;
            if bid.expires_at > order.expires_at {
                return Err(format!("open bid {id} outlives its order"));
            }
        }
        if bid.expired && bid.state != BidState::Closed {
            return Err(format!("bid {id} expired but is {:?}", bid.state));
        }
    }
    for ((h, id), ()) in state.bid_expiry.iter() {
        if state
            .bids
            .get(id)
            .is_none_or(|b| b.expires_at != *h || b.state != BidState::Open)
        {
            return Err(format!("stale bid expiry entry ({h}, {id})"));
        }
    }
    for (id, order) in state.orders.iter() {
        let indexed = state.order_expiry.contains(&(order.expires_at, id.clone()));
        if (order.state == OrderState::Open) != indexed {
            return Err(format!(
                "order {id} is {:?} and its expiry at {} is indexed={indexed}",
                order.state, order.expires_at
            ));
        }
        if order.state == OrderState::Open && order.expires_at <= state.height {
            return Err(format!("open order {id}: expiry at {} is overdue", order.expires_at));
        }
        if order.expired && order.state != OrderState::Closed {
            return Err(format!("order {id} expired but is {:?}", order.state));
        }
    }
    for ((h, id), ()) in state.order_expiry.iter() {
        if state
            .orders
            .get(id)
            .is_none_or(|o| o.expires_at != *h || o.state != OrderState::Open)
        {
            return Err(format!("stale order expiry entry ({h}, {id})"));
        }
    }
    Ok(())
}
