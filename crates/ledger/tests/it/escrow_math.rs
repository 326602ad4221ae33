//! Escrow arithmetic against a brute-force model: with several leases at fractional prices, the
//! predicted depletion height is exactly the first block whose summed floor(rate × blocks)
//! exceeds the deposit, the leases stay active until then and close at it, and every deposited
//! unit ends up with the provider or back with the tenant.

use crate::common;

use common::*;
use pazar_ledger::invariants;
use pazar_types::market::LeaseState;
use pazar_types::{Dec, DeploymentId, KeyScheme, Msg, Price};
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn depletion_height_matches_brute_force(
        rates in proptest::collection::vec((5u128..2_000, 0u128..1_000_000), 1..4),
        deposit in 500_000u128..2_000_000,
    ) {
        let tenant = key(KeyScheme::Ed25519, 1);
        let providers: Vec<_> = (0..rates.len()).map(|i| key(KeyScheme::Ed25519, 20 + i as u8)).collect();
        let mut all = vec![&tenant];
        all.extend(providers.iter());
        let mut chain = Chain::new(&all);
        let st = &mut chain.state;
        st.skip_to(1);
        let groups = (0..rates.len()).map(|i| group(&format!("g{i}"), "100000", &uusd())).collect();
        st.deliver_unchecked(tenant.address(), &[create_deployment(1, groups, coin(deposit, &uusd()))]).expect("deploys");
        let id = DeploymentId { owner: tenant.address(), dseq: 1 };
        let mut raw_rates = Vec::new();
        for (i, ((whole, micro), p)) in rates.iter().zip(&providers).enumerate() {
            let rate = Dec(whole * pazar_types::DEC_SCALE + micro * 1_000_000_000_000);
            raw_rates.push(rate);
            let order = id.group(i as u32 + 1).order(1);
            st.deliver_unchecked(p.address(), &[create_provider(vec![])]).expect("provider");
            st.deliver_unchecked(p.address(), &[Msg::CreateBid {
                order: order.clone(),
                price: Price { denom: uusd(), amount: rate },
                deposit: coin(500_000, &upzr()),
            }]).expect("bids");
            st.deliver_unchecked(tenant.address(), &[Msg::CreateLease { bid: order.bid(p.address()) }]).expect("leases");
        }
        // Brute force: first Δ with Σ floor(rate × Δ) > deposit.
        let owed = |d: u64| raw_rates.iter().map(|r| r.accrue(d, 0).expect("fits").0).sum::<u128>();
        let mut dry = 1u64;
        while owed(dry) <= deposit {
            dry += 1;
        }
        let start = st.height;
        let view = st.escrow_view(&id, start).expect("account");
        prop_assert_eq!(view.depletes_at, Some(start + dry));
        st.skip_to(start + dry - 1);
        prop_assert!(st.leases_of_deployment(&id).all(|(_, l)| l.state == LeaseState::Active));
        st.skip_to(start + dry);
        // Dry: every lease is in grace for `grace_blocks`, then closed.
        prop_assert!(st.leases_of_deployment(&id).all(|(_, l)| l.state == LeaseState::Grace));
        let grace = st.params.grace_blocks;
        st.skip_to(start + dry + grace);
        prop_assert!(st.leases_of_deployment(&id).all(|(_, l)| l.state == LeaseState::InsufficientFunds));
        let paid: u128 = st.leases_of_deployment(&id).map(|(k, _)| st.payment(k).expect("payment").received).sum();
        prop_assert_eq!(paid, deposit, "the whole deposit was paid out");
        prop_assert!(invariants::check(st).is_ok(), "{:?}", invariants::check(st));
    }
}
