//! A training job's participant: the worker that trains, commits and reveals; the auditor that
//! replays another worker's round; the referee of a dispute; the aggregator that averages the
//! included updates and votes for the next checkpoint. One state machine does all of it: each
//! [`Worker::poll`] reads the job from the ledger and takes the next step its role calls for.
//!
//! It is written against two small traits, [`Chain`] (the ledger: read a job, submit messages)
//! and [`Peers`] (fetch another participant's blob), so the same code runs as a process against
//! a node's RPC and other workers' HTTP servers, and in-process against a ledger in tests and
//! benchmarks. Nothing a peer sends is trusted: every blob is decoded strictly and its hash
//! recomputed before use.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use pazar_types::train::{
    loss_seal, update_commitment, AuditRecord, Compression, JobSpec, JobState, Member, Phase, Reveal, RoundRecord,
    RoundWork, TrainJob, Verdict,
};
use pazar_types::{Address, Msg};

use crate::blobs::{BlobStore, FETCH_TIMEOUT};
use crate::compress::{self, Method, Update};
use crate::data;
use crate::model::{Config, Model};
use crate::ops::Threads;
use crate::optim::{AdamW, Nesterov};
use crate::round::{self, RoundError, RoundOutput, TrainConfig, Work};
use crate::state::{self, ef_hash, BlobError, Checkpoint, Hash32, WorkerState};

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("ledger: {0}")]
    Chain(String),
    #[error("peer: {0}")]
    Peer(String),
    /// A peer did not answer within the time limit (its server hangs, or it is far away): not
    /// asked again for the rest of the round where others can serve the same blob.
    #[error("peer: {0}")]
    Unanswered(String),
    /// No time is left for a fetch before the height it had to end by: nothing was asked, or
    /// what was asked ran out of a time limit too short to blame its server for
    /// (`Worker::least_blamed`): it is asked again while there is time.
    #[error("no time left to fetch before height {0}")]
    NoTime(u64),
    #[error(transparent)]
    Round(#[from] RoundError),
    #[error(transparent)]
    Blob(#[from] BlobError),
    #[error("update blob: {0}")]
    Update(#[from] compress::UpdateError),
    #[error("data: {0}")]
    Data(#[from] data::DataError),
    #[error("job {job}: {reason}")]
    Job { job: u64, reason: String },
}

/// What a participant reads of a job: the job, its members, and the current round's work and
/// audits (each list in address order, as the ledger keeps them).
#[derive(Debug, Clone)]
pub struct JobView {
    pub id: u64,
    pub job: TrainJob,
    pub members: Vec<(Address, Member)>,
    pub works: Vec<(Address, RoundWork)>,
    /// Audits of the current round by target.
    pub audits: Vec<(Address, AuditRecord)>,
    /// The ledger's height when this was read.
    pub height: u64,
    /// The provenance record of the round before the current one, if it produced a checkpoint.
    pub previous: Option<RoundRecord>,
}

/// The ledger, as a participant uses it.
pub trait Chain {
    fn view(&mut self, job: u64) -> Result<JobView, WorkerError>;
    /// Signs and submits `msg` from this participant's key and waits until it is committed;
    /// a refusal is an error carrying the ledger's reason.
    fn submit(&mut self, msg: Msg) -> Result<(), WorkerError>;
    /// The chain's configured time between blocks, if the node says: the pace a participant
    /// assumes until it has seen two heights.
    fn block_time(&self) -> Option<Duration> {
        None
    }
    /// Whether the chain makes its next block only when every participant has taken its step
    /// (an in-process simulation without a pace): time spent working then costs no blocks, so
    /// no work is skipped for lack of time (fetches are still timed, so a hanging peer costs
    /// a bounded wait).
    fn waits_for_participants(&self) -> bool {
        false
    }
}

/// Bytes a fetched blob must pass before it is taken (its hash recomputed, decoded strictly).
pub type Accept<'a> = &'a (dyn Fn(&[u8]) -> bool + Sync);

/// Other participants' blob servers. `Sync`: an aggregator fetches several updates at once.
pub trait Peers: Sync {
    /// The blob `addr` from the participant whose `blob_uri` is `uri`, at most `limit` bytes,
    /// given up after `within` (a peer that never answers costs no more).
    fn fetch(&self, uri: &str, addr: &Hash32, limit: usize, within: Duration) -> Result<Vec<u8>, WorkerError>;

    /// The blob `addr` from whichever of `uris` first serves bytes that `accept` takes, all
    /// asked at once, each within `within`. This default waits for every request to end
    /// (each within `within`); [`HttpPeers`] returns at the first accepted answer.
    fn fetch_first(
        &self,
        uris: &[String],
        addr: &Hash32,
        limit: usize,
        within: Duration,
        accept: Accept<'_>,
    ) -> Result<Vec<u8>, WorkerError> {
        let (tx, rx) = mpsc::channel();
        std::thread::scope(|s| {
            for uri in uris {
                let sender = tx.clone();
                let job = move || {
                    let _ = sender.send(self.fetch(uri, addr, limit, within));
                };
                if let Err(e) = std::thread::Builder::new().spawn_scoped(s, job) {
                    let _ = tx.send(Err(WorkerError::Peer(format!("no thread for a fetch: {e}"))));
                }
            }
            drop(tx);
            first_accepted(&rx, accept)
        })
    }
}

/// The first answer on `rx` that `accept` takes, else the last failure.
fn first_accepted(
    rx: &mpsc::Receiver<Result<Vec<u8>, WorkerError>>,
    accept: Accept<'_>,
) -> Result<Vec<u8>, WorkerError> {
    let mut last = WorkerError::Peer("no source".into());
    for r in rx.iter() {
        match r {
            Ok(b) if accept(&b) => return Ok(b),
            Ok(_) => last = WorkerError::Peer("a source served a blob with another hash".into()),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// [`Peers::fetch_first`] on detached threads: returns at the first accepted answer, the other
/// requests running out their own time limit (`within` at most) in the background. `fetch`
/// must own what it uses.
pub fn fetch_first_detached<F>(uris: &[String], accept: Accept<'_>, fetch: F) -> Result<Vec<u8>, WorkerError>
where
    F: Fn(&str) -> Result<Vec<u8>, WorkerError> + Clone + Send + 'static,
{
    let (tx, rx) = mpsc::channel();
    for uri in uris {
        let (sender, uri, fetch) = (tx.clone(), uri.clone(), fetch.clone());
        let job = move || {
            let _ = sender.send(fetch(&uri));
        };
        if let Err(e) = std::thread::Builder::new().name("blob-fetch".into()).spawn(job) {
            let _ = tx.send(Err(WorkerError::Peer(format!("no thread for a fetch: {e}"))));
        }
    }
    drop(tx);
    first_accepted(&rx, accept)
}

/// HTTP peers ([`crate::blobs::fetch`]).
pub struct HttpPeers;

impl Peers for HttpPeers {
    fn fetch(&self, uri: &str, addr: &Hash32, limit: usize, within: Duration) -> Result<Vec<u8>, WorkerError> {
        crate::blobs::fetch(uri, addr, limit, within).map_err(|e| match e {
            crate::blobs::FetchError::Timeout { .. } => WorkerError::Unanswered(e.to_string()),
            e => WorkerError::Peer(e.to_string()),
        })
    }

    fn fetch_first(
        &self,
        uris: &[String],
        addr: &Hash32,
        limit: usize,
        within: Duration,
        accept: Accept<'_>,
    ) -> Result<Vec<u8>, WorkerError> {
        let addr = *addr;
        fetch_first_detached(uris, accept, move |uri| HttpPeers.fetch(uri, &addr, limit, within))
    }
}

/// The shortest time limit a fetch is given when the estimate leaves less before a height it
/// should end by but more before the height it must end by (the estimate may be wrong, and a
/// blob served at once takes far less). Never past the height it must end by.
const MIN_FETCH_TIME: Duration = Duration::from_secs(1);

/// Whether a fetch that ran out of `limit` shows that its server does not answer: only when
/// the limit was at least `least` (one cut short by the time left shows nothing, and the
/// server is asked again).
fn unanswered_within(limit: Duration, least: Duration) -> bool {
    limit >= least
}
/// Time kept after a fetch and the work on what it fetched for signing and sending the message
/// (the message still has to reach the node before the block that must hold it is proposed).
const SUBMIT_MARGIN: Duration = Duration::from_millis(300);
/// Seconds per block assumed before two heights were seen (a node's default block time), and
/// the bounds of the estimate.
const DEFAULT_BLOCK_SECONDS: f64 = 1.0;
const MIN_BLOCK_SECONDS: f64 = 0.05;
const MAX_BLOCK_SECONDS: f64 = 30.0;
/// How many height changes the estimate spans.
const CLOCK_WINDOW: usize = 16;

/// The chain's pace as one participant sees it: each height with the moment a poll first saw
/// it, for the last [`CLOCK_WINDOW`] heights.
#[derive(Debug, Default)]
struct BlockClock {
    seen: VecDeque<(u64, Instant)>,
    /// The node's configured block time: assumed before two heights were seen, and the least
    /// the estimate may be (a node proposes a block every block time, never faster).
    seed: Option<f64>,
    /// The chain waits for its participants ([`Chain::waits_for_participants`]): no deadline
    /// by time.
    waits: bool,
}

impl BlockClock {
    fn observe(&mut self, height: u64, now: Instant) {
        if self.seen.back().is_some_and(|(h, _)| *h >= height) {
            return;
        }
        self.seen.push_back((height, now));
        while self.seen.len() > CLOCK_WINDOW {
            self.seen.pop_front();
        }
    }

    /// Assumes `block_time` (the node's setting) until two heights were seen, and never less.
    fn seed(&mut self, block_time: Duration) {
        let s = block_time.as_secs_f64();
        if s > 0.0 && s.is_finite() {
            self.seed = Some(s);
        }
    }

    /// Seconds per block over the window, bounded both ways, and at least the node's block
    /// time when it is known (that, else [`DEFAULT_BLOCK_SECONDS`], before two heights were
    /// seen).
    fn seconds_per_block(&self) -> f64 {
        let assumed = self
            .seed
            .unwrap_or(DEFAULT_BLOCK_SECONDS)
            .clamp(MIN_BLOCK_SECONDS, MAX_BLOCK_SECONDS);
        let (Some((h0, t0)), Some((h1, t1))) = (self.seen.front(), self.seen.back()) else {
            return assumed;
        };
        if h1 <= h0 {
            return assumed;
        }
        let s = t1.duration_since(*t0).as_secs_f64() / (h1 - h0) as f64;
        let floor = self
            .seed
            .unwrap_or(MIN_BLOCK_SECONDS)
            .clamp(MIN_BLOCK_SECONDS, MAX_BLOCK_SECONDS);
        s.clamp(floor, MAX_BLOCK_SECONDS)
    }

    /// The time left now before height `until` is reached, by the estimate: the blocks still
    /// to come before it, less the time since the current height was first seen; zero once it
    /// is reached, at most [`FETCH_TIMEOUT`].
    fn time_until(&self, height: u64, until: u64, now: Instant) -> Duration {
        let since = match self.seen.back() {
            Some((h, t)) if *h == height => now.duration_since(*t).as_secs_f64(),
            _ => 0.0,
        };
        let left = until.saturating_sub(height) as f64 * self.seconds_per_block() - since;
        Duration::from_secs_f64(left.clamp(0.0, FETCH_TIMEOUT.as_secs_f64()))
    }

    /// The time limit of a fetch that should end before height `soft` (a failure is asked
    /// again at the next poll) and must end `reserve` before height `hard` (the work on what
    /// it fetched and the message it leads to still have to land by then): the time before
    /// `soft`, at least [`MIN_FETCH_TIME`], but never past `hard` less `reserve`. Zero when
    /// nothing is left: the caller skips the fetch.
    fn fetch_time(&self, height: u64, soft: u64, hard: u64, reserve: Duration, now: Instant) -> Duration {
        let must = if self.waits {
            FETCH_TIMEOUT
        } else {
            self.time_until(height, hard, now).saturating_sub(reserve)
        };
        let should = self.time_until(height, soft.min(hard), now);
        should.max(MIN_FETCH_TIME).min(must)
    }
}

/// A way of cheating, for the adversary tests (`pazar train worker --adversary KIND`). Each
/// must be caught by the protocol; an honest worker is never slashed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Adversary {
    /// Skips every inner step and claims the untrained state as its trajectory.
    Lazy,
    /// Trains honestly, then sends random noise of the update's size as its update.
    Noise,
    /// Trains honestly, then sends the negated pseudo-gradient.
    SignFlip,
    /// Re-submits another worker's update from the last round's checkpoint.
    Copier,
    /// Trains from the checkpoint before the current one.
    Stale,
    /// Commits and never reveals.
    Withhold,
    /// Trains, then stops for good before committing (a crash mid-round).
    Crash,
    /// Trains on shards the beacon did not assign it.
    WrongShards,
    /// An honest pseudo-gradient with each entry scaled by `1 ± R` (signs pseudo-random).
    Perturb(f32),
    /// Trains honestly but, as an auditor, fails every worker it audits with made-up hashes
    /// (of its round's last training segment).
    FalseAuditor,
    /// Trains honestly but, as an auditor, passes every worker it audits without replaying
    /// (to be paid for audits it never ran), with a made-up loss digest.
    LazyAuditor,
    /// Trains honestly but reveals a loss seal that no replay opens (so that no auditor can
    /// pass it and be paid for the work).
    BadSeal,
    /// Trains and reveals honestly but never serves its update, so that nobody can aggregate
    /// it (to stall the round: no checkpoint, nobody paid).
    HideUpdate,
    /// Trains and reveals honestly but serves its update to the first aggregator that asks
    /// and to nobody else, to split the honest votes between the checkpoint with it and the
    /// one without (no majority: no checkpoint, nobody paid).
    SelectiveServe,
    /// Trains and reveals honestly and serves its update, but never its trace nor its residual
    /// (the tests make its server hang on them), so that its auditor cannot replay it: to
    /// dodge the audit (a cheat's update would be included and paid if the auditor's verdict
    /// came too late).
    DodgeAudit,
}

impl std::str::FromStr for Adversary {
    type Err = String;

    fn from_str(s: &str) -> Result<Adversary, String> {
        Ok(match s {
            "lazy" => Adversary::Lazy,
            "noise" => Adversary::Noise,
            "sign-flip" => Adversary::SignFlip,
            "copier" => Adversary::Copier,
            "stale" => Adversary::Stale,
            "withhold" | "late" => Adversary::Withhold,
            "crash" => Adversary::Crash,
            "wrong-shards" => Adversary::WrongShards,
            "false-auditor" => Adversary::FalseAuditor,
            "lazy-auditor" => Adversary::LazyAuditor,
            "bad-seal" => Adversary::BadSeal,
            "hide-update" => Adversary::HideUpdate,
            "selective-serve" => Adversary::SelectiveServe,
            "dodge-audit" => Adversary::DodgeAudit,
            other => match other.strip_prefix("perturb:") {
                Some(r) => match r.parse::<f32>() {
                    Ok(r) if r.is_finite() && r > 0.0 && r < 1.0 => Adversary::Perturb(r),
                    _ => return Err(format!("perturb:R needs 0 < R < 1, got {r:?}")),
                },
                None => {
                    return Err(format!(
                        "unknown adversary {other:?}: lazy, noise, sign-flip, copier, stale, withhold, crash, \
                         wrong-shards, false-auditor, lazy-auditor, bad-seal, hide-update, selective-serve, dodge-audit \
                         or perturb:R"
                    ))
                }
            },
        })
    }
}

/// The job's settings as this code runs them. The ledger's integers become `f32` by one
/// division each (correctly rounded, so every participant gets the same bits).
pub fn train_config(spec: &JobSpec, train_chunks: u32) -> Result<TrainConfig, RoundError> {
    let m = &spec.model;
    let p = &spec.params;
    let per_worker = (train_chunks / u32::from(spec.max_workers.max(1))).clamp(1, 64.min(train_chunks.max(1)));
    let cfg = TrainConfig {
        model: Config {
            vocab: m.vocab as usize,
            dim: m.dim as usize,
            layers: usize::from(m.layers),
            heads: usize::from(m.heads),
            ffn: m.ffn_dim as usize,
            seq_len: m.seq_len as usize,
        },
        batch: p.batch,
        inner_steps: p.inner_steps,
        segment_steps: p.segment_steps,
        adam: AdamW::new(p.inner_lr_micro as f32 / 1e6, p.weight_decay_micro as f32 / 1e6),
        outer: Nesterov {
            lr: p.outer_lr_milli as f32 / 1e3,
            momentum: p.outer_momentum_milli as f32 / 1e3,
        },
        method: match p.compression {
            Compression::Int8 => Method::Int8,
            Compression::TopK { per_mille } => Method::TopK { per_mille },
            Compression::TopKInt8 { per_mille } => Method::TopKInt8 { per_mille },
        },
        shard_chunks: per_worker,
    };
    cfg.validate()?;
    Ok(cfg)
}

/// What one poll did, for the caller's log and the benchmark's accounting.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Nothing to do until the ledger moves.
    Idle,
    /// Trained round `round`; `losses` per inner step.
    Trained {
        round: u32,
        losses: Vec<f32>,
    },
    Committed {
        round: u32,
    },
    Revealed {
        round: u32,
    },
    Audited {
        round: u32,
        target: Address,
        pass: bool,
    },
    Disputed {
        round: u32,
    },
    Refereed {
        round: u32,
        target: Address,
    },
    Voted {
        round: u32,
        checkpoint: Hash32,
    },
    /// The job is over (finished or cancelled), or this participant stopped (a crash).
    Done,
}

/// Counters for the benchmark: bytes fetched from peers and time spent by kind of work.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Accounting {
    /// Time spent inside [`Worker::poll`]: everything this participant did, idle reads included.
    pub busy_seconds: f64,
    pub bytes_fetched: u64,
    pub train_seconds: f64,
    pub audit_seconds: f64,
    pub aggregate_seconds: f64,
    pub steps_trained: u64,
    pub steps_replayed: u64,
}

/// A round this worker trained, kept until the round settles (auditors and referees fetch
/// from it).
struct Trained {
    round: u32,
    checkpoint: Hash32,
    out: RoundOutput,
    /// What it commits to (differs from `out` for an adversary).
    reveal: Reveal,
}

pub struct Worker {
    pub address: Address,
    job: u64,
    model: Model,
    cfg: TrainConfig,
    /// The dataset's chunks (all of them, in dataset order) and how many are for training.
    chunks: Vec<Vec<u8>>,
    train_chunks: u32,
    /// Checkpoints known by hash (the initial one, and each aggregate computed or fetched).
    checkpoints: BTreeMap<Hash32, Checkpoint>,
    /// The checkpoint before the current one (the stale adversary trains from it).
    previous_checkpoint: Option<Hash32>,
    /// The residual the ledger has for this worker (its `ef_out`), and candidates by hash.
    ef: Vec<f32>,
    ef_candidates: BTreeMap<Hash32, Vec<f32>>,
    trained: Option<Trained>,
    /// Updates fetched for the aggregate of the current round, by hash (kept across polls, so
    /// a retry fetches only what is still missing).
    fetched: BTreeMap<(Address, Hash32), Update>,
    blobs: Arc<BlobStore>,
    pub adversary: Option<Adversary>,
    pub accounting: Accounting,
    crashed: bool,
    /// The chain's pace, from the heights seen by polls (fetches are timed by it).
    clock: BlockClock,
    /// The round the sets below are about (they are emptied when it changes).
    duty_round: Option<u32>,
    /// Audit targets that failed to serve what they committed to this round: at the audit's
    /// last poll they are reported unavailable at once, not asked again.
    unserved: BTreeSet<Address>,
    /// Blob servers that did not answer within a time limit this round: not asked again for
    /// another member's update (the owner of an update is always asked).
    unanswered: Arc<Mutex<BTreeSet<String>>>,
    /// How long replaying one segment took here last (trained, audited or refereed): what a
    /// replay's deadline keeps free after fetching.
    segment_time: Duration,
    /// How long the last aggregate took here, fetches excluded.
    aggregate_time: Duration,
}

/// Largest blob a peer may send: a state blob of this model plus headers.
fn blob_limit(n: usize) -> usize {
    16 * n + 64
}

/// Bytes of the LEB128 varint of `x`.
fn varint_len(x: u32) -> usize {
    (32 - x.leading_zeros() as usize).div_ceil(7).max(1)
}

/// The largest blob an update of `n` entries compressed by `method` can be (its canonical
/// encoding, [`Update::encode`]): the header, then for int8 a scale per block of
/// [`compress::BLOCK`] and a byte per entry; for top-k the kept entries' index gaps (each less
/// than `n`) and their values (4 bytes each, or int8 with a scale per block). Between about
/// `n` and `9n` bytes, against the 16 bytes a parameter of a state blob.
pub fn update_limit(method: Method, n: usize) -> usize {
    let n32 = u32::try_from(n).unwrap_or(u32::MAX);
    let quantised = |k: usize| 4 * k.div_ceil(compress::BLOCK) + k;
    let k = method.kept(n32).unwrap_or(n32) as usize;
    let gaps = k * varint_len(n32.saturating_sub(1));
    compress::HEADER_BYTES
        + match method {
            Method::Int8 => quantised(n),
            Method::TopK { .. } => gaps + 4 * k,
            Method::TopKInt8 { .. } => gaps + quantised(k),
        }
}

impl Worker {
    /// A participant of `job` with `spec`, holding the dataset's `chunks` (checked against the
    /// job's dataset root) and serving blobs from `blobs`.
    pub fn new(
        address: Address,
        job: u64,
        spec: &JobSpec,
        chunks: Vec<Vec<u8>>,
        blobs: Arc<BlobStore>,
        threads: Threads,
    ) -> Result<Worker, WorkerError> {
        let corpus_root = data::Dataset::from_corpus(&chunks.concat())?.root();
        if corpus_root != spec.dataset {
            return Err(WorkerError::Job {
                job,
                reason: format!(
                    "the chunks given have Merkle root {}, the job trains on {}",
                    data::hex(&corpus_root),
                    data::hex(&spec.dataset)
                ),
            });
        }
        let count = u32::try_from(chunks.len()).map_err(|_| WorkerError::Job {
            job,
            reason: "too many chunks".into(),
        })?;
        let train_chunks = count - data::eval_count(count);
        let cfg = train_config(spec, train_chunks)?;
        let model = Model::new(cfg.model, threads).map_err(RoundError::from)?;
        let n = model.param_count();
        Ok(Worker {
            address,
            job,
            model,
            cfg,
            chunks,
            train_chunks,
            checkpoints: BTreeMap::new(),
            previous_checkpoint: None,
            ef: vec![0.0; n],
            ef_candidates: BTreeMap::new(),
            trained: None,
            fetched: BTreeMap::new(),
            blobs,
            adversary: None,
            accounting: Accounting::default(),
            crashed: false,
            clock: BlockClock::default(),
            duty_round: None,
            unserved: BTreeSet::new(),
            unanswered: Arc::new(Mutex::new(BTreeSet::new())),
            segment_time: Duration::ZERO,
            aggregate_time: Duration::ZERO,
        })
    }

    pub fn model(&self) -> &Model {
        &self.model
    }

    pub fn config(&self) -> &TrainConfig {
        &self.cfg
    }

    /// Makes a checkpoint known (and served): the initial one, given by the job's owner.
    pub fn add_checkpoint(&mut self, c: Checkpoint) -> Hash32 {
        let h = c.hash();
        self.blobs.put(h, c.encode());
        self.checkpoints.insert(h, c);
        h
    }

    pub fn checkpoint(&self, hash: &Hash32) -> Option<&Checkpoint> {
        self.checkpoints.get(hash)
    }

    /// The held-out chunks, for evaluation.
    pub fn eval_chunks(&self) -> Vec<&[u8]> {
        self.chunks[self.train_chunks as usize..]
            .iter()
            .map(Vec::as_slice)
            .collect()
    }

    fn n(&self) -> usize {
        self.model.param_count()
    }

    /// The shards and batch seed of `worker` in `round` from `checkpoint`.
    fn work(&self, round: u32, checkpoint: &Hash32, worker: &Address) -> Result<Work<'_>, WorkerError> {
        let seed = round::round_seed(self.job, round, checkpoint);
        let who = worker_bytes(worker);
        let shards = data::assign_shards(&seed, &who, self.train_chunks, self.cfg.shard_chunks)?;
        Ok(Work {
            chunks: shards.iter().map(|&i| self.chunks[i as usize].as_slice()).collect(),
            seed: round::batch_seed(&seed, &who),
        })
    }

    /// The checkpoint `hash`, fetched from a member if this worker does not have it.
    fn ensure_checkpoint(&mut self, v: &JobView, peers: &dyn Peers, hash: &Hash32) -> Result<(), WorkerError> {
        if self.checkpoints.contains_key(hash) {
            return Ok(());
        }
        let n = self.n();
        // Needed to train this round: worth waiting for until the commit phase ends.
        let until = match v.job.phase {
            Phase::Train => v.job.deadline.saturating_add(u64::from(v.job.spec.phases.commit)),
            _ => v.job.deadline,
        };
        // Asked of the members a few at once, in an order of its own (one whose server hangs
        // is not first for everyone), pass after pass until the time is up.
        let within = self.fetch_limit(v, until, until, Duration::ZERO);
        if within.is_zero() {
            return Err(WorkerError::NoTime(until));
        }
        let sources = Sources::new(v, &self.address, self.unanswered.clone());
        let uris: Vec<&str> = sources.ordered.iter().map(|(_, u)| u.as_str()).collect();
        let mut got = 0u64;
        let r = staggered(
            peers,
            &uris,
            hash,
            8 * n + 64,
            within,
            &sources.unanswered,
            |uri, bytes| {
                got += bytes.len() as u64;
                match Checkpoint::decode(&bytes, n) {
                    Ok(c) if c.hash() == *hash => Ok(c),
                    Ok(_) => Err(WorkerError::Peer(format!(
                        "{uri} served a checkpoint with another hash"
                    ))),
                    Err(e) => Err(WorkerError::Peer(format!("{uri}: {e}"))),
                }
            },
        );
        self.accounting.bytes_fetched += got;
        match r {
            Ok(c) => {
                self.add_checkpoint(c);
                Ok(())
            }
            Err(e) => Err(WorkerError::Peer(format!("checkpoint {}: {e}", data::hex(hash)))),
        }
    }

    /// Takes the next step the job calls for. Call it again after each step (and every block
    /// or so while it returns [`Step::Idle`]).
    pub fn poll(&mut self, chain: &mut dyn Chain, peers: &dyn Peers) -> Result<Step, WorkerError> {
        let t0 = std::time::Instant::now();
        let step = self.step(chain, peers);
        self.accounting.busy_seconds += t0.elapsed().as_secs_f64();
        step
    }

    fn step(&mut self, chain: &mut dyn Chain, peers: &dyn Peers) -> Result<Step, WorkerError> {
        if self.crashed {
            return Ok(Step::Done);
        }
        let v = chain.view(self.job)?;
        if let Some(t) = chain.block_time() {
            self.clock.seed(t);
        }
        self.clock.waits = chain.waits_for_participants();
        self.clock.observe(v.height, Instant::now());
        if self.duty_round != Some(v.job.round) {
            self.duty_round = Some(v.job.round);
            self.unserved.clear();
            self.unanswered.lock().unwrap_or_else(|e| e.into_inner()).clear();
        }
        match v.job.state {
            JobState::Finished | JobState::Cancelled => return Ok(Step::Done),
            JobState::Recruiting => return Ok(Step::Idle),
            JobState::Running => {}
        }
        self.follow_residual(&v);
        let r = v.job.round;
        let mine = v.works.iter().find(|(a, _)| *a == self.address).map(|(_, w)| w.clone());
        match v.job.phase {
            Phase::Train | Phase::Commit => {
                let Some(work) = mine else { return Ok(Step::Idle) };
                if work.commitment.is_some() {
                    return Ok(Step::Idle);
                }
                let fresh = self
                    .trained
                    .as_ref()
                    .is_some_and(|t| t.round == r && t.checkpoint == v.job.checkpoint);
                if !fresh {
                    // The ledger will refuse a reveal whose ef_in is not the residual it holds
                    // for this worker: without it (lost in a restart) committing would only
                    // cost the bond. Sit the round out instead (a miss, no slash).
                    let expected = v
                        .members
                        .iter()
                        .find(|(a, _)| *a == self.address)
                        .map(|(_, m)| m.ef_out);
                    if expected.is_some_and(|e| e != ef_hash(&self.ef)) {
                        return Err(WorkerError::Job {
                            job: self.job,
                            reason: "the ledger holds a residual this worker does not have (lost in a restart?): \
                                     sitting the round out"
                                .into(),
                        });
                    }
                    let losses = self.train(&v, peers)?;
                    if self.adversary == Some(Adversary::Crash) && r >= 1 {
                        self.crashed = true;
                        return Ok(Step::Done);
                    }
                    return Ok(Step::Trained { round: r, losses });
                }
                let t = self
                    .trained
                    .as_ref()
                    .ok_or_else(|| WorkerError::Chain("no trained round".into()))?;
                let commitment = update_commitment(self.job, r, &self.address, &t.reveal);
                chain.submit(Msg::CommitUpdate {
                    job: self.job,
                    round: r,
                    commitment,
                })?;
                Ok(Step::Committed { round: r })
            }
            Phase::Reveal => {
                let Some(work) = mine else { return Ok(Step::Idle) };
                if work.commitment.is_none() || work.reveal.is_some() || self.adversary == Some(Adversary::Withhold) {
                    return Ok(Step::Idle);
                }
                let Some(t) = self.trained.as_ref().filter(|t| t.round == r) else {
                    return Ok(Step::Idle);
                };
                chain.submit(Msg::RevealUpdate {
                    job: self.job,
                    round: r,
                    update: t.reveal.update,
                    trace: t.reveal.trace,
                    ef_in: t.reveal.ef_in,
                    ef_out: t.reveal.ef_out,
                    seal: t.reveal.seal,
                })?;
                Ok(Step::Revealed { round: r })
            }
            Phase::Audit => self.audit_duties(&v, chain, peers),
            Phase::Aggregate => {
                let Some(work) = mine else { return Ok(Step::Idle) };
                if work.reveal.is_none() || work.excluded || work.vote.is_some() {
                    return Ok(Step::Idle);
                }
                let (checkpoint, left_out) = self.aggregate(&v, peers)?;
                chain.submit(Msg::PostCheckpoint {
                    job: self.job,
                    round: r,
                    checkpoint,
                    left_out,
                })?;
                Ok(Step::Voted { round: r, checkpoint })
            }
        }
    }

    /// Adopts the residual the ledger now names for this worker (its last included round's).
    fn follow_residual(&mut self, v: &JobView) {
        let Some((_, m)) = v.members.iter().find(|(a, _)| *a == self.address) else {
            return;
        };
        if ef_hash(&self.ef) == m.ef_out {
            return;
        }
        if let Some(ef) = self.ef_candidates.get(&m.ef_out) {
            self.ef = ef.clone();
            self.ef_candidates.clear();
        }
    }

    /// Trains the current round and prepares every blob others may ask for.
    fn train(&mut self, v: &JobView, peers: &dyn Peers) -> Result<Vec<f32>, WorkerError> {
        let r = v.job.round;
        let current = v.job.checkpoint;
        self.ensure_checkpoint(v, peers, &current)?;
        if let Some(prev) = v.previous.as_ref().map(|p| p.previous) {
            self.previous_checkpoint = Some(prev);
        }
        let adversary = self.adversary;
        let start_hash = match adversary {
            Some(Adversary::Stale) => self
                .previous_checkpoint
                .filter(|h| self.checkpoints.contains_key(h))
                .unwrap_or(current),
            _ => current,
        };
        let ckpt = self
            .checkpoints
            .get(&start_hash)
            .cloned()
            .ok_or_else(|| WorkerError::Job {
                job: self.job,
                reason: "checkpoint vanished".into(),
            })?;
        let t0 = std::time::Instant::now();
        let work = match adversary {
            Some(Adversary::WrongShards) => self.work(r.wrapping_add(1000), &current, &self.address)?,
            _ => self.work(r, &current, &self.address)?,
        };
        let mut out = match adversary {
            Some(Adversary::Lazy) => lazy_round(&self.cfg, &ckpt, self.ef.clone())?,
            _ => round::run_round(&self.model, &self.cfg, &ckpt, self.ef.clone(), &work)?,
        };
        drop(work);
        self.accounting.train_seconds += t0.elapsed().as_secs_f64();
        self.segment_time = t0.elapsed() / self.cfg.segments().max(1);
        self.accounting.steps_trained += u64::from(self.cfg.inner_steps);
        let n = self.n();
        match adversary {
            Some(Adversary::Noise) => {
                let scale = out.update.decompress().iter().fold(0.0f32, |m, x| m.max(x.abs()));
                let noise = pseudo_noise(&out.update_hash, n, scale);
                let (u, _) = compress::compress(self.cfg.method, &noise, &vec![0.0; n]).map_err(RoundError::from)?;
                replace_update(&mut out, u);
            }
            Some(Adversary::SignFlip) => {
                let delta: Vec<f32> = out.update.decompress().iter().map(|x| -x).collect();
                let (u, _) = compress::compress(self.cfg.method, &delta, &vec![0.0; n]).map_err(RoundError::from)?;
                replace_update(&mut out, u);
            }
            Some(Adversary::Perturb(r)) => {
                let end = out
                    .boundaries
                    .last()
                    .cloned()
                    .ok_or_else(|| WorkerError::Chain("empty round".into()))?;
                let signs = pseudo_noise(&out.update_hash, n, 1.0);
                let delta: Vec<f32> = ckpt
                    .params
                    .iter()
                    .zip(&end.params)
                    .zip(&signs)
                    .map(|((a, b), s)| (a - b) * (1.0 + r * s.signum()))
                    .collect();
                let (u, ef) = compress::compress(self.cfg.method, &delta, &end.ef).map_err(RoundError::from)?;
                replace_update(&mut out, u);
                out.ef_out_hash = ef_hash(&ef);
                out.ef_out = ef;
            }
            Some(Adversary::Copier) => {
                if let Some(victim) = v
                    .previous
                    .as_ref()
                    .and_then(|p| p.included.iter().find(|i| i.worker != self.address))
                {
                    let uri = v
                        .members
                        .iter()
                        .find(|(a, _)| *a == victim.worker)
                        .map(|(_, m)| m.blob_uri.clone());
                    if let Some(uri) = uri {
                        let limit = update_limit(self.cfg.method, n);
                        if let Ok(bytes) = peers.fetch(&uri, &victim.update, limit, FETCH_TIMEOUT) {
                            if let Ok(u) = Update::decode(&bytes, n as u32, limit) {
                                replace_update(&mut out, u);
                            }
                        }
                    }
                }
            }
            _ => {}
        }
        // Serve what auditors, referees and aggregators will ask for. The updates re-served in
        // the last round's aggregate are needed no more.
        self.fetched.clear();
        self.blobs.clear_relayed();
        match adversary {
            Some(Adversary::HideUpdate) => {}
            Some(Adversary::SelectiveServe) => self.blobs.put_once(out.update_hash, out.update_bytes.clone()),
            _ => self.blobs.put(out.update_hash, out.update_bytes.clone()),
        }
        if adversary != Some(Adversary::DodgeAudit) {
            self.blobs.put(out.trace_root, state::encode_trace(&out.trace));
            if out.ef_in != [0; 32] {
                self.blobs.put(out.ef_in, state::encode_ef(&self.ef));
            }
        }
        // Boundary states (16 bytes a parameter each) are served only to a dispute's referees:
        // they are encoded when this worker's audit fails, not every round.
        self.ef_candidates.insert(out.ef_out_hash, out.ef_out.clone());
        let losses = out.losses.clone();
        self.trained = Some(Trained {
            round: r,
            checkpoint: current,
            reveal: Reveal {
                update: out.update_hash,
                trace: out.trace_root,
                ef_in: out.ef_in,
                ef_out: out.ef_out_hash,
                seal: match adversary {
                    Some(Adversary::BadSeal) => loss_seal(self.job, r, &self.address, &round::loss_digest(&[f32::NAN])),
                    _ => loss_seal(self.job, r, &self.address, &out.loss_digest),
                },
            },
            out,
        });
        Ok(losses)
    }

    /// Audits assigned to this participant, disputes of its own audits, and referee answers.
    fn audit_duties(&mut self, v: &JobView, chain: &mut dyn Chain, peers: &dyn Peers) -> Result<Step, WorkerError> {
        let r = v.job.round;
        // Most urgent first, and one duty's failure (a peer that does not answer) never holds
        // up another: disputing a failed audit of its own (a short window), answering as a
        // referee, then its audits.
        let mut first_err = None;
        for (target, a) in &v.audits {
            if *target != self.address || a.dispute.is_some() {
                continue;
            }
            if let Some(Verdict::Fail { segment, steps, .. }) = &a.verdict {
                self.serve_boundaries();
                match self.own_steps(*segment) {
                    Ok(mine) if mine.len() == steps.len() && mine != *steps => {
                        chain.submit(Msg::DisputeAudit {
                            job: self.job,
                            round: r,
                            steps: mine,
                        })?;
                        return Ok(Step::Disputed { round: r });
                    }
                    Ok(_) => {}
                    Err(e) => first_err = first_err.or(Some(e)),
                }
            }
        }
        for (target, a) in &v.audits {
            if let (Some(d), Some(Verdict::Fail { segment, .. })) = (&a.dispute, &a.verdict) {
                let asked = d.referees.contains(&self.address);
                let answered = d.answers.iter().any(|x| x.referee == self.address);
                if asked && !answered {
                    // The ledger takes answers up to height opened_at + dispute: fetches end a
                    // block before, less the replay, so the answer lands in time.
                    let until = d
                        .opened_at
                        .saturating_add(u64::from(v.job.spec.phases.dispute))
                        .saturating_sub(1);
                    match self.referee(v, peers, target, &a.auditor, *segment, d.index, until) {
                        Ok(hash) => {
                            chain.submit(Msg::PostReferee {
                                job: self.job,
                                round: r,
                                target: *target,
                                hash,
                            })?;
                            return Ok(Step::Refereed {
                                round: r,
                                target: *target,
                            });
                        }
                        Err(e) => first_err = first_err.or(Some(e)),
                    }
                }
            }
        }
        // Every audit it can finish now, in one poll: an auditor drawn for several targets
        // would otherwise reach the last ones a block each later, past their time.
        let mut done = None;
        for (target, a) in &v.audits {
            if a.auditor == self.address && a.verdict.is_none() {
                match self.audit(v, peers, target) {
                    Ok(verdict) => {
                        let pass = matches!(verdict, Verdict::Pass { .. });
                        chain.submit(Msg::PostAudit {
                            job: self.job,
                            round: r,
                            target: *target,
                            verdict,
                        })?;
                        done = done.or(Some(Step::Audited {
                            round: r,
                            target: *target,
                            pass,
                        }));
                    }
                    Err(e) => first_err = first_err.or(Some(e)),
                }
            }
        }
        match (done, first_err) {
            (Some(step), _) => Ok(step),
            (None, Some(e)) => Err(e),
            (None, None) => Ok(Step::Idle),
        }
    }

    fn unknown_checkpoint(&self) -> WorkerError {
        WorkerError::Job {
            job: self.job,
            reason: "the round's checkpoint is unknown here".into(),
        }
    }

    /// Puts the trained round's boundary states in the blob store (for referees).
    fn serve_boundaries(&self) {
        if let Some(t) = &self.trained {
            for (b, h) in t.out.boundaries.iter().zip(&t.out.trace) {
                if !self.blobs.contains(h) {
                    self.blobs.put(*h, b.encode());
                }
            }
        }
    }

    /// This worker's own state hashes for a segment of its trained round (what it disputes with).
    fn own_steps(&self, segment: u32) -> Result<Vec<Hash32>, WorkerError> {
        let t = self
            .trained
            .as_ref()
            .ok_or_else(|| WorkerError::Chain("no trained round to dispute".into()))?;
        if segment >= self.cfg.segments() {
            return Ok(vec![t.reveal.update, t.reveal.ef_out]);
        }
        let work = self.work(t.round, &t.checkpoint, &self.address)?;
        Ok(round::replay_segment(
            &self.model,
            &self.cfg,
            &t.out.boundaries[segment as usize],
            &work,
            segment,
        )?)
    }

    /// The canonical start of a worker's round: the checkpoint and the residual it revealed
    /// (fetched from whichever of `sources` first serves it, all asked at once, timed to end
    /// `reserve` before height `until`).
    fn start_state_from(
        &mut self,
        v: &JobView,
        peers: &dyn Peers,
        sources: &[Address],
        ef_in: &Hash32,
        until: u64,
        reserve: Duration,
    ) -> Result<WorkerState, WorkerError> {
        let n = self.n();
        let ckpt = self
            .checkpoints
            .get(&v.job.checkpoint)
            .cloned()
            .ok_or_else(|| self.unknown_checkpoint())?;
        let ef = if *ef_in == [0; 32] {
            vec![0.0; n]
        } else {
            let accept = |b: &[u8]| state::decode_ef(b, n).is_ok_and(|ef| ef_hash(&ef) == *ef_in);
            let bytes = self.fetch_any(v, peers, sources, ef_in, 4 * n + 64, until, reserve, &accept)?;
            let ef = state::decode_ef(&bytes, n)?;
            if ef_hash(&ef) != *ef_in {
                return Err(WorkerError::Peer("a residual with another hash".into()));
            }
            ef
        };
        Ok(WorkerState::start(ckpt.params, ef))
    }

    /// `addr` from whichever of `sources` first serves bytes that `accept` takes, all asked at
    /// once (a source that hangs costs the others nothing), the fetch timed to end `reserve`
    /// before height `until`; this worker's own store first if it is one of them.
    #[allow(clippy::too_many_arguments)]
    fn fetch_any(
        &mut self,
        v: &JobView,
        peers: &dyn Peers,
        sources: &[Address],
        addr: &Hash32,
        limit: usize,
        until: u64,
        reserve: Duration,
        accept: Accept<'_>,
    ) -> Result<Vec<u8>, WorkerError> {
        if sources.contains(&self.address) {
            if let Some(b) = self.blobs.get(addr).filter(|b| accept(b)) {
                return Ok(b.to_vec());
            }
        }
        let uris: Vec<String> = sources
            .iter()
            .filter(|a| **a != self.address)
            .filter_map(|who| {
                v.members
                    .iter()
                    .find(|(a, _)| a == who)
                    .map(|(_, m)| m.blob_uri.clone())
            })
            .collect();
        if uris.is_empty() {
            return Err(WorkerError::Peer("no source is a member".into()));
        }
        let within = self.fetch_limit(v, until, until, reserve);
        if within.is_zero() {
            return Err(WorkerError::NoTime(until));
        }
        let bytes = match peers.fetch_first(&uris, addr, limit, within, accept) {
            Err(WorkerError::Unanswered(_)) if !unanswered_within(within, self.least_blamed()) => {
                return Err(WorkerError::NoTime(until))
            }
            r => r?,
        };
        self.accounting.bytes_fetched += bytes.len() as u64;
        Ok(bytes)
    }

    /// `addr` from `who` (this worker's own store if it is `who`), within the time the chain's
    /// pace leaves before height `until` less `reserve` ([`BlockClock::fetch_time`]); nothing
    /// is asked when none is left.
    #[allow(clippy::too_many_arguments)]
    fn fetch_from(
        &mut self,
        v: &JobView,
        peers: &dyn Peers,
        who: &Address,
        addr: &Hash32,
        limit: usize,
        until: u64,
        reserve: Duration,
    ) -> Result<Vec<u8>, WorkerError> {
        if *who == self.address {
            if let Some(b) = self.blobs.get(addr) {
                return Ok(b.to_vec());
            }
        }
        let uri = v
            .members
            .iter()
            .find(|(a, _)| a == who)
            .map(|(_, m)| m.blob_uri.clone())
            .ok_or_else(|| WorkerError::Peer(format!("{who} is not a member")))?;
        let within = self.fetch_limit(v, until, until, reserve);
        if within.is_zero() {
            return Err(WorkerError::NoTime(until));
        }
        let bytes = match peers.fetch(&uri, addr, limit, within) {
            Err(WorkerError::Unanswered(_)) if !unanswered_within(within, self.least_blamed()) => {
                return Err(WorkerError::NoTime(until))
            }
            r => r?,
        };
        self.accounting.bytes_fetched += bytes.len() as u64;
        Ok(bytes)
    }

    /// The least time limit a peer that did not answer within it is blamed for (reported
    /// unavailable by an auditor): [`MIN_FETCH_TIME`], or one block at the chain's pace if
    /// that is less (on a fast chain every limit is short, and a target hiding its trace must
    /// still be caught); a fetch cut shorter by the time left is asked again instead.
    fn least_blamed(&self) -> Duration {
        MIN_FETCH_TIME.min(Duration::from_secs_f64(self.clock.seconds_per_block()))
    }

    /// The time limit of a fetch that should end before height `soft` and must end `reserve`
    /// before height `hard` ([`BlockClock::fetch_time`]).
    fn fetch_limit(&self, v: &JobView, soft: u64, hard: u64, reserve: Duration) -> Duration {
        self.clock.fetch_time(v.height, soft, hard, reserve, Instant::now())
    }

    /// Replays `target`'s whole round from its canonical start and compares every boundary of
    /// its trace, then the compression step.
    fn audit(&mut self, v: &JobView, peers: &dyn Peers, target: &Address) -> Result<Verdict, WorkerError> {
        let reveal = revealed(v, target)?;
        if self.adversary == Some(Adversary::LazyAuditor) {
            return Ok(Verdict::Pass { digest: reveal.update });
        }
        let k = self.cfg.segments();
        let t0 = std::time::Instant::now();
        // What the target committed to must be served: its trace (and its residual when it
        // carried one). A fetch that fails is retried on the next poll until the audit's last
        // two blocks; from then a failure is final, and a target that already failed to serve
        // this round is reported unavailable at once, without asking again (a fetch then could
        // only make the verdict late, and a late verdict would leave the target included).
        // A trace that does not hash to the revealed root is the target's fault: it served
        // something else. Fetches end a block before the audit closes, less the replay.
        let last = v.height.saturating_add(2) >= v.job.audit_deadline;
        if last && self.unserved.contains(target) {
            return Ok(Verdict::Unavailable);
        }
        let until = v.job.audit_deadline.saturating_sub(1);
        let reserve = self.segment_time * (k + 1) + SUBMIT_MARGIN;
        let trace = match self.fetch_from(
            v,
            peers,
            target,
            &reveal.trace,
            16 + 32 * (k as usize + 1),
            until,
            reserve,
        ) {
            Ok(b) => state::decode_trace(&b, k as usize + 1)
                .ok()
                .filter(|t| round::trace_root(t) == reveal.trace),
            Err(e @ WorkerError::NoTime(_)) => return Err(e),
            Err(e) => {
                self.unserved.insert(*target);
                if !last {
                    return Err(e);
                }
                None
            }
        };
        let Some(trace) = trace else {
            return Ok(Verdict::Unavailable);
        };
        let start = match self.start_state_from(v, peers, &[*target], &reveal.ef_in, until, reserve) {
            Ok(s) => s,
            // Only the target's failure to serve its residual is blamed on it, not one of this
            // worker's own (the round's checkpoint unknown here).
            Err(e @ (WorkerError::Peer(_) | WorkerError::Unanswered(_) | WorkerError::Blob(_))) => {
                self.unserved.insert(*target);
                if !last {
                    return Err(e);
                }
                return Ok(Verdict::Unavailable);
            }
            Err(e) => return Err(e),
        };
        let checkpoint = v.job.checkpoint;
        let work = self.work(v.job.round, &checkpoint, target)?;
        let mut state = start;
        let mut replayed = 0u64;
        let mut fail = None;
        if trace[0] != state.hash() {
            // The start it claims is not the checkpoint with its residual: the first segment
            // replayed from the true start cannot end where its trace says.
            let steps = round::replay_segment(&self.model, &self.cfg, &state, &work, 0)?;
            replayed += u64::from(self.cfg.segment_steps);
            if steps.last() != Some(&trace[1]) {
                fail = Some((0, steps));
            }
        }
        let mut losses = Vec::with_capacity(self.cfg.inner_steps as usize);
        if fail.is_none() {
            for s in 0..k {
                let seg_start = state.clone();
                if s + 1 == k && self.adversary == Some(Adversary::FalseAuditor) {
                    // It will claim this segment failed: it serves the segment's start as an
                    // honest auditor would (referees start from it).
                    self.blobs.put(seg_start.hash(), seg_start.encode());
                }
                losses.extend(round::train_segment(&self.model, &self.cfg, &mut state, &work, s)?);
                replayed += u64::from(self.cfg.segment_steps);
                if state.hash() != trace[s as usize + 1] {
                    // Only now are the state hashes of each step needed (the verdict's proof):
                    // the segment again, with them. Referees start from its start if the
                    // target disputes: serve it.
                    let steps = round::replay_segment(&self.model, &self.cfg, &seg_start, &work, s)?;
                    replayed += u64::from(self.cfg.segment_steps);
                    self.blobs.put(seg_start.hash(), seg_start.encode());
                    fail = Some((s, steps));
                    break;
                }
            }
        }
        if fail.is_none() {
            let ckpt = self
                .checkpoints
                .get(&checkpoint)
                .ok_or_else(|| self.unknown_checkpoint())?;
            let [u, e] = round::replay_finish(&self.cfg, &ckpt.params, &state)?;
            if u != reveal.update || e != reveal.ef_out {
                self.blobs.put(state.hash(), state.encode());
                fail = Some((k, vec![u, e]));
            }
        }
        drop(work);
        let verdict = match fail {
            Some((segment, steps)) => Verdict::Fail { segment, steps, trace },
            // Every boundary matched: the pass carries the loss digest that opens the target's
            // seal. A target that sealed something else cannot be passed, and nothing in the
            // ledger could tell its wrong seal from a wrong digest: it is left out as
            // unavailable (its round unpaid, its update unused).
            None => {
                let digest = round::loss_digest(&losses);
                if loss_seal(self.job, v.job.round, target, &digest) != reveal.seal {
                    Verdict::Unavailable
                } else if self.adversary == Some(Adversary::FalseAuditor) {
                    // Claims the last training segment ended elsewhere than the target's trace
                    // says (so that referees fetch the segment's start, from it or the target).
                    Verdict::Fail {
                        segment: k - 1,
                        steps: (0..self.cfg.segment_steps).map(|i| [i as u8 ^ 0x5a; 32]).collect(),
                        trace,
                    }
                } else {
                    Verdict::Pass { digest }
                }
            }
        };
        self.accounting.steps_replayed += replayed;
        self.accounting.audit_seconds += t0.elapsed().as_secs_f64();
        if replayed > 0 {
            let segments = (replayed / u64::from(self.cfg.segment_steps.max(1))).max(1);
            self.segment_time = t0.elapsed() / u32::try_from(segments).unwrap_or(u32::MAX);
        }
        Ok(verdict)
    }

    /// A referee's answer: the state hash after step `index` of `segment` of `target`'s round,
    /// from the segment's agreed start (fetched before height `until`, when answers close).
    #[allow(clippy::too_many_arguments)]
    fn referee(
        &mut self,
        v: &JobView,
        peers: &dyn Peers,
        target: &Address,
        auditor: &Address,
        segment: u32,
        index: u32,
        until: u64,
    ) -> Result<Hash32, WorkerError> {
        let reveal = revealed(v, target)?;
        let k = self.cfg.segments();
        let n = self.n();
        // The segment's start: the canonical start for segment 0, else the boundary both sides
        // agree on (the target's trace, as the ledger checked it in the verdict). The auditor
        // holds it as well as the target (it replayed up to there), so a target that stops
        // serving after disputing cannot starve the referees; both are asked at once, so an
        // auditor that stops serving (to have its false verdict stand undecided) cannot either.
        let sources = [*auditor, *target];
        let reserve = self.segment_time + SUBMIT_MARGIN;
        let start = if segment == 0 {
            self.start_state_from(v, peers, &sources, &reveal.ef_in, until, reserve)?
        } else {
            let trace = v
                .audits
                .iter()
                .find(|(t, _)| t == target)
                .and_then(|(_, a)| match &a.verdict {
                    Some(Verdict::Fail { trace, .. }) => Some(trace.clone()),
                    _ => None,
                })
                .ok_or_else(|| WorkerError::Chain(format!("no failing verdict on {target}")))?;
            let at = *trace
                .get(segment.min(k) as usize)
                .ok_or_else(|| WorkerError::Chain("the verdict's trace is too short".into()))?;
            let (beta1, beta2) = (self.cfg.adam.beta1, self.cfg.adam.beta2);
            let accept = |b: &[u8]| WorkerState::decode(b, n, beta1, beta2).is_ok_and(|s| s.hash() == at);
            let bytes = self.fetch_any(v, peers, &sources, &at, blob_limit(n), until, reserve, &accept)?;
            let s = WorkerState::decode(&bytes, n, beta1, beta2)?;
            if s.hash() != at {
                return Err(WorkerError::Peer("a state blob with another hash".into()));
            }
            s
        };
        let t0 = std::time::Instant::now();
        let answer = if segment >= k {
            let ckpt = self
                .checkpoints
                .get(&v.job.checkpoint)
                .ok_or_else(|| self.unknown_checkpoint())?;
            let pair = round::replay_finish(&self.cfg, &ckpt.params, &start)?;
            pair[(index as usize).min(1)]
        } else {
            let work = self.work(v.job.round, &v.job.checkpoint, target)?;
            let mut state = start;
            let first = segment * self.cfg.segment_steps;
            let last = first + index.min(self.cfg.segment_steps - 1);
            for step in first..=last {
                round::train_step(&self.model, &self.cfg, &mut state, &work, step)?;
            }
            state.hash()
        };
        self.accounting.audit_seconds += t0.elapsed().as_secs_f64();
        self.segment_time = self.segment_time.max(t0.elapsed());
        Ok(answer)
    }

    /// Fetches every included update (checking its hash), averages them in address order and
    /// takes the outer step: the checkpoint this worker votes for, and the included workers it
    /// left out. An update that cannot be had (not served, or not what was revealed) is asked
    /// for again at the next poll until the phase's last two blocks; then the vote leaves it
    /// out, so one worker that withholds its update cannot stall the round.
    ///
    /// The missing updates are fetched by a few threads at once ([`FETCH_THREADS`]), all
    /// ending by one instant set here from the time the chain's pace leaves before those last
    /// two blocks (at least [`MIN_FETCH_TIME`], never past the block before the last less the
    /// time the aggregate and the vote take): an update taken up only when an earlier one
    /// ends gets what is left, not a time of its own, so peers that never answer cost one
    /// time limit whatever their number; and each from its owner first, then from the other members
    /// ([`fetch_update`]: an aggregator serves again what it fetched), so an owner that served
    /// some aggregators only cannot split their votes while there is time to pass it on.
    fn aggregate(&mut self, v: &JobView, peers: &dyn Peers) -> Result<(Hash32, Vec<Address>), WorkerError> {
        let t0 = Instant::now();
        let late = v.height.saturating_add(2) >= v.job.deadline;
        // Before the last two blocks a fetch should end when they begin (a failure is asked
        // again at the next poll); in any case it must end a block before the end, less the
        // time the aggregate and the vote take, so that the vote still lands.
        let hard = v.job.deadline.saturating_sub(1);
        let soft = if late { hard } else { v.job.deadline.saturating_sub(2) };
        let within = self.fetch_limit(v, soft, hard, self.aggregate_time + SUBMIT_MARGIN);
        let end = t0 + within;
        let n = self.n();
        let limit = update_limit(self.cfg.method, n);
        // By worker, as the vote's left-out set names them. The bytes may come from any member
        // (their hash is what is checked), so one that revealed another's update is included
        // if anyone serves it; a copy is audited when another auditor can be drawn, and then
        // its replay fails.
        let included: Vec<(Address, Hash32)> = v
            .works
            .iter()
            .filter_map(|(who, w)| match (w.reveal, w.excluded) {
                (Some(r), false) => Some((*who, r.update)),
                _ => None,
            })
            .collect();
        // This worker's own update, from what it trained.
        if let Some(t) = &self.trained {
            let key = (self.address, t.out.update_hash);
            if included.contains(&key) && !self.fetched.contains_key(&key) {
                self.fetched
                    .insert(key, check_update(&t.out.update_bytes, &key.1, n, limit)?);
            }
        }
        let missing: Vec<(Address, Hash32)> = included
            .iter()
            .filter(|k| !self.fetched.contains_key(k))
            .copied()
            .collect();
        let sources = Sources::new(v, &self.address, self.unanswered.clone());
        let ask = Ask {
            peers,
            blobs: &self.blobs,
            sources: &sources,
            n,
            limit,
            end,
        };
        let results: Vec<Fetched> = if within.is_zero() {
            missing
                .iter()
                .map(|_| Err(WorkerError::Unanswered("no time left to fetch".into())))
                .collect()
        } else {
            pool(&missing, FETCH_THREADS, |&(who, hash)| fetch_update(&ask, &who, &hash))
        };
        let mut first_err = None;
        for (key, r) in missing.into_iter().zip(results) {
            match r {
                Ok((u, bytes)) => {
                    self.accounting.bytes_fetched += bytes;
                    self.fetched.insert(key, u);
                }
                Err(e) => first_err = first_err.or(Some(e)),
            }
        }
        if let (Some(e), false) = (first_err, late) {
            return Err(e);
        }
        let t1 = Instant::now();
        let mut used = Vec::new();
        let mut left_out = Vec::new();
        for key in included {
            if self.fetched.contains_key(&key) {
                used.push(key);
            } else {
                left_out.push(key.0);
            }
        }
        let updates: Vec<Update> = used.iter().filter_map(|k| self.fetched.get(k).cloned()).collect();
        let ckpt = self
            .checkpoints
            .get(&v.job.checkpoint)
            .cloned()
            .ok_or_else(|| WorkerError::Job {
                job: self.job,
                reason: "the round's checkpoint is unknown here".into(),
            })?;
        let next = round::aggregate(&self.cfg, &ckpt, &updates)?;
        self.aggregate_time = t1.elapsed();
        self.accounting.aggregate_seconds += t0.elapsed().as_secs_f64();
        Ok((self.add_checkpoint(next), left_out))
    }
}

/// Threads fetching missing updates at once, at most (each may ask up to
/// [`FALLBACK_IN_FLIGHT`] members at once in turn): the threads an aggregate uses are bounded
/// whatever the number of members.
const FETCH_THREADS: usize = 8;
/// Requests for one update out to other members at once, at most.
const FALLBACK_IN_FLIGHT: usize = 3;
/// The least time between two requests of one staggered fetch, whatever their answers (a
/// fast 404 does not start the next at once).
const FALLBACK_STAGGER: Duration = Duration::from_millis(200);
/// The longest pause between two passes of a staggered fetch (the first is
/// [`FALLBACK_STAGGER`], each next twice the last).
const FALLBACK_PASS_PAUSE: Duration = Duration::from_secs(2);

/// `f` of every item, on at most `threads` scoped threads (fewer if the system gives fewer; on
/// the calling thread if it gives none), in the items' order.
fn pool<T: Sync, R: Send>(items: &[T], threads: usize, f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let next = AtomicUsize::new(0);
    let out: Mutex<Vec<Option<R>>> = Mutex::new((0..items.len()).map(|_| None).collect());
    let work = || loop {
        let i = next.fetch_add(1, Ordering::Relaxed);
        let Some(item) = items.get(i) else { break };
        let r = f(item);
        if let Some(slot) = out.lock().unwrap_or_else(|e| e.into_inner()).get_mut(i) {
            *slot = Some(r);
        }
    };
    std::thread::scope(|s| {
        let mut started = 0;
        for _ in 0..threads.min(items.len()) {
            match std::thread::Builder::new().spawn_scoped(s, work) {
                Ok(_) => started += 1,
                Err(_) => break,
            }
        }
        if started == 0 {
            work();
        }
    });
    out.into_inner()
        .unwrap_or_else(|e| e.into_inner())
        .into_iter()
        .map(|r| r.unwrap_or_else(|| unreachable!("every item is taken by a thread that runs to its end")))
        .collect()
}

/// An update fetched and checked, with the bytes fetched for it.
type Fetched = Result<(Update, u64), WorkerError>;

/// `bytes` as the update `hash`: its hash recomputed, then decoded strictly (at most `limit`
/// bytes, [`update_limit`]).
fn check_update(bytes: &[u8], hash: &Hash32, n: usize, limit: usize) -> Result<Update, WorkerError> {
    if compress::update_hash(bytes) != *hash {
        return Err(WorkerError::Peer("an update with another hash".into()));
    }
    Ok(Update::decode(bytes, n as u32, limit)?)
}

/// The members an aggregator may ask for another's update, in the order it asks them: those
/// that already voted first (they hold every update they used), then the others, each group
/// in the order of H(self ‖ member), so that the members asked first differ from one
/// aggregator to the next (one member whose server hangs is not first for everyone).
struct Sources {
    me: Address,
    ordered: Vec<(Address, String)>,
    /// Servers that did not answer within a time limit this round (shared across polls).
    unanswered: Arc<Mutex<BTreeSet<String>>>,
}

impl Sources {
    fn new(v: &JobView, me: &Address, unanswered: Arc<Mutex<BTreeSet<String>>>) -> Sources {
        let voted: BTreeSet<Address> = v
            .works
            .iter()
            .filter(|(_, w)| w.vote.is_some())
            .map(|(a, _)| *a)
            .collect();
        let mine = worker_bytes(me);
        let mut ordered: Vec<(bool, Hash32, Address, String)> = v
            .members
            .iter()
            .filter(|(a, _)| a != me)
            .map(|(a, m)| {
                let mut h = Sha256::new();
                h.update(b"pazar/train/relay-order/v1\0");
                h.update(&mine);
                h.update(worker_bytes(a));
                (!voted.contains(a), h.finalize().into(), *a, m.blob_uri.clone())
            })
            .collect();
        ordered.sort();
        Sources {
            me: *me,
            ordered: ordered.into_iter().map(|(_, _, a, u)| (a, u)).collect(),
            unanswered,
        }
    }

    fn uri(&self, who: &Address) -> Option<&str> {
        self.ordered.iter().find(|(a, _)| a == who).map(|(_, u)| u.as_str())
    }

    fn mark_unanswered(&self, uri: &str) {
        self.unanswered
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(uri.to_string());
    }
}

/// What every update fetch of one aggregate shares.
struct Ask<'a> {
    peers: &'a dyn Peers,
    blobs: &'a BlobStore,
    sources: &'a Sources,
    n: usize,
    limit: usize,
    /// When every fetch of the aggregate must have ended, whenever it starts.
    end: Instant,
}

/// Less time left than this before [`Ask::end`] and an update is not asked for at all.
const LEAST_FETCH_TIME: Duration = Duration::from_millis(10);

/// `who`'s update `hash`, checked and decoded, with the bytes fetched for it: from this
/// worker's store if it already holds it (under another worker's name), else from `who`
/// (given half the time left before [`Ask::end`] when others can be asked after it), else
/// from the other members within the rest of it (nobody is asked once less than
/// [`LEAST_FETCH_TIME`] is left), in [`Sources`]' order ([`staggered`]: a few at once, pass
/// after pass, a member whose server did not answer within at least [`MIN_FETCH_TIME`] this
/// round not asked again). What is fetched
/// and checked is served again from `blobs`: among its re-served updates, bounded apart from
/// the worker's own blobs, so it can never push out what auditors and referees need from it.
fn fetch_update(ask: &Ask<'_>, who: &Address, hash: &Hash32) -> Fetched {
    let (n, limit) = (ask.n, ask.limit);
    if let Some(u) = ask.blobs.get(hash).and_then(|b| check_update(&b, hash, n, limit).ok()) {
        return Ok((u, 0));
    }
    let end = ask.end;
    let within = end.saturating_duration_since(Instant::now());
    if within < LEAST_FETCH_TIME {
        return Err(WorkerError::Unanswered("no time left to fetch".into()));
    }
    let others: Vec<&str> = ask
        .sources
        .ordered
        .iter()
        .filter(|(a, _)| a != who && *a != ask.sources.me)
        .map(|(_, u)| u.as_str())
        .collect();
    let mut fetched = 0u64;
    let mut last = WorkerError::Peer(format!("nobody serves {who}'s update"));
    // The owner is always asked (a server that did not answer within at least
    // MIN_FETCH_TIME is marked, and then not asked for another's update this round).
    if let Some(uri) = ask.sources.uri(who).filter(|_| *who != ask.sources.me) {
        let t = if others.is_empty() { within } else { within / 2 };
        match ask.peers.fetch(uri, hash, limit, t) {
            Ok(bytes) => {
                fetched += bytes.len() as u64;
                match check_update(&bytes, hash, n, limit) {
                    Ok(u) => {
                        ask.blobs.relay(*hash, bytes.into());
                        return Ok((u, fetched));
                    }
                    Err(e) => last = WorkerError::Peer(format!("{uri} on {who}'s update: {e}")),
                }
            }
            Err(e) => {
                if matches!(e, WorkerError::Unanswered(_)) && unanswered_within(t, MIN_FETCH_TIME) {
                    ask.sources.mark_unanswered(uri);
                }
                last = e;
            }
        }
    }
    let mut got = 0u64;
    let r = staggered(
        ask.peers,
        &others,
        hash,
        limit,
        end.saturating_duration_since(Instant::now()),
        &ask.sources.unanswered,
        |uri, bytes| {
            got += bytes.len() as u64;
            let u = check_update(&bytes, hash, n, limit)
                .map_err(|e| WorkerError::Peer(format!("{uri} on {who}'s update: {e}")))?;
            ask.blobs.relay(*hash, bytes.into());
            Ok(u)
        },
    );
    fetched += got;
    match r {
        Ok(u) => Ok((u, fetched)),
        Err(WorkerError::Peer(e)) if e == NOBODY => Err(last),
        Err(e) => Err(e),
    }
}

/// What [`staggered`] answers when it asked nobody.
const NOBODY: &str = "nobody to ask";

/// `addr` from the first of `uris` whose answer `take` accepts, within `within`: asked in
/// order, a new one at most every [`FALLBACK_STAGGER`] (however fast the answers) while at
/// most [`FALLBACK_IN_FLIGHT`] requests are out, each with half the time (at least
/// [`MIN_FETCH_TIME`], never past the end); pass after pass until the time is spent, with a
/// pause between passes that doubles each time (up to [`FALLBACK_PASS_PAUSE`]), since a server that had nothing to serve (an aggregator
/// that had not fetched the update yet) may have it a moment later; a server that did not
/// answer within its time (when that was at least [`MIN_FETCH_TIME`]) is put in `unanswered`
/// and, like those already there, not asked.
/// An answer `take` refuses (the wrong bytes) is not asked for again from that server.
fn staggered<T>(
    peers: &dyn Peers,
    uris: &[&str],
    addr: &Hash32,
    limit: usize,
    within: Duration,
    unanswered: &Mutex<BTreeSet<String>>,
    mut take: impl FnMut(&str, Vec<u8>) -> Result<T, WorkerError>,
) -> Result<T, WorkerError> {
    let end = Instant::now() + within;
    let share = (within / 2).max(MIN_FETCH_TIME);
    let skipped = |uri: &str| unanswered.lock().unwrap_or_else(|e| e.into_inner()).contains(uri);
    let mut last = WorkerError::Peer(NOBODY.into());
    let (tx, rx) = mpsc::channel::<(usize, Duration, Result<Vec<u8>, WorkerError>)>();
    std::thread::scope(|s| {
        let mut queue: VecDeque<usize> = (0..uris.len()).collect();
        let mut again: Vec<usize> = Vec::new();
        let mut out = 0usize;
        let mut next_at = Instant::now();
        let mut pause = FALLBACK_STAGGER;
        loop {
            let now = Instant::now();
            let left = end.saturating_duration_since(now);
            if queue.is_empty() && out == 0 {
                // A pass is over: ask again those that had nothing yet, after a pause.
                if again.is_empty() || left <= pause {
                    return Err(last);
                }
                queue.extend(again.drain(..));
                next_at = next_at.max(now + pause);
                pause = (pause * 2).min(FALLBACK_PASS_PAUSE);
            }
            if left < Duration::from_millis(10) {
                return Err(last);
            }
            if out < FALLBACK_IN_FLIGHT && now >= next_at {
                if let Some(i) = queue.pop_front() {
                    let uri = uris[i];
                    if skipped(uri) {
                        continue;
                    }
                    let tx = tx.clone();
                    let t = share.min(left);
                    let job = move || {
                        let _ = tx.send((i, t, peers.fetch(uri, addr, limit, t)));
                    };
                    match std::thread::Builder::new().spawn_scoped(s, job) {
                        Ok(_) => out += 1,
                        Err(e) => last = WorkerError::Peer(format!("no thread for a fetch: {e}")),
                    }
                    next_at = now + FALLBACK_STAGGER;
                    continue;
                }
            }
            let wait = if out < FALLBACK_IN_FLIGHT && !queue.is_empty() {
                next_at.saturating_duration_since(now)
            } else {
                left
            };
            match rx.recv_timeout(wait.min(left)) {
                Ok((i, t, r)) => {
                    out -= 1;
                    match r {
                        Ok(bytes) => match take(uris[i], bytes) {
                            Ok(t) => return Ok(t),
                            Err(e) => last = e,
                        },
                        Err(e @ WorkerError::Unanswered(_)) if unanswered_within(t, MIN_FETCH_TIME) => {
                            unanswered
                                .lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .insert(uris[i].to_string());
                            last = e;
                        }
                        // It had nothing (yet), could not be reached, or its time was cut short
                        // by the time left: ask it again in the next pass.
                        Err(e) => {
                            again.push(i);
                            last = e;
                        }
                    }
                }
                Err(_) => {
                    // Woken to start the next request (or out of time: checked above).
                    if wait.is_zero() {
                        std::thread::yield_now();
                    }
                }
            }
        }
    })
}

/// What `target` revealed in the current round (an audited or disputed worker always did).
fn revealed(v: &JobView, target: &Address) -> Result<pazar_types::train::Reveal, WorkerError> {
    v.works
        .iter()
        .find(|(a, _)| a == target)
        .and_then(|(_, w)| w.reveal)
        .ok_or_else(|| WorkerError::Job {
            job: v.id,
            reason: format!("{target} is audited but revealed nothing"),
        })
}

/// The bytes of an address that seed its shards and batches (its canonical Borsh encoding).
pub fn worker_bytes(a: &Address) -> Vec<u8> {
    borsh::to_vec(a).unwrap_or_default()
}

/// A lazy worker's round: no step at all, every boundary the untrained start, and the update
/// its residual alone gives.
fn lazy_round(cfg: &TrainConfig, ckpt: &Checkpoint, ef: Vec<f32>) -> Result<RoundOutput, WorkerError> {
    let start = WorkerState::start(ckpt.params.clone(), ef);
    let boundaries = vec![start.clone(); cfg.segments() as usize + 1];
    let trace: Vec<Hash32> = boundaries.iter().map(WorkerState::hash).collect();
    let (update, ef_out) = round::finish(cfg, &ckpt.params, &start)?;
    let update_bytes = update.encode();
    Ok(RoundOutput {
        trace_root: round::trace_root(&trace),
        trace,
        boundaries,
        update_hash: compress::update_hash(&update_bytes),
        update,
        update_bytes,
        ef_in: ef_hash(&start.ef),
        ef_out_hash: ef_hash(&ef_out),
        ef_out,
        losses: Vec::new(),
        loss_digest: round::loss_digest(&[]),
    })
}

fn replace_update(out: &mut RoundOutput, u: Update) {
    out.update_bytes = u.encode();
    out.update_hash = compress::update_hash(&out.update_bytes);
    out.update = u;
}

/// Deterministic noise in `[-scale, scale]` seeded by `seed` (an adversary's, not the
/// protocol's: it only has to be different from the honest update).
fn pseudo_noise(seed: &Hash32, n: usize, scale: f32) -> Vec<f32> {
    let mut x = u64::from_le_bytes([seed[0], seed[1], seed[2], seed[3], seed[4], seed[5], seed[6], seed[7]]) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            ((x >> 40) as f32 / 16_777_216.0 * 2.0 - 1.0) * scale
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_block_clock_assumes_the_default_pace_until_it_has_seen_two_heights() {
        let t0 = Instant::now();
        let mut c = BlockClock::default();
        assert_eq!(c.seconds_per_block(), DEFAULT_BLOCK_SECONDS);
        c.observe(10, t0);
        c.observe(10, t0 + Duration::from_secs(5));
        assert_eq!(c.seconds_per_block(), DEFAULT_BLOCK_SECONDS);
        c.observe(14, t0 + Duration::from_secs(8));
        assert_eq!(c.seconds_per_block(), 2.0);
    }

    #[test]
    fn the_block_clock_is_bounded_both_ways_and_forgets_old_heights() {
        let t0 = Instant::now();
        let mut fast = BlockClock::default();
        fast.observe(1, t0);
        fast.observe(1000, t0 + Duration::from_millis(1));
        assert_eq!(fast.seconds_per_block(), MIN_BLOCK_SECONDS);
        let mut slow = BlockClock::default();
        slow.observe(1, t0);
        slow.observe(2, t0 + Duration::from_secs(600));
        assert_eq!(slow.seconds_per_block(), MAX_BLOCK_SECONDS);
        // A slow stretch long ago no longer counts once the window has moved past it.
        for h in 3..3 + CLOCK_WINDOW as u64 {
            slow.observe(h, t0 + Duration::from_secs(600) + Duration::from_secs(h));
        }
        assert_eq!(slow.seconds_per_block(), 1.0);
    }

    #[test]
    fn a_fetch_gets_the_blocks_left_less_the_time_already_spent_within_its_bounds() {
        let t0 = Instant::now();
        let mut c = BlockClock::default();
        c.observe(100, t0);
        c.observe(102, t0 + Duration::from_secs(4));
        let at = t0 + Duration::from_secs(5);
        // 2 s a block, 3 blocks to go, 1 s of the current block gone.
        assert_eq!(c.time_until(102, 105, at), Duration::from_secs(5));
        // Nothing left (or the target height passed): nothing, not a floor past it.
        assert_eq!(c.time_until(102, 102, at), Duration::ZERO);
        assert_eq!(c.time_until(102, 90, at), Duration::ZERO);
        // Far off: the cap.
        assert_eq!(c.time_until(102, 10_000, at), FETCH_TIMEOUT);
    }

    #[test]
    fn a_chain_that_waits_for_its_participants_sets_no_deadline_by_time() {
        // A sim without a pace makes its next block only when every participant has taken
        // its step: a replay longer than the blocks left "by the clock" still lands, so the
        // work is not skipped (the full bench profile's audits were, when it was).
        let t0 = Instant::now();
        let mut c = BlockClock::default();
        c.seed(Duration::from_secs(1));
        c.observe(100, t0);
        let reserve = Duration::from_secs(5);
        assert_eq!(
            c.fetch_time(100, 103, 103, reserve, t0),
            Duration::ZERO,
            "a real chain: no time"
        );
        c.waits = true;
        assert_eq!(c.fetch_time(100, 103, 103, reserve, t0), Duration::from_secs(3));
        assert_eq!(c.fetch_time(100, 100, 100, reserve, t0), MIN_FETCH_TIME);
    }

    #[test]
    fn the_fetch_floor_never_runs_past_the_height_a_fetch_must_end_by() {
        let t0 = Instant::now();
        let mut c = BlockClock::default();
        c.observe(100, t0);
        c.observe(110, t0 + Duration::from_secs(1));
        let at = t0 + Duration::from_secs(1);
        // 0.1 s a block. Should end by 103, must by 120: the floor.
        assert_eq!(c.fetch_time(110, 103, 120, Duration::ZERO, at), MIN_FETCH_TIME);
        // Must end by 115 (0.5 s): the floor is cut to it.
        let t = c.fetch_time(110, 103, 115, Duration::ZERO, at);
        assert!(t < MIN_FETCH_TIME && t > Duration::from_millis(400), "{t:?}");
        // Less the time kept for the work after it.
        let r = c.fetch_time(110, 115, 115, Duration::from_millis(300), at);
        assert!(
            r < Duration::from_millis(201) && r > Duration::from_millis(100),
            "{r:?}"
        );
        // Nothing left: zero (the fetch is skipped), whatever the floor.
        assert_eq!(c.fetch_time(110, 110, 110, Duration::ZERO, at), Duration::ZERO);
        assert_eq!(c.fetch_time(110, 112, 112, Duration::from_secs(1), at), Duration::ZERO);
    }

    #[test]
    fn the_node_block_time_is_assumed_before_two_heights_and_bounds_the_estimate_below() {
        let t0 = Instant::now();
        let mut c = BlockClock::default();
        c.seed(Duration::from_secs(5));
        c.observe(10, t0);
        assert_eq!(c.seconds_per_block(), 5.0);
        // Faster than the node proposes: not believed.
        c.observe(12, t0 + Duration::from_secs(2));
        assert_eq!(c.seconds_per_block(), 5.0);
        // Slower: believed.
        c.observe(14, t0 + Duration::from_secs(24));
        assert_eq!(c.seconds_per_block(), 6.0);
    }

    #[test]
    fn an_update_is_never_larger_than_its_exact_limit_which_is_far_below_a_state_blob() {
        let n = 10_000usize;
        // Entries of every magnitude, so that kept entries are spread and gaps are large.
        let delta: Vec<f32> = (0..n).map(|i| ((i * 7919) % 1000) as f32 - 500.0).collect();
        for method in [
            Method::Int8,
            Method::TopK { per_mille: 1000 },
            Method::TopK { per_mille: 7 },
            Method::TopKInt8 { per_mille: 1000 },
            Method::TopKInt8 { per_mille: 200 },
        ] {
            let (u, _) = compress::compress(method, &delta, &vec![0.0; n]).expect("compresses");
            let bytes = u.encode();
            let limit = update_limit(method, n);
            assert!(bytes.len() <= limit, "{method:?}: {} > {limit}", bytes.len());
            assert!(Update::decode(&bytes, n as u32, limit).is_ok());
            assert!(limit < blob_limit(n), "{method:?}");
        }
        // Int8 keeps every entry: its size is fixed and the limit is exact.
        let (u, _) = compress::compress(Method::Int8, &delta, &vec![0.0; n]).expect("compresses");
        assert_eq!(u.encode().len(), update_limit(Method::Int8, n));
        assert!(update_limit(Method::TopK { per_mille: 1000 }, n) <= 9 * n + compress::HEADER_BYTES);
    }

    #[test]
    fn a_pool_runs_every_item_once_in_order_on_few_threads() {
        let items: Vec<u32> = (0..100).collect();
        let live = AtomicUsize::new(0);
        let most = AtomicUsize::new(0);
        let out = pool(&items, 4, |x| {
            let now = live.fetch_add(1, Ordering::SeqCst) + 1;
            most.fetch_max(now, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(1));
            live.fetch_sub(1, Ordering::SeqCst);
            x * 2
        });
        assert_eq!(out, items.iter().map(|x| x * 2).collect::<Vec<_>>());
        assert!(most.load(Ordering::SeqCst) <= 4);
    }

    #[cfg(feature = "sim")]
    #[test]
    fn an_update_comes_from_a_member_that_gets_it_late_though_another_member_hangs_and_the_owner_serves_none() {
        use crate::sim::{sim_key, SimPeers};
        let n = 64;
        let delta: Vec<f32> = (0..n).map(|i| i as f32 - 30.0).collect();
        let (u, _) = compress::compress(Method::Int8, &delta, &vec![0.0; n]).expect("compresses");
        let bytes = u.encode();
        let hash = compress::update_hash(&bytes);
        let [me, owner, hanger, late] = [1, 2, 3, 4].map(|i| sim_key(i).address());
        let uri = |a: &Address| format!("http://{a}.sim");
        let mut peers = SimPeers::default();
        let late_store = BlobStore::new(8);
        for (a, store) in [
            (owner, BlobStore::new(8)),
            (hanger, BlobStore::new(8)),
            (late, late_store.clone()),
        ] {
            peers.add(&uri(&a), store);
        }
        peers.hang(&uri(&hanger));
        // The member whose server hangs is asked first; the other has nothing until it has
        // fetched the update itself, a moment after it is first asked.
        let sources = Sources {
            me,
            ordered: [owner, hanger, late].iter().map(|a| (*a, uri(a))).collect(),
            unanswered: Arc::new(Mutex::new(BTreeSet::new())),
        };
        let relay = {
            let (store, bytes) = (late_store.clone(), bytes.clone());
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(400));
                store.relay(hash, bytes.into());
            })
        };
        let mine = BlobStore::new(8);
        let ask = Ask {
            peers: &peers,
            blobs: &mine,
            sources: &sources,
            n,
            limit: update_limit(Method::Int8, n),
            end: Instant::now() + Duration::from_secs(4),
        };
        let (got, fetched) = fetch_update(&ask, &owner, &hash).expect("fetched from the member that had it late");
        relay.join().expect("relay");
        assert_eq!(got.encode(), bytes);
        assert_eq!(fetched, bytes.len() as u64);
        // Served again from here, and the hanging server is not asked again this round.
        assert!(mine.contains(&hash));
        assert!(sources.unanswered.lock().expect("set").contains(&uri(&hanger)));
        assert_eq!(peers.hung_limits().len(), 1);
    }
    /// An aggregator (`sim_key(1)`) whose update's owner (`sim_key(2)`) and only other member
    /// (`sim_key(3)`) both hang: the peers, the sources as the aggregator orders them, its own
    /// store, the owner, and the model's size.
    #[cfg(feature = "sim")]
    fn two_hanging_members() -> (crate::sim::SimPeers, Sources, Arc<BlobStore>, Address, usize) {
        use crate::sim::{sim_key, SimPeers};
        let [me, owner, other] = [1, 2, 3].map(|i| sim_key(i).address());
        let uri = |a: &Address| format!("http://{a}.sim");
        let mut peers = SimPeers::default();
        for a in [owner, other] {
            peers.add(&uri(&a), BlobStore::new(8));
            peers.hang(&uri(&a));
        }
        let sources = Sources {
            me,
            ordered: [owner, other].iter().map(|a| (*a, uri(a))).collect(),
            unanswered: Arc::new(Mutex::new(BTreeSet::new())),
        };
        (peers, sources, BlobStore::new(8), owner, 64)
    }

    #[cfg(feature = "sim")]
    #[test]
    fn an_update_taken_up_after_the_aggregates_fetch_time_is_spent_asks_nobody() {
        let (peers, sources, mine, owner, n) = two_hanging_members();
        // The pool took this update up only when an earlier one ended, at the aggregate's end:
        // with a time of its own it would ask the owner (and hang) past the vote's deadline.
        let ask = Ask {
            peers: &peers,
            blobs: &mine,
            sources: &sources,
            n,
            limit: update_limit(Method::Int8, n),
            end: Instant::now(),
        };
        let r = fetch_update(&ask, &owner, &[7; 32]);
        assert!(matches!(r, Err(WorkerError::Unanswered(_))), "{r:?}");
        assert!(peers.hung_limits().is_empty());
        // Nobody is blamed for the time that was not there.
        assert!(sources.unanswered.lock().expect("set").is_empty());
    }
    #[cfg(feature = "sim")]
    #[test]
    fn a_server_whose_fetch_was_cut_short_by_the_time_left_is_not_marked_as_not_answering() {
        let (peers, sources, mine, owner, n) = two_hanging_members();
        // Less than MIN_FETCH_TIME in all: every request is cut short by the time left.
        let ask = Ask {
            peers: &peers,
            blobs: &mine,
            sources: &sources,
            n,
            limit: update_limit(Method::Int8, n),
            end: Instant::now() + MIN_FETCH_TIME * 3 / 4,
        };
        let r = fetch_update(&ask, &owner, &[7; 32]);
        assert!(matches!(r, Err(WorkerError::Unanswered(_))), "{r:?}");
        let hung = peers.hung_limits();
        assert!(hung.len() >= 2, "{hung:?}");
        assert!(hung.iter().all(|t| *t < MIN_FETCH_TIME), "{hung:?}");
        // Both hung, but neither within a limit that shows it does not answer: both may be
        // asked again this round.
        assert!(sources.unanswered.lock().expect("set").is_empty());
    }
    #[cfg(feature = "sim")]
    #[test]
    fn a_staggered_fetch_starts_at_most_one_request_every_stagger_however_fast_the_answers() {
        use crate::sim::{sim_key, SimPeers};
        /// The real sim peers, counting the requests made of them.
        struct Counted {
            inner: SimPeers,
            asked: AtomicUsize,
        }
        impl Peers for Counted {
            fn fetch(&self, uri: &str, addr: &Hash32, limit: usize, within: Duration) -> Result<Vec<u8>, WorkerError> {
                self.asked.fetch_add(1, Ordering::SeqCst);
                self.inner.fetch(uri, addr, limit, within)
            }
        }
        let uris: Vec<String> = (1..=3)
            .map(|i| format!("http://{}.sim", sim_key(i).address()))
            .collect();
        let mut inner = SimPeers::default();
        for u in &uris {
            // Nothing stored: every request is answered 404 at once.
            inner.add(u, BlobStore::new(8));
        }
        let peers = Counted {
            inner,
            asked: AtomicUsize::new(0),
        };
        let refs: Vec<&str> = uris.iter().map(String::as_str).collect();
        let unanswered = Mutex::new(BTreeSet::new());
        let t0 = Instant::now();
        let r = staggered(
            &peers,
            &refs,
            &[7; 32],
            100,
            Duration::from_secs(3),
            &unanswered,
            |_, b| Ok(b),
        );
        let spent = t0.elapsed();
        assert!(r.is_err());
        let asked = peers.asked.load(Ordering::SeqCst);
        // Every member was asked, and asked again in a later pass.
        assert!(asked > uris.len(), "{asked}");
        // Each request started at least a stagger after the one before it, answered or not.
        let most = 1 + (spent.as_millis() / FALLBACK_STAGGER.as_millis()) as usize;
        assert!(asked <= most, "{asked} requests in {spent:?}");
    }
}
