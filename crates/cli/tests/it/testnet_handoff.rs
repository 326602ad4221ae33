//! State sync past the first two epochs, end to end on the real binary: a four-validator
//! testnet with short epochs votes one validator out, that validator loses its data, and it
//! comes back by copying a peer's state in an epoch whose set genesis does not name. It learns
//! that set from the peers' validator-set hand-off records (`GET /sync/handoffs`), each checked
//! with the set before it from its own genesis on; then it follows the chain, serves the records
//! it checked, and restarts from its own store (its floor checked with the set of its epoch).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use pazar_api::node::{TxResult, TxState};
use pazar_api::sync::Handoffs;

use crate::common::testnet::{create, signal, start_in, Testnet, START_TIMEOUT};
use crate::common::{bin, one_testnet_at_a_time};

/// Blocks per epoch: 7.5 s at the testnet's 250 ms blocks.
const EPOCH: u64 = 30;
/// Longest wait for the chain to reach a height (epochs of the vote, the change and the sync).
const PROGRESS_TIMEOUT: Duration = Duration::from_secs(240);

/// Four validators whose genesis cuts epochs of [`EPOCH`] blocks.
fn start() -> Testnet {
    let (dir, created) = create(4);
    for v in &created.validators {
        let path = v.home.join("genesis.json");
        let mut g: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).expect("genesis")).expect("genesis JSON");
        g["epoch_length"] = serde_json::json!(EPOCH);
        std::fs::write(&path, serde_json::to_vec_pretty(&g).expect("JSON")).expect("writes genesis");
    }
    start_in(dir, 4)
}

fn kill(pid: u32) {
    signal("-KILL", pid);
}

/// Starts validator `i` from its home as a process of this test; its log on failure.
/// Starts validator `i` expecting it to refuse to start; what it printed.
fn start_fails(net: &Testnet, i: usize) -> String {
    let home = net.home(i);
    let mut child = Command::new(bin())
        .args(["node", "start", "--home"])
        .arg(home)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawns pazar node start");
    let t0 = Instant::now();
    loop {
        if child.try_wait().expect("try_wait").is_some() {
            break;
        }
        if t0.elapsed() > START_TIMEOUT {
            let _ = child.kill();
            panic!("validator {i} did not refuse to start");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = child.wait_with_output().expect("its output");
    assert!(!out.status.success(), "validator {i} exited successfully");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Validator `voter` votes with its own key to give `key` the power `power`; the height.
fn vote(net: &Testnet, voter: usize, key: &str, power: u64) -> u64 {
    let out = Command::new(bin())
        .args(["tx", "validator", "vote", key, "--power", &power.to_string()])
        .args([
            "--from",
            "validator",
            "--node",
            &net.urls[voter],
            "-o",
            "json",
            "--home",
        ])
        .arg(net.home(voter))
        .output()
        .expect("runs pazar tx validator vote");
    let r: TxResult = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "vote of validator {voter}: {e}\nstdout: {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    match r.state {
        TxState::Committed { height, receipt, .. } if receipt.code == 0 => height,
        other => panic!("the vote of validator {voter} did not commit: {other:?}"),
    }
}

fn handoffs(net: &Testnet, i: usize, from: u64) -> Handoffs {
    net.rpc(i).handoffs(from).expect("GET /sync/handoffs")
}

fn node_log(home: &Path) -> String {
    std::fs::read_to_string(home.join("node.log")).unwrap_or_default()
}

/// The consensus key of validator `i` as the genesis names it.
fn consensus_key(home: &Path, i: usize) -> String {
    let g: serde_json::Value =
        serde_json::from_slice(&std::fs::read(home.join("genesis.json")).expect("genesis")).expect("JSON");
    g["validators"][i]["consensus_key"]
        .as_str()
        .expect("a consensus key")
        .to_string()
}

#[test]
fn a_node_syncs_state_in_a_later_epoch_after_the_set_changed_by_vote_and_follows() {
    let _one = one_testnet_at_a_time();
    let mut net = start();
    let live = [0, 1, 2];
    net.wait_height_within(&[0, 1, 2, 3], 2, PROGRESS_TIMEOUT);

    // Validators 0 to 2 vote validator 3 out, all within one epoch: they start early in one,
    // and vote again in a fresh epoch should a slow machine split them over two (votes end
    // with their epoch).
    let leaving = consensus_key(net.home(0), 3);
    let mut voted = None;
    for _attempt in 0..3 {
        let h = net.height(0);
        if h % EPOCH > EPOCH / 3 {
            net.wait_height_within(&live, (h / EPOCH + 1) * EPOCH + 1, PROGRESS_TIMEOUT);
        }
        let heights: Vec<u64> = std::thread::scope(|s| {
            let votes: Vec<_> = live
                .iter()
                .map(|v| {
                    let (net, leaving) = (&net, &leaving);
                    s.spawn(move || vote(net, *v, leaving, 0))
                })
                .collect();
            votes.into_iter().map(|v| v.join().expect("a voter")).collect()
        });
        let epoch = heights[0] / EPOCH;
        if heights.iter().all(|h| h / EPOCH == epoch) {
            voted = Some(epoch);
            break;
        }
        let last = heights.iter().max().copied().unwrap_or(0) / EPOCH;
        net.wait_height_within(&live, (last + 1) * EPOCH + 1, PROGRESS_TIMEOUT);
    }
    let voted = voted.expect("the three votes landed in one epoch in one of three attempts");

    // Validator 3 dies and loses its data; the others go on (3 of 4, then 3 of 3).
    kill(net.out.validators[3].pid.expect("started"));
    std::thread::sleep(Duration::from_millis(300));
    std::fs::remove_dir_all(net.home(3).join("data")).expect("removes the data directory");
    let changed = voted + 2;
    let sync_epoch = changed.max(3);
    net.wait_height_within(&live, sync_epoch * EPOCH + 3, PROGRESS_TIMEOUT);

    // The live validators record each epoch's hand-off (once a second, from the epoch's first
    // block with its own certificate); the one of the epoch before the change proves the set
    // without validator 3.
    let t0 = Instant::now();
    let records = loop {
        let records = handoffs(&net, 1, 1).handoffs;
        if records.len() as u64 >= sync_epoch || t0.elapsed() > PROGRESS_TIMEOUT {
            break records;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let epochs: Vec<u64> = records.iter().map(|r| r.epoch).collect();
    assert!(
        epochs.len() as u64 >= sync_epoch && epochs.iter().copied().eq(1..=epochs.len() as u64),
        "records of epochs 1 to {sync_epoch} at least, in order: {epochs:?}"
    );
    let set = pazar_ledger::validators::decode_set(&records[(changed - 2) as usize].next_set).expect("a set");
    assert_eq!(set.len(), 3, "the set of epoch {changed}");
    assert!(set.iter().all(|m| hex::encode(m.key) != leaving));

    // Validator 3 copies validator 1's state, in an epoch whose set genesis does not name. With
    // its genesis alone it refuses: retired keys could have signed that chain.
    let toml = std::fs::read_to_string(net.home(3).join("node.toml")).expect("node.toml");
    let with = |extra: &str| {
        let t = format!("{toml}state_sync = [\"{}\"]\n{extra}", net.urls[1]);
        std::fs::write(net.home(3).join("node.toml"), t).expect("writes node.toml");
    };
    with("");
    let out = start_fails(&net, 3);
    assert!(out.contains("state_sync_trust"), "{out}");
    // The operator reads the set of the current epoch from a node it trusts: the anchor. One
    // that names another set is refused as another chain.
    let trusted = net.rpc(0).validators().expect("GET /validators");
    let anchor = trusted.sets.first().expect("the current epoch's set");
    let mut wrong = anchor.set_hash;
    wrong[0] ^= 1;
    with(&format!(
        "state_sync_trust = \"{}:{}\"\n",
        anchor.epoch,
        hex::encode(wrong)
    ));
    let out = start_fails(&net, 3);
    assert!(out.contains("not the chain the operator trusts"), "{out}");
    with(&format!(
        "state_sync_trust = \"{}:{}\"\n",
        anchor.epoch,
        hex::encode(anchor.set_hash)
    ));
    net.restart(3);
    let rpc3 = net.rpc(3);
    let base = rpc3.status().expect("status").height;
    assert!(
        base / EPOCH >= sync_epoch,
        "it restored a state of epoch {} (height {base}), not before epoch {sync_epoch}:\n{}",
        base / EPOCH,
        node_log(net.home(3))
    );
    assert!(
        node_log(net.home(3)).contains("state restored"),
        "{}",
        node_log(net.home(3))
    );
    assert!(
        rpc3.block(1).is_err_and(|e| e.is_not_found()),
        "no history below the snapshot"
    );

    // It follows the chain (out of the set, it signs nothing) and holds the others' blocks.
    net.wait_height_within(&[3], base + 2 * EPOCH / 3, PROGRESS_TIMEOUT);
    let rpc0 = net.rpc(0);
    let top = net.height(3);
    for height in [base + 1, top] {
        assert_eq!(
            rpc0.block(height).expect("validator 0 has it").hash,
            rpc3.block(height).expect("the synced validator has it").hash,
            "block {height}"
        );
    }
    // It serves the records it checked, for the next node that syncs from it.
    let kept = handoffs(&net, 3, 1).handoffs;
    assert!(
        kept.len() as u64 >= sync_epoch - 1,
        "{:?}",
        kept.iter().map(|r| r.epoch).collect::<Vec<_>>()
    );
    assert_eq!(kept[..(sync_epoch - 1) as usize], records[..(sync_epoch - 1) as usize]);

    // Restarted from its own store, it checks its floor with the set of the floor's epoch.
    let pid = net.restarted.last().expect("restarted").id();
    kill(pid);
    std::thread::sleep(Duration::from_millis(300));
    net.restart(3);
    let target = net.height(0) + 4;
    net.wait_height_within(&[3], target, PROGRESS_TIMEOUT);
    assert_eq!(
        net.rpc(3).block(target).expect("the block").hash,
        rpc0.block(target).expect("the block").hash
    );
}
