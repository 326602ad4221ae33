//! Queries of training (issue 15): registered datasets, jobs, their members, the live round a
//! worker polls to know what to do next, and the provenance of checkpoints. Read under the
//! state's read lock like every query; single records (a dataset, a job) take `?prove=true`.
//! Members, rounds and checkpoints' provenance gather several store entries, so they carry no
//! proof: a client that needs one proves the job and reads the records it names.

use axum::extract::{Path, Query, State as AxState};
use axum::Json;

use pazar_api::node::{
    CheckpointProvenance, DatasetEntry, ListQuery, Proven, RoundAudit, RoundStatus, RoundWorker, TrainJobEntry,
    TrainJobPage, TrainMemberEntry, TrainMembers, TrainRound,
};
use pazar_ledger::state::{store_key, table_id};
use pazar_ledger::State;
use pazar_types::train::{JobState, TrainJob};

use super::errors::{parse, parse_hash, ApiError, ApiResult, Q};
use super::queries::{filters, list_query, page, parse_state, proven, ProveQ};
use super::Shared;
use crate::openapi::{ListErrors, LookupErrors, TrainJobListParams};

fn job_id(id: &str) -> Result<u64, ApiError> {
    parse("job id", id)
}

fn load_job(st: &State, id: u64) -> Result<&TrainJob, ApiError> {
    st.train_job(id)
        .ok_or_else(|| ApiError::not_found(format!("training job {id}")))
}

/// A registered dataset: its chunks' Merkle root, size, contributors and registrant.
#[utoipa::path(get, path = "/train/datasets/{root}", tag = "train",
    params(("root" = pazar_types::openapi::Hash, Path, description = "The dataset's Merkle root."), ProveQ),
    responses((status = 200, body = Proven<DatasetEntry>), LookupErrors))]
pub(super) async fn dataset(
    AxState(node): AxState<Shared>,
    Path(root): Path<String>,
    q: Q<ProveQ>,
) -> ApiResult<Proven<DatasetEntry>> {
    let Query(q) = q?;
    let root = parse_hash(&root)?;
    let st = node.state();
    let dataset = st
        .dataset(&root)
        .ok_or_else(|| ApiError::not_found(format!("dataset {}", hex::encode(root))))?
        .clone();
    let item = DatasetEntry { root, dataset };
    proven(&node, &st, item, store_key(table_id::DATASETS, &root), q.prove)
}

/// Training jobs by id, oldest first; `owner` and `state` (`recruiting`, `running`,
/// `finished`, `cancelled`) filter them.
#[utoipa::path(get, path = "/train/jobs", tag = "train", params(TrainJobListParams),
    responses((status = 200, body = TrainJobPage), ListErrors))]
pub(super) async fn jobs(AxState(node): AxState<Shared>, q: Q<ListQuery>) -> ApiResult<TrainJobPage> {
    let q = list_query(q, "/train/jobs", filters::TRAIN_JOBS)?;
    let want: Option<JobState> = q.state.as_deref().map(parse_state).transpose()?;
    let st = node.state();
    // The ledger yields ids by value; the pager compares keys by reference.
    let matching: Vec<(u64, &TrainJob)> = st
        .train_jobs()
        .filter(|(_, j)| q.owner.is_none_or(|o| j.owner == o) && want.is_none_or(|w| j.state == w))
        .collect();
    let it = matching.iter().map(|(id, j)| (id, *j));
    let (jobs, next) = page(&q, table_id::TRAIN_JOBS, it, |id, j| TrainJobEntry {
        id: *id,
        job: j.clone(),
    })?;
    Ok(Json(TrainJobPage {
        height: st.height,
        jobs,
        next,
    }))
}

/// A training job: its spec, state, current round and phase, escrow and bonds.
#[utoipa::path(get, path = "/train/jobs/{id}", tag = "train",
    params(("id" = u64, Path, description = "The job's id."), ProveQ),
    responses((status = 200, body = Proven<TrainJobEntry>), LookupErrors))]
pub(super) async fn job(
    AxState(node): AxState<Shared>,
    Path(id): Path<String>,
    q: Q<ProveQ>,
) -> ApiResult<Proven<TrainJobEntry>> {
    let Query(q) = q?;
    let id = job_id(&id)?;
    let st = node.state();
    let item = TrainJobEntry {
        id,
        job: load_job(&st, id)?.clone(),
    };
    proven(&node, &st, item, store_key(table_id::TRAIN_JOBS, &id), q.prove)
}

/// Every member of a job (at most 256), in address order, with its bond, blob URI and record.
#[utoipa::path(get, path = "/train/jobs/{id}/members", tag = "train",
    params(("id" = u64, Path, description = "The job's id.")),
    responses((status = 200, body = TrainMembers), LookupErrors))]
pub(super) async fn members(AxState(node): AxState<Shared>, Path(id): Path<String>) -> ApiResult<TrainMembers> {
    let id = job_id(&id)?;
    let st = node.state();
    load_job(&st, id)?;
    let members = st
        .train_members(id)
        .map(|(address, m)| TrainMemberEntry {
            address,
            member: m.clone(),
        })
        .collect();
    Ok(Json(TrainMembers {
        height: st.height,
        job: id,
        members,
    }))
}

/// A round of a job. The current round of a running job is `live`: its phase and deadlines,
/// each worker's commitment, reveal and vote, and the audits drawn (what a worker polls to
/// know what to do next). An earlier round is `settled`, with the provenance record of the
/// checkpoint it produced, if it produced one. A round that has not started is not found.
#[utoipa::path(get, path = "/train/jobs/{id}/rounds/{round}", tag = "train",
    params(("id" = u64, Path, description = "The job's id."), ("round" = u32, Path, description = "The round, from 0.")),
    responses((status = 200, body = TrainRound), LookupErrors))]
pub(super) async fn round(
    AxState(node): AxState<Shared>,
    Path((id, round)): Path<(String, String)>,
) -> ApiResult<TrainRound> {
    let id = job_id(&id)?;
    let round: u32 = parse("round", &round)?;
    let st = node.state();
    let j = load_job(&st, id)?;
    let status = if round < j.round {
        RoundStatus::Settled {
            record: st.round_record(id, round).cloned(),
        }
    } else if round == j.round && j.state == JobState::Running {
        RoundStatus::Live {
            phase: j.phase,
            round_start: j.round_start,
            deadline: j.deadline,
            audit_deadline: j.audit_deadline,
            beacon: j.beacon,
            checkpoint: j.checkpoint,
            workers: st
                .round_workers(id, round)
                .map(|(address, w)| RoundWorker {
                    address,
                    work: w.clone(),
                })
                .collect(),
            audits: st
                .train_audits(id, round)
                .map(|(target, a)| RoundAudit {
                    target,
                    audit: a.clone(),
                })
                .collect(),
        }
    } else {
        return Err(ApiError::not_found(format!(
            "round {round} of training job {id} (the job is {:?} at round {})",
            j.state, j.round
        )));
    };
    Ok(Json(TrainRound {
        height: st.height,
        job: id,
        round,
        status,
    }))
}

/// The rounds that produced a checkpoint, each with its provenance record: the checkpoint it
/// started from, the dataset, the included updates and the audits. Walk `previous` back to the
/// job's initial checkpoint (a record whose `previous_round` is null).
#[utoipa::path(get, path = "/train/checkpoints/{hash}", tag = "train",
    params(("hash" = pazar_types::openapi::Hash, Path, description = "The checkpoint's hash.")),
    responses((status = 200, body = CheckpointProvenance), LookupErrors))]
pub(super) async fn checkpoint(
    AxState(node): AxState<Shared>,
    Path(hash): Path<String>,
) -> ApiResult<CheckpointProvenance> {
    let checkpoint = parse_hash(&hash)?;
    let st = node.state();
    let rounds: Vec<_> = st
        .checkpoint_rounds(&checkpoint)
        .into_iter()
        .filter_map(|(job, round)| st.round_record(job, round).cloned())
        .collect();
    if rounds.is_empty() {
        return Err(ApiError::not_found(format!(
            "a round that produced checkpoint {}",
            hex::encode(checkpoint)
        )));
    }
    Ok(Json(CheckpointProvenance {
        height: st.height,
        checkpoint,
        rounds,
    }))
}
