//! deployment + market: deployments and their groups, one order per group, bids, leases.
//!
//! State machines follow Akash's (see shared/reference/akash.md §2), with one deliberate
//! difference: when escrow runs dry the deployment stays active and its groups move to
//! `insufficient_funds`, so the tenant can top up and `start_group` instead of losing the
//! deployment (Akash support#368).

use pazar_types::market::{
    match_group, BidState, DeploymentState, GroupSpec, GroupState, LeaseCloseReason, LeaseState, OrderState,
};
use pazar_types::{Address, BidId, Coin, DeploymentId, Event, GroupId, Hash32, LeaseId, OrderId, Price};

use crate::error::{EscrowError, MarketError, TxError};
use crate::escrow::leases_of;
use crate::state::{Bid, Deployment, Group, Lease, Order, State};
use crate::Ctx;

pub(crate) fn bids_of(order: &OrderId) -> std::ops::RangeInclusive<BidId> {
    order.bid(Address::MIN)..=order.bid(Address::MAX)
}

impl State {
    // -----------------------------------------------------------------------------------------
    // Queries.

    pub fn deployment(&self, id: &DeploymentId) -> Option<&Deployment> {
        self.deployments.get(id)
    }

    pub fn deployments(&self) -> impl Iterator<Item = (&DeploymentId, &Deployment)> {
        self.deployments.iter()
    }

    pub fn bids(&self) -> impl Iterator<Item = (&BidId, &Bid)> {
        self.bids.iter()
    }

    pub fn deployments_of(&self, owner: &Address) -> impl Iterator<Item = (&DeploymentId, &Deployment)> {
        let lo = DeploymentId { owner: *owner, dseq: 0 };
        let hi = DeploymentId {
            owner: *owner,
            dseq: u64::MAX,
        };
        self.deployments.range(lo..=hi)
    }

    pub fn group(&self, id: &GroupId) -> Option<&Group> {
        self.groups.get(id)
    }

    pub fn order(&self, id: &OrderId) -> Option<&Order> {
        self.orders.get(id)
    }

    pub fn orders(&self) -> impl Iterator<Item = (&OrderId, &Order)> {
        self.orders.iter()
    }

    pub fn bid(&self, id: &BidId) -> Option<&Bid> {
        self.bids.get(id)
    }

    pub fn bids_for_order(&self, order: &OrderId) -> impl Iterator<Item = (&BidId, &Bid)> {
        self.bids.range(bids_of(order))
    }

    pub fn lease(&self, id: &LeaseId) -> Option<&Lease> {
        self.leases.get(id)
    }

    pub fn leases(&self) -> impl Iterator<Item = (&LeaseId, &Lease)> {
        self.leases.iter()
    }

    pub fn leases_of_deployment(&self, id: &DeploymentId) -> impl Iterator<Item = (&LeaseId, &Lease)> {
        self.leases.range(leases_of(id))
    }

    /// Number of leases in the active state (walks the table; for tests and tools).
    pub fn active_lease_count(&self) -> usize {
        self.leases
            .iter()
            .filter(|(_, l)| l.state == LeaseState::Active)
            .count()
    }

    // -----------------------------------------------------------------------------------------
    // Helpers.

    pub(crate) fn active_deployment(&self, id: &DeploymentId) -> Result<Deployment, MarketError> {
        let dep = self
            .deployments
            .get(id)
            .cloned()
            .ok_or_else(|| MarketError::DeploymentNotFound(id.clone()))?;
        if dep.state != DeploymentState::Active {
            return Err(MarketError::DeploymentClosed(id.clone()));
        }
        Ok(dep)
    }

    pub(crate) fn set_group_state(&mut self, ctx: &mut Ctx, id: &GroupId, state: GroupState) {
        if let Some(mut g) = self.groups.get(id).cloned() {
            if g.state != state {
                g.state = state;
                self.groups.insert(id.clone(), g);
                ctx.events.push(Event::GroupStateChanged { id: id.clone(), state });
            }
        }
    }

    /// Opens the next order of an open group (at most one open-or-active order per group).
    fn open_order(&mut self, ctx: &mut Ctx, gid: &GroupId) {
        let Some(mut g) = self.groups.get(gid).cloned() else {
            return;
        };
        debug_assert!(g.current_order.is_none(), "one open-or-active order per group");
        g.orders += 1;
        g.current_order = Some(g.orders);
        let oid = gid.order(g.orders);
        self.groups.insert(gid.clone(), g);
        let expires_at = ctx.height.saturating_add(u64::from(self.params.order_timeout_blocks));
        self.orders.insert(
            oid.clone(),
            Order {
                state: OrderState::Open,
                created_at: ctx.height,
                bids: 0,
                expires_at,
                expired: false,
            },
        );
        self.order_expiry.insert((expires_at, oid.clone()), ());
        if let Some(n) = self
            .deployments
            .get(&gid.deployment())
            .and_then(|d| d.auto_accept_after)
        {
            self.auto_accept.insert((ctx.height + u64::from(n), oid.clone()), ());
        }
        ctx.events.push(Event::OrderCreated { id: oid });
    }

    /// Returns a bid's deposit to its provider and moves the bid to `state` (`expired` when its
    /// time ran out).
    fn release_bid(&mut self, ctx: &mut Ctx, id: &BidId, state: BidState, expired: bool) -> Result<(), TxError> {
        let Some(mut bid) = self.bids.get(id).cloned() else {
            return Ok(());
        };
        let was_open = bid.state == BidState::Open;
        self.transfer(self.escrow_module(), id.provider, &bid.deposit)?;
        bid.state = state;
        bid.expired = expired;
        let expires_at = bid.expires_at;
        self.bids.insert(id.clone(), bid);
        if was_open {
            self.bid_expiry.remove(&(expires_at, id.clone()));
            self.update_load(id.provider, |l| l.open_bids = l.open_bids.saturating_sub(1));
            // The order's cap counts open bids: bids placed and withdrawn at once must not use
            // up its places (anyone can register as a provider, so that would lock an order
            // against every honest bid for nothing but fees).
            if let Some(mut order) = self.orders.get(&id.order()).cloned() {
                order.bids = order.bids.saturating_sub(1);
                self.orders.insert(id.order(), order);
            }
            ctx.events.push(Event::BidClosed {
                id: id.clone(),
                lost: state == BidState::Lost,
            });
        }
        Ok(())
    }

    /// Ends an active lease or one in grace: final payout, bid released, order closed. The
    /// account must be settled at this height already.
    pub(crate) fn end_lease(
        &mut self,
        ctx: &mut Ctx,
        id: &LeaseId,
        state: LeaseState,
        reason: LeaseCloseReason,
    ) -> Result<(), TxError> {
        let Some(mut lease) = self.leases.get(id).cloned() else {
            return Ok(());
        };
        if !lease.state.is_live() {
            return Ok(());
        }
        self.escrow_close_payment(ctx, id)?;
        if let Some(until) = lease.grace_until.take() {
            self.grace_expiry.remove(&(until, id.clone()));
        }
        lease.state = state;
        lease.closed_at = Some(ctx.height);
        lease.reason = Some(reason);
        self.leases.insert(id.clone(), lease);
        self.release_bid(ctx, id, BidState::Closed, false)?;
        self.update_load(id.provider, |l| l.active_leases = l.active_leases.saturating_sub(1));
        ctx.events.push(Event::LeaseClosed { id: id.clone(), reason });
        self.close_order_only(ctx, &id.order(), false);
        // The account was saved while the lease was still live: a top-up retry it held for
        // this lease's grace goes now, or stays for the deployment's other leases in grace.
        self.refresh_low(&id.deployment(), ctx.height);
        Ok(())
    }

    /// Closes an order (`expired` when its time ran out) and frees its group's order slot.
    fn close_order_only(&mut self, ctx: &mut Ctx, oid: &OrderId, expired: bool) {
        if let Some(mut order) = self.orders.get(oid).cloned() {
            if order.state != OrderState::Closed {
                if order.state == OrderState::Open {
                    self.order_expiry.remove(&(order.expires_at, oid.clone()));
                }
                order.state = OrderState::Closed;
                order.expired = expired;
                self.orders.insert(oid.clone(), order);
                ctx.events.push(Event::OrderClosed { id: oid.clone() });
            }
        }
        let gid = oid.group();
        if let Some(mut g) = self.groups.get(&gid).cloned() {
            if g.current_order == Some(oid.oseq) {
                g.current_order = None;
                self.groups.insert(gid, g);
            }
        }
    }

    /// Closes a group's current order with everything on it: open bids are released, an active
    /// lease ends with `reason`.
    fn close_current_order(&mut self, ctx: &mut Ctx, gid: &GroupId, reason: LeaseCloseReason) -> Result<(), TxError> {
        let Some(oseq) = self.groups.get(gid).and_then(|g| g.current_order) else {
            return Ok(());
        };
        let oid = gid.order(oseq);
        // At most `max_bids_per_order` bids: bounded.
        let bids: Vec<(BidId, BidState)> = self
            .bids
            .range(bids_of(&oid))
            .map(|(k, b)| (k.clone(), b.state))
            .collect();
        for (bid, state) in bids {
            match state {
                BidState::Open => self.release_bid(ctx, &bid, BidState::Closed, false)?,
                BidState::Active => self.end_lease(ctx, &bid, LeaseState::Closed, reason)?,
                BidState::Lost | BidState::Closed => {}
            }
        }
        self.close_order_only(ctx, &oid, false);
        Ok(())
    }

    /// Settles the deployment's escrow; if it ran dry, ends its leases with
    /// `insufficient_funds` and moves their groups to `insufficient_funds`.
    pub(crate) fn settle_deployment(&mut self, ctx: &mut Ctx, id: &DeploymentId) -> Result<(), TxError> {
        if !self.escrow_settle(id, ctx.height)? {
            return Ok(());
        }
        self.on_depleted(ctx, id)
    }

    /// The escrow of `id` ran dry at this height: its active leases go into grace, or close
    /// with `insufficient_funds` (their groups too) where the grace period is 0.
    pub(crate) fn on_depleted(&mut self, ctx: &mut Ctx, id: &DeploymentId) -> Result<(), TxError> {
        // An allowance first: a top-up that pays the next block keeps every lease running (a
        // settlement in the middle of a block, e.g. a stranger's deposit, must not stop and
        // restart a workload the allowance was meant to keep).
        if self.top_up_before_dry(ctx, id)? {
            return Ok(());
        }
        ctx.events.push(Event::EscrowDepleted { id: id.clone() });
        let active: Vec<LeaseId> = self
            .leases
            .range(leases_of(id))
            .filter(|(_, l)| l.state == LeaseState::Active)
            .map(|(k, _)| k.clone())
            .collect();
        if self.params.grace_blocks > 0 {
            return self.enter_grace(ctx, id, active);
        }
        for lid in active {
            self.end_lease(
                ctx,
                &lid,
                LeaseState::InsufficientFunds,
                LeaseCloseReason::InsufficientFunds,
            )?;
            self.set_group_state(ctx, &lid.group(), GroupState::InsufficientFunds);
        }
        Ok(())
    }

    fn create_lease_inner(&mut self, ctx: &mut Ctx, id: &BidId) -> Result<(), TxError> {
        let mut bid = self
            .bids
            .get(id)
            .cloned()
            .ok_or_else(|| MarketError::BidNotFound(id.clone()))?;
        self.escrow_add_payment(&id.deployment(), id, &bid.price, ctx.height)?;
        let oid = id.order();
        let others: Vec<BidId> = self
            .bids
            .range(bids_of(&oid))
            .filter(|(k, b)| *k != id && b.state == BidState::Open)
            .map(|(k, _)| k.clone())
            .collect();
        for other in others {
            self.release_bid(ctx, &other, BidState::Lost, false)?;
        }
        self.bid_expiry.remove(&(bid.expires_at, id.clone()));
        bid.state = BidState::Active;
        let price = bid.price.clone();
        self.bids.insert(id.clone(), bid);
        self.update_load(id.provider, |l| {
            l.open_bids = l.open_bids.saturating_sub(1);
            l.active_leases = l.active_leases.saturating_add(1);
        });
        if let Some(mut order) = self.orders.get(&oid).cloned() {
            if order.state == OrderState::Open {
                self.order_expiry.remove(&(order.expires_at, oid.clone()));
            }
            order.state = OrderState::Active;
            self.orders.insert(oid, order);
        }
        self.leases.insert(
            id.clone(),
            Lease {
                state: LeaseState::Active,
                price: price.clone(),
                created_at: ctx.height,
                closed_at: None,
                reason: None,
                grace_until: None,
            },
        );
        ctx.events.push(Event::LeaseCreated { id: id.clone(), price });
        Ok(())
    }

    /// Whether `a` has audited at least one provider (and not withdrawn every attestation).
    pub fn is_auditor(&self, a: &Address) -> bool {
        self.auditors.contains(a)
    }

    /// Refuses placements whose `signedBy` can never be met: an `allOf` auditor, or every
    /// `anyOf` auditor, that has audited no provider. Such a deployment would wait for bids that
    /// cannot come (groups are immutable), and dropping the requirement would run the workload
    /// on providers nobody vouched for. Bounded: at most `MAX_AUDITORS` per list and group.
    fn check_auditors_known(&self, groups: &[GroupSpec]) -> Result<(), MarketError> {
        for g in groups {
            let sb = &g.requirements.signed_by;
            if let Some(a) = sb.all_of.iter().find(|a| !self.is_auditor(a)) {
                return Err(MarketError::UnknownAuditor {
                    group: g.name.clone(),
                    auditor: *a,
                });
            }
            if !sb.any_of.is_empty() && !sb.any_of.iter().any(|a| self.is_auditor(a)) {
                return Err(MarketError::NoKnownAuditor {
                    group: g.name.clone(),
                    count: sb.any_of.len(),
                });
            }
        }
        Ok(())
    }

    // -----------------------------------------------------------------------------------------
    // Messages.

    pub(crate) fn exec_create_deployment(
        &mut self,
        ctx: &mut Ctx,
        dseq: u64,
        version: &Hash32,
        groups: &[GroupSpec],
        deposit: &Coin,
        auto_accept_after: Option<u32>,
    ) -> Result<(), TxError> {
        let id = DeploymentId {
            owner: ctx.sender,
            dseq,
        };
        if self.deployments.contains(&id) {
            return Err(MarketError::DeploymentExists(id).into());
        }
        if let Some(n) = auto_accept_after {
            if n > self.params.max_auto_accept_blocks {
                return Err(MarketError::AutoAcceptTooLong {
                    got: n,
                    max: self.params.max_auto_accept_blocks,
                }
                .into());
            }
        }
        self.check_auditors_known(groups)?;
        // Validation at decode guarantees ≥ 1 group, one price denomination.
        let price_denom = groups[0].resources[0].price.denom.clone();
        if self.params.denom(&price_denom).is_none() {
            return Err(MarketError::UnknownPriceDenom(price_denom).into());
        }
        self.known_denom(&deposit.denom)?;
        if deposit.denom != price_denom {
            return Err(EscrowError::DenomMismatch {
                want: price_denom,
                got: deposit.denom.clone(),
            }
            .into());
        }
        self.escrow_open(ctx, &id, deposit)?;
        self.deployments.insert(
            id.clone(),
            Deployment {
                state: DeploymentState::Active,
                version: *version,
                created_at: ctx.height,
                groups: groups.len() as u32,
                auto_accept_after,
            },
        );
        ctx.events.push(Event::DeploymentCreated {
            id: id.clone(),
            version: *version,
        });
        for (i, spec) in groups.iter().enumerate() {
            let gid = id.group(i as u32 + 1);
            self.groups.insert(
                gid.clone(),
                Group {
                    state: GroupState::Open,
                    spec: spec.clone(),
                    created_at: ctx.height,
                    current_order: None,
                    orders: 0,
                },
            );
            self.open_order(ctx, &gid);
        }
        Ok(())
    }

    pub(crate) fn exec_deposit(&mut self, ctx: &mut Ctx, id: &DeploymentId, amount: &Coin) -> Result<(), TxError> {
        self.active_deployment(id)?;
        self.known_denom(&amount.denom)?;
        if self.escrow_deposit_from(ctx, ctx.sender, id, amount)? {
            self.on_depleted(ctx, id)?;
        }
        self.resume_grace(ctx, id)?;
        self.reconsider_auto_accept(ctx, id);
        Ok(())
    }

    /// An auto-accept that failed (the escrow could not pay the best bid's first block) took its
    /// index entry with it; a deposit is what can make it succeed, so every open order of the
    /// deployment that is past its auto-accept moment is considered again at the end of this
    /// block. Bounded by the deployment's groups.
    fn reconsider_auto_accept(&mut self, ctx: &Ctx, id: &DeploymentId) {
        let Some(dep) = self.deployments.get(id).cloned() else {
            return;
        };
        let Some(n) = dep.auto_accept_after else { return };
        for gseq in 1..=dep.groups {
            let gid = id.group(gseq);
            let Some(oseq) = self.groups.get(&gid).and_then(|g| g.current_order) else {
                continue;
            };
            let oid = gid.order(oseq);
            if self
                .orders
                .get(&oid)
                .is_some_and(|o| o.state == OrderState::Open && o.created_at + u64::from(n) <= ctx.height)
            {
                self.auto_accept.insert((ctx.height, oid), ());
            }
        }
    }

    pub(crate) fn exec_update_deployment(&mut self, ctx: &mut Ctx, dseq: u64, version: &Hash32) -> Result<(), TxError> {
        let id = DeploymentId {
            owner: ctx.sender,
            dseq,
        };
        let mut dep = self.active_deployment(&id)?;
        if dep.version == *version {
            return Err(MarketError::SameVersion.into());
        }
        dep.version = *version;
        self.deployments.insert(id.clone(), dep);
        ctx.events.push(Event::DeploymentUpdated { id, version: *version });
        Ok(())
    }

    pub(crate) fn exec_close_deployment(&mut self, ctx: &mut Ctx, dseq: u64) -> Result<(), TxError> {
        let id = DeploymentId {
            owner: ctx.sender,
            dseq,
        };
        let mut dep = self.active_deployment(&id)?;
        self.settle_deployment(ctx, &id)?;
        for gseq in 1..=dep.groups {
            let gid = id.group(gseq);
            if self.groups.get(&gid).is_some_and(|g| g.state != GroupState::Closed) {
                self.close_current_order(ctx, &gid, LeaseCloseReason::Owner)?;
                self.set_group_state(ctx, &gid, GroupState::Closed);
            }
        }
        self.escrow_close_account(ctx, &id)?;
        dep.state = DeploymentState::Closed;
        self.deployments.insert(id.clone(), dep);
        ctx.events.push(Event::DeploymentClosed { id });
        Ok(())
    }

    /// close, pause and start of a group.
    pub(crate) fn exec_group_state(
        &mut self,
        ctx: &mut Ctx,
        dseq: u64,
        gseq: u32,
        to: GroupState,
    ) -> Result<(), TxError> {
        let did = DeploymentId {
            owner: ctx.sender,
            dseq,
        };
        self.active_deployment(&did)?;
        let gid = did.group(gseq);
        let group = self
            .groups
            .get(&gid)
            .ok_or_else(|| MarketError::GroupNotFound(gid.clone()))?;
        let from = group.state;
        let (allowed, action) = match to {
            GroupState::Closed => (from != GroupState::Closed, "close"),
            GroupState::Paused => (
                matches!(from, GroupState::Open | GroupState::InsufficientFunds),
                "pause",
            ),
            GroupState::Open => (
                matches!(from, GroupState::Paused | GroupState::InsufficientFunds),
                "start",
            ),
            GroupState::InsufficientFunds => (false, "set insufficient_funds"),
        };
        if !allowed {
            return Err(MarketError::GroupState {
                id: gid,
                state: from,
                action,
            }
            .into());
        }
        self.settle_deployment(ctx, &did)?;
        if to == GroupState::Open {
            self.set_group_state(ctx, &gid, GroupState::Open);
            self.open_order(ctx, &gid);
        } else {
            self.close_current_order(ctx, &gid, LeaseCloseReason::Owner)?;
            self.set_group_state(ctx, &gid, to);
        }
        Ok(())
    }

    pub(crate) fn exec_create_bid(
        &mut self,
        ctx: &mut Ctx,
        oid: &OrderId,
        price: &Price,
        deposit: &Coin,
    ) -> Result<(), TxError> {
        let provider = self
            .providers
            .get(&ctx.sender)
            .ok_or(MarketError::NotProvider(ctx.sender))?;
        let order = self
            .orders
            .get(oid)
            .cloned()
            .ok_or_else(|| MarketError::OrderNotFound(oid.clone()))?;
        if order.state != OrderState::Open {
            return Err(MarketError::OrderNotOpen {
                id: oid.clone(),
                state: order.state,
            }
            .into());
        }
        let gid = oid.group();
        let group = self
            .groups
            .get(&gid)
            .ok_or_else(|| MarketError::GroupNotFound(gid.clone()))?;
        let bid_id = oid.bid(ctx.sender);
        if self.bids.contains(&bid_id) {
            return Err(MarketError::BidExists(oid.clone()).into());
        }
        if order.bids >= self.params.max_bids_per_order {
            return Err(MarketError::TooManyBids {
                order: oid.clone(),
                max: self.params.max_bids_per_order,
            }
            .into());
        }
        let max = group.spec.max_price().ok_or(EscrowError::Overflow)?;
        if price.denom != max.denom {
            return Err(MarketError::PriceDenom {
                want: max.denom,
                got: price.denom.clone(),
            }
            .into());
        }
        if price.amount > max.amount {
            return Err(MarketError::PriceAboveMax {
                max,
                got: price.clone(),
            }
            .into());
        }
        let dp = self
            .params
            .denom(&deposit.denom)
            .ok_or_else(|| crate::error::BankError::UnknownDenom(deposit.denom.clone()))?;
        if deposit.amount < dp.min_bid_deposit {
            return Err(EscrowError::BidDepositTooSmall {
                min: Coin::new(dp.min_bid_deposit, deposit.denom.clone()),
                got: deposit.clone(),
            }
            .into());
        }
        let sender = ctx.sender;
        match_group(&group.spec, &provider.attributes, |auditor| {
            self.audited_attributes(&sender, auditor)
        })
        .map_err(MarketError::RequirementsNotMet)?;
        self.transfer(ctx.sender, self.escrow_module(), deposit)?;
        // The bid cannot outlive its order, whose expiry closes it anyway.
        let expires_at = ctx
            .height
            .saturating_add(u64::from(self.params.bid_timeout_blocks))
            .min(order.expires_at);
        self.bids.insert(
            bid_id.clone(),
            Bid {
                state: BidState::Open,
                price: price.clone(),
                deposit: deposit.clone(),
                created_at: ctx.height,
                expires_at,
                expired: false,
            },
        );
        self.bid_expiry.insert((expires_at, bid_id.clone()), ());
        let mut order = order;
        order.bids += 1;
        let created_at = order.created_at;
        self.orders.insert(oid.clone(), order);
        self.update_load(ctx.sender, |l| l.open_bids = l.open_bids.saturating_add(1));
        ctx.events.push(Event::BidCreated {
            id: bid_id,
            price: price.clone(),
        });
        // A bid that arrives after the auto-accept moment is considered at the end of this block.
        if let Some(n) = self
            .deployments
            .get(&oid.deployment())
            .and_then(|d| d.auto_accept_after)
        {
            if created_at + u64::from(n) < ctx.height {
                self.auto_accept.insert((ctx.height, oid.clone()), ());
            }
        }
        Ok(())
    }

    pub(crate) fn exec_close_bid(&mut self, ctx: &mut Ctx, id: &BidId) -> Result<(), TxError> {
        let bid = self.bids.get(id).ok_or_else(|| MarketError::BidNotFound(id.clone()))?;
        if id.provider != ctx.sender {
            return Err(MarketError::NotBidProvider(id.clone()).into());
        }
        match bid.state {
            BidState::Open => {
                self.release_bid(ctx, id, BidState::Closed, false)?;
                // A withdrawn bid leaves no record, so the bids kept per order stay bounded by
                // the cap on open ones (end-of-block and close walk them); the provider may bid
                // again with a new deposit.
                self.bids.remove(id);
                Ok(())
            }
            BidState::Active => Err(MarketError::BidActive(id.clone()).into()),
            state => Err(MarketError::BidNotOpen { id: id.clone(), state }.into()),
        }
    }

    pub(crate) fn exec_create_lease(&mut self, ctx: &mut Ctx, id: &BidId) -> Result<(), TxError> {
        let bid = self.bids.get(id).ok_or_else(|| MarketError::BidNotFound(id.clone()))?;
        if id.owner != ctx.sender {
            return Err(MarketError::NotOwner {
                id: id.deployment(),
                sender: ctx.sender,
            }
            .into());
        }
        if bid.state != BidState::Open {
            return Err(MarketError::BidNotOpen {
                id: id.clone(),
                state: bid.state,
            }
            .into());
        }
        let oid = id.order();
        let order = self
            .orders
            .get(&oid)
            .ok_or_else(|| MarketError::OrderNotFound(oid.clone()))?;
        if order.state != OrderState::Open {
            return Err(MarketError::OrderNotOpen {
                id: oid,
                state: order.state,
            }
            .into());
        }
        self.active_deployment(&id.deployment())?;
        let gid = id.group();
        let group = self
            .groups
            .get(&gid)
            .ok_or_else(|| MarketError::GroupNotFound(gid.clone()))?;
        if group.state != GroupState::Open {
            return Err(MarketError::GroupState {
                id: gid,
                state: group.state,
                action: "lease",
            }
            .into());
        }
        self.create_lease_inner(ctx, id)
    }

    pub(crate) fn exec_close_lease(
        &mut self,
        ctx: &mut Ctx,
        id: &LeaseId,
        reason: LeaseCloseReason,
    ) -> Result<(), TxError> {
        let lease = self
            .leases
            .get(id)
            .ok_or_else(|| MarketError::LeaseNotFound(id.clone()))?;
        let by_tenant = ctx.sender == id.owner;
        if by_tenant {
            if !reason.is_owner_reason() {
                return Err(MarketError::BadCloseReason { reason, who: "tenant" }.into());
            }
        } else if ctx.sender == id.provider {
            if !reason.is_provider_reason() {
                return Err(MarketError::BadCloseReason {
                    reason,
                    who: "provider",
                }
                .into());
            }
        } else {
            return Err(MarketError::NotLeaseParty(ctx.sender).into());
        }
        if !lease.state.is_live() {
            return Err(MarketError::LeaseNotActive {
                id: id.clone(),
                state: lease.state,
            }
            .into());
        }
        self.settle_deployment(ctx, &id.deployment())?;
        if self.leases.get(id).is_some_and(|l| !l.state.is_live()) {
            // Cannot happen while dry escrows give grace; with a grace period of 0 the
            // settlement ended the lease already.
            return Ok(());
        }
        self.end_lease(ctx, id, LeaseState::Closed, reason)?;
        // The balance may now pay the deployment's other leases in grace.
        self.resume_grace(ctx, &id.deployment())?;
        let gid = id.group();
        if by_tenant {
            // The tenant wants another provider: the group stays open with a fresh order.
            if self.groups.get(&gid).is_some_and(|g| g.state == GroupState::Open) {
                self.open_order(ctx, &gid);
            }
        } else {
            self.set_group_state(ctx, &gid, GroupState::Paused);
        }
        Ok(())
    }

    pub(crate) fn exec_withdraw(&mut self, ctx: &mut Ctx, id: &LeaseId) -> Result<(), TxError> {
        if !self.payments.contains(id) {
            return Err(EscrowError::PaymentNotFound(id.clone()).into());
        }
        if ctx.sender != id.provider {
            return Err(EscrowError::NotLeaseProvider.into());
        }
        self.settle_deployment(ctx, &id.deployment())?;
        self.escrow_pay_out(ctx, id)
    }

    // -----------------------------------------------------------------------------------------
    // End of block.

    /// Ends the leases of every account that runs dry at or before `ctx.height`.
    pub(crate) fn process_depletions(&mut self, ctx: &mut Ctx) -> Result<(), TxError> {
        let due: Vec<DeploymentId> = self
            .depletion
            .range(
                ..=(
                    ctx.height,
                    DeploymentId {
                        owner: Address::MAX,
                        dseq: u64::MAX,
                    },
                ),
            )
            .map(|((_, id), _)| id.clone())
            .collect();
        for id in due {
            self.settle_deployment(ctx, &id)?;
        }
        Ok(())
    }

    /// Orders due for auto-accept at or before `ctx.height`.
    pub(crate) fn due_auto_accepts(&mut self, height: u64) -> Vec<OrderId> {
        let due: Vec<(u64, OrderId)> = self
            .auto_accept
            .range(
                ..=(
                    height,
                    OrderId {
                        owner: Address::MAX,
                        dseq: u64::MAX,
                        gseq: u32::MAX,
                        oseq: u32::MAX,
                    },
                ),
            )
            .map(|(k, _)| k.clone())
            .collect();
        for k in &due {
            self.auto_accept.remove(k);
        }
        due.into_iter().map(|(_, o)| o).collect()
    }

    /// Orders and bids whose time ran out at or before `height`, taken off their indexes. Every
    /// entry due at a height was made by a transaction `order_timeout_blocks` or
    /// `bid_timeout_blocks` earlier, so a block's expiry work is bounded by what earlier blocks
    /// could hold; nothing else is visited.
    pub(crate) fn due_expiries(&mut self, height: u64) -> (Vec<OrderId>, Vec<BidId>) {
        let orders: Vec<(u64, OrderId)> = self
            .order_expiry
            .range(..=(height, OrderId::MAX))
            .map(|(k, _)| k.clone())
            .collect();
        let bids: Vec<(u64, BidId)> = self
            .bid_expiry
            .range(..=(height, BidId::MAX))
            .map(|(k, _)| k.clone())
            .collect();
        for k in &orders {
            self.order_expiry.remove(k);
        }
        for k in &bids {
            self.bid_expiry.remove(k);
        }
        (
            orders.into_iter().map(|(_, o)| o).collect(),
            bids.into_iter().map(|(_, b)| b).collect(),
        )
    }

    /// Closes an order that got no accepted bid in time: its open bids close (deposits back),
    /// the order closes as `expired` and its group pauses, which the tenant sees and answers
    /// with `start_group` (a fresh order) or `close_group`. Akash's provider pausing a group by
    /// closing its lease is the same move.
    pub(crate) fn expire_order(&mut self, ctx: &mut Ctx, oid: &OrderId) -> Result<(), TxError> {
        if self
            .orders
            .get(oid)
            .is_none_or(|o| o.state != OrderState::Open || o.expires_at > ctx.height)
        {
            return Ok(());
        }
        // At most `max_bids_per_order` bids: bounded.
        let open: Vec<BidId> = self
            .bids
            .range(bids_of(oid))
            .filter(|(_, b)| b.state == BidState::Open)
            .map(|(k, _)| k.clone())
            .collect();
        for bid in open {
            self.release_bid(ctx, &bid, BidState::Closed, true)?;
        }
        self.close_order_only(ctx, oid, true);
        let gid = oid.group();
        if self.groups.get(&gid).is_some_and(|g| g.state == GroupState::Open) {
            self.set_group_state(ctx, &gid, GroupState::Paused);
        }
        Ok(())
    }

    /// Closes a bid nobody accepted in time and returns its deposit (`bid_closed`, as when the
    /// provider closes it, so a provider daemon releases what it reserved).
    pub(crate) fn expire_bid(&mut self, ctx: &mut Ctx, id: &BidId) -> Result<(), TxError> {
        if self
            .bids
            .get(id)
            .is_none_or(|b| b.state != BidState::Open || b.expires_at > ctx.height)
        {
            return Ok(());
        }
        self.release_bid(ctx, id, BidState::Closed, true)
    }

    /// Accepts the lowest open bid of `oid` (ties: lowest provider address) if the order is open.
    pub(crate) fn auto_accept(&mut self, ctx: &mut Ctx, oid: &OrderId) -> Result<(), TxError> {
        if self.orders.get(oid).is_none_or(|o| o.state != OrderState::Open) {
            return Ok(());
        }
        if self
            .groups
            .get(&oid.group())
            .is_none_or(|g| g.state != GroupState::Open)
        {
            return Ok(());
        }
        let best = self
            .bids
            .range(bids_of(oid))
            .filter(|(_, b)| b.state == BidState::Open)
            .min_by(|a, b| a.1.price.amount.cmp(&b.1.price.amount).then_with(|| a.0.cmp(b.0)))
            .map(|(k, _)| k.clone());
        match best {
            Some(bid) => self.create_lease_inner(ctx, &bid),
            None => Ok(()),
        }
    }
}
