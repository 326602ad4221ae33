//! bank: balances per denomination, transfers, supply.

use pazar_types::{Address, Coin, Denom, Event};

use crate::error::BankError;
use crate::state::{Account, State, ESCROW_ADDRESS, FEE_POOL_ADDRESS};
use crate::Ctx;

impl State {
    /// Account data (the next sequence); a never-seen address has sequence 0.
    pub fn account(&self, addr: &Address) -> Account {
        self.accounts.get(addr).cloned().unwrap_or_default()
    }

    /// Balance of `addr` in `denom` (zero when absent).
    pub fn balance(&self, addr: &Address, denom: &Denom) -> u128 {
        self.balances.get(&(*addr, denom.clone())).copied().unwrap_or(0)
    }

    /// Every non-zero balance of `addr`.
    pub fn balances_of(&self, addr: &Address) -> Vec<Coin> {
        self.params
            .denoms()
            .into_iter()
            .filter_map(|d| {
                let amount = self.balance(addr, d);
                (amount > 0).then(|| Coin::new(amount, d.clone()))
            })
            .collect()
    }

    pub fn supply_of(&self, denom: &Denom) -> u128 {
        self.supply.get(denom).copied().unwrap_or(0)
    }

    pub(crate) fn is_module(addr: &Address) -> bool {
        *addr == *ESCROW_ADDRESS || *addr == *FEE_POOL_ADDRESS
    }

    pub(crate) fn known_denom(&self, denom: &Denom) -> Result<(), BankError> {
        match self.params.denom(denom) {
            Some(_) => Ok(()),
            None => Err(BankError::UnknownDenom(denom.clone())),
        }
    }

    /// Moves `coin` from `from` to `to`. Fails without changing anything.
    pub(crate) fn transfer(&mut self, from: Address, to: Address, coin: &Coin) -> Result<(), BankError> {
        self.known_denom(&coin.denom)?;
        if coin.amount == 0 || from == to {
            return Ok(());
        }
        // The recipient's side is computed first so that the sender's entry is searched once,
        // read and written together; nothing is written unless both sides succeed, and the
        // sender's shortfall is reported before an overflow, as ever.
        let to_new = self.balance(&to, &coin.denom).checked_add(coin.amount);
        self.balances.try_update((from, coin.denom.clone()), |have| {
            let have = have.copied().unwrap_or(0);
            let left = have
                .checked_sub(coin.amount)
                .ok_or_else(|| BankError::InsufficientFunds {
                    address: from,
                    need: coin.clone(),
                    have,
                })?;
            to_new.ok_or(BankError::Overflow)?;
            // Absent and zero are the same balance: keep one representation so hashes agree.
            Ok((left > 0).then_some(left))
        })?;
        // `to_new` is known to be `Some` here: the update above refuses otherwise.
        if let Some(to_new) = to_new {
            self.balances.insert((to, coin.denom.clone()), to_new);
        }
        Ok(())
    }

    pub(crate) fn exec_send(&mut self, ctx: &mut Ctx, to: Address, amount: &Coin) -> Result<(), BankError> {
        if State::is_module(&to) {
            return Err(BankError::ModuleRecipient(to));
        }
        self.transfer(ctx.sender, to, amount)?;
        ctx.events.push(Event::Transfer {
            from: ctx.sender,
            to,
            amount: amount.clone(),
        });
        Ok(())
    }
}
