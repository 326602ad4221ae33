//! `pazar testnet` end to end on the real binary: four validator processes over loopback
//! sockets. Clients send signed transactions to different validators; every validator holds
//! the same blocks and state roots; with one validator killed (`kill -9`) the other three keep
//! finalizing; restarted, it catches up from its store and its peers; every transaction a
//! validator acknowledged as committed is in exactly one block, the same on all four.
//!
//! No transaction gossip yet: a transaction waits in the mempool of the validator it was sent
//! to until that validator leads a view, so each client waits a few block times.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde::Deserialize;

use pazar_api::node::{TxResult, TxState};
use pazar_client::Rpc;
use pazar_types::Hash32;

use common::bin;

/// Generous bounds: four validators and their clients share a small machine.
const START_TIMEOUT: Duration = Duration::from_secs(240);
const PROGRESS_TIMEOUT: Duration = Duration::from_secs(180);

/// The heights at which each transaction (hex hash) appears in a chain.
type TxHeights = BTreeMap<String, Vec<u64>>;

/// What `pazar testnet -o json` prints (the CLI's `TestnetOut`).
#[derive(Debug, Deserialize)]
struct TestnetOut {
    chain_id: String,
    validators: Vec<ValidatorOut>,
}

#[derive(Debug, Deserialize)]
struct ValidatorOut {
    name: String,
    home: PathBuf,
    rpc: String,
    pid: u32,
}

/// The running testnet; everything it started is killed when dropped.
struct Testnet {
    _dir: tempfile::TempDir,
    process: Child,
    out: TestnetOut,
    /// URLs of the validators as they serve now (a restarted one may move).
    urls: Vec<String>,
    /// Validators this test restarted itself.
    restarted: Vec<Child>,
}

impl Drop for Testnet {
    fn drop(&mut self) {
        for v in &self.out.validators {
            signal("-KILL", v.pid);
        }
        for c in &mut self.restarted {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

fn signal(sig: &str, pid: u32) -> bool {
    Command::new("kill")
        .args([sig, &pid.to_string()])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn start(validators: usize) -> Testnet {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut process = Command::new(bin())
        .args([
            "testnet",
            "--validators",
            &validators.to_string(),
            "--block-time-ms",
            "250",
            "-o",
            "json",
            "--home",
        ])
        .arg(dir.path())
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
    let line = match rx.recv_timeout(START_TIMEOUT) {
        Ok(l) => l,
        Err(_) => {
            let _ = process.kill();
            panic!("pazar testnet printed nothing");
        }
    };
    let out: TestnetOut = serde_json::from_str(&line).unwrap_or_else(|e| panic!("pazar testnet printed {line:?}: {e}"));
    assert_eq!(out.validators.len(), validators);
    let urls = out.validators.iter().map(|v| v.rpc.clone()).collect();
    Testnet {
        _dir: dir,
        process,
        out,
        urls,
        restarted: Vec::new(),
    }
}

impl Testnet {
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

    fn max_height(&self, idx: &[usize]) -> u64 {
        idx.iter().map(|i| self.height(*i)).max().unwrap_or(0)
    }

    fn keys_home(&self) -> &Path {
        &self.out.validators[0].home
    }

    /// Sends `count` transfers of 1upzr from each `(key, validator)` pair, one client per
    /// pair, each waiting for its transaction to commit before the next; the hashes the
    /// validators acknowledged as committed, with their heights.
    fn transfers(&self, senders: &[(&str, usize)], count: usize) -> Vec<(Hash32, u64)> {
        std::thread::scope(|s| {
            let clients: Vec<_> = senders
                .iter()
                .map(|(from, v)| {
                    let url = self.urls[*v].clone();
                    let home = self.keys_home().to_path_buf();
                    let to = if *from == "alice" { "bob" } else { "alice" };
                    s.spawn(move || {
                        (0..count)
                            .map(|_| {
                                let out = Command::new(bin())
                                    .args(["tx", "send", to, "1upzr", "--from", from, "--node", &url, "-o", "json"])
                                    .arg("--home")
                                    .arg(&home)
                                    .output()
                                    .expect("runs pazar tx send");
                                let r: TxResult = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
                                    panic!(
                                        "tx send from {from} via {url}: {e}\nstdout: {}\nstderr: {}",
                                        String::from_utf8_lossy(&out.stdout),
                                        String::from_utf8_lossy(&out.stderr)
                                    )
                                });
                                match r.state {
                                    TxState::Committed { height, receipt, .. } if receipt.code == 0 => (r.hash, height),
                                    other => panic!("a transfer from {from} via {url} did not commit: {other:?}"),
                                }
                            })
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            clients
                .into_iter()
                .flat_map(|c| c.join().expect("a client thread"))
                .collect()
        })
    }

    /// Block hash and state root at each height `1..=upto` on validator `i`, and where each
    /// transaction hash appears.
    fn chain(&self, i: usize, upto: u64) -> (Vec<(Hash32, Hash32)>, TxHeights) {
        let rpc = self.rpc(i);
        let mut chain = Vec::new();
        let mut txs = TxHeights::new();
        for h in 1..=upto {
            let b = rpc.block(h).unwrap_or_else(|e| panic!("validator {i} block {h}: {e}"));
            assert_eq!(b.header.height, h);
            chain.push((b.hash, b.state_root_after));
            for t in b.txs {
                txs.entry(t).or_default().push(h);
            }
        }
        (chain, txs)
    }

    /// Every validator in `idx` holds the same blocks and roots up to `upto`, and each of
    /// `acked` exactly once, at the height its validator acknowledged.
    fn assert_agree(&self, idx: &[usize], upto: u64, acked: &[(Hash32, u64)]) {
        let (first, _) = self.chain(idx[0], upto);
        for &i in idx {
            let (chain, txs) = self.chain(i, upto);
            assert_eq!(
                chain, first,
                "validator {i} holds other blocks than validator {}",
                idx[0]
            );
            for (hash, height) in acked {
                let at = txs.get(&hex::encode(hash)).cloned().unwrap_or_default();
                assert_eq!(
                    at,
                    vec![*height],
                    "validator {i}: acknowledged tx {} must be committed once, at {height}",
                    hex::encode(hash)
                );
            }
        }
    }

    /// Starts validator `i` again from its home, as its own process.
    fn restart(&mut self, i: usize) {
        let home = self.out.validators[i].home.clone();
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
        self.urls[i] = common::wait_ready(&home, &mut child, START_TIMEOUT);
        self.restarted.push(child);
    }
}

#[test]
fn four_validator_processes_agree_survive_a_killed_one_and_commit_each_transaction_once() {
    let mut net = start(4);
    assert_eq!(net.out.chain_id, "pazar-devnet-1");
    let all = [0, 1, 2, 3];
    net.wait_height(&all, 2);

    // Clients send to every validator; each waits for that validator to lead a view.
    let mut acked = net.transfers(&[("alice", 0), ("bob", 1), ("provider", 2), ("faucet", 3)], 2);
    let h = net.max_height(&all);
    net.wait_height(&all, h);
    net.assert_agree(&all, h, &acked);

    // One validator dies without warning; three of four are a quorum and keep finalizing.
    let v3 = net.out.validators[3].pid;
    assert!(signal("-KILL", v3), "kill -9 {} ({})", v3, net.out.validators[3].name);
    let live = [0, 1, 2];
    let before = net.max_height(&live);
    acked.extend(net.transfers(&[("alice", 0), ("bob", 1), ("provider", 2)], 2));
    net.wait_height(&live, before + 10);

    // Restarted from its home, it catches up, and leads views again (it commits what is sent
    // to it).
    net.restart(3);
    let target = net.max_height(&live);
    net.wait_height(&all, target);
    acked.extend(net.transfers(&[("faucet", 3), ("alice", 0)], 1));
    let end = net.max_height(&all);
    net.wait_height(&all, end);
    net.assert_agree(&all, end, &acked);

    // Ctrl-C (SIGTERM) stops the testnet and the validators it started.
    let testnet = net.process.id();
    assert!(signal("-TERM", testnet));
    let t0 = Instant::now();
    let status = loop {
        if let Some(s) = net.process.try_wait().expect("try_wait") {
            break s;
        }
        assert!(t0.elapsed() < PROGRESS_TIMEOUT, "pazar testnet did not stop");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "pazar testnet ended with {status}");
    for v in &net.out.validators[..3] {
        assert!(!signal("-0", v.pid), "{} still runs after the testnet stopped", v.name);
    }
}
