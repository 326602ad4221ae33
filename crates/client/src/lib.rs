//! The client side of Pazar: the keyring, an RPC client for the node, transaction building and
//! proof verification. The CLI, the provider daemon and tests all talk to nodes through it.

pub mod files;
pub mod keyring;
pub mod why_no_bids;

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use pazar_types::{Address, Coin, Hash32, Header, Msg, SigningKey, TxBody};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(
        "cannot reach the node at {url}: {reason}. Is it running? Start one with `pazar devnet`, or pass --node URL"
    )]
    Connect { url: String, reason: String },
    #[error("{message} [{code}]")]
    Api { status: u16, code: String, message: String },
    #[error("unexpected answer from the node: {0}")]
    Decode(String),
    #[error("proof check failed: {0}")]
    Proof(String),
    #[error("transaction {hash} was not committed within {secs} s; it may still be pending (check with `pazar query tx {hash}`)")]
    Timeout { hash: String, secs: u64 },
}

impl ClientError {
    /// The node's error code, if it answered with one.
    pub fn code(&self) -> Option<&str> {
        match self {
            ClientError::Api { code, .. } => Some(code),
            _ => None,
        }
    }
}

/// A blocking JSON client of one node's RPC.
#[derive(Clone)]
pub struct Rpc {
    base: String,
    agent: ureq::Agent,
}

/// Largest answer read from the node.
const MAX_RESPONSE: u64 = 64 << 20;
/// Items per page [`Rpc::list_all`] asks for: the node's largest page.
const LIST_PAGE: usize = 1_000;
/// Pages [`Rpc::list_all`] reads at most (a hundred million items).
pub const MAX_LIST_PAGES: usize = 100_000;

impl Rpc {
    pub fn new(base: &str) -> Rpc {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(60)))
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

    fn finish(&self, r: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> Result<Value, ClientError> {
        let mut resp = r.map_err(|e| ClientError::Connect {
            url: self.base.clone(),
            reason: e.to_string(),
        })?;
        let status = resp.status().as_u16();
        let text = resp
            .body_mut()
            .with_config()
            .limit(MAX_RESPONSE)
            .read_to_string()
            .map_err(|e| ClientError::Decode(e.to_string()))?;
        let v: Value = serde_json::from_str(&text).map_err(|e| ClientError::Decode(format!("{e}: {text:.200}")))?;
        if status >= 400 {
            let code = v["error"]["code"].as_str().unwrap_or("http").to_string();
            let message = v["error"]["message"].as_str().unwrap_or(&text).to_string();
            return Err(ClientError::Api { status, code, message });
        }
        Ok(v)
    }

    pub fn get(&self, path: &str) -> Result<Value, ClientError> {
        let url = format!("{}{path}", self.base);
        self.finish(self.agent.get(&url).call())
    }

    /// Every item of a paged list query such as `/leases?provider=…&state=active`: asks for
    /// pages of the node's largest size (or the query's own `limit`), follows each answer's
    /// `next` cursor, and stops when the node says the list ends (`next` null). `field` names
    /// the answer's array (`leases`). A node whose cursors do not advance, or that pages on past
    /// [`MAX_LIST_PAGES`], is an error, never a silently shorter list.
    pub fn list_all(&self, path: &str, field: &str) -> Result<Vec<Value>, ClientError> {
        let base = if path.contains("limit=") {
            path.to_string()
        } else {
            let sep = if path.contains('?') { '&' } else { '?' };
            format!("{path}{sep}limit={LIST_PAGE}")
        };
        let sep = if base.contains('?') { '&' } else { '?' };
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..MAX_LIST_PAGES {
            let url = match &cursor {
                None => base.clone(),
                Some(c) => format!("{base}{sep}cursor={c}"),
            };
            let v = self.get(&url)?;
            let items = v[field]
                .as_array()
                .ok_or_else(|| ClientError::Decode(format!("{path}: the answer has no list {field:?}")))?;
            out.extend(items.iter().cloned());
            match &v["next"] {
                Value::Null => return Ok(out),
                Value::String(next) if cursor.as_deref() != Some(next.as_str()) && !items.is_empty() => {
                    cursor = Some(next.clone());
                }
                other => {
                    return Err(ClientError::Decode(format!(
                        "{path}: the node's next cursor {other} does not advance"
                    )))
                }
            }
        }
        Err(ClientError::Decode(format!(
            "{path}: more than {MAX_LIST_PAGES} pages; the list is not read whole"
        )))
    }

    pub fn post(&self, path: &str, body: &Value) -> Result<Value, ClientError> {
        let url = format!("{}{path}", self.base);
        self.finish(self.agent.post(&url).send_json(body))
    }

    pub fn status(&self) -> Result<Value, ClientError> {
        self.get("/status")
    }

    /// Submits signed bytes; with `commit` waits for the block and returns the outcome.
    pub fn submit(&self, tx: &[u8], commit: bool) -> Result<Value, ClientError> {
        let mode = if commit { "commit" } else { "sync" };
        self.post("/txs", &json!({"tx": hex::encode(tx), "mode": mode}))
    }

    /// The sender's next sequence at the latest committed state.
    pub fn sequence(&self, addr: &Address) -> Result<u64, ClientError> {
        let v = self.get(&format!("/accounts/{addr}"))?;
        v["sequence"]
            .as_u64()
            .ok_or_else(|| ClientError::Decode("account without sequence".into()))
    }

    pub fn chain_id(&self) -> Result<String, ClientError> {
        let v = self.status()?;
        v["chain_id"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| ClientError::Decode("status without chain_id".into()))
    }

    pub fn header(&self, height: u64) -> Result<Option<Header>, ClientError> {
        match self.get(&format!("/blocks/{height}")) {
            Ok(v) => serde_json::from_value(v["header"].clone())
                .map(Some)
                .map_err(|e| ClientError::Decode(e.to_string())),
            Err(ClientError::Api { status: 404, .. }) => Ok(None),
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
        let header = self.wait_header(proof.height + 1, Duration::from_secs(30))?;
        proof
            .verify(&header.state_root, expected_key)
            .map(|v| v.map(<[u8]>::to_vec))
            .map_err(|e| ClientError::Proof(e.to_string()))
    }
}

/// The smallest fee the node accepts for `msgs` messages: its minimum per message, in the
/// native denomination.
pub fn min_fee(rpc: &Rpc, msgs: usize) -> Result<Coin, ClientError> {
    let p = rpc.get("/params")?;
    let per_msg: u128 = p["params"]["native"]["min_fee_per_msg"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| ClientError::Decode("params without native.min_fee_per_msg".into()))?;
    let denom: pazar_types::Denom = p["params"]["native"]["denom"]
        .as_str()
        .ok_or_else(|| ClientError::Decode("params without native.denom".into()))?
        .parse()
        .map_err(|e| ClientError::Decode(format!("native denom: {e}")))?;
    Ok(Coin::new(per_msg * msgs.max(1) as u128, denom))
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

/// The hash of transaction bytes, hex.
pub fn hash_hex(tx: &[u8]) -> String {
    let h: Hash32 = pazar_types::tx_hash(tx);
    hex::encode(h)
}
