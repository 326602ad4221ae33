//! A testnet of validator processes for the tests: `pazar testnet` started in a temporary
//! directory (or its homes only, to change before the start), its validators' RPCs and
//! heights, and a validator restarted as its own process; everything it started is killed when
//! it is dropped.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde::Deserialize;

use pazar_client::Rpc;

use crate::common::{self, bin};

/// Generous bounds: four validators and their clients share a small machine.
pub const START_TIMEOUT: Duration = Duration::from_secs(240);
pub const PROGRESS_TIMEOUT: Duration = Duration::from_secs(180);

/// What `pazar testnet -o json` prints (the CLI's `TestnetOut`).
#[derive(Debug, Deserialize)]
pub struct TestnetOut {
    pub chain_id: String,
    pub validators: Vec<ValidatorOut>,
}

#[derive(Debug, Deserialize)]
pub struct ValidatorOut {
    pub name: String,
    pub home: PathBuf,
    pub rpc: String,
    pub p2p: String,
    pub pid: Option<u32>,
}

impl ValidatorOut {
    pub fn pid(&self) -> u32 {
        self.pid.expect("a started validator has a process")
    }
}

/// The running testnet; everything it started is killed when dropped.
pub struct Testnet {
    pub _dir: tempfile::TempDir,
    pub process: Child,
    pub out: TestnetOut,
    /// URLs of the validators as they serve now (a restarted one may move).
    pub urls: Vec<String>,
    /// Validators this test restarted itself.
    pub restarted: Vec<Child>,
}

impl Drop for Testnet {
    fn drop(&mut self) {
        for v in &self.out.validators {
            if let Some(pid) = v.pid {
                signal("-KILL", pid);
            }
        }
        for c in &mut self.restarted {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

pub fn signal(sig: &str, pid: u32) -> bool {
    Command::new("kill")
        .args([sig, &pid.to_string()])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

pub fn start(validators: usize) -> Testnet {
    start_in(tempfile::tempdir().expect("tempdir"), validators)
}

/// `pazar testnet` of `validators` validators with 250 ms blocks and JSON output, in `home`.
pub fn testnet_command(home: &Path, validators: usize) -> Command {
    let mut c = Command::new(bin());
    c.args([
        "testnet",
        "--validators",
        &validators.to_string(),
        "--block-time-ms",
        "250",
        "-o",
        "json",
        "--home",
    ])
    .arg(home);
    c
}

/// `pazar testnet --create-only`: the homes, made in a new directory, no validator started.
pub fn create(validators: usize) -> (tempfile::TempDir, TestnetOut) {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = testnet_command(dir.path(), validators)
        .arg("--create-only")
        .output()
        .expect("runs pazar testnet --create-only");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let created: TestnetOut = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "pazar testnet --create-only printed {:?}: {e}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    assert_eq!(created.validators.len(), validators);
    assert!(created.validators.iter().all(|v| v.pid.is_none()), "{created:?}");
    (dir, created)
}

/// Starts (or resumes) the testnet in `dir`.
pub fn start_in(dir: tempfile::TempDir, validators: usize) -> Testnet {
    let mut process = testnet_command(dir.path(), validators)
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
    pub fn rpc(&self, i: usize) -> Rpc {
        Rpc::new(&self.urls[i])
    }

    pub fn height(&self, i: usize) -> u64 {
        self.rpc(i).status().map_or(0, |s| s.height)
    }

    pub fn wait_height(&self, idx: &[usize], h: u64) {
        self.wait_height_within(idx, h, PROGRESS_TIMEOUT);
    }

    /// Waits until validators `idx` are at height `h` at least, for at most `limit`.
    pub fn wait_height_within(&self, idx: &[usize], h: u64, limit: Duration) {
        let t0 = Instant::now();
        while !idx.iter().all(|i| self.height(*i) >= h) {
            let heights: Vec<u64> = idx.iter().map(|i| self.height(*i)).collect();
            assert!(
                t0.elapsed() < limit,
                "validators {idx:?} stalled at {heights:?} below {h}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn home(&self, i: usize) -> &Path {
        &self.out.validators[i].home
    }

    pub fn max_height(&self, idx: &[usize]) -> u64 {
        idx.iter().map(|i| self.height(*i)).max().unwrap_or(0)
    }

    /// Starts validator `i` again from its home, as its own process.
    pub fn restart(&mut self, i: usize) {
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
