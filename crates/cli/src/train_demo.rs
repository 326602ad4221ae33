//! `pazar train demo`: verifiable distributed training on this machine, in real processes. A
//! devnet; N `pazar train worker` processes (this binary), each a provider with its own key
//! and blob server; a dataset registered and a job opened by the owner (`alice`). While they
//! train, one line per settled round: the held-out loss of the round's checkpoint (fetched
//! from a worker by its hash and evaluated here), the bytes the workers fetched from each other
//! (their `--report` lines), the audits and how they settled, slashes and rewards (the node's
//! event stream). Then a summary (bytes vs synchronous data-parallel, rewards per worker, the
//! job's money: budget = paid + take + refunded + escrow), `loss.svg` and `run.json` in
//! `--out`, and the provenance of the final checkpoint (`pazar model show`).
//!
//! Every child process is killed when the demo ends, however it ends: each is held by a guard
//! that kills it when dropped, and Ctrl-C or SIGTERM make the demo stop (with an error) instead
//! of dying, so the guards run.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, Parser};
use serde::{Deserialize, Serialize};

use pazar_api::node::TxState;
use pazar_api::request::SubmitMode;
use pazar_client::keyring::Keyring;
use pazar_client::Rpc;
use pazar_train::data;
use pazar_train::model::Model;
use pazar_train::round;
use pazar_train::state::Checkpoint;
use pazar_train::worker::Adversary;
use pazar_types::records::Receipt;
use pazar_types::train::{
    AuditOutcome, Contributor, DatasetSpec, JobSpec, ModelSpec, PhaseBlocks, SlashReason, TrainJob,
};
use pazar_types::tx::hex_array;
use pazar_types::{Address, Coin, Denom, Event, Hash32, KeyScheme, Msg, SigningKey};

use crate::chain::client_err;
use crate::model_cmd::{self, json_name, Provenance};
use crate::train_cmd::{self, CorpusArgs, SpecFlags, StepLine, WorkerSummary};
use crate::{chart, home, ClientOpts, Output};

#[derive(Args)]
pub struct TrainDemoOpts {
    /// Worker processes (each a provider with its own key).
    #[arg(long, default_value_t = 4)]
    pub workers: u16,
    /// Outer rounds of the job.
    #[arg(long, default_value_t = 20)]
    pub rounds: u32,
    /// WORKER:KIND makes worker WORKER (from 1) cheat: lazy, noise, sign-flip, copier, stale,
    /// withhold, crash, wrong-shards, false-auditor, lazy-auditor, bad-seal or perturb:R
    /// (repeatable).
    #[arg(long = "adversary", value_parser = parse_adversary)]
    pub adversaries: Vec<AdversaryArg>,
    /// Where `loss.svg` and `run.json` go; default `run/` in the demo's home. The demo's
    /// home is --home (reset on every run), default $PAZAR_HOME/train-demo or
    /// ~/.pazar/train-demo.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Block time of the demo chain.
    #[arg(long, default_value_t = 200)]
    pub block_time_ms: u64,
    /// H: local AdamW steps per round.
    #[arg(long, default_value_t = 64)]
    pub inner_steps: u32,
    /// The chance, per mille, that each worker's round is replayed by another (1000: every
    /// round of every worker, so a cheater is caught in its first round).
    #[arg(long, default_value_t = 1000)]
    pub audit_per_mille: u16,
    /// Size of the generated corpus (16 KiB chunks; 1 in 20 held out for evaluation).
    #[arg(long, default_value_t = 64 * data::CHUNK_BYTES)]
    pub corpus_bytes: usize,
}

/// `--adversary WORKER:KIND`.
#[derive(Debug, Clone)]
pub struct AdversaryArg {
    pub worker: u16,
    pub kind: String,
}

fn parse_adversary(s: &str) -> Result<AdversaryArg, String> {
    let (w, kind) = s
        .split_once(':')
        .ok_or_else(|| format!("{s:?}: WORKER:KIND, e.g. 1:sign-flip"))?;
    let worker = w
        .parse::<u16>()
        .ok()
        .filter(|w| *w >= 1)
        .ok_or_else(|| format!("{s:?}: the worker is a number from 1"))?;
    kind.parse::<Adversary>()?;
    Ok(AdversaryArg {
        worker,
        kind: kind.to_string(),
    })
}

/// The corpus every worker trains on.
const CORPUS_SEED: u64 = 11;
/// Held-out evaluation: this many batches of this many sequences.
const EVAL_BATCHES: u32 = 8;
const EVAL_BATCH: u32 = 16;
/// What the owner funds each worker with: fees, and twice the bond.
const WORKER_FEES: u128 = 1_000_000_000;
/// How long a worker keeps serving blobs after the job ends (the demo kills it sooner).
const SERVE_AFTER_S: u64 = 600;
/// Most workers the demo starts (each a process training on this machine).
const MAX_DEMO_WORKERS: u16 = 32;
/// How long the demo waits for a worker's report of a round, or its summary (twice this).
const REPORT_WAIT: Duration = Duration::from_secs(5);
/// Failed reads of the event stream in a row after which the demo gives up.
const MAX_STREAM_FAILURES: u32 = 20;
/// The final checkpoint's bytes, in the demo's `--out`.
const CHECKPOINT_FILE: &str = "final.ckpt";

/// A child process, killed and reaped when dropped.
struct Proc {
    name: String,
    child: Child,
}

impl Proc {
    fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(name: &str, home: &Path, args: &[String], stdout: &Path, stderr: &Path) -> Result<Proc> {
    let exe = std::env::current_exe()?;
    let out = std::fs::File::create(stdout).with_context(|| format!("cannot create {}", stdout.display()))?;
    let err = std::fs::File::create(stderr).with_context(|| format!("cannot create {}", stderr.display()))?;
    let child = Command::new(exe)
        .args(args)
        .arg("--home")
        .arg(home)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .with_context(|| format!("cannot start {name}"))?;
    Ok(Proc {
        name: name.to_string(),
        child,
    })
}

/// Set when Ctrl-C or SIGTERM arrives: the demo then stops with an error, and the guards of
/// its children kill them.
fn watch_signals() -> Result<Arc<AtomicBool>> {
    let flag = Arc::new(AtomicBool::new(false));
    let set = flag.clone();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        rt.block_on(async move {
            use tokio::signal::unix::{signal, SignalKind};
            let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
                let _ = ready_tx.send(false);
                return;
            };
            let _ = ready_tx.send(true);
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            set.store(true, Ordering::SeqCst);
        })
    });
    if !ready_rx.recv_timeout(Duration::from_secs(5)).unwrap_or(false) {
        bail!("cannot watch Ctrl-C and SIGTERM");
    }
    Ok(flag)
}

/// The demo's running state: children, stop flag, how it prints.
struct Run {
    stop: Arc<AtomicBool>,
    devnet: Proc,
    workers: Vec<Proc>,
    say: bool,
}

impl Run {
    fn check(&mut self) -> Result<()> {
        if self.stop.load(Ordering::SeqCst) {
            bail!("interrupted: stopping the devnet and the workers");
        }
        if let Some(s) = self.devnet.exited() {
            bail!("the devnet exited ({s}); see its log");
        }
        Ok(())
    }

    fn line(&self, s: impl AsRef<str>) {
        if self.say {
            println!("{}", s.as_ref());
            let _ = std::io::stdout().flush();
        }
    }

    /// Waits for `f` to answer, checking the stop flag and the devnet.
    fn wait<T>(&mut self, what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Result<T> {
        let t0 = Instant::now();
        loop {
            self.check()?;
            if let Some(v) = f() {
                return Ok(v);
            }
            if t0.elapsed() > timeout {
                bail!("{what} did not happen within {} s", timeout.as_secs());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Signs each `(key, msgs)` as one transaction, submits them together and waits until they
/// are committed (in one block when they fit); each must succeed.
fn send_all(rpc: &Rpc, chain_id: &str, what: &str, txs: &[(&SigningKey, Vec<Msg>)]) -> Result<Vec<Receipt>> {
    let mut signed = Vec::new();
    for (key, msgs) in txs {
        let fee = pazar_client::min_fee(rpc, msgs.len()).map_err(client_err)?;
        signed.push(pazar_client::sign(rpc, chain_id, key, msgs.clone(), fee, "").map_err(client_err)?);
    }
    let results = rpc.submit_batch(&signed, SubmitMode::Commit).map_err(client_err)?;
    results
        .results
        .into_iter()
        .map(|r| match r.state {
            TxState::Committed { receipt, .. } if receipt.code == 0 => Ok(receipt),
            _ => Err(anyhow!("{what}: {}", crate::chain::tx_failure(&r))),
        })
        .collect()
}

/// The phases of a round in blocks of `block_time_ms`: deadlines only (a phase ends as soon
/// as every worker acted), generous enough for a loaded 2-core machine.
fn phases(block_time_ms: u64) -> PhaseBlocks {
    let blocks =
        |seconds: u64| u32::try_from((seconds * 1000).div_ceil(block_time_ms.max(1)).max(2)).unwrap_or(u32::MAX);
    PhaseBlocks {
        train: blocks(60),
        commit: blocks(10),
        reveal: blocks(10),
        audit: blocks(60),
        dispute: blocks(8),
        aggregate: blocks(30),
    }
}

/// The job the demo opens: the tiny model of `pazar train job open`'s defaults.
fn demo_spec(o: &TrainDemoOpts, honest: u16, dataset: Hash32) -> Result<JobSpec> {
    #[derive(Parser)]
    struct Defaults {
        #[command(flatten)]
        flags: SpecFlags,
    }
    let mut f = Defaults::try_parse_from(["defaults"])
        .map_err(|e| anyhow!("the job's default flags: {e}"))?
        .flags;
    f.name = "train-demo".into();
    f.rounds = o.rounds;
    f.inner_steps = o.inner_steps;
    f.segment_steps = (1..=8u32).rev().find(|s| o.inner_steps % s == 0).unwrap_or(1);
    f.min_workers = honest.max(1);
    f.max_workers = o.workers;
    f.audit_per_mille = o.audit_per_mille;
    f.phases = phases(o.block_time_ms);
    let spec = f.spec(dataset, [0; 32]);
    spec.validate("job").map_err(|e| anyhow!("the demo's job: {e}"))?;
    Ok(spec)
}

/// One audit of a round, by worker name.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuditRow {
    pub target: String,
    pub auditor: String,
    pub outcome: AuditOutcome,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SlashRow {
    pub worker: String,
    pub reason: SlashReason,
    #[serde(with = "pazar_types::coin::u128_string")]
    pub amount: u128,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RewardRow {
    pub worker: String,
    pub tokens: u64,
    #[serde(with = "pazar_types::coin::u128_string")]
    pub paid: u128,
    #[serde(with = "pazar_types::coin::u128_string")]
    pub take: u128,
}

/// One round as the demo saw it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RoundRow {
    pub round: u32,
    /// The workers of the round (those who trained it).
    pub workers: Vec<String>,
    /// `None`: the round produced no checkpoint.
    #[serde(with = "pazar_types::train::hex_opt")]
    pub checkpoint: Option<Hash32>,
    pub eval_loss: Option<f64>,
    pub included: u16,
    /// Bytes the workers fetched from each other for this round (updates, traces, residuals,
    /// checkpoints), from their reports.
    pub bytes: u64,
    /// Bytes a synchronous data-parallel run of the same steps would send: ring all-reduce of
    /// f32 gradients every inner step, `H × 2 (w − 1) × 4 × params` over `w` workers.
    pub ddp_bytes: u64,
    pub audits: Vec<AuditRow>,
    pub slashed: Vec<SlashRow>,
    pub rewards: Vec<RewardRow>,
    /// Workers whose vote the ledger recorded (they have the checkpoint).
    #[serde(skip)]
    voters: Vec<Address>,
}

/// A worker's part in the whole run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkerRow {
    pub name: String,
    pub address: Address,
    pub adversary: Option<String>,
    #[serde(with = "pazar_types::coin::u128_string")]
    pub paid: u128,
    pub rounds_paid: Vec<u32>,
    #[serde(with = "pazar_types::coin::u128_string")]
    pub slashed: u128,
    /// What the worker process reported when the job ended (`None`: it did not say).
    pub summary: Option<WorkerSummary>,
}

/// The job's money at the end, in its denomination, to the base unit.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Tokens {
    pub denom: Denom,
    #[serde(with = "pazar_types::coin::u128_string")]
    pub budget: u128,
    #[serde(with = "pazar_types::coin::u128_string")]
    pub paid: u128,
    #[serde(with = "pazar_types::coin::u128_string")]
    pub take: u128,
    #[serde(with = "pazar_types::coin::u128_string")]
    pub refunded: u128,
    #[serde(with = "pazar_types::coin::u128_string")]
    pub escrow: u128,
    /// Σ of the rewards the events announced (paid, take).
    #[serde(with = "pazar_types::coin::u128_string")]
    pub rewards_paid: u128,
    #[serde(with = "pazar_types::coin::u128_string")]
    pub rewards_take: u128,
    /// `budget = paid + take + refunded + escrow`, the events add up to the job's record, and
    /// the denomination's supply did not change.
    pub conserved: bool,
}

/// `run.json`, and what `pazar train demo -o json` prints.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunReport {
    pub job: u64,
    pub model: ModelSpec,
    pub params: u64,
    pub inner_steps: u32,
    pub block_time_ms: u64,
    #[serde(with = "hex_array")]
    pub initial_checkpoint: Hash32,
    pub initial_eval_loss: f64,
    #[serde(with = "pazar_types::train::hex_opt")]
    pub final_checkpoint: Option<Hash32>,
    pub final_eval_loss: Option<f64>,
    pub rounds: Vec<RoundRow>,
    pub workers: Vec<WorkerRow>,
    pub bytes_exchanged: u64,
    pub ddp_bytes: u64,
    pub bytes_ratio_vs_ddp: f64,
    pub tokens: Tokens,
    pub chart: PathBuf,
    /// The final checkpoint's bytes (`pazar model export HASH --checkpoint FILE`).
    pub checkpoint_file: Option<PathBuf>,
    pub provenance: Option<Provenance>,
    pub seconds: f64,
}

/// Every line the workers' reports hold so far (a line being written is skipped).
fn read_reports(paths: &[PathBuf]) -> Vec<Vec<StepLine>> {
    paths
        .iter()
        .map(|p| match std::fs::File::open(p) {
            Ok(f) => BufReader::new(f)
                .lines()
                .map_while(|l| l.ok())
                .filter_map(|l| serde_json::from_str(&l).ok())
                .collect(),
            Err(_) => Vec::new(),
        })
        .collect()
}

fn round_bytes(reports: &[Vec<StepLine>], round: u32) -> u64 {
    reports
        .iter()
        .flatten()
        .filter(|l| l.round == Some(round))
        .map(|l| l.bytes_fetched)
        .sum()
}

fn human_bytes(b: u64) -> String {
    match b {
        b if b >= 10 << 20 => format!("{:.0} MB", b as f64 / 1e6),
        b if b >= 1 << 20 => format!("{:.1} MB", b as f64 / 1e6),
        b if b >= 10_000 => format!("{:.0} kB", b as f64 / 1e3),
        b => format!("{b} B"),
    }
}

/// The held-out loss of the checkpoint `hash`, fetched from the first worker that serves it,
/// and the checkpoint.
fn eval_checkpoint(model: &Model, eval: &[data::Batch], uris: &[String], hash: &Hash32) -> Result<(f64, Checkpoint)> {
    let n = model.param_count();
    let mut last = String::from("no worker");
    for uri in uris {
        match pazar_train::blobs::fetch(uri, hash, 16 + 8 * n, pazar_train::blobs::FETCH_TIMEOUT) {
            Ok(bytes) => match Checkpoint::decode(&bytes, n) {
                Ok(c) if c.hash() == *hash => return Ok((f64::from(round::evaluate(model, &c.params, eval)?), c)),
                Ok(_) => last = format!("{uri} served another checkpoint"),
                Err(e) => last = format!("{uri}: {e}"),
            },
            Err(e) => last = e.to_string(),
        }
    }
    bail!("checkpoint {}: {last}", hex::encode(hash))
}

/// The demo's workers: names, keys, where they serve blobs and where they report.
struct Crew {
    names: Vec<String>,
    keys: Vec<SigningKey>,
    ports: Vec<u16>,
    uris: Vec<String>,
    reports: Vec<PathBuf>,
    summaries: Vec<PathBuf>,
    /// Worker number (from 1) → adversary kind.
    cheats: BTreeMap<u16, String>,
    /// The workers' and the owner's names by address.
    name_of: BTreeMap<Address, String>,
}

impl Crew {
    fn name(&self, a: &Address) -> String {
        self.name_of.get(a).cloned().unwrap_or_else(|| a.to_string())
    }

    fn index(&self, a: &Address) -> Option<usize> {
        self.keys.iter().position(|k| k.address() == *a)
    }
}

/// The job on the chain, and what the demo needs to judge its checkpoints.
struct DemoJob {
    id: u64,
    spec: JobSpec,
    model: Model,
    eval: Vec<data::Batch>,
    init: Hash32,
    initial_loss: f64,
    params: u64,
    /// Where the checkpoint of each settled round is written once evaluated, so that the
    /// final one outlives the workers (`pazar model export --checkpoint`).
    checkpoint_file: PathBuf,
}

/// What the event stream said about each round so far.
#[derive(Default)]
struct Book {
    rows: BTreeMap<u32, RoundRow>,
    started: BTreeMap<u32, Vec<Address>>,
    ended: bool,
}

/// The row of round `r`, made on first sight.
fn row(rows: &mut BTreeMap<u32, RoundRow>, r: u32) -> &mut RoundRow {
    let row = rows.entry(r).or_default();
    row.round = r;
    row
}

impl Book {
    /// Records `e` if it is about job `job`; the round it settles, if it settles one.
    fn record(&mut self, job: u64, e: &Event, crew: &Crew) -> Option<u32> {
        match e {
            Event::TrainRoundStarted {
                job: j, round, workers, ..
            } if *j == job => {
                self.started.insert(*round, workers.clone());
            }
            Event::TrainAuditSettled {
                job: j,
                round,
                target,
                auditor,
                outcome,
            } if *j == job => row(&mut self.rows, *round).audits.push(AuditRow {
                target: crew.name(target),
                auditor: crew.name(auditor),
                outcome: *outcome,
            }),
            Event::TrainSlashed {
                job: j,
                round,
                worker,
                reason,
                amount,
                ..
            } if *j == job => row(&mut self.rows, *round).slashed.push(SlashRow {
                worker: crew.name(worker),
                reason: *reason,
                amount: amount.amount,
            }),
            Event::TrainRewarded {
                job: j,
                round,
                worker,
                tokens,
                paid,
                take,
            } if *j == job => row(&mut self.rows, *round).rewards.push(RewardRow {
                worker: crew.name(worker),
                tokens: *tokens,
                paid: paid.amount,
                take: take.amount,
            }),
            Event::TrainCheckpointVoted {
                job: j, round, worker, ..
            } if *j == job => row(&mut self.rows, *round).voters.push(*worker),
            Event::TrainCheckpoint {
                job: j,
                round,
                checkpoint,
                included,
                ..
            } if *j == job => {
                let r = row(&mut self.rows, *round);
                r.checkpoint = Some(*checkpoint);
                r.included = *included;
                return Some(*round);
            }
            Event::TrainRoundFailed { job: j, round } if *j == job => {
                row(&mut self.rows, *round);
                return Some(*round);
            }
            Event::TrainJobEnded { job: j, .. } if *j == job => self.ended = true,
            _ => {}
        }
        None
    }
}

/// The adversaries by worker number, checked against the number of workers.
fn cheaters(o: &TrainDemoOpts) -> Result<BTreeMap<u16, String>> {
    if o.workers < 1 || o.workers > MAX_DEMO_WORKERS {
        bail!("--workers must be 1-{MAX_DEMO_WORKERS}");
    }
    let mut cheats = BTreeMap::new();
    for a in &o.adversaries {
        if a.worker > o.workers {
            bail!("--adversary {}:{}: there are {} workers", a.worker, a.kind, o.workers);
        }
        if cheats.insert(a.worker, a.kind.clone()).is_some() {
            bail!("worker {} is named twice in --adversary", a.worker);
        }
    }
    if cheats.len() >= usize::from(o.workers) {
        bail!("at least one worker must be honest");
    }
    Ok(cheats)
}

/// Starts a fresh devnet in `h`; returns once its RPC answers.
fn start_devnet(o: &TrainDemoOpts, h: &Path, say: bool) -> Result<(Run, Rpc, String)> {
    let stop = watch_signals()?;
    let _ = std::fs::remove_file(h.join("rpc.addr"));
    let args = [
        "devnet",
        "--reset",
        "--rpc-listen",
        "127.0.0.1:0",
        "--block-time-ms",
        &o.block_time_ms.to_string(),
    ]
    .map(String::from);
    let devnet = spawn("the devnet", h, &args, &h.join("devnet.out"), &h.join("devnet.log"))?;
    let mut run = Run {
        stop,
        devnet,
        workers: Vec::new(),
        say,
    };
    run.line("[1/5] starting a devnet (one validator, funded keys)");
    let url = run.wait("the devnet's RPC", Duration::from_secs(60), || {
        let u = std::fs::read_to_string(h.join("rpc.addr")).ok()?;
        let u = u.trim().to_string();
        Rpc::new(&u).status().ok().map(|_| u)
    })?;
    let rpc = Rpc::new(&url);
    let chain_id = rpc.chain_id().map_err(client_err)?;
    run.line(format!(
        "  RPC {url}, chain {chain_id}, block time {} ms",
        o.block_time_ms
    ));
    Ok((run, rpc, chain_id))
}

/// Makes a key for each worker, funds it from `owner` (fees, and twice the bond) and registers
/// it as a provider (workers are providers), each step in one block.
fn enlist(
    o: &TrainDemoOpts,
    h: &Path,
    rpc: &Rpc,
    chain_id: &str,
    owner: &SigningKey,
    bond: &Coin,
    cheats: BTreeMap<u16, String>,
) -> Result<Crew> {
    let names: Vec<String> = (1..=o.workers).map(|i| format!("worker{i}")).collect();
    let scheme: Vec<(&str, KeyScheme)> = names.iter().map(|n| (n.as_str(), KeyScheme::Ed25519)).collect();
    let keys: Vec<SigningKey> = home::add_keys(h, &scheme)?.into_iter().map(|(_, k)| k).collect();
    let native = rpc.params().map_err(client_err)?.params.native.denom;
    let mut funding = Vec::new();
    for k in &keys {
        funding.push(Msg::Send {
            to: k.address(),
            amount: Coin::new(WORKER_FEES, native.clone()),
        });
        funding.push(Msg::Send {
            to: k.address(),
            amount: Coin::new(2 * bond.amount, bond.denom.clone()),
        });
    }
    send_all(rpc, chain_id, "funding the workers", &[(owner, funding)])?;
    let mut ports = Vec::new();
    for _ in &keys {
        ports.push(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port());
    }
    let providers: Vec<(&SigningKey, Vec<Msg>)> = keys
        .iter()
        .zip(&ports)
        .map(|(k, p)| {
            (
                k,
                vec![pazar_train::sim::provider_msg(&format!("https://127.0.0.1:{p}"))],
            )
        })
        .collect();
    send_all(rpc, chain_id, "registering the workers as providers", &providers)?;
    let name_of = keys
        .iter()
        .zip(&names)
        .map(|(k, n)| (k.address(), n.clone()))
        .chain([(owner.address(), "alice".to_string())])
        .collect();
    Ok(Crew {
        uris: ports.iter().map(|p| format!("http://127.0.0.1:{p}")).collect(),
        reports: names.iter().map(|n| h.join(format!("{n}.steps.jsonl"))).collect(),
        summaries: names.iter().map(|n| h.join(format!("{n}.json"))).collect(),
        names,
        keys,
        ports,
        cheats,
        name_of,
    })
}

/// Registers the corpus as a dataset and opens the job on it, by `owner`, in one block.
fn open_job(
    rpc: &Rpc,
    chain_id: &str,
    owner: &SigningKey,
    corpus: &train_cmd::Corpus,
    spec: JobSpec,
    out: &Path,
) -> Result<(DemoJob, DatasetSpec)> {
    let train_chunks = corpus.dataset.train_count();
    let dataset = train_cmd::dataset_spec(
        "generated corpus",
        &corpus.dataset,
        vec![Contributor {
            address: owner.address(),
            chunks: corpus.dataset.count(),
        }],
    )?;
    let model = train_cmd::model_of(&spec, train_chunks)?;
    let init = train_cmd::initial_checkpoint(&spec, train_chunks, None)?;
    let spec = JobSpec {
        init_checkpoint: init.hash(),
        ..spec
    };
    let receipts = send_all(
        rpc,
        chain_id,
        "registering the dataset and opening the job",
        &[(
            owner,
            vec![
                Msg::RegisterDataset { spec: dataset.clone() },
                Msg::OpenJob { spec: spec.clone() },
            ],
        )],
    )?;
    let id = receipts
        .iter()
        .flat_map(|r| r.events.iter())
        .find_map(|e| match e {
            Event::TrainJobOpened { job, .. } => Some(*job),
            _ => None,
        })
        .ok_or_else(|| anyhow!("opening the job announced no job"))?;
    let eval_chunks: Vec<&[u8]> = corpus.chunks[train_chunks as usize..]
        .iter()
        .map(Vec::as_slice)
        .collect();
    let eval = data::eval_batches(&eval_chunks, EVAL_BATCH, spec.model.seq_len, EVAL_BATCHES)?;
    let initial_loss = f64::from(round::evaluate(&model, &init.params, &eval)?);
    Ok((
        DemoJob {
            id,
            params: model.param_count() as u64,
            spec,
            model,
            eval,
            init: init.hash(),
            initial_loss,
            checkpoint_file: out.join(CHECKPOINT_FILE),
        },
        dataset,
    ))
}

/// Every worker joins in one block (so all take part from round 0), then each starts as a
/// `pazar train worker` process. Returns the height to follow the chain from.
fn join_and_start(
    o: &TrainDemoOpts,
    run: &mut Run,
    h: &Path,
    rpc: &Rpc,
    chain_id: &str,
    crew: &Crew,
    job: u64,
) -> Result<u64> {
    let from = rpc.status().map_err(client_err)?.height + 1;
    let joins: Vec<(&SigningKey, Vec<Msg>)> = crew
        .keys
        .iter()
        .zip(&crew.uris)
        .map(|(k, u)| {
            (
                k,
                vec![Msg::JoinJob {
                    job,
                    blob_uri: u.clone(),
                }],
            )
        })
        .collect();
    send_all(rpc, chain_id, "joining the job", &joins)?;
    for (i, name) in crew.names.iter().enumerate() {
        let _ = std::fs::remove_file(&crew.reports[i]);
        let mut args: Vec<String> = vec![
            "train".into(),
            "worker".into(),
            "--job".into(),
            job.to_string(),
            "--from".into(),
            name.clone(),
            "--listen".into(),
            format!("127.0.0.1:{}", crew.ports[i]),
            "--corpus-seed".into(),
            CORPUS_SEED.to_string(),
            "--corpus-bytes".into(),
            o.corpus_bytes.to_string(),
            "--serve-after-s".into(),
            SERVE_AFTER_S.to_string(),
            "--report".into(),
            crew.reports[i].display().to_string(),
        ];
        if let Some(kind) = crew.cheats.get(&(i as u16 + 1)) {
            args.extend(["--adversary".into(), kind.clone()]);
        }
        let w = spawn(name, h, &args, &crew.summaries[i], &h.join(format!("{name}.log")))?;
        run.workers.push(w);
    }
    Ok(from)
}

/// Completes a settled round's row: the held-out loss of its checkpoint and the bytes its
/// workers fetched (each voter reports its aggregation's fetches once its vote is committed,
/// so the demo waits a little for those lines).
fn complete_row(row: &mut RoundRow, book_started: Option<&Vec<Address>>, crew: &Crew, job: &DemoJob) -> Result<()> {
    let r = row.round;
    let workers = book_started.cloned().unwrap_or_default();
    row.workers = workers.iter().map(|a| crew.name(a)).collect();
    let w = workers.len() as u64;
    row.ddp_bytes = u64::from(job.spec.params.inner_steps) * 2 * w.saturating_sub(1) * 4 * job.params;
    if let Some(c) = row.checkpoint {
        let (loss, ckpt) = eval_checkpoint(&job.model, &job.eval, &crew.uris, &c)?;
        row.eval_loss = Some(loss);
        std::fs::write(&job.checkpoint_file, ckpt.encode())
            .with_context(|| format!("cannot write {}", job.checkpoint_file.display()))?;
    }
    let voters: Vec<usize> = row.voters.iter().filter_map(|v| crew.index(v)).collect();
    let t0 = Instant::now();
    let lines = loop {
        let lines = read_reports(&crew.reports);
        let reported = voters.iter().all(|&i| {
            lines[i]
                .iter()
                .any(|l| l.round.is_some_and(|x| x > r) || (l.round == Some(r) && l.step == "voted"))
        });
        if reported || t0.elapsed() > REPORT_WAIT {
            break lines;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    row.bytes = round_bytes(&lines, r);
    Ok(())
}

/// Follows the chain from height `from` until the job ends, printing each round as it
/// settles; every round's row.
fn follow(run: &mut Run, rpc: &Rpc, from: u64, crew: &Crew, job: &DemoJob) -> Result<Vec<RoundRow>> {
    let max_blocks = u64::from(job.spec.rounds) * job.spec.phases.round_blocks() + 200;
    let mut book = Book::default();
    let mut stream = rpc.events(from);
    let mut failures = 0;
    while !book.ended {
        run.check()?;
        for w in &mut run.workers {
            if let Some(s) = w.exited() {
                bail!("{} exited before the job ended ({s}); see its log", w.name);
            }
        }
        let block = match stream.next_block() {
            Ok(b) => {
                failures = 0;
                b
            }
            Err(e) => {
                failures += 1;
                if failures > MAX_STREAM_FAILURES {
                    return Err(anyhow::Error::new(e).context("the node's event stream"));
                }
                std::thread::sleep(Duration::from_millis(200));
                continue;
            }
        };
        if block.height > from + max_blocks {
            bail!("the job did not end within {max_blocks} blocks");
        }
        let settled: Vec<u32> = block.events().filter_map(|e| book.record(job.id, e, crew)).collect();
        for r in settled {
            let started = book.started.get(&r);
            let Some(row) = book.rows.get_mut(&r) else { continue };
            complete_row(row, started, crew, job)?;
            run.line(round_line(row, &job.spec.budget.denom));
        }
    }
    // Lines written after a round was printed (a late aggregation) count in the totals.
    let lines = read_reports(&crew.reports);
    let mut rows: Vec<RoundRow> = book.rows.into_values().collect();
    for row in &mut rows {
        row.bytes = round_bytes(&lines, row.round);
    }
    Ok(rows)
}

/// Each worker's summary, as its process printed it when the job ended (waiting a little for
/// the slowest).
fn worker_summaries(run: &mut Run, crew: &Crew) -> Result<Vec<Option<WorkerSummary>>> {
    let t0 = Instant::now();
    loop {
        let s: Vec<Option<WorkerSummary>> = crew
            .summaries
            .iter()
            .map(|p| {
                std::fs::read_to_string(p)
                    .ok()
                    .and_then(|t| serde_json::from_str(t.trim()).ok())
            })
            .collect();
        if s.iter().all(Option::is_some) || t0.elapsed() > REPORT_WAIT * 2 {
            return Ok(s);
        }
        run.check()?;
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn worker_rows(crew: &Crew, rounds: &[RoundRow], summaries: Vec<Option<WorkerSummary>>) -> Vec<WorkerRow> {
    crew.keys
        .iter()
        .zip(summaries)
        .enumerate()
        .map(|(i, (k, summary))| {
            let me = crew.name(&k.address());
            let (mut paid, mut rounds_paid, mut slashed) = (0u128, Vec::new(), 0u128);
            for r in rounds {
                for x in r.rewards.iter().filter(|x| x.worker == me) {
                    paid += x.paid;
                    rounds_paid.push(r.round);
                }
                slashed += r
                    .slashed
                    .iter()
                    .filter(|s| s.worker == me)
                    .map(|s| s.amount)
                    .sum::<u128>();
            }
            WorkerRow {
                name: me,
                address: k.address(),
                adversary: crew.cheats.get(&(i as u16 + 1)).cloned(),
                paid,
                rounds_paid,
                slashed,
                summary,
            }
        })
        .collect()
}

/// The job's money as the ledger ends it, against the rewards the events announced and the
/// denomination's supply before and after.
fn tokens(j: &TrainJob, rounds: &[RoundRow], supply_before: u128, supply_after: u128) -> Tokens {
    let rewards_paid: u128 = rounds.iter().flat_map(|r| &r.rewards).map(|x| x.paid).sum();
    let rewards_take: u128 = rounds.iter().flat_map(|r| &r.rewards).map(|x| x.take).sum();
    let budget = j.spec.budget.amount;
    Tokens {
        denom: j.spec.budget.denom.clone(),
        budget,
        paid: j.paid,
        take: j.take,
        refunded: j.refunded,
        escrow: j.escrow,
        rewards_paid,
        rewards_take,
        conserved: Some(budget)
            == j.paid
                .checked_add(j.take)
                .and_then(|s| s.checked_add(j.refunded))
                .and_then(|s| s.checked_add(j.escrow))
            && rewards_paid == j.paid
            && rewards_take == j.take
            && supply_before == supply_after,
    }
}

fn supply_of(rpc: &Rpc, denom: &Denom) -> Result<u128> {
    Ok(rpc
        .supply()
        .map_err(client_err)?
        .supply
        .iter()
        .find(|c| c.denom == *denom)
        .map_or(0, |c| c.amount))
}

pub fn run(o: &TrainDemoOpts, opts: &ClientOpts) -> Result<()> {
    let t_all = Instant::now();
    let cheats = cheaters(o)?;
    let honest = o.workers - cheats.len() as u16;
    let h = opts
        .home
        .clone()
        .unwrap_or_else(|| home::resolve(None).join("train-demo"));
    std::fs::create_dir_all(&h).with_context(|| format!("cannot create {}", h.display()))?;
    let out = o.out.clone().unwrap_or_else(|| h.join("run"));
    std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
    let say = opts.output == Output::Text;
    if say {
        println!(
            "Pazar training demo: {} workers, {} rounds (home {}, out {})",
            o.workers,
            o.rounds,
            h.display(),
            out.display()
        );
    }
    let (mut run, rpc, chain_id) = start_devnet(o, &h, say)?;

    // The owner is the devnet's `alice`.
    let no_pass = |_: &str, _: bool| None;
    let alice = Keyring::new(&h)
        .signer("alice", &no_pass)
        .map_err(|e| anyhow!("the devnet's key alice: {e}"))?;
    let corpus = train_cmd::corpus(&CorpusArgs {
        corpus_seed: CORPUS_SEED,
        corpus_bytes: o.corpus_bytes,
    })?;
    let spec = demo_spec(o, honest, corpus.dataset.root())?;
    let supply_before = supply_of(&rpc, &spec.budget.denom)?;
    let crew = enlist(o, &h, &rpc, &chain_id, &alice, &spec.bond, cheats)?;
    run.line(format!(
        "[2/5] {} worker keys funded by alice and registered as providers{}",
        o.workers,
        if crew.cheats.is_empty() {
            String::new()
        } else {
            let c: Vec<String> = crew.cheats.iter().map(|(w, k)| format!("worker{w} ({k})")).collect();
            format!("; cheating: {}", c.join(", "))
        }
    ));
    let (job, dataset) = open_job(&rpc, &chain_id, &alice, &corpus, spec, &out)?;
    let spec = &job.spec;
    run.line(format!(
        "[3/5] dataset {} registered ({} chunks, {} bytes, 1 in 20 held out); job {} opened: a {}-layer transformer \
         of {} parameters, H = {}, {} rounds, budget {}, bond {}, audits {} per mille",
        hex::encode(&dataset.root[..6]),
        dataset.chunks,
        dataset.bytes,
        job.id,
        spec.model.layers,
        job.params,
        spec.params.inner_steps,
        spec.rounds,
        spec.budget,
        spec.bond,
        spec.audit_per_mille
    ));
    let from = join_and_start(o, &mut run, &h, &rpc, &chain_id, &crew, job.id)?;
    run.line(format!(
        "[4/5] {} `pazar train worker` processes joined and training (logs: {}/worker*.log)",
        o.workers,
        h.display()
    ));
    run.line(format!(
        "  initial checkpoint {}  held-out loss {:.3}",
        hex::encode(&job.init[..6]),
        job.initial_loss
    ));
    let rounds = follow(&mut run, &rpc, from, &crew, &job)?;

    // The summary.
    let record = rpc.train_job(job.id, false).map_err(client_err)?.item.job;
    let tokens = tokens(&record, &rounds, supply_before, supply_of(&rpc, &spec.budget.denom)?);
    let summaries = worker_summaries(&mut run, &crew)?;
    let workers = worker_rows(&crew, &rounds, summaries);
    let bytes: u64 = rounds.iter().map(|r| r.bytes).sum();
    let ddp: u64 = rounds.iter().map(|r| r.ddp_bytes).sum();
    let final_round = rounds.iter().rev().find(|r| r.checkpoint.is_some());
    let mut curve = vec![(0.0, job.initial_loss)];
    curve.extend(
        rounds
            .iter()
            .filter_map(|r| r.eval_loss.map(|l| (f64::from(r.round + 1), l))),
    );
    let chart_path = out.join("loss.svg");
    let svg = chart::line_chart(
        &format!(
            "held-out loss, {} workers, H = {}, {} rounds",
            o.workers, spec.params.inner_steps, spec.rounds
        ),
        "outer round",
        "eval loss (nats per byte)",
        &[chart::Series {
            name: "Pazar (DiLoCo, audited)",
            color: "#1f77b4",
            points: curve,
        }],
    );
    std::fs::write(&chart_path, svg).with_context(|| format!("cannot write {}", chart_path.display()))?;
    let provenance = match final_round.and_then(|r| r.checkpoint) {
        Some(c) => Some(model_cmd::provenance(&rpc, &c, Some(job.id))?),
        None => None,
    };
    let checkpoint_file = final_round
        .and_then(|r| r.checkpoint)
        .map(|_| job.checkpoint_file.clone());
    let report = RunReport {
        job: job.id,
        model: spec.model,
        params: job.params,
        inner_steps: spec.params.inner_steps,
        block_time_ms: o.block_time_ms,
        initial_checkpoint: job.init,
        initial_eval_loss: job.initial_loss,
        final_checkpoint: final_round.and_then(|r| r.checkpoint),
        final_eval_loss: final_round.and_then(|r| r.eval_loss),
        bytes_exchanged: bytes,
        ddp_bytes: ddp,
        bytes_ratio_vs_ddp: ddp as f64 / bytes.max(1) as f64,
        rounds,
        workers,
        tokens,
        chart: chart_path.clone(),
        checkpoint_file,
        provenance,
        seconds: t_all.elapsed().as_secs_f64(),
    };
    let run_json = out.join("run.json");
    std::fs::write(&run_json, serde_json::to_vec_pretty(&report)?)
        .with_context(|| format!("cannot write {}", run_json.display()))?;
    drop(std::mem::take(&mut run.workers));

    if say {
        print_summary(&report);
        println!("  chart: {}\n  run:   {}", chart_path.display(), run_json.display());
        if let Some(p) = &report.provenance {
            println!(
                "\nProvenance of the final checkpoint (`pazar model show {} --job {}`):",
                hex::encode(p.checkpoint),
                job.id
            );
            println!("{}", model_cmd::text_with(p, &|a: &Address| crew.name(a)));
        }
        println!(
            "\nDemo chain, keys and logs stay in {}; `pazar train demo` resets it.",
            h.display()
        );
    } else {
        println!("{}", serde_json::to_string_pretty(&report)?);
    }
    if !report.tokens.conserved {
        bail!("the job's tokens are not accounted for: {:?}", report.tokens);
    }
    Ok(())
}

fn round_line(row: &RoundRow, denom: &Denom) -> String {
    let head = match (row.checkpoint, row.eval_loss) {
        (Some(c), Some(l)) => format!("checkpoint {}  loss {l:.3}", hex::encode(&c[..6])),
        _ => "no checkpoint (no majority)".into(),
    };
    let mut audits: BTreeMap<String, usize> = BTreeMap::new();
    for a in &row.audits {
        *audits.entry(json_name(&a.outcome)).or_default() += 1;
    }
    let audits = if audits.is_empty() {
        "no audits".to_string()
    } else {
        format!(
            "audits {}",
            audits
                .iter()
                .map(|(k, n)| format!("{n} {k}"))
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    let caught: Vec<String> = row
        .audits
        .iter()
        .filter(|a| a.outcome != AuditOutcome::Pass)
        .map(|a| format!("{} by {}: {}", a.target, a.auditor, json_name(&a.outcome)))
        .collect();
    let slashed: Vec<String> = row
        .slashed
        .iter()
        .map(|s| format!("{} {} {denom} ({})", s.worker, s.amount, json_name(&s.reason)))
        .collect();
    let paid: u128 = row.rewards.iter().map(|r| r.paid).sum();
    format!(
        "  round {:>3}  {head}  bytes {}  {audits}{}{}  paid {paid} {denom} to {}",
        row.round,
        human_bytes(row.bytes),
        if caught.is_empty() {
            String::new()
        } else {
            format!(" [{}]", caught.join("; "))
        },
        if slashed.is_empty() {
            String::new()
        } else {
            format!("  slashed {}", slashed.join(", "))
        },
        if row.rewards.is_empty() {
            "nobody".to_string()
        } else {
            let mut paid: Vec<&str> = row.rewards.iter().map(|r| r.worker.as_str()).collect();
            paid.sort();
            paid.join(", ")
        }
    )
}

fn print_summary(r: &RunReport) {
    let t = &r.tokens;
    println!("[5/5] summary after {:.0} s", r.seconds);
    if let (Some(l), Some(c)) = (r.final_eval_loss, r.final_checkpoint) {
        println!(
            "  held-out loss {:.3} -> {l:.3} over {} rounds (final checkpoint {})",
            r.initial_eval_loss,
            r.rounds.len(),
            hex::encode(&c[..6])
        );
    }
    println!(
        "  bytes the workers exchanged: {} ; synchronous data-parallel would send {} ({:.0}x more)",
        human_bytes(r.bytes_exchanged),
        human_bytes(r.ddp_bytes),
        r.bytes_ratio_vs_ddp
    );
    for w in &r.workers {
        println!(
            "  {:<9} {:<16} paid {:>8} {} for {} rounds{}",
            w.name,
            w.adversary
                .as_deref()
                .map_or_else(|| "honest".to_string(), |k| format!("cheat: {k}")),
            w.paid,
            t.denom,
            w.rounds_paid.len(),
            if w.slashed > 0 {
                format!(", slashed {} {}", w.slashed, t.denom)
            } else {
                String::new()
            }
        );
    }
    println!(
        "  tokens: budget {} = paid {} + take {} + refunded {} + escrow {} ({}); supply unchanged: {}",
        t.budget,
        t.paid,
        t.take,
        t.refunded,
        t.escrow,
        if t.budget == t.paid + t.take + t.refunded + t.escrow {
            "conserved to the base unit"
        } else {
            "NOT conserved"
        },
        if t.conserved { "yes" } else { "see above" }
    );
}
