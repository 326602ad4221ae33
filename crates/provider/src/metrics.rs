//! Prometheus metrics of the provider daemon, in the text exposition format (OpenMetrics), on
//! an address of their own (`[metrics] listen` in `provider.toml`; off without it).
//!
//! What it counts: orders seen, bids placed, refused (by the bid engine's reason) and failed,
//! leases active, manifests accepted and refused (by the endpoint's error code), the time from
//! an accepted manifest to every replica running, bytes of images pulled, the height of the
//! last block the daemon acted on and how old that block is, and the tenant endpoint's
//! requests by route and HTTP status. Everything here is an aggregate: no tenant, lease or
//! image name is a label, so the number of series is fixed by the code, whatever tenants send.
//!
//! Must not know: the chain, the runtime or the endpoint's rules; the daemon and the server
//! tell it what happened.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use pazar_api::ErrorCode;

/// The content type of the exposition (what `prometheus-client` writes).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Scrapes served at once; a scraper needs one, an operator's curl another.
pub const MAX_SCRAPE_CONNECTIONS: usize = 8;
/// Time a scraper has to send its request head (and the longest an idle connection is kept).
pub const SCRAPE_HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the daemon did not bid on an order: the bid engine's reasons
/// ([`crate::bidding::Refusal::reason`]) and the pricing script's refusal.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct CodeLabel {
    code: &'static str,
}

/// A request of the tenant endpoint: the route's name (never the path, which names a lease) and
/// the HTTP status answered.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RequestLabels {
    route: &'static str,
    status: u16,
}

/// The daemon's metrics; shared by the daemon and its tenant endpoint.
pub struct Metrics {
    registry: Registry,
    orders_seen: Counter,
    bids_placed: Counter,
    bids_refused: Family<ReasonLabel, Counter>,
    bids_failed: Counter,
    leases_active: Gauge,
    manifests_accepted: Counter,
    manifests_refused: Family<CodeLabel, Counter>,
    deploy_seconds: Histogram,
    image_pull_bytes: Counter,
    chain_height: Gauge,
    chain_lag_seconds: Gauge<f64, AtomicU64>,
    requests: Family<RequestLabels, Counter>,
    /// Time (ms since the epoch) of the last block the daemon acted on; 0 before the first.
    last_block_ms: AtomicU64,
    /// One scrape renders at a time (the counters topped up at scrape time stay exact).
    rendering: Mutex<()>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut m = Metrics {
            registry: Registry::with_prefix("pazar_provider"),
            orders_seen: Counter::default(),
            bids_placed: Counter::default(),
            bids_refused: Family::default(),
            bids_failed: Counter::default(),
            leases_active: Gauge::default(),
            manifests_accepted: Counter::default(),
            manifests_refused: Family::default(),
            // 0.25 s to about 68 minutes: a cached image starts in a second, a large pull takes
            // up to the pull timeout (10 minutes by default).
            deploy_seconds: Histogram::new(exponential_buckets(0.25, 2.0, 15)),
            image_pull_bytes: Counter::default(),
            chain_height: Gauge::default(),
            chain_lag_seconds: Gauge::default(),
            requests: Family::default(),
            last_block_ms: AtomicU64::new(0),
            rendering: Mutex::new(()),
        };
        let r = &mut m.registry;
        r.register("orders_seen", "Orders the daemon considered", m.orders_seen.clone());
        r.register("bids_placed", "Bids the ledger accepted", m.bids_placed.clone());
        r.register(
            "bids_refused",
            "Orders the daemon did not bid on, by reason",
            m.bids_refused.clone(),
        );
        r.register(
            "bids_failed",
            "Bids the daemon sent that the node or the ledger refused",
            m.bids_failed.clone(),
        );
        r.register("leases_active", "Leases this provider holds", m.leases_active.clone());
        r.register(
            "manifests_accepted",
            "Manifests accepted and deployed",
            m.manifests_accepted.clone(),
        );
        r.register(
            "manifests_refused",
            "Manifests refused, by the endpoint's error code",
            m.manifests_refused.clone(),
        );
        r.register(
            "deploy_seconds",
            "Time from a manifest's arrival to every replica of its group running",
            m.deploy_seconds.clone(),
        );
        r.register(
            "image_pull_bytes",
            "Bytes of images pulled for tenants",
            m.image_pull_bytes.clone(),
        );
        r.register(
            "chain_height",
            "Height of the last block the daemon acted on",
            m.chain_height.clone(),
        );
        r.register(
            "chain_lag_seconds",
            "How old the last block the daemon acted on is",
            m.chain_lag_seconds.clone(),
        );
        r.register(
            "endpoint_requests",
            "Requests of the tenant endpoint, by route and HTTP status",
            m.requests.clone(),
        );
        m
    }
}

impl Metrics {
    pub fn order_seen(&self) {
        self.orders_seen.inc();
    }

    pub fn bid_placed(&self) {
        self.bids_placed.inc();
    }

    /// An order not bid on, for `reason` (a fixed name, see [`crate::bidding::Refusal::reason`]).
    pub fn bid_refused(&self, reason: &'static str) {
        self.bids_refused.get_or_create(&ReasonLabel { reason }).inc();
    }

    pub fn bid_failed(&self) {
        self.bids_failed.inc();
    }

    pub fn set_leases_active(&self, n: usize) {
        self.leases_active.set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    pub fn manifest_accepted(&self) {
        self.manifests_accepted.inc();
    }

    pub fn manifest_refused(&self, code: ErrorCode) {
        self.manifests_refused
            .get_or_create(&CodeLabel { code: code.as_str() })
            .inc();
    }

    /// A deployed group ran `elapsed` after its manifest arrived.
    pub fn deployed(&self, elapsed: Duration) {
        self.deploy_seconds.observe(elapsed.as_secs_f64());
    }

    /// The daemon acted on block `height`, made at `time_ms`.
    pub fn block(&self, height: u64, time_ms: u64) {
        self.chain_height.set(i64::try_from(height).unwrap_or(i64::MAX));
        self.last_block_ms.store(time_ms, Ordering::Relaxed);
    }

    /// The tenant endpoint answered a request of `route` with `status`.
    pub fn request(&self, route: &'static str, status: u16) {
        self.requests.get_or_create(&RequestLabels { route, status }).inc();
    }

    /// The exposition at `now_ms`, with `pulled_bytes` the runtime's count of bytes pulled
    /// since it started (the counter follows it).
    pub fn render(&self, now_ms: u64, pulled_bytes: u64) -> String {
        let _one = self.rendering.lock().unwrap_or_else(|e| e.into_inner());
        let seen = self.image_pull_bytes.get();
        if pulled_bytes > seen {
            self.image_pull_bytes.inc_by(pulled_bytes - seen);
        }
        let last = self.last_block_ms.load(Ordering::Relaxed);
        if last > 0 {
            self.chain_lag_seconds.set(now_ms.saturating_sub(last) as f64 / 1000.0);
        }
        let mut s = String::new();
        encode(&mut s, &self.registry).expect("writing into a String cannot fail");
        s
    }
}

/// Serves `GET /metrics` on `listener` with what `render` answers: at most
/// [`MAX_SCRAPE_CONNECTIONS`] at once (more are closed at once), each request head within
/// [`SCRAPE_HEADER_TIMEOUT`].
pub async fn serve<F>(listener: tokio::net::TcpListener, render: F)
where
    F: Fn() -> String + Send + Sync + 'static,
{
    let render = Arc::new(render);
    let router = Router::new()
        .route(
            "/metrics",
            get(move || {
                let render = render.clone();
                async move { ([("content-type", CONTENT_TYPE)], render()).into_response() }
            }),
        )
        .fallback(|| async { (axum::http::StatusCode::NOT_FOUND, "metrics are at /metrics\n") });
    let open = Arc::new(AtomicU64::new(0));
    loop {
        let Ok((io, _)) = listener.accept().await else {
            // Out of file descriptors, say: wait instead of spinning.
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        if open.fetch_add(1, Ordering::SeqCst) >= MAX_SCRAPE_CONNECTIONS as u64 {
            open.fetch_sub(1, Ordering::SeqCst);
            drop(io);
            continue;
        }
        let service = TowerToHyperService::new(router.clone());
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(SCRAPE_HEADER_TIMEOUT);
        let conn = builder.serve_connection(TokioIo::new(io), service);
        let open = open.clone();
        tokio::spawn(async move {
            let _ = conn.await;
            open.fetch_sub(1, Ordering::SeqCst);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exposition_names_every_metric_and_counts_what_it_was_told() {
        let m = Metrics::default();
        m.order_seen();
        m.bid_refused("capacity");
        m.bid_refused("capacity");
        m.manifest_refused(ErrorCode::VersionMismatch);
        m.request("manifest", 409);
        m.block(7, 1_000);
        m.deployed(Duration::from_millis(1500));
        let text = m.render(3_500, 4096);
        for line in [
            "pazar_provider_orders_seen_total 1",
            "pazar_provider_bids_refused_total{reason=\"capacity\"} 2",
            "pazar_provider_manifests_refused_total{code=\"version_mismatch\"} 1",
            "pazar_provider_endpoint_requests_total{route=\"manifest\",status=\"409\"} 1",
            "pazar_provider_chain_height 7",
            "pazar_provider_chain_lag_seconds 2.5",
            "pazar_provider_image_pull_bytes_total 4096",
            "pazar_provider_deploy_seconds_count 1",
            "pazar_provider_leases_active 0",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing from:\n{text}");
        }
        // The pull counter follows the runtime's count and never goes back.
        let text = m.render(3_500, 1000);
        assert!(text.contains("pazar_provider_image_pull_bytes_total 4096\n"), "{text}");
        assert!(text.ends_with("# EOF\n"));
    }
}
