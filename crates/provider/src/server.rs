//! The provider's tenant endpoint, served over pinned TLS: the manifest of a lease, its status
//! and its logs. Every refusal is a JSON error with a code and a sentence saying exactly why.
//!
//! What a request must prove, in order (cheapest first, and nothing is remembered for a request
//! that has not proved everything): the whole request (method, path, query and body) is signed
//! (`pazar_types::auth`) within the freshness window; the signer is the owner named in the
//! path; the ledger has that lease with this provider, active; the nonce was not seen. Only then
//! is the nonce remembered, so a stranger can neither burn a tenant's nonces nor fill the store.
//!
//! A manifest is then parsed at the boundary ([`ValidManifest::decode`]: bounded, no unknown
//! fields, every name and value held to the SDL's rules), must hash to the deployment version on
//! the ledger, and its group must fit the lease ([`check_against_lease`]): no more replicas and
//! no other resources than were leased. Deploying and closing a lease take the lease's lock, and
//! a deploy checks the ledger again under it, so a manifest racing the lease's close never
//! leaves a workload behind.
//!
//! Everything a client can hold is bounded ([`limits`]): connections, the time to send headers
//! and the body, the body's size, log streams, and blocking ledger reads.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use axum::body::{Body, Bytes};
use axum::extract::{Path as AxPath, Query, State as AxState};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put, MethodRouter};
use axum::{Json, Router};
use futures_util::StreamExt;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use serde::Deserialize;

use pazar_api::provider::{
    snapshot_limits, ChunkAnswer, ChunkFrames, ChunkHash, ChunkRequest, ChunkStaged, LeaseStatus, LogItem, LogsQuery,
    ManifestAccepted, ProviderStatus, RestoreStaged, ServiceUri, VolumeSnapshot, VolumeTree,
};
use pazar_api::{ErrorCode, ErrorEnvelope};
use pazar_sdl::manifest::ManifestError;
use pazar_sdl::{ValidGroup, ValidManifest};
use pazar_types::auth::{RequestAuth, RequestScope, AUTH_HEADER, MAX_SKEW_MS};
use pazar_types::market::{BidId, GroupSpec, LeaseState};
use pazar_types::{Address, Hash32};

use crate::metrics::Metrics;
use pazar_runtime::ingress::LeaseGroups;
use pazar_runtime::snapshot::{ChunkLoc, SnapshotError};
use pazar_runtime::{LeaseRef, Runtime, RuntimeError};

/// Largest manifest accepted.
pub const MAX_MANIFEST_BYTES: usize = pazar_sdl::manifest::limits::MAX_MANIFEST_BYTES;

/// Bounds of the tenant endpoint.
pub mod limits {
    use std::time::Duration;

    /// Connections open at once, all clients together.
    pub const MAX_CONNECTIONS: usize = 512;
    /// Connections open at once from one IP address.
    pub const MAX_CONNECTIONS_PER_IP: usize = 64;
    /// Time a client has to send a request's whole header; also the longest an idle keep-alive
    /// connection is kept. (The TLS handshake has its own 10 s, in `tls::TlsListener`.)
    pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
    /// Largest request head, in bytes.
    pub const MAX_HEADER_BYTES: usize = 64 << 10;
    /// Time a client has to send a request's whole body.
    pub const BODY_TIMEOUT: Duration = Duration::from_secs(30);
    /// Log streams open at once, all leases together.
    pub const MAX_LOG_STREAMS: usize = 64;
    /// Log streams open at once for one lease.
    pub const MAX_LOG_STREAMS_PER_LEASE: usize = 4;
    /// Ledger reads in flight at once (each holds a thread of the blocking pool).
    pub const MAX_LEDGER_READS: usize = 16;
    /// Nonces remembered at once, all signers together: one per request accepted within the
    /// freshness window (two minutes), so about 1,600 accepted requests a second.
    pub const MAX_NONCES: usize = 200_000;
    /// Nonces remembered at once for one signer (about 80 requests a second).
    pub const MAX_NONCES_PER_SIGNER: usize = 10_000;
    /// Lines of a log's tail one request may ask for.
    pub const MAX_LOG_TAIL: usize = 10_000;
    /// Longest a deployed lease is watched for its replicas to run, for the deploy-time metric
    /// (an image pull may take the pull timeout, 10 minutes by default).
    pub const READY_WATCH: Duration = Duration::from_secs(15 * 60);
    /// How often that watch asks the runtime.
    pub const READY_POLL: Duration = Duration::from_millis(500);

    const _: () = assert!(MAX_LOG_STREAMS_PER_LEASE <= MAX_LOG_STREAMS);
    const _: () = assert!(MAX_NONCES_PER_SIGNER <= MAX_NONCES);
    const _: () = assert!(MAX_CONNECTIONS_PER_IP <= MAX_CONNECTIONS);
}

/// A refusal: HTTP status, the contract's code, and the reason in words. Answered as the
/// contract's [`ErrorEnvelope`].
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: ErrorCode,
    pub message: String,
}

impl ApiError {
    /// A refusal with its code's own HTTP status ([`ErrorCode::http_status`]).
    fn new(code: ErrorCode, message: impl Into<String>) -> ApiError {
        let status = StatusCode::from_u16(code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        ApiError::with_status(status, code, message)
    }

    /// A refusal whose HTTP status says more than its code's own (a full nonce store is a
    /// 503 where one signer's burst is a 429; a malformed service name is a 400).
    fn with_status(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (self.status, Json(ErrorEnvelope::new(self.code, self.message))).into_response();
        // For the metrics layer, which counts refusals by code without reading the body.
        r.extensions_mut().insert(self.code);
        r
    }
}

impl From<RuntimeError> for ApiError {
    fn from(e: RuntimeError) -> Self {
        let code = match &e {
            RuntimeError::Image { .. } => ErrorCode::Image,
            RuntimeError::UnknownLease(_) => ErrorCode::NotRunning,
            RuntimeError::UnknownService(_) => ErrorCode::UnknownService,
            RuntimeError::Backend(_) => ErrorCode::Runtime,
        };
        ApiError::new(code, e.to_string())
    }
}

fn bad_manifest(e: ManifestError) -> ApiError {
    match e {
        ManifestError::TooLarge(_) => ApiError::new(ErrorCode::TooLarge, e.to_string()),
        e => ApiError::new(ErrorCode::BadManifest, e.to_string()),
    }
}

/// What the ledger says about a lease.
#[derive(Debug, Clone)]
pub struct LeaseFacts {
    /// The lease is active (paid).
    pub active: bool,
    /// The lease is in grace until the end of this block: its escrow ran dry, its workload is
    /// stopped and a deposit resumes it. `None` for a lease that is not in grace.
    pub grace_until: Option<u64>,
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
        let lease = match self.rpc.lease(id, false) {
            Ok(l) => l.item.lease,
            Err(e) if e.is_not_found() => return Ok(None),
            Err(e) => return Err(e.to_string()),
        };
        let d = self
            .rpc
            .deployment(&id.deployment(), false)
            .map_err(|e| e.to_string())?
            .item;
        let group = d
            .groups
            .into_iter()
            .find(|g| g.gseq == id.gseq)
            .map(|g| g.group.spec)
            .ok_or("the node's deployment lacks the leased group")?;
        Ok(Some(LeaseFacts {
            active: lease.state == LeaseState::Active,
            grace_until: lease.grace_until.filter(|_| lease.state == LeaseState::Grace),
            version: d.deployment.version,
            group,
        }))
    }
}

/// Why a nonce was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NonceRefusal {
    /// Seen within the window: the request is a replay.
    Replay,
    /// This signer has [`limits::MAX_NONCES_PER_SIGNER`] requests in the window.
    SignerBusy,
    /// The store holds [`limits::MAX_NONCES`] requests of the window.
    Full,
}

/// The nonces of accepted requests, each kept until its request's time leaves the freshness
/// window (after which the request is refused as stale anyway), and never forgotten before:
/// when the store is full, new requests wait (they are refused with "busy") instead of old
/// nonces being dropped, which would open their requests to replay.
#[derive(Default)]
struct Nonces {
    /// (signer, nonce) → the time (ms) its request goes stale.
    seen: BTreeMap<(Address, [u8; 16]), u64>,
    by_expiry: BTreeSet<(u64, Address, [u8; 16])>,
    per_signer: BTreeMap<Address, usize>,
}

impl Nonces {
    fn expire(&mut self, now_ms: u64) {
        while let Some(&(at, signer, nonce)) = self.by_expiry.first() {
            if at >= now_ms {
                break;
            }
            self.by_expiry.pop_first();
            self.seen.remove(&(signer, nonce));
            if let Some(n) = self.per_signer.get_mut(&signer) {
                *n -= 1;
                if *n == 0 {
                    self.per_signer.remove(&signer);
                }
            }
        }
    }

    fn seen(&self, signer: Address, nonce: [u8; 16]) -> bool {
        self.seen.contains_key(&(signer, nonce))
    }

    /// Remembers the nonce of an accepted request whose time is `time_ms`.
    fn remember(&mut self, signer: Address, nonce: [u8; 16], time_ms: u64, now_ms: u64) -> Result<(), NonceRefusal> {
        self.expire(now_ms);
        if self.seen(signer, nonce) {
            return Err(NonceRefusal::Replay);
        }
        if self.per_signer.get(&signer).copied().unwrap_or(0) >= limits::MAX_NONCES_PER_SIGNER {
            return Err(NonceRefusal::SignerBusy);
        }
        if self.seen.len() >= limits::MAX_NONCES {
            return Err(NonceRefusal::Full);
        }
        let stale_at = time_ms.saturating_add(MAX_SKEW_MS);
        self.seen.insert((signer, nonce), stale_at);
        self.by_expiry.insert((stale_at, signer, nonce));
        *self.per_signer.entry(signer).or_insert(0) += 1;
        debug_assert_eq!(self.seen.len(), self.by_expiry.len());
        Ok(())
    }
}

/// One lock per lease, held while its workload is deployed or closed; entries exist only while
/// someone holds or waits for them.
#[derive(Default)]
struct LeaseLocks {
    map: Mutex<BTreeMap<BidId, Arc<tokio::sync::Mutex<()>>>>,
}

struct LeaseGuard<'a> {
    locks: &'a LeaseLocks,
    id: BidId,
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl LeaseLocks {
    async fn lock(&self, id: &BidId) -> LeaseGuard<'_> {
        let m = {
            let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
            map.entry(id.clone()).or_default().clone()
        };
        let guard = m.lock_owned().await;
        LeaseGuard {
            locks: self,
            id: id.clone(),
            guard: Some(guard),
        }
    }
}

impl Drop for LeaseGuard<'_> {
    fn drop(&mut self) {
        drop(self.guard.take());
        let mut map = self.locks.map.lock().unwrap_or_else(|e| e.into_inner());
        // Only the map holds it: nobody waits, so the entry goes.
        if map.get(&self.id).is_some_and(|m| Arc::strong_count(m) == 1) {
            map.remove(&self.id);
        }
    }
}

/// Log streams open, in all and per lease.
#[derive(Default)]
struct Streams {
    total: usize,
    per_lease: BTreeMap<BidId, usize>,
}

/// One open log stream; frees its place when dropped (when the response body is dropped).
struct StreamSlot {
    book: Arc<Mutex<Streams>>,
    id: BidId,
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut b = self.book.lock().unwrap_or_else(|e| e.into_inner());
        b.total -= 1;
        if let Some(n) = b.per_lease.get_mut(&self.id) {
            *n -= 1;
            if *n == 0 {
                b.per_lease.remove(&self.id);
            }
        }
    }
}

fn take_stream(book: &Arc<Mutex<Streams>>, id: &BidId) -> Result<StreamSlot, ApiError> {
    let mut b = book.lock().unwrap_or_else(|e| e.into_inner());
    let busy = |m: String| ApiError::new(ErrorCode::TooManyStreams, m);
    if b.total >= limits::MAX_LOG_STREAMS {
        return Err(busy(format!(
            "the provider serves {} log streams already; close one or retry later",
            limits::MAX_LOG_STREAMS
        )));
    }
    let n = b.per_lease.entry(id.clone()).or_insert(0);
    if *n >= limits::MAX_LOG_STREAMS_PER_LEASE {
        return Err(busy(format!(
            "lease {id} has {} log streams open already; close one first",
            limits::MAX_LOG_STREAMS_PER_LEASE
        )));
    }
    *n += 1;
    b.total += 1;
    Ok(StreamSlot {
        book: book.clone(),
        id: id.clone(),
    })
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
    /// Deploy and close of one lease exclude each other.
    lifecycle: LeaseLocks,
    streams: Arc<Mutex<Streams>>,
    ledger_reads: tokio::sync::Semaphore,
    /// Why the last manifest update of a lease was not applied (its earlier version still
    /// serves), until a deploy of the lease succeeds or it closes; the lease status says it.
    update_failures: Mutex<BTreeMap<BidId, String>>,
    pub metrics: Arc<Metrics>,
    /// Leases whose time to running is being measured.
    watching: Mutex<BTreeSet<String>>,
    /// Where each chunk of a lease's last snapshot listing was read, so the tenant can fetch
    /// chunks by hash; forgotten when the lease closes (or the daemon restarts: the tenant
    /// lists again).
    snapshots: Mutex<BTreeMap<BidId, Arc<ChunkIndex>>>,
    /// Where snapshots sent for restore wait (`<dir>/<lease name>/chunks/<hex>` and
    /// `listing.json`) until the lease's first manifest writes them into its volumes.
    staging: PathBuf,
    /// Bytes staged per lease (counted from the directory the first time it is needed).
    staged: Mutex<BTreeMap<BidId, u64>>,
}

/// Where the chunks of one snapshot listing were read.
#[derive(Debug, Default)]
struct ChunkIndex {
    /// (service, volume) of each volume listed.
    volumes: Vec<(String, String)>,
    /// Chunk → the volume (an index of `volumes`) and the place in it.
    chunks: BTreeMap<ChunkHash, (usize, ChunkLoc)>,
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A stored, accepted manifest group of a lease. Read back through the same checks as a
/// received one ([`ValidGroup`] checks when it is deserialized).
#[derive(Debug, Clone, serde::Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Accepted {
    pub lease: BidId,
    pub group: ValidGroup,
    /// The deployment version (the manifest's hash) the group came in; `None` in files kept
    /// before versions were.
    #[serde(default, with = "opt_hex32")]
    pub version: Option<Hash32>,
}

/// An optional 32-byte hash as 64 hex digits (or `null`).
mod opt_hex32 {
    use pazar_types::Hash32;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &Option<Hash32>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(h) => s.serialize_some(&hex::encode(h)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Hash32>, D::Error> {
        let Some(text) = Option::<String>::deserialize(d)? else {
            return Ok(None);
        };
        let mut out = [0u8; 32];
        hex::decode_to_slice(&text, &mut out).map_err(serde::de::Error::custom)?;
        Ok(Some(out))
    }
}

/// Largest accepted-manifest file read back: a group is smaller than the manifest it came in.
const MAX_ACCEPTED_FILE: u64 = MAX_MANIFEST_BYTES as u64 + 4096;

/// Reads one accepted-manifest file, bounded and checked; the reason otherwise.
fn read_accepted(path: &Path) -> Result<Accepted, String> {
    use std::io::Read;
    let f = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let mut bytes = Vec::new();
    f.take(MAX_ACCEPTED_FILE + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| e.to_string())?;
    if bytes.len() as u64 > MAX_ACCEPTED_FILE {
        return Err(format!("larger than {MAX_ACCEPTED_FILE} bytes"));
    }
    let acc: Accepted = serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
    let name = LeaseRef::new(acc.lease.clone()).name();
    if path.file_stem().and_then(|s| s.to_str()) != Some(name.as_str()) {
        return Err(format!("holds lease {}, whose file is {name}.json", acc.lease));
    }
    Ok(acc)
}

/// The ingress routes to the leases whose manifests this server accepted.
impl<R: Runtime + 'static> LeaseGroups for LeaseServer<R> {
    fn lease_groups(&self) -> Vec<(LeaseRef, ValidGroup)> {
        self.all_accepted()
            .into_iter()
            .map(|a| (LeaseRef::new(a.lease), a.group))
            .collect()
    }
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
            nonces: Mutex::new(Nonces::default()),
            clock: now_ms,
            ingress: OnceLock::new(),
            accepting: Mutex::new(()),
            lifecycle: LeaseLocks::default(),
            streams: Arc::new(Mutex::new(Streams::default())),
            ledger_reads: tokio::sync::Semaphore::new(limits::MAX_LEDGER_READS),
            update_failures: Mutex::new(BTreeMap::new()),
            metrics: Arc::new(Metrics::default()),
            watching: Mutex::new(BTreeSet::new()),
            snapshots: Mutex::new(BTreeMap::new()),
            staging: dir.join("restore"),
            staged: Mutex::new(BTreeMap::new()),
            dir,
        }
    }

    /// Stages snapshots for restore in `dir` instead of `<manifest dir>/restore`.
    pub fn with_staging_dir(mut self, dir: PathBuf) -> LeaseServer<R> {
        self.staging = dir;
        self
    }

    /// Tells the server the ingress serves `domain`, HTTP on `http_port` and TLS on
    /// `tls_port`: manifests' `accept` hosts are checked against it, and lease status lists the
    /// ingress URIs.
    pub fn set_ingress(&self, domain: String, http_port: u16, tls_port: Option<u16>) {
        let _ = self.ingress.set((domain, http_port, tls_port));
    }

    /// Counts its requests, manifests and deploy times in `metrics` (the daemon's) instead of a
    /// set of its own.
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> LeaseServer<R> {
        self.metrics = metrics;
        self
    }

    pub fn router(self: Arc<Self>) -> Router {
        let [status, manifest, lease_status_route, logs, snapshot, chunks, restore, restore_chunk] = ROUTES;
        let m = &self.metrics;
        let unrouted = self.metrics.clone();
        Router::new()
            .route(status, counted("status", m, get(provider_status::<R>)))
            .route(manifest, counted("manifest", m, put(put_manifest::<R>)))
            .route(lease_status_route, counted("lease_status", m, get(lease_status::<R>)))
            .route(logs, counted("logs", m, get(lease_logs::<R>)))
            .route(snapshot, counted("snapshot", m, get(get_snapshot::<R>)))
            .route(chunks, counted("snapshot_chunks", m, post(get_snapshot_chunks::<R>)))
            .route(restore, counted("restore", m, put(put_restore::<R>)))
            .route(restore_chunk, counted("restore_chunk", m, put(put_restore_chunk::<R>)))
            .fallback(move || {
                unrouted.request("none", StatusCode::NOT_FOUND.as_u16());
                async { ApiError::new(ErrorCode::NoRoute, "no such endpoint") }
            })
            .with_state(self)
    }

    /// Records, once every replica of the lease runs, the time since its manifest `arrived`
    /// ([`Metrics::deployed`]): polled every [`limits::READY_POLL`] for at most
    /// [`limits::READY_WATCH`], one watch per lease at a time, ended by the lease's close.
    fn time_until_running(self: &Arc<Self>, lease: LeaseRef, arrived: std::time::Instant) {
        let fresh = self
            .watching
            .lock()
            .map(|mut w| w.insert(lease.name()))
            .unwrap_or(false);
        if !fresh {
            return;
        }
        let s = self.clone();
        tokio::spawn(async move {
            while arrived.elapsed() < limits::READY_WATCH {
                // A closed lease has no accepted manifest left: nothing more to time.
                let Some(acc) = s.accepted(&lease) else { break };
                if s.runtime
                    .status(&lease, &acc.group)
                    .await
                    .is_ok_and(|st| st.all_running())
                {
                    s.metrics.deployed(arrived.elapsed());
                    break;
                }
                tokio::time::sleep(limits::READY_POLL).await;
            }
            if let Ok(mut w) = s.watching.lock() {
                w.remove(&lease.name());
            }
        });
    }

    /// Serves the endpoint on `listener` (the daemon's [`crate::tls::TlsListener`]) within
    /// [`limits`]: connections are tasks, never threads; over a connection limit a connection
    /// is closed at once, costing one `accept`; headers must arrive within
    /// [`limits::HEADER_TIMEOUT`], which also ends idle keep-alive connections.
    pub async fn serve<L>(self: Arc<Self>, mut listener: L)
    where
        L: axum::serve::Listener<Addr = std::net::SocketAddr>,
    {
        let router = self.router();
        let book = Arc::new(Mutex::new(Connections::default()));
        loop {
            let (io, addr) = listener.accept().await;
            let Some(slot) = take_connection(&book, addr.ip().to_canonical()) else {
                drop(io);
                continue;
            };
            let service = TowerToHyperService::new(router.clone());
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(limits::HEADER_TIMEOUT)
                .max_buf_size(limits::MAX_HEADER_BYTES);
            let conn = builder.serve_connection(TokioIo::new(io), service);
            tokio::spawn(async move {
                let _slot = slot;
                let _ = conn.await;
            });
        }
    }

    fn accepted_path(&self, lease: &LeaseRef) -> PathBuf {
        self.dir.join(format!("{}.json", lease.name()))
    }

    pub fn accepted(&self, lease: &LeaseRef) -> Option<Accepted> {
        read_accepted(&self.accepted_path(lease)).ok()
    }

    /// Every accepted manifest on disk that passes the checks, and a sentence for each file
    /// that does not (what a restarted daemon restores, and what it reports).
    pub fn accepted_files(&self) -> (Vec<Accepted>, Vec<String>) {
        let Ok(rd) = std::fs::read_dir(&self.dir) else {
            return (vec![], vec![]);
        };
        let (mut ok, mut bad) = (Vec::new(), Vec::new());
        for e in rd.flatten() {
            let path = e.path();
            let name = e.file_name();
            let name = name.to_string_lossy();
            // Temporary files of an interrupted atomic write start with a dot.
            if name.starts_with('.') || !name.ends_with(".json") {
                continue;
            }
            match read_accepted(&path) {
                Ok(a) => ok.push(a),
                Err(why) => bad.push(format!("{}: {why}", path.display())),
            }
        }
        (ok, bad)
    }

    /// Every accepted manifest on disk that passes the checks.
    pub fn all_accepted(&self) -> Vec<Accepted> {
        self.accepted_files().0
    }

    pub fn forget(&self, lease: &LeaseRef) {
        let _ = std::fs::remove_file(self.accepted_path(lease));
    }

    /// Removes the lease's workload and its accepted manifest, under the lease's lock: a deploy
    /// in progress finishes first and is then removed; one that comes later finds the lease
    /// closed on the ledger and is refused.
    pub async fn close_lease(&self, id: &BidId) -> Result<(), RuntimeError> {
        let _one = self.lifecycle.lock(id).await;
        let lease = LeaseRef::new(id.clone());
        let r = self.runtime.close(&lease).await;
        self.forget(&lease);
        self.note_update_failure(id, None);
        self.forget_snapshots(id);
        r
    }

    /// Stops the lease's workload and keeps its volumes and its accepted manifest, under the
    /// lease's lock (a deploy under way finishes first and is stopped here): its escrow ran dry
    /// and it is in grace.
    pub async fn stop_lease(&self, id: &BidId) -> Result<(), RuntimeError> {
        let _one = self.lifecycle.lock(id).await;
        self.runtime.stop(&LeaseRef::new(id.clone())).await
    }

    /// Starts the lease's workload again from its accepted manifest, on the volumes it kept,
    /// under the lease's lock: a deposit resumed it. `Ok(false)` when no manifest was ever
    /// accepted for it (nothing to start).
    pub async fn resume_lease(&self, id: &BidId) -> Result<bool, RuntimeError> {
        let _one = self.lifecycle.lock(id).await;
        let lease = LeaseRef::new(id.clone());
        let Some(acc) = self.accepted(&lease) else {
            return Ok(false);
        };
        match &acc.version {
            Some(v) => self.runtime.deploy_version(&lease, &acc.group, v).await?,
            None => self.runtime.deploy(&lease, &acc.group).await?,
        }
        Ok(true)
    }

    /// Records (or, with `None`, clears) why the lease's last update was not applied.
    fn note_update_failure(&self, id: &BidId, why: Option<String>) {
        let mut f = self.update_failures.lock().unwrap_or_else(|e| e.into_inner());
        match why {
            Some(why) => f.insert(id.clone(), why),
            None => f.remove(id),
        };
    }

    /// Why the lease's last manifest update was not applied, if it was not.
    pub fn update_failure(&self, id: &BidId) -> Option<String> {
        let f = self.update_failures.lock().unwrap_or_else(|e| e.into_inner());
        f.get(id).cloned()
    }

    /// Reads the ledger's facts about a lease from the blocking pool, at most
    /// [`limits::MAX_LEDGER_READS`] at once.
    async fn ledger_lease(&self, id: &BidId) -> Result<Option<LeaseFacts>, ApiError> {
        let _read = self
            .ledger_reads
            .acquire()
            .await
            .map_err(|e| ApiError::new(ErrorCode::Internal, e.to_string()))?;
        let chain = self.chain.clone();
        let lid = id.clone();
        tokio::task::spawn_blocking(move || chain.lease(&lid))
            .await
            .map_err(|e| ApiError::new(ErrorCode::Internal, e.to_string()))?
            .map_err(|e| ApiError::new(ErrorCode::Chain, format!("cannot read the ledger: {e}")))
    }

    /// Authenticates the request and checks it names an active lease of this provider owned by
    /// the signer; only then is its nonce remembered. `target` is the request's path and query,
    /// as signed. Returns the lease and what the ledger says of it.
    async fn authorize(
        self: &Arc<Self>,
        method: &Method,
        target: &str,
        headers: &HeaderMap,
        body: &[u8],
        ids: (String, String, String, String),
    ) -> Result<(BidId, LeaseFacts), ApiError> {
        let bad = |m: String| ApiError::new(ErrorCode::BadLeaseId, m);
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
        let unauth = |m: String| ApiError::new(ErrorCode::Unauthenticated, m);
        let header = headers
            .get(AUTH_HEADER)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| unauth(pazar_types::auth::AuthError::Missing.to_string()))?;
        let auth = RequestAuth::from_header(header).map_err(|e| unauth(e.to_string()))?;
        let scope = RequestScope {
            chain_id: &self.chain_id,
            provider: &self.provider,
            method: method.as_str(),
            target,
            body,
        };
        auth.verify(&scope, (self.clock)()).map_err(|e| unauth(e.to_string()))?;
        if auth.signer != id.owner {
            return Err(ApiError::new(
                ErrorCode::NotOwner,
                format!(
                    "signed by {}, but deployment {}/{} belongs to {}",
                    auth.signer, id.owner, id.dseq, id.owner
                ),
            ));
        }
        let replay = || unauth("this request was already received (replay refused); sign a new one".into());
        // A replay is refused before it costs a ledger read; the nonce is taken only below.
        if self
            .nonces
            .lock()
            .map(|n| n.seen(auth.signer, auth.nonce))
            .unwrap_or(true)
        {
            return Err(replay());
        }
        let facts = self.ledger_lease(&id).await?.ok_or_else(|| {
            ApiError::new(
                ErrorCode::NoLease,
                format!("no lease {id} with this provider on the ledger"),
            )
        })?;
        if !facts.active && facts.grace_until.is_none() {
            return Err(ApiError::new(ErrorCode::LeaseClosed, format!("lease {id} is closed")));
        }
        let taken = self
            .nonces
            .lock()
            .map_err(|_| ApiError::new(ErrorCode::Internal, "the nonce store is poisoned"))?
            .remember(auth.signer, auth.nonce, auth.time_ms, (self.clock)());
        match taken {
            Ok(()) => Ok((id, facts)),
            Err(NonceRefusal::Replay) => Err(replay()),
            Err(NonceRefusal::SignerBusy) => Err(ApiError::new(
                ErrorCode::Busy,
                format!(
                    "{} sent {} requests within {} s; wait and retry",
                    auth.signer,
                    limits::MAX_NONCES_PER_SIGNER,
                    2 * MAX_SKEW_MS / 1000
                ),
            )),
            Err(NonceRefusal::Full) => Err(ApiError::with_status(
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::Busy,
                "the provider is answering too many requests; retry in a minute",
            )),
        }
    }

    /// Runs `group`, version `version` of the deployment, for the lease, under the lease's lock
    /// and only if the ledger, read again once the lock is held, still says the lease is active
    /// at that version: a close that came first has then removed what it could (and one that
    /// comes later waits and removes this deploy's workload); an update of the deployment that
    /// came first makes this manifest an older one, refused, since the ledger's version is the
    /// truth. On a lease that runs an earlier version this is an update, which the runtime
    /// applies one replica at a time ([`Runtime::deploy_version`]); if it fails, the earlier
    /// manifest is kept again and applied again (bringing back any replica already replaced),
    /// and the reason is kept for the lease's status.
    async fn deploy_locked(&self, id: &BidId, group: ValidGroup, version: Hash32) -> Result<LeaseRef, ApiError> {
        let _one = self.lifecycle.lock(id).await;
        let facts = self.ledger_lease(id).await?;
        if let Some(until) = facts.as_ref().and_then(|f| f.grace_until) {
            return Err(in_grace(id, until));
        }
        let Some(facts) = facts.filter(|f| f.active) else {
            return Err(ApiError::new(
                ErrorCode::LeaseClosed,
                format!("lease {id} closed while its manifest was checked; nothing was started"),
            ));
        };
        if facts.version != version {
            return Err(ApiError::new(
                ErrorCode::VersionMismatch,
                format!(
                    "the deployment is at version {} on the ledger, updated while this manifest (version {}) was \
                     checked: an older manifest is refused, and nothing was changed",
                    hex::encode(facts.version),
                    hex::encode(version)
                ),
            ));
        }
        let lease = LeaseRef::new(id.clone());
        let previous = self.accepted(&lease);
        if previous.is_none() {
            self.restore_staged(&lease, &group).await?;
        }
        let accepted = Accepted {
            lease: id.clone(),
            group,
            version: Some(version),
        };
        self.keep(&lease, &accepted)?;
        let Err(e) = self.runtime.deploy_version(&lease, &accepted.group, &version).await else {
            self.note_update_failure(id, None);
            return Ok(lease);
        };
        // A first deploy, or the running version sent again, fails as it is.
        let Some(prev) = previous.filter(|p| p.version != Some(version)) else {
            return Err(e.into());
        };
        let mut why = format!(
            "the update to version {} was not applied: {e}",
            pazar_runtime::rollout::short(&hex::encode(version))
        );
        let back = match self.keep(&lease, &prev) {
            Err(k) => Err(k.message),
            Ok(()) => match &prev.version {
                Some(v) => self.runtime.deploy_version(&lease, &prev.group, v).await,
                None => self.runtime.deploy(&lease, &prev.group).await,
            }
            .map_err(|e| e.to_string()),
        };
        match back {
            Ok(()) => why.push_str("; the earlier version serves as before"),
            Err(again) => why.push_str(&format!("; bringing the earlier version back failed too: {again}")),
        }
        self.note_update_failure(id, Some(why.clone()));
        let mut err = ApiError::from(e);
        err.message = why;
        Err(err)
    }

    /// Keeps `accepted` as the lease's manifest (restored after a restart, routed by the
    /// ingress), once its `accept` hosts are checked: checking and keeping are one step, so two
    /// leases cannot both take a free host.
    fn keep(&self, lease: &LeaseRef, accepted: &Accepted) -> Result<(), ApiError> {
        let _one = self
            .accepting
            .lock()
            .map_err(|_| ApiError::new(ErrorCode::Storage, "the manifest store is poisoned"))?;
        if let Some((domain, _, _)) = self.ingress.get() {
            pazar_runtime::ingress::check_hosts(lease, &accepted.group, &self.lease_groups(), domain)
                .map_err(|m| ApiError::new(ErrorCode::HostTaken, m))?;
        }
        let bytes = serde_json::to_vec(accepted).map_err(|e| ApiError::new(ErrorCode::Storage, e.to_string()))?;
        std::fs::create_dir_all(&self.dir)
            .and_then(|()| pazar_client::files::write_atomic(&self.accepted_path(lease), &bytes, 0o600))
            .map_err(|e| ApiError::new(ErrorCode::Storage, format!("cannot keep the manifest: {e}")))
    }
}

/// The refusal of a manifest for a lease in grace.
fn in_grace(id: &BidId, until: u64) -> ApiError {
    ApiError::new(
        ErrorCode::LeaseInGrace,
        format!(
            "lease {id} is in grace until height {until}: its escrow ran dry, so its workload is stopped (its \
             volumes are kept) and no manifest is run; a deposit into deployment {}/{} (pazar deployment \
             deposit) resumes the lease and its workload, then a manifest can be sent",
            id.owner, id.dseq
        ),
    )
}

/// Open connections, in all and per client address.
#[derive(Default)]
struct Connections {
    total: usize,
    per_ip: BTreeMap<IpAddr, usize>,
}

struct ConnectionSlot {
    book: Arc<Mutex<Connections>>,
    ip: IpAddr,
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let mut b = self.book.lock().unwrap_or_else(|e| e.into_inner());
        b.total -= 1;
        if let Some(n) = b.per_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                b.per_ip.remove(&self.ip);
            }
        }
    }
}

fn take_connection(book: &Arc<Mutex<Connections>>, ip: IpAddr) -> Option<ConnectionSlot> {
    let mut b = book.lock().unwrap_or_else(|e| e.into_inner());
    if b.total >= limits::MAX_CONNECTIONS {
        return None;
    }
    let n = b.per_ip.entry(ip).or_insert(0);
    if *n >= limits::MAX_CONNECTIONS_PER_IP {
        return None;
    }
    *n += 1;
    b.total += 1;
    Some(ConnectionSlot { book: book.clone(), ip })
}

/// Checks that a manifest's group is within what the ledger leased, and nothing more: every
/// service runs on a unit of the group with exactly that unit's resources, the replicas of the
/// services on a unit add up to at most the unit's count, and every unit is used.
pub fn check_against_lease(g: &ValidGroup, spec: &GroupSpec) -> Result<(), String> {
    if g.name != spec.name {
        return Err(format!(
            "the manifest's group is {:?}, the lease's is {:?}",
            g.name, spec.name
        ));
    }
    let mut replicas: BTreeMap<u32, u64> = BTreeMap::new();
    for s in &g.services {
        let unit = spec.resources.iter().find(|u| u.id == s.resource_id).ok_or_else(|| {
            format!(
                "service {} names resource unit {}, which the lease does not have",
                s.name, s.resource_id
            )
        })?;
        if unit.resources != s.resources {
            let r = (&s.resources, &unit.resources);
            let what = if r.0.cpu_millis != r.1.cpu_millis {
                "CPU"
            } else if r.0.memory_bytes != r.1.memory_bytes {
                "memory"
            } else if r.0.storage != r.1.storage {
                "storage"
            } else if r.0.gpu != r.1.gpu {
                "GPUs"
            } else {
                "endpoints"
            };
            return Err(format!(
                "service {} asks for other {what} than resource unit {} of the lease",
                s.name, unit.id
            ));
        }
        *replicas.entry(s.resource_id).or_insert(0) += u64::from(s.count);
    }
    for u in &spec.resources {
        let n = replicas.get(&u.id).copied().unwrap_or(0);
        if n == 0 {
            return Err(format!(
                "resource unit {} of the lease has no service in the manifest",
                u.id
            ));
        }
        if n > u64::from(u.count) {
            return Err(format!(
                "the services on resource unit {} ask for {n} replicas; the lease has {}",
                u.id, u.count
            ));
        }
    }
    Ok(())
}

/// Every route the endpoint serves (the OpenAPI document describes exactly these).
pub const ROUTES: [&str; 8] = [
    "/status",
    "/lease/{owner}/{dseq}/{gseq}/{oseq}/manifest",
    "/lease/{owner}/{dseq}/{gseq}/{oseq}/status",
    "/lease/{owner}/{dseq}/{gseq}/{oseq}/logs",
    "/lease/{owner}/{dseq}/{gseq}/{oseq}/snapshot",
    "/lease/{owner}/{dseq}/{gseq}/{oseq}/snapshot/chunks",
    "/lease/{owner}/{dseq}/{gseq}/{oseq}/restore",
    "/lease/{owner}/{dseq}/{gseq}/{oseq}/restore/chunks/{chunk}",
];

type Srv<R> = AxState<Arc<LeaseServer<R>>>;

/// The route `name` counted in `metrics` by the HTTP status of each answer; manifests also as
/// accepted, or refused by the envelope's code.
fn counted<R: Runtime + 'static>(
    name: &'static str,
    metrics: &Arc<Metrics>,
    route: MethodRouter<Arc<LeaseServer<R>>>,
) -> MethodRouter<Arc<LeaseServer<R>>> {
    let metrics = metrics.clone();
    route.layer(axum::middleware::from_fn(
        move |req: axum::extract::Request, next: axum::middleware::Next| {
            let metrics = metrics.clone();
            async move {
                let resp = next.run(req).await;
                metrics.request(name, resp.status().as_u16());
                if name == "manifest" {
                    match resp.extensions().get::<ErrorCode>() {
                        Some(code) => metrics.manifest_refused(*code),
                        None if resp.status().is_success() => metrics.manifest_accepted(),
                        None => {}
                    }
                }
                resp
            }
        },
    ))
}
type LeasePath = AxPath<(String, String, String, String)>;

/// The request target as signed: path and query.
fn target(uri: &axum::http::Uri) -> &str {
    uri.path_and_query().map_or(uri.path(), |pq| pq.as_str())
}

/// Who this endpoint is: the provider's address and its chain.
#[utoipa::path(get, path = "/status", tag = "provider", responses((status = 200, body = ProviderStatus)))]
async fn provider_status<R: Runtime + 'static>(AxState(s): Srv<R>) -> Json<ProviderStatus> {
    Json(ProviderStatus {
        provider: s.provider,
        chain_id: s.chain_id.clone(),
    })
}

/// Reads a request body of at most `max` bytes within [`limits::BODY_TIMEOUT`].
async fn read_body(body: Body, max: usize) -> Result<Bytes, ApiError> {
    match tokio::time::timeout(limits::BODY_TIMEOUT, axum::body::to_bytes(body, max)).await {
        Err(_) => Err(ApiError::new(
            ErrorCode::SlowBody,
            format!("the body did not arrive within {} s", limits::BODY_TIMEOUT.as_secs()),
        )),
        Ok(Err(e)) => Err(ApiError::new(
            ErrorCode::TooLarge,
            format!("the body is unreadable or larger than {max} bytes: {e}"),
        )),
        Ok(Ok(b)) => Ok(b),
    }
}

/// The lease's manifest (the deployment's whole manifest; the lease runs its group): checked,
/// kept and deployed. On a running lease this is an update.
#[utoipa::path(put, path = "/lease/{owner}/{dseq}/{gseq}/{oseq}/manifest", tag = "lease",
    params(
        ("owner" = Address, Path, description = "The lease's owner (the deployment's)."),
        ("dseq" = u64, Path, description = "The deployment's sequence."),
        ("gseq" = u32, Path, description = "The group's sequence."),
        ("oseq" = u32, Path, description = "The order's sequence."),
        ("x-pazar-auth" = String, Header, description = "The owner's signature of this request (`pazar_types::auth`).")),
    request_body(description = "The manifest as `pazar deploy` saves it (canonical JSON; its SHA-256 is the deployment's version).",
        content_type = "application/json", content = Object),
    responses((status = 200, description = "Accepted; its workloads are starting.", body = ManifestAccepted),
        crate::openapi::ManifestErrors))]
async fn put_manifest<R: Runtime + 'static>(
    AxState(s): Srv<R>,
    AxPath(ids): LeasePath,
    method: Method,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<ManifestAccepted>, ApiError> {
    let arrived = std::time::Instant::now();
    let body = read_body(body, MAX_MANIFEST_BYTES).await?;
    let (id, facts) = s.authorize(&method, target(&uri), &headers, &body, ids).await?;
    if let Some(until) = facts.grace_until {
        return Err(in_grace(&id, until));
    }
    let manifest = ValidManifest::decode(&body).map_err(bad_manifest)?;
    let got = manifest.version();
    if got != facts.version {
        return Err(ApiError::new(ErrorCode::VersionMismatch,
            format!(
                "manifest hash {} differs from the deployment version {} on the ledger (send the manifest of the deployed file, or update the deployment first)",
                hex::encode(got),
                hex::encode(facts.version)
            ),
        ));
    }
    let group = manifest.group(&facts.group.name).ok_or_else(|| {
        ApiError::new(
            ErrorCode::BadManifest,
            format!("manifest has no group {:?}", facts.group.name),
        )
    })?;
    check_against_lease(&group, &facts.group)
        .map_err(|m| ApiError::new(ErrorCode::NotLeased, format!("{m}; nothing was started")))?;
    // The deploy runs as its own task: a tenant that hangs up does not cut an update short
    // between replicas.
    let lease = tokio::spawn({
        let s = s.clone();
        async move { s.deploy_locked(&id, group, got).await }
    })
    .await
    .map_err(|e| ApiError::new(ErrorCode::Internal, format!("the deploy stopped: {e}")))??;
    s.time_until_running(lease.clone(), arrived);
    Ok(Json(ManifestAccepted {
        lease: lease.label(),
        status: "deployed".into(),
    }))
}

/// What runs for the lease: each service's replicas and where tenants reach them.
#[utoipa::path(get, path = "/lease/{owner}/{dseq}/{gseq}/{oseq}/status", tag = "lease",
    params(
        ("owner" = Address, Path, description = "The lease's owner (the deployment's)."),
        ("dseq" = u64, Path, description = "The deployment's sequence."),
        ("gseq" = u32, Path, description = "The group's sequence."),
        ("oseq" = u32, Path, description = "The order's sequence."),
        ("x-pazar-auth" = String, Header, description = "The owner's signature of this request (`pazar_types::auth`).")),
    responses((status = 200, body = LeaseStatus), crate::openapi::StatusErrors))]
async fn lease_status<R: Runtime + 'static>(
    AxState(s): Srv<R>,
    AxPath(ids): LeasePath,
    method: Method,
    uri: axum::http::Uri,
    headers: HeaderMap,
) -> Result<Json<LeaseStatus>, ApiError> {
    let (id, facts) = s.authorize(&method, target(&uri), &headers, b"", ids).await?;
    let failed_update = s.update_failure(&id);
    let lease = LeaseRef::new(id);
    let acc = s.accepted(&lease).ok_or_else(|| {
        ApiError::new(
            ErrorCode::NoManifest,
            "no manifest was sent for this lease yet (pazar lease send-manifest)",
        )
    })?;
    let mut st = s.runtime.status(&lease, &acc.group).await?;
    for svc in &mut st.services {
        svc.update_error.clone_from(&failed_update);
    }
    let mut uris: Vec<ServiceUri> = st
        .services
        .iter()
        .flat_map(|svc| {
            svc.forwards.iter().map(|f| {
                let http = f.port == 80
                    || acc.group.services.iter().any(|x| {
                        x.name == svc.name && x.expose.iter().any(|e| e.port == f.port && e.external_port == 80)
                    });
                let scheme = if http { "http" } else { "tcp" };
                ServiceUri {
                    service: svc.name.clone(),
                    port: f.port,
                    replica: Some(f.replica),
                    ingress: false,
                    uri: format!("{scheme}://{}:{}", s.public_host, f.host_port),
                }
            })
        })
        .collect();
    if let Some((domain, http_port, tls_port)) = s.ingress.get() {
        for h in pazar_runtime::ingress::ingress_hosts(&lease, &acc.group, domain) {
            let (port, default) = match h.kind {
                pazar_runtime::ingress::Kind::Http => (Some(*http_port), 80),
                pazar_runtime::ingress::Kind::Tls => (*tls_port, 443),
            };
            let Some(port) = port else { continue };
            let at = if port == default {
                String::new()
            } else {
                format!(":{port}")
            };
            uris.push(ServiceUri {
                service: h.service.clone(),
                port: h.port,
                replica: None,
                ingress: true,
                uri: format!("{}://{}{at}", h.kind.scheme(), h.host),
            });
        }
    }
    Ok(Json(LeaseStatus {
        lease: lease.label(),
        // A lease in grace runs nothing, whatever the runtime still reports.
        ready: facts.grace_until.is_none() && st.all_running(),
        services: st.services,
        uris,
        grace_until: facts.grace_until,
    }))
}

/// One item of the NDJSON log stream, with its newline.
fn log_item(item: Result<pazar_api::provider::LogLine, RuntimeError>) -> Bytes {
    let item = match item {
        Ok(l) => LogItem::Line(l),
        Err(e) => LogItem::Error { error: e.to_string() },
    };
    let mut line = serde_json::to_vec(&item).unwrap_or_else(|e| {
        serde_json::to_vec(&LogItem::Error {
            error: format!("a log line could not be written: {e}"),
        })
        .expect("an error item of one string serializes")
    });
    line.push(b'\n');
    Bytes::from(line)
}

/// The lease's log lines: the last `tail`, then (with `follow`) new ones as they come.
#[utoipa::path(get, path = "/lease/{owner}/{dseq}/{gseq}/{oseq}/logs", tag = "lease",
    params(
        ("owner" = Address, Path, description = "The lease's owner (the deployment's)."),
        ("dseq" = u64, Path, description = "The deployment's sequence."),
        ("gseq" = u32, Path, description = "The group's sequence."),
        ("oseq" = u32, Path, description = "The order's sequence."),
        ("x-pazar-auth" = String, Header, description = "The owner's signature of this request (`pazar_types::auth`)."), LogsQuery),
    responses(crate::openapi::LogLines, crate::openapi::LogsErrors))]
async fn lease_logs<R: Runtime + 'static>(
    AxState(s): Srv<R>,
    AxPath(ids): LeasePath,
    method: Method,
    uri: axum::http::Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    // Parsed here rather than by an extractor, so a bad query is refused with the envelope.
    let Query(q) = Query::<LogsQuery>::try_from_uri(&uri)
        .map_err(|e| ApiError::new(ErrorCode::BadRequest, format!("the logs query: {}", e.body_text())))?;
    if let Some(svc) = &q.service {
        if !pazar_sdl::names::is_service_name(svc) {
            return Err(ApiError::with_status(
                StatusCode::BAD_REQUEST,
                ErrorCode::UnknownService,
                format!("{:?} is not a service name", pazar_sdl::names::shorten(svc)),
            ));
        }
    }
    let (id, _) = s.authorize(&method, target(&uri), &headers, b"", ids).await?;
    let slot = take_stream(&s.streams, &id)?;
    let lease = LeaseRef::new(id);
    let stream = s
        .runtime
        .logs(
            &lease,
            q.service.as_deref(),
            q.tail.unwrap_or(100).min(limits::MAX_LOG_TAIL),
            q.follow.unwrap_or(false),
        )
        .await?;
    // One JSON object per line, flushed as lines arrive. The slot lives as long as the body.
    let body = stream.map(move |item| {
        let _open = &slot;
        Ok::<_, std::convert::Infallible>(log_item(item))
    });
    Ok(([("content-type", "application/x-ndjson")], Body::from_stream(body)).into_response())
}

/// A snapshot's failure on the host, in the contract's words: a bound is `too_large`, a
/// listing that cannot be restored `bad_request`, the host's own failure `storage`.
fn snapshot_refusal(e: SnapshotError) -> ApiError {
    let code = match &e {
        SnapshotError::TooManyEntries
        | SnapshotError::TooManyChunks { .. }
        | SnapshotError::TooManyBytes
        | SnapshotError::TooDeep { .. }
        | SnapshotError::PathTooLong { .. } => ErrorCode::TooLarge,
        SnapshotError::Check(pazar_api::provider::SnapshotCheck::TooLarge { .. }) => ErrorCode::TooLarge,
        SnapshotError::Check(_) | SnapshotError::NotUtf8(_) | SnapshotError::NotEmpty => ErrorCode::BadRequest,
        SnapshotError::ChunkMismatch { .. } | SnapshotError::MissingChunk(_) => ErrorCode::BadRequest,
        SnapshotError::Io { .. } => ErrorCode::Storage,
    };
    ApiError::new(code, e.to_string())
}

fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError::new(ErrorCode::Internal, e.to_string())
}

fn storage(what: &str, e: impl std::fmt::Display) -> ApiError {
    ApiError::new(ErrorCode::Storage, format!("{what}: {e}"))
}

/// Reads a staged chunk back (at most one chunk's bytes).
fn read_staged(path: &Path) -> Result<Vec<u8>, std::io::Error> {
    use std::io::Read;
    let mut out = Vec::new();
    std::fs::File::open(path)?
        .take(snapshot_limits::CHUNK_BYTES + 1)
        .read_to_end(&mut out)?;
    Ok(out)
}

/// The refusal of a restore for a lease that already runs a manifest.
fn restore_too_late(id: &BidId) -> ApiError {
    ApiError::with_status(
        StatusCode::CONFLICT,
        ErrorCode::BadRequest,
        format!(
            "lease {id} already has a manifest, so its volumes exist and may be in use: a snapshot is restored \
             only into a new lease, before its first manifest"
        ),
    )
}

impl<R: Runtime + 'static> LeaseServer<R> {
    fn staging_dir(&self, lease: &LeaseRef) -> PathBuf {
        self.staging.join(lease.name())
    }

    /// Forgets the lease's last listing and deletes what was staged for it.
    fn forget_snapshots(&self, id: &BidId) {
        self.snapshots.lock().unwrap_or_else(|e| e.into_inner()).remove(id);
        self.staged.lock().unwrap_or_else(|e| e.into_inner()).remove(id);
        let dir = self.staging_dir(&LeaseRef::new(id.clone()));
        if let Err(e) = std::fs::remove_dir_all(&dir) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(dir = %dir.display(), "cannot delete a staged snapshot: {e}");
            }
        }
    }

    /// Bytes staged for the lease, counted from its directory the first time.
    fn staged_bytes(&self, id: &BidId, chunks: &Path) -> u64 {
        let mut staged = self.staged.lock().unwrap_or_else(|e| e.into_inner());
        *staged.entry(id.clone()).or_insert_with(|| {
            std::fs::read_dir(chunks)
                .into_iter()
                .flatten()
                .flatten()
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
    }

    /// The listing staged for the lease, if one was sent.
    fn staged_listing(&self, lease: &LeaseRef) -> Result<Option<VolumeSnapshot>, ApiError> {
        use std::io::Read;
        let path = self.staging_dir(lease).join("listing.json");
        let f = match std::fs::File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(storage("cannot read the staged snapshot", e)),
        };
        let mut bytes = Vec::new();
        f.take(snapshot_limits::MAX_LISTING_BYTES as u64 + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| storage("cannot read the staged snapshot", e))?;
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| storage("the staged snapshot does not read back", e))
    }

    /// Writes the snapshot staged for the lease (if any) into its volumes, made for it here,
    /// before anything of the lease runs; then deletes what was staged. Called under the
    /// lease's lock by the first deploy. A listing that names a (service, volume) the group
    /// lacks refuses the manifest, and a restore that fails removes the volumes it made (so
    /// the manifest can be sent again); either way the staged snapshot stays.
    async fn restore_staged(&self, lease: &LeaseRef, group: &ValidGroup) -> Result<(), ApiError> {
        let Some(snap) = self.staged_listing(lease)? else {
            return Ok(());
        };
        for t in &snap.volumes {
            let has = group
                .services
                .iter()
                .any(|svc| svc.name == t.service && pazar_runtime::persistent_mounts(svc).any(|(v, _)| v == t.volume));
            if !has {
                return Err(ApiError::new(
                    ErrorCode::BadManifest,
                    format!(
                        "the snapshot staged for this lease restores volume {:?} of service {:?}, which this \
                         manifest does not mount as a persistent volume; nothing was started (send a snapshot \
                         that fits the manifest, or the manifest the snapshot was taken from)",
                        t.volume, t.service
                    ),
                ));
            }
        }
        let open = self.runtime.open_volumes(lease, group, true).await?;
        let chunks = self.staging_dir(lease).join("chunks");
        let wrote = tokio::task::spawn_blocking(move || -> Result<(), SnapshotError> {
            for t in &snap.volumes {
                let dir = open.get(&t.service, &t.volume).ok_or_else(|| SnapshotError::Io {
                    what: "the runtime did not open",
                    path: format!("{}/{}", t.service, t.volume),
                    errno: nix::errno::Errno::ENOENT,
                })?;
                pazar_runtime::snapshot::restore(&dir.path, t, dir.owner, dir.bytes, &mut |h| {
                    read_staged(&chunks.join(h.hex())).map_err(|_| SnapshotError::MissingChunk(*h))
                })?;
            }
            drop(open);
            Ok(())
        })
        .await
        .map_err(internal)?;
        if let Err(e) = wrote {
            // The volumes were made for this restore: they go, so a retry starts from empty ones.
            // Volumes that were not empty were not made here (a workload runs on them, or ran):
            // nothing of them is touched.
            let made_here = !matches!(e, SnapshotError::NotEmpty);
            if made_here {
                if let Err(again) = self.runtime.close(lease).await {
                    tracing::warn!(lease = %lease.label(), "cannot remove the volumes of a failed restore: {again}");
                }
            }
            let mut err = snapshot_refusal(e);
            err.message = format!(
                "the staged snapshot could not be restored: {}; nothing was started",
                err.message
            );
            return Err(err);
        }
        let id = &lease.id;
        self.staged.lock().unwrap_or_else(|e| e.into_inner()).remove(id);
        let dir = self.staging_dir(lease);
        if let Err(e) = std::fs::remove_dir_all(&dir) {
            tracing::warn!(dir = %dir.display(), "cannot delete a restored snapshot: {e}");
        }
        Ok(())
    }
}

/// Lists the lease's persistent volumes: every directory, file (with its chunks' hashes) and
/// symlink. The provider remembers where each chunk was read, for the chunk fetches that follow.
#[utoipa::path(get, path = "/lease/{owner}/{dseq}/{gseq}/{oseq}/snapshot", tag = "lease",
    params(
        ("owner" = Address, Path, description = "The lease's owner (the deployment's)."),
        ("dseq" = u64, Path, description = "The deployment's sequence."),
        ("gseq" = u32, Path, description = "The group's sequence."),
        ("oseq" = u32, Path, description = "The order's sequence."),
        ("x-pazar-auth" = String, Header, description = "The owner's signature of this request (`pazar_types::auth`).")),
    responses((status = 200, body = VolumeSnapshot), crate::openapi::SnapshotErrors))]
async fn get_snapshot<R: Runtime + 'static>(
    AxState(s): Srv<R>,
    AxPath(ids): LeasePath,
    method: Method,
    uri: axum::http::Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (id, facts) = s.authorize(&method, target(&uri), &headers, b"", ids).await?;
    let leased = facts.group.persistent_bytes();
    let _one = s.lifecycle.lock(&id).await;
    let lease = LeaseRef::new(id.clone());
    let acc = s.accepted(&lease).ok_or_else(|| {
        ApiError::new(
            ErrorCode::NoManifest,
            "no manifest was sent for this lease: it has no volumes",
        )
    })?;
    let open = s.runtime.open_volumes(&lease, &acc.group, false).await?;
    let listed = tokio::task::spawn_blocking(move || -> Result<(Vec<VolumeTree>, ChunkIndex), SnapshotError> {
        let mut budget = pazar_runtime::snapshot::Budget {
            bytes: leased,
            ..Default::default()
        };
        let mut index = ChunkIndex::default();
        let mut trees = Vec::new();
        for d in &open.dirs {
            let (entries, chunks) = pazar_runtime::snapshot::list(&d.path, &mut budget)?;
            let vi = index.volumes.len();
            index.volumes.push((d.service.clone(), d.volume.clone()));
            for (h, loc) in chunks {
                index.chunks.entry(h).or_insert((vi, loc));
            }
            trees.push(VolumeTree {
                service: d.service.clone(),
                volume: d.volume.clone(),
                entries,
            });
        }
        drop(open);
        Ok((trees, index))
    })
    .await
    .map_err(internal)?
    .map_err(snapshot_refusal)?;
    let (volumes, index) = listed;
    let snap = VolumeSnapshot {
        taken_unix_ms: (s.clock)(),
        volumes,
    };
    let bytes = serde_json::to_vec(&snap).map_err(internal)?;
    if bytes.len() > snapshot_limits::MAX_LISTING_BYTES {
        return Err(ApiError::new(
            ErrorCode::TooLarge,
            format!(
                "the listing of the lease's volumes is {} bytes, more than the {} one listing may be: too many files \
                 or too much data for a snapshot",
                bytes.len(),
                snapshot_limits::MAX_LISTING_BYTES
            ),
        ));
    }
    s.snapshots
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(id, Arc::new(index));
    Ok(([("content-type", "application/json")], bytes).into_response())
}

/// Chunks of the lease's last listing, by hash: each answered with its bytes, or as changed
/// since the listing (list again), or as unknown.
#[utoipa::path(post, path = "/lease/{owner}/{dseq}/{gseq}/{oseq}/snapshot/chunks", tag = "lease",
    params(
        ("owner" = Address, Path, description = "The lease's owner (the deployment's)."),
        ("dseq" = u64, Path, description = "The deployment's sequence."),
        ("gseq" = u32, Path, description = "The group's sequence."),
        ("oseq" = u32, Path, description = "The order's sequence."),
        ("x-pazar-auth" = String, Header, description = "The owner's signature of this request (`pazar_types::auth`).")),
    request_body(content = ChunkRequest, content_type = "application/json"),
    responses(crate::openapi::ChunkFramesBody, crate::openapi::ChunksErrors))]
async fn get_snapshot_chunks<R: Runtime + 'static>(
    AxState(s): Srv<R>,
    AxPath(ids): LeasePath,
    method: Method,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let body = read_body(body, 64 << 10).await?;
    let (id, _) = s.authorize(&method, target(&uri), &headers, &body, ids).await?;
    let req: ChunkRequest = serde_json::from_slice(&body)
        .map_err(|e| ApiError::new(ErrorCode::BadRequest, format!("the chunk request: {e}")))?;
    if req.chunks.is_empty() || req.chunks.len() > snapshot_limits::MAX_CHUNKS_PER_FETCH {
        return Err(ApiError::new(
            ErrorCode::BadRequest,
            format!(
                "ask for 1 to {} chunks at a time, not {}",
                snapshot_limits::MAX_CHUNKS_PER_FETCH,
                req.chunks.len()
            ),
        ));
    }
    let _one = s.lifecycle.lock(&id).await;
    let lease = LeaseRef::new(id.clone());
    let index = s
        .snapshots
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(&id)
        .cloned()
        .unwrap_or_default();
    let acc = s.accepted(&lease).ok_or_else(|| {
        ApiError::new(
            ErrorCode::NoManifest,
            "no manifest was sent for this lease: it has no volumes",
        )
    })?;
    let open = s.runtime.open_volumes(&lease, &acc.group, false).await?;
    let answer = tokio::task::spawn_blocking(move || -> Result<Vec<u8>, SnapshotError> {
        let mut out = Vec::new();
        for h in &req.chunks {
            let found = index.chunks.get(h).and_then(|(vi, loc)| {
                let (svc, vol) = &index.volumes[*vi];
                open.get(svc, vol).map(|d| (d.path.clone(), loc))
            });
            let a = match found {
                None => ChunkAnswer::Unknown,
                Some((root, loc)) => match pazar_runtime::snapshot::read_chunk(&root, loc, h)? {
                    Some(bytes) => ChunkAnswer::Data(bytes),
                    None => ChunkAnswer::Changed,
                },
            };
            ChunkFrames::push(&mut out, &a);
        }
        drop(open);
        Ok(out)
    })
    .await
    .map_err(internal)?
    .map_err(snapshot_refusal)?;
    Ok(([("content-type", "application/octet-stream")], answer).into_response())
}

/// One chunk of a snapshot to restore into this new lease, named by its SHA-256 (checked),
/// staged until the listing and the lease's first manifest come.
#[utoipa::path(put, path = "/lease/{owner}/{dseq}/{gseq}/{oseq}/restore/chunks/{chunk}", tag = "lease",
    params(
        ("owner" = Address, Path, description = "The lease's owner (the deployment's)."),
        ("dseq" = u64, Path, description = "The deployment's sequence."),
        ("gseq" = u32, Path, description = "The group's sequence."),
        ("oseq" = u32, Path, description = "The order's sequence."),
        ("chunk" = String, Path, description = "The chunk's SHA-256, 64 hex digits."),
        ("x-pazar-auth" = String, Header, description = "The owner's signature of this request (`pazar_types::auth`).")),
    request_body(description = "The chunk's bytes (at most 1 MiB).", content_type = "application/octet-stream", content = Vec<u8>),
    responses((status = 200, body = ChunkStaged), crate::openapi::RestoreErrors))]
async fn put_restore_chunk<R: Runtime + 'static>(
    AxState(s): Srv<R>,
    AxPath((owner, dseq, gseq, oseq, chunk)): AxPath<(String, String, String, String, String)>,
    method: Method,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<ChunkStaged>, ApiError> {
    let body = read_body(body, snapshot_limits::CHUNK_BYTES as usize).await?;
    let (id, facts) = s
        .authorize(&method, target(&uri), &headers, &body, (owner, dseq, gseq, oseq))
        .await?;
    let hash = ChunkHash::parse(&chunk).ok_or_else(|| {
        ApiError::new(
            ErrorCode::BadRequest,
            format!(
                "{:?} is not a chunk hash (64 hex digits)",
                pazar_sdl::names::shorten(&chunk)
            ),
        )
    })?;
    let got = ChunkHash::of(&body);
    if got != hash {
        return Err(ApiError::new(
            ErrorCode::BadRequest,
            format!("the chunk's bytes hash to {got}, not to its name {hash}: refused"),
        ));
    }
    let _one = s.lifecycle.lock(&id).await;
    let lease = LeaseRef::new(id.clone());
    if s.accepted(&lease).is_some() {
        return Err(restore_too_late(&id));
    }
    let max = facts.group.persistent_bytes();
    let dir = s.staging_dir(&lease).join("chunks");
    let path = dir.join(hash.hex());
    let before = s.staged_bytes(&id, &dir);
    if !path.exists() {
        let after = before.saturating_add(body.len() as u64);
        if after > max {
            return Err(ApiError::new(
                ErrorCode::TooLarge,
                format!(
                    "staging this chunk would hold {after} bytes for the lease, more than its {max} bytes of \
                     persistent storage"
                ),
            ));
        }
        std::fs::create_dir_all(&dir)
            .and_then(|()| pazar_client::files::write_atomic(&path, &body, 0o600))
            .map_err(|e| storage("cannot stage the chunk", e))?;
        s.staged
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.clone(), after);
    }
    Ok(Json(ChunkStaged {
        chunk: hash,
        staged_bytes: s.staged_bytes(&id, &dir),
        max_bytes: max,
    }))
}

/// The snapshot to restore into this new lease: checked (paths, bounds, the lease's
/// persistent volumes and storage), every chunk it names already staged. Its first manifest
/// writes it into the volumes before any replica starts.
#[utoipa::path(put, path = "/lease/{owner}/{dseq}/{gseq}/{oseq}/restore", tag = "lease",
    params(
        ("owner" = Address, Path, description = "The lease's owner (the deployment's)."),
        ("dseq" = u64, Path, description = "The deployment's sequence."),
        ("gseq" = u32, Path, description = "The group's sequence."),
        ("oseq" = u32, Path, description = "The order's sequence."),
        ("x-pazar-auth" = String, Header, description = "The owner's signature of this request (`pazar_types::auth`).")),
    request_body(content = VolumeSnapshot, content_type = "application/json"),
    responses((status = 200, body = RestoreStaged), crate::openapi::RestoreErrors))]
async fn put_restore<R: Runtime + 'static>(
    AxState(s): Srv<R>,
    AxPath(ids): LeasePath,
    method: Method,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<RestoreStaged>, ApiError> {
    let body = read_body(body, snapshot_limits::MAX_LISTING_BYTES).await?;
    let (id, facts) = s.authorize(&method, target(&uri), &headers, &body, ids).await?;
    let snap: VolumeSnapshot = serde_json::from_slice(&body)
        .map_err(|e| ApiError::new(ErrorCode::BadRequest, format!("the snapshot does not read: {e}")))?;
    let max = facts.group.persistent_bytes();
    let totals = snap
        .check(Some(max))
        .map_err(|e| snapshot_refusal(SnapshotError::Check(e)))?;
    for t in &snap.volumes {
        let leased = facts
            .group
            .resources
            .iter()
            .flat_map(|u| &u.resources.storage)
            .any(|v| v.persistent() && v.name == t.volume);
        if !leased {
            return Err(ApiError::new(
                ErrorCode::BadRequest,
                format!(
                    "the snapshot restores volume {:?} of service {:?}, but the lease has no persistent volume of \
                     that name",
                    t.volume, t.service
                ),
            ));
        }
    }
    let _one = s.lifecycle.lock(&id).await;
    let lease = LeaseRef::new(id.clone());
    if s.accepted(&lease).is_some() {
        return Err(restore_too_late(&id));
    }
    let dir = s.staging_dir(&lease);
    let wanted = snap.chunks();
    let missing: Vec<&ChunkHash> = wanted
        .iter()
        .filter(|h| !dir.join("chunks").join(h.hex()).exists())
        .collect();
    if let Some(first) = missing.first() {
        return Err(ApiError::new(
            ErrorCode::BadRequest,
            format!(
                "{} of the snapshot's {} chunks are not staged (the first: {first}); send them first",
                missing.len(),
                wanted.len()
            ),
        ));
    }
    std::fs::create_dir_all(&dir)
        .and_then(|()| pazar_client::files::write_atomic(&dir.join("listing.json"), &body, 0o600))
        .map_err(|e| storage("cannot stage the snapshot", e))?;
    Ok(Json(RestoreStaged {
        volumes: snap.volumes.len() as u32,
        files: totals.files,
        bytes: totals.bytes,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer(n: u8) -> Address {
        Address::Native([n; 20])
    }

    #[test]
    fn a_nonce_is_refused_again_until_its_request_is_stale_and_the_store_never_forgets_early() {
        let mut n = Nonces::default();
        let t = 1_000_000;
        assert_eq!(n.remember(signer(1), [1; 16], t, t), Ok(()));
        assert_eq!(n.remember(signer(1), [1; 16], t, t + 1), Err(NonceRefusal::Replay));
        // Another signer's equal nonce is another request.
        assert_eq!(n.remember(signer(2), [1; 16], t, t + 1), Ok(()));
        // Still remembered at the last moment the request is fresh, forgotten after.
        assert_eq!(
            n.remember(signer(1), [1; 16], t, t + MAX_SKEW_MS),
            Err(NonceRefusal::Replay)
        );
        assert_eq!(
            n.remember(signer(3), [9; 16], t + MAX_SKEW_MS + 1, t + MAX_SKEW_MS + 1),
            Ok(())
        );
        assert!(!n.seen(signer(1), [1; 16]), "stale: the signature check refuses it now");
        assert_eq!(n.seen.len(), 1);
        assert_eq!(n.per_signer.get(&signer(1)), None);
    }

    #[test]
    fn one_signer_cannot_fill_the_nonce_store() {
        let mut n = Nonces::default();
        let t = 1_000_000;
        for i in 0..limits::MAX_NONCES_PER_SIGNER as u64 {
            let mut nonce = [0u8; 16];
            nonce[..8].copy_from_slice(&i.to_le_bytes());
            n.remember(signer(1), nonce, t, t).expect("within the signer's share");
        }
        assert_eq!(n.remember(signer(1), [0xff; 16], t, t), Err(NonceRefusal::SignerBusy));
        assert_eq!(n.remember(signer(2), [0xff; 16], t, t), Ok(()), "others are served");
        // Once the window passes, the signer is served again.
        let later = t + MAX_SKEW_MS + 1;
        assert_eq!(n.remember(signer(1), [0xff; 16], later, later), Ok(()));
    }

    #[test]
    fn log_streams_are_bounded_per_lease_and_in_all_and_freed_on_drop() {
        let book = Arc::new(Mutex::new(Streams::default()));
        let lease = |d: u64| BidId {
            owner: signer(1),
            dseq: d,
            gseq: 1,
            oseq: 1,
            provider: signer(9),
        };
        let mut held: Vec<StreamSlot> = (0..limits::MAX_LOG_STREAMS_PER_LEASE)
            .map(|_| take_stream(&book, &lease(0)).expect("within the lease's share"))
            .collect();
        let e = take_stream(&book, &lease(0)).err().expect("per lease");
        assert_eq!(e.code, ErrorCode::TooManyStreams);
        held.pop();
        held.push(take_stream(&book, &lease(0)).expect("a closed stream frees its place"));
        let mut others = Vec::new();
        let mut d = 1;
        while others.len() + limits::MAX_LOG_STREAMS_PER_LEASE < limits::MAX_LOG_STREAMS {
            others.push(take_stream(&book, &lease(d)).expect("within the total"));
            if others.len() % limits::MAX_LOG_STREAMS_PER_LEASE == 0 {
                d += 1;
            }
        }
        assert!(take_stream(&book, &lease(999)).is_err(), "the total bound");
        drop(others);
        drop(held);
        assert_eq!(book.lock().expect("book").total, 0);
    }

    /// The ledger as the server sees it: one lease, active until the test closes it.
    struct OneLease {
        active: std::sync::atomic::AtomicBool,
        /// The deployment's version; a test moves it as `UpdateDeployment` would.
        version: Mutex<Hash32>,
        spec: GroupSpec,
        /// The height the lease is in grace until, as `LeaseGrace` would set it.
        grace: Mutex<Option<u64>>,
    }

    impl OneLease {
        fn version(&self) -> Hash32 {
            *self.version.lock().expect("version")
        }
    }

    impl Chain for OneLease {
        fn lease(&self, _: &BidId) -> Result<Option<LeaseFacts>, String> {
            Ok(Some(LeaseFacts {
                active: self.active.load(std::sync::atomic::Ordering::SeqCst),
                grace_until: *self.grace.lock().expect("grace"),
                version: self.version(),
                group: self.spec.clone(),
            }))
        }
    }

    /// A runtime that records which leases run and can hold a deploy at a chosen point: what is
    /// tested is the order the server imposes on deploy and close, and a real engine cannot be
    /// paused between the two.
    struct Recorder {
        running: Mutex<BTreeSet<String>>,
        gate: tokio::sync::Semaphore,
        gated: std::sync::atomic::AtomicBool,
        entered: tokio::sync::Notify,
        /// Each versioned deploy: the first service's image and the version.
        applied: Mutex<Vec<(String, Hash32)>>,
        /// A version whose deploy fails (its image cannot be had).
        refuse: Mutex<Option<Hash32>>,
        /// Leases stopped (and not deployed since).
        stopped: Mutex<BTreeSet<String>>,
    }

    impl Default for Recorder {
        fn default() -> Self {
            Recorder {
                running: Mutex::default(),
                gate: tokio::sync::Semaphore::new(0),
                gated: false.into(),
                entered: tokio::sync::Notify::new(),
                applied: Mutex::default(),
                refuse: Mutex::default(),
                stopped: Mutex::default(),
            }
        }
    }

    impl Runtime for Recorder {
        fn deploy_version<'a>(
            &'a self,
            lease: &'a LeaseRef,
            group: &'a ValidGroup,
            version: &'a Hash32,
        ) -> pazar_runtime::BoxFuture<'a, Result<(), RuntimeError>> {
            Box::pin(async move {
                let image = group.services[0].image.clone();
                if *self.refuse.lock().expect("refuse") == Some(*version) {
                    return Err(RuntimeError::Image {
                        image,
                        reason: "the registry does not answer".into(),
                    });
                }
                self.applied.lock().expect("applied").push((image, *version));
                self.deploy(lease, group).await
            })
        }

        fn deploy<'a>(
            &'a self,
            lease: &'a LeaseRef,
            _: &'a ValidGroup,
        ) -> pazar_runtime::BoxFuture<'a, Result<(), RuntimeError>> {
            Box::pin(async move {
                if self.gated.load(std::sync::atomic::Ordering::SeqCst) {
                    self.entered.notify_one();
                    let _pass = self
                        .gate
                        .acquire()
                        .await
                        .map_err(|e| RuntimeError::Backend(e.to_string()))?;
                }
                self.running.lock().expect("running").insert(lease.name());
                Ok(())
            })
        }
        /// Every replica of a lease it deployed runs at once; nothing of another.
        fn status<'a>(
            &'a self,
            lease: &'a LeaseRef,
            group: &'a ValidGroup,
        ) -> pazar_runtime::BoxFuture<'a, Result<pazar_runtime::GroupStatus, RuntimeError>> {
            Box::pin(async move {
                let runs = self.running.lock().expect("running").contains(&lease.name());
                let services = group
                    .services
                    .iter()
                    .map(|svc| pazar_api::provider::ServiceStatus {
                        name: svc.name.clone(),
                        replicas: svc.count,
                        running: if runs { svc.count } else { 0 },
                        restarts: 0,
                        state: if runs {
                            pazar_api::provider::ServiceState::Running
                        } else {
                            pazar_api::provider::ServiceState::Missing
                        },
                        forwards: vec![],
                        last_error: None,
                        evictions: 0,
                        last_eviction: None,
                        pull: None,
                        version: None,
                        update_error: None,
                    })
                    .collect();
                Ok(pazar_runtime::GroupStatus {
                    lease: lease.label(),
                    services,
                })
            })
        }
        fn logs<'a>(
            &'a self,
            _: &'a LeaseRef,
            _: Option<&'a str>,
            _: usize,
            _: bool,
        ) -> pazar_runtime::BoxFuture<'a, Result<pazar_runtime::LogLines, RuntimeError>> {
            Box::pin(async { Err(RuntimeError::Backend("not needed".into())) })
        }
        fn close<'a>(&'a self, lease: &'a LeaseRef) -> pazar_runtime::BoxFuture<'a, Result<(), RuntimeError>> {
            Box::pin(async move {
                self.running.lock().expect("running").remove(&lease.name());
                Ok(())
            })
        }
        fn stop<'a>(&'a self, lease: &'a LeaseRef) -> pazar_runtime::BoxFuture<'a, Result<(), RuntimeError>> {
            Box::pin(async move {
                self.running.lock().expect("running").remove(&lease.name());
                self.stopped.lock().expect("stopped").insert(lease.name());
                Ok(())
            })
        }
        fn leases(&self) -> pazar_runtime::BoxFuture<'_, Result<Vec<(String, String)>, RuntimeError>> {
            Box::pin(async { Ok(vec![]) })
        }
        fn dial<'a>(
            &'a self,
            _: &'a LeaseRef,
            _: &'a str,
            _: u32,
            _: u16,
        ) -> pazar_runtime::BoxFuture<'a, Result<tokio::net::TcpStream, RuntimeError>> {
            Box::pin(async { Err(RuntimeError::Backend("not needed".into())) })
        }
    }

    /// A one-service web deployment (one replica, an HTTP endpoint) and an active lease of it
    /// that the chain stand-in answers for.
    fn one_web_lease() -> (pazar_sdl::Deployment, Arc<OneLease>) {
        let sdl = "version: \"2.0\"\nservices:\n  web:\n    image: x\n    expose: [{port: 80, to: [{global: true}]}]\nprofiles:\n  compute:\n    w: {resources: {cpu: {units: 1}, memory: {size: 1Gi}, storage: {size: 1Gi}}}\n  placement:\n    dc: {pricing: {w: {denom: uusd, amount: 1}}}\ndeployment:\n  web: {dc: {profile: w, count: 1}}\n";
        let opts = pazar_sdl::Options::new(
            pazar_types::Denom::new("upzr").expect("denom"),
            pazar_types::Denom::new("uusd").expect("denom"),
        );
        let d = pazar_sdl::parse(sdl.as_bytes(), &opts).expect("valid sdl");
        let chain = Arc::new(OneLease {
            active: true.into(),
            version: Mutex::new(d.manifest_version),
            spec: d.groups[0].clone(),
            grace: Mutex::new(None),
        });
        (d, chain)
    }

    fn setup(dir: &Path) -> (Arc<LeaseServer<Recorder>>, Arc<OneLease>, BidId, ValidGroup) {
        let (d, chain) = one_web_lease();
        let manifest = ValidManifest::new(d.manifest.clone()).expect("valid");
        let group = manifest.group("dc").expect("group");
        let server = Arc::new(LeaseServer::new(
            "c".into(),
            signer(9),
            "127.0.0.1".into(),
            chain.clone(),
            Arc::new(Recorder::default()),
            dir.to_path_buf(),
        ));
        let id = BidId {
            owner: signer(1),
            dseq: 1,
            gseq: 1,
            oseq: 1,
            provider: signer(9),
        };
        (server, chain, id, group)
    }

    #[tokio::test]
    async fn a_manifest_checked_before_its_lease_closed_starts_nothing_after_the_close() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (server, chain, id, group) = setup(dir.path());
        // The manifest passed its checks while the lease was active; then the lease closes and
        // the daemon removes the (not yet existing) workload.
        chain.active.store(false, std::sync::atomic::Ordering::SeqCst);
        server.close_lease(&id).await.expect("close");
        let err = server
            .deploy_locked(&id, group, chain.version())
            .await
            .expect_err("refused");
        assert_eq!(
            (err.status, err.code),
            (StatusCode::GONE, ErrorCode::LeaseClosed),
            "{}",
            err.message
        );
        assert!(
            server.runtime.running.lock().expect("running").is_empty(),
            "nothing runs"
        );
        assert!(server.all_accepted().is_empty(), "nothing kept for restore");
    }

    #[tokio::test]
    async fn a_close_that_comes_during_a_deploy_waits_for_it_and_removes_the_workload() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (server, chain, id, group) = setup(dir.path());
        server.runtime.gated.store(true, std::sync::atomic::Ordering::SeqCst);
        let deploying = tokio::spawn({
            let (server, id, version) = (server.clone(), id.clone(), chain.version());
            async move {
                server
                    .deploy_locked(&id, group, version)
                    .await
                    .map(|_| ())
                    .map_err(|e| e.message)
            }
        });
        // The deploy is inside the runtime, holding the lease's lock, when the lease closes.
        server.runtime.entered.notified().await;
        chain.active.store(false, std::sync::atomic::Ordering::SeqCst);
        let closing = tokio::spawn({
            let (server, id) = (server.clone(), id.clone());
            async move { server.close_lease(&id).await.map_err(|e| e.to_string()) }
        });
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert!(!closing.is_finished(), "the close waits for the deploy's lock");
        server.runtime.gate.add_permits(1);
        deploying
            .await
            .expect("join")
            .expect("the deploy that held the lock finishes");
        closing.await.expect("join").expect("then the close runs");
        assert!(
            server.runtime.running.lock().expect("running").is_empty(),
            "nothing is left running"
        );
        assert!(server.all_accepted().is_empty(), "nothing is left to restore");
        assert!(
            server.lifecycle.map.lock().expect("locks").is_empty(),
            "no lock entry is left"
        );
    }

    /// `group` with its one service running `image`: the group of a new manifest version.
    fn with_image(group: &ValidGroup, image: &str) -> ValidGroup {
        let mut g = group.clone().into_inner();
        g.services[0].image = image.into();
        ValidGroup::new(g).expect("valid")
    }

    #[tokio::test]
    async fn a_manifest_older_than_the_ledger_s_version_is_refused_inside_the_lock_and_changes_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (server, chain, id, group) = setup(dir.path());
        let v1 = chain.version();
        server.deploy_locked(&id, group.clone(), v1).await.expect("v1 runs");
        // The tenant updated the deployment on the ledger after this v1 manifest was checked
        // (the v2 manifest may already run): the late v1 must not replace it.
        *chain.version.lock().expect("version") = [7; 32];
        let err = server
            .deploy_locked(&id, with_image(&group, "x:old"), v1)
            .await
            .expect_err("an older version");
        assert_eq!(err.code, ErrorCode::VersionMismatch, "{}", err.message);
        assert!(err.message.contains("an older manifest is refused"), "{}", err.message);
        let acc = server.accepted(&LeaseRef::new(id)).expect("kept");
        assert_eq!(
            (acc.group, acc.version),
            (group.clone(), Some(v1)),
            "the kept manifest is v1's"
        );
        assert_eq!(
            *server.runtime.applied.lock().expect("applied"),
            vec![(group.services[0].image.clone(), v1)],
            "the runtime was not asked again"
        );
    }

    #[tokio::test]
    async fn a_failed_update_keeps_the_earlier_manifest_runs_it_again_and_says_why_until_an_update_succeeds() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (server, chain, id, group) = setup(dir.path());
        let (v1, v2) = (chain.version(), [7; 32]);
        let image = group.services[0].image.clone();
        server.deploy_locked(&id, group.clone(), v1).await.expect("v1 runs");
        *chain.version.lock().expect("version") = v2;
        *server.runtime.refuse.lock().expect("refuse") = Some(v2);
        let err = server
            .deploy_locked(&id, with_image(&group, "x:2"), v2)
            .await
            .expect_err("v2's image cannot be had");
        assert_eq!(err.code, ErrorCode::Image, "{}", err.message);
        for part in [
            "the update to version 070707070707 was not applied",
            "the earlier version serves as before",
        ] {
            assert!(err.message.contains(part), "{part:?} in {}", err.message);
        }
        let lease = LeaseRef::new(id.clone());
        let acc = server.accepted(&lease).expect("kept");
        assert_eq!((acc.group, acc.version), (group.clone(), Some(v1)), "v1 is kept again");
        assert_eq!(
            *server.runtime.applied.lock().expect("applied"),
            vec![(image.clone(), v1), (image.clone(), v1)],
            "v1 was applied again, bringing back any replica already replaced"
        );
        assert_eq!(server.update_failure(&id), Some(err.message), "the status says why");

        *server.runtime.refuse.lock().expect("refuse") = None;
        server
            .deploy_locked(&id, with_image(&group, "x:2"), v2)
            .await
            .expect("v2 runs once its image is there");
        assert_eq!(server.update_failure(&id), None, "nothing failed any more");
        assert_eq!(server.accepted(&lease).expect("kept").version, Some(v2));
    }

    #[test]
    fn a_group_must_fit_the_lease_exactly_or_stay_within_its_replicas() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (_, chain, _, group) = setup(dir.path());
        let spec = &chain.spec;
        assert_eq!(check_against_lease(&group, spec), Ok(()));
        let with = |f: &dyn Fn(&mut pazar_sdl::manifest::Group)| {
            let mut g = group.clone().into_inner();
            f(&mut g);
            check_against_lease(&ValidGroup::new(g).expect("valid on its own"), spec)
        };
        let e = with(&|g| g.services[0].count = 3).expect_err("more replicas");
        assert!(e.contains("ask for 3 replicas; the lease has 1"), "{e}");
        let e = with(&|g| {
            g.services[0].resources.cpu_millis = 2_000;
        })
        .expect_err("more CPU");
        assert!(e.contains("other CPU"), "{e}");
        let e = with(&|g| g.services[0].resource_id = 2).expect_err("another unit");
        assert!(e.contains("does not have"), "{e}");
        let e = with(&|g| {
            let mut twin = g.services[0].clone();
            twin.name = "api".into();
            // No exposes: the unit's one endpoint stays the first service's.
            twin.expose.clear();
            g.services.push(twin);
        })
        .expect_err("two services on a unit of one replica");
        assert!(e.contains("ask for 2 replicas; the lease has 1"), "{e}");
    }

    #[test]
    fn connections_are_bounded_in_all_and_per_address() {
        let book = Arc::new(Mutex::new(Connections::default()));
        let a: IpAddr = "10.0.0.1".parse().expect("ip");
        let held: Vec<_> = (0..limits::MAX_CONNECTIONS_PER_IP)
            .map(|_| take_connection(&book, a).expect("slot"))
            .collect();
        assert!(take_connection(&book, a).is_none(), "per address");
        drop(held);
        assert!(take_connection(&book, a).is_some(), "freed on drop");
    }

    /// One HTTP/1.1 request over a fresh connection; the status and the body.
    async fn http(port: u16, method: &str, target: &str, auth: Option<&str>, body: &[u8]) -> (u16, String) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut c = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connects");
        let auth = auth.map(|a| format!("{AUTH_HEADER}: {a}\r\n")).unwrap_or_default();
        let head = format!(
            "{method} {target} HTTP/1.1\r\nhost: p\r\ncontent-length: {}\r\n{auth}connection: close\r\n\r\n",
            body.len()
        );
        c.write_all(head.as_bytes()).await.expect("head");
        c.write_all(body).await.expect("body");
        let mut answer = String::new();
        c.read_to_string(&mut answer).await.expect("answer");
        let status = answer
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no status in {answer:?}"));
        let body = answer.split_once("\r\n\r\n").map_or("", |(_, b)| b).to_string();
        (status, body)
    }

    #[tokio::test]
    async fn the_endpoint_answers_the_contract_and_its_metrics_count_what_it_answered() {
        let (d, chain) = one_web_lease();
        let dir = tempfile::tempdir().expect("tempdir");
        let server = Arc::new(LeaseServer::new(
            "c".into(),
            signer(9),
            "127.0.0.1".into(),
            chain,
            Arc::new(Recorder::default()),
            dir.path().to_path_buf(),
        ));
        let key = pazar_types::SigningKey::from_secret(pazar_types::KeyScheme::Ed25519, &[7; 32]).expect("key");
        let owner = key.address();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("binds");
        let port = listener.local_addr().expect("address").port();
        tokio::spawn(server.clone().serve(listener));
        let scraped = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("binds");
        let metrics_port = scraped.local_addr().expect("address").port();
        let m = server.metrics.clone();
        tokio::spawn(crate::metrics::serve(scraped, move || m.render(now_ms(), 0)));
        let scrape = || async {
            let (status, text) = http(metrics_port, "GET", "/metrics", None, b"").await;
            assert_eq!(status, 200, "{text}");
            text
        };
        let before = scrape().await;
        assert!(before.contains("pazar_provider_manifests_accepted_total 0"), "{before}");

        let signed = |method: &str, target: &str, body: &[u8], n: u8| {
            RequestScope {
                chain_id: "c",
                provider: &signer(9),
                method,
                target,
                body,
            }
            .sign(&key, now_ms(), [n; 16])
            .to_header()
        };
        let manifest = format!("/lease/{owner}/1/1/1/manifest");
        let body = serde_json::to_vec(&d.manifest).expect("json");
        let envelope = |text: &str| serde_json::from_str::<ErrorEnvelope>(text).expect("an error envelope");
        // Every answer is what the endpoint's OpenAPI document says it is.
        let doc: serde_json::Value = serde_json::from_str(crate::openapi::json()).expect("the document");
        let documented = |method: &str, route: &str, status: u16, text: &str| {
            let body: serde_json::Value = serde_json::from_str(text).expect("JSON");
            let problems = pazar_api::openapi_check::check_answer(&doc, method, route, status, &body);
            assert!(problems.is_empty(), "{method} {route} {status}: {problems:#?}");
        };
        let [_, manifest_route, status_route, logs_route, ..] = ROUTES;

        let (status, text) = http(port, "PUT", &manifest, None, &body).await;
        assert_eq!((status, envelope(&text).error.code), (401, ErrorCode::Unauthenticated));
        documented("put", manifest_route, status, &text);
        let auth = signed("PUT", &manifest, &body, 1);
        let (status, text) = http(port, "PUT", &manifest, Some(&auth), &body).await;
        assert_eq!(status, 200, "{text}");
        documented("put", manifest_route, status, &text);
        let accepted: ManifestAccepted = serde_json::from_str(&text).expect("the contract's answer");
        assert_eq!(accepted.status, "deployed");
        let status_target = format!("/lease/{owner}/1/1/1/status");
        let auth = signed("GET", &status_target, b"", 2);
        let (status, text) = http(port, "GET", &status_target, Some(&auth), b"").await;
        assert_eq!(status, 200, "{text}");
        documented("get", status_route, status, &text);
        let st: LeaseStatus = serde_json::from_str(&text).expect("the contract's answer");
        assert!(st.ready, "{st:?}");
        assert_eq!(st.services[0].state, pazar_api::provider::ServiceState::Running);
        let (status, text) = http(port, "GET", &format!("/lease/{owner}/1/1/1/logs?bogus=1"), None, b"").await;
        assert_eq!((status, envelope(&text).error.code), (400, ErrorCode::BadRequest));
        documented("get", logs_route, status, &text);
        let (status, text) = http(port, "GET", "/nowhere", None, b"").await;
        assert_eq!((status, envelope(&text).error.code), (404, ErrorCode::NoRoute));

        // The deploy is timed by a watch that polls the runtime: wait for it to report.
        let mut after = scrape().await;
        for _ in 0..100 {
            if after.contains("pazar_provider_deploy_seconds_count 1") {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            after = scrape().await;
        }
        for line in [
            "pazar_provider_manifests_accepted_total 1",
            "pazar_provider_manifests_refused_total{code=\"unauthenticated\"} 1",
            "pazar_provider_endpoint_requests_total{route=\"manifest\",status=\"200\"} 1",
            "pazar_provider_endpoint_requests_total{route=\"manifest\",status=\"401\"} 1",
            "pazar_provider_endpoint_requests_total{route=\"lease_status\",status=\"200\"} 1",
            "pazar_provider_endpoint_requests_total{route=\"logs\",status=\"400\"} 1",
            "pazar_provider_endpoint_requests_total{route=\"none\",status=\"404\"} 1",
            "pazar_provider_deploy_seconds_count 1",
        ] {
            assert!(after.lines().any(|l| l == line), "{line} missing from:\n{after}");
        }
        let (status, _) = http(metrics_port, "GET", "/other", None, b"").await;
        assert_eq!(status, 404);
    }

    #[tokio::test]
    async fn a_lease_in_grace_is_stopped_refuses_manifests_with_409_reports_its_grace_and_resumes_from_its_manifest() {
        let (d, chain) = one_web_lease();
        let dir = tempfile::tempdir().expect("tempdir");
        let runtime = Arc::new(Recorder::default());
        let server = Arc::new(LeaseServer::new(
            "c".into(),
            signer(9),
            "127.0.0.1".into(),
            chain.clone(),
            runtime.clone(),
            dir.path().to_path_buf(),
        ));
        let key = pazar_types::SigningKey::from_secret(pazar_types::KeyScheme::Ed25519, &[7; 32]).expect("key");
        let owner = key.address();
        let id = BidId {
            owner,
            dseq: 1,
            gseq: 1,
            oseq: 1,
            provider: signer(9),
        };
        let name = LeaseRef::new(id.clone()).name();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("binds");
        let port = listener.local_addr().expect("address").port();
        tokio::spawn(server.clone().serve(listener));
        let signed = |method: &str, target: &str, body: &[u8], n: u8| {
            RequestScope {
                chain_id: "c",
                provider: &signer(9),
                method,
                target,
                body,
            }
            .sign(&key, now_ms(), [n; 16])
            .to_header()
        };
        let doc: serde_json::Value = serde_json::from_str(crate::openapi::json()).expect("the document");
        let documented = |method: &str, route: &str, status: u16, text: &str| {
            let body: serde_json::Value = serde_json::from_str(text).expect("JSON");
            let problems = pazar_api::openapi_check::check_answer(&doc, method, route, status, &body);
            assert!(problems.is_empty(), "{method} {route} {status}: {problems:#?}");
        };
        let [_, manifest_route, status_route, ..] = ROUTES;
        let manifest = format!("/lease/{owner}/1/1/1/manifest");
        let status_target = format!("/lease/{owner}/1/1/1/status");
        let body = serde_json::to_vec(&d.manifest).expect("json");
        let (status, text) = http(port, "PUT", &manifest, Some(&signed("PUT", &manifest, &body, 1)), &body).await;
        assert_eq!(status, 200, "{text}");
        assert!(runtime.running.lock().expect("running").contains(&name));

        // The escrow runs dry: the daemon stops the workload, the manifest stays.
        *chain.grace.lock().expect("grace") = Some(120);
        chain.active.store(false, std::sync::atomic::Ordering::SeqCst);
        server.stop_lease(&id).await.expect("stop");
        assert!(!runtime.running.lock().expect("running").contains(&name));
        assert!(runtime.stopped.lock().expect("stopped").contains(&name));
        assert!(
            server.accepted(&LeaseRef::new(id.clone())).is_some(),
            "the manifest is kept"
        );

        // A manifest is refused with a 409 that names the grace and the way out.
        let (status, text) = http(port, "PUT", &manifest, Some(&signed("PUT", &manifest, &body, 2)), &body).await;
        let e = serde_json::from_str::<ErrorEnvelope>(&text).expect("an error envelope");
        assert_eq!((status, e.error.code), (409, ErrorCode::LeaseInGrace), "{text}");
        assert!(
            e.error.message.contains("in grace until height 120") && e.error.message.contains("deposit"),
            "{text}"
        );
        documented("put", manifest_route, status, &text);
        assert!(
            !runtime.running.lock().expect("running").contains(&name),
            "nothing started"
        );
        // The deploy path checks again inside the lease's lock.
        let group = ValidManifest::new(d.manifest.clone())
            .expect("valid")
            .group("dc")
            .expect("group");
        let e = server
            .deploy_locked(&id, group, d.manifest_version)
            .await
            .expect_err("refused in grace");
        assert_eq!(e.code, ErrorCode::LeaseInGrace);

        // The status says so, and that nothing is ready.
        let (status, text) = http(
            port,
            "GET",
            &status_target,
            Some(&signed("GET", &status_target, b"", 3)),
            b"",
        )
        .await;
        assert_eq!(status, 200, "{text}");
        documented("get", status_route, status, &text);
        let st: LeaseStatus = serde_json::from_str(&text).expect("the contract's answer");
        assert_eq!(st.grace_until, Some(120), "{st:?}");
        assert!(!st.ready, "{st:?}");

        // A deposit resumes it: the workload runs again from the manifest it had.
        *chain.grace.lock().expect("grace") = None;
        chain.active.store(true, std::sync::atomic::Ordering::SeqCst);
        assert!(server.resume_lease(&id).await.expect("resume"), "a manifest to run");
        assert!(runtime.running.lock().expect("running").contains(&name));
        let (_, text) = http(
            port,
            "GET",
            &status_target,
            Some(&signed("GET", &status_target, b"", 4)),
            b"",
        )
        .await;
        let st: LeaseStatus = serde_json::from_str(&text).expect("the contract's answer");
        assert_eq!(st.grace_until, None, "{st:?}");
        assert!(st.ready, "{st:?}");
        assert!(!text.contains("grace_until"), "absent when not in grace: {text}");

        // A lease that never got a manifest has nothing to resume.
        let other = BidId { dseq: 2, ..id.clone() };
        assert!(!server.resume_lease(&other).await.expect("resume"));
    }
}
