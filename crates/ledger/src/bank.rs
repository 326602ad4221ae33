//! bank: balances per denomination, transfers, supply.

use pazar_types::{Address, Coin, Denom, Event};

use crate::error::BankError;
use crate::state::{Account, State, ESCROW_ADDRESS, FEE_POOL_ADDRESS, TRAIN_ESCROW_ADDRESS};
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
        *addr == *ESCROW_ADDRESS || *addr == *FEE_POOL_ADDRESS || *addr == *TRAIN_ESCROW_ADDRESS
    }

    pub(crate) fn known_denom(&self, denom: &Denom) -> Result<(), BankError> {
        match self.params.denom(denom) {
            Some(_) => Ok(()),
            None => Err(BankError::UnknownDenom(denom.clone())),
        }
    }

    /// Moves `coin` from `from` to `to`. Fails without changing any balance: the sender's
    /// shortfall is reported first, then an overflow of the recipient's balance.
    pub(crate) fn transfer(&mut self, from: Address, to: Address, coin: &Coin) -> Result<(), BankError> {
        self.known_denom(&coin.denom)?;
        self.transfer_known(from, to, coin)
    }

    /// [`State::transfer`] of a coin whose denomination the caller has already found in the
    /// parameters (a fee, checked by authentication): the same moves and errors, one lookup less.
    pub(crate) fn transfer_known(&mut self, from: Address, to: Address, coin: &Coin) -> Result<(), BankError> {
        debug_assert!(
            self.params.denom(&coin.denom).is_some(),
            "the caller checked the denomination"
        );
        if coin.amount == 0 || from == to {
            return Ok(());
        }
        // Each side is searched once, read and written together (this runs for every fee).
        let mut had = 0;
        self.balances.try_update((from, coin.denom.clone()), |have| {
            had = have.copied().unwrap_or(0);
            let left = had
                .checked_sub(coin.amount)
                .ok_or_else(|| BankError::InsufficientFunds {
                    address: from,
                    need: coin.clone(),
                    have: had,
                })?;
            // Absent and zero are the same balance: keep one representation so hashes agree.
            Ok((left > 0).then_some(left))
        })?;
        let credited = self.balances.try_update((to, coin.denom.clone()), |old| {
            let new = old.copied().unwrap_or(0).checked_add(coin.amount);
            new.map(Some).ok_or(BankError::Overflow)
        });
        if credited.is_err() {
            // Cannot happen while balances sum to the supply, a `u128`; if it did, the sender
            // gets its balance back (a caller that goes on commits an unchanged value).
            self.balances.insert((from, coin.denom.clone()), had);
        }
        credited
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{Genesis, GenesisBalance, Params};

    fn state_with(balances: &[(Address, u128)]) -> (State, Denom) {
        let genesis = Genesis {
            chain_id: "bank-test".into(),
            params: Params::devnet("upzr", "uusd"),
            balances: balances
                .iter()
                .map(|(a, n)| GenesisBalance {
                    address: *a,
                    coins: vec![Coin::new(*n, Denom::new("upzr").expect("valid"))],
                })
                .collect(),
        };
        let state = State::from_genesis(&genesis).expect("valid genesis");
        (state, Denom::new("upzr").expect("valid"))
    }

    #[test]
    fn a_refused_transfer_leaves_both_balances_as_they_were() {
        let (a, b) = (Address::Native([1; 20]), Address::Native([2; 20]));
        let (mut s, upzr) = state_with(&[(a, 10), (b, 5)]);
        let coin = |n| Coin::new(n, upzr.clone());
        assert_eq!(
            s.transfer(a, b, &coin(11)),
            Err(BankError::InsufficientFunds {
                address: a,
                need: coin(11),
                have: 10
            })
        );
        assert_eq!((s.balance(&a, &upzr), s.balance(&b, &upzr)), (10, 5));
        // An overflowing recipient cannot arise while balances sum to the supply; forge one.
        s.balances.insert((b, upzr.clone()), u128::MAX);
        s.commit();
        assert_eq!(s.transfer(a, b, &coin(3)), Err(BankError::Overflow));
        assert_eq!((s.balance(&a, &upzr), s.balance(&b, &upzr)), (10, u128::MAX));
        // A transfer of everything leaves no zero entry behind.
        s.balances.insert((b, upzr.clone()), 5);
        assert_eq!(s.transfer(a, b, &coin(10)), Ok(()));
        assert_eq!(s.balances.get(&(a, upzr.clone())), None);
        assert_eq!(s.balance(&b, &upzr), 15);
    }
}
