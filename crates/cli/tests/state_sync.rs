//! State sync on the real binary: a validator of a 4-validator `pazar testnet` loses its whole
//! data directory, and comes back by copying a peer's state (`state_sync` in node.toml) instead
//! of replaying the chain. Before the honest peer, it is offered two lying ones (a snapshot
//! chunk changed, a finalization certificate changed): it refuses both, writes nothing from
//! them, and takes the honest one. It then holds the same blocks and state roots as the others
//! above the snapshot, none below, signs blocks again, and restarts from its own store.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use axum::extract::{Path as AxPath, State as AxState};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde::Deserialize;

use pazar_api::node::{TxResult, TxState};
use pazar_client::Rpc;
use pazar_store::{read_frame, write_frame, Frame};

use common::bin;

const START_TIMEOUT: Duration = Duration::from_secs(240);
const PROGRESS_TIMEOUT: Duration = Duration::from_secs(180);

#[derive(Debug, Deserialize)]
struct TestnetOut {
    validators: Vec<ValidatorOut>,
}

#[derive(Debug, Deserialize)]
struct ValidatorOut {
    home: PathBuf,
    rpc: String,
    pid: u32,
}

struct Testnet {
    _dir: tempfile::TempDir,
    process: Child,
    out: TestnetOut,
    restarted: Vec<Child>,
}

impl Drop for Testnet {
    fn drop(&mut self) {
        for v in &self.out.validators {
            kill(v.pid);
        }
        for c in &mut self.restarted {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

fn kill(pid: u32) -> bool {
    Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn start_testnet() -> Testnet {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut process = Command::new(bin())
        .args([
            "testnet",
            "--validators",
            "4",
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
    let Ok(line) = rx.recv_timeout(START_TIMEOUT) else {
        let _ = process.kill();
        panic!("pazar testnet printed nothing");
    };
    let out: TestnetOut = serde_json::from_str(&line).unwrap_or_else(|e| panic!("pazar testnet printed {line:?}: {e}"));
    Testnet {
        _dir: dir,
        process,
        out,
        restarted: Vec::new(),
    }
}

fn height(url: &str) -> u64 {
    Rpc::new(url).status().map_or(0, |s| s.height)
}

fn wait_height(urls: &[&str], h: u64) {
    let t0 = Instant::now();
    while !urls.iter().all(|u| height(u) >= h) {
        let hs: Vec<u64> = urls.iter().map(|u| height(u)).collect();
        assert!(t0.elapsed() < PROGRESS_TIMEOUT, "stalled at {hs:?} below {h}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A transfer sent to `url`, waited for until committed; its height.
fn transfer(keys: &std::path::Path, url: &str, from: &str) -> u64 {
    let out = Command::new(bin())
        .args([
            "tx", "send", "bob", "1upzr", "--from", from, "--node", url, "-o", "json", "--home",
        ])
        .arg(keys)
        .output()
        .expect("runs pazar tx send");
    let r: TxResult = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("tx send via {url}: {e}: {}", String::from_utf8_lossy(&out.stderr)));
    match r.state {
        TxState::Committed { height, receipt, .. } if receipt.code == 0 => height,
        other => panic!("a transfer via {url} did not commit: {other:?}"),
    }
}

/// The honest validator's answers, changed where the route says: `/chunk/...` changes one
/// value in the snapshot's first chunk, `/cert/...` one byte of every finalization certificate.
async fn lying_peer(honest: String) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("binds");
    let addr = listener.local_addr().expect("addr");
    let app = Router::new()
        .route("/{lie}/sync/snapshot", get(snapshot))
        .route("/{lie}/sync/finalization/{h}", get(finalization))
        .route("/{lie}/blocks/{h}", get(block))
        .with_state(honest);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    format!("http://{addr}")
}

async fn fetch(url: String) -> Result<Vec<u8>, Response> {
    let r = tokio::task::spawn_blocking(move || -> Result<Vec<u8>, (StatusCode, Vec<u8>)> {
        let gateway = |e: String| (StatusCode::BAD_GATEWAY, e.into_bytes());
        let mut resp = ureq::get(&url)
            .config()
            .http_status_as_error(false)
            .build()
            .call()
            .map_err(|e| gateway(e.to_string()))?;
        let status = resp.status();
        let body = resp
            .body_mut()
            .with_config()
            .limit(1 << 30)
            .read_to_vec()
            .map_err(|e| gateway(e.to_string()))?;
        if status.is_success() {
            Ok(body)
        } else {
            Err((status, body))
        }
    })
    .await
    .expect("a blocking fetch");
    r.map_err(|e| e.into_response())
}

async fn snapshot(AxState(honest): AxState<String>, AxPath(lie): AxPath<String>) -> Response {
    let bytes = match fetch(format!("{honest}/sync/snapshot")).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    if lie != "chunk" {
        return bytes.into_response();
    }
    let mut r = bytes.as_slice();
    let mut out = Vec::new();
    let mut changed = false;
    while let Some(mut f) = read_frame(&mut r).expect("the honest stream reads") {
        if let (Frame::Chunk(c), false) = (&mut f, changed) {
            let v = &mut c.entries[0].1;
            let last = v.len() - 1;
            v[last] ^= 1;
            changed = true;
        }
        write_frame(&mut out, &f).expect("writes to memory");
    }
    out.into_response()
}

async fn finalization(AxState(honest): AxState<String>, AxPath((lie, h)): AxPath<(String, u64)>) -> Response {
    match fetch(format!("{honest}/sync/finalization/{h}")).await {
        Ok(mut b) => {
            if lie == "cert" {
                // The last bytes are a signature.
                let last = b.len() - 1;
                b[last] ^= 1;
            }
            b.into_response()
        }
        Err(r) => r,
    }
}

async fn block(AxState(honest): AxState<String>, AxPath((_, h)): AxPath<(String, u64)>) -> Response {
    match fetch(format!("{honest}/blocks/{h}")).await {
        Ok(b) => ([(axum::http::header::CONTENT_TYPE, "application/json")], b).into_response(),
        Err(r) => r,
    }
}

#[test]
fn a_validator_that_lost_its_data_syncs_state_from_a_peer_refusing_lying_ones() {
    let rt = tokio::runtime::Runtime::new().expect("a runtime");
    let mut net = start_testnet();
    let urls: Vec<String> = net.out.validators.iter().map(|v| v.rpc.clone()).collect();
    let live: Vec<&str> = urls[..3].iter().map(String::as_str).collect();
    let keys = net.out.validators[0].home.clone();
    wait_height(&[&urls[0], &urls[3]], 3);
    transfer(&keys, &urls[0], "alice");

    // Validator 3 dies and loses its data directory.
    let v3 = &net.out.validators[3];
    assert!(kill(v3.pid));
    let home3 = v3.home.clone();
    std::thread::sleep(Duration::from_millis(300));
    std::fs::remove_dir_all(home3.join("data")).expect("removes the data directory");
    let _ = std::fs::remove_file(home3.join("rpc.addr"));
    // The chain goes on without it.
    let before = height(&urls[0]);
    transfer(&keys, &urls[1], "alice");
    wait_height(&live, before + 8);

    // It is told to copy the state: two lying peers first, then an honest one.
    let evil = rt.block_on(lying_peer(urls[0].clone()));
    let mut toml = std::fs::read_to_string(home3.join("node.toml")).expect("node.toml");
    toml.push_str(&format!(
        "state_sync = [\"{evil}/chunk\", \"{evil}/cert\", \"{}\"]\n",
        urls[1]
    ));
    std::fs::write(home3.join("node.toml"), toml).expect("writes node.toml");
    let log_path = home3.join("node.log");
    let start_v3 = |net: &mut Testnet| -> String {
        let log = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(&log_path)
            .expect("the validator's log");
        let mut child = Command::new(bin())
            .args(["node", "start", "--home"])
            .arg(&home3)
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawns pazar node start");
        let url = common::wait_ready(&home3, &mut child, START_TIMEOUT);
        net.restarted.push(child);
        url
    };
    let url3 = start_v3(&mut net);
    let mut log = String::new();
    std::fs::File::open(&log_path)
        .expect("log")
        .read_to_string(&mut log)
        .expect("reads the log");
    assert!(
        log.contains("not in the tree"),
        "the changed chunk was refused for its proof:\n{log}"
    );
    assert!(
        log.contains("not signed by a quorum") || log.contains("does not decode"),
        "the changed certificate was refused:\n{log}"
    );

    // It joined at a recent height without the blocks below it, and follows the chain.
    let rpc3 = Rpc::new(&url3);
    let base = rpc3.status().expect("status").height;
    assert!(
        base > before,
        "it started at the peers' height ({base}), not from genesis"
    );
    assert!(
        rpc3.block(1).is_err_and(|e| e.is_not_found()),
        "no history below the snapshot"
    );
    let all: Vec<&str> = vec![&urls[0], &urls[1], &urls[2], &url3];
    // It takes part again: a transfer sent to it commits (it proposes, or gossip carries it).
    let h = transfer(&keys, &url3, "bob");
    wait_height(&all, h + 2);
    let rpc0 = Rpc::new(&urls[0]);
    for height in base + 1..=h + 2 {
        let (a, b) = (
            rpc0.block(height).expect("validator 0 has it"),
            rpc3.block(height).expect("the synced validator has it"),
        );
        assert_eq!(
            (a.hash, a.state_root_after),
            (b.hash, b.state_root_after),
            "block {height}"
        );
    }

    // Its metrics show the engine's view and peers beside the node's finality.
    let metrics = ureq::get(&format!("{url3}/metrics"))
        .call()
        .expect("metrics")
        .body_mut()
        .read_to_string()
        .expect("metrics text");
    for name in ["pazar_block_finality_seconds", "current_view", "connected", "# EOF"] {
        assert!(metrics.contains(name), "{name} is not in /metrics:\n{metrics}");
    }
    assert_eq!(metrics.matches("# EOF").count(), 1, "one exposition");

    // Restarted from its own store, it starts from the certificate it kept.
    let pid = net.restarted.last_mut().expect("started").id();
    assert!(kill(pid));
    std::thread::sleep(Duration::from_millis(300));
    let url3 = start_v3(&mut net);
    let target = height(&urls[0]);
    wait_height(&[&url3], target);
    let rpc3 = Rpc::new(&url3);
    let b = rpc3.block(target).expect("the block");
    assert_eq!(b.hash, rpc0.block(target).expect("block").hash);
}
