//! Content-addressed blobs between workers: a worker serves its updates, residuals, traces and
//! checkpoints by hash over plain HTTP (`GET /v1/blobs/{64 hex}`), and fetches others' the same
//! way. Nothing fetched is trusted: the caller decodes it strictly (the decoders know the model's
//! size) and recomputes its hash before using it, so a peer can waste a bounded download but never
//! change what a worker trains on. The address is always a hash the caller took from the ledger,
//! and the URL's path is built here from its hex, never from a peer's string.
//!
//! Both sides are bounded in time: a fetch gives up after the caller's time limit (at most
//! [`FETCH_TIMEOUT`]), so a peer that accepts and never answers costs one limit; the server
//! ([`serve_with`]) accepts every connection, serves a bounded number at once in all and per
//! address group (an IPv4 address, an IPv6 /64), queues the rest briefly, closes the oldest
//! connection of the busiest group when it must make room, gives a connection a few seconds
//! for its request head and [`ServeLimits::connection_time`] in all, answers one request per
//! connection, and answers from shared buffers, so one peer cannot exhaust a worker's memory or
//! sockets nor keep other peers out.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

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
    Transport {
        base: String,
        addr: String,
        reason: String,
        /// Whether the connection was closed or reset under the request (tried again while
        /// time is left).
        retry: bool,
    },
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
    #[error("peer address {0:?} is not an http:// URL")]
    BadBase(String),
    #[error("peer address {0:?} is https://, and this build fetches without TLS (plain http:// only)")]
    NoTls(String),
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

/// The blob server's routes. Every answer closes its connection (`Connection: close`): one
/// request per connection, so a connection's slot is held for one answer at most and an idle
/// keep-alive connection holds nothing.
pub fn router(store: Arc<BlobStore>) -> Router {
    Router::new()
        .route("/v1/blobs/{addr}", get(get_blob))
        .with_state(store)
        .layer(axum::middleware::map_response(close_after))
}

async fn close_after(mut r: Response) -> Response {
    r.headers_mut()
        .insert(header::CONNECTION, header::HeaderValue::from_static("close"));
    r
}

/// What the blob server allows, so that one peer cannot exhaust a worker nor keep others out.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ServeLimits {
    /// Connections served at once. Every connection is accepted; one over this waits in a
    /// queue until one closes, or, when the busiest address group holds more connections than
    /// the newcomer's would, the oldest connection of that group is closed for it.
    pub connections: usize,
    /// Connections from one address group (an IPv4 address, an IPv6 /64) served at once; more
    /// wait in the queue until one of the group's closes (several honest aggregators may run
    /// behind one address: they wait a moment rather than being refused).
    pub per_peer: usize,
    /// Connections waiting in the queue at most; when every place is taken the oldest queued
    /// connection of the group with most queued is closed for the newcomer (the oldest of the
    /// group holding most, served, only when none is queued).
    pub queued: usize,
    /// How long a connection may wait in the queue before it is closed.
    pub queue_time: Duration,
    /// How long a served connection may take to send its whole request head (a peer sending
    /// it a byte at a time, or nothing, is cut off then).
    pub head_time: Duration,
    /// How long one connection may stay open, whatever it does: a peer that reads the answer
    /// slowly is cut off then. No fetch may take longer than [`FETCH_TIMEOUT`], so a
    /// connection older than that serves nobody.
    pub connection_time: Duration,
}

impl Default for ServeLimits {
    fn default() -> ServeLimits {
        ServeLimits {
            connections: 64,
            per_peer: 16,
            queued: 64,
            queue_time: Duration::from_secs(5),
            head_time: Duration::from_secs(5),
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
        registry: Arc::new(Mutex::new(Registry {
            next: 0,
            conns: BTreeMap::new(),
            limits,
        })),
        limits,
    };
    axum::serve(listener, router(store)).await
}

/// The group a peer address counts in: an IPv4 address (an IPv4-mapped IPv6 address counts as
/// the IPv4 address), or the /64 network of an IPv6 address (one host is commonly given a
/// whole /64, so counting single IPv6 addresses would give it 2^64 quotas).
pub fn peer_group(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => {
            let s = v6.segments();
            IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
    }
}

/// A listener that accepts every connection at once and registers it: served, queued, or
/// (to make room) closing an older one.
struct Guarded {
    inner: TcpListener,
    registry: Arc<Mutex<Registry>>,
    limits: ServeLimits,
}

/// What the server shares with one connection's I/O: whether it may be served yet, and
/// whether it was closed to make room (its task is woken to notice).
#[derive(Default)]
struct Shared {
    admitted: AtomicBool,
    closed: AtomicBool,
    waker: Mutex<Option<Waker>>,
}

impl Shared {
    fn wake(&self) {
        if let Some(w) = self.waker.lock().unwrap_or_else(|e| e.into_inner()).take() {
            w.wake();
        }
    }

    fn park(&self, cx: &Context<'_>) {
        *self.waker.lock().unwrap_or_else(|e| e.into_inner()) = Some(cx.waker().clone());
    }
}

struct Conn {
    group: IpAddr,
    shared: Arc<Shared>,
}

/// Every open connection by age (a smaller id is older).
struct Registry {
    next: u64,
    conns: BTreeMap<u64, Conn>,
    limits: ServeLimits,
}

impl Registry {
    fn served(&self) -> impl Iterator<Item = (&u64, &Conn)> {
        self.conns
            .iter()
            .filter(|(_, c)| c.shared.admitted.load(Ordering::Relaxed))
    }

    /// Connections per group among those `pick` accepts.
    fn counts(&self, pick: impl Fn(&Conn) -> bool) -> HashMap<IpAddr, usize> {
        let mut m = HashMap::new();
        for c in self.conns.values().filter(|c| pick(c)) {
            *m.entry(c.group).or_insert(0) += 1;
        }
        m
    }

    /// Closes the oldest connection of the group holding most of those `pick` accepts (the
    /// oldest group's on a tie), if that group holds more than `than`.
    fn close_busiest(&mut self, pick: impl Fn(&Conn) -> bool + Copy, than: usize) -> bool {
        let counts = self.counts(pick);
        let Some(most) = counts.values().copied().max().filter(|m| *m > than) else {
            return false;
        };
        let victim = self
            .conns
            .iter()
            .find(|(_, c)| pick(c) && counts.get(&c.group) == Some(&most))
            .map(|(id, _)| *id);
        match victim {
            Some(id) => {
                self.close(id);
                true
            }
            None => false,
        }
    }

    fn close(&mut self, id: u64) {
        if let Some(c) = self.conns.remove(&id) {
            c.shared.closed.store(true, Ordering::Relaxed);
            c.shared.wake();
        }
    }

    /// Registers a new connection from `group` and serves whatever may be served now. When
    /// every place is taken, the oldest queued connection of the group with most queued is
    /// closed for it (a connection being served is not cut off mid-answer to make room in
    /// the queue); only when none is queued, the oldest of the group holding most.
    fn open(&mut self, group: IpAddr) -> (u64, Arc<Shared>) {
        let l = self.limits;
        let places = l.connections.max(1) + l.queued;
        if self.conns.len() >= places && !self.close_busiest(|c| !c.shared.admitted.load(Ordering::Relaxed), 0) {
            self.close_busiest(|_| true, 0);
        }
        let id = self.next;
        self.next += 1;
        let shared = Arc::new(Shared::default());
        self.conns.insert(
            id,
            Conn {
                group,
                shared: shared.clone(),
            },
        );
        self.admit();
        (id, shared)
    }

    /// A connection closed (or was dropped): its place goes to the queue.
    fn gone(&mut self, id: u64) {
        self.conns.remove(&id);
        self.admit();
    }

    /// Serves queued connections, oldest first, while the caps allow; when every served place
    /// is taken, a queued connection whose group is below its cap takes the place of the oldest
    /// connection of a group that serves more than its own would.
    fn admit(&mut self) {
        let l = self.limits;
        let (max, per) = (l.connections.max(1), l.per_peer.max(1));
        let queued: Vec<(u64, IpAddr)> = self
            .conns
            .iter()
            .filter(|(_, c)| !c.shared.admitted.load(Ordering::Relaxed))
            .map(|(id, c)| (*id, c.group))
            .collect();
        for (id, group) in queued {
            let mine = self.served().filter(|(_, c)| c.group == group).count();
            if mine >= per {
                continue;
            }
            if self.served().count() >= max
                && !self.close_busiest(|c| c.shared.admitted.load(Ordering::Relaxed), mine + 1)
            {
                continue;
            }
            if let Some(c) = self.conns.get(&id) {
                c.shared.admitted.store(true, Ordering::Relaxed);
                c.shared.wake();
            }
        }
    }
}

impl axum::serve::Listener for Guarded {
    type Io = Limited;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Limited, SocketAddr) {
        loop {
            let (io, addr) = match self.inner.accept().await {
                Ok(x) => x,
                Err(_) => {
                    // Out of file descriptors or a connection reset before it was accepted:
                    // wait a little rather than spin.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let (id, shared) = self
                .registry
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .open(peer_group(addr.ip()));
            let io = Limited {
                id,
                shared,
                registry: self.registry.clone(),
                queue: Box::pin(tokio::time::sleep(self.limits.queue_time)),
                head: None,
                head_time: self.limits.head_time,
                answered: false,
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

/// A connection as the server sees it: it reads nothing until it is served (waiting at most
/// the queue time), must send its request head within the head time once served, and fails
/// every read and write once its time is up or it was closed to make room (the server then
/// drops it, which gives its place back).
struct Limited {
    id: u64,
    shared: Arc<Shared>,
    registry: Arc<Mutex<Registry>>,
    queue: Pin<Box<tokio::time::Sleep>>,
    /// Started when the connection is served; cleared by the first byte of the answer.
    head: Option<Pin<Box<tokio::time::Sleep>>>,
    head_time: Duration,
    answered: bool,
    deadline: Pin<Box<tokio::time::Sleep>>,
    io: TcpStream,
}

impl Limited {
    /// Whether the connection may go on now (`Ready(Ok)`), must wait for a place (`Pending`,
    /// woken when served, closed or out of time) or is over (`Ready(Err)`).
    fn ready(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.shared.park(cx);
        if self.shared.closed.load(Ordering::Relaxed) {
            return Poll::Ready(Err(cut("closed to make room for another connection")));
        }
        if self.deadline.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Err(cut("the connection's time is up")));
        }
        if !self.shared.admitted.load(Ordering::Relaxed) {
            if self.queue.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Err(cut("waited too long for a place")));
            }
            return Poll::Pending;
        }
        if !self.answered {
            let head_time = self.head_time;
            let head = self.head.get_or_insert_with(|| Box::pin(tokio::time::sleep(head_time)));
            if head.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Err(cut("the request head took too long")));
            }
        }
        Poll::Ready(Ok(()))
    }

    /// Gives the connection's place back (before the peer can see it close).
    fn release(&mut self) {
        self.registry.lock().unwrap_or_else(|e| e.into_inner()).gone(self.id);
    }
}

impl Drop for Limited {
    fn drop(&mut self) {
        self.release();
    }
}

fn cut(why: &'static str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::TimedOut, why)
}

impl AsyncRead for Limited {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        match self.ready(cx) {
            Poll::Ready(Ok(())) => Pin::new(&mut self.io).poll_read(cx, buf),
            Poll::Ready(Err(e)) => {
                self.release();
                Poll::Ready(Err(e))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncWrite for Limited {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        match self.ready(cx) {
            Poll::Ready(Ok(())) => {
                self.answered = true;
                self.head = None;
                Pin::new(&mut self.io).poll_write(cx, buf)
            }
            Poll::Ready(Err(e)) => {
                self.release();
                Poll::Ready(Err(e))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.ready(cx) {
            Poll::Ready(Ok(())) => Pin::new(&mut self.io).poll_flush(cx),
            Poll::Ready(Err(e)) => {
                self.release();
                Poll::Ready(Err(e))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// Fetches blob `addr` from the worker at `base` (its `blob_uri` on the ledger), refusing more
/// than `limit` bytes and giving up after `within` (capped to [`FETCH_TIMEOUT`]) from the start
/// of the call to the last byte of the body. A connection the server closes or resets before
/// answering (a busy server making room, see [`ServeLimits`]) is tried again, a moment later,
/// while time is left. Blocking: call it from a thread that may wait.
///
/// Only `http://` is fetched: this build has no TLS, so an `https://` address (which the
/// ledger accepts) is refused here with [`FetchError::NoTls`] rather than failing obscurely.
pub fn fetch(base: &str, addr: &Hash32, limit: usize, within: Duration) -> Result<Vec<u8>, FetchError> {
    let base = base.trim_end_matches('/');
    if base.starts_with("https://") {
        return Err(FetchError::NoTls(base.to_string()));
    }
    if !base.starts_with("http://") {
        return Err(FetchError::BadBase(base.to_string()));
    }
    let within = within.min(FETCH_TIMEOUT);
    let start = Instant::now();
    let mut pause = Duration::from_millis(50);
    loop {
        let left = within.saturating_sub(start.elapsed());
        match fetch_once(base, addr, limit, left) {
            Err(FetchError::Transport { retry: true, .. }) if within.saturating_sub(start.elapsed()) > pause => {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(400));
            }
            r => return r,
        }
    }
}

/// Whether a failed request may succeed at once if tried again: the connection was closed or
/// reset under it (never a refused connection, an unknown host or a bad answer).
fn retryable(e: &ureq::Error) -> bool {
    use std::io::ErrorKind as K;
    match e {
        ureq::Error::Io(e) => matches!(
            e.kind(),
            K::ConnectionReset | K::ConnectionAborted | K::UnexpectedEof | K::BrokenPipe
        ),
        _ => false,
    }
}

fn fetch_once(base: &str, addr: &Hash32, limit: usize, within: Duration) -> Result<Vec<u8>, FetchError> {
    let hex_addr = hex::encode(addr);
    if within.is_zero() {
        return Err(FetchError::Timeout {
            base: base.to_string(),
            addr: hex_addr,
            limit: within,
        });
    }
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
            retry: retryable(&e),
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
    use std::io::{Read, Write};

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
        // No TLS in this build: said plainly, not as a transport failure.
        assert!(matches!(
            fetch("https://worker.example", &[7; 32], 10, FETCH_TIMEOUT),
            Err(FetchError::NoTls(_))
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

    /// A connection to `base` from the loopback address `from` (the whole of 127/8 is local),
    /// open until dropped.
    fn connect_from(from: &str, base: &str) -> std::net::TcpStream {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let to: SocketAddr = base.trim_start_matches("http://").parse().expect("addr");
        let from: SocketAddr = format!("{from}:0").parse().expect("addr");
        let s = rt
            .block_on(async {
                let s = tokio::net::TcpSocket::new_v4()?;
                s.bind(from)?;
                s.connect(to).await
            })
            .expect("connects");
        let s = s.into_std().expect("std stream");
        s.set_nonblocking(false).expect("blocking");
        s
    }

    /// Reads `s` until the server closes it; false if it stays open for 30 s.
    fn closed_by_server(s: &mut std::net::TcpStream) -> bool {
        s.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
        let mut buf = Vec::new();
        match s.read_to_end(&mut buf) {
            Ok(_) => true,
            Err(e) => !matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut),
        }
    }

    #[test]
    fn a_peer_holding_every_connection_and_queue_place_cannot_keep_another_address_out() {
        let store = BlobStore::new(8);
        store.put([7; 32], vec![9; 10]);
        // Nothing is cut off by time within the test: only making room can serve the fetch.
        let limits = ServeLimits {
            connections: 4,
            per_peer: 16,
            queued: 4,
            queue_time: FETCH_TIMEOUT,
            head_time: FETCH_TIMEOUT,
            connection_time: FETCH_TIMEOUT,
        };
        let base = spawn_server(store, limits);
        // 127.0.0.2 takes every served place and every queue place, and more.
        let _held: Vec<_> = (0..12).map(|_| connect_from("127.0.0.2", &base)).collect();
        let r = fetch(&base, &[7; 32], 10, Duration::from_secs(20));
        assert_eq!(r.expect("served"), vec![9; 10]);
    }

    #[test]
    fn a_peer_over_its_address_cap_waits_its_turn_rather_than_being_refused() {
        let store = BlobStore::new(8);
        store.put([7; 32], vec![9; 10]);
        let limits = ServeLimits {
            connections: 8,
            per_peer: 1,
            queued: 8,
            queue_time: FETCH_TIMEOUT,
            head_time: Duration::from_millis(300),
            connection_time: FETCH_TIMEOUT,
        };
        let base = spawn_server(store, limits);
        // One idle connection from this address takes its only place (connections are accepted
        // in the order they arrive, so it is accepted before the fetch's); the fetch waits
        // until that one is cut off for sending no request.
        let _idle = connect_from("127.0.0.1", &base);
        let r = fetch(&base, &[7; 32], 10, Duration::from_secs(20));
        assert_eq!(r.expect("served after waiting"), vec![9; 10]);
    }

    #[test]
    fn a_request_head_that_never_ends_is_cut_off() {
        let limits = ServeLimits {
            head_time: Duration::from_millis(200),
            ..ServeLimits::default()
        };
        let base = spawn_server(BlobStore::new(8), limits);
        let mut slow = connect_from("127.0.0.1", &base);
        slow.write_all(b"GET /v1/blobs/").expect("writes");
        assert!(closed_by_server(&mut slow), "a half-sent request held its connection");
    }

    #[test]
    fn every_answer_closes_its_connection() {
        let store = BlobStore::new(8);
        store.put([7; 32], vec![9; 10]);
        let base = spawn_server(store, ServeLimits::default());
        let mut s = connect_from("127.0.0.1", &base);
        let req = format!(
            "GET /v1/blobs/{} HTTP/1.1\r\nHost: x\r\nConnection: keep-alive\r\n\r\n",
            hex::encode([7u8; 32])
        );
        s.write_all(req.as_bytes()).expect("writes");
        s.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
        let mut buf = Vec::new();
        s.read_to_end(&mut buf)
            .expect("the server closes the connection after answering");
        let text = String::from_utf8_lossy(&buf).to_ascii_lowercase();
        assert!(
            text.starts_with("http/1.1 200") && text.contains("connection: close"),
            "{text}"
        );
    }

    #[test]
    fn a_fetch_whose_connection_is_closed_before_the_answer_tries_again() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binds");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        // The first connection is closed once its request is read (as a busy server closes
        // one to make room); the second is answered.
        std::thread::spawn(move || {
            for (i, s) in listener.incoming().enumerate() {
                let Ok(mut s) = s else { continue };
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf);
                if i > 0 {
                    let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc");
                }
            }
        });
        let r = fetch(&base, &[1; 32], 10, Duration::from_secs(20));
        assert_eq!(r.expect("served the second time"), b"abc".to_vec());
    }

    #[test]
    fn peers_count_by_ipv4_address_or_ipv6_64() {
        let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
        assert_eq!(peer_group(ip("10.0.0.1")), ip("10.0.0.1"));
        assert_ne!(peer_group(ip("10.0.0.1")), peer_group(ip("10.0.0.2")));
        assert_eq!(peer_group(ip("::ffff:10.0.0.1")), ip("10.0.0.1"));
        assert_eq!(
            peer_group(ip("2001:db8:1:2::1")),
            peer_group(ip("2001:db8:1:2:ffff::9"))
        );
        assert_ne!(peer_group(ip("2001:db8:1:2::1")), peer_group(ip("2001:db8:1:3::1")));
    }

    #[test]
    fn an_idle_connection_is_closed_when_its_time_is_up_and_its_slot_freed() {
        let store = BlobStore::new(8);
        store.put([7; 32], vec![9; 10]);
        let limits = ServeLimits {
            connections: 8,
            per_peer: 1,
            connection_time: Duration::from_millis(200),
            ..ServeLimits::default()
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
    #[test]
    fn a_newcomer_when_every_place_is_taken_closes_a_queued_connection_not_one_being_served() {
        let mut r = Registry {
            next: 0,
            conns: BTreeMap::new(),
            limits: ServeLimits {
                connections: 2,
                per_peer: 1,
                queued: 1,
                ..ServeLimits::default()
            },
        };
        let [a, b, c]: [IpAddr; 3] = ["10.0.0.1", "10.0.0.2", "10.0.0.3"].map(|s| s.parse().expect("ip"));
        let (_, a1) = r.open(a);
        let (_, b1) = r.open(b);
        // Over its group's cap: queued, and every place is now taken.
        let (_, a2) = r.open(a);
        assert!(a1.admitted.load(Ordering::Relaxed) && b1.admitted.load(Ordering::Relaxed));
        assert!(!a2.admitted.load(Ordering::Relaxed));
        // Group a holds most (one served, one queued): its queued connection makes room, not
        // its oldest, which is being served.
        let (_, c1) = r.open(c);
        assert!(a2.closed.load(Ordering::Relaxed));
        assert!(!a1.closed.load(Ordering::Relaxed) && !b1.closed.load(Ordering::Relaxed));
        assert!(!c1.closed.load(Ordering::Relaxed));
        assert_eq!(r.conns.len(), 3);
        // Every place is taken again, c1 the only one queued: it makes room, not a served one.
        let (_, c2) = r.open(c);
        assert!(c1.closed.load(Ordering::Relaxed));
        assert!(!a1.closed.load(Ordering::Relaxed) && !b1.closed.load(Ordering::Relaxed));
        assert!(!c2.closed.load(Ordering::Relaxed));
    }

    #[test]
    fn a_newcomer_when_every_place_is_taken_and_none_is_queued_closes_the_oldest_of_the_busiest_group() {
        let mut r = Registry {
            next: 0,
            conns: BTreeMap::new(),
            limits: ServeLimits {
                connections: 2,
                per_peer: 2,
                queued: 0,
                ..ServeLimits::default()
            },
        };
        let [a, b]: [IpAddr; 2] = ["10.0.0.1", "10.0.0.2"].map(|s| s.parse().expect("ip"));
        let (_, a1) = r.open(a);
        let (_, a2) = r.open(a);
        let (_, b1) = r.open(b);
        assert!(a1.closed.load(Ordering::Relaxed));
        assert!(!a2.closed.load(Ordering::Relaxed) && !b1.closed.load(Ordering::Relaxed));
        assert_eq!(r.conns.len(), 2);
    }
}
