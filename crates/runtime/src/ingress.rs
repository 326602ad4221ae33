//! Ingress by host name: HTTP, as Akash providers offer, and TLS passthrough, which they do
//! not (their users put Cloudflare in front to get HTTPS). One listener of each kind serves
//! every lease: it reads a connection's first request head (HTTP: the `Host` header) or TLS
//! ClientHello (its SNI name, read with rustls's `Acceptor`, nothing decrypted), finds the lease,
//! and splices the connection, what was read included, then both directions as they come, to
//! the service's port inside the lease. Keep-alive and WebSocket upgrades pass untouched; with
//! TLS the tenant's own service holds the certificate and key (it can get one from Let's Encrypt
//! over the HTTP ingress). No host port is needed.
//!
//! Which services: every global TCP exposure with `as: 80` (HTTP) or `as: 443` (TLS). Which
//! names: one made up per service, `<service>-<lease name>.<domain>`, stable across restarts,
//! plus the SDL's `accept` hosts. A lease may not claim a name under the provider's domain, nor
//! one another lease holds ([`check_hosts`], when the manifest arrives). A made-up name carries
//! 128 bits of the lease id's hash (as much as a DNS label leaves beside the service's name),
//! and the routing table leads to the full lease id, never to a name.
//!
//! Bounds: connections at once, in all and per client address (an IPv6 client per /64), a
//! request head of 16 KiB read within 10 s, and a spliced connection closed after 5 minutes
//! with no byte either way. Connections are tasks, not threads; a refused one gets its answer
//! (HTTP 503, or a TLS alert) and is closed.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use pazar_api::manifest::{Group, Proto, ValidGroup};

use crate::{LeaseRef, Runtime};

/// Largest request head read before routing.
const MAX_HEAD: usize = 16 << 10;
/// Time a client has to send its request head.
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a routing table is used before it is made again from the accepted manifests (a
/// host that is not in it makes it again at once, at most every [`MISS_REFRESH`]).
const TABLE_TTL: Duration = Duration::from_secs(2);
const MISS_REFRESH: Duration = Duration::from_millis(100);
/// Connections the ingress holds at once, at most (both listeners together): each holds two
/// sockets, so fewer where the process may open fewer files ([`Limits::for_this_process`]).
pub const MAX_CONNECTIONS: usize = 8192;
/// Connections one client address (an IPv6 /64) holds at once, at most.
pub const MAX_PER_CLIENT: usize = 128;
/// A spliced connection with no byte either way for this long is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// Longest a refused client is given to take its answer.
const REFUSAL_WRITE: Duration = Duration::from_secs(2);
/// Hex digits of the lease id's hash in a made-up name.
const HOST_HASH_HEX: usize = 32;
/// Longest DNS label.
const MAX_LABEL: usize = 63;

/// How many connections the ingress holds, and which client holds how many.
#[derive(Debug)]
pub struct Limits {
    total: usize,
    per_client: usize,
    idle: Duration,
    held: Mutex<(usize, HashMap<IpAddr, usize>)>,
}

/// Why a connection was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Full {
    /// The ingress holds its most connections.
    All,
    /// This client address holds its most.
    Client,
}

impl Limits {
    pub fn new(total: usize, per_client: usize, idle: Duration) -> Arc<Limits> {
        assert!(total > 0 && per_client > 0 && per_client <= total);
        Arc::new(Limits {
            total,
            per_client,
            idle,
            held: Mutex::new((0, HashMap::new())),
        })
    }

    /// The limits every listener of this process shares: [`MAX_CONNECTIONS`], or fewer where
    /// the open-file limit would run out first (a quarter of the files are kept for the rest of
    /// the daemon).
    pub fn for_this_process() -> Arc<Limits> {
        static SHARED: OnceLock<Arc<Limits>> = OnceLock::new();
        SHARED
            .get_or_init(|| {
                let files = open_file_limit().unwrap_or(1024);
                let total = (files * 3 / 4 / 2).clamp(MAX_PER_CLIENT, MAX_CONNECTIONS);
                Limits::new(total, MAX_PER_CLIENT, IDLE_TIMEOUT)
            })
            .clone()
    }

    /// Connections held now, in all.
    pub fn held(&self) -> usize {
        self.held.lock().map(|h| h.0).unwrap_or(0)
    }

    /// Takes a place for a connection from `client`, given back when the slot is dropped.
    pub fn take(self: &Arc<Self>, client: IpAddr) -> Result<Slot, Full> {
        let key = client_key(client);
        let mut h = self.held.lock().map_err(|_| Full::All)?;
        if h.0 >= self.total {
            return Err(Full::All);
        }
        let n = h.1.entry(key).or_insert(0);
        if *n >= self.per_client {
            return Err(Full::Client);
        }
        *n += 1;
        h.0 += 1;
        Ok(Slot {
            limits: self.clone(),
            client: key,
        })
    }
}

/// One connection's place in the [`Limits`].
#[derive(Debug)]
pub struct Slot {
    limits: Arc<Limits>,
    client: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Ok(mut h) = self.limits.held.lock() {
            h.0 = h.0.saturating_sub(1);
            if let Some(n) = h.1.get_mut(&self.client) {
                *n -= 1;
                if *n == 0 {
                    h.1.remove(&self.client);
                }
            }
        }
    }
}

/// A client as counted: its address, or its /64 for IPv6 (one subscriber's usual share).
fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(a) => match a.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(std::net::Ipv6Addr::from(u128::from(a) & !(u128::MAX >> 64))),
        },
    }
}

/// The soft limit on open files of this process.
fn open_file_limit() -> Option<usize> {
    let text = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// What a listener routes, by the port a service exposes itself as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `as: 80`, routed by the `Host` header.
    Http,
    /// `as: 443`, routed by the ClientHello's server name, passed through undecrypted.
    Tls,
}

impl Kind {
    fn of(external_port: u16) -> Option<Kind> {
        match external_port {
            80 => Some(Kind::Http),
            443 => Some(Kind::Tls),
            _ => None,
        }
    }

    /// `http` or `https`.
    pub fn scheme(self) -> &'static str {
        match self {
            Kind::Http => "http",
            Kind::Tls => "https",
        }
    }
}

/// One name a lease's service is reached by through the ingress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngressHost {
    pub host: String,
    pub kind: Kind,
    pub service: String,
    /// The container port.
    pub port: u16,
    pub replicas: u32,
}

/// Where a host name leads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub lease: LeaseRef,
    pub service: String,
    /// The container port.
    pub port: u16,
    pub replicas: u32,
}

/// The name the ingress gives a service of a lease: `<service>-pz-<32 hex digits of the lease
/// id's hash>.<domain>`, the service's name cut to what a DNS label leaves (two services of one
/// lease that the cut makes alike are refused by [`check_hosts`]).
pub fn generated_host(lease: &LeaseRef, service: &str, domain: &str) -> String {
    let name = lease.name();
    let tag = &name[..3 + HOST_HASH_HEX];
    let room = MAX_LABEL - tag.len() - 1;
    let service = service.to_ascii_lowercase();
    let cut = service.get(..room.min(service.len())).unwrap_or(&service);
    format!("{}-{tag}.{domain}", cut.trim_end_matches('-'))
}

/// `Host` as routed: lower case, without port or trailing dot.
pub fn normalize_host(host: &str) -> String {
    let h = host.trim();
    let h = match h.rsplit_once(':') {
        Some((name, port)) if !name.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => h,
    };
    h.trim_end_matches('.').to_ascii_lowercase()
}

/// Whether `name` is a DNS name: dot-separated labels of letters, digits and inner hyphens,
/// 63 bytes each, 253 in all.
pub fn is_dns_name(name: &str) -> bool {
    let label = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    name.len() <= 253 && name.split('.').all(label)
}

/// Every name by which the ingress reaches a service of a group.
pub fn ingress_hosts(lease: &LeaseRef, group: &Group, domain: &str) -> Vec<IngressHost> {
    let mut out = Vec::new();
    for svc in &group.services {
        for x in svc.expose.iter().filter(|x| x.global && x.proto == Proto::Tcp) {
            let Some(kind) = Kind::of(x.external_port) else {
                continue;
            };
            let names = std::iter::once(generated_host(lease, &svc.name, domain))
                .chain(x.hosts.iter().map(|h| normalize_host(h)));
            for host in names {
                out.push(IngressHost {
                    host,
                    kind,
                    service: svc.name.clone(),
                    port: x.port,
                    replicas: svc.count,
                });
            }
        }
    }
    out
}

/// The leases the ingress routes to, each with the group it runs: whoever decides what runs
/// (the provider daemon, from its accepted manifests) says. Asked again whenever a routing
/// table is stale, so an answer should be cheap.
pub trait LeaseGroups: Send + Sync {
    fn lease_groups(&self) -> Vec<(LeaseRef, ValidGroup)>;
}

/// The routing table of one kind for these leases (the first lease to hold a name keeps it).
pub fn routes(leases: &[(LeaseRef, ValidGroup)], domain: &str, kind: Kind) -> Table {
    let mut table = BTreeMap::new();
    for (lease, group) in leases {
        for h in ingress_hosts(lease, group, domain)
            .into_iter()
            .filter(|h| h.kind == kind)
        {
            table.entry(h.host).or_insert(Route {
                lease: lease.clone(),
                service: h.service,
                port: h.port,
                replicas: h.replicas,
            });
        }
    }
    table
}

/// Refuses names a lease may not have: an `accept` host under the provider's own domain (those
/// are the ingress's to give), any name another lease of this provider already holds, and one
/// name for two of its own services.
pub fn check_hosts(
    lease: &LeaseRef,
    group: &Group,
    others: &[(LeaseRef, ValidGroup)],
    domain: &str,
) -> Result<(), String> {
    let suffix = format!(".{domain}");
    let mut taken = BTreeMap::new();
    for (holder, group) in others.iter().filter(|(l, _)| l.id != lease.id) {
        for h in ingress_hosts(holder, group, domain) {
            taken.entry(h.host).or_insert_with(|| holder.clone());
        }
    }
    for svc in &group.services {
        for h in svc.expose.iter().flat_map(|x| x.hosts.iter()) {
            let h = normalize_host(h);
            if h == domain || h.ends_with(&suffix) {
                return Err(format!(
                    "service {:?} accepts host {h:?}, which is under this provider's ingress domain {domain:?}; \
                     those names are given by the provider",
                    svc.name
                ));
            }
            if let Some(holder) = taken.get(&h) {
                return Err(format!(
                    "service {:?} accepts host {h:?}, which lease {} already serves on this provider",
                    svc.name,
                    holder.label()
                ));
            }
        }
    }
    let mut own: BTreeMap<(String, u8), String> = BTreeMap::new();
    for h in ingress_hosts(lease, group, domain) {
        if taken.contains_key(&h.host) {
            return Err(format!(
                "the name {:?} this provider would give service {:?} is held by another lease",
                h.host, h.service
            ));
        }
        let kind = h.kind as u8;
        if let Some(other) = own.insert((h.host.clone(), kind), h.service.clone()) {
            if other != h.service {
                return Err(format!(
                    "services {other:?} and {:?} would both be reached as {:?}; give one a name that differs \
                     in its first {} characters",
                    h.service,
                    h.host,
                    MAX_LABEL - 4 - HOST_HASH_HEX
                ));
            }
        }
    }
    Ok(())
}

/// Host name → where it leads.
pub type Table = BTreeMap<String, Route>;

/// One listener of the ingress.
pub struct Ingress<R: Runtime + 'static> {
    kind: Kind,
    domain: String,
    leases: Arc<dyn LeaseGroups>,
    runtime: Arc<R>,
    /// When the table was made, and the table.
    table: Mutex<(Option<Instant>, Arc<Table>)>,
    next: AtomicU32,
    limits: Arc<Limits>,
}

impl<R: Runtime + 'static> Ingress<R> {
    /// A listener under the limits every listener of this process shares.
    pub fn new(kind: Kind, domain: String, leases: Arc<dyn LeaseGroups>, runtime: Arc<R>) -> Arc<Ingress<R>> {
        Self::with_limits(kind, domain, leases, runtime, Limits::for_this_process())
    }

    pub fn with_limits(
        kind: Kind,
        domain: String,
        leases: Arc<dyn LeaseGroups>,
        runtime: Arc<R>,
        limits: Arc<Limits>,
    ) -> Arc<Ingress<R>> {
        Arc::new(Ingress {
            kind,
            domain,
            leases,
            runtime,
            table: Mutex::new((None, Arc::default())),
            next: AtomicU32::new(0),
            limits,
        })
    }

    /// The table, made again when stale (or on a miss, `fresh`).
    fn table(&self, fresh: bool) -> Arc<Table> {
        let Ok(mut t) = self.table.lock() else {
            return Arc::default();
        };
        let age = t.0.map(|at| at.elapsed());
        let stale = match age {
            None => true,
            Some(a) => a > TABLE_TTL || (fresh && a > MISS_REFRESH),
        };
        if stale {
            let table = routes(&self.leases.lease_groups(), &self.domain, self.kind);
            *t = (Some(Instant::now()), Arc::new(table));
        }
        t.1.clone()
    }

    fn route(&self, host: &str) -> Option<Route> {
        if let Some(r) = self.table(false).get(host) {
            return Some(r.clone());
        }
        self.table(true).get(host).cloned()
    }

    /// Accepts connections until the listener fails. Each is a task holding a place in the
    /// limits; one over them is answered and closed at once.
    pub async fn serve(self: Arc<Self>, listener: TcpListener) {
        loop {
            let Ok((conn, peer)) = listener.accept().await else {
                // Out of files, most likely: wait for connections to end.
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            match self.limits.take(peer.ip()) {
                Ok(slot) => {
                    tokio::spawn(self.clone().handle(conn, slot));
                }
                Err(full) => {
                    let me = self.clone();
                    tokio::spawn(async move {
                        let mut conn = conn;
                        let _ = tokio::time::timeout(REFUSAL_WRITE, me.refuse(&mut conn, Refusal::Full(full))).await;
                    });
                }
            }
        }
    }

    async fn handle(self: Arc<Self>, mut client: TcpStream, _slot: Slot) {
        let read = match self.kind {
            Kind::Http => read_head(&mut client).boxed(),
            Kind::Tls => read_client_hello(&mut client).boxed(),
        };
        let head = match tokio::time::timeout(HEAD_TIMEOUT, read).await {
            Ok(Ok(h)) => h,
            Ok(Err(why)) => return self.refuse(&mut client, Refusal::BadRequest(why)).await,
            Err(_) => return self.refuse(&mut client, Refusal::Timeout).await,
        };
        let Some(host) = head.host.as_deref().map(normalize_host) else {
            return self.refuse(&mut client, Refusal::NoHost).await;
        };
        let Some(route) = self.route(&host) else {
            return self.refuse(&mut client, Refusal::UnknownHost(host)).await;
        };
        // Replicas in turn; one that does not answer passes to the next.
        let first = self.next.fetch_add(1, Ordering::Relaxed);
        let mut last_err = String::new();
        for i in 0..route.replicas.max(1) {
            let replica = (first + i) % route.replicas.max(1);
            match self
                .runtime
                .dial(&route.lease, &route.service, replica, route.port)
                .await
            {
                Ok(mut backend) => {
                    if backend.write_all(&head.bytes).await.is_ok() {
                        splice(client, backend, self.limits.idle).await;
                    }
                    return;
                }
                Err(e) => last_err = e.to_string(),
            }
        }
        let msg = format!(
            "service {:?} of lease {} does not answer on port {}: {last_err}",
            route.service,
            route.lease.label(),
            route.port
        );
        self.refuse(&mut client, Refusal::Down(msg)).await
    }

    /// Says why, as the protocol allows: an HTTP answer with the reason, or a TLS alert
    /// (`unrecognized_name` for a host no lease serves), never a bare EOF.
    async fn refuse(&self, client: &mut TcpStream, r: Refusal) {
        match self.kind {
            Kind::Http => {
                let (code, reason, msg) = match r {
                    Refusal::BadRequest(why) => (400, "Bad Request", why),
                    Refusal::Timeout => (408, "Request Timeout", "no request head within 10 s".into()),
                    Refusal::NoHost => (400, "Bad Request", "the request has no Host header".into()),
                    Refusal::UnknownHost(h) => (404, "Not Found", format!("no lease on this provider serves {h:?}")),
                    Refusal::Down(msg) => (502, "Bad Gateway", msg),
                    Refusal::Full(Full::All) => (
                        503,
                        "Service Unavailable",
                        "the ingress holds as many connections as it may; try again".into(),
                    ),
                    Refusal::Full(Full::Client) => (
                        503,
                        "Service Unavailable",
                        format!(
                            "your address holds {} connections to this ingress, its most",
                            self.limits.per_client
                        ),
                    ),
                };
                reply(client, code, reason, &msg).await
            }
            Kind::Tls => {
                // A fatal alert: unrecognized_name (112), unexpected_message (10), or
                // internal_error (80) when the service does not answer.
                let code = match r {
                    Refusal::NoHost | Refusal::UnknownHost(_) => 112,
                    Refusal::BadRequest(_) | Refusal::Timeout => 10,
                    Refusal::Down(_) | Refusal::Full(_) => 80,
                };
                let _ = client.write_all(&[0x15, 0x03, 0x03, 0x00, 0x02, 0x02, code]).await;
                let _ = client.shutdown().await;
            }
        }
    }
}

enum Refusal {
    BadRequest(String),
    Timeout,
    NoHost,
    UnknownHost(String),
    Down(String),
    Full(Full),
}

/// Copies both ways until both sides have finished, or until nothing has passed either way for
/// `idle`. Each direction uses one fixed buffer, and a side that ends its sending has the
/// other's write side shut, as TCP half-close asks.
async fn splice(client: TcpStream, backend: TcpStream, idle: Duration) {
    let start = Instant::now();
    let last = AtomicU64::new(0);
    let (cr, cw) = client.into_split();
    let (br, bw) = backend.into_split();
    let both = futures_util::future::join(pump(cr, bw, &last, start), pump(br, cw, &last, start));
    let watchdog = async {
        loop {
            tokio::time::sleep(idle / 4).await;
            let quiet = start
                .elapsed()
                .saturating_sub(Duration::from_millis(last.load(Ordering::Relaxed)));
            if quiet >= idle {
                return;
            }
        }
    };
    tokio::select! {
        _ = both => {}
        _ = watchdog => {}
    }
}

/// One direction of [`splice`]: noting when bytes last passed (milliseconds after `start`).
async fn pump(
    mut r: tokio::net::tcp::OwnedReadHalf,
    mut w: tokio::net::tcp::OwnedWriteHalf,
    last: &AtomicU64,
    start: Instant,
) {
    let mut buf = vec![0u8; 16 << 10];
    loop {
        let n = match r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if w.write_all(&buf[..n]).await.is_err() {
            break;
        }
        last.store(start.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
    let _ = w.shutdown().await;
}

struct Head {
    /// Everything read so far (the head, maybe the start of what follows).
    bytes: Vec<u8>,
    host: Option<String>,
}

/// Reads until the TLS ClientHello is complete; its server name (SNI) is the host.
async fn read_client_hello(client: &mut TcpStream) -> Result<Head, String> {
    let mut bytes = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    let mut acceptor = rustls::server::Acceptor::default();
    loop {
        let n = client
            .read(&mut chunk)
            .await
            .map_err(|e| format!("cannot read the ClientHello: {e}"))?;
        if n == 0 {
            return Err("the connection closed before a ClientHello".into());
        }
        bytes.extend_from_slice(&chunk[..n]);
        let mut fresh = &chunk[..n];
        while !fresh.is_empty() {
            acceptor
                .read_tls(&mut fresh)
                .map_err(|e| format!("not a TLS ClientHello: {e}"))?;
        }
        match acceptor.accept() {
            Ok(Some(hello)) => {
                let host = hello.client_hello().server_name().map(str::to_string);
                return Ok(Head { bytes, host });
            }
            Ok(None) if bytes.len() < MAX_HEAD => {}
            Ok(None) => return Err(format!("ClientHello over {MAX_HEAD} bytes")),
            Err((e, _)) => return Err(format!("not a TLS ClientHello: {e}")),
        }
    }
}

/// Reads until the first request head is complete.
async fn read_head(client: &mut TcpStream) -> Result<Head, String> {
    let mut bytes = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    loop {
        let n = client
            .read(&mut chunk)
            .await
            .map_err(|e| format!("cannot read the request: {e}"))?;
        if n == 0 {
            return Err("the connection closed before a request head".into());
        }
        bytes.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 100];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(&bytes) {
            Ok(httparse::Status::Complete(_)) => {
                let host = req
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case("host"))
                    .and_then(|h| std::str::from_utf8(h.value).ok())
                    .map(str::to_string);
                return Ok(Head { bytes, host });
            }
            Ok(httparse::Status::Partial) if bytes.len() < MAX_HEAD => {}
            Ok(httparse::Status::Partial) => return Err(format!("request head over {MAX_HEAD} bytes")),
            Err(e) => return Err(format!("not an HTTP/1 request: {e}")),
        }
    }
}

async fn reply(client: &mut TcpStream, code: u16, reason: &str, message: &str) {
    let body = format!("{message}\n");
    let text = format!(
        "HTTP/1.1 {code} {reason}\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = client.write_all(text.as_bytes()).await;
    let _ = client.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use pazar_types::market::BidId;
    use pazar_types::{Address, Denom};

    fn lease(tag: u8) -> LeaseRef {
        LeaseRef::new(BidId {
            owner: Address::Native([tag; 20]),
            dseq: 1,
            gseq: 1,
            oseq: 1,
            provider: Address::Native([9; 20]),
        })
    }

    fn group(accept: &str) -> ValidGroup {
        let sdl = format!(
            "version: \"2.0\"\nservices:\n  web:\n    image: x\n    expose:\n      - port: 8080\n        as: 80\n        accept: [{accept}]\n        to: [{{global: true}}]\n      - port: 8443\n        as: 443\n        accept: [{accept}]\n        to: [{{global: true}}]\n      - port: 9000\n        to: [{{global: true}}]\n      - port: 9443\n        as: 443\nprofiles:\n  compute:\n    web: {{resources: {{cpu: {{units: 1}}, memory: {{size: 1Gi}}, storage: {{size: 1Gi}}}}}}\n  placement:\n    dc: {{pricing: {{web: {{denom: uusd, amount: 1}}}}}}\ndeployment:\n  web: {{dc: {{profile: web, count: 2}}}}\n"
        );
        let opts = pazar_sdl::Options::new(Denom::new("upzr").expect("denom"), Denom::new("uusd").expect("denom"));
        let d = pazar_sdl::parse(sdl.as_bytes(), &opts).expect("valid sdl");
        ValidGroup::new(d.manifest.groups.into_iter().next().expect("group")).expect("valid group")
    }

    #[test]
    fn hosts_are_normalized_without_port_case_or_trailing_dot() {
        assert_eq!(normalize_host("Web.Example.COM:8080"), "web.example.com");
        assert_eq!(normalize_host("example.com."), "example.com");
        assert_eq!(normalize_host(" a.b "), "a.b");
        assert_eq!(normalize_host("[::1]:80"), "[::1]:80", "IPv6 literals are left alone");
    }

    #[test]
    fn an_ingress_domain_must_be_a_dns_name() {
        assert!(is_dns_name("ingress.provider.example.com"));
        assert!(is_dns_name("localhost"));
        for bad in ["", "a..b", "-a.b", "a-.b", "a_b.c", "a b", &"x".repeat(64)] {
            assert!(!is_dns_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn only_global_exposures_as_80_or_443_get_a_generated_name_and_their_accept_hosts() {
        let l = lease(1);
        let hosts = ingress_hosts(&l, &group("shop.example.com"), "ingress.p.net");
        let made = generated_host(&l, "web", "ingress.p.net");
        let got: Vec<_> = hosts.iter().map(|h| (h.host.as_str(), h.kind, h.port)).collect();
        assert_eq!(
            got,
            [
                (made.as_str(), Kind::Http, 8080),
                ("shop.example.com", Kind::Http, 8080),
                (made.as_str(), Kind::Tls, 8443),
                ("shop.example.com", Kind::Tls, 8443),
            ]
        );
        assert!(hosts.iter().all(|h| h.replicas == 2));
        assert!(made.starts_with("web-pz-") && made.ends_with(".ingress.p.net"));
    }

    #[test]
    fn made_up_names_carry_128_bits_of_the_lease_hash_and_fit_a_dns_label() {
        let l = lease(1);
        let made = generated_host(&l, "web", "ingress.p.net");
        assert_eq!(made, format!("web-{}.ingress.p.net", &l.name()[..35]));
        let long = "s".repeat(63);
        let made = generated_host(&l, &long, "ingress.p.net");
        let label = made.split('.').next().expect("label");
        assert_eq!(label.len(), 63, "{made}");
        assert!(is_dns_name(&made), "{made}");
        // A cut that leaves a trailing hyphen drops it, so the label stays valid.
        let made = generated_host(&l, &format!("{}-x", "a".repeat(26)), "d");
        assert!(is_dns_name(&made) && !made.contains("--"), "{made}");
    }

    #[test]
    fn two_services_the_cut_makes_alike_are_refused() {
        let long = |tail: &str| format!("{}{tail}", "a".repeat(30));
        let sdl = format!(
            "version: \"2.0\"\nservices:\n  {a}:\n    image: x\n    expose: [{{port: 80, to: [{{global: true}}]}}]\n  {b}:\n    image: x\n    expose: [{{port: 80, to: [{{global: true}}]}}]\nprofiles:\n  compute:\n    w: {{resources: {{cpu: {{units: 1}}, memory: {{size: 1Gi}}, storage: {{size: 1Gi}}}}}}\n  placement:\n    dc: {{pricing: {{w: {{denom: uusd, amount: 1}}}}}}\ndeployment:\n  {a}: {{dc: {{profile: w, count: 1}}}}\n  {b}: {{dc: {{profile: w, count: 1}}}}\n",
            a = long("x"),
            b = long("y")
        );
        let opts = pazar_sdl::Options::new(Denom::new("upzr").expect("denom"), Denom::new("uusd").expect("denom"));
        let d = pazar_sdl::parse(sdl.as_bytes(), &opts).expect("valid sdl");
        let g = d.manifest.groups.into_iter().next().expect("group");
        let err = check_hosts(&lease(1), &g, &[], "ingress.p.net").expect_err("alike");
        assert!(err.contains("would both be reached as"), "{err}");
    }

    #[test]
    fn connections_are_bounded_in_all_and_per_client() {
        let limits = Limits::new(3, 2, IDLE_TIMEOUT);
        let a: IpAddr = "192.0.2.1".parse().expect("ip");
        let b: IpAddr = "192.0.2.2".parse().expect("ip");
        let a1 = limits.take(a).expect("first");
        let a2 = limits.take(a).expect("second");
        assert_eq!(limits.take(a).expect_err("a third from a"), Full::Client);
        let b1 = limits.take(b).expect("b");
        assert_eq!(limits.take(b).expect_err("all taken"), Full::All);
        assert_eq!(limits.held(), 3);
        drop(a1);
        let _a3 = limits.take(a).expect("given back");
        drop((a2, b1));
        assert_eq!(limits.held(), 1);
        // One IPv6 subscriber (a /64) counts as one client, however many addresses it uses.
        let limits = Limits::new(10, 2, IDLE_TIMEOUT);
        let _x = limits.take("2001:db8:1:2::1".parse().expect("ip")).expect("one");
        let _y = limits.take("2001:db8:1:2::ffff".parse().expect("ip")).expect("two");
        assert_eq!(
            limits
                .take("2001:db8:1:2:abcd::1".parse().expect("ip"))
                .expect_err("same /64"),
            Full::Client
        );
        assert!(
            limits.take("2001:db8:1:3::1".parse().expect("ip")).is_ok(),
            "another /64"
        );
    }

    #[tokio::test]
    async fn a_spliced_connection_that_goes_quiet_is_closed() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let client = TcpStream::connect(addr).await.expect("client");
        let (proxy_side, _) = listener.accept().await.expect("accept");
        let backend_listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let backend = TcpStream::connect(backend_listener.local_addr().expect("addr"))
            .await
            .expect("backend");
        let (mut service, _) = backend_listener.accept().await.expect("accept");
        let spliced = tokio::spawn(splice(proxy_side, backend, Duration::from_millis(200)));
        let mut client = client;
        client.write_all(b"ping").await.expect("write");
        let mut got = [0u8; 4];
        service.read_exact(&mut got).await.expect("spliced");
        assert_eq!(&got, b"ping");
        // Neither side sends anything more: the splice ends and both sides see the close.
        spliced.await.expect("splice ends");
        let mut rest = Vec::new();
        client.read_to_end(&mut rest).await.expect("closed");
        assert!(rest.is_empty());
    }

    #[test]
    fn a_host_held_by_another_lease_or_under_the_provider_domain_is_refused() {
        let (a, b) = (lease(1), lease(2));
        let held = vec![(a.clone(), group("shop.example.com"))];
        let err = check_hosts(&b, &group("shop.example.com"), &held, "ingress.p.net").expect_err("taken");
        assert!(err.contains("already serves"), "{err}");
        assert!(
            check_hosts(&a, &group("shop.example.com"), &held, "ingress.p.net").is_ok(),
            "its own"
        );
        let err = check_hosts(&b, &group("x.ingress.p.net"), &[], "ingress.p.net").expect_err("reserved");
        assert!(err.contains("ingress domain"), "{err}");
        assert!(check_hosts(&b, &group("other.example.com"), &held, "ingress.p.net").is_ok());
        let table = routes(&held, "ingress.p.net", Kind::Http);
        assert_eq!(table.get("shop.example.com").map(|r| r.port), Some(8080));
        let table = routes(&held, "ingress.p.net", Kind::Tls);
        assert_eq!(table.get("shop.example.com").map(|r| r.port), Some(8443));
    }
}
