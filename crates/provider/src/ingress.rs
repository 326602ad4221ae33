//! HTTP ingress by host name, as Akash providers offer: one listener for every lease, which
//! reads a connection's first request head, finds the lease by its `Host` header, and splices
//! the connection (request head included, then both directions as they come, so keep-alive
//! and WebSocket upgrades pass untouched) to the service's port inside the lease. No host port
//! is needed.
//!
//! Which services: every exposure with `as: 80`, TCP and global. Which names: one made up per
//! service, `<service>-<lease name>.<domain>`, stable across restarts, plus the SDL's `accept`
//! hosts. A lease may not claim a name under the provider's domain, nor one another lease
//! holds ([`check_hosts`], when the manifest arrives).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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

/// Every (host, service, container port) of a group that goes through the ingress.
pub fn http_hosts(lease: &LeaseRef, group: &Group, domain: &str) -> Vec<(String, String, u16, u32)> {
    let mut out = Vec::new();
    for svc in &group.services {
        for x in &svc.expose {
            if x.external_port == 80 && x.global && x.proto == Proto::Tcp {
                out.push((
                    generated_host(lease, &svc.name, domain),
                    svc.name.clone(),
                    x.port,
                    svc.count,
                ));
                for h in &x.hosts {
                    out.push((normalize_host(h), svc.name.clone(), x.port, svc.count));
                }
            }
        }
    }
    out
}

/// The routing table of these leases (the first lease to hold a name keeps it).
pub fn routes(accepted: &[Accepted], domain: &str) -> Table {
    let mut table = BTreeMap::new();
    for a in accepted {
        let lease = LeaseRef::new(a.lease.clone());
        for (host, service, port, replicas) in http_hosts(&lease, &a.group, domain) {
            table.entry(host).or_insert(Route {
                lease: lease.clone(),
                service,
                port,
                replicas,
            });
        }
    }
    table
}

/// Refuses `accept` hosts a lease may not have: one under the provider's own domain (those
/// are the ingress's to give), or one another lease of this provider already holds.
pub fn check_hosts(lease: &LeaseRef, group: &Group, others: &[Accepted], domain: &str) -> Result<(), String> {
    let suffix = format!(".{domain}");
    let taken = routes(
        &others
            .iter()
            .filter(|a| a.lease != lease.id)
            .cloned()
            .collect::<Vec<_>>(),
        domain,
    );
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
            if let Some(r) = taken.get(&h) {
                return Err(format!(
                    "service {:?} accepts host {h:?}, which lease {} already serves on this provider",
                    svc.name,
                    r.lease.label()
                ));
            }
        }
    }
    Ok(())
}

/// Host name → where it leads.
pub type Table = BTreeMap<String, Route>;

/// The ingress of one daemon.
pub struct Ingress<R: Runtime + 'static> {
    domain: String,
    server: Arc<LeaseServer<R>>,
    runtime: Arc<R>,
    /// When the table was made, and the table.
    table: Mutex<(Option<Instant>, Arc<Table>)>,
    next: AtomicU32,
}

impl<R: Runtime + 'static> Ingress<R> {
    pub fn new(domain: String, server: Arc<LeaseServer<R>>, runtime: Arc<R>) -> Arc<Ingress<R>> {
        Arc::new(Ingress {
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
            *t = (
                Some(Instant::now()),
                Arc::new(routes(&self.server.all_accepted(), &self.domain)),
            );
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
        let head = match tokio::time::timeout(HEAD_TIMEOUT, read_head(&mut client)).await {
            Ok(Ok(h)) => h,
            Ok(Err(why)) => return reply(&mut client, 400, "Bad Request", &why).await,
            Err(_) => return reply(&mut client, 408, "Request Timeout", "no request head within 10 s").await,
        };
        let Some(host) = head.host.as_deref().map(normalize_host) else {
            return reply(&mut client, 400, "Bad Request", "the request has no Host header").await;
        };
        let Some(route) = self.route(&host) else {
            let msg = format!("no lease on this provider serves {host:?}");
            return reply(&mut client, 404, "Not Found", &msg).await;
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
        reply(&mut client, 502, "Bad Gateway", &msg).await
    }
}

struct Head {
    /// Everything read so far (the head, maybe the start of the body).
    bytes: Vec<u8>,
    host: Option<String>,
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
            "version: \"2.0\"\nservices:\n  web:\n    image: x\n    expose:\n      - port: 8080\n        as: 80\n        accept: [{accept}]\n        to: [{{global: true}}]\n      - port: 9000\n        to: [{{global: true}}]\nprofiles:\n  compute:\n    web: {{resources: {{cpu: {{units: 1}}, memory: {{size: 1Gi}}, storage: {{size: 1Gi}}}}}}\n  placement:\n    dc: {{pricing: {{web: {{denom: uusd, amount: 1}}}}}}\ndeployment:\n  web: {{dc: {{profile: web, count: 2}}}}\n"
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
    fn only_global_http_exposures_get_a_generated_name_and_their_accept_hosts() {
        let l = lease(1);
        let hosts = http_hosts(&l, &group("shop.example.com"), "ingress.p.net");
        let names: Vec<_> = hosts.iter().map(|h| h.0.as_str()).collect();
        assert_eq!(
            names,
            [generated_host(&l, "web", "ingress.p.net").as_str(), "shop.example.com"]
        );
        assert!(hosts.iter().all(|h| h.2 == 8080 && h.3 == 2));
        assert!(names[0].starts_with("web-pz-") && names[0].ends_with(".ingress.p.net"));
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
        let table = routes(&held, "ingress.p.net");
        assert_eq!(table.get("shop.example.com").map(|r| r.port), Some(8080));
    }
}
