//! The protocol in one process, on the real ledger: each participant is a [`Worker`] with its
//! own key and blob store; a tick lets every participant take one step (in parallel threads,
//! since each trains on its own), then one block applies what they submitted. The ledger is
//! `pazar_ledger::State` itself, so every commitment, audit, slash and payment goes through the
//! same rules as on a node; only the transport (RPC, HTTP) is left out. The adversary tests and
//! `pazar bench train` run on it; `pazar train demo` runs the same workers as processes.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pazar_ledger::state::GenesisBalance;
use pazar_ledger::{BlockHeader, Genesis, Params, State};
use pazar_types::train::{AuditOutcome, JobSpec};
use pazar_types::{Address, Coin, Denom, Event, KeyScheme, Msg, ProviderInfo, SigningKey, TxBody};

use crate::blobs::BlobStore;
use crate::ops::Threads;
use crate::state::Hash32;
use crate::worker::{fetch_first_detached, Accept, Adversary, Chain, JobView, Peers, Step, Worker, WorkerError};

pub const CHAIN_ID: &str = "pazar-train-sim";
const FEE: u128 = 100;

pub fn native() -> Denom {
    Denom::new("upzr").unwrap_or_else(|_| unreachable!("a valid denomination"))
}

/// A deterministic key for participant `n` (0 is the job's owner).
pub fn sim_key(n: u32) -> SigningKey {
    let mut secret = [7u8; 32];
    secret[..4].copy_from_slice(&n.to_le_bytes());
    secret[31] = 1;
    SigningKey::from_secret(KeyScheme::Ed25519, &secret).unwrap_or_else(|_| unreachable!("a valid secret"))
}

/// The ledger and the transactions waiting for the next block.
pub struct Ledger {
    pub state: State,
    pending: Vec<Vec<u8>>,
    seqs: BTreeMap<Address, u64>,
    /// Every event so far, with its height.
    pub events: Vec<(u64, Event)>,
    /// Messages sent too late for the next block (in a paced sim, [`Sim::pace`]): each with
    /// the height of the block it lands in, submitted then (and refused then if the ledger no
    /// longer takes it).
    late: Vec<(u64, SigningKey, Msg)>,
    /// Messages that landed late and were refused, with the height they landed at.
    pub refused_late: Vec<(u64, Msg)>,
}

impl Ledger {
    pub fn new(keys: &[&SigningKey]) -> Result<Ledger, WorkerError> {
        let genesis = Genesis {
            chain_id: CHAIN_ID.into(),
            params: Params::devnet("upzr", "uusd"),
            balances: keys
                .iter()
                .map(|k| GenesisBalance {
                    address: k.address(),
                    coins: vec![Coin::new(1_000_000_000_000, native())],
                })
                .collect(),
        };
        let state = State::from_genesis(&genesis).map_err(|e| WorkerError::Chain(e.to_string()))?;
        Ok(Ledger {
            state,
            pending: Vec::new(),
            seqs: BTreeMap::new(),
            events: Vec::new(),
            late: Vec::new(),
            refused_late: Vec::new(),
        })
    }

    fn sign(&mut self, key: &SigningKey, msg: Msg) -> Vec<u8> {
        let seq = self.seqs.entry(key.address()).or_insert(0);
        let body = TxBody {
            chain_id: CHAIN_ID.into(),
            sender: key.address(),
            sequence: *seq,
            fee: Coin::new(FEE, native()),
            msgs: vec![msg],
            memo: String::new(),
        };
        *seq += 1;
        body.sign(key).encode()
    }

    /// Queues `msg` for the next block if the ledger would accept it now; its refusal otherwise.
    pub fn submit(&mut self, key: &SigningKey, msg: Msg) -> Result<(), WorkerError> {
        let bytes = self.sign(key, msg);
        let header = BlockHeader {
            chain_id: CHAIN_ID.into(),
            height: self.state.height + 1,
            time_ms: 0,
        };
        let mut txs = self.pending.clone();
        txs.push(bytes.clone());
        let receipts = self
            .state
            .simulate_txs(&header, &txs, &[])
            .map_err(|e| WorkerError::Chain(e.to_string()))?;
        let r = receipts.last().ok_or_else(|| WorkerError::Chain("no receipt".into()))?;
        if !r.is_ok() {
            // A refused message is not queued, so its sequence number is still the next one
            // (keeping it taken would make every later message of this key a mismatch).
            if let Some(s) = self.seqs.get_mut(&key.address()) {
                *s -= 1;
            }
            return Err(WorkerError::Chain(format!("{}/{}: {}", r.codespace, r.code, r.log)));
        }
        self.pending.push(bytes);
        Ok(())
    }

    /// Applies one block of what is pending; returns its events.
    pub fn block(&mut self) -> Result<Vec<Event>, WorkerError> {
        let height = self.state.height + 1;
        let (due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.late)
            .into_iter()
            .partition(|(h, _, _)| *h <= height);
        self.late = later;
        for (_, key, msg) in due {
            if self.submit(&key, msg.clone()).is_err() {
                self.refused_late.push((height, msg));
            }
        }
        let header = BlockHeader {
            chain_id: CHAIN_ID.into(),
            height: self.state.height + 1,
            time_ms: 0,
        };
        let txs = std::mem::take(&mut self.pending);
        let out = self
            .state
            .apply_block(&header, &txs)
            .map_err(|e| WorkerError::Chain(e.to_string()))?;
        let mut events: Vec<Event> = out.receipts.into_iter().flat_map(|r| r.events).collect();
        events.extend(out.end_block_events);
        let h = self.state.height;
        self.events.extend(events.iter().cloned().map(|e| (h, e)));
        Ok(events)
    }

    pub fn view(&self, job: u64) -> Result<JobView, WorkerError> {
        let s = &self.state;
        let j = s.train_job(job).cloned().ok_or_else(|| WorkerError::Job {
            job,
            reason: "no such job".into(),
        })?;
        let previous = j.round.checked_sub(1).and_then(|r| s.round_record(job, r).cloned());
        Ok(JobView {
            id: job,
            members: s.train_members(job).map(|(a, m)| (a, m.clone())).collect(),
            works: s.round_workers(job, j.round).map(|(a, w)| (a, w.clone())).collect(),
            audits: s.train_audits(job, j.round).map(|(a, r)| (a, r.clone())).collect(),
            height: s.height,
            previous,
            job: j,
        })
    }
}

/// How long a message takes to reach the node in a paced sim.
pub const SUBMIT_LATENCY: Duration = Duration::from_millis(50);

/// One participant's handle on the shared ledger.
pub struct Handle {
    pub ledger: Arc<Mutex<Ledger>>,
    pub key: SigningKey,
    /// The sim's pace, if any ([`Sim::pace`]), and when this participant last read the ledger.
    pace: Option<Duration>,
    viewed: Option<(u64, Instant)>,
}

impl Handle {
    fn lock(&self) -> std::sync::MutexGuard<'_, Ledger> {
        self.ledger.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Chain for Handle {
    fn view(&mut self, job: u64) -> Result<JobView, WorkerError> {
        let v = self.lock().view(job)?;
        self.viewed = Some((v.height, Instant::now()));
        Ok(v)
    }

    /// In a paced sim a message lands in the block produced at the time it reaches the node:
    /// read at height h and sent `t` later, [`SUBMIT_LATENCY`] on its way, in block
    /// h + 1 + ⌊(t + latency) / pace⌋ (checked by the ledger then).
    fn submit(&mut self, msg: Msg) -> Result<(), WorkerError> {
        let key = self.key.clone();
        if let (Some(pace), Some((h, at))) = (self.pace, self.viewed) {
            let t = at.elapsed() + SUBMIT_LATENCY;
            let blocks = (t.as_secs_f64() / pace.as_secs_f64()) as u64;
            if blocks > 0 {
                self.lock().late.push((h + 1 + blocks, key, msg));
                return Ok(());
            }
        }
        self.lock().submit(&key, msg)
    }

    /// The pace, or a second when the sim is not paced (its blocks then wait for every
    /// participant's step, so a participant may take its time as on a slow chain).
    fn block_time(&self) -> Option<Duration> {
        Some(self.pace.unwrap_or(Duration::from_secs(1)))
    }

    fn waits_for_participants(&self) -> bool {
        self.pace.is_none()
    }
}

/// Every participant's blob store, by the `blob_uri` it joined with.
#[derive(Default, Clone)]
pub struct SimPeers {
    stores: BTreeMap<String, Arc<BlobStore>>,
    fetched: Arc<Mutex<u64>>,
    /// Participants whose server accepts and never answers: a fetch from them waits for its
    /// whole time limit, then fails.
    hanging: BTreeSet<String>,
    /// Participants whose server hangs on a blob it does not hold rather than answering 404.
    hanging_on_missing: BTreeSet<String>,
    /// The time limit of every fetch from a hanging participant.
    hung: Arc<Mutex<Vec<Duration>>>,
}

impl SimPeers {
    pub fn add(&mut self, uri: &str, store: Arc<BlobStore>) {
        self.stores.insert(uri.to_string(), store);
    }

    /// Makes the participant at `uri` a server that never answers.
    pub fn hang(&mut self, uri: &str) {
        self.hanging.insert(uri.to_string());
    }

    /// Makes the participant at `uri` a server that never answers a request for a blob it
    /// does not serve (and serves the others).
    pub fn hang_on_missing(&mut self, uri: &str) {
        self.hanging_on_missing.insert(uri.to_string());
    }

    fn hang_for(&self, uri: &str, within: Duration) -> WorkerError {
        self.hung.lock().unwrap_or_else(|e| e.into_inner()).push(within);
        std::thread::sleep(within);
        WorkerError::Unanswered(format!("{uri}: no answer within {within:?}"))
    }

    /// The time limits that fetches from hanging participants waited out.
    pub fn hung_limits(&self) -> Vec<Duration> {
        self.hung.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Bytes moved between participants so far.
    pub fn bytes(&self) -> u64 {
        *self.fetched.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Peers for SimPeers {
    fn fetch(&self, uri: &str, addr: &Hash32, limit: usize, within: Duration) -> Result<Vec<u8>, WorkerError> {
        if self.hanging.contains(uri) {
            return Err(self.hang_for(uri, within));
        }
        let store = self
            .stores
            .get(uri)
            .ok_or_else(|| WorkerError::Peer(format!("{uri}: unreachable")))?;
        let Some(b) = store.get(addr) else {
            if self.hanging_on_missing.contains(uri) {
                return Err(self.hang_for(uri, within));
            }
            return Err(WorkerError::Peer(format!("{uri}: HTTP 404")));
        };
        if b.len() > limit {
            return Err(WorkerError::Peer(format!("{uri}: larger than {limit} bytes")));
        }
        *self.fetched.lock().unwrap_or_else(|e| e.into_inner()) += b.len() as u64;
        Ok(b.to_vec())
    }

    /// As over HTTP: the first accepted answer returns at once, whatever the others do.
    fn fetch_first(
        &self,
        uris: &[String],
        addr: &Hash32,
        limit: usize,
        within: Duration,
        accept: Accept<'_>,
    ) -> Result<Vec<u8>, WorkerError> {
        let (me, addr) = (self.clone(), *addr);
        fetch_first_detached(uris, accept, move |uri| me.fetch(uri, &addr, limit, within))
    }
}

/// A job with its owner and participants on one in-process ledger.
pub struct Sim {
    pub ledger: Arc<Mutex<Ledger>>,
    spec: JobSpec,
    pub owner: SigningKey,
    pub job: u64,
    pub workers: Vec<(Handle, Worker)>,
    pub peers: SimPeers,
    /// The last step of each worker, for reports.
    pub steps: Vec<Vec<(u64, Step)>>,
    /// A block at most this often, if set ([`Sim::pace`]).
    pace: Option<Duration>,
    last_block: Instant,
}

/// The `blob_uri` participant `i` (from 0, in the order of [`Sim::workers`]) joins with.
pub fn worker_uri(i: usize) -> String {
    format!("http://worker-{i}.sim:9000")
}

/// A provider's registration (workers are providers).
pub fn provider_msg(uri: &str) -> Msg {
    Msg::CreateProvider {
        host_uri: uri.to_string(),
        tls_fingerprint: [7; 32],
        attributes: vec![],
        info: ProviderInfo {
            email: "trainer@example.com".into(),
            website: String::new(),
        },
    }
}

impl Sim {
    /// Registers the dataset of `chunks` and opens `spec` (its `dataset` and `init_checkpoint`
    /// must already name these chunks and `init`), then lets `workers` providers join.
    pub fn new(
        spec: JobSpec,
        chunks: Vec<Vec<u8>>,
        init: crate::state::Checkpoint,
        workers: usize,
        threads: Threads,
    ) -> Result<Sim, WorkerError> {
        let owner = sim_key(0);
        let keys: Vec<SigningKey> = (1..=workers as u32).map(sim_key).collect();
        let mut all: Vec<&SigningKey> = vec![&owner];
        all.extend(keys.iter());
        let mut ledger = Ledger::new(&all)?;
        let dataset = crate::data::Dataset::from_corpus(&chunks.concat())?;
        ledger.submit(
            &owner,
            Msg::RegisterDataset {
                spec: pazar_types::train::DatasetSpec {
                    name: "generated corpus".into(),
                    root: dataset.root(),
                    chunks: dataset.count(),
                    bytes: dataset.total_bytes(),
                    contributors: vec![pazar_types::train::Contributor {
                        address: owner.address(),
                        chunks: dataset.count(),
                    }],
                },
            },
        )?;
        ledger.block()?;
        ledger.submit(&owner, Msg::OpenJob { spec: spec.clone() })?;
        ledger.block()?;
        let job = ledger
            .state
            .train_jobs()
            .map(|(id, _)| id)
            .last()
            .ok_or_else(|| WorkerError::Chain("the job did not open".into()))?;
        let ledger = Arc::new(Mutex::new(ledger));
        let mut peers = SimPeers::default();
        // Every worker registers as a provider and joins in the same blocks, so that all of them
        // take part from round 0.
        let uri = worker_uri;
        {
            let mut l = ledger.lock().unwrap_or_else(|e| e.into_inner());
            for (i, k) in keys.iter().enumerate() {
                l.submit(k, provider_msg(&format!("https://worker-{i}.sim:8443")))?;
            }
            l.block()?;
            for (i, k) in keys.iter().enumerate() {
                l.submit(k, Msg::JoinJob { job, blob_uri: uri(i) })?;
            }
            l.block()?;
        }
        let mut out = Vec::new();
        for (i, k) in keys.into_iter().enumerate() {
            let store = BlobStore::new(4096);
            peers.add(&uri(i), store.clone());
            let mut w = Worker::new(k.address(), job, &spec, chunks.clone(), store, threads)?;
            w.add_checkpoint(init.clone());
            out.push((
                Handle {
                    ledger: ledger.clone(),
                    key: k,
                    pace: None,
                    viewed: None,
                },
                w,
            ));
        }
        let n = out.len();
        Ok(Sim {
            ledger,
            spec,
            owner,
            job,
            workers: out,
            peers,
            steps: vec![Vec::new(); n],
            pace: None,
            last_block: Instant::now(),
        })
    }

    /// Paces the sim like a chain: a block at most every `block_time` (a tick that takes
    /// longer makes a later block), every participant told the node's block time, and a
    /// message that a participant sends `t` after reading the ledger lands `⌊t / block_time⌋`
    /// blocks later than the next one, where the ledger may refuse it. Time spent waiting on a
    /// peer then costs blocks, as it does on a chain.
    pub fn pace(&mut self, block_time: Duration) {
        self.pace = Some(block_time);
        for (h, _) in &mut self.workers {
            h.pace = Some(block_time);
        }
    }

    /// The job as opened.
    pub fn spec(&self) -> &JobSpec {
        &self.spec
    }

    /// One tick: every participant takes one step (in parallel), then one block. Returns
    /// whether the job is over and each participant's step (an error is kept as the
    /// participant's own failure: the others go on, as separate machines would).
    pub fn tick(&mut self) -> Result<(bool, Vec<Result<Step, String>>), WorkerError> {
        let peers = &self.peers;
        let results: Vec<Result<Step, String>> = std::thread::scope(|s| {
            let handles: Vec<_> = self
                .workers
                .iter_mut()
                .map(|(h, w)| s.spawn(move || w.poll(h, peers).map_err(|e| e.to_string())))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|_| Err("a participant panicked".to_string())))
                .collect()
        });
        if let Some(pace) = self.pace {
            std::thread::sleep(pace.saturating_sub(self.last_block.elapsed()));
        }
        let mut l = self.ledger.lock().unwrap_or_else(|e| e.into_inner());
        l.block()?;
        self.last_block = Instant::now();
        let height = l.state.height;
        for (i, r) in results.iter().enumerate() {
            if let Ok(step) = r {
                if *step != Step::Idle {
                    self.steps[i].push((height, step.clone()));
                }
            }
        }
        let over = l.state.train_job(self.job).is_none_or(|j| {
            matches!(
                j.state,
                pazar_types::train::JobState::Finished | pazar_types::train::JobState::Cancelled
            )
        });
        Ok((over, results))
    }

    /// Ticks until the job is over or `max_ticks` pass.
    pub fn run(&mut self, max_ticks: u64) -> Result<u64, WorkerError> {
        for t in 0..max_ticks {
            let (over, _) = self.tick()?;
            if over {
                return Ok(t + 1);
            }
        }
        Err(WorkerError::Job {
            job: self.job,
            reason: format!("not over after {max_ticks} ticks"),
        })
    }
}

/// A small job for trying the protocol's rules quickly: a 1-layer model, 4 inner steps in two
/// segments, three workers needed, top-k + int8 compression with error feedback.
pub fn small_spec(rounds: u32, audit_per_mille: u16) -> JobSpec {
    use pazar_types::train::{Compression, ModelSpec, PhaseBlocks, TrainParams};
    JobSpec {
        name: "protocol-trial".into(),
        model: ModelSpec {
            vocab: 256,
            dim: 16,
            layers: 1,
            heads: 2,
            ffn_dim: 32,
            seq_len: 16,
        },
        dataset: [0; 32],
        init_checkpoint: [0; 32],
        params: TrainParams {
            inner_steps: 4,
            segment_steps: 2,
            batch: 2,
            inner_lr_micro: 3_000,
            weight_decay_micro: 0,
            outer_lr_milli: 700,
            outer_momentum_milli: 900,
            compression: Compression::TopKInt8 { per_mille: 200 },
            seed: 1,
        },
        min_workers: 3,
        max_workers: 6,
        rounds,
        phases: PhaseBlocks {
            train: 3,
            commit: 2,
            reveal: 2,
            audit: 3,
            dispute: 2,
            aggregate: 3,
        },
        budget: Coin::new(1_200_000, native()),
        bond: Coin::new(10_000, native()),
        audit_per_mille,
        referees: 3,
    }
}

/// A job of `spec` on a generated corpus of `corpus_bytes`, started from the model's initial
/// weights (or `init` when given), with `workers` honest workers.
pub fn job(
    mut spec: JobSpec,
    corpus_seed: u64,
    corpus_bytes: usize,
    init: Option<Vec<f32>>,
    workers: usize,
    threads: Threads,
) -> Result<Sim, WorkerError> {
    let corpus = crate::data::generate_corpus(corpus_seed, corpus_bytes);
    let chunks: Vec<Vec<u8>> = crate::data::chunks(&corpus).map(<[u8]>::to_vec).collect();
    let dataset = crate::data::Dataset::from_corpus(&corpus)?;
    spec.dataset = dataset.root();
    let cfg = crate::worker::train_config(&spec, dataset.train_count())?;
    let model = crate::model::Model::new(cfg.model, threads).map_err(crate::round::RoundError::from)?;
    let init = crate::state::Checkpoint::initial(init.unwrap_or_else(|| model.init_params(spec.params.seed)));
    spec.init_checkpoint = init.hash();
    Sim::new(spec, chunks, init, workers, threads)
}

/// What happened to one cheater among honest workers ([`trial`]).
pub struct Trial {
    pub adversary: Adversary,
    pub cheat: Address,
    pub honest: Vec<Address>,
    pub events: Vec<Event>,
    /// The tokens one included update, or one upheld audit, earns in a round.
    pub round_tokens: u128,
}

impl Trial {
    pub fn slashes(&self) -> Vec<(Address, pazar_types::train::SlashReason)> {
        self.events
            .iter()
            .filter_map(|e| match e {
                Event::TrainSlashed { worker, reason, .. } => Some((*worker, *reason)),
                _ => None,
            })
            .collect()
    }

    /// The tokens `who` was paid for in each round it was paid (its included update and its
    /// upheld audits, [`Trial::round_tokens`] each).
    pub fn tokens(&self, who: &Address) -> Vec<(u32, u64)> {
        self.events
            .iter()
            .filter_map(|e| match e {
                Event::TrainRewarded {
                    worker, round, tokens, ..
                } if worker == who => Some((*round, *tokens)),
                _ => None,
            })
            .collect()
    }

    /// Rounds for which `who` was paid.
    pub fn paid_rounds(&self, who: &Address) -> Vec<u32> {
        self.events
            .iter()
            .filter_map(|e| match e {
                Event::TrainRewarded { worker, round, .. } if worker == who => Some(*round),
                _ => None,
            })
            .collect()
    }

    /// Whether the protocol caught the cheat: slashed for what it did (a failed audit, a false
    /// audit, a withheld reveal), or, for a crash, paid for no round after it.
    pub fn caught(&self) -> bool {
        use pazar_types::train::SlashReason as R;
        let s = self.slashes();
        match self.adversary {
            Adversary::Withhold => s.contains(&(self.cheat, R::WithheldReveal)),
            Adversary::FalseAuditor => s.contains(&(self.cheat, R::FalseAudit)),
            Adversary::Crash => self.paid_rounds(&self.cheat).iter().all(|r| *r < 1),
            // Its passes were refused: every audit it was given ended with no verdict, unpaid.
            Adversary::LazyAuditor => {
                let given = self.audits(|_, auditor| auditor == self.cheat);
                !given.is_empty() && given.iter().all(|o| *o == AuditOutcome::Missing)
            }
            // Nobody could pass it: each audit of it left it out, its round unpaid.
            Adversary::BadSeal | Adversary::DodgeAudit => {
                let of = self.audits(|target, _| target == self.cheat);
                !of.is_empty() && of.iter().all(|o| *o == AuditOutcome::Unavailable)
            }
            // Every checkpoint was made without its update, which it was not paid for.
            Adversary::HideUpdate => {
                let unserved: Vec<bool> = self
                    .events
                    .iter()
                    .filter_map(|e| match e {
                        Event::TrainCheckpoint { unserved, .. } => Some(unserved.contains(&self.cheat)),
                        _ => None,
                    })
                    .collect();
                !unserved.is_empty() && unserved.iter().all(|u| *u)
            }
            // The stall failed: every round settled with a checkpoint.
            Adversary::SelectiveServe => {
                let settled = self
                    .events
                    .iter()
                    .filter(|e| matches!(e, Event::TrainCheckpoint { .. }))
                    .count();
                let failed = self.events.iter().any(|e| matches!(e, Event::TrainRoundFailed { .. }));
                settled > 0 && !failed
            }
            _ => s.contains(&(self.cheat, R::FailedAudit)),
        }
    }

    /// The outcomes of the audits whose (target, auditor) `pick` accepts.
    pub fn audits(&self, pick: impl Fn(Address, Address) -> bool) -> Vec<AuditOutcome> {
        self.events
            .iter()
            .filter_map(|e| match e {
                Event::TrainAuditSettled {
                    target,
                    auditor,
                    outcome,
                    ..
                } if pick(*target, *auditor) => Some(*outcome),
                _ => None,
            })
            .collect()
    }

    /// Honest workers slashed (the protocol's goal: none, ever).
    pub fn false_slashes(&self) -> usize {
        self.slashes().iter().filter(|(w, _)| self.honest.contains(w)).count()
    }
}

/// Four workers on [`small_spec`] for three rounds, every worker audited every round, the
/// first cheating as `adversary`.
pub fn trial(adversary: Adversary) -> Result<Trial, WorkerError> {
    let mut s = job(
        small_spec(3, 1000),
        3,
        8 * crate::data::CHUNK_BYTES,
        None,
        4,
        Threads::ONE,
    )?;
    s.workers[0].1.adversary = Some(adversary);
    let round_tokens = s.spec().round_tokens();
    // A slashed cheater leaves and the job goes on with three; either way it ends.
    s.run(600)?;
    let events = s
        .ledger
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .events
        .iter()
        .map(|(_, e)| e.clone())
        .collect();
    Ok(Trial {
        adversary,
        cheat: s.workers[0].0.key.address(),
        honest: s.workers[1..].iter().map(|(h, _)| h.key.address()).collect(),
        events,
        round_tokens,
    })
}
