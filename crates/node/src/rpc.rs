//! HTTP/JSON RPC: transaction submission, queries of every module (with optional Merkle proofs),
//! blocks, a Server-Sent-Events feed of committed blocks that resumes from a height, the OpenAPI
//! description and Prometheus metrics.
//!
//! Every answer is a type of `pazar_api::node` (the contract clients read back), every error an
//! [`ErrorEnvelope`] with the HTTP status of its [`ErrorCode`]. Each handler carries its
//! `#[utoipa::path]` description, from which [`crate::openapi`] builds `/openapi.json`.
//!
//! This file holds the router, the service's own routes and the server; the handlers live by
//! seam: [`errors`] (the envelope and the mapping of every failure to it), [`txs`] (submit,
//! batch, simulate, lookup, faucet), [`queries`] (state and lists, paging, proofs), [`train`]
//! (training jobs, rounds and provenance) and [`events`] (the SSE stream).

pub(crate) mod errors;
pub(crate) mod events;
pub(crate) mod queries;
pub(crate) mod sync;
pub(crate) mod train;
pub(crate) mod txs;

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, State as AxState};
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};

use pazar_api::node::{MempoolSize, Status};
use pazar_api::{ErrorCode, ErrorEnvelope};

use crate::openapi::OpenApiDocument;
use crate::Node;

pub use errors::ApiError;
pub(crate) use queries::filters;

use events::events;
use queries::{
    account, balance, bid, bids, block, deployment, deployments, escrow, lease, leases, order, orders, params,
    provider, providers, supply, validators,
};
use txs::{faucet, simulate, submit, submit_batch, tx_by_hash};

/// Largest request body: a batch of transactions, hex-encoded in JSON.
pub const MAX_BODY_BYTES: usize = 32 << 20;
/// Items a list query returns when it names no `limit`.
pub use pazar_api::node::DEFAULT_LIST;
/// Most items one list query returns; a longer list comes in pages (`next`, `?cursor=`).
pub use pazar_api::node::MAX_LIST;
/// Most transactions in one batch submission.
pub use pazar_api::request::MAX_BATCH_TXS;

type Shared = Arc<Node>;

pub fn router(node: Arc<Node>) -> Router {
    Router::new()
        .route("/status", get(status))
        .route("/openapi.json", get(openapi))
        .route("/metrics", get(metrics))
        .route("/events", get(events))
        .route("/txs", post(submit))
        .route("/txs/batch", post(submit_batch))
        .route("/txs/simulate", post(simulate))
        .route("/txs/{hash}", get(tx_by_hash))
        .route("/blocks/{height}", get(block))
        .route("/params", get(params))
        .route("/supply", get(supply))
        .route("/validators", get(validators))
        .route("/accounts/{address}", get(account))
        .route("/accounts/{address}/balances/{denom}", get(balance))
        .route("/providers", get(providers))
        .route("/providers/{address}", get(provider))
        .route("/deployments", get(deployments))
        .route("/deployments/{owner}/{dseq}", get(deployment))
        .route("/escrow/{owner}/{dseq}", get(escrow))
        .route("/orders", get(orders))
        .route("/orders/{owner}/{dseq}/{gseq}/{oseq}", get(order))
        .route("/bids", get(bids))
        .route("/bids/{owner}/{dseq}/{gseq}/{oseq}/{provider}", get(bid))
        .route("/leases", get(leases))
        .route("/leases/{owner}/{dseq}/{gseq}/{oseq}/{provider}", get(lease))
        .route("/train/datasets/{root}", get(train::dataset))
        .route("/train/jobs", get(train::jobs))
        .route("/train/jobs/{id}", get(train::job))
        .route("/train/jobs/{id}/members", get(train::members))
        .route("/train/jobs/{id}/rounds/{round}", get(train::round))
        .route("/train/checkpoints/{hash}", get(train::checkpoint))
        .route("/faucet", post(faucet))
        .route("/sync/snapshot", get(sync::snapshot))
        .route("/sync/finalization/{height}", get(sync::finalization))
        .route("/sync/handoffs", get(sync::handoffs))
        .route("/state/proofs", post(queries::state_proofs))
        .fallback(|| async { ApiError::new(ErrorCode::NoRoute, "no such endpoint; see /openapi.json") })
        // A route asked with another method: HTTP's own status for it, and the envelope.
        .method_not_allowed_fallback(|| async {
            ApiError {
                status: StatusCode::METHOD_NOT_ALLOWED,
                envelope: ErrorEnvelope::new(
                    ErrorCode::NoRoute,
                    "this endpoint does not take that method; see /openapi.json",
                ),
            }
        })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(node)
}

/// The paths the router serves, for checking the OpenAPI document against.
pub const ROUTES: &[&str] = &[
    "/status",
    "/openapi.json",
    "/metrics",
    "/events",
    "/txs",
    "/txs/batch",
    "/txs/simulate",
    "/txs/{hash}",
    "/blocks/{height}",
    "/params",
    "/supply",
    "/validators",
    "/accounts/{address}",
    "/accounts/{address}/balances/{denom}",
    "/providers",
    "/providers/{address}",
    "/deployments",
    "/deployments/{owner}/{dseq}",
    "/escrow/{owner}/{dseq}",
    "/orders",
    "/orders/{owner}/{dseq}/{gseq}/{oseq}",
    "/bids",
    "/bids/{owner}/{dseq}/{gseq}/{oseq}/{provider}",
    "/leases",
    "/leases/{owner}/{dseq}/{gseq}/{oseq}/{provider}",
    "/train/datasets/{root}",
    "/train/jobs",
    "/train/jobs/{id}",
    "/train/jobs/{id}/members",
    "/train/jobs/{id}/rounds/{round}",
    "/train/checkpoints/{hash}",
    "/faucet",
    "/sync/snapshot",
    "/sync/finalization/{height}",
    "/sync/handoffs",
    "/state/proofs",
];

/// This document: every route, its parameters, bodies and answers, generated from the types
/// the node answers with.
#[utoipa::path(get, path = "/openapi.json", tag = "service",
    responses((status = 200, description = "The OpenAPI 3.1 document of this RPC.", body = OpenApiDocument)))]
async fn openapi() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], crate::openapi::json())
}

/// Prometheus metrics in the OpenMetrics text format.
#[utoipa::path(get, path = "/metrics", tag = "service",
    responses((status = 200, description = "The node's metrics (block height, mempool, commit times, refusals by \
        code).", body = String, content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8")))]
async fn metrics(AxState(node): AxState<Shared>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        node.metrics.render(),
    )
}

/// The chain, the last committed block and the mempool.
#[utoipa::path(get, path = "/status", tag = "chain", responses((status = 200, body = Status)))]
async fn status(AxState(node): AxState<Shared>) -> Json<Status> {
    let head = node.head();
    let (txs, bytes) = node.mempool_len();
    Json(Status {
        chain_id: node.chain_id().to_string(),
        genesis_hash: node.genesis_hash(),
        height: head.height,
        block_hash: head.block_hash,
        state_root: head.state_root,
        time_ms: head.time_ms,
        mempool: MempoolSize {
            txs: txs as u64,
            bytes: bytes as u64,
        },
        block_time_ms: u64::try_from(node.config.block_time.as_millis()).unwrap_or(u64::MAX),
        version: env!("CARGO_PKG_VERSION").to_string(),
    })
}

/// Serves the RPC on `listener` until `shutdown` resolves. Any axum listener does: a TCP socket
/// in production, a Unix socket, or a simulated network's listener under a test runtime.
pub async fn serve<L>(
    node: Arc<Node>,
    listener: L,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()>
where
    L: axum::serve::Listener,
    L::Addr: crate::http::PeerIp,
{
    let limits = node.config.http;
    crate::http::serve(listener, router(node), limits, shutdown).await
}
