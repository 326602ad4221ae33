//! runway: what keeps a tenant from waking up to a dead service.
//!
//! - **Alerts.** A deployment's owner sets a threshold in blocks; when the escrow's runway falls
//!   to it, end-of-block announces `escrow_low` once, and a rise above the threshold (a deposit,
//!   a cheaper set of leases) re-arms it.
//! - **Automatic top-up.** The owner grants an allowance from its own account (a limit in the
//!   escrow's denomination, an optional expiry, a target runway). When the runway falls to the
//!   threshold, the ledger moves what brings it back to the target (at most what is left of the
//!   allowance and what the owner holds) into the escrow, as the owner's deposit.
//! - **Grace.** When the escrow runs dry its leases are not closed at once: they enter grace for
//!   `grace_blocks` (a parameter). The provider is not paid and keeps the lease's volumes; at
//!   the end of the grace period they close with `insufficient_funds` as before.
//! - **Resumption.** Leases in grace resume together once the escrow pays every live lease of
//!   the deployment for [`State::resume_blocks`] blocks (`resume_min_blocks`, at most a whole
//!   grace). Less stays in the escrow and the grace clock runs on: a deposit of one block's
//!   price cannot buy a fresh grace period, so each grace a provider gives is paid for by that
//!   many blocks. A top-up in grace aims at that much at least.
//! - **Retried top-ups.** While every lease of a deployment is in grace and its allowance has
//!   something left, the top-up is tried again every [`TOP_UP_RETRY_BLOCKS`] (and in the last
//!   block of the earliest grace), so an owner who was out of funds (`no_funds`) and is funded
//!   again is drawn on before the grace ends. The retry is the deployment's threshold entry:
//!   one per deployment, never an announcement of its own.
//!
//! Every piece of end-of-block work is found through an index keyed by height (as escrow
//! depletion is): a block visits only the deployments whose threshold, retry or grace falls in
//! it, so its cost does not grow with the number of deployments holding a policy.

use pazar_types::event::TopUpSkipped;
use pazar_types::market::{BidState, GroupState, LeaseCloseReason, LeaseState};
use pazar_types::records::{EscrowPolicy, EscrowPolicySpec, TopUpAllowance};
use pazar_types::{Address, BidId, Coin, DeploymentId, Event, LeaseId, Price};

use crate::error::{EscrowError, TxError};
use crate::state::State;
use crate::Ctx;

/// Blocks between two tries of a top-up for a deployment whose leases are all in grace: an
/// owner funded again is drawn on within this many blocks, and one deployment costs at most one
/// top-up attempt per this many blocks of its grace.
pub const TOP_UP_RETRY_BLOCKS: u64 = 10;

/// The greatest deployment id: the upper end of a range over every deployment.
const DEPLOYMENT_MAX: DeploymentId = DeploymentId {
    owner: Address::MAX,
    dseq: u64::MAX,
};

/// A lease in grace, as the runway rules need it.
struct InGrace {
    id: LeaseId,
    price: Price,
    /// The height at whose end its grace runs out.
    until: u64,
}

impl State {
    pub fn escrow_policy(&self, id: &DeploymentId) -> Option<&EscrowPolicy> {
        self.escrow_policies.get(id)
    }

    /// `set_escrow_policy`: the owner replaces its deployment's policy (or clears it).
    pub(crate) fn exec_set_escrow_policy(
        &mut self,
        ctx: &mut Ctx,
        dseq: u64,
        spec: &EscrowPolicySpec,
    ) -> Result<(), TxError> {
        let id = DeploymentId {
            owner: ctx.sender,
            dseq,
        };
        self.active_deployment(&id)?;
        let denom = self
            .escrow
            .get(&id)
            .map(|a| a.denom.clone())
            .ok_or_else(|| EscrowError::AccountNotFound(id.clone()))?;
        if let Some(t) = &spec.top_up {
            if t.limit.denom != denom {
                return Err(EscrowError::DenomMismatch {
                    want: denom,
                    got: t.limit.denom.clone(),
                }
                .into());
            }
            if let Some(expires_at) = t.expires_at.filter(|e| *e < ctx.height) {
                return Err(EscrowError::AllowanceExpired {
                    expires_at,
                    height: ctx.height,
                }
                .into());
            }
        }
        // The old policy goes first, so a revoked allowance pays for nothing from here on; then
        // the account is settled, so the new threshold is measured from now (it may run dry
        // doing so).
        if let Some(old) = self.escrow_policies.remove(&id).and_then(|p| p.low_at) {
            self.escrow_low.remove(&(old, id.clone()));
        }
        self.settle_deployment(ctx, &id)?;
        if spec.low_blocks > 0 || spec.top_up.is_some() {
            let policy = EscrowPolicy {
                low_blocks: spec.low_blocks,
                top_up: spec.top_up.as_ref().map(|t| TopUpAllowance {
                    remaining: t.limit.amount,
                    spent: 0,
                    target_blocks: t.target_blocks,
                    expires_at: t.expires_at,
                }),
                alerted: false,
                low_at: None,
            };
            self.escrow_policies.insert(id.clone(), policy);
            self.refresh_low(&id, ctx.height);
        }
        ctx.events.push(Event::EscrowPolicySet {
            id: id.clone(),
            policy: spec.clone(),
        });
        // A new allowance can resume leases in grace at once.
        if !self.leases_in_grace(&id).is_empty() {
            self.top_up(ctx, &id)?;
        }
        Ok(())
    }

    /// Re-indexes the height at which `id`'s runway falls to its threshold. Called whenever its
    /// account is saved, and when its leases change state, with the current height: the runway
    /// is measured from there (an account saved before it is settled still has an older
    /// `settled_at`). A runway above the threshold re-arms the alert; a closed account drops the
    /// policy. An account that pays nothing while leases are in grace indexes its next top-up
    /// retry instead ([`State::top_up_retry_at`]).
    pub(crate) fn refresh_low(&mut self, id: &DeploymentId, height: u64) {
        let Some(old) = self.escrow_policies.get(id) else {
            return;
        };
        let mut p = old.clone();
        let Some(acct) = self.escrow.get(id) else {
            return;
        };
        if acct.closed {
            if let Some(h) = p.low_at {
                self.escrow_low.remove(&(h, id.clone()));
            }
            self.escrow_policies.remove(id);
            return;
        }
        let now = height.max(acct.settled_at);
        let runway = acct.depletes_at.map(|d| d.saturating_sub(now));
        if runway.is_none_or(|r| r > p.low_blocks) {
            p.alerted = false;
        }
        let want = match acct.depletes_at {
            None => self.top_up_retry_at(id, &p, height),
            Some(_) if p.alerted => None,
            Some(d) => Some(d.saturating_sub(p.low_blocks).max(now)),
        };
        if want != p.low_at {
            if let Some(h) = p.low_at {
                self.escrow_low.remove(&(h, id.clone()));
            }
            if let Some(h) = want {
                self.escrow_low.insert((h, id.clone()), ());
            }
            p.low_at = want;
        }
        if *old != p {
            self.escrow_policies.insert(id.clone(), p);
        }
    }

    /// When a deployment that pays nothing should try its allowance again: never without
    /// leases in grace or with an allowance spent or expired (only a new policy helps then,
    /// and setting it tries at once); else a retry already indexed stays where it is (so a
    /// stranger's deposit cannot push it back), and a new one comes `TOP_UP_RETRY_BLOCKS` from
    /// now or in the last block of the earliest grace, whichever is first.
    fn top_up_retry_at(&self, id: &DeploymentId, p: &EscrowPolicy, height: u64) -> Option<u64> {
        let a = p.top_up.as_ref()?;
        if a.remaining == 0 || a.expires_at.is_some_and(|e| e < height) {
            return None;
        }
        let first_end = self.leases_in_grace(id).into_iter().map(|g| g.until).min()?;
        if let Some(h) = p.low_at.filter(|h| *h >= height) {
            return Some(h);
        }
        // After this block's retries ran, a new one can only be due in a later block.
        Some(
            height
                .saturating_add(TOP_UP_RETRY_BLOCKS)
                .min(first_end)
                .max(height + 1),
        )
    }

    /// End of block: every deployment whose runway reached its threshold at or before this
    /// height is announced (`escrow_low`) and topped up under its allowance; one whose leases
    /// are all in grace tries its allowance again (no announcement: its runway crossed long
    /// ago) and, if that still cannot resume them, indexes its next retry. Runs before
    /// depletion, so a threshold of 0 with an allowance tops up in the block the escrow would
    /// have run dry, and before the ends of grace, so the last retry comes in time.
    pub(crate) fn process_low_runways(&mut self, ctx: &mut Ctx) -> Result<(), TxError> {
        let due: Vec<(u64, DeploymentId)> = self
            .escrow_low
            .range(..=(ctx.height, DEPLOYMENT_MAX))
            .map(|(k, _)| k.clone())
            .collect();
        for (h, id) in due {
            self.escrow_low.remove(&(h, id.clone()));
            let Some(mut p) = self.escrow_policies.get(&id).cloned() else {
                continue;
            };
            // Marked before anything settles the account, so the settlement does not index
            // this crossing a second time.
            p.alerted = true;
            p.low_at = None;
            let low_blocks = p.low_blocks;
            self.escrow_policies.insert(id.clone(), p);
            let paying = self.escrow.get(&id).and_then(|a| a.depletes_at);
            if let Some(d) = paying.filter(|_| low_blocks > 0) {
                ctx.events.push(Event::EscrowLow {
                    id: id.clone(),
                    runway_blocks: d.saturating_sub(ctx.height),
                    low_blocks,
                });
            }
            self.top_up(ctx, &id)?;
            // A skipped top-up saved nothing: the next retry (if leases wait in grace) is
            // indexed here.
            self.refresh_low(&id, ctx.height);
        }
        Ok(())
    }

    /// Blocks of every live lease that the escrow must pay before its leases in grace resume:
    /// `resume_min_blocks`, but never more than a whole grace period (a chain with short graces
    /// need not lower it), and at least 1.
    pub fn resume_blocks(&self) -> u64 {
        self.params.resume_min_blocks.min(self.params.grace_blocks).max(1)
    }

    /// What `blocks` more blocks of every lease the deployment pays or would pay again (its
    /// open payments and `grace`, its leases in grace) cost, beyond what its balance already
    /// covers from `height` on (saturating).
    fn top_up_need(&self, id: &DeploymentId, height: u64, blocks: u64, grace: &[InGrace]) -> u128 {
        let Some(acct) = self.escrow.get(id) else {
            return 0;
        };
        let since = height.saturating_sub(acct.settled_at);
        let open = self.owed_over(acct, since.saturating_add(blocks));
        let grace = grace
            .iter()
            .map(|g| g.price.amount.accrue(blocks, 0).map_or(u128::MAX, |(u, _)| u))
            .fold(0u128, u128::saturating_add);
        open.saturating_add(grace).saturating_sub(acct.balance)
    }

    /// Moves what the allowance allows (and the owner holds) into the escrow, enough for the
    /// allowance's target runway, and with leases in grace at least what resumes them;
    /// announces a top-up that was due and could not be made.
    pub(crate) fn top_up(&mut self, ctx: &mut Ctx, id: &DeploymentId) -> Result<(), TxError> {
        let Some(mut p) = self.escrow_policies.get(id).cloned() else {
            return Ok(());
        };
        let Some(mut a) = p.top_up.clone() else {
            return Ok(());
        };
        let Some(denom) = self.escrow.get(id).filter(|a| !a.closed).map(|a| a.denom.clone()) else {
            return Ok(());
        };
        let grace = self.leases_in_grace(id);
        let blocks = if grace.is_empty() {
            a.target_blocks
        } else {
            a.target_blocks.max(self.resume_blocks())
        };
        let need = self.top_up_need(id, ctx.height, blocks, &grace);
        if need == 0 {
            // The escrow covers the target already: leases in grace it can pay resume.
            return self.resume_grace(ctx, id);
        }
        let skipped = if a.expires_at.is_some_and(|e| e < ctx.height) {
            Some(TopUpSkipped::Expired)
        } else if a.remaining == 0 {
            Some(TopUpSkipped::AllowanceSpent)
        } else {
            None
        };
        let amount = need.min(a.remaining).min(self.balance(&id.owner, &denom));
        if let Some(reason) = skipped.or((amount == 0).then_some(TopUpSkipped::NoFunds)) {
            ctx.events.push(Event::EscrowTopUpSkipped { id: id.clone(), reason });
            return Ok(());
        }
        // The allowance is written before the deposit: the deposit saves the account, which
        // re-reads the policy to re-index the threshold.
        a.remaining -= amount;
        a.spent = a.spent.saturating_add(amount);
        let remaining = a.remaining;
        p.top_up = Some(a);
        self.escrow_policies.insert(id.clone(), p);
        let coin = Coin::new(amount, denom);
        let depleted = self.escrow_deposit_from(ctx, id.owner, id, &coin)?;
        ctx.events.push(Event::EscrowToppedUp {
            id: id.clone(),
            from: id.owner,
            amount: coin,
            remaining,
        });
        if depleted {
            self.on_depleted(ctx, id)?;
        }
        self.resume_grace(ctx, id)
    }

    /// The deployment's leases in grace with their prices and grace ends, in id order. A lease
    /// in grace keeps its group's current order and its active bid, so only those are visited:
    /// at most groups × bids per order, however many leases the deployment had before.
    fn leases_in_grace(&self, id: &DeploymentId) -> Vec<InGrace> {
        let groups = self.deployments.get(id).map_or(0, |d| d.groups);
        let mut out = Vec::new();
        for gseq in 1..=groups {
            let gid = id.group(gseq);
            let Some(oseq) = self.groups.get(&gid).and_then(|g| g.current_order) else {
                continue;
            };
            for (bid, b) in self.bids.range(crate::market::bids_of(&gid.order(oseq))) {
                if b.state != BidState::Active {
                    continue;
                }
                if let Some(l) = self.leases.get(bid).filter(|l| l.state == LeaseState::Grace) {
                    out.push(InGrace {
                        id: bid.clone(),
                        price: l.price.clone(),
                        // Always set in grace (the invariants check it); none would only
                        // mean no retry is pulled forward to its end.
                        until: l.grace_until.unwrap_or(u64::MAX),
                    });
                }
            }
        }
        out
    }

    /// Puts the active leases of a deployment whose escrow just ran dry (settled at this
    /// height) into grace: their payments stop (what they earned is paid out) and each is
    /// indexed to close at the end of the grace period (with a grace period of 0 the caller
    /// closes them instead). An allowance had its chance first ([`State::top_up_before_dry`]);
    /// if it has more to give, its retry is indexed.
    pub(crate) fn enter_grace(
        &mut self,
        ctx: &mut Ctx,
        id: &DeploymentId,
        active: Vec<LeaseId>,
    ) -> Result<(), TxError> {
        let until = ctx.height.saturating_add(self.params.grace_blocks);
        for lid in active {
            let Some(mut lease) = self.leases.get(&lid).cloned() else {
                continue;
            };
            self.escrow_close_payment(ctx, &lid)?;
            lease.state = LeaseState::Grace;
            lease.grace_until = Some(until);
            self.leases.insert(lid.clone(), lease);
            self.grace_expiry.insert((until, lid.clone()), ());
            ctx.events.push(Event::LeaseGrace { id: lid, until });
        }
        self.refresh_low(id, ctx.height);
        Ok(())
    }

    /// Before a dry escrow stops anything: a top-up under the allowance, if there is one.
    /// Returns whether the escrow pays the next block again (nothing needs to stop).
    pub(crate) fn top_up_before_dry(&mut self, ctx: &mut Ctx, id: &DeploymentId) -> Result<bool, TxError> {
        if self.escrow_policies.get(id).is_none_or(|p| p.top_up.is_none()) {
            return Ok(false);
        }
        self.top_up(ctx, id)?;
        let paying = self.escrow.get(id).is_some_and(|a| !a.open_payments.is_empty());
        Ok(paying && self.top_up_need(id, ctx.height, 1, &self.leases_in_grace(id)) == 0)
    }

    /// After a deposit: if the balance pays [`State::resume_blocks`] blocks of every lease in
    /// grace on top of the open ones, they all resume (paid again from this height). Otherwise
    /// nothing changes: the deposit stays in the escrow and the grace runs on.
    pub(crate) fn resume_grace(&mut self, ctx: &mut Ctx, id: &DeploymentId) -> Result<(), TxError> {
        let grace = self.leases_in_grace(id);
        if grace.is_empty() {
            return Ok(());
        }
        // The deposit settled the account at this height; counted from here.
        if self.top_up_need(id, ctx.height, self.resume_blocks(), &grace) > 0 {
            return Ok(());
        }
        for InGrace { id: lid, price, .. } in grace {
            let Some(mut lease) = self.leases.get(&lid).cloned() else {
                continue;
            };
            if let Some(until) = lease.grace_until.take() {
                self.grace_expiry.remove(&(until, lid.clone()));
            }
            lease.state = LeaseState::Active;
            self.leases.insert(lid.clone(), lease);
            self.escrow_reopen_payment(id, &lid, &price, ctx.height)?;
            ctx.events.push(Event::LeaseResumed { id: lid });
        }
        Ok(())
    }

    /// End of block: leases whose grace ends at or before this height close with
    /// `insufficient_funds` and their groups move to `insufficient_funds`, as a dry escrow's
    /// leases did before grace existed.
    pub(crate) fn process_grace_expiries(&mut self, ctx: &mut Ctx) -> Result<(), TxError> {
        let due: Vec<(u64, BidId)> = self
            .grace_expiry
            .range(..=(ctx.height, BidId::MAX))
            .map(|(k, _)| k.clone())
            .collect();
        for (h, lid) in due {
            self.grace_expiry.remove(&(h, lid.clone()));
            if self
                .leases
                .get(&lid)
                .is_none_or(|l| l.state != LeaseState::Grace || l.grace_until != Some(h))
            {
                continue;
            }
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
}
