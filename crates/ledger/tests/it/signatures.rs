//! The ledger executes a transaction only if its signature verifies *and* the signing key is
//! the sender's, on the batched path too: a block that mixes honest transactions with one whose
//! `sender` is a victim but whose (valid) signature is the attacker's moves nothing of the
//! victim's.

use crate::common;

use common::*;
use pazar_types::{Address, KeyScheme, Msg, TxBody};

fn forged_send(attacker: &pazar_types::SigningKey, victim: Address, to: Address, amount: u128) -> Vec<u8> {
    TxBody {
        chain_id: CHAIN.into(),
        sender: victim,
        sequence: 0,
        fee: coin(FEE, &upzr()),
        msgs: vec![Msg::Send {
            to,
            amount: coin(amount, &upzr()),
        }],
        memo: String::new(),
    }
    .sign(attacker)
    .encode()
}

#[test]
fn a_transaction_signed_by_another_key_than_the_sender_s_moves_nothing_even_inside_a_valid_batch() {
    for scheme in [KeyScheme::Ed25519, KeyScheme::Eth] {
        let attacker = key(scheme, 7);
        let victim = key(KeyScheme::Ed25519, 9);
        let honest = key(KeyScheme::Ed25519, 11);
        let mut chain = Chain::new(&[&attacker, &victim, &honest]);
        let before = chain.bal(&victim, &upzr());
        let own = chain.sign(
            &attacker,
            vec![Msg::Send {
                to: honest.address(),
                amount: coin(1, &upzr()),
            }],
        );
        let other = chain.sign(
            &honest,
            vec![Msg::Send {
                to: attacker.address(),
                amount: coin(1, &upzr()),
            }],
        );
        let forged = forged_send(&attacker, victim.address(), attacker.address(), before / 2);
        // The forged one sits between valid ed25519 signatures, so it would ride on a batch
        // that verifies if the key-to-sender check were skipped.
        let out = chain.block(vec![own, forged, other]);
        assert!(out.receipts[0].is_ok(), "{}", out.receipts[0].log);
        assert!(out.receipts[2].is_ok(), "{}", out.receipts[2].log);
        let r = &out.receipts[1];
        assert!(!r.is_ok(), "forged transaction committed ({scheme:?})");
        assert!(r.fee.is_none(), "a refused signature pays no fee");
        assert!(r.log.contains("not the sender's"), "{scheme:?}: {}", r.log);
        assert_eq!(
            chain.bal(&victim, &upzr()),
            before,
            "{scheme:?}: the victim's balance moved"
        );
        assert_eq!(chain.state.account(&victim.address()).sequence, 0);
    }
}
