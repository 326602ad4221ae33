//! `pazar train …`: putting a training job on the ledger, reading it back, taking part in it
//! from this machine (`worker`), and the whole protocol on this machine (`demo`,
//! [`crate::train_demo`]).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, Subcommand};
use serde::{Deserialize, Serialize};

use pazar_api::node::{RoundStatus, TrainJobEntry, TrainMembers, TrainRound, TxResult, TxState};
use pazar_client::keyring::Keyring;
use pazar_client::Rpc;
use pazar_train::blobs::{self, BlobStore};
use pazar_train::data;
use pazar_train::model::Model;
use pazar_train::node_chain::NodeChain;
use pazar_train::ops::Threads;
use pazar_train::state::Checkpoint;
use pazar_train::worker::{self, Adversary, Chain, HttpPeers, Step, Worker};
use pazar_types::train::{
    Compression, Contributor, DatasetSpec, JobSpec, JobState, ModelSpec, PhaseBlocks, TrainParams, PER_MILLE,
};
use pazar_types::{Address, Coin, Event, Hash32, Msg};

use crate::chain::{self, TxOpts};
use crate::failure::Failure;
use crate::model_cmd::json_name;
use crate::{home, ClientOpts, Output};

#[derive(Subcommand)]
pub enum TrainCmd {
    /// Take part in a training job until it ends: train each round on the shards the beacon
    /// assigns, commit and reveal the update, serve it, audit and referee when drawn, aggregate
    /// and vote. The key must be a registered provider's.
    #[command(
        after_help = "Examples:\n  pazar train worker --job 0 --from worker1 --corpus-seed 11 --corpus-bytes 1638400 --join"
    )]
    Worker(WorkerOpts),
    /// Datasets on the ledger: their Merkle root, size and contributors.
    Dataset {
        #[command(subcommand)]
        which: DatasetCmd,
    },
    /// Training jobs: open one (its budget goes into escrow), show one.
    Job {
        #[command(subcommand)]
        which: JobCmd,
    },
    /// A round of a job: live (phase, deadlines, every worker's commitment, reveal and vote,
    /// the audits drawn) or settled (the provenance record of its checkpoint).
    #[command(after_help = "Examples:\n  pazar train round 0 2\n  pazar train round 0 2 -o json")]
    Round { job: u64, round: u32 },
    /// The whole protocol on this machine: a devnet, N worker processes that register as
    /// providers, a dataset, a job; the held-out loss, bytes, audits, slashes and rewards of
    /// every round; a loss chart and the provenance of the final checkpoint.
    #[command(
        after_help = "Examples:\n  pazar train demo\n  pazar train demo --workers 4 --rounds 12 --adversary 1:sign-flip --out /tmp/run"
    )]
    Demo(crate::train_demo::TrainDemoOpts),
}

#[derive(Subcommand)]
pub enum DatasetCmd {
    /// Register the corpus generated from a seed and size (`pazar_train::data`): its Merkle
    /// root over 16 KiB chunks, its chunk count and size, and who contributed which chunks
    /// (the signer, all of them, unless --contributor says otherwise).
    #[command(
        after_help = "Examples:\n  pazar train dataset register --corpus-seed 11 --corpus-bytes 1048576 --from alice\n  \
                      pazar train dataset register --corpus-seed 11 --corpus-bytes 1048576 --contributor alice=40 --contributor bob=24 --from alice -o json"
    )]
    Register {
        #[command(flatten)]
        corpus: CorpusArgs,
        /// The dataset's name on the ledger.
        #[arg(long, default_value = "generated corpus")]
        name: String,
        /// KEY_OR_ADDRESS=CHUNKS (repeatable); the chunks must add up to the dataset's.
        #[arg(long = "contributor")]
        contributors: Vec<String>,
        #[command(flatten)]
        tx: TxOpts,
    },
    /// A registered dataset by its root.
    #[command(after_help = "Examples:\n  pazar train dataset show 7f3a…(64 hex)")]
    Show { root: String },
}

#[derive(Subcommand)]
pub enum JobCmd {
    /// Open a training job: its spec from flags (defaults: a tiny model that trains in seconds
    /// per round on a laptop) or from a JSON/TOML file, its initial checkpoint the model's
    /// initial weights for the seed (or --checkpoint). The budget moves into escrow.
    #[command(
        after_help = "Examples:\n  pazar train job open --corpus-seed 11 --corpus-bytes 1048576 --from alice\n  \
                      pazar train job open --dataset 7f3a… --rounds 20 --inner-steps 64 --budget 5000000uusd --from alice\n  \
                      pazar train job open --spec job.toml --corpus-seed 11 --corpus-bytes 1048576 --from alice -o json"
    )]
    Open(Box<OpenJobArgs>),
    /// A job: its state, round and phase, money (escrow, paid, take, refunded, bonds) and members.
    #[command(after_help = "Examples:\n  pazar train job show 0\n  pazar train job show 0 -o json")]
    Show { id: u64 },
}

/// The corpus `pazar_train::data` generates from a seed: what the demo, the worker and the
/// dataset commands agree on.
#[derive(Args, Clone, Debug)]
pub struct CorpusArgs {
    #[arg(long)]
    pub corpus_seed: u64,
    #[arg(long)]
    pub corpus_bytes: usize,
}

/// The spec of a job, field by field. The defaults are a 37 k-parameter model (vocab 256,
/// dim 32, 2 layers, sequences of 32) trained 32 inner steps per round by 2 to 3 workers.
#[derive(Args, Clone, Debug)]
#[group(id = "spec_flags", multiple = true)]
pub struct SpecFlags {
    #[arg(long, default_value = "demo")]
    pub name: String,
    #[arg(long, default_value_t = 256)]
    pub vocab: u32,
    #[arg(long, default_value_t = 32)]
    pub dim: u32,
    #[arg(long, default_value_t = 2)]
    pub layers: u16,
    #[arg(long, default_value_t = 2)]
    pub heads: u16,
    #[arg(long, default_value_t = 64)]
    pub ffn_dim: u32,
    #[arg(long, default_value_t = 32)]
    pub seq_len: u32,
    /// H: local AdamW steps per round.
    #[arg(long, default_value_t = 32)]
    pub inner_steps: u32,
    /// Steps per audited segment (divides --inner-steps).
    #[arg(long, default_value_t = 8)]
    pub segment_steps: u32,
    #[arg(long, default_value_t = 8)]
    pub batch: u32,
    /// Inner learning rate × 10⁶.
    #[arg(long, default_value_t = 3_000)]
    pub inner_lr_micro: u32,
    #[arg(long, default_value_t = 0)]
    pub weight_decay_micro: u32,
    /// Outer (Nesterov) learning rate × 10³.
    #[arg(long, default_value_t = 700)]
    pub outer_lr_milli: u32,
    #[arg(long, default_value_t = 900)]
    pub outer_momentum_milli: u32,
    /// `int8`, `topk:PER_MILLE` or `topk-int8:PER_MILLE`.
    #[arg(long, default_value = "int8", value_parser = parse_compression)]
    pub compression: Compression,
    /// Seed of the model's initial weights (and the job's randomness).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    #[arg(long, default_value_t = 2)]
    pub min_workers: u16,
    #[arg(long, default_value_t = 3)]
    pub max_workers: u16,
    #[arg(long, default_value_t = 10)]
    pub rounds: u32,
    /// Blocks each phase may last at most: train,commit,reveal,audit,dispute,aggregate (a
    /// phase ends early once every worker acted).
    #[arg(long, default_value = "150,50,50,150,25,75", value_parser = parse_phases)]
    pub phases: PhaseBlocks,
    /// Paid out over the rounds in proportion to verified tokens.
    #[arg(long, default_value = "1000000uusd")]
    pub budget: Coin,
    /// What each worker locks to join (the budget's denomination).
    #[arg(long, default_value = "100000uusd")]
    pub bond: Coin,
    /// The chance, per mille, that each worker's round is replayed by an auditor.
    #[arg(long, default_value_t = 1000)]
    pub audit_per_mille: u16,
    /// Referees a dispute draws (odd).
    #[arg(long, default_value_t = 1)]
    pub referees: u16,
}

#[derive(Args, Clone)]
pub struct OpenJobArgs {
    /// The whole spec from a file (JSON, or TOML when it ends in .toml): the fields of
    /// `pazar train job show -o json`'s `spec`, `dataset` and `init_checkpoint` optional.
    /// Refused together with the spec's flags.
    #[arg(long, conflicts_with = "spec_flags")]
    pub spec: Option<PathBuf>,
    #[command(flatten)]
    pub flags: SpecFlags,
    /// The dataset's root (64 hex); default the root of --corpus-seed/--corpus-bytes.
    #[arg(long)]
    pub dataset: Option<String>,
    #[arg(long, requires = "corpus_bytes")]
    pub corpus_seed: Option<u64>,
    #[arg(long, requires = "corpus_seed")]
    pub corpus_bytes: Option<usize>,
    /// The initial checkpoint as a blob file; default the model's initial weights for --seed.
    #[arg(long)]
    pub checkpoint: Option<PathBuf>,
    #[command(flatten)]
    pub tx: TxOpts,
}

#[derive(Args)]
pub struct WorkerOpts {
    #[arg(long)]
    pub job: u64,
    /// Name of the key in the keyring (a provider's).
    #[arg(long)]
    pub from: String,
    /// Where this worker serves its blobs (port 0 picks one).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: String,
    /// The URL other workers fetch from; default `http://` and the listening address.
    #[arg(long)]
    pub advertise: Option<String>,
    /// The dataset, as the corpus generated from this seed and size; its Merkle root must be
    /// the job's.
    #[arg(long)]
    pub corpus_seed: u64,
    #[arg(long)]
    pub corpus_bytes: usize,
    /// The job's initial checkpoint as a blob file; without it, the model's initial weights
    /// from the job's seed (their hash must be the job's `init_checkpoint` either way).
    #[arg(long)]
    pub checkpoint: Option<PathBuf>,
    /// Bond and join the job first.
    #[arg(long)]
    pub join: bool,
    /// Cheat in one way (for tests): lazy, noise, sign-flip, copier, stale, withhold, crash,
    /// wrong-shards, false-auditor, lazy-auditor, bad-seal, hide-update or perturb:R.
    #[arg(long)]
    pub adversary: Option<Adversary>,
    /// Threads for the kernels (the result is the same bits for any count).
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Append one JSON line per step taken to this file: the round, the step, and the bytes
    /// fetched from other workers for it (`pazar train demo` sums them per round).
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// After the job ends, keep serving blobs this many seconds (the job's owner fetches the
    /// final checkpoint from a worker).
    #[arg(long, default_value_t = 0)]
    pub serve_after_s: u64,
}

/// One line of `pazar train worker --report FILE`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepLine {
    /// The round the step was for (a failed step: the last round this worker acted in).
    pub round: Option<u32>,
    /// trained, committed, revealed, audited, disputed, refereed, voted, done or failed.
    pub step: String,
    /// Bytes fetched from other workers during the step.
    pub bytes_fetched: u64,
}

/// What `pazar train worker` prints when the job is over.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerSummary {
    pub job: u64,
    pub worker: Address,
    pub train_seconds: f64,
    pub audit_seconds: f64,
    pub aggregate_seconds: f64,
    pub steps_trained: u64,
    pub steps_replayed: u64,
    pub bytes_fetched: u64,
}

pub fn run(which: TrainCmd, opts: &ClientOpts) -> Result<()> {
    match which {
        TrainCmd::Worker(o) => worker(&o, opts),
        TrainCmd::Dataset {
            which:
                DatasetCmd::Register {
                    corpus,
                    name,
                    contributors,
                    tx,
                },
        } => register_dataset(opts, &tx, &corpus, &name, &contributors),
        TrainCmd::Dataset {
            which: DatasetCmd::Show { root },
        } => {
            let root = parse_hash(&root)?;
            let d = rpc_of(opts)
                .train_dataset(&root, false)
                .map_err(chain::client_err)?
                .item;
            emit(opts.output, &d, || {
                let s = &d.dataset.spec;
                let mut out = format!(
                    "dataset {}\n  name: {}\n  chunks: {}\n  bytes: {}\n  registrant: {}\n  height: {}\n  contributors:",
                    hex::encode(d.root),
                    s.name,
                    s.chunks,
                    s.bytes,
                    d.dataset.registrant,
                    d.dataset.height
                );
                for c in &s.contributors {
                    out.push_str(&format!("\n    {} ({} chunks)", c.address, c.chunks));
                }
                out
            })
        }
        TrainCmd::Job { which: JobCmd::Open(a) } => open_job(opts, &a),
        TrainCmd::Job {
            which: JobCmd::Show { id },
        } => {
            let rpc = rpc_of(opts);
            let job = rpc.train_job(id, false).map_err(chain::client_err)?.item;
            let members = rpc.train_members(id).map_err(chain::client_err)?;
            let out = JobShow { job, members };
            emit(opts.output, &out, || job_text(&out))
        }
        TrainCmd::Round { job, round } => {
            let r = rpc_of(opts).train_round(job, round).map_err(chain::client_err)?;
            emit(opts.output, &r, || round_text(&r))
        }
        TrainCmd::Demo(o) => crate::train_demo::run(&o, opts),
    }
}

fn rpc_of(opts: &ClientOpts) -> Rpc {
    let home = home::resolve(opts.home.clone());
    Rpc::new(&home::node_url(opts.node.clone(), &home))
}

/// Prints `v` as JSON under `-o json`, else `text()`.
fn emit<T: Serialize>(out: Output, v: &T, text: impl FnOnce() -> String) -> Result<()> {
    match out {
        Output::Json => println!("{}", serde_json::to_string_pretty(v)?),
        Output::Text => println!("{}", text()),
    }
    Ok(())
}

pub(crate) fn parse_hash(s: &str) -> Result<Hash32> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(s.trim_start_matches("0x"), &mut out)
        .map_err(|_| Failure::input(format!("{s:?} is not a 32-byte hash (64 hex digits)")))?;
    Ok(out)
}

fn parse_compression(s: &str) -> Result<Compression, String> {
    let per_mille = |v: &str| -> Result<u16, String> {
        v.parse::<u16>()
            .ok()
            .filter(|p| (1..=PER_MILLE).contains(p))
            .ok_or_else(|| format!("{v:?} is not a per mille count 1-{PER_MILLE}"))
    };
    match s.split_once(':') {
        None if s == "int8" => Ok(Compression::Int8),
        Some(("topk", p)) => Ok(Compression::TopK {
            per_mille: per_mille(p)?,
        }),
        Some(("topk-int8", p)) => Ok(Compression::TopKInt8 {
            per_mille: per_mille(p)?,
        }),
        _ => Err(format!(
            "unknown compression {s:?}: int8, topk:PER_MILLE or topk-int8:PER_MILLE"
        )),
    }
}

fn parse_phases(s: &str) -> Result<PhaseBlocks, String> {
    let v: Vec<u32> = s
        .split(',')
        .map(|x| x.trim().parse::<u32>())
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{s:?}: {e}"))?;
    let [train, commit, reveal, audit, dispute, aggregate] = v[..] else {
        return Err(format!(
            "{s:?}: six block counts, train,commit,reveal,audit,dispute,aggregate"
        ));
    };
    Ok(PhaseBlocks {
        train,
        commit,
        reveal,
        audit,
        dispute,
        aggregate,
    })
}

/// The corpus of a seed and size, cut into chunks, with its dataset (root, count, size).
pub(crate) struct Corpus {
    pub chunks: Vec<Vec<u8>>,
    pub dataset: data::Dataset,
}

pub(crate) fn corpus(c: &CorpusArgs) -> Result<Corpus> {
    if c.corpus_bytes == 0 {
        return Err(Failure::input("--corpus-bytes must be at least 1").into());
    }
    let bytes = data::generate_corpus(c.corpus_seed, c.corpus_bytes);
    let dataset = data::Dataset::from_corpus(&bytes)?;
    Ok(Corpus {
        chunks: data::chunks(&bytes).map(<[u8]>::to_vec).collect(),
        dataset,
    })
}

/// The dataset's spec for the ledger, checked.
pub(crate) fn dataset_spec(name: &str, d: &data::Dataset, contributors: Vec<Contributor>) -> Result<DatasetSpec> {
    let spec = DatasetSpec {
        name: name.to_string(),
        root: d.root(),
        chunks: d.count(),
        bytes: d.total_bytes(),
        contributors,
    };
    spec.validate("dataset").map_err(|e| Failure::input(e.to_string()))?;
    Ok(spec)
}

/// What `pazar train dataset register` prints.
#[derive(Debug, Serialize, Deserialize)]
pub struct RegisteredDataset {
    pub dataset: DatasetSpec,
    pub tx: TxResult,
}

fn register_dataset(opts: &ClientOpts, t: &TxOpts, c: &CorpusArgs, name: &str, contributors: &[String]) -> Result<()> {
    let home = home::resolve(opts.home.clone());
    let key = chain::signer(opts, t)?;
    let corpus = corpus(c)?;
    let contributors = if contributors.is_empty() {
        vec![Contributor {
            address: key.address(),
            chunks: corpus.dataset.count(),
        }]
    } else {
        contributors
            .iter()
            .map(|s| {
                let (who, n) = s
                    .split_once('=')
                    .ok_or_else(|| Failure::input(format!("contributor {s:?} must be KEY_OR_ADDRESS=CHUNKS")))?;
                let chunks = n
                    .parse::<u32>()
                    .map_err(|_| Failure::input(format!("contributor {s:?}: {n:?} is not a chunk count")))?;
                Ok(Contributor {
                    address: crate::ids::address(&home, who)?,
                    chunks,
                })
            })
            .collect::<Result<Vec<_>>>()?
    };
    let spec = dataset_spec(name, &corpus.dataset, contributors)?;
    let r = chain::submit_as(opts, t, &key, vec![Msg::RegisterDataset { spec: spec.clone() }])?;
    let out = RegisteredDataset { dataset: spec, tx: r };
    emit(opts.output, &out, || {
        format!(
            "dataset {} ({} chunks, {} bytes): {}",
            hex::encode(out.dataset.root),
            out.dataset.chunks,
            out.dataset.bytes,
            chain::tx_text(&out.tx)
        )
    })?;
    if !chain::tx_ok(&out.tx) {
        return Err(chain::tx_failed(&out.tx));
    }
    Ok(())
}

/// A job spec as a file holds it: [`JobSpec`]'s fields, with the dataset and the initial
/// checkpoint optional (computed when left out).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct JobFile {
    name: String,
    model: ModelSpec,
    #[serde(default, with = "pazar_types::train::hex_opt")]
    dataset: Option<Hash32>,
    #[serde(default, with = "pazar_types::train::hex_opt")]
    init_checkpoint: Option<Hash32>,
    params: TrainParams,
    min_workers: u16,
    max_workers: u16,
    rounds: u32,
    phases: PhaseBlocks,
    budget: Coin,
    bond: Coin,
    audit_per_mille: u16,
    referees: u16,
}

fn read_job_file(path: &Path) -> Result<JobFile> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let parsed = if path.extension().is_some_and(|e| e == "toml") {
        toml::from_str::<JobFile>(&text).map_err(|e| e.to_string())
    } else {
        serde_json::from_str::<JobFile>(&text).map_err(|e| e.to_string())
    };
    parsed.map_err(|e| Failure::input(format!("{} is not a job spec: {e}", path.display())).into())
}

impl SpecFlags {
    /// The spec these flags describe, on `dataset` from `init_checkpoint`.
    pub fn spec(&self, dataset: Hash32, init_checkpoint: Hash32) -> JobSpec {
        JobSpec {
            name: self.name.clone(),
            model: ModelSpec {
                vocab: self.vocab,
                dim: self.dim,
                layers: self.layers,
                heads: self.heads,
                ffn_dim: self.ffn_dim,
                seq_len: self.seq_len,
            },
            dataset,
            init_checkpoint,
            params: TrainParams {
                inner_steps: self.inner_steps,
                segment_steps: self.segment_steps,
                batch: self.batch,
                inner_lr_micro: self.inner_lr_micro,
                weight_decay_micro: self.weight_decay_micro,
                outer_lr_milli: self.outer_lr_milli,
                outer_momentum_milli: self.outer_momentum_milli,
                compression: self.compression,
                seed: self.seed,
            },
            min_workers: self.min_workers,
            max_workers: self.max_workers,
            rounds: self.rounds,
            phases: self.phases,
            budget: self.budget.clone(),
            bond: self.bond.clone(),
            audit_per_mille: self.audit_per_mille,
            referees: self.referees,
        }
    }
}

/// The model of `spec` (single-threaded: for the initial weights and evaluation).
pub(crate) fn model_of(spec: &JobSpec, train_chunks: u32) -> Result<Model> {
    let cfg = worker::train_config(spec, train_chunks)?;
    let model = Model::new(cfg.model, Threads::ONE)?;
    Ok(model)
}

/// The initial checkpoint of `spec`: the blob `file`, or the model's initial weights for the
/// job's seed. Its hash goes into the spec.
pub(crate) fn initial_checkpoint(spec: &JobSpec, train_chunks: u32, file: Option<&Path>) -> Result<Checkpoint> {
    let model = model_of(spec, train_chunks)?;
    match file {
        Some(p) => {
            let bytes = std::fs::read(p).with_context(|| format!("reading {}", p.display()))?;
            Checkpoint::decode(&bytes, model.param_count())
                .map_err(|e| Failure::input(format!("{}: {e}", p.display())).into())
        }
        None => Ok(Checkpoint::initial(model.init_params(spec.params.seed))),
    }
}

/// The job `a` describes, with its dataset root and initial checkpoint filled in and checked.
fn job_spec(a: &OpenJobArgs, rpc: &Rpc) -> Result<JobSpec> {
    let corpus = match (a.corpus_seed, a.corpus_bytes) {
        (Some(corpus_seed), Some(corpus_bytes)) => Some(corpus(&CorpusArgs {
            corpus_seed,
            corpus_bytes,
        })?),
        _ => None,
    };
    let file = a.spec.as_deref().map(read_job_file).transpose()?;
    let from_flag = a.dataset.as_deref().map(parse_hash).transpose()?;
    let dataset = from_flag
        .or(file.as_ref().and_then(|f| f.dataset))
        .or(corpus.as_ref().map(|c| c.dataset.root()))
        .ok_or_else(|| Failure::input("name the dataset: --dataset ROOT, or --corpus-seed and --corpus-bytes"))?;
    if let Some(c) = &corpus {
        if c.dataset.root() != dataset {
            return Err(Failure::input(format!(
                "--dataset {} is not the root of the corpus of --corpus-seed/--corpus-bytes ({})",
                hex::encode(dataset),
                hex::encode(c.dataset.root())
            ))
            .into());
        }
    }
    // The model's layout depends on the training chunks only through the shard size, not the
    // weights; the registered dataset says how many chunks there are.
    let chunks = match &corpus {
        Some(c) => c.dataset.count(),
        None => {
            rpc.train_dataset(&dataset, false)
                .map_err(chain::client_err)
                .with_context(|| format!("dataset {} (register it first)", hex::encode(dataset)))?
                .item
                .dataset
                .spec
                .chunks
        }
    };
    let train_chunks = chunks - data::eval_count(chunks);
    let mut spec = match file {
        Some(f) => JobSpec {
            name: f.name,
            model: f.model,
            dataset,
            init_checkpoint: f.init_checkpoint.unwrap_or([0; 32]),
            params: f.params,
            min_workers: f.min_workers,
            max_workers: f.max_workers,
            rounds: f.rounds,
            phases: f.phases,
            budget: f.budget,
            bond: f.bond,
            audit_per_mille: f.audit_per_mille,
            referees: f.referees,
        },
        None => a.flags.spec(dataset, [0; 32]),
    };
    spec.validate("spec").map_err(|e| Failure::input(e.to_string()))?;
    let init = initial_checkpoint(&spec, train_chunks, a.checkpoint.as_deref())?.hash();
    if spec.init_checkpoint != [0; 32] && spec.init_checkpoint != init {
        return Err(Failure::input(format!(
            "the spec starts from checkpoint {}, the model's initial weights (or --checkpoint) hash to {}",
            hex::encode(spec.init_checkpoint),
            hex::encode(init)
        ))
        .into());
    }
    spec.init_checkpoint = init;
    Ok(spec)
}

/// The id of the job a receipt's `TrainJobOpened` names.
pub(crate) fn opened_job(r: &TxResult) -> Option<u64> {
    match &r.state {
        TxState::Committed { receipt, .. } => receipt.events.iter().find_map(|e| match e {
            Event::TrainJobOpened { job, .. } => Some(*job),
            _ => None,
        }),
        _ => None,
    }
}

/// What `pazar train job open` prints.
#[derive(Debug, Serialize, Deserialize)]
pub struct OpenedJob {
    /// `None` when the transaction did not commit (see `tx`).
    pub job: Option<u64>,
    pub spec: JobSpec,
    pub params: u64,
    pub tx: TxResult,
}

fn open_job(opts: &ClientOpts, a: &OpenJobArgs) -> Result<()> {
    let key = chain::signer(opts, &a.tx)?;
    let spec = job_spec(a, &rpc_of(opts))?;
    let r = chain::submit_as(opts, &a.tx, &key, vec![Msg::OpenJob { spec: spec.clone() }])?;
    let out = OpenedJob {
        job: opened_job(&r),
        params: spec.model.params(),
        spec,
        tx: r,
    };
    emit(opts.output, &out, || {
        let job = out.job.map_or_else(|| "-".to_string(), |j| j.to_string());
        format!(
            "job {job}: {} ({} parameters), dataset {}, initial checkpoint {}, {} rounds, budget {}, bond {}\n{}",
            out.spec.name,
            out.params,
            hex::encode(out.spec.dataset),
            hex::encode(out.spec.init_checkpoint),
            out.spec.rounds,
            out.spec.budget,
            out.spec.bond,
            chain::tx_text(&out.tx)
        )
    })?;
    if !chain::tx_ok(&out.tx) {
        return Err(chain::tx_failed(&out.tx));
    }
    Ok(())
}

/// What `pazar train job show` prints: the job and its members, as the node answers them.
#[derive(Debug, Serialize, Deserialize)]
pub struct JobShow {
    pub job: TrainJobEntry,
    pub members: TrainMembers,
}

fn job_text(s: &JobShow) -> String {
    let j = &s.job.job;
    let mut out = format!(
        "job {} ({}), owner {}\n  state: {}, round {} of {}{}\n  \
         checkpoint: {}{}\n  dataset: {}\n  budget {}: escrow {}, paid {}, take {}, refunded {}; bonds {}\n  \
         rounds with a checkpoint: {}, without: {}\n  members ({}):",
        s.job.id,
        j.spec.name,
        j.owner,
        json_name(&j.state),
        j.round,
        j.spec.rounds,
        if j.state == JobState::Running {
            format!(", phase {} until height {}", json_name(&j.phase), j.deadline)
        } else {
            String::new()
        },
        hex::encode(j.checkpoint),
        j.checkpoint_round
            .map_or_else(|| " (initial)".to_string(), |r| format!(" (round {r})")),
        hex::encode(j.spec.dataset),
        j.spec.budget,
        j.escrow,
        j.paid,
        j.take,
        j.refunded,
        j.bonds,
        j.rounds_ok,
        j.rounds_failed,
        s.members.members.len()
    );
    for m in &s.members.members {
        out.push_str(&format!(
            "\n    {} bond {} from round {}{} at {}",
            m.address,
            m.member.bond,
            m.member.active_from,
            if m.member.leaving { " (leaving)" } else { "" },
            m.member.blob_uri
        ));
    }
    out
}

fn round_text(r: &TrainRound) -> String {
    let mut out = format!("job {} round {} at height {}", r.job, r.round, r.height);
    match &r.status {
        RoundStatus::Live {
            phase,
            deadline,
            checkpoint,
            workers,
            audits,
            ..
        } => {
            out.push_str(&format!(
                ": live, {} until height {deadline}, from checkpoint {}",
                json_name(phase),
                hex::encode(checkpoint)
            ));
            for w in workers {
                let mark = |b: bool| if b { "yes" } else { "no" };
                out.push_str(&format!(
                    "\n  {} committed {} revealed {} voted {}{}",
                    w.address,
                    mark(w.work.commitment.is_some()),
                    mark(w.work.reveal.is_some()),
                    mark(w.work.vote.is_some()),
                    if w.work.excluded { " (excluded)" } else { "" }
                ));
            }
            for a in audits {
                out.push_str(&format!(
                    "\n  audit of {} by {}: {}",
                    a.target,
                    a.audit.auditor,
                    a.audit
                        .outcome
                        .map(|o| json_name(&o))
                        .or(a.audit.verdict.as_ref().map(|_| "posted".to_string()))
                        .unwrap_or_else(|| "waiting".into())
                ));
            }
        }
        RoundStatus::Settled { record: None } => out.push_str(": settled without a checkpoint"),
        RoundStatus::Settled { record: Some(rec) } => {
            out.push_str(&format!(
                ": settled at height {}\n  checkpoint {}\n  from {}\n  included: {}",
                rec.height,
                hex::encode(rec.checkpoint),
                hex::encode(rec.previous),
                rec.included
                    .iter()
                    .map(|u| u.worker.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
            for a in &rec.audits {
                out.push_str(&format!(
                    "\n  audit of {} by {}: {}",
                    a.target,
                    a.auditor,
                    json_name(&a.outcome)
                ));
            }
        }
    }
    out
}

/// The name of a step in a report line.
fn step_name(s: &Step) -> (&'static str, Option<u32>) {
    match s {
        Step::Idle => ("idle", None),
        Step::Trained { round, .. } => ("trained", Some(*round)),
        Step::Committed { round } => ("committed", Some(*round)),
        Step::Revealed { round } => ("revealed", Some(*round)),
        Step::Audited { round, .. } => ("audited", Some(*round)),
        Step::Disputed { round } => ("disputed", Some(*round)),
        Step::Refereed { round, .. } => ("refereed", Some(*round)),
        Step::Voted { round, .. } => ("voted", Some(*round)),
        Step::Done => ("done", None),
    }
}

fn worker(o: &WorkerOpts, opts: &ClientOpts) -> Result<()> {
    let home = home::resolve(opts.home.clone());
    let key = Keyring::new(&home)
        .signer(&o.from, &crate::chain::passphrase_prompt)
        .map_err(|e| anyhow!("key {}: {e}", o.from))?;
    let rpc = Rpc::new(&home::node_url(opts.node.clone(), &home));
    let spec = rpc
        .train_job(o.job, false)
        .map_err(|e| anyhow!("job {}: {e}", o.job))?
        .item
        .job
        .spec;
    let corpus = data::generate_corpus(o.corpus_seed, o.corpus_bytes);
    let chunks: Vec<Vec<u8>> = data::chunks(&corpus).map(<[u8]>::to_vec).collect();
    let store = BlobStore::new(4096);
    let mut w = Worker::new(key.address(), o.job, &spec, chunks, store.clone(), Threads(o.threads))?;
    w.adversary = o.adversary;
    let init = match &o.checkpoint {
        Some(p) => {
            let bytes = std::fs::read(p).with_context(|| format!("reading {}", p.display()))?;
            Checkpoint::decode(&bytes, w.model().param_count())?
        }
        None => Checkpoint::initial(w.model().init_params(spec.params.seed)),
    };
    if init.hash() != spec.init_checkpoint {
        bail!(
            "the initial checkpoint hashes to {}, the job starts from {}",
            hex::encode(init.hash()),
            hex::encode(spec.init_checkpoint)
        );
    }
    w.add_checkpoint(init);
    let mut report = match &o.report {
        Some(p) => Some(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .with_context(|| format!("cannot open the report file {}", p.display()))?,
        ),
        None => None,
    };

    // The blob server, on its own runtime thread for the life of the process.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let listener = rt.block_on(tokio::net::TcpListener::bind(&o.listen))?;
    let local = listener.local_addr()?;
    let uri = o.advertise.clone().unwrap_or_else(|| format!("http://{local}"));
    rt.spawn(blobs::serve(store, listener));

    let mut chain = NodeChain::new(rpc, key)?;
    if o.join && !chain.view(o.job)?.members.iter().any(|(a, _)| *a == w.address) {
        chain.submit(Msg::JoinJob {
            job: o.job,
            blob_uri: uri.clone(),
        })?;
    }
    tracing::info!(job = o.job, worker = %w.address, blobs = %uri, "training worker started");
    let peers = HttpPeers;
    let mut last_round = None;
    loop {
        let fetched = w.accounting.bytes_fetched;
        let result = w.poll(&mut chain, &peers);
        let bytes = w.accounting.bytes_fetched - fetched;
        let line = match &result {
            Ok(step) => {
                let (name, round) = step_name(step);
                last_round = round.or(last_round);
                (*step != Step::Idle || bytes > 0).then(|| StepLine {
                    round: round.or(last_round),
                    step: name.into(),
                    bytes_fetched: bytes,
                })
            }
            Err(_) => Some(StepLine {
                round: last_round,
                step: "failed".into(),
                bytes_fetched: bytes,
            }),
        };
        if let (Some(f), Some(line)) = (report.as_mut(), line) {
            writeln!(f, "{}", serde_json::to_string(&line)?)?;
        }
        match result {
            Ok(Step::Done) => break,
            Ok(Step::Idle) => std::thread::sleep(Duration::from_millis(150)),
            Ok(step) => {
                if let Step::Trained { round, losses } = &step {
                    let last = losses.last().copied().unwrap_or(f32::NAN);
                    tracing::info!(round, loss = last, "trained");
                } else {
                    tracing::info!(?step, "step");
                }
            }
            Err(e) => {
                // A refused or failed step is retried from a fresh read: the ledger has the
                // last word on what is still possible.
                tracing::warn!(error = %e, "step failed; retrying");
                std::thread::sleep(Duration::from_millis(500));
            }
        }
    }
    let a = &w.accounting;
    let summary = WorkerSummary {
        job: o.job,
        worker: w.address,
        train_seconds: a.train_seconds,
        audit_seconds: a.audit_seconds,
        aggregate_seconds: a.aggregate_seconds,
        steps_trained: a.steps_trained,
        steps_replayed: a.steps_replayed,
        bytes_fetched: a.bytes_fetched,
    };
    println!("{}", serde_json::to_string(&summary)?);
    std::io::stdout().flush()?;
    if o.serve_after_s > 0 {
        tracing::info!(
            seconds = o.serve_after_s,
            "the job is over; serving blobs a while longer"
        );
        std::thread::sleep(Duration::from_secs(o.serve_after_s));
    }
    Ok(())
}
