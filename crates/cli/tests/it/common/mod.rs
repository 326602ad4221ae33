//! Running the real `pazar` binary: a devnet in a temporary home, CLI commands with JSON output.

#![allow(dead_code)]

pub mod proxy;
pub mod testnet;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value;

use pazar_api::node::{TxResult, TxState};
use pazar_api::provider::LeaseStatus;
use pazar_client::deploy::LeaseOutcome;
use pazar_sdl::Manifest;
use pazar_types::market::BidId;
use pazar_types::records::Receipt;

/// Held by every test that runs several validator (or worker) processes at once: `pazar
/// testnet`, `pazar bench testnet`, `pazar train demo`. The tests share one process and run on
/// parallel threads; two such runs side by side would starve each other's consensus timeouts on
/// a small machine, so they take turns (a test that panicked while holding it does not block
/// the next).
static ONE_TESTNET_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Waits for [`ONE_TESTNET_AT_A_TIME`]; the test runs its processes while it holds the guard.
pub fn one_testnet_at_a_time() -> MutexGuard<'static, ()> {
    ONE_TESTNET_AT_A_TIME.lock().unwrap_or_else(PoisonError::into_inner)
}

pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_pazar"))
}

pub struct Devnet {
    pub home: tempfile::TempDir,
    pub child: Child,
    pub url: String,
}

impl Drop for Devnet {
    fn drop(&mut self) {
        remove_docker_leases_of(self.home.path());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Closes, on the local Docker engine, every lease owned by or served by a key of the devnet in
/// `home`, so a test that fails midway leaves no containers, networks or firewall rules behind
/// (a test that passes closed its leases itself; one found here is named on stderr). Devnet
/// keys are made afresh for each devnet, so another test's leases are never touched. Without a
/// Docker engine there is nothing to do.
pub fn remove_docker_leases_of(home: &Path) {
    let Ok(keys) = pazar_client::keyring::Keyring::new(home).list() else {
        return;
    };
    let ours: Vec<pazar_types::Address> = keys.into_iter().map(|k| k.address).collect();
    let failed = std::thread::panicking();
    // A thread of its own: the caller may be inside a Tokio runtime, where another cannot block.
    let work = move || {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
            return;
        };
        rt.block_on(async {
            use pazar_runtime::docker::{DockerOptions, DockerRuntime};
            use pazar_runtime::{LeaseRef, Runtime};
            let Ok(docker) = DockerRuntime::connect(DockerOptions::default()).await else {
                return;
            };
            let Ok(leases) = docker.leases().await else {
                return;
            };
            for (_, label) in leases {
                let Ok(id) = label.parse::<BidId>() else {
                    continue;
                };
                if ours.contains(&id.owner) || ours.contains(&id.provider) {
                    if !failed {
                        eprintln!("the test left lease {id} on the Docker engine: removing it");
                    }
                    // Other tests' daemons change the firewall at the same time; a few tries get
                    // past a busy moment.
                    for attempt in 1..=3 {
                        match docker.close(&LeaseRef::new(id.clone())).await {
                            Ok(()) => break,
                            Err(e) => {
                                eprintln!("cannot remove lease {id} from the Docker engine (try {attempt}): {e}");
                                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                            }
                        }
                    }
                }
            }
        });
    };
    let _ = std::thread::spawn(work).join();
}

/// Waits for `<home>/rpc.addr` and a answering `/status`.
pub fn wait_ready(home: &Path, child: &mut Child, timeout: Duration) -> String {
    let t0 = Instant::now();
    loop {
        if let Some(s) = child.try_wait().expect("try_wait") {
            panic!("node exited early: {s}");
        }
        if let Ok(url) = std::fs::read_to_string(home.join("rpc.addr")) {
            let url = url.trim().to_string();
            if pazar_client::Rpc::new(&url).status().is_ok() {
                return url;
            }
        }
        assert!(t0.elapsed() < timeout, "node did not come up");
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn spawn(args: &[&str], home: &Path) -> Child {
    Command::new(bin())
        .args(args)
        .arg("--home")
        .arg(home)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawns pazar")
}

pub fn devnet(block_time_ms: u64) -> Devnet {
    devnet_with(block_time_ms, &[])
}

/// A devnet with `extra` arguments to `pazar devnet` (`--grace-blocks 40`, say).
pub fn devnet_with(block_time_ms: u64, extra: &[&str]) -> Devnet {
    let home = tempfile::tempdir().expect("tempdir");
    let bt = block_time_ms.to_string();
    let mut args = vec!["devnet", "--rpc-listen", "127.0.0.1:0", "--block-time-ms", &bt];
    args.extend_from_slice(extra);
    let mut child = spawn(&args, home.path());
    let url = wait_ready(home.path(), &mut child, Duration::from_secs(30));
    Devnet { home, child, url }
}

impl Devnet {
    pub fn rpc(&self) -> pazar_client::Rpc {
        pazar_client::Rpc::new(&self.url)
    }

    /// Runs `pazar ARGS --home H -o json`; returns the output.
    pub fn cli_raw(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut c = Command::new(bin());
        c.args(args).arg("--home").arg(self.home.path()).args(["-o", "json"]);
        for (k, v) in env {
            c.env(k, v);
        }
        c.stdin(Stdio::null()).output().expect("runs pazar")
    }

    /// Runs a CLI command that must succeed; returns its JSON.
    pub fn cli(&self, args: &[&str]) -> Value {
        let out = self.cli_raw(args, &[]);
        assert!(
            out.status.success(),
            "pazar {args:?} failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "pazar {args:?} printed no JSON ({e}): {}",
                String::from_utf8_lossy(&out.stdout)
            )
        })
    }

    /// Runs a CLI command that must succeed and reads what it prints as a `T`.
    pub fn cli_as<T: DeserializeOwned>(&self, args: &[&str]) -> T {
        let v = self.cli(args);
        serde_json::from_value(v.clone())
            .unwrap_or_else(|e| panic!("pazar {args:?} printed an unexpected shape ({e}): {v}"))
    }

    /// `pazar deploy ARGS` (must succeed), read as its output's type.
    pub fn deploy(&self, args: &[&str]) -> Deployed {
        let mut all = vec!["deploy"];
        all.extend_from_slice(args);
        self.cli_as(&all)
    }

    /// `pazar lease status LEASE --from FROM`, as the provider answered it.
    pub fn lease_status(&self, lease: &BidId, from: &str) -> LeaseStatus {
        self.cli_as(&["lease", "status", &lease.to_string(), "--from", from])
    }

    /// `pazar lease close LEASE --from FROM`, which must commit successfully.
    pub fn close_lease(&self, lease: &BidId, from: &str) {
        let c: Closed = self.cli_as(&["lease", "close", &lease.to_string(), "--from", from]);
        assert_committed(&c.tx, "lease close");
    }

    /// A transaction command that must commit successfully: its height and receipt.
    pub fn tx_ok(&self, args: &[&str]) -> (u64, Receipt) {
        let r: TxResult = self.cli_as(args);
        match r.state {
            TxState::Committed { height, receipt, .. } if receipt.code == 0 => (height, receipt),
            other => panic!("{args:?} did not commit successfully: {other:?}"),
        }
    }

    pub fn address(&self, name: &str) -> String {
        self.cli(&["keys", "show", name])["address"]
            .as_str()
            .expect("address")
            .to_string()
    }

    pub fn height(&self) -> u64 {
        self.rpc().status().expect("status").height
    }

    pub fn wait_height(&self, h: u64) {
        let t0 = Instant::now();
        while self.height() < h {
            assert!(t0.elapsed() < Duration::from_secs(30), "chain stalled");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// What `pazar deploy -o json` prints, the part the tests read (the CLI's `DeployOutput`; the
/// fields are the client's and the node's own types).
#[derive(Debug, Deserialize)]
pub struct Deployed {
    pub tx: TxResult,
    pub manifest_file: PathBuf,
    #[serde(default)]
    pub leases: Vec<LeaseOutcome>,
}

impl Deployed {
    /// The one lease a deployment of one group made.
    pub fn lease(&self) -> &LeaseOutcome {
        assert_eq!(self.leases.len(), 1, "one lease: {self:?}");
        &self.leases[0]
    }

    /// The manifest the CLI saved for the deployment (what goes to the provider).
    pub fn manifest(&self) -> Manifest {
        saved_manifest(&self.manifest_file)
    }
}

/// What `pazar lease close -o json` prints.
#[derive(Debug, Deserialize)]
pub struct Closed {
    pub tx: TxResult,
}

/// The manifest in a record the CLI saved under `deployments/`.
pub fn saved_manifest(path: &Path) -> Manifest {
    #[derive(Deserialize)]
    struct Saved {
        manifest: Manifest,
    }
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_slice::<Saved>(&bytes)
        .unwrap_or_else(|e| panic!("{} holds no manifest: {e}", path.display()))
        .manifest
}

/// How a command failed under `-o json`: `{"error": {"code", "message"}}` on stdout. The code is
/// a node's or a provider's `ErrorCode` name, or one of the CLI's own (`key`, `no_bids`, …).
#[derive(Debug, Deserialize)]
pub struct CliError {
    pub code: String,
    pub message: String,
}

/// The error a failed `cli_raw` command printed.
pub fn cli_error(out: &Output) -> CliError {
    #[derive(Deserialize)]
    struct Envelope {
        error: CliError,
    }
    assert!(!out.status.success(), "the command succeeded");
    serde_json::from_slice::<Envelope>(&out.stdout)
        .unwrap_or_else(|e| {
            panic!(
                "no JSON error on stdout ({e}): {}\nstderr: {}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        })
        .error
}

/// Panics unless `r` committed with a successful receipt.
pub fn assert_committed(r: &TxResult, what: &str) {
    match &r.state {
        TxState::Committed { receipt, .. } if receipt.code == 0 => {}
        other => panic!("{what} did not commit successfully: {other:?}"),
    }
}

pub fn amount(v: &Value) -> u128 {
    v.as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an amount: {v}"))
}

/// A child process killed (and reaped) when dropped: a provider daemon in a test.
pub struct Daemon(pub Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A TCP port free on loopback at the time of asking.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// `GET /` over HTTP/1.0 until the answer contains 200 (10 s at most); returns the answer.
pub fn http_get(uri: &str) -> String {
    use std::io::{Read, Write};
    let hostport = uri.trim_start_matches("http://").to_string();
    let t0 = Instant::now();
    loop {
        if let Ok(mut s) = std::net::TcpStream::connect(&hostport) {
            let mut out = String::new();
            if s.write_all(b"GET / HTTP/1.0\r\n\r\n").is_ok()
                && s.read_to_string(&mut out).is_ok()
                && out.contains("200")
            {
                return out;
            }
        }
        assert!(t0.elapsed() < Duration::from_secs(10), "{uri} does not answer");
        std::thread::sleep(Duration::from_millis(100));
    }
}
