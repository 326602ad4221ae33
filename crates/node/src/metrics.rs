//! Prometheus metrics of the node, served at `/metrics` in the text exposition format.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

pub struct Metrics {
    registry: Registry,
    pub height: Gauge,
    pub blocks: Counter,
    pub txs_committed: Counter,
    pub txs_per_s: Gauge,
    pub mempool_txs: Gauge,
    pub mempool_bytes: Gauge,
    pub commit_seconds: Histogram,
    pub block_txs: Histogram,
    pub rejected: Family<Vec<(String, String)>, Counter>,
    /// Transaction gossip between validators: transactions sent (once per peer), received from
    /// peers, admitted of those, and not gossiped because the queue was full.
    pub gossip_txs_sent: Counter,
    pub gossip_txs_received: Counter,
    pub gossip_txs_admitted: Counter,
    pub gossip_txs_dropped: Counter,
    /// Time from a block's proposal stamp to its commit at this node (the proposer's clock
    /// against this one: informational).
    pub finality_seconds: Histogram,
    /// The consensus engine's own metrics (commonware's: the current view, connected peers,
    /// finalized height, ...), as the engine last encoded them; appended to [`Metrics::render`].
    engine: std::sync::Mutex<String>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut m = Metrics {
            registry: Registry::with_prefix("pazar"),
            height: Gauge::default(),
            blocks: Counter::default(),
            txs_committed: Counter::default(),
            txs_per_s: Gauge::default(),
            mempool_txs: Gauge::default(),
            mempool_bytes: Gauge::default(),
            commit_seconds: Histogram::new(exponential_buckets(0.0005, 2.0, 16)),
            block_txs: Histogram::new(exponential_buckets(1.0, 2.0, 18)),
            rejected: Family::default(),
            gossip_txs_sent: Counter::default(),
            gossip_txs_received: Counter::default(),
            gossip_txs_admitted: Counter::default(),
            gossip_txs_dropped: Counter::default(),
            finality_seconds: Histogram::new(exponential_buckets(0.01, 2.0, 12)),
            engine: std::sync::Mutex::new(String::new()),
        };
        m.registry.register(
            "block_finality_seconds",
            "Time from a block's proposal stamp to its commit at this node",
            m.finality_seconds.clone(),
        );
        m.registry
            .register("block_height", "Height of the last committed block", m.height.clone());
        m.registry
            .register("blocks_committed", "Blocks committed since start", m.blocks.clone());
        m.registry.register(
            "txs_committed",
            "Transactions committed since start",
            m.txs_committed.clone(),
        );
        m.registry.register(
            "txs_per_second",
            "Transactions per second over the last block interval",
            m.txs_per_s.clone(),
        );
        m.registry.register(
            "mempool_txs",
            "Transactions waiting in the mempool",
            m.mempool_txs.clone(),
        );
        m.registry.register(
            "mempool_bytes",
            "Bytes of transactions in the mempool",
            m.mempool_bytes.clone(),
        );
        m.registry.register(
            "block_commit_seconds",
            "Time to execute a block and commit it durably",
            m.commit_seconds.clone(),
        );
        m.registry
            .register("block_txs", "Transactions per block", m.block_txs.clone());
        m.registry.register(
            "txs_rejected",
            "Transactions refused on submission, by reason",
            m.rejected.clone(),
        );
        m.registry.register(
            "gossip_txs_sent",
            "Transactions gossiped to other validators, counted once per validator sent to",
            m.gossip_txs_sent.clone(),
        );
        m.registry.register(
            "gossip_txs_received",
            "Transactions received from other validators' gossip",
            m.gossip_txs_received.clone(),
        );
        m.registry.register(
            "gossip_txs_admitted",
            "Transactions received by gossip and admitted to the mempool",
            m.gossip_txs_admitted.clone(),
        );
        m.registry.register(
            "gossip_txs_dropped",
            "Admitted client transactions not gossiped because the gossip queue was full",
            m.gossip_txs_dropped.clone(),
        );
        m
    }
}

impl Metrics {
    pub fn reject(&self, reason: &str) {
        self.rejected
            .get_or_create(&vec![("reason".to_string(), reason.to_string())])
            .inc();
    }

    pub fn render(&self) -> String {
        let mut s = String::new();
        encode(&mut s, &self.registry).expect("writing into a String cannot fail");
        let engine = self.engine.lock().unwrap_or_else(|e| e.into_inner());
        if !engine.is_empty() {
            // One exposition: the node's metrics, the engine's, one end marker.
            let ours = s.trim_end().trim_end_matches("# EOF").trim_end().len();
            s.truncate(ours);
            s.push('\n');
            s.push_str(engine.trim_end().trim_end_matches("# EOF").trim_end());
            s.push_str("\n# EOF\n");
        }
        s
    }

    /// Replaces the consensus engine's metrics (its own exposition text) shown after the
    /// node's.
    pub fn set_engine(&self, text: String) {
        *self.engine.lock().unwrap_or_else(|e| e.into_inner()) = text;
    }
}
