//! Serving HTTP to strangers with a bound on everything a client can hold: concurrent
//! connections (in all and per peer address), the time to send a request's headers (which also
//! closes idle keep-alive connections), the size of the headers, and (in `rpc.rs`) bodies and
//! event subscribers. Connections are tasks on the runtime, never threads. Over a limit, a
//! connection is closed at once: it costs the server one `accept` and nothing else.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;

/// Limits of one HTTP server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    /// Connections open at once, all peers together.
    pub max_connections: usize,
    /// Connections open at once from one IP address.
    pub max_connections_per_ip: usize,
    /// Time a client has to send a request's whole header, and the longest an idle keep-alive
    /// connection is kept.
    pub header_timeout: Duration,
    /// Largest request head (request line and headers), in bytes.
    pub max_header_bytes: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            max_connections: 1_024,
            max_connections_per_ip: 128,
            header_timeout: Duration::from_secs(10),
            max_header_bytes: 64 << 10,
        }
    }
}

/// The peer address of a connection, where the transport has one.
pub trait PeerIp {
    fn peer_ip(&self) -> Option<IpAddr>;
}

impl PeerIp for std::net::SocketAddr {
    fn peer_ip(&self) -> Option<IpAddr> {
        // An IPv4 peer on a dual-stack socket counts as the IPv4 address it is.
        Some(self.ip().to_canonical())
    }
}

impl PeerIp for tokio::net::unix::SocketAddr {
    fn peer_ip(&self) -> Option<IpAddr> {
        None
    }
}

/// The address a request's connection comes from, where the transport has one (an
/// [`axum::Extension`] on every request [`serve`] hands to its router).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientIp(pub Option<IpAddr>);

/// Counts open connections; a [`Slot`] is one of them and frees itself when dropped.
#[derive(Debug, Default)]
struct Book {
    total: usize,
    per_ip: BTreeMap<IpAddr, usize>,
}

struct Slot {
    book: Arc<Mutex<Book>>,
    ip: Option<IpAddr>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut b = self.book.lock().unwrap_or_else(|e| e.into_inner());
        b.total -= 1;
        if let Some(ip) = self.ip {
            if let Some(n) = b.per_ip.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    b.per_ip.remove(&ip);
                }
            }
        }
    }
}

fn take_slot(book: &Arc<Mutex<Book>>, ip: Option<IpAddr>, limits: &HttpLimits) -> Option<Slot> {
    let mut b = book.lock().unwrap_or_else(|e| e.into_inner());
    if b.total >= limits.max_connections {
        return None;
    }
    if let Some(ip) = ip {
        let n = b.per_ip.entry(ip).or_insert(0);
        if *n >= limits.max_connections_per_ip {
            return None;
        }
        *n += 1;
    }
    b.total += 1;
    Some(Slot { book: book.clone(), ip })
}

/// Serves `router` on `listener` within `limits` until `shutdown` resolves, then lets the
/// requests in flight finish.
pub async fn serve<L>(
    mut listener: L,
    router: axum::Router,
    limits: HttpLimits,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()>
where
    L: axum::serve::Listener,
    L::Addr: PeerIp,
{
    assert!(limits.max_connections > 0 && limits.max_connections_per_ip > 0);
    let book = Arc::new(Mutex::new(Book::default()));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (io, addr) = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let Some(slot) = take_slot(&book, addr.peer_ip(), &limits) else {
            tracing::debug!("connection refused: too many open connections");
            drop(io);
            continue;
        };
        // Handlers that bound work per client read its address from this extension.
        let service = TowerToHyperService::new(router.clone().layer(axum::Extension(ClientIp(addr.peer_ip()))));
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_timeout)
            .max_buf_size(limits.max_header_bytes.max(8192));
        let conn = builder.serve_connection(TokioIo::new(io), service);
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            let _slot = slot;
            let _ = conn.await;
        });
    }
    drop(listener);
    // Requests in flight get a moment to finish; long-lived streams (events) are cut.
    let _ = tokio::time::timeout(Duration::from_secs(5), graceful.shutdown()).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_bounded_in_all_and_per_address_and_freed_on_drop() {
        let limits = HttpLimits {
            max_connections: 3,
            max_connections_per_ip: 2,
            ..HttpLimits::default()
        };
        let book = Arc::new(Mutex::new(Book::default()));
        let a: IpAddr = "10.0.0.1".parse().expect("ip");
        let b: IpAddr = "10.0.0.2".parse().expect("ip");
        let a1 = take_slot(&book, Some(a), &limits).expect("first");
        let _a2 = take_slot(&book, Some(a), &limits).expect("second");
        assert!(take_slot(&book, Some(a), &limits).is_none(), "per-address bound");
        let _b1 = take_slot(&book, Some(b), &limits).expect("other address");
        assert!(take_slot(&book, Some(b), &limits).is_none(), "total bound");
        drop(a1);
        assert!(take_slot(&book, Some(b), &limits).is_some(), "a freed slot is reusable");
    }
}
