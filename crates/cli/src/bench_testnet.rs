//! `pazar bench testnet`: validators as separate processes on this machine, started as
//! `pazar testnet` starts them (the same code), talking simplex over loopback sockets.
//!
//! Three measurements on a 4-validator testnet and one on a 1-validator testnet (the same
//! engine, so the ratio of the two is the price of voting over the network on this machine):
//! - committed transactions per second: pre-signed transfers from many accounts funded in the
//!   genesis, each account's transfers sent to one validator, the accounts spread evenly over
//!   the validators (each validator gossips what it receives to the others);
//!   counted from the blocks and divided by the span from the first submission to the header
//!   time of the last block holding one;
//! - finality: single transactions submitted one at a time, in turn to each validator, in
//!   `commit` mode: from submission to that validator's answer that the block holding it is
//!   final in its chain (waiting for the validator's turn to lead included);
//! - recovery: one validator killed with SIGKILL while clients keep sending to the others,
//!   restarted from its home once the others have made some blocks: from spawning it again to
//!   its height reaching the others' tip;
//! - deploy to serving: the demo's provider daemon following one validator, `pazar deploy` of
//!   the demo's SDL sent to the validators in turn: from the command's start to the service's
//!   first HTTP 200, as `pazar bench deploy` measures it on a devnet.
//!
//! And one by simulation ([`pazar_consensus::sim::wan_finality`]): 100 validators on the
//! deterministic simulated network with 50–200 ms links, finality against the median round trip.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use serde::de::IgnoredAny;
use serde::Serialize;

use pazar_api::node::TxState;
use pazar_api::request::SubmitMode;
use pazar_client::Rpc;
use pazar_ledger::GenesisBalance;
use pazar_node::consensus::{Clock, SystemClock};
use pazar_types::{Coin, Denom, SigningKey};

use crate::bench_node::{bulk_address, percentile, round2, scratch, sender_key, sign_send};
use crate::demo;
use crate::home::{NATIVE, STABLE};
use crate::sdl_cmd::DeployOutput;
use crate::testnet::{self, Children, TestnetOpts, TestnetOut};
use crate::Output;

/// Validators of the larger testnet: the fewest that tolerate one fault.
const VALIDATORS: usize = 4;

/// How long the transactions of one load may take to commit, and a killed validator to come
/// back, before the bench gives up.
const COMMIT_TIMEOUT: Duration = Duration::from_secs(300);

/// Most rounds of the background load during the recovery (one round per block time).
const MAX_LOAD_ROUNDS: u64 = 100_000;

/// Memory the simulation takes per ordered pair of validators (it grows with the links, the
/// square of the validators): peak RSS measured 216 MB for 20 validators, 659 MB for 40 and
/// 3.75 GB for 100 (10 heights), about 380 KB a pair, since the simulated channels have the
/// real per-peer rate (commonware sizes its resolver queues by it).
const SIM_BYTES_PER_LINK: u64 = 3 << 17;

#[derive(Args, Clone)]
pub struct TestnetBenchOpts {
    /// Least time between blocks, on both testnets.
    #[arg(long, default_value_t = 250)]
    pub block_time_ms: u64,
    /// Signed transfers submitted in each throughput run (below a validator's mempool bound,
    /// 100,000, since one validator takes them all in the 1-validator run).
    #[arg(long, default_value_t = 80_000)]
    pub txs: usize,
    /// Distinct sending accounts in each throughput run, spread evenly over the validators.
    #[arg(long, default_value_t = 4_000)]
    pub senders: usize,
    /// Transactions per batch request.
    #[arg(long, default_value_t = 500)]
    pub batch: usize,
    /// Single transactions whose finality is timed.
    #[arg(long, default_value_t = 50)]
    pub finality_txs: usize,
    /// Blocks the others make while the killed validator is down.
    #[arg(long, default_value_t = 20)]
    pub recovery_blocks: u64,
    /// Transfers per second sent to the live validators while one is down and catching up.
    #[arg(long, default_value_t = 1_000)]
    pub recovery_load_tx_per_s: u64,
    /// Deployments of the demo's SDL timed one after another on the 4-validator testnet.
    #[arg(long, default_value_t = 5)]
    pub deployments: usize,
    /// Where the deployments run: `auto` (Docker when its engine answers), `docker`, `sandbox`.
    #[arg(long, default_value = "auto", value_parser = ["auto", "docker", "sandbox"])]
    pub runtime: String,
    /// Validators of the simulated internet-scale run.
    #[arg(long, default_value_t = 100)]
    pub sim_validators: usize,
    /// Heights every simulated validator commits before the run ends.
    #[arg(long, default_value_t = 10)]
    pub sim_heights: u64,
    /// Measure only the committed transactions per second of the 4-validator testnet (no
    /// simulation, finality, recovery, deployment or 1-validator run): a quick figure for
    /// comparing two builds of admission or gossip.
    #[arg(long)]
    pub throughput_only: bool,
}

/// What `pazar bench testnet` prints: every measurement, or with `--throughput-only` the
/// 4-validator throughput alone.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum TestnetBenchOutput {
    Full(Box<TestnetBenchReport>),
    Throughput(ThroughputReport),
}

/// What `pazar bench testnet --throughput-only` prints.
#[derive(Debug, Serialize)]
pub struct ThroughputReport {
    bench: &'static str,
    block_time_ms: u64,
    txs: usize,
    senders: usize,
    /// As in [`TestnetBenchReport`].
    committed_tx_per_s_4_validators: f64,
    commit_span_s_4_validators: f64,
    blocks_used_4_validators: usize,
}

/// What `pazar bench testnet` prints. Every figure is measured in this run.
#[derive(Debug, Serialize)]
pub struct TestnetBenchReport {
    bench: &'static str,
    block_time_ms: u64,
    /// Transfers submitted in each throughput run, and from how many accounts.
    txs: usize,
    senders: usize,
    /// Committed transfers per second with 4 validators: committed transactions counted from
    /// the blocks, over the span from the first submission to the header time of the last
    /// block holding one.
    committed_tx_per_s_4_validators: f64,
    commit_span_s_4_validators: f64,
    blocks_used_4_validators: usize,
    /// The same load on a testnet of 1 validator (the same engine), in the same run.
    committed_tx_per_s_1_validator: f64,
    commit_span_s_1_validator: f64,
    blocks_used_1_validator: usize,
    /// Finality with 4 validators at light load: single transfers submitted one at a time in
    /// `commit` mode, in turn to each validator; submission to that validator's answer that
    /// the block holding it is final (waiting for the validator's turn to lead included).
    finality_p50_ms: f64,
    finality_p90_ms: f64,
    finality_txs: usize,
    /// A validator killed with SIGKILL under load and restarted from its home once the others
    /// made `recovery_blocks` blocks: from spawning it again to its height reaching the
    /// others' tip (store opening, RPC start and catch-up included).
    recovery_ms: f64,
    /// Blocks the others made between the kill and the restart: what the restarted validator
    /// had to catch up on, at least (the others go on while it starts).
    recovery_blocks_behind: u64,
    /// Transfers the live validators accepted while one was down and catching up.
    recovery_load_txs_accepted: usize,
    /// `pazar deploy` of the demo's SDL on the 4-validator testnet, the provider daemon
    /// following the first validator and the tenant sending to each in turn: from the
    /// command's start to the service's first HTTP 200 (bids, lease, manifest, image start).
    deploy_to_serving_p50_ms: f64,
    deploy_to_serving_max_ms: f64,
    deployments: usize,
    /// Where the deployed workloads ran (`docker` or `sandbox`).
    deploy_runtime: String,
    /// Finality on the simulated network (commonware's deterministic runtime, every validator
    /// a real node): the median, over every validator and height, from a block's proposal to
    /// its commit there; with `sim_validators` validators (100 unless `--sim-validators` says
    /// otherwise) on links of 50–200 ms one way.
    sim_100_validators_finality_p50_ms: u64,
    /// The median round trip of the simulated links, for comparison.
    sim_median_rtt_ms: u64,
    sim_validators: usize,
    sim_heights: u64,
    /// Wall-clock time the simulation took on this machine.
    sim_wall_s: f64,
}

/// One throughput run's figures.
struct Load {
    committed: usize,
    span_s: f64,
    blocks_used: usize,
}

impl Load {
    fn tx_per_s(&self) -> f64 {
        (self.committed as f64 / self.span_s.max(1e-3)).round()
    }
}

/// The accounts of one testnet: the throughput senders, a probe for finality, and the senders
/// of the background load during the recovery.
struct Accounts {
    senders: Vec<SigningKey>,
    probe: SigningKey,
    load: Vec<SigningKey>,
}

impl Accounts {
    fn new(o: &TestnetBenchOpts) -> Result<Accounts> {
        // One transfer per load sender per round, one round per block time.
        let load = usize::try_from(o.recovery_load_tx_per_s.saturating_mul(o.block_time_ms).div_ceil(1000))?;
        let mut keys = (0..o.senders + 1 + load).map(sender_key).collect::<Result<Vec<_>>>()?;
        let load = keys.split_off(o.senders + 1);
        let probe = keys.pop().context("the probe key was made")?;
        Ok(Accounts {
            senders: keys,
            probe,
            load,
        })
    }

    /// Genesis balances of every account.
    fn balances(&self) -> Result<Vec<GenesisBalance>> {
        let (n, s) = (denom(NATIVE)?, denom(STABLE)?);
        Ok(self
            .senders
            .iter()
            .chain(std::iter::once(&self.probe))
            .chain(&self.load)
            .map(|k| GenesisBalance {
                address: k.address(),
                coins: vec![
                    Coin::new(1_000_000_000_000, n.clone()),
                    Coin::new(1_000_000_000_000, s.clone()),
                ],
            })
            .collect())
    }
}

fn denom(s: &str) -> Result<Denom> {
    Denom::new(s).map_err(|e| anyhow!("{e}"))
}

pub fn run(o: &TestnetBenchOpts) -> Result<TestnetBenchOutput> {
    if o.txs == 0 || o.senders == 0 || o.batch == 0 || o.finality_txs == 0 || o.recovery_blocks == 0 {
        bail!("--txs, --senders, --batch, --finality-txs and --recovery-blocks must be positive");
    }
    if o.block_time_ms == 0 {
        bail!("--block-time-ms must be at least 1");
    }
    if o.deployments == 0 {
        bail!("--deployments must be positive");
    }
    if !(4..=pazar_consensus::sim::MAX_WAN_VALIDATORS).contains(&o.sim_validators) || o.sim_heights == 0 {
        bail!(
            "--sim-validators must be between 4 and {} and --sim-heights positive",
            pazar_consensus::sim::MAX_WAN_VALIDATORS
        );
    }
    let accounts = Accounts::new(o)?;
    let dir = scratch("testnet");
    let _ = std::fs::remove_dir_all(&dir);
    if o.throughput_only {
        let load = with_testnet(o, &accounts, &dir.join("four"), VALIDATORS, |out, _| {
            throughput(o, &accounts, out)
        })?;
        let _ = std::fs::remove_dir_all(&dir);
        return Ok(TestnetBenchOutput::Throughput(ThroughputReport {
            bench: "testnet",
            block_time_ms: o.block_time_ms,
            txs: o.txs,
            senders: o.senders,
            committed_tx_per_s_4_validators: load.tx_per_s(),
            commit_span_s_4_validators: round2(load.span_s),
            blocks_used_4_validators: load.blocks_used,
        }));
    }
    sim_fits_in_memory(o.sim_validators)?;
    // First, so that a simulation this machine cannot hold fails before the testnets run.
    let sim = simulate(o, &dir.join("sim"))?;

    let four = dir.join("four");
    let (load4, finality, recovery, deploys) = with_testnet(o, &accounts, &four, VALIDATORS, |out, children| {
        let load = throughput(o, &accounts, out)?;
        let finality = finality(o, &accounts.probe, out)?;
        let recovery = recovery(o, &accounts.load, out, children)?;
        let deploys = deploy_to_serving(o, out)?;
        Ok((load, finality, recovery, deploys))
    })?;
    let one = dir.join("one");
    let load1 = with_testnet(o, &accounts, &one, 1, |out, _| throughput(o, &accounts, out))?;
    let _ = std::fs::remove_dir_all(&dir);

    let mut lat = finality;
    let mut deploy_ms = deploys.ms;
    Ok(TestnetBenchOutput::Full(Box::new(TestnetBenchReport {
        bench: "testnet",
        block_time_ms: o.block_time_ms,
        txs: o.txs,
        senders: o.senders,
        committed_tx_per_s_4_validators: load4.tx_per_s(),
        commit_span_s_4_validators: round2(load4.span_s),
        blocks_used_4_validators: load4.blocks_used,
        committed_tx_per_s_1_validator: load1.tx_per_s(),
        commit_span_s_1_validator: round2(load1.span_s),
        blocks_used_1_validator: load1.blocks_used,
        finality_p50_ms: round2(percentile(&mut lat, 0.5)),
        finality_p90_ms: round2(percentile(&mut lat, 0.9)),
        finality_txs: lat.len(),
        recovery_ms: recovery.ms.round(),
        recovery_blocks_behind: recovery.blocks_behind,
        recovery_load_txs_accepted: recovery.load_accepted,
        deploy_to_serving_p50_ms: round2(percentile(&mut deploy_ms, 0.5)),
        deploy_to_serving_max_ms: round2(percentile(&mut deploy_ms, 1.0)),
        deployments: deploy_ms.len(),
        deploy_runtime: deploys.runtime,
        sim_100_validators_finality_p50_ms: sim.report.finality_p50_ms,
        sim_median_rtt_ms: sim.report.median_rtt_ms,
        sim_validators: sim.report.validators,
        sim_heights: sim.report.heights,
        sim_wall_s: round2(sim.wall_s),
    })))
}

struct Deploys {
    ms: Vec<f64>,
    runtime: String,
}

/// Starts the demo's provider daemon (keys of the first validator's home) following the first
/// validator, then deploys the demo's SDL `o.deployments` times, each sent to the next
/// validator in turn, timing each from the command's start to the first HTTP 200, and closes
/// each before the next.
fn deploy_to_serving(o: &TestnetBenchOpts, out: &TestnetOut) -> Result<Deploys> {
    let h = &out.validators[0].home;
    let urls: Vec<&str> = out.validators.iter().map(|v| v.rpc.as_str()).collect();
    eprintln!(
        "bench testnet: {} deployments, the provider following {}",
        o.deployments, out.validators[0].name
    );
    let provider = demo::start_provider(h, &Rpc::new(urls[0]), Some(urls[0]), &o.runtime, false)?;
    let sdl = h.join("deploy.yaml");
    std::fs::write(&sdl, demo::SDL)?;
    let sdl_s = sdl.display().to_string();
    let mut ms = Vec::with_capacity(o.deployments);
    for i in 0..o.deployments {
        let url = urls[(i + 1) % urls.len()];
        let dseq = (1000 + i).to_string();
        let t0 = Instant::now();
        let d: DeployOutput = demo::pazar(
            h,
            &[
                "deploy",
                &sdl_s,
                "--from",
                "alice",
                "--dseq",
                &dseq,
                "--bid-window-s",
                "0",
                "--node",
                url,
            ],
        )?;
        let leased = d
            .leases
            .first()
            .ok_or_else(|| anyhow!("deployment {dseq} made no lease"))?;
        let uri = leased
            .status
            .uris
            .first()
            .map(|u| u.uri.clone())
            .ok_or_else(|| anyhow!("deployment {dseq} has no URI"))?;
        demo::wait("an HTTP answer", Duration::from_secs(30), || demo::http_get(&uri))?;
        ms.push(t0.elapsed().as_secs_f64() * 1e3);
        let lease = leased.lease.to_string();
        demo::pazar::<IgnoredAny>(h, &["lease", "close", &lease, "--from", "alice", "--node", url])?;
        demo::pazar::<IgnoredAny>(
            h,
            &[
                "tx",
                "deployment",
                "close",
                "--dseq",
                &dseq,
                "--from",
                "alice",
                "--node",
                url,
            ],
        )?;
    }
    Ok(Deploys {
        ms,
        runtime: provider.runtime.kind().to_string(),
    })
}

/// Refuses a simulation of `validators` that would not fit in this machine's available memory
/// (`MemAvailable` of /proc/meminfo; no check where it cannot be read).
fn sim_fits_in_memory(validators: usize) -> Result<()> {
    let Some(available) = std::fs::read_to_string("/proc/meminfo").ok().and_then(|m| {
        m.lines()
            .find_map(|l| l.strip_prefix("MemAvailable:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map(|kb| kb.saturating_mul(1024))
    }) else {
        return Ok(());
    };
    let links = u64::try_from(validators.saturating_mul(validators.saturating_sub(1)))?;
    let need = links.saturating_mul(SIM_BYTES_PER_LINK);
    if need > available {
        bail!(
            "simulating {validators} validators takes about {} GiB and {} GiB is available: \
             pass a smaller --sim-validators (each ordered pair of validators holds about {:.1} MiB)",
            need >> 30,
            available >> 30,
            SIM_BYTES_PER_LINK as f64 / f64::from(1u32 << 20)
        );
    }
    Ok(())
}

struct Sim {
    report: pazar_consensus::sim::WanReport,
    wall_s: f64,
}

/// The internet-scale simulation, its stores under `dir`.
fn simulate(o: &TestnetBenchOpts, dir: &Path) -> Result<Sim> {
    eprintln!(
        "bench testnet: simulating {} validators on 50-200 ms links for {} heights",
        o.sim_validators, o.sim_heights
    );
    std::fs::create_dir_all(dir)?;
    let t0 = Instant::now();
    let report = pazar_consensus::sim::wan_finality(o.sim_validators, o.sim_heights, 0, dir)?;
    Ok(Sim {
        report,
        wall_s: t0.elapsed().as_secs_f64(),
    })
}

/// Starts a testnet of `validators` in `home` funding `accounts`, runs `f` on it, stops it.
/// The validators' logs stay in `home` when `f` fails.
fn with_testnet<T>(
    o: &TestnetBenchOpts,
    accounts: &Accounts,
    home: &Path,
    validators: usize,
    f: impl FnOnce(&TestnetOut, &mut Children) -> Result<T>,
) -> Result<T> {
    eprintln!(
        "bench testnet: starting {validators} validator(s) in {}",
        home.display()
    );
    let opts = TestnetOpts {
        validators,
        home: home.to_path_buf(),
        block_time_ms: o.block_time_ms,
        base_port: None,
        create_only: false,
        output: Output::Json,
    };
    let logs = || {
        format!(
            "the validators' logs are node.log in each home under {}",
            home.display()
        )
    };
    let (out, mut children) = testnet::start(&opts, accounts.balances()?).with_context(logs)?;
    let result = f(&out, &mut children).with_context(logs)?;
    children.stop();
    Ok(result)
}

/// Validator index of throughput sender `i`: senders are spread evenly, and all of one
/// sender's transfers go to one validator so that they commit in sequence.
fn validator_of(i: usize, validators: usize) -> usize {
    i % validators
}

fn throughput(o: &TestnetBenchOpts, accounts: &Accounts, out: &TestnetOut) -> Result<Load> {
    let n = out.validators.len();
    let rpcs: Vec<Rpc> = out.validators.iter().map(|v| Rpc::new(&v.rpc)).collect();
    eprintln!(
        "bench testnet: signing {} transfers from {} accounts for {n} validator(s)",
        o.txs, o.senders
    );
    let mut txs: Vec<Vec<Vec<u8>>> = vec![Vec::new(); n];
    let per = o.txs.div_ceil(o.senders);
    let mut signed = 0;
    'outer: for seq in 0..per as u64 {
        for (i, k) in accounts.senders.iter().enumerate() {
            if signed == o.txs {
                break 'outer;
            }
            txs[validator_of(i, n)].push(sign_send(&out.chain_id, k, seq, bulk_address(i))?);
            signed += 1;
        }
    }
    let start_height = rpcs[0].status()?.height;

    eprintln!("bench testnet: submitting over HTTP, one client per validator");
    let t_submit = SystemClock.now_ms();
    let accepted: usize = std::thread::scope(|s| {
        let clients: Vec<_> = rpcs
            .iter()
            .zip(&txs)
            .map(|(rpc, mine)| {
                s.spawn(move || -> Result<usize> {
                    let mut ok = 0;
                    for b in mine.chunks(o.batch) {
                        let r = rpc.submit_batch(b, SubmitMode::Sync)?;
                        ok += r.results.iter().filter(|r| r.state == TxState::Pending).count();
                    }
                    Ok(ok)
                })
            })
            .collect();
        clients
            .into_iter()
            .map(|h| h.join().map_err(|_| anyhow!("client thread panicked"))?)
            .sum::<Result<usize>>()
    })?;
    if accepted < o.txs * 99 / 100 {
        bail!("only {accepted} of {} transfers were accepted", o.txs);
    }

    // Follow the first validator's blocks until every accepted transfer is committed.
    let mut committed = 0usize;
    let mut height = start_height;
    let mut last_time = t_submit;
    let mut blocks_used = 0;
    let deadline = Instant::now() + COMMIT_TIMEOUT;
    while committed < accepted {
        if Instant::now() > deadline {
            bail!("only {committed} of {accepted} transfers committed in time");
        }
        match rpcs[0].block(height + 1) {
            Ok(b) => {
                height += 1;
                let failed = b.receipts.iter().filter(|x| x.code != 0).count();
                if failed > 0 {
                    bail!("{failed} transfers failed in block {height}");
                }
                if !b.txs.is_empty() {
                    committed += b.txs.len();
                    blocks_used += 1;
                    last_time = b.header.time_ms;
                }
            }
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
    Ok(Load {
        committed,
        span_s: last_time.saturating_sub(t_submit) as f64 / 1e3,
        blocks_used,
    })
}

/// Milliseconds from submission to commit of single transfers, one at a time, in turn to each
/// validator.
fn finality(o: &TestnetBenchOpts, probe: &SigningKey, out: &TestnetOut) -> Result<Vec<f64>> {
    eprintln!("bench testnet: finality of {} single transfers", o.finality_txs);
    let rpcs: Vec<Rpc> = out.validators.iter().map(|v| Rpc::new(&v.rpc)).collect();
    let to = bulk_address(usize::MAX);
    let mut lat = Vec::with_capacity(o.finality_txs);
    for seq in 0..o.finality_txs as u64 {
        let v = usize::try_from(seq)? % rpcs.len();
        let tx = sign_send(&out.chain_id, probe, seq, to)?;
        let t = Instant::now();
        let r = rpcs[v].submit(&tx, SubmitMode::Commit)?;
        match r.state {
            TxState::Committed { receipt, .. } if receipt.code == 0 => {}
            other => bail!("finality probe {seq} via validator v{v} not committed: {other:?}"),
        }
        lat.push(t.elapsed().as_secs_f64() * 1e3);
        // Spread submissions over the block interval so the median is not phase-locked.
        std::thread::sleep(Duration::from_millis(o.block_time_ms * ((seq * 37) % 100) / 100));
    }
    Ok(lat)
}

struct Recovery {
    ms: f64,
    blocks_behind: u64,
    load_accepted: usize,
}

fn height(rpc: &Rpc) -> Option<u64> {
    rpc.status().ok().map(|s| s.height)
}

/// The highest height among `rpcs`.
fn tip(rpcs: &[Rpc]) -> u64 {
    rpcs.iter().filter_map(height).max().unwrap_or(0)
}

/// Kills the last validator under load, restarts it once the others have made
/// `recovery_blocks` blocks, and times its catch-up.
fn recovery(o: &TestnetBenchOpts, load: &[SigningKey], out: &TestnetOut, children: &mut Children) -> Result<Recovery> {
    let victim = out.validators.len() - 1;
    let live: Vec<Rpc> = out.validators[..victim].iter().map(|v| Rpc::new(&v.rpc)).collect();
    if live.is_empty() {
        bail!("recovery needs more than one validator");
    }
    let stop = AtomicBool::new(false);
    let chain = out.chain_id.as_str();
    std::thread::scope(|s| {
        let loader = s.spawn(|| background_load(chain, load, &live, o.block_time_ms, &stop));
        let timed = (|| -> Result<(f64, u64)> {
            eprintln!("bench testnet: kill -9 of {} under load", out.validators[victim].name);
            children.kill(victim)?;
            let down_at = tip(&live);
            wait_until(
                || tip(&live) >= down_at + o.recovery_blocks,
                "the live validators to make blocks",
            )?;
            let t0 = Instant::now();
            let behind = tip(&live).saturating_sub(down_at);
            let url = children.restart(victim)?;
            let back = Rpc::new(&url);
            wait_until(
                || {
                    let target = tip(&live);
                    height(&back).is_some_and(|h| h >= target)
                },
                "the restarted validator to reach the others' tip",
            )?;
            let ms = t0.elapsed().as_secs_f64() * 1e3;
            // The block it caught up to is the others' block.
            let h = height(&back).context("the restarted validator answers")?;
            if back.block(h)?.hash != live[0].block(h)?.hash {
                bail!("the restarted validator holds another block at height {h}");
            }
            Ok((ms, behind))
        })();
        stop.store(true, Ordering::Relaxed);
        let accepted = loader.join().map_err(|_| anyhow!("load thread panicked"))??;
        let (ms, blocks_behind) = timed?;
        Ok(Recovery {
            ms,
            blocks_behind,
            load_accepted: accepted,
        })
    })
}

/// Sends one transfer from each of `load` per block time, sender `i` always to validator
/// `i % live.len()`, until `stop`; the number the validators accepted.
fn background_load(
    chain: &str,
    load: &[SigningKey],
    live: &[Rpc],
    block_time_ms: u64,
    stop: &AtomicBool,
) -> Result<usize> {
    let mut accepted = 0;
    for seq in 0..MAX_LOAD_ROUNDS {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let t = Instant::now();
        for (v, rpc) in live.iter().enumerate() {
            let batch = load
                .iter()
                .enumerate()
                .filter(|(i, _)| i % live.len() == v)
                .map(|(i, k)| sign_send(chain, k, seq, bulk_address(i)))
                .collect::<Result<Vec<_>>>()?;
            if batch.is_empty() {
                continue;
            }
            let r = rpc.submit_batch(&batch, SubmitMode::Sync)?;
            accepted += r.results.iter().filter(|r| r.state == TxState::Pending).count();
        }
        std::thread::sleep(Duration::from_millis(block_time_ms).saturating_sub(t.elapsed()));
    }
    Ok(accepted)
}

/// Polls `done` until it holds, or fails after [`COMMIT_TIMEOUT`] saying what it waited for.
fn wait_until(mut done: impl FnMut() -> bool, what: &str) -> Result<()> {
    let t0 = Instant::now();
    while !done() {
        if t0.elapsed() > COMMIT_TIMEOUT {
            bail!("gave up waiting for {what} after {} s", COMMIT_TIMEOUT.as_secs());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}
