//! State sync, the serving side: a peer that joins late copies this node's state instead of
//! replaying every block ([`pazar_store::Store::snapshot`]: the state at the head in one read
//! transaction, in chunks with Merkle range proofs), and fetches a finalization certificate that
//! proves the block carrying that state's root final. The peer trusts neither: it checks the
//! certificate against the validator set of its epoch and every chunk against the root.
//!
//! The set of an epoch later than genesis names the peer learns from this node's hand-off
//! records ([`pazar_api::sync::Handoff`], `GET /sync/handoffs`): the consensus engine records one
//! per epoch as the validator passes through it, and a node that synced keeps the ones it
//! checked; they are node records of the store, served as they are (the peer checks each).
//!
//! The snapshot and the certificate are bytes (`application/octet-stream`): the snapshot a stream of length-prefixed
//! frames ([`pazar_store::write_frame`]), the certificate the consensus engine's own encoding.
//! At most [`crate::MAX_SNAPSHOTS`] snapshots are served at once and one per client address,
//! each for at most [`SNAPSHOT_DEADLINE`]; a reader that takes nothing for [`SNAPSHOT_IDLE`]
//! loses its stream. At most [`MAX_CERTIFICATE_READS`] certificate reads run at once.

use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State as AxState};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Deserialize;

use pazar_api::sync::{Handoff, Handoffs, MAX_HANDOFFS};
use pazar_api::ErrorCode;

use super::errors::{parse, ApiError, ApiResult, Q};
use super::Shared;
use crate::http::ClientIp;

/// Longest a snapshot stream may take: it holds a read transaction and a thread.
pub const SNAPSHOT_DEADLINE: Duration = Duration::from_secs(600);
/// Longest a snapshot reader may take nothing before its stream is ended.
pub const SNAPSHOT_IDLE: Duration = Duration::from_secs(30);
/// Certificate reads at once (each is a request to consensus's archive).
pub const MAX_CERTIFICATE_READS: usize = 8;

/// Frames buffered between the reading thread and the connection.
const FRAMES_IN_FLIGHT: usize = 4;

/// The state at this node's head, as snapshot frames.
#[utoipa::path(get, path = "/sync/snapshot", tag = "chain",
    responses(
        (status = 200, description = "The state at the head: length-prefixed Borsh frames (a head with the height, \
            state root, genesis hash and entry count; chunks of entries in key-hash order, each with a Jellyfish \
            Merkle range proof; an end frame). Check the root against a finalized block before trusting any of it.",
            body = Vec<u8>, content_type = "application/octet-stream"),
        (status = 429, description = "As many snapshots as this node serves at once are under way; retry.",
            body = pazar_api::ErrorEnvelope)))]
pub(super) async fn snapshot(
    AxState(node): AxState<Shared>,
    client: Option<Extension<ClientIp>>,
) -> Result<Response, ApiError> {
    let busy = |why: String| ApiError::new(ErrorCode::Busy, why);
    let permit = node.snapshots.clone().try_acquire_owned().map_err(|_| {
        busy(format!(
            "{} snapshots are being served; retry later",
            crate::MAX_SNAPSHOTS
        ))
    })?;
    let client = client.and_then(|Extension(ClientIp(ip))| ip);
    let slot = match client {
        Some(ip) => Some(
            ClientSlot::take(&node.snapshot_clients, ip)
                .ok_or_else(|| busy(format!("a snapshot is already being served to {ip}")))?,
        ),
        None => None,
    };
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(FRAMES_IN_FLIGHT);
    tokio::task::spawn_blocking(move || {
        let _permit = permit;
        let _slot = slot;
        let deadline = Instant::now() + SNAPSHOT_DEADLINE;
        let r = node.store().snapshot(pazar_store::CHUNK_ENTRIES, |frame| {
            let mut buf = Vec::new();
            if pazar_store::write_frame(&mut buf, &frame).is_err() {
                return false;
            }
            let mut frame = Bytes::from(buf);
            // Waits for room without blocking past the deadline or the idle bound; a reader
            // that left ends it.
            let idle = Instant::now() + SNAPSHOT_IDLE;
            loop {
                match tx.try_send(frame) {
                    Ok(()) => return true,
                    Err(tokio::sync::mpsc::error::TrySendError::Closed(_)) => return false,
                    Err(tokio::sync::mpsc::error::TrySendError::Full(f)) => {
                        let now = Instant::now();
                        if now > deadline || now > idle {
                            return false;
                        }
                        frame = f;
                        std::thread::sleep(Duration::from_millis(5));
                    }
                }
            }
        });
        if let Err(e) = r {
            // The stream ends without its end frame: the reader knows it is incomplete.
            tracing::warn!(error = %e, "cannot serve a snapshot");
        }
    });
    let body = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx).map(|f| f.map(Ok::<_, std::io::Error>)));
    Ok((
        [(header::CONTENT_TYPE, "application/octet-stream")],
        Body::from_stream(body),
    )
        .into_response())
}

/// The finalization certificate of the block at a height, as the consensus engine encodes it.
#[utoipa::path(get, path = "/sync/finalization/{height}", tag = "chain",
    params(("height" = u64, Path, description = "A block height.")),
    responses(
        (status = 200, description = "The encoded certificate.", body = Vec<u8>, content_type = "application/octet-stream"),
        (status = 404, description = "This node holds no certificate of its own for that block (a block may be \
            finalized only through a descendant's, and a single-validator node makes none).",
            body = pazar_api::ErrorEnvelope),
        (status = 400, description = "The height is not a number.", body = pazar_api::ErrorEnvelope)))]
pub(super) async fn finalization(
    AxState(node): AxState<Shared>,
    Path(height): Path<String>,
) -> Result<Response, ApiError> {
    let height = parse::<u64>("height", &height)?;
    let _turn = node
        .certificate_reads
        .try_acquire()
        .map_err(|_| ApiError::new(ErrorCode::Busy, "too many certificate reads at once; retry"))?;
    let Some(certs) = node.certificates() else {
        return Err(ApiError::not_found(
            "finalization certificates (this node's engine makes none)",
        ));
    };
    match certs.finalization(height).await {
        Some(bytes) => Ok(([(header::CONTENT_TYPE, "application/octet-stream")], bytes).into_response()),
        None => Err(ApiError::not_found(format!(
            "a finalization certificate of block {height}"
        ))),
    }
}

/// `?from=E`: the first epoch whose hand-off record is wanted.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct HandoffsQ {
    /// The epoch of the first record (at least 1: genesis names the sets of epochs 0 and 1).
    from: u64,
}

/// The validator-set hand-off records of epochs `from`, `from + 1`, … this node holds, in order
/// and without a gap: each a block of its epoch, that epoch's finalization certificate of it,
/// and the Merkle proof of the next epoch's set under the block's state root.
#[utoipa::path(get, path = "/sync/handoffs", tag = "chain",
    params(HandoffsQ),
    responses(
        (status = 200, description = "At most 64 records, from epoch `from` on, up to the first this node lacks \
            (none when it lacks `from`'s). Ask again from the epoch after the last one for more. Check each with the \
            set the record before it proved, starting from the genesis set.", body = Handoffs),
        (status = 400, description = "`from` is missing or not a number.", body = pazar_api::ErrorEnvelope),
        (status = 429, description = "Too many certificate and hand-off reads at once (8); retry.",
            body = pazar_api::ErrorEnvelope),
        (status = 500, description = "A stored record cannot be read.", body = pazar_api::ErrorEnvelope)))]
pub(super) async fn handoffs(AxState(node): AxState<Shared>, q: Q<HandoffsQ>) -> ApiResult<Handoffs> {
    let Query(q) = q?;
    let from = q.from.max(1);
    // An answer is up to 64 records of a few tens of kilobytes each, built in memory: these
    // reads share the certificate reads' turns.
    let _turn = node
        .certificate_reads
        .try_acquire()
        .map_err(|_| ApiError::new(ErrorCode::Busy, "too many certificate reads at once; retry"))?;
    let node = node.clone();
    let handoffs = tokio::task::spawn_blocking(move || -> Result<Vec<Handoff>, ApiError> {
        let mut out = Vec::new();
        let last = from.saturating_add(MAX_HANDOFFS as u64 - 1);
        for epoch in from..=last {
            let Some(bytes) = node
                .store()
                .node_record(&Handoff::record_name(epoch))
                .map_err(ApiError::internal)?
            else {
                break;
            };
            let record = Handoff::from_record(&bytes).ok_or_else(|| {
                ApiError::internal(format!("the stored hand-off record of epoch {epoch} does not decode"))
            })?;
            out.push(record);
        }
        Ok(out)
    })
    .await
    .map_err(ApiError::internal)??;
    Ok(Json(Handoffs { handoffs }))
}

/// A client address's one snapshot stream; freed when dropped.
struct ClientSlot {
    set: std::sync::Arc<std::sync::Mutex<std::collections::BTreeSet<std::net::IpAddr>>>,
    ip: std::net::IpAddr,
}

impl ClientSlot {
    fn take(
        set: &std::sync::Arc<std::sync::Mutex<std::collections::BTreeSet<std::net::IpAddr>>>,
        ip: std::net::IpAddr,
    ) -> Option<ClientSlot> {
        let mut s = set.lock().unwrap_or_else(|e| e.into_inner());
        s.insert(ip).then(|| ClientSlot { set: set.clone(), ip })
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        self.set.lock().unwrap_or_else(|e| e.into_inner()).remove(&self.ip);
    }
}
