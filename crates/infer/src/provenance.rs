//! The provenance of a checkpoint: round by round back to its job's initial checkpoint, with the
//! dataset, the workers whose updates each round included, the audits and the tokens trained.
//!
//! One walk ([`lineage`]) over any [`Source`] of ledger records: the node's RPC (`pazar model
//! show HASH`) or the proven records a model bundle carries (`pazar model verify`, offline). It
//! checks at each step that a round's `previous` is the checkpoint the round before produced,
//! that every round names the job's dataset, and that the first round starts from the job's
//! initial checkpoint, so a source that answers in a circle or splices two jobs is refused.

use serde::{Deserialize, Serialize};

use pazar_types::train::{AuditOutcome, AuditSummary, DatasetRecord, RoundRecord, TrainJob};
use pazar_types::tx::hex_array;
use pazar_types::{Address, Hash32};

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

/// Why a walk stopped.
#[derive(Debug, thiserror::Error)]
pub enum WalkError {
    /// The source has no such record (the node does not know it; the bundle carries no proof
    /// of it).
    #[error("{0}")]
    Missing(String),
    /// The records do not hold together.
    #[error("the provenance of job {job} does not hold together: {why}")]
    Broken { job: u64, why: String },
    /// The source failed (a network or decoding error); its message.
    #[error("{0}")]
    Source(String),
}

/// Where the walk reads ledger records.
pub trait Source {
    fn job(&mut self, id: u64) -> Result<TrainJob, WalkError>;
    fn dataset(&mut self, root: &Hash32) -> Result<DatasetRecord, WalkError>;
    /// The record of a settled round of `job`; [`WalkError::Missing`] when there is none.
    fn round(&mut self, job: u64, round: u32) -> Result<RoundRecord, WalkError>;
}

fn broken(job: u64, why: String) -> WalkError {
    WalkError::Broken { job, why }
}

/// Walks `first` (a round's provenance record) back to its job's initial checkpoint.
pub fn lineage(src: &mut dyn Source, first: RoundRecord) -> Result<Lineage, WalkError> {
    let id = first.job;
    let spec = src.job(id)?.spec;
    let round_tokens = spec.round_tokens();
    let dataset = src.dataset(&spec.dataset)?;
    let mut rounds = Vec::new();
    let mut rec = first;
    loop {
        // Each step goes to an earlier round, so a job of `rounds` rounds has at most that
        // many; a longer walk means the source answers in a circle.
        if rounds.len() >= spec.rounds as usize {
            return Err(broken(id, format!("more than its {} rounds lead back", spec.rounds)));
        }
        if rec.job != id {
            return Err(broken(
                id,
                format!("round {} is a record of job {}", rec.round, rec.job),
            ));
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
        let prev = src.round(id, before)?;
        if prev.round != before {
            return Err(broken(
                id,
                format!("the record of round {before} is round {}'s", prev.round),
            ));
        }
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
pub fn json_name<T: Serialize>(v: &T) -> String {
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
            "\n    initial    {} (the job's starting weights, as its owner named them: not a product of any round)\n  {} tokens trained into it",
            short(&l.initial_checkpoint),
            l.tokens
        ));
    }
    out
}

pub fn text(p: &Provenance) -> String {
    text_with(p, &|a: &Address| a.to_string())
}
