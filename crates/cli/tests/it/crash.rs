//! Crash safety of the real node: while a client submits transactions, `kill -9` the node at
//! random moments (20 times), restart it, and check that every transaction whose commit was
//! acknowledged is in the chain at the acknowledged place, and that replaying every stored block
//! from genesis gives the same state roots.

use crate::common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;

use pazar_ledger::BlockHeader;
use pazar_node::genesis::GenesisOnDisk;
use pazar_store::{Store, StoreOptions};
use pazar_types::{Coin, Denom, Msg, TxBody};

const KILLS: usize = 20;

/// A small deterministic generator; the seed is printed so a failure can be replayed.
struct Lcg(u64);
impl Lcg {
    fn next(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

#[test]
fn kill_dash_nine_never_loses_an_acknowledged_commit_and_replay_matches() {
    let seed = std::env::var("PAZAR_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| u64::from(std::process::id()));
    eprintln!("crash test seed {seed} (set PAZAR_CRASH_SEED to replay)");
    let mut rng = Lcg(seed);
    let net = common::devnet(100);
    let home = net.home.path().to_path_buf();
    let key = pazar_client::keyring::Keyring::new(&home)
        .signer("alice", &|_, _| None)
        .expect("alice");
    let to = pazar_client::keyring::Keyring::new(&home)
        .show("bob")
        .expect("bob")
        .address;
    let chain = net.rpc().chain_id().expect("chain");
    // Take over the devnet's process handling: the test kills and restarts the node itself.
    let mut net = net;
    let _ = net.child.kill();
    let _ = net.child.wait();

    let acked: Arc<Mutex<Vec<(String, u64, u64)>>> = Arc::default();
    let mut kills = 0;
    while kills < KILLS {
        let mut child = common::spawn(&["node", "start", "--rpc-listen", "127.0.0.1:0"], &home);
        let url = common::wait_ready(&home, &mut child, Duration::from_secs(30));
        let stop = Arc::new(AtomicBool::new(false));
        let client = {
            let (stop, acked, key, chain) = (stop.clone(), acked.clone(), key.clone(), chain.clone());
            let batch = 1 + rng.next(40) as usize;
            std::thread::spawn(move || {
                let rpc = pazar_client::Rpc::new(&url);
                while !stop.load(Ordering::Relaxed) {
                    let Ok(seq) = rpc.sequence(&key.address()) else { return };
                    let txs: Vec<String> = (0..batch as u64)
                        .map(|i| {
                            let body = TxBody {
                                chain_id: chain.clone(),
                                sender: key.address(),
                                sequence: seq + i,
                                fee: Coin::new(100, Denom::new("upzr").expect("d")),
                                msgs: vec![Msg::Send {
                                    to,
                                    amount: Coin::new(1 + i as u128, Denom::new("upzr").expect("d")),
                                }],
                                memo: String::new(),
                            };
                            hex::encode(body.sign(&key).encode())
                        })
                        .collect();
                    let Ok(v) = rpc.post("/txs/batch", &json!({"txs": txs, "mode": "commit"})) else {
                        return;
                    };
                    for r in v["results"].as_array().into_iter().flatten() {
                        if r["status"] == "committed" {
                            let (Some(h), Some(i)) = (r["height"].as_u64(), r["index"].as_u64()) else {
                                continue;
                            };
                            acked
                                .lock()
                                .expect("lock")
                                .push((r["hash"].as_str().unwrap_or("").to_string(), h, i));
                        }
                    }
                }
            })
        };
        std::thread::sleep(Duration::from_millis(50 + rng.next(500)));
        child.kill().expect("kill -9");
        let _ = child.wait();
        kills += 1;
        stop.store(true, Ordering::Relaxed);
        let _ = client.join();
    }

    // Restart once more: every acknowledged transaction is there, where it was acknowledged.
    let mut child = common::spawn(&["node", "start", "--rpc-listen", "127.0.0.1:0"], &home);
    let url = common::wait_ready(&home, &mut child, Duration::from_secs(30));
    let rpc = pazar_client::Rpc::new(&url);
    let acked = acked.lock().expect("lock").clone();
    assert!(
        acked.len() >= KILLS,
        "too few acknowledged commits ({}) to mean anything",
        acked.len()
    );
    for (hash, h, i) in &acked {
        let v = rpc
            .get(&format!("/txs/{hash}"))
            .unwrap_or_else(|e| panic!("acknowledged tx {hash} lost: {e}"));
        assert_eq!(v["status"], "committed");
        assert_eq!(
            (v["height"].as_u64(), v["index"].as_u64()),
            (Some(*h), Some(*i)),
            "tx {hash} moved"
        );
    }
    let _ = child.kill();
    let _ = child.wait();

    // Replay every stored block from genesis into a fresh store: the same roots, block by block.
    let on_disk = GenesisOnDisk::open(&home.join("genesis.json")).expect("genesis");
    let genesis = on_disk.full().expect("genesis");
    let stored = Store::open(&home.join("data").join("store.redb"), StoreOptions::default()).expect("opens");
    let head = stored.head().expect("head").expect("some");
    let scratch = tempfile::tempdir().expect("tempdir");
    let fresh = Store::open(&scratch.path().join("db"), StoreOptions::default()).expect("opens");
    let mut state = genesis.ledger_state().expect("genesis");
    fresh.init_genesis(&mut state, on_disk.hash).expect("init");
    for h in 1..=head.height {
        let b = stored
            .block(h)
            .expect("reads")
            .unwrap_or_else(|| panic!("block {h} missing"));
        let lh = BlockHeader {
            chain_id: b.block.header.chain_id.clone(),
            height: h,
            time_ms: b.block.header.time_ms,
        };
        let outcome = state.apply_block(&lh, &b.block.txs).expect("replays");
        assert_eq!(outcome, b.outcome, "block {h} outcome differs on replay");
        let head2 = fresh
            .commit_block(&b.block, &outcome, state.take_changes())
            .expect("commits");
        assert_eq!(
            head2.state_root, b.state_root,
            "state root of block {h} differs on replay"
        );
    }
    let (restored, h2) = stored.load_state().expect("loads");
    assert_eq!(h2.state_root, fresh.head().expect("h").expect("h").state_root);
    assert_eq!(restored.state_hash(), state.state_hash());
    eprintln!(
        "crash test: {KILLS} kills, {} acknowledged txs, {} blocks replayed",
        acked.len(),
        head.height
    );
}
