//! `pazar bench node`: a real node (this binary, as a child process) on a fresh home; clients
//! submit signed transactions over HTTP; then the restart time of a store holding many accounts.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use serde::Serialize;

use pazar_api::node::TxState;
use pazar_api::request::SubmitMode;
use pazar_client::keyring::{Backend, Keyring};
use pazar_client::Rpc;
use pazar_ledger::{GenesisBalance, Params};
use pazar_node::genesis::{GenesisFile, Validator};
use pazar_types::{Address, Coin, Denom, KeyScheme, Msg, SigningKey, TxBody};

use crate::home::{self, Config, NATIVE, STABLE};

#[derive(Args, Clone)]
pub struct NodeBenchOpts {
    /// Signed transactions submitted in the throughput run.
    #[arg(long, default_value_t = 60_000)]
    pub txs: usize,
    /// Distinct sending accounts.
    #[arg(long, default_value_t = 3_000)]
    pub senders: usize,
    /// Client threads submitting concurrently.
    #[arg(long, default_value_t = 2)]
    pub clients: usize,
    /// Transactions per batch request.
    #[arg(long, default_value_t = 500)]
    pub batch: usize,
    /// Accounts in the store whose restart is timed (0 skips the restart measurement).
    #[arg(long, default_value_t = 1_000_000)]
    pub accounts: usize,
    #[arg(long, default_value_t = 1000)]
    pub block_time_ms: u64,
    /// Keep the restart store in this directory and reuse it on the next run (building a store
    /// of a million accounts takes minutes); by default a scratch directory is built and removed.
    #[arg(long)]
    pub restart_dir: Option<PathBuf>,
    /// Only measure the restart (skip the throughput run).
    #[arg(long)]
    pub restart_only: bool,
}

const CHAIN: &str = "pazar-bench-node";

fn denom(s: &str) -> Result<Denom> {
    Denom::new(s).map_err(|e| anyhow!("{e}"))
}

pub(crate) fn sender_key(i: usize) -> Result<SigningKey> {
    let mut secret = [0u8; 32];
    secret[..8].copy_from_slice(&(i as u64 + 1).to_le_bytes());
    secret[31] = 0x5b;
    SigningKey::from_secret(KeyScheme::Ed25519, &secret).map_err(|e| anyhow!("{e}"))
}

pub(crate) fn bulk_address(i: usize) -> Address {
    let mut a = [0u8; 20];
    a[..8].copy_from_slice(&(i as u64).to_be_bytes());
    a[19] = 0xb1;
    Address::Native(a)
}

/// A home with a validator key and a genesis funding `funded`.
fn make_home(dir: &Path, funded: impl Iterator<Item = Address>, block_time_ms: u64) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    let kr = Keyring::new(dir);
    let validator = SigningKey::from_secret(KeyScheme::Ed25519, &[0x11; 32]).map_err(|e| anyhow!("{e}"))?;
    kr.add("validator", &validator, None, 0, Backend::Test, &|_, _| None)
        .map_err(|e| anyhow!("{e}"))?;
    let (n, s) = (denom(NATIVE)?, denom(STABLE)?);
    let balances = funded
        .map(|address| GenesisBalance {
            address,
            coins: vec![
                Coin::new(1_000_000_000_000, n.clone()),
                Coin::new(1_000_000_000_000, s.clone()),
            ],
        })
        .collect();
    let genesis = GenesisFile {
        genesis_time_ms: 0,
        chain_id: CHAIN.into(),
        params: Params::devnet(NATIVE, STABLE),
        balances,
        validators: vec![Validator {
            name: "validator".into(),
            address: validator.address(),
            power: 1,
            consensus_key: None,
        }],
        epoch_length: pazar_node::genesis::DEFAULT_EPOCH_LENGTH,
    };
    std::fs::write(home::genesis_path(dir), serde_json::to_vec(&genesis)?)?;
    let config = Config {
        rpc_listen: "127.0.0.1:0".into(),
        block_time_ms,
        keep_versions: Some(100),
        mempool_max_txs: 400_000,
        max_block_txs: 40_000,
        ..Config::default()
    };
    std::fs::write(home::config_path(dir), home::config_toml(&config))?;
    Ok(())
}

struct NodeProc {
    child: Child,
    rpc: Rpc,
}

impl Drop for NodeProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `pazar node start` on `home` and waits until its RPC answers; returns it and the
/// milliseconds from spawn to the first answer.
fn start_node(home: &Path, timeout: Duration) -> Result<(NodeProc, f64)> {
    let _ = std::fs::remove_file(home::rpc_addr_path(home));
    let exe = std::env::current_exe()?;
    let t0 = Instant::now();
    let child = Command::new(exe)
        .args(["node", "start", "--home"])
        .arg(home)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .context("cannot start the node")?;
    let mut proc = NodeProc {
        child,
        rpc: Rpc::new("http://127.0.0.1:1"),
    };
    loop {
        if let Some(status) = proc.child.try_wait()? {
            bail!("node exited early: {status}");
        }
        if let Ok(url) = std::fs::read_to_string(home::rpc_addr_path(home)) {
            let rpc = Rpc::new(url.trim());
            if rpc.status().is_ok() {
                proc.rpc = rpc;
                return Ok((proc, t0.elapsed().as_secs_f64() * 1e3));
            }
        }
        if t0.elapsed() > timeout {
            bail!("node did not answer within {} s", timeout.as_secs());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

pub(crate) fn sign_send(chain_id: &str, key: &SigningKey, seq: u64, to: Address) -> Result<Vec<u8>> {
    Ok(TxBody {
        chain_id: chain_id.into(),
        sender: key.address(),
        sequence: seq,
        fee: Coin::new(100, denom(NATIVE)?),
        msgs: vec![Msg::Send {
            to,
            amount: Coin::new(1, denom(NATIVE)?),
        }],
        memo: String::new(),
    }
    .sign(key)
    .encode())
}

pub(crate) fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return 0.0;
    }
    v[((v.len() - 1) as f64 * p).round() as usize]
}

pub(crate) fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

pub(crate) fn scratch(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("pazar-bench-{name}-{}", std::process::id()))
}

/// What `pazar bench node` prints: the throughput run's figures unless `--restart-only`, and
/// the restart's when `--accounts` is above zero.
#[derive(Debug, Serialize)]
pub struct NodeBenchReport {
    bench: &'static str,
    #[serde(flatten)]
    throughput: Option<Throughput>,
    #[serde(flatten)]
    restart: Option<Restart>,
}

#[derive(Debug, Serialize)]
struct Throughput {
    block_time_ms: u64,
    txs_submitted: usize,
    txs_accepted: usize,
    txs_committed: usize,
    submit_s: f64,
    commit_span_s: f64,
    committed_tx_per_s: f64,
    blocks_used: usize,
    max_block_txs: Option<usize>,
    commit_latency_p50_ms: f64,
    commit_latency_p90_ms: f64,
    node_rss_mb: Option<f64>,
}

#[derive(Debug, Serialize)]
struct Restart {
    accounts: usize,
    genesis_init_ms: Option<f64>,
    restart_ms: f64,
    store_mb: f64,
    restart_rss_mb: Option<f64>,
}

pub fn run(o: &NodeBenchOpts) -> Result<NodeBenchReport> {
    let throughput = if o.restart_only { None } else { Some(throughput(o)?) };
    let restart = if o.accounts > 0 { Some(restart(o)?) } else { None };
    Ok(NodeBenchReport {
        bench: "node",
        throughput,
        restart,
    })
}

fn throughput(o: &NodeBenchOpts) -> Result<Throughput> {
    if o.senders == 0 || o.txs == 0 || o.clients == 0 || o.batch == 0 {
        bail!("--txs, --senders, --clients and --batch must be positive");
    }
    let dir = scratch("tps");
    let _ = std::fs::remove_dir_all(&dir);
    let keys: Vec<SigningKey> = (0..o.senders + 1).map(sender_key).collect::<Result<_>>()?;
    make_home(&dir, keys.iter().map(SigningKey::address), o.block_time_ms)?;

    eprintln!("bench node: signing {} transactions from {} accounts", o.txs, o.senders);
    let per = o.txs.div_ceil(o.senders);
    let mut txs = Vec::with_capacity(o.txs);
    'outer: for seq in 0..per as u64 {
        for (i, k) in keys[..o.senders].iter().enumerate() {
            if txs.len() == o.txs {
                break 'outer;
            }
            txs.push(sign_send(CHAIN, k, seq, bulk_address(i))?);
        }
    }
    let (node, _) = start_node(&dir, Duration::from_secs(60))?;
    let start_height = node.rpc.status()?.height;

    eprintln!("bench node: submitting over HTTP with {} clients", o.clients);
    let batches: Vec<&[Vec<u8>]> = txs.chunks(o.batch).collect();
    let t_submit = pazar_node::consensus::Clock::now_ms(&pazar_node::consensus::SystemClock);
    let t0 = Instant::now();
    let accepted: usize = std::thread::scope(|s| {
        let handles: Vec<_> = (0..o.clients)
            .map(|c| {
                let rpc = node.rpc.clone();
                let mine: Vec<&[Vec<u8>]> = batches.iter().skip(c).step_by(o.clients).copied().collect();
                s.spawn(move || -> Result<usize> {
                    let mut ok = 0;
                    for b in mine {
                        let r = rpc.submit_batch(b, SubmitMode::Sync)?;
                        ok += r.results.iter().filter(|r| r.state == TxState::Pending).count();
                    }
                    Ok(ok)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().map_err(|_| anyhow!("client thread panicked"))?)
            .sum::<Result<usize>>()
    })?;
    let submit_s = t0.elapsed().as_secs_f64();
    if accepted < o.txs * 99 / 100 {
        bail!("only {accepted} of {} transactions were accepted", o.txs);
    }

    // Follow blocks until every accepted transaction is committed.
    let mut committed = 0usize;
    let mut height = start_height;
    let mut last_time = t_submit;
    let mut block_sizes = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while committed < accepted {
        if Instant::now() > deadline {
            bail!("only {committed} of {accepted} transactions committed in time");
        }
        match node.rpc.block(height + 1) {
            Ok(b) => {
                height += 1;
                let n = b.txs.len();
                let failed = b.receipts.iter().filter(|x| x.code != 0).count();
                if failed > 0 {
                    bail!("{failed} transactions failed in block {height}");
                }
                committed += n;
                if n > 0 {
                    block_sizes.push(n);
                    last_time = b.header.time_ms;
                }
            }
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
    let span_s = (last_time.saturating_sub(t_submit)) as f64 / 1e3;
    let committed_tx_per_s = committed as f64 / span_s.max(1e-3);

    // Commit latency of single transactions at light load: submit and wait for the block.
    eprintln!("bench node: commit latency of single transactions");
    let probe = &keys[o.senders];
    let mut lat = Vec::new();
    for seq in 0..20u64 {
        let tx = sign_send(CHAIN, probe, seq, bulk_address(o.senders + 1))?;
        let t = Instant::now();
        let r = node.rpc.submit(&tx, SubmitMode::Commit)?;
        if !matches!(r.state, TxState::Committed { .. }) {
            bail!("latency probe not committed: {:?}", r.state);
        }
        lat.push(t.elapsed().as_secs_f64() * 1e3);
        // Spread submissions over the block interval so the median is not phase-locked.
        std::thread::sleep(Duration::from_millis(o.block_time_ms * ((seq * 37) % 100) / 100));
    }
    let rss_mb = node_rss_mb(node.child.id());
    drop(node);
    let _ = std::fs::remove_dir_all(&dir);

    Ok(Throughput {
        block_time_ms: o.block_time_ms,
        txs_submitted: o.txs,
        txs_accepted: accepted,
        txs_committed: committed,
        submit_s: round2(submit_s),
        commit_span_s: round2(span_s),
        committed_tx_per_s: committed_tx_per_s.round(),
        blocks_used: block_sizes.len(),
        max_block_txs: block_sizes.iter().max().copied(),
        commit_latency_p50_ms: round2(percentile(&mut lat.clone(), 0.5)),
        commit_latency_p90_ms: round2(percentile(&mut lat, 0.9)),
        node_rss_mb: rss_mb,
    })
}

fn restart(o: &NodeBenchOpts) -> Result<Restart> {
    {
        let keep = o.restart_dir.is_some();
        let dir = o.restart_dir.clone().unwrap_or_else(|| scratch("restart"));
        let reuse = keep && home::db_path(&dir).exists();
        let mut init_ms = None;
        let before = if reuse {
            eprintln!("bench node: reusing the store in {}", dir.display());
            let (node, _) = start_node(&dir, Duration::from_secs(120))?;
            node.rpc.status()?
        } else {
            let _ = std::fs::remove_dir_all(&dir);
            eprintln!("bench node: building a store with {} accounts", o.accounts);
            make_home(&dir, (0..o.accounts).map(bulk_address), o.block_time_ms)?;
            let (node, ms) = start_node(&dir, Duration::from_secs(900))?;
            init_ms = Some(ms.round());
            // Let a block or two commit on top of genesis, then crash it.
            std::thread::sleep(Duration::from_millis(o.block_time_ms * 2));
            node.rpc.status()?
        };
        let (node, restart_ms) = start_node(&dir, Duration::from_secs(120))?;
        let after = node.rpc.status()?;
        if after.state_root != before.state_root && after.height == before.height {
            bail!("state root changed across the restart");
        }
        let db_mb = std::fs::metadata(home::db_path(&dir))
            .map(|m| m.len() as f64 / 1e6)
            .unwrap_or(0.0);
        let rss = node_rss_mb(node.child.id());
        drop(node);
        if !keep {
            let _ = std::fs::remove_dir_all(&dir);
        }
        Ok(Restart {
            accounts: o.accounts,
            genesis_init_ms: init_ms,
            restart_ms: restart_ms.round(),
            store_mb: round2(db_mb),
            restart_rss_mb: rss,
        })
    }
}

fn node_rss_mb(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some((kb / 1024.0).round())
}
