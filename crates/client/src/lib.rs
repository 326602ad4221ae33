//! The client side of Pazar: the keyring, a typed client of the node's RPC, transaction
//! building, proof verification and the node's event stream. The CLI, the provider daemon, a
//! console or a training job talk to nodes through it and read the contract types of
//! `pazar-api`, never JSON by key.

pub mod deploy;
pub mod events;
/// Durable writes of local records (the keyring, saved manifests).
pub use pazar_files as files;
pub mod keyring;
pub mod snapshots;
pub mod tenant;
pub mod watch;
pub mod why_no_bids;

use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde_json::{json, Value};

use pazar_api::node::{
    AccountInfo, Balance, BatchResults, BidEntry, BlockResponse, CheckpointProvenance, DatasetEntry, DeploymentDetail,
    EscrowDetail, LeaseDetail, ListQuery, OrderDetail, Page, ParamsResponse, Proven, ProviderDetail, SimulateResult,
    Status, SupplyResponse, TrainJobEntry, TrainJobPage, TrainMembers, TrainRound, TxLookup, TxResult, TxState,
};
use pazar_api::request::SubmitMode;
use pazar_api::{ErrorCode, ErrorEnvelope};
use pazar_types::{
    Address, BidId, Coin, Denom, DeploymentId, Hash32, Header, LeaseId, Msg, OrderId, SigningKey, TxBody,
};

pub use crate::events::EventStream;

/// A small runtime on this thread for the provider channel: the blocking workflows (deploy,
/// snapshots, the agent) each drive their async calls with one.
pub(crate) fn provider_runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread().enable_all().build()
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(
        "cannot reach the node at {url}: {reason}. Is it running? Start one with `pazar devnet`, or pass --node URL"
    )]
    Connect { url: String, reason: String },
    /// The node refused the request with its error envelope (or, from something that is not a
    /// Pazar node, an error status whose body is not one: code [`ErrorCode::Unknown`]).
    #[error("{message} [{code}]")]
    Api {
        status: u16,
        code: ErrorCode,
        message: String,
    },
    #[error("unexpected answer from the node: {0}")]
    Decode(String),
    /// A paged list could not be read whole (a cursor that does not advance, too many pages).
    #[error("the list {path} cannot be read whole: {reason}")]
    List { path: String, reason: String },
    /// A request this client will not send (a list filter that would need escaping).
    #[error("bad request: {0}")]
    Request(String),
    #[error("proof check failed: {0}")]
    Proof(String),
    #[error("transaction {hash} was not committed within {secs} s; it may still be pending (check with `pazar query tx {hash}`)")]
    Timeout { hash: String, secs: u64 },
}

impl ClientError {
    /// The node's error code, if it answered with one.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Api { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// Whether the node answered that the thing asked about does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, ClientError::Api { status: 404, .. })
    }
}

/// A blocking client of one node's RPC. Every endpoint has a typed method that answers the
/// contract type of `pazar-api`; errors come back as [`ClientError::Api`] with the node's code.
#[derive(Clone)]
pub struct Rpc {
    base: String,
    agent: ureq::Agent,
}

/// Largest answer read from the node.
pub const MAX_RESPONSE: u64 = 64 << 20;
/// Longest one request may take, answer included.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// Items per page [`Rpc::list_all`] asks for: the node's largest page.
const LIST_PAGE: usize = pazar_api::node::MAX_LIST;
/// Pages [`Rpc::list_all`] reads at most (a hundred million items).
pub const MAX_LIST_PAGES: usize = 100_000;
/// Longest a state snapshot stream may take ([`Rpc::snapshot`]); the node serves one for as long.
pub const SNAPSHOT_TIMEOUT: Duration = Duration::from_secs(600);
/// Longest [`Rpc::verify_proof`] waits for the header that commits to a proof's height.
const PROOF_HEADER_WAIT: Duration = Duration::from_secs(30);

/// The error of an answer with an error status: the node's envelope, or (from something that is
/// not a node, such as a proxy) the start of the body under [`ErrorCode::Unknown`].
fn api_error(status: u16, body: &[u8]) -> ClientError {
    match serde_json::from_slice::<ErrorEnvelope>(body) {
        Ok(e) => ClientError::Api {
            status,
            code: e.error.code,
            message: e.error.message,
        },
        Err(_) => ClientError::Api {
            status,
            code: ErrorCode::Unknown,
            message: format!("HTTP {status}: {}", shortened(body)),
        },
    }
}

/// The start of a body, for an error message (a message is no place for megabytes).
fn shortened(body: &[u8]) -> String {
    String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned()
}

/// `/bids/OWNER/DSEQ/GSEQ/OSEQ/PROVIDER` (and leases), as the RPC paths spell an id.
fn bid_path(id: &BidId) -> String {
    format!("{}/{}/{}/{}/{}", id.owner, id.dseq, id.gseq, id.oseq, id.provider)
}

fn prove_suffix(prove: bool) -> &'static str {
    if prove {
        "?prove=true"
    } else {
        ""
    }
}

fn mode_name(mode: SubmitMode) -> &'static str {
    match mode {
        SubmitMode::Sync => "sync",
        SubmitMode::Commit => "commit",
    }
}

impl Rpc {
    pub fn new(base: &str) -> Rpc {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(REQUEST_TIMEOUT))
            .build()
            .into();
        Rpc {
            base: base.trim_end_matches('/').to_string(),
            agent,
        }
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// The body of an answer (at most [`MAX_RESPONSE`] bytes), or its error.
    fn body(&self, r: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> Result<Vec<u8>, ClientError> {
        let mut resp = r.map_err(|e| ClientError::Connect {
            url: self.base.clone(),
            reason: e.to_string(),
        })?;
        let status = resp.status().as_u16();
        let bytes = resp
            .body_mut()
            .with_config()
            .limit(MAX_RESPONSE)
            .read_to_vec()
            .map_err(|e| ClientError::Decode(e.to_string()))?;
        if status >= 400 {
            return Err(api_error(status, &bytes));
        }
        Ok(bytes)
    }

    fn decode<T: DeserializeOwned>(path: &str, bytes: &[u8]) -> Result<T, ClientError> {
        serde_json::from_slice(bytes).map_err(|e| ClientError::Decode(format!("{path}: {e}: {}", shortened(bytes))))
    }

    /// `GET path`, read as `T`.
    fn fetch<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        let url = format!("{}{path}", self.base);
        let bytes = self.body(self.agent.get(&url).call())?;
        Self::decode(path, &bytes)
    }

    /// `POST path` with a JSON body, read as `T`.
    fn send<T: DeserializeOwned>(&self, path: &str, body: &Value) -> Result<T, ClientError> {
        let url = format!("{}{path}", self.base);
        let bytes = self.body(self.agent.post(&url).send_json(body))?;
        Self::decode(path, &bytes)
    }

    /// `GET path` as untyped JSON: for tests and tools that probe the RPC itself (the OpenAPI
    /// document, an endpoint this version does not know). Programs use the typed methods.
    pub fn get(&self, path: &str) -> Result<Value, ClientError> {
        self.fetch(path)
    }

    /// `POST path` as untyped JSON, for the same uses as [`Rpc::get`].
    pub fn post(&self, path: &str, body: &Value) -> Result<Value, ClientError> {
        self.send(path, body)
    }

    /// `GET /status`.
    pub fn status(&self) -> Result<Status, ClientError> {
        self.fetch("/status")
    }

    /// `GET /params`.
    pub fn params(&self) -> Result<ParamsResponse, ClientError> {
        self.fetch("/params")
    }

    /// `GET /validators`: the validator sets of the current epoch and the fixed ones after it,
    /// with each set's `set_hash`, and the votes of this epoch.
    pub fn validators(&self) -> Result<pazar_api::node::ValidatorsResponse, ClientError> {
        self.fetch("/validators")
    }

    /// `GET /supply`.
    pub fn supply(&self) -> Result<SupplyResponse, ClientError> {
        self.fetch("/supply")
    }

    /// `GET /accounts/{address}`; with `prove`, the answer carries a proof for
    /// [`Rpc::verify_proof`].
    pub fn account(&self, address: &Address, prove: bool) -> Result<Proven<AccountInfo>, ClientError> {
        self.fetch(&format!("/accounts/{address}{}", prove_suffix(prove)))
    }

    /// `GET /accounts/{address}/balances/{denom}`.
    pub fn balance(&self, address: &Address, denom: &Denom, prove: bool) -> Result<Proven<Balance>, ClientError> {
        self.fetch(&format!("/accounts/{address}/balances/{denom}{}", prove_suffix(prove)))
    }

    /// `GET /providers/{address}`: the provider, its load and every audit of it.
    pub fn provider(&self, address: &Address, prove: bool) -> Result<Proven<ProviderDetail>, ClientError> {
        self.fetch(&format!("/providers/{address}{}", prove_suffix(prove)))
    }

    /// `GET /deployments/{owner}/{dseq}`.
    pub fn deployment(&self, id: &DeploymentId, prove: bool) -> Result<Proven<DeploymentDetail>, ClientError> {
        self.fetch(&format!("/deployments/{}/{}{}", id.owner, id.dseq, prove_suffix(prove)))
    }

    /// `GET /escrow/{owner}/{dseq}`.
    pub fn escrow(&self, id: &DeploymentId, prove: bool) -> Result<Proven<EscrowDetail>, ClientError> {
        self.fetch(&format!("/escrow/{}/{}{}", id.owner, id.dseq, prove_suffix(prove)))
    }

    /// `GET /orders/{owner}/{dseq}/{gseq}/{oseq}`: the order, its group and its bids.
    pub fn order(&self, id: &OrderId, prove: bool) -> Result<Proven<OrderDetail>, ClientError> {
        self.fetch(&format!(
            "/orders/{}/{}/{}/{}{}",
            id.owner,
            id.dseq,
            id.gseq,
            id.oseq,
            prove_suffix(prove)
        ))
    }

    /// `GET /bids/{owner}/{dseq}/{gseq}/{oseq}/{provider}`.
    pub fn bid(&self, id: &BidId, prove: bool) -> Result<Proven<BidEntry>, ClientError> {
        self.fetch(&format!("/bids/{}{}", bid_path(id), prove_suffix(prove)))
    }

    /// `GET /leases/{owner}/{dseq}/{gseq}/{oseq}/{provider}`: the lease, its payment and its
    /// deployment's escrow.
    pub fn lease(&self, id: &LeaseId, prove: bool) -> Result<Proven<LeaseDetail>, ClientError> {
        self.fetch(&format!("/leases/{}{}", bid_path(id), prove_suffix(prove)))
    }

    /// `GET /train/datasets/{root}`: a registered dataset.
    pub fn train_dataset(&self, root: &Hash32, prove: bool) -> Result<Proven<DatasetEntry>, ClientError> {
        self.fetch(&format!("/train/datasets/{}{}", hex::encode(root), prove_suffix(prove)))
    }

    /// `GET /train/jobs/{id}`: a training job.
    pub fn train_job(&self, id: u64, prove: bool) -> Result<Proven<TrainJobEntry>, ClientError> {
        self.fetch(&format!("/train/jobs/{id}{}", prove_suffix(prove)))
    }

    /// Every training job with the query's filters (`owner`, `state`), by id: the pages of
    /// `GET /train/jobs` read whole ([`Rpc::list_all`]).
    pub fn train_jobs(&self, query: &ListQuery) -> Result<Vec<TrainJobEntry>, ClientError> {
        self.list_all::<TrainJobPage>(query)
    }

    /// `GET /train/jobs/{id}/members`: every member of a job.
    pub fn train_members(&self, id: u64) -> Result<TrainMembers, ClientError> {
        self.fetch(&format!("/train/jobs/{id}/members"))
    }

    /// `GET /train/jobs/{id}/rounds/{round}`: the live round (phase, deadlines, each worker's
    /// work, the audits) or, once settled, the provenance of the checkpoint it produced.
    pub fn train_round(&self, id: u64, round: u32) -> Result<TrainRound, ClientError> {
        self.fetch(&format!("/train/jobs/{id}/rounds/{round}"))
    }

    /// `GET /train/checkpoints/{hash}`: the provenance record of every round that produced a
    /// checkpoint, to walk its chain back to the initial checkpoint and the dataset.
    pub fn train_checkpoint(&self, checkpoint: &Hash32) -> Result<CheckpointProvenance, ClientError> {
        self.fetch(&format!("/train/checkpoints/{}", hex::encode(checkpoint)))
    }

    /// `POST /state/proofs`: proofs of these store keys, all at the node's latest height
    /// (unchecked: verify each against the header of `height + 1`).
    pub fn state_proofs(&self, keys: &[Vec<u8>]) -> Result<pazar_api::proof::ProofsResponse, ClientError> {
        let req = pazar_api::proof::ProofsRequest {
            keys: keys.iter().cloned().map(pazar_api::proof::StoreKey).collect(),
        };
        let body = serde_json::to_value(&req).map_err(|e| ClientError::Decode(e.to_string()))?;
        self.send("/state/proofs", &body)
    }

    /// `GET /txs/{hash}`.
    pub fn tx(&self, hash: &Hash32) -> Result<TxLookup, ClientError> {
        self.fetch(&format!("/txs/{}", hex::encode(hash)))
    }

    /// `GET /blocks/{height}`.
    pub fn block(&self, height: u64) -> Result<BlockResponse, ClientError> {
        self.fetch(&format!("/blocks/{height}"))
    }

    /// `GET /blocks/latest`.
    pub fn latest_block(&self) -> Result<BlockResponse, ClientError> {
        self.fetch("/blocks/latest")
    }

    /// `GET /sync/finalization/{height}`: the consensus engine's encoded finalization
    /// certificate of a block (at most 1 MiB), to check before trusting anything it proves.
    pub fn finalization(&self, height: u64) -> Result<Vec<u8>, ClientError> {
        let url = format!("{}/sync/finalization/{height}", self.base);
        let bytes = self.body(self.agent.get(&url).call())?;
        if bytes.len() > 1 << 20 {
            return Err(ClientError::Decode(format!("a certificate of {} bytes", bytes.len())));
        }
        Ok(bytes)
    }

    /// `GET /sync/handoffs?from=E`: the node's validator-set hand-off records from epoch `from`
    /// on, in a row (at most [`pazar_api::sync::MAX_HANDOFFS`] an answer; the caller checks
    /// each before trusting it).
    pub fn handoffs(&self, from: u64) -> Result<pazar_api::sync::Handoffs, ClientError> {
        self.fetch(&format!("/sync/handoffs?from={from}"))
    }

    /// `GET /sync/snapshot`: a reader of the node's state snapshot stream (the store's
    /// length-prefixed frames); the caller bounds what it reads by the frames' own limits.
    /// The stream may take up to [`SNAPSHOT_TIMEOUT`].
    pub fn snapshot(&self) -> Result<impl std::io::Read + use<>, ClientError> {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(SNAPSHOT_TIMEOUT))
            .build()
            .into();
        let url = format!("{}/sync/snapshot", self.base);
        let mut resp = agent.get(&url).call().map_err(|e| ClientError::Connect {
            url: self.base.clone(),
            reason: e.to_string(),
        })?;
        let status = resp.status().as_u16();
        if status >= 400 {
            let bytes = resp
                .body_mut()
                .with_config()
                .limit(1 << 16)
                .read_to_vec()
                .map_err(|e| ClientError::Decode(e.to_string()))?;
            return Err(api_error(status, &bytes));
        }
        Ok(resp.into_body().into_reader())
    }

    /// `POST /txs`: submits signed bytes. With [`SubmitMode::Commit`] the answer comes once the
    /// transaction is committed (or dropped), with its receipt; a refused transaction is an
    /// error with the node's code.
    pub fn submit(&self, tx: &[u8], mode: SubmitMode) -> Result<TxResult, ClientError> {
        self.send("/txs", &json!({"tx": hex::encode(tx), "mode": mode_name(mode)}))
    }

    /// `POST /txs/simulate`: what would become of signed bytes if submitted now (the admission
    /// error `POST /txs` would give, and the ledger's receipt), with nothing submitted.
    pub fn simulate(&self, tx: &[u8]) -> Result<SimulateResult, ClientError> {
        self.send("/txs/simulate", &json!({"tx": hex::encode(tx)}))
    }

    /// `POST /txs/batch`: one result per transaction, in order; a refused one is a
    /// [`TxState::Refused`] result, not an error.
    pub fn submit_batch(&self, txs: &[Vec<u8>], mode: SubmitMode) -> Result<BatchResults, ClientError> {
        let hexes: Vec<String> = txs.iter().map(hex::encode).collect();
        let r: BatchResults = self.send("/txs/batch", &json!({"txs": hexes, "mode": mode_name(mode)}))?;
        if r.results.len() != txs.len() {
            return Err(ClientError::Decode(format!(
                "/txs/batch: {} results for {} transactions",
                r.results.len(),
                txs.len()
            )));
        }
        Ok(r)
    }

    /// `POST /faucet` (devnets only): sends the faucet's amounts to `address` and answers once
    /// committed.
    pub fn faucet(&self, address: &Address) -> Result<TxState, ClientError> {
        self.send("/faucet", &json!(pazar_api::node::FaucetRequest { address: *address }))
    }

    /// One page of a list (`/providers`, `/deployments`, `/orders`, `/bids`, `/leases`,
    /// `/train/jobs`: the page type names which) with the query's filters, `limit` and `cursor`.
    pub fn list_page<P: Page + DeserializeOwned>(&self, query: &ListQuery) -> Result<P, ClientError> {
        let q = query.to_query_string().map_err(ClientError::Request)?;
        self.fetch(&format!("{}{q}", P::PATH))
    }

    /// Every item of a paged list with the query's filters: asks for pages of the node's
    /// largest size (or the query's own `limit`), follows each answer's `next` cursor, and stops
    /// when the node says the list ends (`next` null). A node whose cursors do not advance, or
    /// that pages on past [`MAX_LIST_PAGES`], is an error, never a silently shorter list.
    pub fn list_all<P: Page + DeserializeOwned>(&self, query: &ListQuery) -> Result<Vec<P::Item>, ClientError> {
        let mut q = query.clone();
        q.limit = Some(query.limit.unwrap_or(LIST_PAGE));
        let path = format!("{}{}", P::PATH, query.to_query_string().map_err(ClientError::Request)?);
        let mut out = Vec::new();
        for _ in 0..MAX_LIST_PAGES {
            let (items, next) = self.list_page::<P>(&q)?.into_parts();
            let empty = items.is_empty();
            out.extend(items);
            match next {
                None => return Ok(out),
                Some(next) if q.cursor.as_deref() != Some(next.as_str()) && !empty => q.cursor = Some(next),
                Some(next) => {
                    return Err(ClientError::List {
                        path,
                        reason: format!("the node's next cursor {next:?} does not advance"),
                    })
                }
            }
        }
        Err(ClientError::List {
            path,
            reason: format!("more than {MAX_LIST_PAGES} pages"),
        })
    }

    /// Every item of a list as untyped JSON (`field` names the answer's array), for callers not
    /// yet reading the typed pages; paged and bounded as [`Rpc::list_all`].
    pub fn list_all_json(&self, path: &str, field: &str) -> Result<Vec<Value>, ClientError> {
        let base = if path.contains("limit=") {
            path.to_string()
        } else {
            let sep = if path.contains('?') { '&' } else { '?' };
            format!("{path}{sep}limit={LIST_PAGE}")
        };
        let sep = if base.contains('?') { '&' } else { '?' };
        let list_err = |reason: String| ClientError::List {
            path: path.to_string(),
            reason,
        };
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..MAX_LIST_PAGES {
            let url = match &cursor {
                None => base.clone(),
                Some(c) => format!("{base}{sep}cursor={c}"),
            };
            let mut page: serde_json::Map<String, Value> = self.fetch(&url)?;
            let Some(Value::Array(items)) = page.remove(field) else {
                return Err(ClientError::Decode(format!("{path}: the answer has no list {field:?}")));
            };
            let empty = items.is_empty();
            out.extend(items);
            match page.remove("next") {
                None | Some(Value::Null) => return Ok(out),
                Some(Value::String(next)) if cursor.as_deref() != Some(next.as_str()) && !empty => {
                    cursor = Some(next);
                }
                Some(other) => return Err(list_err(format!("the node's next cursor {other} does not advance"))),
            }
        }
        Err(list_err(format!("more than {MAX_LIST_PAGES} pages")))
    }

    /// The sender's next sequence at the latest committed state.
    pub fn sequence(&self, addr: &Address) -> Result<u64, ClientError> {
        Ok(self.account(addr, false)?.item.sequence)
    }

    pub fn chain_id(&self) -> Result<String, ClientError> {
        Ok(self.status()?.chain_id)
    }

    /// Header `height`, or `None` while that block does not exist.
    pub fn header(&self, height: u64) -> Result<Option<Header>, ClientError> {
        match self.block(height) {
            Ok(b) => Ok(Some(b.header)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Waits until header `height` exists (up to `timeout`).
    pub fn wait_header(&self, height: u64, timeout: Duration) -> Result<Header, ClientError> {
        let t0 = Instant::now();
        loop {
            if let Some(h) = self.header(height)? {
                return Ok(h);
            }
            if t0.elapsed() > timeout {
                return Err(ClientError::Proof(format!(
                    "header {height} did not appear within {} s",
                    timeout.as_secs()
                )));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Checks the `proof` of a query answer against the header that commits to its height
    /// (`height + 1`), waiting for that header if needed. Returns the proven value bytes.
    pub fn verify_proof(
        &self,
        proof: &pazar_api::proof::Proof,
        expected_key: &[u8],
    ) -> Result<Option<Vec<u8>>, ClientError> {
        let header = self.wait_header(proof.height + 1, PROOF_HEADER_WAIT)?;
        proof
            .verify(&header.state_root, expected_key)
            .map(|v| v.map(<[u8]>::to_vec))
            .map_err(|e| ClientError::Proof(e.to_string()))
    }

    /// Checks a proven answer (asked for with `prove`) against the header that commits to it:
    /// an answer without a proof is an error, not a pass.
    pub fn verify_proven<T>(&self, answer: &Proven<T>, expected_key: &[u8]) -> Result<Option<Vec<u8>>, ClientError> {
        let proof = answer
            .proof
            .as_ref()
            .ok_or_else(|| ClientError::Proof("the node's answer carries no proof".into()))?;
        self.verify_proof(proof, expected_key)
    }

    /// The node's event stream from height `from` on: one [`pazar_api::events::BlockEvents`]
    /// per committed block, in order, resuming by itself after the node says the reader lagged.
    pub fn events(&self, from: u64) -> EventStream {
        EventStream::new(&self.base, from)
    }
}

/// The smallest fee the node accepts for `msgs` messages: its minimum per message, in the
/// native denomination.
pub fn min_fee(rpc: &Rpc, msgs: usize) -> Result<Coin, ClientError> {
    let native = rpc.params()?.params.native;
    let amount = native.min_fee_per_msg.checked_mul(msgs.max(1) as u128).ok_or_else(|| {
        ClientError::Decode(format!(
            "a minimum fee of {} per message overflows",
            native.min_fee_per_msg
        ))
    })?;
    Ok(Coin::new(amount, native.denom))
}

/// Signs `msgs` from `key` with the account's current sequence.
pub fn sign(
    rpc: &Rpc,
    chain_id: &str,
    key: &SigningKey,
    msgs: Vec<Msg>,
    fee: Coin,
    memo: &str,
) -> Result<Vec<u8>, ClientError> {
    let sequence = rpc.sequence(&key.address())?;
    Ok(TxBody {
        chain_id: chain_id.to_string(),
        sender: key.address(),
        sequence,
        fee,
        msgs,
        memo: memo.to_string(),
    }
    .sign(key)
    .encode())
}

/// Why a simulated transaction would not take effect (the admission error, else the receipt's
/// log), or `None` when it would succeed.
pub fn simulation_failure(r: &SimulateResult) -> Option<String> {
    if r.would_succeed {
        return None;
    }
    Some(match &r.admission {
        Some(e) => format!("{} [{}]; the ledger would say: {}", e.message, e.code, r.receipt.log),
        None => format!("{} [{} {}]", r.receipt.log, r.receipt.codespace, r.receipt.code),
    })
}

/// The answer of a dry run: the transaction `what` was signed and simulated, and nothing was
/// submitted. Carried as an error so that a workflow stops at its first transaction; the
/// binary prints it and exits by `result.would_succeed`.
#[derive(Debug, thiserror::Error)]
#[error("dry run of {what}: {}", simulation_failure(result).map_or_else(|| "would succeed".to_string(), |r| format!("would fail: {r}")))]
pub struct DryRun {
    pub what: String,
    pub result: SimulateResult,
}

/// The hash of transaction bytes, hex.
pub fn hash_hex(tx: &[u8]) -> String {
    let h: Hash32 = pazar_types::tx_hash(tx);
    hex::encode(h)
}
