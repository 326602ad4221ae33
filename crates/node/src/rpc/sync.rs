//! State sync, the serving side: a peer that joins late copies this node's state instead of
//! replaying every block ([`pazar_store::Store::snapshot`]: the state at the head in one read
//! transaction, in chunks with Merkle range proofs), and fetches a finalization certificate that
//! proves the block carrying that state's root final. The peer trusts neither: it checks the
//! certificate against the validator set of its own genesis and every chunk against the root.
//!
//! Both answers are bytes (`application/octet-stream`): the snapshot a stream of length-prefixed
//! frames ([`pazar_store::write_frame`]), the certificate the consensus engine's own encoding.
//! At most [`crate::MAX_SNAPSHOTS`] snapshots are served at once, each for at most
//! [`SNAPSHOT_DEADLINE`]; a reader that stalls longer loses its stream.

use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{Path, State as AxState};
use axum::http::header;
use axum::response::{IntoResponse, Response};

use pazar_api::ErrorCode;

use super::errors::{parse, ApiError};
use super::Shared;

/// Longest a snapshot stream may take: it holds a read transaction and a thread.
pub const SNAPSHOT_DEADLINE: Duration = Duration::from_secs(600);

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
pub(super) async fn snapshot(AxState(node): AxState<Shared>) -> Result<Response, ApiError> {
    let permit = node.snapshots.clone().try_acquire_owned().map_err(|_| {
        ApiError::new(
            ErrorCode::Busy,
            format!("{} snapshots are being served; retry later", crate::MAX_SNAPSHOTS),
        )
    })?;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(FRAMES_IN_FLIGHT);
    tokio::task::spawn_blocking(move || {
        let _permit = permit;
        let deadline = Instant::now() + SNAPSHOT_DEADLINE;
        let r = node.store().snapshot(pazar_store::CHUNK_ENTRIES, |frame| {
            let mut buf = Vec::new();
            if pazar_store::write_frame(&mut buf, &frame).is_err() {
                return false;
            }
            let mut frame = Bytes::from(buf);
            // Waits for room without blocking past the deadline; a reader that left ends it.
            loop {
                match tx.try_send(frame) {
                    Ok(()) => return true,
                    Err(tokio::sync::mpsc::error::TrySendError::Closed(_)) => return false,
                    Err(tokio::sync::mpsc::error::TrySendError::Full(f)) => {
                        if Instant::now() > deadline {
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
    Ok(([(header::CONTENT_TYPE, "application/octet-stream")], Body::from_stream(body)).into_response())
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
    let Some(certs) = node.certificates() else {
        return Err(ApiError::not_found("finalization certificates (this node's engine makes none)"));
    };
    match certs.finalization(height).await {
        Some(bytes) => Ok(([(header::CONTENT_TYPE, "application/octet-stream")], bytes).into_response()),
        None => Err(ApiError::not_found(format!("a finalization certificate of block {height}"))),
    }
}
