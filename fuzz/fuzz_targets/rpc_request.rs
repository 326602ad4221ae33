//! The node's request bodies (`POST /txs`, `POST /txs/batch`, the `Last-Event-ID` header), as
//! the node parses them, then every transaction they carry through the decoder and the
//! signature rule. Nothing may panic, and a parsed batch respects its bounds.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pazar_api::request::{parse_batch, parse_last_event_id, parse_submit, MAX_BATCH_TXS};
use pazar_types::tx::MAX_TX_BYTES;
use pazar_types::Tx;

fn check_txs(txs: &[Vec<u8>]) {
    let decoded: Vec<(Tx, [u8; 32])> = txs.iter().filter_map(|b| Tx::decode_with_digest(b).ok()).collect();
    let items: Vec<(&Tx, &[u8; 32])> = decoded.iter().map(|(t, d)| (t, d)).collect();
    let results = pazar_types::verify_signatures(&items);
    assert_eq!(results.len(), items.len());
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    match selector % 4 {
        0 => {
            if let Ok(r) = parse_submit(true, body) {
                assert!(r.tx.len() <= MAX_TX_BYTES);
                check_txs(&[r.tx]);
            }
        }
        1 => {
            if let Ok(r) = parse_submit(false, body) {
                assert!(r.tx.len() <= MAX_TX_BYTES);
                check_txs(&[r.tx]);
            }
        }
        2 => {
            if let Ok(r) = parse_batch(body) {
                assert!(r.txs.len() <= MAX_BATCH_TXS);
                assert!(r.txs.iter().all(|t| t.len() <= MAX_TX_BYTES));
                check_txs(&r.txs);
            }
        }
        _ => {
            let _ = parse_last_event_id(body);
        }
    }
});
