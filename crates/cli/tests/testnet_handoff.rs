//! State sync past the first two epochs, end to end on the real binary: a four-validator
//! testnet with short epochs votes one validator out, that validator loses its data, and it
//! comes back by copying a peer's state in an epoch whose set genesis does not name. It learns
//! that set from the peers' validator-set hand-off records (`GET /sync/handoffs`), each checked
//! with the set before it from its own genesis on; then it follows the chain, serves the records
//! it checked, and restarts from its own store (its floor checked with the set of its epoch).

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde::Deserialize;

use pazar_api::node::{TxResult, TxState};
use pazar_api::sync::Handoffs;
use pazar_client::Rpc;

use common::bin;

/// Blocks per epoch: 7.5 s at the testnet's 250 ms blocks.
const EPOCH: u64 = 30;
const START_TIMEOUT: Duration = Duration::from_secs(240);
const PROGRESS_TIMEOUT: Duration = Duration::from_secs(240);

#[derive(Debug, Deserialize)]
struct TestnetOut {
    validators: Vec<ValidatorOut>,
}

#[derive(Debug, Deserialize)]
struct ValidatorOut {
    home: PathBuf,
    rpc: String,
    pid: Option<u32>,
}

/// The testnet and the validator this test restarts; all killed when dropped.
struct Net {
    _dir: tempfile::TempDir,
    process: Child,
    out: TestnetOut,
    urls: Vec<String>,
    restarted: Option<Child>,
}

impl Drop for Net {
    fn drop(&mut self) {
        for v in &self.out.validators {
            if let Some(pid) = v.pid {
                kill(pid);
            }
        }
        if let Some(c) = &mut self.restarted {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

fn kill(pid: u32) {
    let _ = Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .stderr(Stdio::null())
        .status();
}

fn testnet(home: &Path) -> Command {
    let mut c = Command::new(bin());
    c.args([
        "testnet",
        "--validators",
        "4",
        "--block-time-ms",
        "250",
        "-o",
        "json",
        "--home",
    ])
    .arg(home);
    c
}

/// Four validators whose genesis cuts epochs of [`EPOCH`] blocks.
fn start() -> Net {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = testnet(dir.path())
        .arg("--create-only")
        .output()
        .expect("runs pazar testnet --create-only");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for i in 0..4 {
        let path = dir.path().join(format!("v{i}")).join("genesis.json");
        let mut g: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).expect("genesis")).expect("genesis JSON");
        g["epoch_length"] = serde_json::json!(EPOCH);
        std::fs::write(&path, serde_json::to_vec_pretty(&g).expect("JSON")).expect("writes genesis");
    }
    let mut process = testnet(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawns pazar testnet");
    let stdout = process.stdout.take().expect("piped stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let Ok(line) = rx.recv_timeout(START_TIMEOUT) else {
        let _ = process.kill();
        panic!("pazar testnet printed nothing");
    };
    let out: TestnetOut = serde_json::from_str(&line).unwrap_or_else(|e| panic!("pazar testnet printed {line:?}: {e}"));
    let urls = out.validators.iter().map(|v| v.rpc.clone()).collect();
    Net {
        _dir: dir,
        process,
        out,
        urls,
        restarted: None,
    }
}

impl Net {
    fn rpc(&self, i: usize) -> Rpc {
        Rpc::new(&self.urls[i])
    }

    fn height(&self, i: usize) -> u64 {
        self.rpc(i).status().map_or(0, |s| s.height)
    }

    fn wait_height(&self, idx: &[usize], h: u64) {
        let t0 = Instant::now();
        while !idx.iter().all(|i| self.height(*i) >= h) {
            let heights: Vec<u64> = idx.iter().map(|i| self.height(*i)).collect();
            assert!(
                t0.elapsed() < PROGRESS_TIMEOUT,
                "validators {idx:?} stalled at {heights:?} below {h}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn home(&self, i: usize) -> &Path {
        &self.out.validators[i].home
    }

    /// Starts validator `i` from its home as a process of this test; its log on failure.
    /// Starts validator `i` expecting it to refuse to start; what it printed.
    fn start_fails(&self, i: usize) -> String {
        let home = self.home(i);
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

    fn restart(&mut self, i: usize) {
        let home = self.home(i).to_path_buf();
        let _ = std::fs::remove_file(home.join("rpc.addr"));
        let log = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(home.join("node.log"))
            .expect("the validator's log");
        let mut child = Command::new(bin())
            .args(["node", "start", "--home"])
            .arg(&home)
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawns pazar node start");
        let t0 = Instant::now();
        let url = loop {
            if let Some(s) = child.try_wait().expect("try_wait") {
                panic!("validator {i} exited ({s}):\n{}", node_log(&home));
            }
            if let Ok(url) = std::fs::read_to_string(home.join("rpc.addr")) {
                let url = url.trim().to_string();
                if Rpc::new(&url).status().is_ok() {
                    break url;
                }
            }
            assert!(
                t0.elapsed() < START_TIMEOUT,
                "validator {i} did not come up:\n{}",
                node_log(&home)
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        self.urls[i] = url;
        if let Some(mut old) = self.restarted.replace(child) {
            let _ = old.kill();
            let _ = old.wait();
        }
    }

    /// Validator `voter` votes with its own key to give `key` the power `power`; the height.
    fn vote(&self, voter: usize, key: &str, power: u64) -> u64 {
        let out = Command::new(bin())
            .args(["tx", "validator", "vote", key, "--power", &power.to_string()])
            .args([
                "--from",
                "validator",
                "--node",
                &self.urls[voter],
                "-o",
                "json",
                "--home",
            ])
            .arg(self.home(voter))
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

    fn handoffs(&self, i: usize, from: u64) -> Handoffs {
        self.rpc(i).handoffs(from).expect("GET /sync/handoffs")
    }
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
    let mut net = start();
    let live = [0, 1, 2];
    net.wait_height(&[0, 1, 2, 3], 2);

    // Validators 0 to 2 vote validator 3 out, all within one epoch: they start early in one,
    // and vote again in a fresh epoch should a slow machine split them over two (votes end
    // with their epoch).
    let leaving = consensus_key(net.home(0), 3);
    let mut voted = None;
    for _attempt in 0..3 {
        let h = net.height(0);
        if h % EPOCH > EPOCH / 3 {
            net.wait_height(&live, (h / EPOCH + 1) * EPOCH + 1);
        }
        let heights: Vec<u64> = std::thread::scope(|s| {
            let votes: Vec<_> = live
                .iter()
                .map(|v| {
                    let (net, leaving) = (&net, &leaving);
                    s.spawn(move || net.vote(*v, leaving, 0))
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
        net.wait_height(&live, (last + 1) * EPOCH + 1);
    }
    let voted = voted.expect("the three votes landed in one epoch in one of three attempts");

    // Validator 3 dies and loses its data; the others go on (3 of 4, then 3 of 3).
    kill(net.out.validators[3].pid.expect("started"));
    std::thread::sleep(Duration::from_millis(300));
    std::fs::remove_dir_all(net.home(3).join("data")).expect("removes the data directory");
    let changed = voted + 2;
    let sync_epoch = changed.max(3);
    net.wait_height(&live, sync_epoch * EPOCH + 3);

    // The live validators record each epoch's hand-off (once a second, from the epoch's first
    // block with its own certificate); the one of the epoch before the change proves the set
    // without validator 3.
    let t0 = Instant::now();
    let records = loop {
        let records = net.handoffs(1, 1).handoffs;
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
    let out = net.start_fails(3);
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
    let out = net.start_fails(3);
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
    net.wait_height(&[3], base + 2 * EPOCH / 3);
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
    let kept = net.handoffs(3, 1).handoffs;
    assert!(
        kept.len() as u64 >= sync_epoch - 1,
        "{:?}",
        kept.iter().map(|r| r.epoch).collect::<Vec<_>>()
    );
    assert_eq!(kept[..(sync_epoch - 1) as usize], records[..(sync_epoch - 1) as usize]);

    // Restarted from its own store, it checks its floor with the set of the floor's epoch.
    let pid = net.restarted.as_ref().expect("restarted").id();
    kill(pid);
    std::thread::sleep(Duration::from_millis(300));
    net.restart(3);
    let target = net.height(0) + 4;
    net.wait_height(&[3], target);
    assert_eq!(
        net.rpc(3).block(target).expect("the block").hash,
        rpc0.block(target).expect("the block").hash
    );
}
