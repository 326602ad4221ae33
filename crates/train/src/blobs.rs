//! Content-addressed blobs between workers: a worker serves its updates, residuals, traces and
//! checkpoints by hash over plain HTTP (`GET /v1/blobs/{64 hex}`), and fetches others' the same
//! way. Nothing fetched is trusted: the caller decodes it strictly (the decoders know the model's
//! size) and recomputes its hash before using it, so a peer can waste a bounded download but never
//! change what a worker trains on. The address is always a hash the caller took from the ledger,
//! and the URL's path is built here from its hex, never from a peer's string.
//!
//! Both sides are bounded in time: a fetch gives up after the caller's time limit (at most
//! [`FETCH_TIMEOUT`]), so a peer that accepts and never answers costs one limit; the server
//! ([`serve_with`]) caps open connections in all and per peer address and closes each one after
//! [`ServeLimits::connection_time`], and answers from shared buffers, so one peer cannot
//! exhaust a worker's memory or sockets.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::state::Hash32;

/// The longest one blob download may take (a caller's time limit is capped to it).
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(60);

/// How long connecting to a peer may take: a host that does not answer the handshake should not
/// use up the whole time limit of a fetch.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// How many re-served updates a store holds (see [`BlobStore::relay`]): a worker re-serves the
/// updates of one round of one job, at most one per other member, so twice the most members a
/// job may have is never reached while the store is cleared each round.
pub const RELAY_ENTRIES: usize = 2 * pazar_types::train::MAX_WORKERS as usize;

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("blob {addr} from {base}: {reason}")]
    Transport { base: String, addr: String, reason: String },
    #[error("blob {addr} from {base}: no answer within {limit:?}")]
    Timeout {
        base: String,
        addr: String,
        limit: Duration,
    },
    #[error("blob {addr} from {base}: HTTP {status}")]
    Status { base: String, addr: String, status: u16 },
    #[error("blob {addr} from {base}: larger than the {limit} bytes it may be")]
    TooLarge { base: String, addr: String, limit: usize },
    #[error("peer address {0:?} is not an http:// or https:// URL")]
    BadBase(String),
}

/// The blobs a worker serves, by address, in two separately bounded parts: its own material
/// (its updates, traces, residuals, segment boundaries and checkpoints: what auditors, referees
/// and aggregators ask it for) and the updates of other workers it fetched, verified and serves
/// again ([`BlobStore::relay`]). Each part forgets its oldest entries when full, so re-served
/// blobs can never push out the worker's own.
pub struct BlobStore {
    inner: Mutex<Parts>,
}

struct Parts {
    own: Bounded,
    relayed: Bounded,
}

/// Blobs by address, forgetting the oldest first when more than `max` are held.
struct Bounded {
    by_addr: BTreeMap<Hash32, Entry>,
    /// Insertion order: sequence number → address.
    order: BTreeMap<u64, Hash32>,
    next: u64,
    max: usize,
}

struct Entry {
    seq: u64,
    bytes: Bytes,
    /// Served to the first reader only (the selective-serve adversary).
    once: bool,
}

impl Bounded {
    fn new(max: usize) -> Bounded {
        Bounded {
            by_addr: BTreeMap::new(),
            order: BTreeMap::new(),
            next: 0,
            max: max.max(1),
        }
    }

    fn put(&mut self, addr: Hash32, bytes: Bytes, once: bool) {
        let seq = self.next;
        self.next += 1;
        if let Some(old) = self.by_addr.insert(addr, Entry { seq, bytes, once }) {
            self.order.remove(&old.seq);
        }
        self.order.insert(seq, addr);
        while self.by_addr.len() > self.max {
            let Some((_, oldest)) = self.order.pop_first() else {
                break;
            };
            self.by_addr.remove(&oldest);
        }
    }

    fn take(&mut self, addr: &Hash32) -> Option<Bytes> {
        let e = self.by_addr.get(addr)?;
        let (bytes, once, seq) = (e.bytes.clone(), e.once, e.seq);
        if once {
            self.by_addr.remove(addr);
            self.order.remove(&seq);
        }
        Some(bytes)
    }

    fn clear(&mut self) {
        self.by_addr.clear();
        self.order.clear();
    }
}

impl BlobStore {
    /// A store holding at most `max_entries` of the worker's own blobs and [`RELAY_ENTRIES`]
    /// re-served ones.
    pub fn new(max_entries: usize) -> Arc<BlobStore> {
        Arc::new(BlobStore {
            inner: Mutex::new(Parts {
                own: Bounded::new(max_entries),
                relayed: Bounded::new(RELAY_ENTRIES),
            }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Parts> {
        // A panic while holding the lock cannot leave a map half-written (each operation keeps
        // both maps of a part consistent before it can panic), so a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Serves `bytes` (this worker's own) at `addr`.
    pub fn put(&self, addr: Hash32, bytes: Vec<u8>) {
        self.lock().own.put(addr, Bytes::from(bytes), false);
    }

    /// Serves `bytes` at `addr` to the first request only (the selective-serve adversary, which
    /// gives its update to one aggregator and nobody else).
    pub fn put_once(&self, addr: Hash32, bytes: Vec<u8>) {
        self.lock().own.put(addr, Bytes::from(bytes), true);
    }

    /// Serves again an update of another worker that this one fetched and checked (its hash
    /// recomputed), so that a worker that served it to some aggregators only cannot keep it
    /// from the others. Kept apart from the worker's own blobs, bounded by [`RELAY_ENTRIES`].
    pub fn relay(&self, addr: Hash32, bytes: Bytes) {
        self.lock().relayed.put(addr, bytes, false);
    }

    /// Forgets every re-served update (a new round needs none of the last one's).
    pub fn clear_relayed(&self) {
        self.lock().relayed.clear();
    }

    /// The blob at `addr` (own first, then re-served). Reading a blob put with
    /// [`BlobStore::put_once`] removes it.
    pub fn get(&self, addr: &Hash32) -> Option<Bytes> {
        let mut p = self.lock();
        match p.own.take(addr) {
            Some(b) => Some(b),
            None => p.relayed.take(addr),
        }
    }

    /// Whether `addr` is served (without reading it).
    pub fn contains(&self, addr: &Hash32) -> bool {
        let p = self.lock();
        p.own.by_addr.contains_key(addr) || p.relayed.by_addr.contains_key(addr)
    }

    /// How many of the worker's own blobs are held.
    pub fn len(&self) -> usize {
        self.lock().own.by_addr.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many re-served updates are held.
    pub fn relayed_len(&self) -> usize {
        self.lock().relayed.by_addr.len()
    }
}

fn parse_addr(s: &str) -> Option<Hash32> {
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    hex::decode_to_slice(s, &mut out).ok()?;
    Some(out)
}

async fn get_blob(State(store): State<Arc<BlobStore>>, Path(addr): Path<String>) -> Response {
    let Some(addr) = parse_addr(&addr) else {
        return (StatusCode::BAD_REQUEST, "a blob address is 64 hex digits").into_response();
    };
    match store.get(&addr) {
        // `Bytes` shares the stored buffer: a request copies nothing.
        Some(bytes) => ([(header::CONTENT_TYPE, "application/octet-stream")], bytes).into_response(),
        None => (StatusCode::NOT_FOUND, "no such blob").into_response(),
    }
}

/// The blob server's routes.
pub fn router(store: Arc<BlobStore>) -> Router {
    Router::new().route("/v1/blobs/{addr}", get(get_blob)).with_state(store)
}

/// What the blob server allows, so that one peer cannot exhaust a worker.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ServeLimits {
    /// Connections served at once; more wait in the listen backlog until one closes.
    pub connections: usize,
    /// Connections from one IP address at once; more are closed as soon as they are accepted.
    pub per_peer: usize,
    /// How long one connection may stay open, whatever it does: a peer that sends its request
    /// slowly, reads the answer slowly or keeps the connection idle is cut off then. No fetch
    /// may take longer than [`FETCH_TIMEOUT`], so a connection older than that serves nobody.
    pub connection_time: Duration,
}

impl Default for ServeLimits {
    fn default() -> ServeLimits {
        ServeLimits {
            connections: 64,
            per_peer: 16,
            connection_time: FETCH_TIMEOUT,
        }
    }
}

/// Serves `store` on `listener` with the default [`ServeLimits`] until the task is dropped.
pub async fn serve(store: Arc<BlobStore>, listener: TcpListener) -> std::io::Result<()> {
    serve_with(store, listener, ServeLimits::default()).await
}

/// Serves `store` on `listener` within `limits` until the task is dropped.
pub async fn serve_with(store: Arc<BlobStore>, listener: TcpListener, limits: ServeLimits) -> std::io::Result<()> {
    let listener = Guarded {
        inner: listener,
        permits: Arc::new(Semaphore::new(limits.connections.max(1))),
        peers: Arc::new(Mutex::new(HashMap::new())),
        limits,
    };
    axum::serve(listener, router(store)).await
}

/// A listener that holds a permit per open connection and counts connections per peer address.
struct Guarded {
    inner: TcpListener,
    permits: Arc<Semaphore>,
    peers: Arc<Mutex<HashMap<IpAddr, usize>>>,
    limits: ServeLimits,
}

/// One peer's place among the open connections; given back when the connection closes.
struct PeerSlot {
    peers: Arc<Mutex<HashMap<IpAddr, usize>>>,
    ip: IpAddr,
}

impl PeerSlot {
    fn take(peers: &Arc<Mutex<HashMap<IpAddr, usize>>>, ip: IpAddr, max: usize) -> Option<PeerSlot> {
        let mut m = peers.lock().unwrap_or_else(|e| e.into_inner());
        let n = m.entry(ip).or_insert(0);
        if *n >= max.max(1) {
            return None;
        }
        *n += 1;
        Some(PeerSlot {
            peers: peers.clone(),
            ip,
        })
    }
}

impl Drop for PeerSlot {
    fn drop(&mut self) {
        let mut m = self.peers.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = m.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                m.remove(&self.ip);
            }
        }
    }
}

impl axum::serve::Listener for Guarded {
    type Io = Limited;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Limited, SocketAddr) {
        loop {
            // The semaphore is never closed, so this only waits.
            let Ok(permit) = self.permits.clone().acquire_owned().await else {
                std::future::pending::<()>().await;
                continue;
            };
            let (io, addr) = match self.inner.accept().await {
                Ok(x) => x,
                Err(_) => {
                    // Out of file descriptors or a connection reset before it was accepted:
                    // wait a little rather than spin.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let Some(slot) = PeerSlot::take(&self.peers, addr.ip(), self.limits.per_peer) else {
                // Dropping the stream closes it (and gives the permit back).
                continue;
            };
            let io = Limited {
                slot: Some(slot),
                permit: Some(permit),
                deadline: Box::pin(tokio::time::sleep(self.limits.connection_time)),
                io,
            };
            return (io, addr);
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

/// A connection that fails every read and write once its time is up (the server then drops it),
/// holding a connection permit and its peer's slot until then.
struct Limited {
    // Given back as soon as the time is up (before the peer can see the connection close), or
    // when the connection is dropped; fields drop in this order.
    slot: Option<PeerSlot>,
    permit: Option<OwnedSemaphorePermit>,
    deadline: Pin<Box<tokio::time::Sleep>>,
    io: TcpStream,
}

impl Limited {
    /// Whether the connection's time is up; otherwise the timer wakes the task when it is.
    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        if self.deadline.as_mut().poll(cx).is_ready() {
            self.slot = None;
            self.permit = None;
            return true;
        }
        false
    }
}

fn timed_out() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::TimedOut, "the connection's time is up")
}

impl AsyncRead for Limited {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        if self.expired(cx) {
            return Poll::Ready(Err(timed_out()));
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Limited {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        if self.expired(cx) {
            return Poll::Ready(Err(timed_out()));
        }
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        if self.expired(cx) {
            return Poll::Ready(Err(timed_out()));
        }
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// Fetches blob `addr` from the worker at `base` (its `blob_uri` on the ledger), refusing more
/// than `limit` bytes and giving up after `within` (capped to [`FETCH_TIMEOUT`]) from the start
/// of the call to the last byte of the body. Blocking: call it from a thread that may wait.
pub fn fetch(base: &str, addr: &Hash32, limit: usize, within: Duration) -> Result<Vec<u8>, FetchError> {
    let base = base.trim_end_matches('/');
    if !(base.starts_with("http://") || base.starts_with("https://")) {
        return Err(FetchError::BadBase(base.to_string()));
    }
    let within = within.min(FETCH_TIMEOUT);
    let hex_addr = hex::encode(addr);
    let url = format!("{base}/v1/blobs/{hex_addr}");
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(within))
        .timeout_connect(Some(CONNECT_TIMEOUT.min(within)))
        // A peer's redirect would take the request somewhere the ledger never named.
        .max_redirects(0)
        .build()
        .into();
    let failed = |e: ureq::Error| match e {
        ureq::Error::Timeout(_) => FetchError::Timeout {
            base: base.to_string(),
            addr: hex_addr.clone(),
            limit: within,
        },
        e => FetchError::Transport {
            base: base.to_string(),
            addr: hex_addr.clone(),
            reason: e.to_string(),
        },
    };
    let mut resp = agent.get(&url).call().map_err(failed)?;
    let status = resp.status().as_u16();
    if status != 200 {
        return Err(FetchError::Status {
            base: base.to_string(),
            addr: hex_addr,
            status,
        });
    }
    // Read one byte past the limit to tell "exactly the limit" from "more".
    let bytes = resp
        .body_mut()
        .with_config()
        .limit(limit as u64 + 1)
        .read_to_vec()
        .map_err(failed)?;
    if bytes.len() > limit {
        return Err(FetchError::TooLarge {
            base: base.to_string(),
            addr: hex_addr,
            limit,
        });
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    /// A blob server on its own runtime thread; its base URL.
    fn spawn_server(store: Arc<BlobStore>, limits: ServeLimits) -> String {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let listener = rt.block_on(TcpListener::bind("127.0.0.1:0")).expect("binds");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        std::thread::spawn(move || rt.block_on(serve_with(store, listener, limits)));
        base
    }

    #[test]
    fn the_store_forgets_the_oldest_blob_when_full() {
        let s = BlobStore::new(2);
        s.put([1; 32], vec![1]);
        s.put([2; 32], vec![2]);
        s.put([3; 32], vec![3]);
        assert!(s.get(&[1; 32]).is_none());
        assert_eq!(s.get(&[3; 32]).map(|b| b.to_vec()), Some(vec![3]));
        assert_eq!(s.len(), 2);
        // Putting an address again makes it the newest.
        s.put([2; 32], vec![2]);
        s.put([4; 32], vec![4]);
        assert!(s.get(&[3; 32]).is_none());
        assert!(s.contains(&[2; 32]) && s.contains(&[4; 32]));
    }

    #[test]
    fn re_served_updates_never_push_out_the_workers_own_blobs() {
        let s = BlobStore::new(2);
        s.put([1; 32], vec![1]);
        s.put([2; 32], vec![2]);
        for i in 0..RELAY_ENTRIES + 10 {
            let mut addr = [0xee; 32];
            addr[..8].copy_from_slice(&(i as u64).to_le_bytes());
            s.relay(addr, Bytes::from(vec![3]));
        }
        assert_eq!(s.get(&[1; 32]).map(|b| b.to_vec()), Some(vec![1]));
        assert_eq!(s.get(&[2; 32]).map(|b| b.to_vec()), Some(vec![2]));
        assert_eq!((s.len(), s.relayed_len()), (2, RELAY_ENTRIES));
        s.clear_relayed();
        assert_eq!((s.len(), s.relayed_len()), (2, 0));
    }

    #[test]
    fn a_blob_put_once_is_served_to_its_first_reader_only() {
        let s = BlobStore::new(8);
        s.put_once([5; 32], vec![5]);
        assert!(s.contains(&[5; 32]), "looking does not read it");
        assert_eq!(s.get(&[5; 32]).map(|b| b.to_vec()), Some(vec![5]));
        assert!(s.get(&[5; 32]).is_none());
        // The same over HTTP.
        s.put_once([6; 32], vec![6; 10]);
        let base = spawn_server(s, ServeLimits::default());
        assert_eq!(fetch(&base, &[6; 32], 10, FETCH_TIMEOUT).expect("first"), vec![6; 10]);
        assert!(matches!(
            fetch(&base, &[6; 32], 10, FETCH_TIMEOUT),
            Err(FetchError::Status { status: 404, .. })
        ));
    }

    #[test]
    fn only_64_hex_digits_are_an_address() {
        assert!(parse_addr(&"ab".repeat(32)).is_some());
        assert!(parse_addr(&"ab".repeat(31)).is_none());
        assert!(parse_addr(&format!("{}zz", "ab".repeat(31))).is_none());
        assert!(parse_addr("../../etc/passwd").is_none());
    }

    #[test]
    fn blobs_are_served_by_address_and_bounded_on_fetch() {
        let store = BlobStore::new(8);
        store.put([7; 32], vec![9; 1000]);
        let base = spawn_server(store, ServeLimits::default());
        assert_eq!(
            fetch(&base, &[7; 32], 1000, FETCH_TIMEOUT).expect("fetches"),
            vec![9; 1000]
        );
        assert!(matches!(
            fetch(&base, &[7; 32], 999, FETCH_TIMEOUT),
            Err(FetchError::TooLarge { .. })
        ));
        assert!(matches!(
            fetch(&base, &[8; 32], 1000, FETCH_TIMEOUT),
            Err(FetchError::Status { status: 404, .. })
        ));
        assert!(matches!(
            fetch("file:///etc", &[7; 32], 10, FETCH_TIMEOUT),
            Err(FetchError::BadBase(_))
        ));
    }

    #[test]
    fn a_fetch_from_a_server_that_accepts_and_never_answers_gives_up_with_a_timeout() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binds");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        // Accepts every connection and holds it open without reading or writing.
        std::thread::spawn(move || {
            let mut held = Vec::new();
            for s in listener.incoming() {
                held.push(s);
            }
        });
        // Returning at all proves the bound (without it the call would wait for ever).
        let r = fetch(&base, &[1; 32], 100, Duration::from_millis(300));
        assert!(matches!(r, Err(FetchError::Timeout { .. })), "{r:?}");
    }

    #[test]
    fn a_peer_over_its_connection_cap_is_closed_at_once() {
        let store = BlobStore::new(8);
        store.put([7; 32], vec![9; 10]);
        let limits = ServeLimits {
            connections: 8,
            per_peer: 1,
            connection_time: FETCH_TIMEOUT,
        };
        let base = spawn_server(store, limits);
        let addr = base.trim_start_matches("http://").to_string();
        // One idle connection from this address takes its only slot (connections are accepted
        // in the order they arrive, so it is accepted before the fetch's).
        let _idle = std::net::TcpStream::connect(&addr).expect("connects");
        let r = fetch(&base, &[7; 32], 10, FETCH_TIMEOUT);
        assert!(matches!(r, Err(FetchError::Transport { .. })), "{r:?}");
    }

    #[test]
    fn an_idle_connection_is_closed_when_its_time_is_up_and_its_slot_freed() {
        let store = BlobStore::new(8);
        store.put([7; 32], vec![9; 10]);
        let limits = ServeLimits {
            connections: 8,
            per_peer: 1,
            connection_time: Duration::from_millis(200),
        };
        let base = spawn_server(store, limits);
        let mut idle = std::net::TcpStream::connect(base.trim_start_matches("http://")).expect("connects");
        // A guard against a server that never closes it: a read that times out fails the test.
        idle.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
        let mut buf = [0u8; 16];
        match idle.read(&mut buf) {
            Ok(0) => {}
            Ok(n) => panic!("the server sent {n} bytes to a connection that asked nothing"),
            Err(e) => assert!(
                !matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut),
                "the server never closed the idle connection"
            ),
        }
        // Its slot was given back before the connection was closed: the next one is served.
        assert_eq!(fetch(&base, &[7; 32], 10, FETCH_TIMEOUT).expect("served"), vec![9; 10]);
    }
}
