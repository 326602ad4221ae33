//! `pazar testnet` end to end on the real binary: four validator processes over loopback
//! sockets. Clients send signed transactions to different validators; every validator holds
//! the same blocks and state roots; with one validator killed (`kill -9`) the other three keep
//! finalizing; restarted, it catches up from its store and its peers; every transaction a
//! validator acknowledged as committed is in exactly one block, the same on all four.
//!
//! One validator's p2p links pass through a proxy the test cuts and heals while clients keep
//! sending to every validator, another is killed and restarted meanwhile: every acknowledged
//! transaction is committed once, on all four, and the cut-off validator comes back to the tip.
//! The demo's deployment (provider daemon following one validator, tenant sending to another)
//! reaches serving with a validator down.
//!
//! A validator that lost its data copies a peer's state (state sync), refusing lying peers.
//!
//! Validators gossip the transactions they receive, so the next leader includes each.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::extract::{Path as AxPath, State as AxState};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use pazar_api::node::{TxResult, TxState};
use pazar_api::request::SubmitMode;
use pazar_client::keyring::Keyring;
use pazar_client::Rpc;
use pazar_types::{Coin, Hash32, Msg, SigningKey, TxBody};

use crate::common::proxy::Proxy;
use crate::common::testnet::{create, signal, start, start_in, Testnet, TestnetOut, ValidatorOut, PROGRESS_TIMEOUT};
use crate::common::{self, bin, one_testnet_at_a_time};
use pazar_store::{read_frame, write_frame, Frame};

/// How long a client waits for the validator it sent a transaction to to say it is committed
/// before it sends the same bytes to the next validator.
const ACK_WAIT: Duration = Duration::from_secs(5);

/// Blocks the healthy validators make while one is down or cut off.
const BLOCKS_WHILE_FAULTY: u64 = 6;

/// The heights at which each transaction (hex hash) appears in a chain.
type TxHeights = BTreeMap<String, Vec<u64>>;

impl Testnet {
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
}

#[test]
fn four_validator_processes_agree_survive_a_killed_one_and_commit_each_transaction_once() {
    let _one = one_testnet_at_a_time();
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
    let v3 = net.out.validators[3].pid();
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
        assert!(
            !signal("-0", v.pid()),
            "{} still runs after the testnet stopped",
            v.name
        );
    }
}

/// Routes every p2p link of validator `cut` through one proxy: its peers list names the proxy's
/// ports for the others, and the others' name a proxy port for it. Rewrites the `node.toml`
/// files of homes made by `--create-only`, as an operator edits `peers` for hosts of their own.
fn route_through_proxy(created: &TestnetOut, cut: usize) -> Proxy {
    let addr = |v: &ValidatorOut| -> SocketAddr { v.p2p.parse().expect("a p2p socket address") };
    let targets: Vec<SocketAddr> = created.validators.iter().map(addr).collect();
    let (proxy, ports) = Proxy::new(&targets);
    let edit = |home: &Path, from: &str, to: u16| {
        let path = home.join("node.toml");
        let text = std::fs::read_to_string(&path).expect("node.toml");
        let (old, new) = (format!("@{from}\""), format!("@127.0.0.1:{to}\""));
        assert_eq!(
            text.matches(&old).count(),
            1,
            "one peer at {from} in {}",
            path.display()
        );
        std::fs::write(&path, text.replace(&old, &new)).expect("node.toml written");
    };
    for (j, v) in created.validators.iter().enumerate() {
        if j != cut {
            // The cut-off validator reaches j through the proxy, and j reaches it.
            edit(&created.validators[cut].home, &v.p2p, ports[j]);
            edit(&v.home, &created.validators[cut].p2p, ports[cut]);
        }
    }
    proxy
}

/// A client sending transfers of 1upzr from `key`, one at a time, to the validators in `to` in
/// turn until `stop`: each transaction goes to one validator, and to the next one if that
/// validator does not say within [`ACK_WAIT`] that it is committed (the same bytes, so it can
/// commit only once). The transactions acknowledged as committed, with the height their
/// validator gave.
fn client(
    key: &SigningKey,
    chain_id: &str,
    urls: &[String],
    to: &[usize],
    stop: &AtomicBool,
    acks: &AtomicUsize,
) -> Vec<(Hash32, u64)> {
    let rpcs: Vec<Rpc> = urls.iter().map(|u| Rpc::new(u)).collect();
    let first = &rpcs[to[0]];
    let fee = pazar_client::min_fee(first, 1).expect("the fee");
    let mut sequence = first.sequence(&key.address()).expect("the sender's sequence");
    let amount = Coin::new(1, fee.denom.clone());
    let mut acked = Vec::new();
    let mut turn = 0;
    'txs: while !stop.load(Ordering::SeqCst) {
        let bytes = TxBody {
            chain_id: chain_id.to_string(),
            sender: key.address(),
            sequence,
            fee: fee.clone(),
            msgs: vec![Msg::Send {
                to: pazar_types::Address::Native([7; 20]),
                amount: amount.clone(),
            }],
            memo: String::new(),
        }
        .sign(key)
        .encode();
        let hash = pazar_types::tx_hash(&bytes);
        loop {
            if stop.load(Ordering::SeqCst) {
                break 'txs;
            }
            let rpc = &rpcs[to[turn % to.len()]];
            turn += 1;
            // Refused when the validator holds it already or it is committed: the lookup says.
            let _ = rpc.submit(&bytes, SubmitMode::Sync);
            let t0 = Instant::now();
            while t0.elapsed() < ACK_WAIT {
                match rpc.tx(&hash).map(|l| l.state) {
                    Ok(TxState::Committed { height, receipt, .. }) => {
                        assert_eq!(receipt.code, 0, "transfer {} failed: {receipt:?}", hex::encode(hash));
                        acked.push((hash, height));
                        acks.fetch_add(1, Ordering::SeqCst);
                        sequence += 1;
                        continue 'txs;
                    }
                    Ok(TxState::Pending) => std::thread::sleep(Duration::from_millis(50)),
                    // Dropped, unknown, or the validator is down: try the next one.
                    _ => break,
                }
            }
        }
    }
    acked
}

/// Waits until `acks` passes `n`; a stall of the clients fails the test.
fn wait_acks(acks: &AtomicUsize, n: usize, what: &str) {
    let t0 = Instant::now();
    while acks.load(Ordering::SeqCst) < n {
        assert!(
            t0.elapsed() < PROGRESS_TIMEOUT,
            "no transaction was acknowledged {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_validator_cut_off_and_healed_and_another_killed_and_restarted_while_clients_send_lose_no_transaction() {
    let _one = one_testnet_at_a_time();
    let (dir, created) = create(4);
    let (killed, cut) = (3, 2);
    let proxy = route_through_proxy(&created, cut);
    let mut net = start_in(dir, 4);
    let all = [0, 1, 2, 3];
    net.wait_height(&all, 2);

    // Four clients, each sending to every validator in its own order, through everything below.
    let keyring = Keyring::new(net.keys_home());
    let keys: Vec<SigningKey> = ["alice", "bob", "provider", "faucet"]
        .iter()
        .map(|k| keyring.signer(k, &|_, _| None).expect("a devnet key"))
        .collect();
    let stop = AtomicBool::new(false);
    let acks = AtomicUsize::new(0);
    let (chain_id, urls) = (net.out.chain_id.clone(), net.urls.clone());
    let acked: Vec<(Hash32, u64)> = std::thread::scope(|s| {
        let clients: Vec<_> = keys
            .iter()
            .enumerate()
            .map(|(c, key)| {
                let to: Vec<usize> = (0..4).map(|k| (c + k) % 4).collect();
                let (chain_id, urls, stop, acks) = (&chain_id, &urls, &stop, &acks);
                s.spawn(move || client(key, chain_id, urls, &to, stop, acks))
            })
            .collect();
        wait_acks(&acks, 4, "before any fault");

        // kill -9 of one validator: the other three go on, and so do the clients.
        assert!(signal("-KILL", net.out.validators[killed].pid()), "kill -9 {killed}");
        let live = [0, 1, 2];
        let down_at = net.max_height(&live);
        let acked_before = acks.load(Ordering::SeqCst);
        net.wait_height(&live, down_at + BLOCKS_WHILE_FAULTY);
        wait_acks(&acks, acked_before + 4, "while a validator was down");

        // Restarted from its home, it catches up (its RPC port is its node.toml's: the same URL).
        net.restart(killed);
        assert_eq!(net.urls[killed], urls[killed]);
        net.wait_height(&all, net.max_height(&live));

        // Cut off: its connections dropped and new ones refused. The other three finalize, it
        // stops (once it has committed what it received before the cut), and clients sending
        // to it move on.
        proxy.cut();
        let connected = [0, 1, 3];
        let acked_before = acks.load(Ordering::SeqCst);
        net.wait_height(&connected, net.max_height(&connected) + 2);
        let stalled = net.height(cut);
        net.wait_height(&connected, net.max_height(&connected) + BLOCKS_WHILE_FAULTY);
        wait_acks(&acks, acked_before + 4, "while a validator was cut off");
        assert_eq!(
            net.height(cut),
            stalled,
            "a validator cut off from every peer finalized blocks alone"
        );

        // Healed: it reconnects and catches up to the others' tip.
        proxy.heal();
        net.wait_height(&[cut], net.max_height(&connected));
        let acked_before = acks.load(Ordering::SeqCst);
        wait_acks(&acks, acked_before + 4, "after the heal");

        stop.store(true, Ordering::SeqCst);
        clients
            .into_iter()
            .flat_map(|c| c.join().expect("a client thread"))
            .collect()
    });

    // Every validator holds the same blocks and roots, each acknowledged transaction once.
    let end = net.max_height(&all);
    net.wait_height(&all, end);
    net.assert_agree(&all, end, &acked);
    assert!(acked.len() >= 16, "{} transactions acknowledged", acked.len());
}

/// The demo's image, built in the local Docker engine under a tag of this test's own.
const IMAGE: &str = "pazar-demo:testnet";

fn build_demo_image() {
    use pazar_runtime::docker::{DockerOptions, DockerRuntime};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let d = DockerRuntime::connect(DockerOptions::default())
            .await
            .expect("a Docker engine (the demo's runtime)");
        pazar_runtime::demo_image::build_demo_image(d.docker(), IMAGE)
            .await
            .expect("the demo image builds");
    });
}

/// Removes, when dropped, the Docker leases of the keys in a home (those a failed test left).
struct DockerLeasesOf(PathBuf);

impl Drop for DockerLeasesOf {
    fn drop(&mut self) {
        common::remove_docker_leases_of(&self.0);
    }
}

/// Runs `pazar ARGS --home HOME --node URL -o json`, which must succeed; its output as `T`.
fn pazar_as<T: serde::de::DeserializeOwned>(home: &Path, url: &str, args: &[&str]) -> T {
    let out = Command::new(bin())
        .args(args)
        .arg("--home")
        .arg(home)
        .args(["--node", url, "-o", "json"])
        .stdin(Stdio::null())
        .output()
        .expect("runs pazar");
    assert!(
        out.status.success(),
        "pazar {args:?} via {url} failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("pazar {args:?} printed {:?}: {e}", String::from_utf8_lossy(&out.stdout)))
}

#[test]
fn the_demo_deployment_reaches_serving_on_the_testnet_with_a_validator_down() {
    let _one = one_testnet_at_a_time();
    build_demo_image();
    let net = start(4);
    let all = [0, 1, 2, 3];
    net.wait_height(&all, 2);
    let keys = net.keys_home().to_path_buf();
    let _cleanup = DockerLeasesOf(keys.clone());

    // One validator down before anything is deployed; three of four keep finalizing.
    assert!(signal("-KILL", net.out.validators[3].pid()), "kill -9 v3");

    // The provider daemon follows v1's events and sends its transactions there.
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("provider.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:{}\"\nruntime = \"docker\"\n[attributes]\nregion = \"local\"\n[images]\nallow_local = [\"pazar-demo:*\"]\n",
            common::free_port()
        ),
    )
    .expect("provider.toml");
    let log = dir.path().join("provider.log");
    let _daemon = common::Daemon(
        Command::new(bin())
            .args(["provider", "run", "--from", "provider", "--config"])
            .arg(&config)
            .arg("--home")
            .arg(&keys)
            .args(["--node", &net.urls[1]])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("the daemon's log"))
            .spawn()
            .expect("spawns the provider daemon"),
    );
    let provider = Keyring::new(&keys)
        .list()
        .expect("the devnet's keys")
        .into_iter()
        .find(|k| k.name == "provider")
        .expect("the provider key")
        .address;
    let t0 = Instant::now();
    while net.rpc(2).provider(&provider, false).is_err() {
        assert!(
            t0.elapsed() < PROGRESS_TIMEOUT,
            "the provider did not register: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // The tenant deploys the demo's SDL through v2, a validator the provider does not follow.
    let sdl = dir.path().join("deploy.yaml");
    std::fs::write(
        &sdl,
        include_str!("../../../../examples/demo/deploy.yaml").replace("pazar-demo:1", IMAGE),
    )
    .expect("deploy.yaml");
    let deployed: common::Deployed = pazar_as(
        &keys,
        &net.urls[2],
        &[
            "deploy",
            sdl.to_str().expect("utf8"),
            "--from",
            "alice",
            "--bid-window-s",
            "1",
        ],
    );
    let lease = deployed.lease();
    assert_eq!(lease.lease.provider, provider, "{deployed:?}");
    assert!(lease.status.ready, "{deployed:?}");
    let uri = lease.status.uris.first().expect("a URI").uri.clone();
    assert!(common::http_get(&uri).contains("200"));

    // Closed through v0: the workload goes away.
    let closed: common::Closed = pazar_as(
        &keys,
        &net.urls[0],
        &["lease", "close", &lease.lease.to_string(), "--from", "alice"],
    );
    common::assert_committed(&closed.tx, "lease close");
}

// State sync.

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

/// A validator of the 4-validator testnet loses its whole data directory and comes back by
/// copying a peer's state (`state_sync` in node.toml) instead of replaying the chain. Before the
/// honest peer it is offered two lying ones (a snapshot chunk changed, a finalization certificate
/// changed): it refuses both, writes nothing from them, and takes the honest one. It then holds
/// the same blocks and state roots as the others above the snapshot, none below, takes part
/// again, shows the engine's metrics, and restarts from its own store.
#[test]
fn a_validator_that_lost_its_data_syncs_state_from_a_peer_refusing_lying_ones() {
    let _serial = one_testnet_at_a_time();
    let rt = tokio::runtime::Runtime::new().expect("a runtime");
    let mut net = start(4);
    let live = [0, 1, 2];
    net.wait_height(&[0, 3], 3);
    net.transfers(&[("alice", 0)], 1);

    // Validator 3 dies and loses its data directory; the chain goes on without it.
    assert!(signal("-KILL", net.out.validators[3].pid()));
    let home3 = net.out.validators[3].home.clone();
    std::thread::sleep(Duration::from_millis(300));
    std::fs::remove_dir_all(home3.join("data")).expect("removes the data directory");
    let before = net.max_height(&live);
    net.transfers(&[("alice", 1)], 1);
    net.wait_height(&live, before + 8);

    // It is told to copy the state: two lying peers first, then an honest one.
    let evil = rt.block_on(lying_peer(net.urls[0].clone()));
    let mut toml = std::fs::read_to_string(home3.join("node.toml")).expect("node.toml");
    toml.push_str(&format!(
        "state_sync = [\"{evil}/chunk\", \"{evil}/cert\", \"{}\"]\n",
        net.urls[1]
    ));
    std::fs::write(home3.join("node.toml"), toml).expect("writes node.toml");
    net.restart(3);
    let log = std::fs::read_to_string(home3.join("node.log")).expect("the validator's log");
    assert!(
        log.contains("not in the tree"),
        "the changed chunk was refused for its proof:\n{log}"
    );
    assert!(
        log.contains("not signed by a quorum") || log.contains("does not decode"),
        "the changed certificate was refused:\n{log}"
    );

    // It joined at a recent height without the blocks below it, and follows the chain.
    let rpc3 = net.rpc(3);
    let base = rpc3.status().expect("status").height;
    assert!(
        base > before,
        "it started at the peers' height ({base}), not from genesis"
    );
    assert!(
        rpc3.block(1).is_err_and(|e| e.is_not_found()),
        "no history below the snapshot"
    );
    // It takes part again: a transfer sent to it commits.
    let (_, h) = net.transfers(&[("bob", 3)], 1)[0];
    net.wait_height(&[0, 1, 2, 3], h + 2);
    let rpc0 = net.rpc(0);
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
    let metrics = ureq::get(&format!("{}/metrics", net.urls[3]))
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
    let pid = net.restarted.last_mut().expect("restarted").id();
    assert!(signal("-KILL", pid));
    std::thread::sleep(Duration::from_millis(300));
    net.restart(3);
    let target = net.max_height(&live);
    net.wait_height(&[3], target);
    assert_eq!(
        net.rpc(3).block(target).expect("the block").hash,
        rpc0.block(target).expect("block").hash
    );
}
