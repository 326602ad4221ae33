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
//! one another lease holds ([`check_hosts`], when the manifest arrives).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use pazar_sdl::manifest::{Group, Proto};

use crate::runtime::{LeaseRef, Runtime};
use crate::server::{Accepted, LeaseServer};

/// Largest request head read before routing.
const MAX_HEAD: usize = 16 << 10;
/// Time a client has to send its request head.
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a routing table is used before it is made again from the accepted manifests (a
/// host that is not in it makes it again at once, at most every [`MISS_REFRESH`]).
const TABLE_TTL: Duration = Duration::from_secs(2);
const MISS_REFRESH: Duration = Duration::from_millis(100);

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

/// The name the ingress gives a service of a lease.
pub fn generated_host(lease: &LeaseRef, service: &str, domain: &str) -> String {
    format!("{}-{}.{}", service.to_ascii_lowercase(), lease.name(), domain)
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

/// The routing table of one kind for these leases (the first lease to hold a name keeps it).
pub fn routes(accepted: &[Accepted], domain: &str, kind: Kind) -> Table {
    let mut table = BTreeMap::new();
    for a in accepted {
        let lease = LeaseRef::new(a.lease.clone());
        for h in ingress_hosts(&lease, &a.group, domain)
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

/// Refuses `accept` hosts a lease may not have: one under the provider's own domain (those
/// are the ingress's to give), or one another lease of this provider already holds.
pub fn check_hosts(lease: &LeaseRef, group: &Group, others: &[Accepted], domain: &str) -> Result<(), String> {
    let suffix = format!(".{domain}");
    let mut taken = BTreeMap::new();
    for a in others.iter().filter(|a| a.lease != lease.id) {
        let holder = LeaseRef::new(a.lease.clone());
        for h in ingress_hosts(&holder, &a.group, domain) {
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
    Ok(())
}

/// Host name → where it leads.
pub type Table = BTreeMap<String, Route>;

/// One listener of the ingress.
pub struct Ingress<R: Runtime + 'static> {
    kind: Kind,
    domain: String,
    server: Arc<LeaseServer<R>>,
    runtime: Arc<R>,
    /// When the table was made, and the table.
    table: Mutex<(Option<Instant>, Arc<Table>)>,
    next: AtomicU32,
}

impl<R: Runtime + 'static> Ingress<R> {
    pub fn new(kind: Kind, domain: String, server: Arc<LeaseServer<R>>, runtime: Arc<R>) -> Arc<Ingress<R>> {
        Arc::new(Ingress {
            kind,
            domain,
            server,
            runtime,
            table: Mutex::new((None, Arc::default())),
            next: AtomicU32::new(0),
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
            let table = routes(&self.server.all_accepted(), &self.domain, self.kind);
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

    /// Accepts connections until the listener fails.
    pub async fn serve(self: Arc<Self>, listener: TcpListener) {
        loop {
            let Ok((conn, _)) = listener.accept().await else {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            tokio::spawn(self.clone().handle(conn));
        }
    }

    async fn handle(self: Arc<Self>, mut client: TcpStream) {
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
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut backend).await;
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
                };
                reply(client, code, reason, &msg).await
            }
            Kind::Tls => {
                // A fatal alert: unrecognized_name (112), unexpected_message (10), or
                // internal_error (80) when the service does not answer.
                let code = match r {
                    Refusal::NoHost | Refusal::UnknownHost(_) => 112,
                    Refusal::BadRequest(_) | Refusal::Timeout => 10,
                    Refusal::Down(_) => 80,
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

    fn group(accept: &str) -> Group {
        let sdl = format!(
            "version: \"2.0\"\nservices:\n  web:\n    image: x\n    expose:\n      - port: 8080\n        as: 80\n        accept: [{accept}]\n        to: [{{global: true}}]\n      - port: 8443\n        as: 443\n        accept: [{accept}]\n        to: [{{global: true}}]\n      - port: 9000\n        to: [{{global: true}}]\n      - port: 9443\n        as: 443\nprofiles:\n  compute:\n    web: {{resources: {{cpu: {{units: 1}}, memory: {{size: 1Gi}}, storage: {{size: 1Gi}}}}}}\n  placement:\n    dc: {{pricing: {{web: {{denom: uusd, amount: 1}}}}}}\ndeployment:\n  web: {{dc: {{profile: web, count: 2}}}}\n"
        );
        let opts = pazar_sdl::Options::new(Denom::new("upzr").expect("denom"), Denom::new("uusd").expect("denom"));
        let d = pazar_sdl::parse(sdl.as_bytes(), &opts).expect("valid sdl");
        d.manifest.groups.into_iter().next().expect("group")
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
    fn a_host_held_by_another_lease_or_under_the_provider_domain_is_refused() {
        let (a, b) = (lease(1), lease(2));
        let held = vec![Accepted {
            lease: a.id.clone(),
            group: group("shop.example.com"),
        }];
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
