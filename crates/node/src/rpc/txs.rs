//! Transactions: submission (one, or a batch whose signatures are verified together), the
//! simulation of one without submitting it, lookup by hash, and the devnet's faucet.

use axum::extract::{Path, State as AxState};
use axum::http::{header, HeaderMap};
use axum::Json;

use pazar_api::node::{BatchResults, FaucetRequest, SimulateResult, TxLookup, TxResult, TxState};
use pazar_api::request::SubmitMode as Mode;
use pazar_api::{ErrorCode, ErrorEnvelope};
use pazar_types::{Hash32, Tx};

use super::errors::{json_body, parse_hash, ApiError, ApiResult, Body};
use super::Shared;
use crate::openapi::{
    BatchErrors, BatchJson, FaucetErrors, LookupErrors, RawTx, SimulateErrors, SimulateJson, SubmitErrors, SubmitJson,
};

/// Submits one signed transaction: raw bytes (`application/octet-stream`, answered once in
/// the mempool) or JSON `{"tx": hex, "mode"}`, where `mode: "commit"` waits for the block (or
/// the node's commit wait, then answers `pending`).
#[utoipa::path(post, path = "/txs", tag = "txs",
    request_body(description = "The transaction's canonical bytes.", content(
        (SubmitJson = "application/json"),
        (RawTx = "application/octet-stream"))),
    responses((status = 200, description = "Admitted: `pending`, or with `mode: commit` its fate.", body = TxResult),
        SubmitErrors))]
pub(super) async fn submit(AxState(node): AxState<Shared>, headers: HeaderMap, body: Body) -> ApiResult<TxResult> {
    let body = body?;
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let req = pazar_api::request::parse_submit(is_json, &body)?;
    let (bytes, mode) = (req.tx, req.mode);
    let hash = pazar_types::tx_hash(&bytes);
    let rx = (mode == Mode::Commit).then(|| node.watch(hash));
    let n = node.clone();
    let r = tokio::task::spawn_blocking(move || n.submit(bytes))
        .await
        .map_err(ApiError::internal)?;
    if let Err(e) = r {
        node.unwatch(&hash);
        return Err(e.into());
    }
    let state = match rx {
        None => TxState::Pending,
        Some(rx) => match tokio::time::timeout(node.config.commit_wait, rx).await {
            Ok(Ok(state)) => state,
            _ => {
                node.unwatch(&hash);
                TxState::Pending
            }
        },
    };
    Ok(Json(TxResult { hash, state }))
}

/// Submits up to 5,000 transactions, their signatures verified in one batch. One result per
/// transaction, in order: each is `pending`, `refused` with its error, or with `mode: commit`
/// its fate.
#[utoipa::path(post, path = "/txs/batch", tag = "txs",
    request_body(content = BatchJson, content_type = "application/json"),
    responses((status = 200, body = BatchResults), BatchErrors))]
pub(super) async fn submit_batch(AxState(node): AxState<Shared>, body: Body) -> ApiResult<BatchResults> {
    let req = pazar_api::request::parse_batch(&body?)?;
    let txs = req.txs;
    let hashes: Vec<Hash32> = txs.iter().map(|t| pazar_types::tx_hash(t)).collect();
    let rxs: Vec<_> = if req.mode == Mode::Commit {
        hashes.iter().map(|h| Some(node.watch(*h))).collect()
    } else {
        hashes.iter().map(|_| None).collect()
    };
    let n = node.clone();
    let results = tokio::task::spawn_blocking(move || n.submit_batch(txs))
        .await
        .map_err(ApiError::internal)?;
    let deadline = tokio::time::Instant::now() + node.config.commit_wait;
    let mut out = Vec::with_capacity(results.len());
    for ((hash, r), rx) in hashes.into_iter().zip(results).zip(rxs) {
        let state = match (r, rx) {
            (Err(e), _) => {
                node.unwatch(&hash);
                TxState::Refused {
                    error: ErrorEnvelope::new(e.reason(), e.to_string()).error,
                }
            }
            (Ok(_), None) => TxState::Pending,
            (Ok(_), Some(rx)) => match tokio::time::timeout_at(deadline, rx).await {
                Ok(Ok(state)) => state,
                _ => {
                    node.unwatch(&hash);
                    TxState::Pending
                }
            },
        };
        out.push(TxResult { hash, state });
    }
    Ok(Json(BatchResults { results: out }))
}

/// Runs one signed transaction on a copy of the committed state, as the next block would, and
/// answers what would happen: admitted or not (the error `POST /txs` would give), and the
/// receipt with its code, log and events. Nothing is submitted and nothing changes. Takes the
/// body of `POST /txs` (raw bytes, or JSON `{"tx": hex}`).
#[utoipa::path(post, path = "/txs/simulate", tag = "txs",
    request_body(description = "The transaction's canonical bytes.", content(
        (SimulateJson = "application/json"),
        (RawTx = "application/octet-stream"))),
    responses((status = 200, description = "What would happen: `would_succeed`, the `admission` error or the \
        `receipt`.", body = SimulateResult), SimulateErrors))]
pub(super) async fn simulate(
    AxState(node): AxState<Shared>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<SimulateResult> {
    let body = body?;
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let req = pazar_api::request::parse_submit(is_json, &body)?;
    if req.mode != Mode::Sync {
        return Err(ApiError::bad("a simulation submits nothing, so it takes no `mode`"));
    }
    // A simulation copies the ledger state: only a few run at once, the rest wait.
    let _turn = node.simulations.acquire().await.map_err(ApiError::internal)?;
    let n = node.clone();
    let r = tokio::task::spawn_blocking(move || n.simulate(req.tx))
        .await
        .map_err(ApiError::internal)?;
    Ok(Json(r?))
}

/// A transaction by hash: pending in the mempool, or committed with its receipt and decoded body.
#[utoipa::path(get, path = "/txs/{hash}", tag = "txs",
    params(("hash" = pazar_types::openapi::Hash, Path, description = "The SHA-256 of the transaction's bytes.")),
    responses((status = 200, body = TxLookup), LookupErrors))]
pub(super) async fn tx_by_hash(AxState(node): AxState<Shared>, Path(hash): Path<String>) -> ApiResult<TxLookup> {
    let h = parse_hash(&hash)?;
    let loc = node.store().tx_location(&h).map_err(ApiError::internal)?;
    let Some((height, index)) = loc else {
        if node.is_pending(&h) {
            return Ok(Json(TxLookup {
                hash: h,
                state: TxState::Pending,
                tx: None,
            }));
        }
        return Err(ApiError::not_found(format!("transaction {hash}")));
    };
    let b = node
        .store()
        .block(height)
        .map_err(ApiError::internal)?
        .ok_or_else(|| ApiError::internal(format!("indexed block {height} is missing")))?;
    let i = index as usize;
    let bytes = b
        .block
        .txs
        .get(i)
        .ok_or_else(|| ApiError::internal("tx index out of range"))?;
    let receipt = b
        .outcome
        .receipts
        .get(i)
        .cloned()
        .ok_or_else(|| ApiError::internal(format!("block {height} has no receipt {index}")))?;
    Ok(Json(TxLookup {
        hash: h,
        state: TxState::Committed { height, index, receipt },
        // Every committed transaction decoded when it was admitted; a block from an older
        // version whose rules no longer decode it is answered without the body.
        tx: Tx::decode(bytes).ok(),
    }))
}

/// Devnet only: sends the faucet's amounts to an address and answers once committed.
#[utoipa::path(post, path = "/faucet", tag = "devnet",
    request_body(content = FaucetRequest, content_type = "application/json"),
    responses((status = 200, description = "The faucet transaction, committed (or dropped).", body = TxState),
        FaucetErrors))]
pub(super) async fn faucet(AxState(node): AxState<Shared>, body: Body) -> ApiResult<TxState> {
    let req: FaucetRequest = json_body(&body?)?;
    match node.faucet(req.address).await {
        Ok(state) => Ok(Json(state)),
        Err(crate::FaucetError::Disabled) => Err(ApiError::new(
            ErrorCode::NoFaucet,
            "this node has no faucet (only a devnet does)",
        )),
        Err(e) => Err(ApiError::new(ErrorCode::Faucet, e.to_string())),
    }
}
