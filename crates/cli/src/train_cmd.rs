//! `pazar train …`: taking part in a training job from this machine.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, Subcommand};

use pazar_client::keyring::Keyring;
use pazar_client::Rpc;
use pazar_train::blobs::{self, BlobStore};
use pazar_train::data;
use pazar_train::node_chain::NodeChain;
use pazar_train::ops::Threads;
use pazar_train::state::Checkpoint;
use pazar_train::worker::{Adversary, Chain, HttpPeers, Step, Worker};
use pazar_types::Msg;

use crate::{home, ClientOpts};

#[derive(Subcommand)]
pub enum TrainCmd {
    /// Take part in a training job until it ends: train each round on the shards the beacon
    /// assigns, commit and reveal the update, serve it, audit and referee when drawn, aggregate
    /// and vote. The key must be a registered provider's.
    #[command(
        after_help = "Examples:\n  pazar train worker --job 0 --from worker1 --corpus-seed 11 --corpus-bytes 1638400 --join"
    )]
    Worker(WorkerOpts),
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
    /// wrong-shards, false-auditor or perturb:R.
    #[arg(long)]
    pub adversary: Option<Adversary>,
    /// Threads for the kernels (the result is the same bits for any count).
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
}

pub fn run(which: TrainCmd, opts: &ClientOpts) -> Result<()> {
    match which {
        TrainCmd::Worker(o) => worker(&o, opts),
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
    loop {
        match w.poll(&mut chain, &peers) {
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
    println!(
        "{}",
        serde_json::json!({
            "job": o.job,
            "worker": w.address.to_string(),
            "train_seconds": a.train_seconds,
            "audit_seconds": a.audit_seconds,
            "aggregate_seconds": a.aggregate_seconds,
            "steps_trained": a.steps_trained,
            "steps_replayed": a.steps_replayed,
            "bytes_fetched": a.bytes_fetched,
        })
    );
    Ok(())
}
