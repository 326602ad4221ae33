//! `pazar model show HASH`: where a checkpoint came from, as the ledger recorded it. Walks the
//! provenance records (`/train/checkpoints/{hash}`, then each job's settled rounds) back to the
//! job's initial checkpoint, checking at each step that a record's `previous` is the checkpoint
//! the round before produced.

use anyhow::Result;
use clap::Subcommand;
use serde::{Deserialize, Serialize};

use pazar_api::node::RoundStatus;
use pazar_client::{ClientError, Rpc};
use pazar_types::train::{AuditOutcome, AuditSummary, DatasetRecord, RoundRecord};
use pazar_types::tx::hex_array;
use pazar_types::{Address, Hash32};

use crate::failure::{Exit, Failure};
use crate::{chain, home, ClientOpts, Output};

#[derive(Subcommand)]
pub enum ModelCmd {
    /// The provenance of a checkpoint: round by round back to its job's initial checkpoint,
    /// with the dataset, the workers whose updates each round included, the audits and the
    /// tokens trained.
    #[command(after_help = "Examples:\n  pazar model show 9ab2…(64 hex)\n  pazar model show 9ab2… --job 0 -o json")]
    Show {
        /// The checkpoint's hash (64 hex).
        hash: String,
        /// Only the job with this id (any job may vote a checkpoint; without it, every job
        /// that produced this one is walked).
        #[arg(long)]
        job: Option<u64>,
    },
}

/// The provenance of one checkpoint: one lineage per job whose round produced it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Provenance {
    #[serde(with = "hex_array")]
    pub checkpoint: Hash32,
    pub lineages: Vec<Lineage>,
}

/// One job's chain of rounds from its initial checkpoint to the checkpoint asked about.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Lineage {
    pub job: u64,
    pub job_name: String,
    #[serde(with = "hex_array")]
    pub initial_checkpoint: Hash32,
    /// The dataset every round trained on, as registered.
    #[serde(with = "hex_array")]
    pub dataset_root: Hash32,
    pub dataset: DatasetRecord,
    /// Newest first: the round that produced the checkpoint asked about, then the one before…
    pub rounds: Vec<Link>,
    /// Tokens trained into the checkpoint over every round.
    #[serde(with = "pazar_types::coin::u128_string")]
    pub tokens: u128,
}

/// One round of a lineage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Link {
    pub round: u32,
    #[serde(with = "hex_array")]
    pub checkpoint: Hash32,
    #[serde(with = "hex_array")]
    pub previous: Hash32,
    pub height: u64,
    /// Workers whose updates the round included, in address order.
    pub contributors: Vec<Address>,
    pub audits: Vec<AuditSummary>,
    /// Tokens of the included updates (`inner_steps × batch × seq_len` each).
    #[serde(with = "pazar_types::coin::u128_string")]
    pub tokens: u128,
    /// Of those, the tokens of updates an audit replayed and passed.
    #[serde(with = "pazar_types::coin::u128_string")]
    pub audited_tokens: u128,
}

pub fn run(which: ModelCmd, opts: &ClientOpts) -> Result<()> {
    match which {
        ModelCmd::Show { hash, job } => {
            let hash = crate::train_cmd::parse_hash(&hash)?;
            let h = home::resolve(opts.home.clone());
            let rpc = Rpc::new(&home::node_url(opts.node.clone(), &h));
            let p = provenance(&rpc, &hash, job)?;
            match opts.output {
                Output::Json => println!("{}", serde_json::to_string_pretty(&p)?),
                Output::Text => println!("{}", text(&p)),
            }
            Ok(())
        }
    }
}

fn not_found(e: ClientError, what: String) -> anyhow::Error {
    if e.is_not_found() {
        chain::client_err(e).context(what)
    } else {
        chain::client_err(e)
    }
}

/// The provenance of `checkpoint` as the node at `rpc` records it (only job `job`'s, if given).
pub fn provenance(rpc: &Rpc, checkpoint: &Hash32, job: Option<u64>) -> Result<Provenance> {
    let hex = hex::encode(checkpoint);
    let p = rpc.train_checkpoint(checkpoint).map_err(|e| {
        not_found(
            e,
            format!("checkpoint {hex} is unknown to the ledger: no round of any training job produced it"),
        )
    })?;
    let records: Vec<RoundRecord> = p
        .rounds
        .into_iter()
        .filter(|r| job.is_none_or(|j| r.job == j))
        .collect();
    if records.is_empty() {
        return Err(Failure::new(
            Exit::Refused,
            "not_found",
            format!(
                "checkpoint {hex} was not produced by job {}",
                job.map_or_else(|| "-".into(), |j| j.to_string())
            ),
        )
        .into());
    }
    let lineages = records
        .into_iter()
        .map(|r| lineage(rpc, r))
        .collect::<Result<Vec<_>>>()?;
    Ok(Provenance {
        checkpoint: *checkpoint,
        lineages,
    })
}

fn broken(job: u64, why: String) -> anyhow::Error {
    Failure::new(
        Exit::Refused,
        "bad_answer",
        format!("the provenance of job {job} does not hold together: {why}"),
    )
    .into()
}

/// Walks `first` back to its job's initial checkpoint.
fn lineage(rpc: &Rpc, first: RoundRecord) -> Result<Lineage> {
    let id = first.job;
    let job = rpc
        .train_job(id, false)
        .map_err(|e| not_found(e, format!("job {id}")))?
        .item
        .job;
    let spec = job.spec;
    let round_tokens = spec.round_tokens();
    let dataset = rpc
        .train_dataset(&spec.dataset, false)
        .map_err(|e| not_found(e, format!("dataset {} of job {id}", hex::encode(spec.dataset))))?
        .item
        .dataset;
    let mut rounds = Vec::new();
    let mut rec = first;
    loop {
        // Each step goes to an earlier round, so a job of `rounds` rounds has at most that
        // many; a longer walk means the node answers in a circle.
        if rounds.len() >= spec.rounds as usize {
            return Err(broken(id, format!("more than its {} rounds lead back", spec.rounds)));
        }
        if rec.dataset != spec.dataset {
            return Err(broken(id, format!("round {} names another dataset", rec.round)));
        }
        let passed: Vec<Address> = rec
            .audits
            .iter()
            .filter(|a| a.outcome == AuditOutcome::Pass)
            .map(|a| a.target)
            .collect();
        let contributors: Vec<Address> = rec.included.iter().map(|u| u.worker).collect();
        let audited = contributors.iter().filter(|w| passed.contains(w)).count() as u128;
        rounds.push(Link {
            round: rec.round,
            checkpoint: rec.checkpoint,
            previous: rec.previous,
            height: rec.height,
            tokens: contributors.len() as u128 * round_tokens,
            audited_tokens: audited * round_tokens,
            contributors,
            audits: rec.audits.clone(),
        });
        let Some(before) = rec.previous_round else {
            if rec.previous != spec.init_checkpoint {
                return Err(broken(
                    id,
                    format!(
                        "round {} starts from {}, the job from {}",
                        rec.round,
                        hex::encode(rec.previous),
                        hex::encode(spec.init_checkpoint)
                    ),
                ));
            }
            break;
        };
        if before >= rec.round {
            return Err(broken(id, format!("round {} follows round {before}", rec.round)));
        }
        let r = rpc
            .train_round(id, before)
            .map_err(|e| not_found(e, format!("round {before} of job {id}")))?;
        let RoundStatus::Settled { record: Some(prev) } = r.status else {
            return Err(broken(id, format!("round {before} produced no checkpoint")));
        };
        if prev.checkpoint != rec.previous {
            return Err(broken(
                id,
                format!(
                    "round {} starts from {}, round {before} produced {}",
                    rec.round,
                    hex::encode(rec.previous),
                    hex::encode(prev.checkpoint)
                ),
            ));
        }
        rec = prev;
    }
    let tokens = rounds.iter().map(|l| l.tokens).sum();
    Ok(Lineage {
        job: id,
        job_name: spec.name,
        initial_checkpoint: spec.init_checkpoint,
        dataset_root: spec.dataset,
        dataset,
        rounds,
        tokens,
    })
}

/// A value's name as its JSON spells it (`failed_audit`, `caught`).
pub(crate) fn json_name<T: Serialize>(v: &T) -> String {
    match serde_json::to_value(v) {
        Ok(serde_json::Value::String(s)) => s,
        Ok(other) => other.to_string(),
        Err(_) => String::new(),
    }
}

fn short(h: &Hash32) -> String {
    hex::encode(&h[..6])
}

/// The provenance for people; `name` gives known addresses a name (the demo's workers).
pub fn text_with(p: &Provenance, name: &dyn Fn(&Address) -> String) -> String {
    let mut out = format!("checkpoint {}", hex::encode(p.checkpoint));
    for l in &p.lineages {
        let d = &l.dataset.spec;
        out.push_str(&format!(
            "\n  job {} ({}): {} rounds back to its initial checkpoint {}\n  dataset {} {:?}: {} chunks, {} bytes, registered by {} at height {}; contributors: {}",
            l.job,
            l.job_name,
            l.rounds.len(),
            short(&l.initial_checkpoint),
            short(&l.dataset_root),
            d.name,
            d.chunks,
            d.bytes,
            name(&l.dataset.registrant),
            l.dataset.height,
            d.contributors
                .iter()
                .map(|c| format!("{} ({} chunks)", name(&c.address), c.chunks))
                .collect::<Vec<_>>()
                .join(", ")
        ));
        for k in &l.rounds {
            let audits: Vec<String> = k
                .audits
                .iter()
                .map(|a| format!("{} by {} {}", name(&a.target), name(&a.auditor), json_name(&a.outcome)))
                .collect();
            out.push_str(&format!(
                "\n    round {:>3}  {} <- {}  height {}  from {}; audits: {}; tokens {} ({} audited)",
                k.round,
                short(&k.checkpoint),
                short(&k.previous),
                k.height,
                k.contributors.iter().map(name).collect::<Vec<_>>().join(", "),
                if audits.is_empty() {
                    "none".into()
                } else {
                    audits.join(", ")
                },
                k.tokens,
                k.audited_tokens
            ));
        }
        out.push_str(&format!(
            "\n    initial    {}\n  {} tokens trained into it",
            short(&l.initial_checkpoint),
            l.tokens
        ));
    }
    out
}

pub fn text(p: &Provenance) -> String {
    text_with(p, &|a: &Address| a.to_string())
}
