//! HTTP/JSON RPC: transaction submission, queries of every module (with optional Merkle proofs),
//! blocks, a Server-Sent-Events feed of committed blocks that resumes from a height, the OpenAPI
//! description and Prometheus metrics.
//!
//! Every error is JSON `{"error": {"code": "...", "message": "..."}}` with a fitting status.

use std::convert::Infallible;
use std::str::FromStr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, State as AxState};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::stream::{self, Stream, StreamExt};
use serde::Deserialize;
use serde_json::{json, Value};

use pazar_ledger::state::{store_key, table_id};
use pazar_ledger::State;
use pazar_types::market::{BidState, LeaseState, OrderState};
use pazar_types::{Address, BidId, Denom, DeploymentId, Hash32, OrderId, Tx};

use crate::{BlockEvents, Node, SubmitError, TxOutcome};

/// Largest request body: a batch of transactions, hex-encoded in JSON.
pub const MAX_BODY_BYTES: usize = 32 << 20;
/// Most transactions in one batch submission.
pub use pazar_api::request::MAX_BATCH_TXS;
/// Most items one list query returns; a longer list comes in pages (`next`, `?cursor=`).
pub const MAX_LIST: usize = 1_000;
/// Items a list query returns when it names no `limit`.
pub const DEFAULT_LIST: usize = 100;

pub const OPENAPI: &str = include_str!("openapi.json");

type Shared = Arc<Node>;

pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }
    fn bad(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }
    fn not_found(what: impl std::fmt::Display) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("{what} not found"))
    }
    fn internal(e: impl std::fmt::Display) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(json!({"error": {"code": self.code, "message": self.message}})),
        )
            .into_response()
    }
}

impl From<SubmitError> for ApiError {
    fn from(e: SubmitError) -> ApiError {
        let status = match &e {
            SubmitError::Mempool(crate::mempool::MempoolError::Full { .. }) => StatusCode::SERVICE_UNAVAILABLE,
            SubmitError::Mempool(crate::mempool::MempoolError::Duplicate) | SubmitError::Committed(_) => {
                StatusCode::CONFLICT
            }
            SubmitError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            _ => StatusCode::BAD_REQUEST,
        };
        ApiError::new(status, e.reason(), e.to_string())
    }
}

type ApiResult = Result<Json<Value>, ApiError>;

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
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "no_route", "no such endpoint; see /openapi.json") })
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

async fn openapi() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI)
}

async fn metrics(AxState(node): AxState<Shared>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        node.metrics.render(),
    )
}

async fn status(AxState(node): AxState<Shared>) -> ApiResult {
    let head = node.head();
    let (txs, bytes) = node.mempool_len();
    Ok(Json(json!({
        "chain_id": node.chain_id(),
        "height": head.height,
        "block_hash": hex::encode(head.block_hash),
        "state_root": hex::encode(head.state_root),
        "time_ms": head.time_ms,
        "mempool": {"txs": txs, "bytes": bytes},
        "block_time_ms": node.config.block_time.as_millis() as u64,
        "version": env!("CARGO_PKG_VERSION"),
    })))
}

use pazar_api::request::{RequestError, SubmitMode as Mode};

impl From<RequestError> for ApiError {
    fn from(e: RequestError) -> ApiError {
        let status = match e {
            RequestError::TxTooLarge { .. } | RequestError::TooManyTxs => StatusCode::PAYLOAD_TOO_LARGE,
            _ => StatusCode::BAD_REQUEST,
        };
        ApiError::new(status, e.code(), e.to_string())
    }
}

async fn submit(AxState(node): AxState<Shared>, headers: HeaderMap, body: Bytes) -> ApiResult {
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
    let Some(rx) = rx else {
        return Ok(Json(json!({"hash": hex::encode(hash), "status": "pending"})));
    };
    match tokio::time::timeout(node.config.commit_wait, rx).await {
        Ok(Ok(outcome)) => Ok(Json(outcome_json(hash, &outcome))),
        _ => {
            node.unwatch(&hash);
            Ok(Json(json!({"hash": hex::encode(hash), "status": "pending"})))
        }
    }
}

fn outcome_json(hash: Hash32, o: &TxOutcome) -> Value {
    let mut v = serde_json::to_value(o).unwrap_or(Value::Null);
    if let Value::Object(m) = &mut v {
        m.insert("hash".into(), json!(hex::encode(hash)));
    }
    v
}

async fn submit_batch(AxState(node): AxState<Shared>, body: Bytes) -> ApiResult {
    let req = pazar_api::request::parse_batch(&body)?;
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
        match (r, rx) {
            (Err(e), _) => {
                node.unwatch(&hash);
                out.push(json!({"hash": hex::encode(hash), "status": "refused",
                    "error": {"code": e.reason(), "message": e.to_string()}}));
            }
            (Ok(_), None) => out.push(json!({"hash": hex::encode(hash), "status": "pending"})),
            (Ok(_), Some(rx)) => match tokio::time::timeout_at(deadline, rx).await {
                Ok(Ok(o)) => out.push(outcome_json(hash, &o)),
                _ => {
                    node.unwatch(&hash);
                    out.push(json!({"hash": hex::encode(hash), "status": "pending"}));
                }
            },
        }
    }
    Ok(Json(json!({ "results": out })))
}

async fn tx_by_hash(AxState(node): AxState<Shared>, Path(hash): Path<String>) -> ApiResult {
    let h = parse_hash(&hash)?;
    let loc = node.store().tx_location(&h).map_err(ApiError::internal)?;
    let Some((height, index)) = loc else {
        if node.is_pending(&h) {
            return Ok(Json(json!({"hash": hash, "status": "pending"})));
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
    let tx = Tx::decode(bytes).ok();
    Ok(Json(json!({
        "hash": hash,
        "status": "committed",
        "height": height,
        "index": index,
        "tx": tx,
        "receipt": b.outcome.receipts.get(i),
    })))
}

async fn block(AxState(node): AxState<Shared>, Path(height): Path<String>) -> ApiResult {
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
    let hashes: Vec<String> = b
        .block
        .txs
        .iter()
        .map(|t| hex::encode(pazar_types::tx_hash(t)))
        .collect();
    Ok(Json(json!({
        "hash": hex::encode(b.block.header.hash()),
        "header": b.block.header,
        "txs": hashes,
        "receipts": b.outcome.receipts,
        "end_block_events": b.outcome.events,
        "state_root_after": hex::encode(b.state_root),
    })))
}

async fn params(AxState(node): AxState<Shared>) -> ApiResult {
    let st = node.state();
    Ok(Json(json!({"height": st.height, "params": st.params})))
}

async fn supply(AxState(node): AxState<Shared>) -> ApiResult {
    let st = node.state();
    let supply: Vec<Value> = st
        .params
        .denoms()
        .iter()
        .map(|d| json!({"denom": d, "amount": st.supply_of(d).to_string()}))
        .collect();
    Ok(Json(json!({"height": st.height, "supply": supply})))
}

#[derive(Deserialize, Default)]
struct ProveQ {
    #[serde(default)]
    prove: bool,
}

/// Adds `"proof"` for `key` to `v` when asked; the caller holds the state lock so the proof is
/// about the same version as the value.
fn with_proof(node: &Node, st: &State, mut v: Value, key: Vec<u8>, prove: bool) -> ApiResult {
    if prove {
        let p = node.store().prove(&key).map_err(ApiError::internal)?;
        if p.height != st.height {
            return Err(ApiError::internal("store and state disagree on the height"));
        }
        v["proof"] = json!({
            "height": p.height,
            "state_root": hex::encode(p.root),
            "key": hex::encode(&p.key),
            "value": p.value.as_ref().map(hex::encode),
            "proof": hex::encode(&p.proof),
        });
    }
    v["height"] = json!(st.height);
    Ok(Json(v))
}

async fn account(AxState(node): AxState<Shared>, Path(address): Path<String>, Query(q): Query<ProveQ>) -> ApiResult {
    let a: Address = parse("address", &address)?;
    let st = node.state();
    let v = json!({
        "address": a,
        "sequence": st.account(&a).sequence,
        "balances": st.balances_of(&a),
    });
    with_proof(&node, &st, v, store_key(table_id::ACCOUNTS, &a), q.prove)
}

async fn balance(
    AxState(node): AxState<Shared>,
    Path((address, denom)): Path<(String, String)>,
    Query(q): Query<ProveQ>,
) -> ApiResult {
    let a: Address = parse("address", &address)?;
    let d: Denom = parse("denom", &denom)?;
    let st = node.state();
    let v = json!({"address": a, "denom": d, "amount": st.balance(&a, &d).to_string()});
    with_proof(&node, &st, v, store_key(table_id::BALANCES, &(a, d)), q.prove)
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ListQ {
    owner: Option<String>,
    provider: Option<String>,
    dseq: Option<u64>,
    state: Option<String>,
    limit: Option<usize>,
    /// The `next` of the previous page.
    cursor: Option<String>,
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

impl ListQ {
    fn owner(&self) -> Result<Option<Address>, ApiError> {
        self.owner.as_deref().map(|s| parse("owner", s)).transpose()
    }
    fn provider(&self) -> Result<Option<Address>, ApiError> {
        self.provider.as_deref().map(|s| parse("provider", s)).transpose()
    }
    /// Whether a bid or lease id passes the owner, provider and dseq filters.
    fn matches_bid(&self, id: &BidId, owner: Option<Address>, provider: Option<Address>) -> bool {
        owner.is_none_or(|o| id.owner == o)
            && provider.is_none_or(|p| id.provider == p)
            && self.dseq.is_none_or(|d| id.dseq == d)
    }

    /// One page of `items` (in key order, already filtered): those after the cursor, at most
    /// `limit` of them (default [`DEFAULT_LIST`], at most [`MAX_LIST`]), each made by `show`,
    /// and the cursor of the next page when any item remains (`None` only at the end, so a
    /// list is never cut short silently). Keys are compared, not positions, so items added or
    /// removed between pages never shift others in or out.
    fn page<'k, K, T>(
        &self,
        table: u8,
        items: impl Iterator<Item = (&'k K, T)>,
        show: impl Fn(&K, T) -> Value,
    ) -> Result<(Vec<Value>, Option<String>), ApiError>
    where
        K: Ord + borsh::BorshSerialize + borsh::BorshDeserialize + 'k,
    {
        let limit = self.limit.unwrap_or(DEFAULT_LIST);
        if limit == 0 {
            return Err(ApiError::bad(format!("limit must be 1 to {MAX_LIST}")));
        }
        let limit = limit.min(MAX_LIST);
        let after: Option<K> = self.cursor.as_deref().map(|c| cursor_key(table, c)).transpose()?;
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
}

async fn providers(AxState(node): AxState<Shared>, Query(q): Query<ListQ>) -> ApiResult {
    let st = node.state();
    let (items, next) = q.page(
        table_id::PROVIDERS,
        st.providers(),
        |a, p| json!({"owner": a, "provider": p, "load": st.provider_load(a)}),
    )?;
    Ok(Json(json!({"height": st.height, "providers": items, "next": next})))
}

async fn provider(AxState(node): AxState<Shared>, Path(address): Path<String>, Query(q): Query<ProveQ>) -> ApiResult {
    let a: Address = parse("address", &address)?;
    let st = node.state();
    let p = st
        .provider(&a)
        .ok_or_else(|| ApiError::not_found(format!("provider {a}")))?;
    let audits: Vec<Value> = st
        .audits_of(&a)
        .map(|(auditor, attrs)| json!({"auditor": auditor, "attributes": attrs}))
        .collect();
    let v = json!({"owner": a, "provider": p, "load": st.provider_load(&a), "audits": audits});
    with_proof(&node, &st, v, store_key(table_id::PROVIDERS, &a), q.prove)
}

fn deployment_json(st: &State, id: &DeploymentId) -> Option<Value> {
    let d = st.deployment(id)?;
    let groups: Vec<Value> = (1..=d.groups)
        .filter_map(|g| st.group(&id.group(g)).map(|gr| json!({"gseq": g, "group": gr})))
        .collect();
    let leases: Vec<Value> = st
        .leases_of_deployment(id)
        .map(|(lid, l)| json!({"id": lid, "lease": l}))
        .collect();
    Some(json!({
        "id": id,
        "deployment": d,
        "groups": groups,
        "leases": leases,
        "escrow": st.escrow_view(id, st.height),
    }))
}

async fn deployments(AxState(node): AxState<Shared>, Query(q): Query<ListQ>) -> ApiResult {
    let owner = q.owner()?;
    let st = node.state();
    let show = |id: &DeploymentId, ()| deployment_json(&st, id).unwrap_or(Value::Null);
    let (items, next) = match owner {
        Some(o) => q.page(
            table_id::DEPLOYMENTS,
            st.deployments_of(&o).map(|(id, _)| (id, ())),
            show,
        )?,
        None => q.page(table_id::DEPLOYMENTS, st.deployments().map(|(id, _)| (id, ())), show)?,
    };
    Ok(Json(json!({"height": st.height, "deployments": items, "next": next})))
}

async fn deployment(
    AxState(node): AxState<Shared>,
    Path((owner, dseq)): Path<(String, String)>,
    Query(q): Query<ProveQ>,
) -> ApiResult {
    let id = DeploymentId {
        owner: parse("owner", &owner)?,
        dseq: parse("dseq", &dseq)?,
    };
    let st = node.state();
    let v = deployment_json(&st, &id).ok_or_else(|| ApiError::not_found(format!("deployment {id}")))?;
    with_proof(&node, &st, v, store_key(table_id::DEPLOYMENTS, &id), q.prove)
}

async fn escrow(
    AxState(node): AxState<Shared>,
    Path((owner, dseq)): Path<(String, String)>,
    Query(q): Query<ProveQ>,
) -> ApiResult {
    let id = DeploymentId {
        owner: parse("owner", &owner)?,
        dseq: parse("dseq", &dseq)?,
    };
    let st = node.state();
    let acct = st
        .escrow_account(&id)
        .ok_or_else(|| ApiError::not_found(format!("escrow of deployment {id}")))?;
    let v = json!({"id": id, "view": st.escrow_view(&id, st.height), "account": acct});
    with_proof(&node, &st, v, store_key(table_id::ESCROW, &id), q.prove)
}

async fn orders(AxState(node): AxState<Shared>, Query(q): Query<ListQ>) -> ApiResult {
    let owner = q.owner()?;
    let want: Option<OrderState> = q.state.as_deref().map(parse_state).transpose()?;
    let st = node.state();
    let it = st.orders().filter(|(id, o)| {
        owner.is_none_or(|ow| id.owner == ow)
            && q.dseq.is_none_or(|d| id.dseq == d)
            && want.is_none_or(|w| o.state == w)
    });
    let (items, next) = q.page(
        table_id::ORDERS,
        it,
        |id, o| json!({"id": id, "order": o, "group": st.group(&GroupOf::group_of(id)).map(|g| &g.spec)}),
    )?;
    Ok(Json(json!({"height": st.height, "orders": items, "next": next})))
}

trait GroupOf {
    fn group_of(&self) -> pazar_types::GroupId;
}
impl GroupOf for OrderId {
    fn group_of(&self) -> pazar_types::GroupId {
        pazar_types::GroupId {
            owner: self.owner,
            dseq: self.dseq,
            gseq: self.gseq,
        }
    }
}

fn parse_state<T: for<'de> Deserialize<'de>>(s: &str) -> Result<T, ApiError> {
    serde_json::from_value(Value::String(s.to_string())).map_err(|_| ApiError::bad(format!("unknown state {s:?}")))
}

async fn order(
    AxState(node): AxState<Shared>,
    Path((owner, dseq, gseq, oseq)): Path<(String, String, String, String)>,
    Query(q): Query<ProveQ>,
) -> ApiResult {
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
    let bids: Vec<Value> = st
        .bids_for_order(&id)
        .map(|(bid, b)| json!({"id": bid, "bid": b}))
        .collect();
    let v = json!({"id": id, "order": o, "group": st.group(&id.group_of()).map(|g| &g.spec), "bids": bids});
    with_proof(&node, &st, v, store_key(table_id::ORDERS, &id), q.prove)
}

async fn bids(AxState(node): AxState<Shared>, Query(q): Query<ListQ>) -> ApiResult {
    let owner = q.owner()?;
    let provider = q.provider()?;
    let want: Option<BidState> = q.state.as_deref().map(parse_state).transpose()?;
    let st = node.state();
    let it = st
        .bids()
        .filter(|(id, b)| q.matches_bid(id, owner, provider) && want.is_none_or(|w| b.state == w));
    let (items, next) = q.page(table_id::BIDS, it, |id, b| json!({"id": id, "bid": b}))?;
    Ok(Json(json!({"height": st.height, "bids": items, "next": next})))
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

async fn bid(
    AxState(node): AxState<Shared>,
    Path((owner, dseq, gseq, oseq, provider)): Path<(String, String, String, String, String)>,
    Query(q): Query<ProveQ>,
) -> ApiResult {
    let id = bid_id(&owner, &dseq, &gseq, &oseq, &provider)?;
    let st = node.state();
    let b = st.bid(&id).ok_or_else(|| ApiError::not_found(format!("bid {id}")))?;
    let v = json!({"id": id, "bid": b});
    with_proof(&node, &st, v, store_key(table_id::BIDS, &id), q.prove)
}

async fn leases(AxState(node): AxState<Shared>, Query(q): Query<ListQ>) -> ApiResult {
    let owner = q.owner()?;
    let provider = q.provider()?;
    let want: Option<LeaseState> = q.state.as_deref().map(parse_state).transpose()?;
    let st = node.state();
    let it = st
        .leases()
        .filter(|(id, l)| q.matches_bid(id, owner, provider) && want.is_none_or(|w| l.state == w));
    let (items, next) = q.page(
        table_id::LEASES,
        it,
        |id, l| json!({"id": id, "lease": l, "payment": st.payment(id)}),
    )?;
    Ok(Json(json!({"height": st.height, "leases": items, "next": next})))
}

async fn lease(
    AxState(node): AxState<Shared>,
    Path((owner, dseq, gseq, oseq, provider)): Path<(String, String, String, String, String)>,
    Query(q): Query<ProveQ>,
) -> ApiResult {
    let id = bid_id(&owner, &dseq, &gseq, &oseq, &provider)?;
    let st = node.state();
    let l = st
        .lease(&id)
        .ok_or_else(|| ApiError::not_found(format!("lease {id}")))?;
    let v = json!({
        "id": id,
        "lease": l,
        "payment": st.payment(&id),
        "escrow": st.escrow_view(&id.deployment(), st.height),
    });
    with_proof(&node, &st, v, store_key(table_id::LEASES, &id), q.prove)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FaucetReq {
    address: String,
}

async fn faucet(AxState(node): AxState<Shared>, body: Bytes) -> ApiResult {
    let req: FaucetReq = json_body(&body)?;
    let to: Address = parse("address", &req.address)?;
    match node.faucet(to).await {
        Ok(o) => Ok(Json(serde_json::to_value(&o).unwrap_or(Value::Null))),
        Err(crate::FaucetError::Disabled) => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "no_faucet",
            "this node has no faucet (only a devnet does)",
        )),
        Err(e) => Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "faucet", e.to_string())),
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct EventsQ {
    /// First height to send; past blocks are replayed from the store.
    from: Option<u64>,
}

fn sse_of(b: &BlockEvents) -> SseEvent {
    SseEvent::default()
        .event("block")
        .id(b.height.to_string())
        .data(serde_json::to_string(b).unwrap_or_default())
}

/// Most past blocks one replay step reads before yielding.
const REPLAY_CHUNK: u64 = 64;

async fn events(
    AxState(node): AxState<Shared>,
    headers: HeaderMap,
    Query(q): Query<EventsQ>,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, ApiError> {
    // Each subscriber holds a slot for as long as its stream lives; past the bound, a new one
    // is told to come back later rather than degrade every other subscriber.
    let slot = node.subscriber_slot().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "too_many_subscribers",
            format!(
                "this node already serves {} event streams; retry later or use another node",
                node.config.max_event_subscribers
            ),
        )
    })?;
    // `Last-Event-ID` (sent by reconnecting EventSource clients) resumes after that height.
    // It is the client's string: a value that is not a height is refused, not guessed at.
    let last_id = match headers.get("last-event-id") {
        None => None,
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
                .ok_or_else(|| {
                    ApiError::new(
                        StatusCode::BAD_REQUEST,
                        "bad_last_event_id",
                        "Last-Event-ID must be a block height (a decimal u64)",
                    )
                })?,
        ),
    };
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
                        txs: b.outcome.receipts,
                        end_block: b.outcome.events,
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
                        let e = SseEvent::default()
                            .event("lagged")
                            .data(json!({"resume_from": last + 1}).to_string());
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
    fn openapi_describes_exactly_the_served_routes() {
        let doc: Value = serde_json::from_str(OPENAPI).expect("openapi.json is JSON");
        let mut documented: Vec<&str> = doc["paths"]
            .as_object()
            .expect("paths")
            .keys()
            .map(String::as_str)
            .collect();
        let mut served = ROUTES.to_vec();
        documented.sort_unstable();
        served.sort_unstable();
        assert_eq!(documented, served);
    }

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
}
