//! HTTP/JSON RPC: transaction submission, queries of every module (with optional Merkle proofs),
//! blocks, a Server-Sent-Events feed of committed blocks that resumes from a height, the OpenAPI
//! description and Prometheus metrics.
//!
//! Every answer is a type of `pazar_api::node` (the contract clients read back), every error an
//! [`ErrorEnvelope`] with the HTTP status of its [`ErrorCode`]. Each handler carries its
//! `#[utoipa::path]` description, from which [`crate::openapi`] builds `/openapi.json`.

use std::convert::Infallible;
use std::str::FromStr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Path, Query, State as AxState};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::stream::{self, Stream, StreamExt};
use serde::Deserialize;

use pazar_api::events::{BlockEvents, Lagged, BLOCK_EVENT, LAGGED_EVENT};
use pazar_api::node::{
    AccountInfo, Audit, Balance, BatchResults, BidEntry, BidPage, BlockResponse, DeploymentDetail, DeploymentPage,
    EscrowDetail, FaucetRequest, GroupEntry, LeaseDetail, LeaseEntry, LeasePage, LeaseRef, ListQuery, MempoolSize,
    OrderDetail, OrderEntry, OrderPage, ParamsResponse, Proven, ProviderDetail, ProviderEntry, ProviderPage,
    SimulateResult, Status, SupplyResponse, TxLookup, TxResult, TxState,
};
use pazar_api::proof::Proof;
use pazar_api::request::{RequestError, SubmitMode as Mode};
use pazar_api::{ErrorCode, ErrorEnvelope};
use pazar_ledger::state::{store_key, table_id};
use pazar_ledger::State;
use pazar_types::market::{BidState, LeaseState, OrderState};
use pazar_types::records::Deployment;
use pazar_types::{Address, BidId, Coin, Denom, DeploymentId, GroupId, Hash32, OrderId, Tx};

use crate::openapi::{
    AccountErrors, BatchErrors, BatchJson, BidListParams, DeploymentListParams, EventErrors, FaucetErrors, ListErrors,
    LookupErrors, OpenApiDocument, OrderListParams, ProviderListParams, RawTx, SimulateErrors, SimulateJson,
    SubmitErrors, SubmitJson,
};
use crate::{Node, SubmitError};

/// Largest request body: a batch of transactions, hex-encoded in JSON.
pub const MAX_BODY_BYTES: usize = 32 << 20;
/// Items a list query returns when it names no `limit`.
pub use pazar_api::node::DEFAULT_LIST;
/// Most items one list query returns; a longer list comes in pages (`next`, `?cursor=`).
pub use pazar_api::node::MAX_LIST;
/// Most transactions in one batch submission.
pub use pazar_api::request::MAX_BATCH_TXS;

type Shared = Arc<Node>;

/// A failed request: an [`ErrorEnvelope`] and the HTTP status it is answered with.
pub struct ApiError {
    status: StatusCode,
    envelope: ErrorEnvelope,
}

impl ApiError {
    /// An error answered with its code's own status ([`ErrorCode::http_status`]).
    fn new(code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::from_u16(code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            envelope: ErrorEnvelope::new(code, message),
        }
    }
    fn bad(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorCode::BadRequest, message)
    }
    fn not_found(what: impl std::fmt::Display) -> ApiError {
        ApiError::new(ErrorCode::NotFound, format!("{what} not found"))
    }
    fn internal(e: impl std::fmt::Display) -> ApiError {
        ApiError::new(ErrorCode::Internal, e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(self.envelope)).into_response()
    }
}

impl From<SubmitError> for ApiError {
    fn from(e: SubmitError) -> ApiError {
        ApiError::new(e.reason(), e.to_string())
    }
}

impl From<RequestError> for ApiError {
    fn from(e: RequestError) -> ApiError {
        ApiError::new(e.code(), e.to_string())
    }
}

/// A query string that does not parse (an unknown field, a malformed address or number) is the
/// client's error and is answered as every other error is, not with axum's plain-text rejection.
impl From<QueryRejection> for ApiError {
    fn from(e: QueryRejection) -> ApiError {
        ApiError::bad(format!("invalid query: {}", e.body_text()))
    }
}

/// A body over [`MAX_BODY_BYTES`] (or one that breaks off) gets the envelope too.
impl From<BytesRejection> for ApiError {
    fn from(e: BytesRejection) -> ApiError {
        let code = if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ErrorCode::TooLarge
        } else {
            ErrorCode::BadRequest
        };
        ApiError::new(code, format!("request body: {}", e.body_text()))
    }
}

type ApiResult<T> = Result<Json<T>, ApiError>;
type Q<T> = Result<Query<T>, QueryRejection>;
type Body = Result<Bytes, BytesRejection>;

fn parse<T: FromStr>(what: &str, s: &str) -> Result<T, ApiError>
where
    T::Err: std::fmt::Display,
{
    s.parse()
        .map_err(|e| ApiError::bad(format!("invalid {what} {s:?}: {e}")))
}

fn parse_hash(s: &str) -> Result<Hash32, ApiError> {
    let v = hex::decode(s).map_err(|_| ApiError::bad(format!("invalid hash {s:?}: not hex")))?;
    v.try_into()
        .map_err(|_| ApiError::bad(format!("invalid hash {s:?}: must be 32 bytes")))
}

fn json_body<T: for<'de> Deserialize<'de>>(body: &Bytes) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad(format!("request body is not valid JSON for this call: {e}")))
}

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
        .route("/faucet", post(faucet))
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
    "/faucet",
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

/// Submits one signed transaction: raw bytes (`application/octet-stream`, answered once in
/// the mempool) or JSON `{"tx": hex, "mode"}`, where `mode: "commit"` waits for the block (or
/// the node's commit wait, then answers `pending`).
#[utoipa::path(post, path = "/txs", tag = "txs",
    request_body(description = "The transaction's canonical bytes.", content(
        (SubmitJson = "application/json"),
        (RawTx = "application/octet-stream"))),
    responses((status = 200, description = "Admitted: `pending`, or with `mode: commit` its fate.", body = TxResult),
        SubmitErrors))]
async fn submit(AxState(node): AxState<Shared>, headers: HeaderMap, body: Body) -> ApiResult<TxResult> {
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
async fn submit_batch(AxState(node): AxState<Shared>, body: Body) -> ApiResult<BatchResults> {
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
async fn simulate(AxState(node): AxState<Shared>, headers: HeaderMap, body: Body) -> ApiResult<SimulateResult> {
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
async fn tx_by_hash(AxState(node): AxState<Shared>, Path(hash): Path<String>) -> ApiResult<TxLookup> {
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

/// A committed block: its header, transaction hashes, receipts and end-of-block events.
#[utoipa::path(get, path = "/blocks/{height}", tag = "chain",
    params(("height" = String, Path, description = "A block height (from 1), or `latest`.")),
    responses((status = 200, body = BlockResponse), LookupErrors))]
async fn block(AxState(node): AxState<Shared>, Path(height): Path<String>) -> ApiResult<BlockResponse> {
    let height = if height == "latest" {
        node.head().height
    } else {
        parse::<u64>("height", &height)?
    };
    let b = node
        .store()
        .block(height)
        .map_err(ApiError::internal)?
        .ok_or_else(|| ApiError::not_found(format!("block {height}")))?;
    let txs = b
        .block
        .txs
        .iter()
        .map(|t| hex::encode(pazar_types::tx_hash(t)))
        .collect();
    Ok(Json(BlockResponse {
        hash: b.block.header.hash(),
        header: b.block.header,
        txs,
        receipts: b.outcome.receipts,
        end_block_events: b.outcome.end_block_events,
        state_root_after: b.state_root,
    }))
}

/// The ledger's parameters (denominations, take rates, minimum fees and deposits, timeouts).
#[utoipa::path(get, path = "/params", tag = "chain", responses((status = 200, body = ParamsResponse)))]
async fn params(AxState(node): AxState<Shared>) -> Json<ParamsResponse> {
    let st = node.state();
    Json(ParamsResponse {
        height: st.height,
        params: st.params.clone(),
    })
}

/// The supply of each denomination.
#[utoipa::path(get, path = "/supply", tag = "bank", responses((status = 200, body = SupplyResponse)))]
async fn supply(AxState(node): AxState<Shared>) -> Json<SupplyResponse> {
    let st = node.state();
    let supply = st
        .params
        .denoms()
        .iter()
        .map(|d| Coin::new(st.supply_of(d), (*d).clone()))
        .collect();
    Json(SupplyResponse {
        height: st.height,
        supply,
    })
}

/// `?prove=true` adds a Merkle proof of the answer's store entry.
#[derive(Deserialize, Default, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct ProveQ {
    /// Add a Merkle proof of the object's store entry at the answer's height (verify it against
    /// the `state_root` of the header of block `height + 1`).
    #[serde(default)]
    prove: bool,
}

/// `item` at the state's height, with the proof of `key` when asked; the caller holds the state
/// lock so the proof is about the same version as the value.
fn proven<T>(node: &Node, st: &State, item: T, key: Vec<u8>, prove: bool) -> ApiResult<Proven<T>> {
    let proof = if prove {
        let p = node.store().prove(&key).map_err(ApiError::internal)?;
        if p.height != st.height {
            return Err(ApiError::internal("store and state disagree on the height"));
        }
        Some(Proof {
            height: p.height,
            state_root: p.root,
            key: p.key,
            value: p.value,
            proof: p.proof,
        })
    } else {
        None
    };
    Ok(Json(Proven {
        item,
        height: st.height,
        proof,
    }))
}

/// An account's sequence and balances.
#[utoipa::path(get, path = "/accounts/{address}", tag = "bank",
    params(("address" = Address, Path), ProveQ),
    responses((status = 200, body = Proven<AccountInfo>), AccountErrors))]
async fn account(
    AxState(node): AxState<Shared>,
    Path(address): Path<String>,
    q: Q<ProveQ>,
) -> ApiResult<Proven<AccountInfo>> {
    let Query(q) = q?;
    let a: Address = parse("address", &address)?;
    let st = node.state();
    let item = AccountInfo {
        address: a,
        sequence: st.account(&a).sequence,
        balances: st.balances_of(&a),
    };
    proven(&node, &st, item, store_key(table_id::ACCOUNTS, &a), q.prove)
}

/// One balance of an account.
#[utoipa::path(get, path = "/accounts/{address}/balances/{denom}", tag = "bank",
    params(("address" = Address, Path), ("denom" = Denom, Path), ProveQ),
    responses((status = 200, body = Proven<Balance>), AccountErrors))]
async fn balance(
    AxState(node): AxState<Shared>,
    Path((address, denom)): Path<(String, String)>,
    q: Q<ProveQ>,
) -> ApiResult<Proven<Balance>> {
    let Query(q) = q?;
    let a: Address = parse("address", &address)?;
    let d: Denom = parse("denom", &denom)?;
    let st = node.state();
    let item = Balance {
        address: a,
        amount: st.balance(&a, &d),
        denom: d.clone(),
    };
    proven(&node, &st, item, store_key(table_id::BALANCES, &(a, d)), q.prove)
}

/// A page cursor: the hex of the store key (table id ‖ Borsh key) of the last item a page
/// returned. Opaque to clients; the table id keeps one list's cursor out of another list.
fn cursor_of<K: borsh::BorshSerialize>(table: u8, key: &K) -> String {
    hex::encode(store_key(table, key))
}

fn cursor_key<K: borsh::BorshDeserialize>(table: u8, s: &str) -> Result<K, ApiError> {
    let bad = || {
        ApiError::bad(format!(
            "invalid cursor {s:.80?}: pass the `next` of a previous page of this list"
        ))
    };
    // A key is an address and a few integers; anything longer is not a cursor.
    if s.len() > 512 {
        return Err(bad());
    }
    let bytes = hex::decode(s).map_err(|_| bad())?;
    match bytes.split_first() {
        Some((t, key)) if *t == table => borsh::from_slice(key).map_err(|_| bad()),
        _ => Err(bad()),
    }
}

/// The filters of [`ListQuery`] one list reads, besides `limit` and `cursor`. A query that names
/// another is refused: a filter the list would ignore is a wrong answer, not a narrower one.
/// The OpenAPI document lists the same filters for each list (`crate::openapi`).
pub(crate) mod filters {
    pub const PROVIDERS: &[&str] = &[];
    pub const DEPLOYMENTS: &[&str] = &["owner"];
    pub const ORDERS: &[&str] = &["owner", "dseq", "state"];
    /// Bids and leases (a lease has its bid's id).
    pub const BIDS: &[&str] = &["owner", "provider", "dseq", "state"];
}

/// The list query of `path`, refused when it names a filter outside `allowed`.
fn list_query(q: Q<ListQuery>, path: &str, allowed: &[&str]) -> Result<ListQuery, ApiError> {
    let Query(q) = q?;
    let named = [
        ("owner", q.owner.is_some()),
        ("provider", q.provider.is_some()),
        ("dseq", q.dseq.is_some()),
        ("state", q.state.is_some()),
    ];
    for (name, set) in named {
        if set && !allowed.contains(&name) {
            let takes = if allowed.is_empty() {
                "no filter".to_string()
            } else {
                allowed.join(", ")
            };
            return Err(ApiError::bad(format!(
                "{path} has no `{name}` filter (it takes {takes}, limit and cursor)"
            )));
        }
    }
    Ok(q)
}

/// Whether a bid or lease id passes the owner, provider and dseq filters.
fn matches_bid(q: &ListQuery, id: &BidId) -> bool {
    q.owner.is_none_or(|o| id.owner == o)
        && q.provider.is_none_or(|p| id.provider == p)
        && q.dseq.is_none_or(|d| id.dseq == d)
}

/// One page of `items` (in key order, already filtered): those after the cursor, at most
/// `limit` of them (default [`DEFAULT_LIST`], at most [`MAX_LIST`]), each made by `show`,
/// and the cursor of the next page when any item remains (`None` only at the end, so a
/// list is never cut short silently). Keys are compared, not positions, so items added or
/// removed between pages never shift others in or out.
fn page<'k, K, V, T>(
    q: &ListQuery,
    table: u8,
    items: impl Iterator<Item = (&'k K, V)>,
    show: impl Fn(&K, V) -> T,
) -> Result<(Vec<T>, Option<String>), ApiError>
where
    K: Ord + borsh::BorshSerialize + borsh::BorshDeserialize + 'k,
{
    let limit = q.limit.unwrap_or(DEFAULT_LIST);
    if limit == 0 {
        return Err(ApiError::bad(format!("limit must be 1 to {MAX_LIST}")));
    }
    let limit = limit.min(MAX_LIST);
    let after: Option<K> = q.cursor.as_deref().map(|c| cursor_key(table, c)).transpose()?;
    // The ledger's tables are ordered maps read whole, so the start is found by skipping;
    // a filtered list scans its table anyway.
    let mut rest = items.skip_while(|(k, _)| after.as_ref().is_some_and(|a| *k <= a));
    let mut out = Vec::new();
    let mut last = None;
    for (k, v) in rest.by_ref().take(limit) {
        out.push(show(k, v));
        last = Some(k);
    }
    let next = match (rest.next(), last) {
        (Some(_), Some(k)) => Some(cursor_of(table, k)),
        _ => None,
    };
    Ok((out, next))
}

/// The state filter of a list, parsed as the listed object's state.
fn parse_state<T: for<'de> Deserialize<'de>>(s: &str) -> Result<T, ApiError> {
    serde_json::from_value(serde_json::Value::String(s.to_string()))
        .map_err(|_| ApiError::bad(format!("unknown state {s:?}")))
}

/// Registered providers with their open bids and active leases.
#[utoipa::path(get, path = "/providers", tag = "providers", params(ProviderListParams),
    responses((status = 200, body = ProviderPage), ListErrors))]
async fn providers(AxState(node): AxState<Shared>, q: Q<ListQuery>) -> ApiResult<ProviderPage> {
    let q = list_query(q, "/providers", filters::PROVIDERS)?;
    let st = node.state();
    let (providers, next) = page(&q, table_id::PROVIDERS, st.providers(), |a, p| ProviderEntry {
        owner: *a,
        provider: p.clone(),
        load: st.provider_load(a),
    })?;
    Ok(Json(ProviderPage {
        height: st.height,
        providers,
        next,
    }))
}

/// A provider, its load and the attributes each auditor signed for it.
#[utoipa::path(get, path = "/providers/{address}", tag = "providers",
    params(("address" = Address, Path), ProveQ),
    responses((status = 200, body = Proven<ProviderDetail>), LookupErrors))]
async fn provider(
    AxState(node): AxState<Shared>,
    Path(address): Path<String>,
    q: Q<ProveQ>,
) -> ApiResult<Proven<ProviderDetail>> {
    let Query(q) = q?;
    let a: Address = parse("address", &address)?;
    let st = node.state();
    let p = st
        .provider(&a)
        .ok_or_else(|| ApiError::not_found(format!("provider {a}")))?;
    let item = ProviderDetail {
        owner: a,
        provider: p.clone(),
        load: st.provider_load(&a),
        audits: st
            .audits_of(&a)
            .map(|(auditor, attributes)| Audit {
                auditor: *auditor,
                attributes: attributes.clone(),
            })
            .collect(),
    };
    proven(&node, &st, item, store_key(table_id::PROVIDERS, &a), q.prove)
}

fn group_of(id: &OrderId) -> GroupId {
    GroupId {
        owner: id.owner,
        dseq: id.dseq,
        gseq: id.gseq,
    }
}

/// A deployment with its groups, leases and escrow at the state's height.
fn deployment_detail(st: &State, id: &DeploymentId, d: &Deployment) -> DeploymentDetail {
    DeploymentDetail {
        id: id.clone(),
        deployment: d.clone(),
        groups: (1..=d.groups)
            .filter_map(|gseq| {
                st.group(&id.group(gseq)).map(|group| GroupEntry {
                    gseq,
                    group: group.clone(),
                })
            })
            .collect(),
        leases: st
            .leases_of_deployment(id)
            .map(|(lid, l)| LeaseRef {
                id: lid.clone(),
                lease: l.clone(),
            })
            .collect(),
        escrow: st.escrow_view(id, st.height),
    }
}

/// Deployments, each with its groups, leases and escrow.
#[utoipa::path(get, path = "/deployments", tag = "market", params(DeploymentListParams),
    responses((status = 200, body = DeploymentPage), ListErrors))]
async fn deployments(AxState(node): AxState<Shared>, q: Q<ListQuery>) -> ApiResult<DeploymentPage> {
    let q = list_query(q, "/deployments", filters::DEPLOYMENTS)?;
    let st = node.state();
    let show = |id: &DeploymentId, d: &Deployment| deployment_detail(&st, id, d);
    let (deployments, next) = match q.owner {
        Some(o) => page(&q, table_id::DEPLOYMENTS, st.deployments_of(&o), show)?,
        None => page(&q, table_id::DEPLOYMENTS, st.deployments(), show)?,
    };
    Ok(Json(DeploymentPage {
        height: st.height,
        deployments,
        next,
    }))
}

fn deployment_id(owner: &str, dseq: &str) -> Result<DeploymentId, ApiError> {
    Ok(DeploymentId {
        owner: parse("owner", owner)?,
        dseq: parse("dseq", dseq)?,
    })
}

/// A deployment with its groups, leases and escrow.
#[utoipa::path(get, path = "/deployments/{owner}/{dseq}", tag = "market",
    params(("owner" = Address, Path), ("dseq" = u64, Path), ProveQ),
    responses((status = 200, body = Proven<DeploymentDetail>), LookupErrors))]
async fn deployment(
    AxState(node): AxState<Shared>,
    Path((owner, dseq)): Path<(String, String)>,
    q: Q<ProveQ>,
) -> ApiResult<Proven<DeploymentDetail>> {
    let Query(q) = q?;
    let id = deployment_id(&owner, &dseq)?;
    let st = node.state();
    let d = st
        .deployment(&id)
        .ok_or_else(|| ApiError::not_found(format!("deployment {id}")))?;
    let item = deployment_detail(&st, &id, d);
    proven(&node, &st, item, store_key(table_id::DEPLOYMENTS, &id), q.prove)
}

/// A deployment's escrow account, as stored and settled up to the answer's height.
#[utoipa::path(get, path = "/escrow/{owner}/{dseq}", tag = "escrow",
    params(("owner" = Address, Path), ("dseq" = u64, Path), ProveQ),
    responses((status = 200, body = Proven<EscrowDetail>), LookupErrors))]
async fn escrow(
    AxState(node): AxState<Shared>,
    Path((owner, dseq)): Path<(String, String)>,
    q: Q<ProveQ>,
) -> ApiResult<Proven<EscrowDetail>> {
    let Query(q) = q?;
    let id = deployment_id(&owner, &dseq)?;
    let st = node.state();
    let account = st
        .escrow_account(&id)
        .ok_or_else(|| ApiError::not_found(format!("escrow of deployment {id}")))?
        .clone();
    let item = EscrowDetail {
        view: st.escrow_view(&id, st.height),
        account,
        id: id.clone(),
    };
    proven(&node, &st, item, store_key(table_id::ESCROW, &id), q.prove)
}

/// Orders, each with the group spec it asks for.
#[utoipa::path(get, path = "/orders", tag = "market", params(OrderListParams),
    responses((status = 200, body = OrderPage), ListErrors))]
async fn orders(AxState(node): AxState<Shared>, q: Q<ListQuery>) -> ApiResult<OrderPage> {
    let q = list_query(q, "/orders", filters::ORDERS)?;
    let want: Option<OrderState> = q.state.as_deref().map(parse_state).transpose()?;
    let st = node.state();
    let it = st.orders().filter(|(id, o)| {
        q.owner.is_none_or(|ow| id.owner == ow)
            && q.dseq.is_none_or(|d| id.dseq == d)
            && want.is_none_or(|w| o.state == w)
    });
    let (orders, next) = page(&q, table_id::ORDERS, it, |id, o| OrderEntry {
        id: id.clone(),
        order: o.clone(),
        group: st.group(&group_of(id)).map(|g| g.spec.clone()),
    })?;
    Ok(Json(OrderPage {
        height: st.height,
        orders,
        next,
    }))
}

/// An order, the group spec it asks for and its bids.
#[utoipa::path(get, path = "/orders/{owner}/{dseq}/{gseq}/{oseq}", tag = "market",
    params(("owner" = Address, Path), ("dseq" = u64, Path), ("gseq" = u32, Path), ("oseq" = u32, Path), ProveQ),
    responses((status = 200, body = Proven<OrderDetail>), LookupErrors))]
async fn order(
    AxState(node): AxState<Shared>,
    Path((owner, dseq, gseq, oseq)): Path<(String, String, String, String)>,
    q: Q<ProveQ>,
) -> ApiResult<Proven<OrderDetail>> {
    let Query(q) = q?;
    let id = OrderId {
        owner: parse("owner", &owner)?,
        dseq: parse("dseq", &dseq)?,
        gseq: parse("gseq", &gseq)?,
        oseq: parse("oseq", &oseq)?,
    };
    let st = node.state();
    let o = st
        .order(&id)
        .ok_or_else(|| ApiError::not_found(format!("order {id}")))?;
    let item = OrderDetail {
        id: id.clone(),
        order: o.clone(),
        group: st.group(&group_of(&id)).map(|g| g.spec.clone()),
        bids: st
            .bids_for_order(&id)
            .map(|(bid, b)| BidEntry {
                id: bid.clone(),
                bid: b.clone(),
            })
            .collect(),
    };
    proven(&node, &st, item, store_key(table_id::ORDERS, &id), q.prove)
}

/// Bids.
#[utoipa::path(get, path = "/bids", tag = "market", params(BidListParams),
    responses((status = 200, body = BidPage), ListErrors))]
async fn bids(AxState(node): AxState<Shared>, q: Q<ListQuery>) -> ApiResult<BidPage> {
    let q = list_query(q, "/bids", filters::BIDS)?;
    let want: Option<BidState> = q.state.as_deref().map(parse_state).transpose()?;
    let st = node.state();
    let it = st
        .bids()
        .filter(|(id, b)| matches_bid(&q, id) && want.is_none_or(|w| b.state == w));
    let (bids, next) = page(&q, table_id::BIDS, it, |id, b| BidEntry {
        id: id.clone(),
        bid: b.clone(),
    })?;
    Ok(Json(BidPage {
        height: st.height,
        bids,
        next,
    }))
}

fn bid_id(owner: &str, dseq: &str, gseq: &str, oseq: &str, provider: &str) -> Result<BidId, ApiError> {
    Ok(BidId {
        owner: parse("owner", owner)?,
        dseq: parse("dseq", dseq)?,
        gseq: parse("gseq", gseq)?,
        oseq: parse("oseq", oseq)?,
        provider: parse("provider", provider)?,
    })
}

/// One bid.
#[utoipa::path(get, path = "/bids/{owner}/{dseq}/{gseq}/{oseq}/{provider}", tag = "market",
    params(("owner" = Address, Path), ("dseq" = u64, Path), ("gseq" = u32, Path), ("oseq" = u32, Path),
        ("provider" = Address, Path), ProveQ),
    responses((status = 200, body = Proven<BidEntry>), LookupErrors))]
async fn bid(
    AxState(node): AxState<Shared>,
    Path((owner, dseq, gseq, oseq, provider)): Path<(String, String, String, String, String)>,
    q: Q<ProveQ>,
) -> ApiResult<Proven<BidEntry>> {
    let Query(q) = q?;
    let id = bid_id(&owner, &dseq, &gseq, &oseq, &provider)?;
    let st = node.state();
    let b = st.bid(&id).ok_or_else(|| ApiError::not_found(format!("bid {id}")))?;
    let item = BidEntry {
        id: id.clone(),
        bid: b.clone(),
    };
    proven(&node, &st, item, store_key(table_id::BIDS, &id), q.prove)
}

/// Leases, each with what it has been paid.
#[utoipa::path(get, path = "/leases", tag = "market", params(BidListParams),
    responses((status = 200, body = LeasePage), ListErrors))]
async fn leases(AxState(node): AxState<Shared>, q: Q<ListQuery>) -> ApiResult<LeasePage> {
    let q = list_query(q, "/leases", filters::BIDS)?;
    let want: Option<LeaseState> = q.state.as_deref().map(parse_state).transpose()?;
    let st = node.state();
    let it = st
        .leases()
        .filter(|(id, l)| matches_bid(&q, id) && want.is_none_or(|w| l.state == w));
    let (leases, next) = page(&q, table_id::LEASES, it, |id, l| LeaseEntry {
        id: id.clone(),
        lease: l.clone(),
        payment: st.payment(id).cloned(),
    })?;
    Ok(Json(LeasePage {
        height: st.height,
        leases,
        next,
    }))
}

/// A lease, its payment and its deployment's escrow.
#[utoipa::path(get, path = "/leases/{owner}/{dseq}/{gseq}/{oseq}/{provider}", tag = "market",
    params(("owner" = Address, Path), ("dseq" = u64, Path), ("gseq" = u32, Path), ("oseq" = u32, Path),
        ("provider" = Address, Path), ProveQ),
    responses((status = 200, body = Proven<LeaseDetail>), LookupErrors))]
async fn lease(
    AxState(node): AxState<Shared>,
    Path((owner, dseq, gseq, oseq, provider)): Path<(String, String, String, String, String)>,
    q: Q<ProveQ>,
) -> ApiResult<Proven<LeaseDetail>> {
    let Query(q) = q?;
    let id = bid_id(&owner, &dseq, &gseq, &oseq, &provider)?;
    let st = node.state();
    let l = st
        .lease(&id)
        .ok_or_else(|| ApiError::not_found(format!("lease {id}")))?;
    let item = LeaseDetail {
        id: id.clone(),
        lease: l.clone(),
        payment: st.payment(&id).cloned(),
        escrow: st.escrow_view(&id.deployment(), st.height),
    };
    proven(&node, &st, item, store_key(table_id::LEASES, &id), q.prove)
}

/// Devnet only: sends the faucet's amounts to an address and answers once committed.
#[utoipa::path(post, path = "/faucet", tag = "devnet",
    request_body(content = FaucetRequest, content_type = "application/json"),
    responses((status = 200, description = "The faucet transaction, committed (or dropped).", body = TxState),
        FaucetErrors))]
async fn faucet(AxState(node): AxState<Shared>, body: Body) -> ApiResult<TxState> {
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

#[derive(Deserialize, Default, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct EventsQ {
    /// First height to send; past blocks are replayed from the store. Without it (and without
    /// `Last-Event-ID`) the stream starts at the next block.
    from: Option<u64>,
}

fn sse_of(b: &BlockEvents) -> SseEvent {
    SseEvent::default()
        .event(BLOCK_EVENT)
        .id(b.height.to_string())
        .data(serde_json::to_string(b).unwrap_or_default())
}

/// Most past blocks one replay step reads before yielding.
const REPLAY_CHUNK: u64 = 64;

/// Committed blocks as Server-Sent Events. Each `block` event's data is a `BlockEvents` (its id
/// the height, so a reconnecting client resumes with `Last-Event-ID`); a reader too slow for the
/// live stream gets one `lagged` event (data: `Lagged`) and the stream ends.
#[utoipa::path(get, path = "/events", tag = "chain",
    params(EventsQ, ("Last-Event-ID" = Option<u64>, Header,
        description = "Resume after this height (sent by reconnecting EventSource clients).")),
    responses((status = 200, description = "An endless `text/event-stream`: `block` events (data: \
        `#/components/schemas/BlockEvents`) and at most one `lagged` (data: `#/components/schemas/Lagged`).",
        body = String, content_type = "text/event-stream"), EventErrors))]
async fn events(
    AxState(node): AxState<Shared>,
    headers: HeaderMap,
    q: Q<EventsQ>,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, ApiError> {
    let Query(q) = q?;
    // Each subscriber holds a slot for as long as its stream lives; past the bound, a new one
    // is told to come back later rather than degrade every other subscriber.
    let slot = node.subscriber_slot().ok_or_else(|| {
        ApiError::new(
            ErrorCode::TooManySubscribers,
            format!(
                "this node already serves {} event streams; retry later or use another node",
                node.config.max_event_subscribers
            ),
        )
    })?;
    // `Last-Event-ID` (sent by reconnecting EventSource clients) resumes after that height.
    // It is the client's string: a value that is not a height is refused, not guessed at.
    let last_id = headers
        .get("last-event-id")
        .map(|v| pazar_api::request::parse_last_event_id(v.as_bytes()))
        .transpose()?;
    let head = node.head().height;
    let from = q
        .from
        .or(last_id.map(|h| h.saturating_add(1)))
        .unwrap_or(head.saturating_add(1))
        .max(1);
    // Subscribe before reading the head so no block falls between replay and live delivery.
    let live = node.subscribe_blocks();
    let replay_to = node.head().height;
    let n = node.clone();
    let replay = stream::unfold(from, move |next| {
        let n = n.clone();
        async move {
            if next > replay_to {
                return None;
            }
            let end = (next + REPLAY_CHUNK - 1).min(replay_to);
            let n2 = n.clone();
            let chunk = tokio::task::spawn_blocking(move || {
                (next..=end)
                    .filter_map(|h| n2.store().block(h).ok().flatten())
                    .map(|b| BlockEvents {
                        height: b.block.header.height,
                        hash: b.block.header.hash(),
                        time_ms: b.block.header.time_ms,
                        receipts: b.outcome.receipts,
                        end_block_events: b.outcome.end_block_events,
                    })
                    .collect::<Vec<_>>()
            })
            .await
            .unwrap_or_default();
            let items: Vec<Result<SseEvent, Infallible>> = chunk.iter().map(|b| Ok(sse_of(b))).collect();
            Some((stream::iter(items), end + 1))
        }
    })
    .flatten();
    let live = stream::unfold(
        (live, replay_to.max(from - 1), slot),
        |(mut rx, last, slot)| async move {
            loop {
                match rx.recv().await {
                    Ok(b) if b.height <= last => continue,
                    Ok(b) => {
                        let h = b.height;
                        return Some((Ok(sse_of(&b)), (rx, h, slot)));
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                        // Too slow a reader: tell it where to resume and end the stream.
                        let lagged = Lagged { resume_from: last + 1 };
                        let e = SseEvent::default()
                            .event(LAGGED_EVENT)
                            .data(serde_json::to_string(&lagged).unwrap_or_default());
                        let (_tx, closed) = tokio::sync::broadcast::channel(1);
                        drop(_tx);
                        return Some((Ok(e), (closed, u64::MAX, slot)));
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
                }
            }
        },
    );
    Ok(Sse::new(replay.chain(live)).keep_alive(KeepAlive::default()))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_reads_back_only_in_its_own_list() {
        let id = BidId {
            owner: Address::Native([1; 20]),
            dseq: 7,
            gseq: 1,
            oseq: 1,
            provider: Address::Native([2; 20]),
        };
        let c = cursor_of(table_id::LEASES, &id);
        assert_eq!(cursor_key::<BidId>(table_id::LEASES, &c).ok(), Some(id));
        assert!(
            cursor_key::<BidId>(table_id::BIDS, &c).is_err(),
            "another list's cursor"
        );
        for junk in ["", "zz", "0b", &"0b".repeat(300)] {
            assert!(cursor_key::<BidId>(table_id::LEASES, junk).is_err(), "{junk:?}");
        }
    }

    #[test]
    fn every_submission_error_is_answered_with_its_code_s_status() {
        use crate::mempool::MempoolError;
        let cases = [
            (SubmitError::TooLarge(70_000), 413, "too_large"),
            (SubmitError::Decode("x".into()), 400, "decode"),
            (SubmitError::Committed(3), 409, "duplicate"),
            (SubmitError::Mempool(MempoolError::Duplicate), 409, "duplicate"),
            (
                SubmitError::Mempool(MempoolError::Full { txs: 1, bytes: 1 }),
                503,
                "mempool_full",
            ),
        ];
        for (e, status, code) in cases {
            let a = ApiError::from(e);
            assert_eq!((a.status.as_u16(), a.envelope.error.code.as_str()), (status, code));
        }
    }
}
