//! escrow: one account per deployment, one payment per lease, settled lazily.
//!
//! Nothing is paid per block. An account is settled when something touches it (a deposit, a
//! withdrawal, a lease opening or closing, the deployment closing) for all blocks since it was
//! last settled. After each settlement the first height at which the balance cannot pay a full
//! block is computed and indexed, so the end of a block visits only the accounts that run dry
//! in it: a block costs the same with ten or ten million open leases.

use pazar_types::{Address, BidId, Coin, DeploymentId, Event, LeaseId, Price};

use crate::error::{EscrowError, TxError};
use crate::state::{Deposit, EscrowAccount, Payment, State, BPS, MAX_DEPOSITORS};
use crate::Ctx;
pub use pazar_types::records::EscrowView;

/// `floor(a × b / c)` without intermediate overflow when `b ≤ c`.
fn mul_div_floor(a: u128, b: u128, c: u128) -> u128 {
    debug_assert!(c > 0 && b <= c);
    (a / c) * b + (a % c) * b / c
}

/// Range covering every lease of a deployment.
pub(crate) fn leases_of(id: &DeploymentId) -> std::ops::RangeInclusive<BidId> {
    let lo = BidId {
        owner: id.owner,
        dseq: id.dseq,
        gseq: 0,
        oseq: 0,
        provider: Address::MIN,
    };
    let hi = BidId {
        owner: id.owner,
        dseq: id.dseq,
        gseq: u32::MAX,
        oseq: u32::MAX,
        provider: Address::MAX,
    };
    lo..=hi
}

impl State {
    pub fn escrow_account(&self, id: &DeploymentId) -> Option<&EscrowAccount> {
        self.escrow.get(id)
    }

    pub fn payment(&self, id: &LeaseId) -> Option<&Payment> {
        self.payments.get(id)
    }

    /// Σ over open payments of what `blocks` more blocks would owe (saturating on overflow).
    pub(crate) fn owed_over(&self, acct: &EscrowAccount, blocks: u64) -> u128 {
        acct.open_payments
            .iter()
            .filter_map(|lid| self.payments.get(lid))
            .map(|p| {
                p.rate
                    .amount
                    .accrue(blocks, p.carry)
                    .map_or(u128::MAX, |(units, _)| units)
            })
            .fold(0u128, u128::saturating_add)
    }

    /// Smallest number of blocks after `acct.settled_at` whose accrual exceeds the balance.
    fn blocks_until_dry(&self, acct: &EscrowAccount) -> Option<u64> {
        if acct.open_payments.is_empty() {
            return None;
        }
        let mut lo = 0u64; // owed_over(lo) ≤ balance
        let mut hi = 1u64;
        while self.owed_over(acct, hi) <= acct.balance {
            lo = hi;
            hi = hi.checked_mul(2)?;
            if hi > (1 << 62) {
                return None;
            }
        }
        // Invariant: owed(lo) ≤ balance < owed(hi).
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            if self.owed_over(acct, mid) <= acct.balance {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        Some(hi)
    }

    /// Saves `acct`, recomputing its depletion height and moving its index entry, and its
    /// runway threshold's as measured at `height` (the current block).
    fn save_account(&mut self, id: &DeploymentId, mut acct: EscrowAccount, depleted: bool, height: u64) {
        let old = acct.depletes_at;
        acct.depletes_at = if acct.closed || depleted {
            None
        } else {
            self.blocks_until_dry(&acct)
                .and_then(|b| acct.settled_at.checked_add(b))
        };
        if old != acct.depletes_at {
            if let Some(h) = old {
                self.depletion.remove(&(h, id.clone()));
            }
            if let Some(h) = acct.depletes_at {
                self.depletion.insert((h, id.clone()), ());
            }
        }
        self.escrow.insert(id.clone(), acct);
        self.refresh_low(id, height);
    }

    /// What settling `id` at `height` would show, without changing anything.
    pub fn escrow_view(&self, id: &DeploymentId, height: u64) -> Option<EscrowView> {
        let acct = self.escrow.get(id)?;
        let delta = height.saturating_sub(acct.settled_at);
        let accrued = self.owed_over(acct, delta).min(acct.balance);
        let runway = acct.depletes_at.map(|d| d.saturating_sub(height.max(acct.settled_at)));
        Some(EscrowView {
            denom: acct.denom.clone(),
            balance: acct.balance - accrued,
            accrued,
            runway_blocks: runway,
            depletes_at: acct.depletes_at,
            policy: self.escrow_policies.get(id).cloned(),
            runway_ms: None,
        })
    }

    /// Opens the escrow account of a new deployment with its first deposit.
    pub(crate) fn escrow_open(&mut self, ctx: &mut Ctx, id: &DeploymentId, deposit: &Coin) -> Result<(), TxError> {
        let min = self
            .params
            .denom(&deposit.denom)
            .map_or(0, |d| d.min_deployment_deposit);
        if deposit.amount < min {
            return Err(EscrowError::DepositTooSmall {
                min: Coin::new(min, deposit.denom.clone()),
                got: deposit.clone(),
            }
            .into());
        }
        self.transfer(ctx.sender, self.escrow_module(), deposit)?;
        let acct = EscrowAccount {
            denom: deposit.denom.clone(),
            balance: deposit.amount,
            deposits: vec![Deposit {
                depositor: ctx.sender,
                amount: deposit.amount,
            }],
            settled_at: ctx.height,
            open_payments: Vec::new(),
            depletes_at: None,
            deposited: deposit.amount,
            transferred: 0,
            refunded: 0,
            closed: false,
        };
        self.escrow.insert(id.clone(), acct);
        ctx.events.push(Event::EscrowDeposited {
            id: id.clone(),
            depositor: ctx.sender,
            amount: deposit.clone(),
        });
        Ok(())
    }

    /// Adds `coin` from `from` (the sender, or the owner for an automatic top-up) to the
    /// account, then settles it. Funds deposited in a block pay for that block. Returns whether
    /// the account ran dry anyway.
    pub(crate) fn escrow_deposit_from(
        &mut self,
        ctx: &mut Ctx,
        from: Address,
        id: &DeploymentId,
        coin: &Coin,
    ) -> Result<bool, TxError> {
        let mut acct = self
            .escrow
            .get(id)
            .cloned()
            .ok_or_else(|| EscrowError::AccountNotFound(id.clone()))?;
        if coin.denom != acct.denom {
            return Err(EscrowError::DenomMismatch {
                want: acct.denom.clone(),
                got: coin.denom.clone(),
            }
            .into());
        }
        // The owner always has a place: strangers may fill all but one, so once the owner's own
        // deposit is spent (deposits are spent first in, first out) it can still top up.
        let owner_listed = acct.deposits.iter().any(|d| d.depositor == id.owner);
        let places = if from == id.owner || owner_listed {
            MAX_DEPOSITORS
        } else {
            MAX_DEPOSITORS - 1
        };
        let full = acct.deposits.len() >= places;
        match acct.deposits.iter_mut().find(|d| d.depositor == from) {
            Some(d) => d.amount = d.amount.checked_add(coin.amount).ok_or(EscrowError::Overflow)?,
            None if full => return Err(EscrowError::TooManyDepositors(MAX_DEPOSITORS).into()),
            None => acct.deposits.push(Deposit {
                depositor: from,
                amount: coin.amount,
            }),
        }
        self.transfer(from, self.escrow_module(), coin)?;
        acct.balance = acct.balance.checked_add(coin.amount).ok_or(EscrowError::Overflow)?;
        acct.deposited = acct.deposited.checked_add(coin.amount).ok_or(EscrowError::Overflow)?;
        self.save_account(id, acct, false, ctx.height);
        ctx.events.push(Event::EscrowDeposited {
            id: id.clone(),
            depositor: from,
            amount: coin.clone(),
        });
        self.escrow_settle(id, ctx.height)
    }

    /// Pays every open payment of `id` for the blocks since its last settlement. When the
    /// balance cannot cover them, pays what it can (payments in id order), records the rest as
    /// unsettled and returns `true`: the caller closes the leases.
    pub(crate) fn escrow_settle(&mut self, id: &DeploymentId, height: u64) -> Result<bool, TxError> {
        // Decided on the stored account: a settlement with nothing to do copies nothing.
        let Some(acct) = self.escrow.get(id) else {
            return Ok(false);
        };
        if acct.closed || height <= acct.settled_at {
            return Ok(false);
        }
        let mut acct = acct.clone();
        let delta = height - acct.settled_at;
        acct.settled_at = height;
        let mut available = acct.balance;
        let mut depleted = false;
        // Taken out of the account and put back below rather than copied: the loop writes only
        // payments.
        let open_payments = std::mem::take(&mut acct.open_payments);
        for lid in &open_payments {
            let Some(mut p) = self.payments.get(lid).cloned() else {
                continue;
            };
            let (owed, carry) = p.rate.amount.accrue(delta, p.carry).unwrap_or((u128::MAX, 0));
            let paid = owed.min(available);
            available -= paid;
            p.balance = p.balance.checked_add(paid).ok_or(EscrowError::Overflow)?;
            p.received = p.received.checked_add(paid).ok_or(EscrowError::Overflow)?;
            if paid < owed {
                depleted = true;
                p.unsettled = p.unsettled.saturating_add(owed - paid);
                p.carry = 0;
            } else {
                p.carry = carry;
            }
            self.payments.insert(lid.clone(), p);
        }
        acct.open_payments = open_payments;
        let spent = acct.balance - available;
        acct.balance = available;
        acct.transferred = acct.transferred.checked_add(spent).ok_or(EscrowError::Overflow)?;
        let mut to_deduct = spent;
        for d in acct.deposits.iter_mut() {
            let take = d.amount.min(to_deduct);
            d.amount -= take;
            to_deduct -= take;
        }
        acct.deposits.retain(|d| d.amount > 0);
        debug_assert_eq!(to_deduct, 0, "deposits sum to the balance");
        self.save_account(id, acct, depleted, height);
        Ok(depleted)
    }

    /// Starts paying `lease` at `rate` per block from the deployment's account (settled first).
    /// Refuses when the balance cannot pay one full block at the new total rate.
    pub(crate) fn escrow_add_payment(
        &mut self,
        id: &DeploymentId,
        lease: &LeaseId,
        rate: &Price,
        height: u64,
    ) -> Result<(), TxError> {
        if self.escrow_settle(id, height)? {
            // Already dry: the caller's lease would be closed at once; refuse instead (the
            // whole transaction rolls back, and end-of-block closes the dry leases).
            let per_block = rate.amount.accrue(1, 0).map_or(u128::MAX, |(units, _)| units.max(1));
            let acct = self
                .escrow
                .get(id)
                .ok_or_else(|| EscrowError::AccountNotFound(id.clone()))?;
            return Err(EscrowError::InsufficientEscrow {
                balance: acct.balance,
                per_block,
                denom: acct.denom.clone(),
            }
            .into());
        }
        let mut acct = self
            .escrow
            .get(id)
            .cloned()
            .ok_or_else(|| EscrowError::AccountNotFound(id.clone()))?;
        let take_bps = self.params.denom(&rate.denom).map_or(0, |d| d.take_bps);
        let payment = Payment {
            rate: rate.clone(),
            carry: 0,
            balance: 0,
            received: 0,
            withdrawn: 0,
            take: 0,
            take_bps,
            unsettled: 0,
            open: true,
            since: height,
            before: 0,
            stopped_at: None,
        };
        self.payments.insert(lease.clone(), payment);
        let pos = acct.open_payments.binary_search(lease).unwrap_or_else(|p| p);
        acct.open_payments.insert(pos, lease.clone());
        let per_block = self.owed_over(&acct, 1);
        if per_block > acct.balance {
            return Err(EscrowError::InsufficientEscrow {
                balance: acct.balance,
                per_block,
                denom: acct.denom.clone(),
            }
            .into());
        }
        self.save_account(id, acct, false, height);
        Ok(())
    }

    /// Pays `lease` again from this height at `rate` (a lease resuming from grace: its payment
    /// record keeps what it was paid before). The caller has settled the account and checked
    /// that it pays a full block.
    pub(crate) fn escrow_reopen_payment(
        &mut self,
        id: &DeploymentId,
        lease: &LeaseId,
        rate: &Price,
        height: u64,
    ) -> Result<(), TxError> {
        let mut acct = self
            .escrow
            .get(id)
            .cloned()
            .ok_or_else(|| EscrowError::AccountNotFound(id.clone()))?;
        debug_assert!(acct.settled_at >= height, "settled before resuming");
        let mut p = self
            .payments
            .get(lease)
            .cloned()
            .ok_or_else(|| EscrowError::PaymentNotFound(lease.clone()))?;
        p.open = true;
        p.carry = 0;
        p.rate = rate.clone();
        p.before = p.received.saturating_add(p.unsettled);
        p.since = height;
        p.stopped_at = None;
        self.payments.insert(lease.clone(), p);
        if let Err(pos) = acct.open_payments.binary_search(lease) {
            acct.open_payments.insert(pos, lease.clone());
        }
        self.save_account(id, acct, false, height);
        Ok(())
    }

    /// Pays out what `lease` has accrued: the take to the fee pool, the rest to the provider.
    pub(crate) fn escrow_pay_out(&mut self, ctx: &mut Ctx, lease: &LeaseId) -> Result<(), TxError> {
        let mut p = self
            .payments
            .get(lease)
            .cloned()
            .ok_or_else(|| EscrowError::PaymentNotFound(lease.clone()))?;
        if p.balance == 0 {
            return Ok(());
        }
        let gross = p.balance;
        let withdrawn = p.withdrawn.checked_add(gross).ok_or(EscrowError::Overflow)?;
        let take_total = mul_div_floor(withdrawn, u128::from(p.take_bps), BPS);
        let take = take_total - p.take;
        let paid = gross - take;
        let denom = p.rate.denom.clone();
        self.transfer(self.escrow_module(), lease.provider, &Coin::new(paid, denom.clone()))?;
        self.transfer(self.escrow_module(), self.fee_pool(), &Coin::new(take, denom.clone()))?;
        p.balance = 0;
        p.withdrawn = withdrawn;
        p.take = take_total;
        self.payments.insert(lease.clone(), p);
        ctx.events.push(Event::LeaseWithdrawn {
            id: lease.clone(),
            paid: Coin::new(paid, denom.clone()),
            take: Coin::new(take, denom),
        });
        Ok(())
    }

    /// Stops paying `lease`: pays out what it earned and removes it from its account.
    /// The caller has settled the account.
    pub(crate) fn escrow_close_payment(&mut self, ctx: &mut Ctx, lease: &LeaseId) -> Result<(), TxError> {
        self.escrow_pay_out(ctx, lease)?;
        let id = lease.deployment();
        let stopped_at = self.escrow.get(&id).map(|a| a.settled_at);
        if let Some(mut p) = self.payments.get(lease).cloned() {
            if p.open {
                p.stopped_at = stopped_at;
            }
            p.open = false;
            p.carry = 0;
            self.payments.insert(lease.clone(), p);
        }
        if let Some(mut acct) = self.escrow.get(&id).cloned() {
            acct.open_payments.retain(|l| l != lease);
            self.save_account(&id, acct, false, ctx.height);
        }
        Ok(())
    }

    /// Closes the account: every remaining deposit goes back to whoever made it. The caller has
    /// settled the account and closed its payments.
    pub(crate) fn escrow_close_account(&mut self, ctx: &mut Ctx, id: &DeploymentId) -> Result<(), TxError> {
        let Some(mut acct) = self.escrow.get(id).cloned() else {
            return Ok(());
        };
        debug_assert!(acct.open_payments.is_empty());
        for d in std::mem::take(&mut acct.deposits) {
            let coin = Coin::new(d.amount, acct.denom.clone());
            self.transfer(self.escrow_module(), d.depositor, &coin)?;
            acct.refunded = acct.refunded.checked_add(d.amount).ok_or(EscrowError::Overflow)?;
            ctx.events.push(Event::EscrowRefunded {
                id: id.clone(),
                to: d.depositor,
                amount: coin,
            });
        }
        acct.balance = 0;
        acct.closed = true;
        self.save_account(id, acct, false, ctx.height);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mul_div_floor_is_exact_near_the_top_of_u128() {
        assert_eq!(mul_div_floor(u128::MAX, 10_000, 10_000), u128::MAX);
        assert_eq!(mul_div_floor(u128::MAX, 400, 10_000), u128::MAX / 25);
        assert_eq!(mul_div_floor(99, 400, 10_000), 3);
    }
}
