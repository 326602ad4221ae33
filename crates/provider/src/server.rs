//! The provider's tenant endpoint, served over pinned TLS: the manifest of a lease, its status
//! and its logs. Every request must be signed by the deployment owner (see
//! `pazar_types::auth`), be fresh and not replayed, and name an active lease of this provider;
//! a manifest must hash to the deployment version on the ledger and match the leased group.
//! Every refusal is a JSON error with a code and a sentence saying exactly why.

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

use axum::body::{Body, Bytes};
use axum::extract::{Path as AxPath, Query, State as AxState};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use axum::{Json, Router};
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::{json, Value};

use pazar_sdl::manifest::{Group, Manifest};
use pazar_types::auth::{RequestAuth, RequestScope, AUTH_HEADER, MAX_SKEW_MS};
use pazar_types::market::{BidId, GroupSpec};
use pazar_types::{Address, Hash32};

use crate::runtime::{LeaseRef, Runtime, RuntimeError};

/// Largest manifest accepted.
pub const MAX_MANIFEST_BYTES: usize = 1 << 20;

/// A refusal: HTTP status, stable code, and the reason in words.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
        }
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

impl From<RuntimeError> for ApiError {
    fn from(e: RuntimeError) -> Self {
        let (status, code) = match &e {
            RuntimeError::Image { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "image"),
            RuntimeError::UnknownLease(_) => (StatusCode::NOT_FOUND, "not_running"),
            RuntimeError::UnknownService(_) => (StatusCode::NOT_FOUND, "unknown_service"),
            RuntimeError::Backend(_) => (StatusCode::INTERNAL_SERVER_ERROR, "runtime"),
        };
        ApiError::new(status, code, e.to_string())
    }
}

/// What the ledger says about a lease.
#[derive(Debug, Clone)]
pub struct LeaseFacts {
    pub active: bool,
    pub version: Hash32,
    pub group: GroupSpec,
}

/// Reads the ledger for the server (through the node's RPC).
pub trait Chain: Send + Sync + 'static {
    /// `None` when no such lease exists.
    fn lease(&self, id: &BidId) -> Result<Option<LeaseFacts>, String>;
}

/// [`Chain`] over a node's HTTP RPC.
pub struct RpcChain {
    pub rpc: pazar_client::Rpc,
}

impl Chain for RpcChain {
    fn lease(&self, id: &BidId) -> Result<Option<LeaseFacts>, String> {
        let path = format!(
            "/leases/{}/{}/{}/{}/{}",
            id.owner, id.dseq, id.gseq, id.oseq, id.provider
        );
        let lease = match self.rpc.get(&path) {
            Ok(v) => v,
            Err(pazar_client::ClientError::Api { status: 404, .. }) => return Ok(None),
            Err(e) => return Err(e.to_string()),
        };
        let d = self
            .rpc
            .get(&format!("/deployments/{}/{}", id.owner, id.dseq))
            .map_err(|e| e.to_string())?;
        let version = d["deployment"]["version"]
            .as_str()
            .and_then(|h| hex::decode(h).ok())
            .and_then(|b| <Hash32>::try_from(b).ok())
            .ok_or("the node's deployment has no version")?;
        let group = d["groups"]
            .as_array()
            .and_then(|gs| gs.iter().find(|g| g["gseq"] == id.gseq))
            .map(|g| g["group"]["spec"].clone())
            .ok_or("the node's deployment lacks the leased group")?;
        let group: GroupSpec = serde_json::from_value(group).map_err(|e| e.to_string())?;
        Ok(Some(LeaseFacts {
            active: lease["lease"]["state"] == "active",
            version,
            group,
        }))
    }
}

/// Nonces seen within the freshness window (bounded: the oldest are forgotten first, and a
/// forgotten nonce is also outside the window).
struct Nonces {
    seen: BTreeMap<[u8; 16], u64>,
    order: VecDeque<([u8; 16], u64)>,
}

impl Nonces {
    const MAX: usize = 100_000;

    fn check_and_insert(&mut self, nonce: [u8; 16], time_ms: u64, now_ms: u64) -> bool {
        while let Some((n, t)) = self.order.front().copied() {
            if self.order.len() > Self::MAX || now_ms.saturating_sub(t) > 2 * MAX_SKEW_MS {
                self.order.pop_front();
                self.seen.remove(&n);
            } else {
                break;
            }
        }
        if self.seen.contains_key(&nonce) {
            return false;
        }
        self.seen.insert(nonce, time_ms);
        self.order.push_back((nonce, now_ms));
        true
    }
}

/// The server's shared state.
pub struct LeaseServer<R: Runtime> {
    pub chain_id: String,
    pub provider: Address,
    /// Host name put in service URIs.
    pub public_host: String,
    pub chain: Arc<dyn Chain>,
    pub runtime: Arc<R>,
    /// Where accepted manifests are kept (restored after a restart).
    pub dir: PathBuf,
    nonces: Mutex<Nonces>,
    pub clock: fn() -> u64,
    /// The ingress's domain and ports (HTTP, TLS), once it listens.
    ingress: OnceLock<(String, u16, Option<u16>)>,
    /// Checking a manifest's hosts and keeping it are one step (two leases cannot both take a
    /// free host).
    accepting: Mutex<()>,
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A stored, accepted manifest group of a lease.
#[derive(Debug, Clone, serde::Serialize, Deserialize)]
pub struct Accepted {
    pub lease: BidId,
    pub group: Group,
}

impl<R: Runtime + 'static> LeaseServer<R> {
    pub fn new(
        chain_id: String,
        provider: Address,
        public_host: String,
        chain: Arc<dyn Chain>,
        runtime: Arc<R>,
        dir: PathBuf,
    ) -> LeaseServer<R> {
        LeaseServer {
            chain_id,
            provider,
            public_host,
            chain,
            runtime,
            dir,
            nonces: Mutex::new(Nonces {
                seen: BTreeMap::new(),
                order: VecDeque::new(),
            }),
            clock: now_ms,
            ingress: OnceLock::new(),
            accepting: Mutex::new(()),
        }
    }

    /// Tells the server the ingress serves `domain`, HTTP on `http_port` and TLS on
    /// `tls_port`: manifests' `accept` hosts are checked against it, and lease status lists the
    /// ingress URIs.
    pub fn set_ingress(&self, domain: String, http_port: u16, tls_port: Option<u16>) {
        let _ = self.ingress.set((domain, http_port, tls_port));
    }

    pub fn router(self: Arc<Self>) -> Router {
        Router::new()
            .route("/status", get(provider_status::<R>))
            .route("/lease/{owner}/{dseq}/{gseq}/{oseq}/manifest", put(put_manifest::<R>))
            .route("/lease/{owner}/{dseq}/{gseq}/{oseq}/status", get(lease_status::<R>))
            .route("/lease/{owner}/{dseq}/{gseq}/{oseq}/logs", get(lease_logs::<R>))
            .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "no_route", "no such endpoint") })
            .with_state(self)
    }

    fn accepted_path(&self, lease: &LeaseRef) -> PathBuf {
        self.dir.join(format!("{}.json", lease.name()))
    }

    pub fn accepted(&self, lease: &LeaseRef) -> Option<Accepted> {
        let bytes = std::fs::read(self.accepted_path(lease)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Every accepted manifest on disk (what a restarted daemon restores).
    pub fn all_accepted(&self) -> Vec<Accepted> {
        let Ok(rd) = std::fs::read_dir(&self.dir) else {
            return vec![];
        };
        rd.filter_map(|e| std::fs::read(e.ok()?.path()).ok())
            .filter_map(|b| serde_json::from_slice(&b).ok())
            .collect()
    }

    pub fn forget(&self, lease: &LeaseRef) {
        let _ = std::fs::remove_file(self.accepted_path(lease));
    }

    /// Authenticates the request and checks it names an active lease of this provider owned by
    /// the signer. Returns the lease and what the ledger says of it.
    async fn authorize(
        self: &Arc<Self>,
        method: &Method,
        path: &str,
        headers: &HeaderMap,
        body: &[u8],
        ids: (String, String, String, String),
    ) -> Result<(BidId, LeaseFacts), ApiError> {
        let bad = |m: String| ApiError::new(StatusCode::BAD_REQUEST, "bad_lease_id", m);
        let id = BidId {
            owner: ids.0.parse::<Address>().map_err(|e| bad(e.to_string()))?,
            dseq: ids
                .1
                .parse()
                .map_err(|_| bad(format!("dseq {:?} is not a number", ids.1)))?,
            gseq: ids
                .2
                .parse()
                .map_err(|_| bad(format!("gseq {:?} is not a number", ids.2)))?,
            oseq: ids
                .3
                .parse()
                .map_err(|_| bad(format!("oseq {:?} is not a number", ids.3)))?,
            provider: self.provider,
        };
        let unauth = |m: String| ApiError::new(StatusCode::UNAUTHORIZED, "unauthenticated", m);
        let header = headers
            .get(AUTH_HEADER)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| unauth(pazar_types::auth::AuthError::Missing.to_string()))?;
        let auth = RequestAuth::from_header(header).map_err(|e| unauth(e.to_string()))?;
        let now = (self.clock)();
        let scope = RequestScope {
            chain_id: &self.chain_id,
            provider: &self.provider,
            method: method.as_str(),
            path,
            body,
        };
        auth.verify(&scope, now).map_err(|e| unauth(e.to_string()))?;
        let fresh = self
            .nonces
            .lock()
            .map(|mut n| n.check_and_insert(auth.nonce, auth.time_ms, now))
            .unwrap_or(false);
        if !fresh {
            return Err(unauth(
                "this request was already received (replay refused); sign a new one".into(),
            ));
        }
        if auth.signer != id.owner {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "not_owner",
                format!(
                    "signed by {}, but deployment {}/{} belongs to {}",
                    auth.signer, id.owner, id.dseq, id.owner
                ),
            ));
        }
        let chain = self.chain.clone();
        let lid = id.clone();
        let facts = tokio::task::spawn_blocking(move || chain.lease(&lid))
            .await
            .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?
            .map_err(|e| ApiError::new(StatusCode::BAD_GATEWAY, "chain", format!("cannot read the ledger: {e}")))?
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::NOT_FOUND,
                    "no_lease",
                    format!("no lease {id} with this provider on the ledger"),
                )
            })?;
        if !facts.active {
            return Err(ApiError::new(
                StatusCode::GONE,
                "lease_closed",
                format!("lease {id} is closed"),
            ));
        }
        Ok((id, facts))
    }
}

/// Checks that the manifest's group for this lease is what the ledger leased: every service
/// runs on a unit of the group with exactly that unit's resources, and every unit is used.
pub fn check_against_group(m: &Group, spec: &GroupSpec) -> Result<(), String> {
    for s in &m.services {
        let unit = spec.resources.iter().find(|u| u.id == s.resource_id).ok_or_else(|| {
            format!(
                "service {} names resource unit {}, which the group does not have",
                s.name, s.resource_id
            )
        })?;
        if unit.resources != s.resources {
            return Err(format!(
                "service {} asks for other resources than unit {} of the lease",
                s.name, unit.id
            ));
        }
    }
    for u in &spec.resources {
        if !m.services.iter().any(|s| s.resource_id == u.id) {
            return Err(format!(
                "resource unit {} of the lease has no service in the manifest",
                u.id
            ));
        }
    }
    Ok(())
}

type Srv<R> = AxState<Arc<LeaseServer<R>>>;
type LeasePath = AxPath<(String, String, String, String)>;

async fn provider_status<R: Runtime + 'static>(AxState(s): Srv<R>) -> Json<Value> {
    Json(json!({"provider": s.provider, "chain_id": s.chain_id}))
}

async fn put_manifest<R: Runtime + 'static>(
    AxState(s): Srv<R>,
    AxPath(ids): LeasePath,
    method: Method,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    if body.len() > MAX_MANIFEST_BYTES {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("manifest is {} bytes; at most {MAX_MANIFEST_BYTES}", body.len()),
        ));
    }
    let (id, facts) = s.authorize(&method, uri.path(), &headers, &body, ids).await?;
    let manifest: Manifest = serde_json::from_slice(&body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_manifest",
            format!("manifest is not valid JSON: {e}"),
        )
    })?;
    let got = manifest.version();
    if got != facts.version {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "version_mismatch",
            format!(
                "manifest hash {} differs from the deployment version {} on the ledger (send the manifest of the deployed file, or update the deployment first)",
                hex::encode(got),
                hex::encode(facts.version)
            ),
        ));
    }
    let group = manifest.group(&facts.group.name).cloned().ok_or_else(|| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_manifest",
            format!("manifest has no group {:?}", facts.group.name),
        )
    })?;
    check_against_group(&group, &facts.group).map_err(|m| ApiError::new(StatusCode::BAD_REQUEST, "bad_manifest", m))?;
    let lease = LeaseRef::new(id.clone());
    let accepted = Accepted { lease: id, group };
    {
        let _one = s.accepting.lock().map_err(|_| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "storage",
                "the manifest store is poisoned",
            )
        })?;
        if let Some((domain, _, _)) = s.ingress.get() {
            crate::ingress::check_hosts(&lease, &accepted.group, &s.all_accepted(), domain)
                .map_err(|m| ApiError::new(StatusCode::CONFLICT, "host_taken", m))?;
        }
        std::fs::create_dir_all(&s.dir)
            .and_then(|_| {
                std::fs::write(
                    s.accepted_path(&lease),
                    serde_json::to_vec(&accepted).unwrap_or_default(),
                )
            })
            .map_err(|e| {
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "storage",
                    format!("cannot keep the manifest: {e}"),
                )
            })?;
    }
    s.runtime.deploy(&lease, &accepted.group).await?;
    Ok(Json(json!({"lease": lease.label(), "status": "deployed"})))
}

async fn lease_status<R: Runtime + 'static>(
    AxState(s): Srv<R>,
    AxPath(ids): LeasePath,
    method: Method,
    uri: axum::http::Uri,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let (id, _) = s.authorize(&method, uri.path(), &headers, b"", ids).await?;
    let lease = LeaseRef::new(id);
    let acc = s.accepted(&lease).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "no_manifest",
            "no manifest was sent for this lease yet (pazar lease send-manifest)",
        )
    })?;
    let st = s.runtime.status(&lease, &acc.group).await?;
    let mut uris: Vec<Value> = st
        .services
        .iter()
        .flat_map(|svc| {
            svc.forwards.iter().map(|f| {
                let scheme = if f.port == 80 || acc.group.services.iter().any(|x| x.name == svc.name && x.expose.iter().any(|e| e.port == f.port && e.external_port == 80)) { "http" } else { "tcp" };
                json!({"service": svc.name, "port": f.port, "replica": f.replica, "uri": format!("{scheme}://{}:{}", s.public_host, f.host_port)})
            })
        })
        .collect();
    if let Some((domain, http_port, tls_port)) = s.ingress.get() {
        for h in crate::ingress::ingress_hosts(&lease, &acc.group, domain) {
            let (port, default) = match h.kind {
                crate::ingress::Kind::Http => (Some(*http_port), 80),
                crate::ingress::Kind::Tls => (*tls_port, 443),
            };
            let Some(port) = port else { continue };
            let at = if port == default {
                String::new()
            } else {
                format!(":{port}")
            };
            uris.push(json!({
                "service": h.service,
                "port": h.port,
                "ingress": true,
                "uri": format!("{}://{}{at}", h.kind.scheme(), h.host),
            }));
        }
    }
    Ok(Json(
        json!({"lease": lease.label(), "ready": st.all_running(), "services": st.services, "uris": uris}),
    ))
}

#[derive(Deserialize)]
struct LogsQ {
    service: Option<String>,
    tail: Option<usize>,
    follow: Option<bool>,
}

async fn lease_logs<R: Runtime + 'static>(
    AxState(s): Srv<R>,
    AxPath(ids): LeasePath,
    Query(q): Query<LogsQ>,
    method: Method,
    uri: axum::http::Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (id, _) = s.authorize(&method, uri.path(), &headers, b"", ids).await?;
    let lease = LeaseRef::new(id);
    let stream = s
        .runtime
        .logs(
            &lease,
            q.service.as_deref(),
            q.tail.unwrap_or(100).min(10_000),
            q.follow.unwrap_or(false),
        )
        .await?;
    // One JSON object per line, flushed as lines arrive.
    let body = stream.map(|item| {
        let line = match item {
            Ok(l) => serde_json::to_string(&l).unwrap_or_default(),
            Err(e) => json!({"error": e.to_string()}).to_string(),
        };
        Ok::<_, std::convert::Infallible>(Bytes::from(line + "\n"))
    });
    Ok(([("content-type", "application/x-ndjson")], Body::from_stream(body)).into_response())
}
