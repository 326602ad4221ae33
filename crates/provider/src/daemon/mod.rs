//! `pazar provider run`: the provider daemon. It registers (or updates) the provider on the
//! ledger, serves the tenant endpoint over pinned TLS, follows the node's event stream (resuming
//! by height after a disconnect), bids on the orders it can serve at its price list while
//! reserving the capacity, runs leases when their manifest arrives, stops their workloads (volumes
//! kept) while their escrow is dry and starts them again when a deposit resumes them, removes
//! their workloads when they close for any reason, withdraws earnings periodically, restores its leases after a
//! restart, and exports its metrics.
//!
//! This file wires the parts together: the configuration ([`config`]), the capacity book
//! (`book`), the event follower that dispatches each block's events (`follow`), and the
//! reactions: bidding on orders (`bids`) and the lease lifecycle (`leases`). It reads the node
//! only through `pazar_client::Rpc`'s typed methods.
//!
//! Must not know: the ledger's internals (it reads the RPC like any client), the event
//! stream's wire format (the client's), or how workloads run (the runtime's).

mod bids;
mod book;
pub mod config;
mod follow;
mod leases;

use std::path::Path;
use std::sync::{Arc, Mutex};

use pazar_api::node::TxResult;
use pazar_client::{ClientError, Rpc};
use pazar_types::market::{Attribute, GroupSpec, OrderId};
use pazar_types::tx::ProviderInfo;
use pazar_types::{Address, Msg, SigningKey};

use crate::bidding::Free;
use crate::inventory::{self, Inventory};
use crate::metrics::Metrics;
use crate::server::{LeaseServer, RpcChain};
use crate::tls::{Identity, TlsListener};
use book::Book;
use pazar_runtime::docker::DockerRuntime;
use pazar_runtime::sandbox::SandboxRuntime;
use pazar_runtime::AnyRuntime;

pub use config::{Config, EgressConfig, ImagesConfig, IngressConfig, MetricsConfig, SandboxConfig};
pub use follow::follow;

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("provider configuration: {0}")]
    Config(String),
    #[error("node: {0}")]
    Node(#[from] ClientError),
    #[error("transaction {hash} failed: {reason}")]
    Tx { hash: String, reason: String },
    #[error("a node request did not finish: {0}")]
    Task(String),
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    #[error(transparent)]
    Runtime(#[from] pazar_runtime::RuntimeError),
    #[error("cannot serve the tenant endpoint on {addr}: {reason}")]
    Listen { addr: String, reason: String },
}

pub struct Daemon {
    cfg: Config,
    rpc: Rpc,
    key: SigningKey,
    address: Address,
    chain_id: String,
    book: Mutex<Book>,
    runtime: Arc<AnyRuntime>,
    server: Arc<LeaseServer<AnyRuntime>>,
    identity: Identity,
    /// GPUs of the inventory as `capabilities/gpu/…` attributes (model, ram, interface), which
    /// the ledger's matching rule reads to accept a GPU bid.
    gpu_attributes: Vec<Attribute>,
    metrics: Arc<Metrics>,
    /// Leases of this provider in grace (their escrow ran dry), with the height it ends at:
    /// their workloads are stopped.
    grace: Mutex<std::collections::BTreeMap<pazar_types::market::BidId, u64>>,
    /// Progress (one event per action) for the operator, logged through `tracing`.
    log: fn(&str),
}

fn print_line(s: &str) {
    tracing::info!("{s}");
}

/// What `pazar provider inventory` prints.
pub fn inventory(cfg: &Config, home: &Path) -> Inventory {
    let data = cfg.data_dir.clone().unwrap_or_else(|| home.join("provider"));
    inventory::probe(&data, &cfg.capacity)
}

impl Daemon {
    pub async fn start(cfg: Config, home: &Path, rpc: Rpc, key: SigningKey) -> Result<Arc<Daemon>, DaemonError> {
        cfg.validate()?;
        let data = cfg.data_dir.clone().unwrap_or_else(|| home.join("provider"));
        let inv = inventory::probe(&data, &cfg.capacity);
        let chain_id = {
            let rpc = rpc.clone();
            tokio::task::spawn_blocking(move || rpc.chain_id())
                .await
                .map_err(|e| DaemonError::Task(e.to_string()))??
        };
        let host = crate::tls::split_uri(&cfg.host_uri())?.0;
        let identity = Identity::load_or_create(&data.join("tls"), &[host, cfg.public_host.clone()])?;
        let docker = cfg.docker_options(!inv.gpus.is_empty(), &data);
        let runtime = Arc::new(match cfg.runtime.as_str() {
            "docker" => AnyRuntime::Docker(DockerRuntime::connect(docker).await?),
            "sandbox" => AnyRuntime::Sandbox(SandboxRuntime::new(cfg.sandbox_options(&data))?),
            _ => match DockerRuntime::connect(docker).await {
                Ok(d) => AnyRuntime::Docker(d),
                Err(e) => {
                    print_line(&format!("{e}; running leases in the sandbox instead"));
                    AnyRuntime::Sandbox(SandboxRuntime::new(cfg.sandbox_options(&data))?)
                }
            },
        });
        print_line(&format!("runtime: {}", runtime.kind()));
        for note in runtime.storage_notes() {
            print_line(&format!("note: {note}"));
        }
        let address = key.address();
        let metrics = Arc::new(Metrics::default());
        let server = Arc::new(
            LeaseServer::new(
                chain_id.clone(),
                address,
                cfg.public_host.clone(),
                Arc::new(RpcChain { rpc: rpc.clone() }),
                runtime.clone(),
                data.join("leases"),
            )
            .with_metrics(metrics.clone()),
        );
        let gpu_attributes = inventory::gpu_attributes(&inv.gpus);
        let d = Arc::new(Daemon {
            gpu_attributes,
            book: Mutex::new(Book::of(Free::of(&inv))),
            cfg,
            rpc,
            key,
            address,
            chain_id,
            runtime,
            server,
            identity,
            metrics,
            grace: Mutex::default(),
            log: print_line,
        });
        Ok(d)
    }

    fn log(&self, s: &str) {
        (self.log)(s)
    }

    /// Runs one blocking request of the node's typed client on the blocking pool.
    async fn node<T, F>(&self, f: F) -> Result<T, DaemonError>
    where
        T: Send + 'static,
        F: FnOnce(&Rpc) -> Result<T, ClientError> + Send + 'static,
    {
        let rpc = self.rpc.clone();
        tokio::task::spawn_blocking(move || f(&rpc))
            .await
            .map_err(|e| DaemonError::Task(e.to_string()))?
            .map_err(DaemonError::Node)
    }

    /// The group an order asks for, as the node has it now.
    async fn order_group(&self, id: OrderId) -> Result<Option<GroupSpec>, DaemonError> {
        Ok(self.node(move |rpc| rpc.order(&id, false)).await?.item.group)
    }

    /// Signs and submits `msgs`, waiting for the block; a failed receipt, or a transaction the
    /// mempool dropped, is an error.
    async fn submit(self: &Arc<Self>, msgs: Vec<Msg>) -> Result<TxResult, DaemonError> {
        let me = self.clone();
        let r = self
            .node(move |rpc| {
                let fee = pazar_client::min_fee(rpc, msgs.len())?;
                let bytes = pazar_client::sign(rpc, &me.chain_id, &me.key, msgs, fee, "pazar provider")?;
                rpc.submit(&bytes, pazar_api::request::SubmitMode::Commit)
            })
            .await?;
        let failed = |reason: String| DaemonError::Tx {
            hash: hex::encode(r.hash),
            reason,
        };
        match &r.state {
            pazar_api::node::TxState::Committed { receipt, .. } if receipt.code != 0 => {
                Err(failed(receipt.log.clone()))
            }
            pazar_api::node::TxState::Dropped { reason } => Err(failed(format!("dropped: {reason}"))),
            pazar_api::node::TxState::Refused { error } => Err(failed(error.message.clone())),
            _ => Ok(r),
        }
    }

    /// Creates the provider on the ledger, or updates it when its URI, key or attributes changed.
    pub async fn register(self: &Arc<Self>) -> Result<(), DaemonError> {
        let mut attributes: Vec<Attribute> = self.cfg.attributes.iter().map(|(k, v)| Attribute::new(k, v)).collect();
        attributes.extend(self.gpu_attributes.iter().cloned());
        attributes.sort();
        attributes.dedup_by(|a, b| a.key == b.key);
        let fp = self.identity.fingerprint();
        let host_uri = self.cfg.host_uri();
        let info = ProviderInfo::default();
        let me = self.address;
        let existing = match self.node(move |rpc| rpc.provider(&me, false)).await {
            Ok(p) => Some(p.item.provider),
            Err(DaemonError::Node(e)) if e.is_not_found() => None,
            Err(e) => return Err(e),
        };
        let msg = match existing {
            None => Msg::CreateProvider {
                host_uri: host_uri.clone(),
                tls_fingerprint: fp,
                attributes,
                info,
            },
            Some(p) => {
                if p.host_uri == host_uri && p.tls_fingerprint == fp && p.attributes == attributes {
                    self.log(&format!("registered as {} at {host_uri}", self.address));
                    return Ok(());
                }
                Msg::UpdateProvider {
                    host_uri: host_uri.clone(),
                    tls_fingerprint: fp,
                    attributes,
                    info,
                }
            }
        };
        self.submit(vec![msg]).await?;
        self.log(&format!(
            "registered {} at {host_uri} (TLS fingerprint {})",
            self.address,
            hex::encode(fp)
        ));
        Ok(())
    }

    /// Brings runtime and book in line with the ledger after a (re)start: leases still active
    /// are adopted, others removed; open bids keep their reservation; open orders are considered.
    pub async fn restore(self: &Arc<Self>) -> Result<(), DaemonError> {
        self.restore_leases().await?;
        self.restore_bids().await
    }

    /// The metrics' exposition now.
    pub fn metrics_text(&self) -> String {
        self.metrics
            .render(crate::server::now_ms(), self.runtime.pulled_bytes())
    }

    /// Binds the tenant endpoint (and the ingress and metrics, when configured), registers,
    /// restores, serves, then follows the chain until the process ends.
    pub async fn run(self: Arc<Self>) -> Result<(), DaemonError> {
        let tcp = tokio::net::TcpListener::bind(&self.cfg.listen)
            .await
            .map_err(|e| DaemonError::Listen {
                addr: self.cfg.listen.clone(),
                reason: e.to_string(),
            })?;
        let listener = TlsListener::new(tcp, self.identity.server_config()?);
        // Every port is taken before anything else, so a taken one stops the daemon at once.
        let bind = |addr: String| async move {
            tokio::net::TcpListener::bind(&addr)
                .await
                .map_err(|e| DaemonError::Listen {
                    addr: addr.clone(),
                    reason: e.to_string(),
                })
        };
        let (mut http_tcp, mut tls_tcp, mut metrics_tcp) = (None, None, None);
        if let Some(ing) = &self.cfg.ingress {
            http_tcp = Some(bind(ing.listen.clone()).await?);
            if let Some(t) = &ing.tls_listen {
                tls_tcp = Some(bind(t.clone()).await?);
            }
        }
        if let Some(m) = &self.cfg.metrics {
            metrics_tcp = Some(bind(m.listen.to_string()).await?);
        }
        // Metrics come first: they show a daemon stuck in registering or restoring.
        if let Some(tcp) = metrics_tcp {
            let addr = tcp.local_addr().map(|a| a.to_string()).unwrap_or_default();
            let me = self.clone();
            tokio::spawn(crate::metrics::serve(tcp, move || me.metrics_text()));
            self.log(&format!("metrics on http://{addr}/metrics"));
        }
        self.register().await?;
        let head = self.node(|rpc| rpc.status()).await?.height;
        // Tenants are answered only once the runtime matches the ledger: a manifest sent while
        // restore still runs would race with it. Connections made meanwhile wait in the backlog.
        self.restore().await?;
        if let (Some(ing), Some(http)) = (&self.cfg.ingress, http_tcp) {
            use pazar_runtime::ingress::{Ingress, Kind};
            let domain = pazar_runtime::ingress::normalize_host(&ing.domain);
            let port = |l: &tokio::net::TcpListener| l.local_addr().map(|a| a.port()).unwrap_or(0);
            let (http_port, tls_port) = (port(&http), tls_tcp.as_ref().map(port));
            self.server.set_ingress(domain.clone(), http_port, tls_port);
            let (server, runtime) = (self.server.clone(), self.runtime.clone());
            tokio::spawn(Ingress::new(Kind::Http, domain.clone(), server.clone(), runtime.clone()).serve(http));
            if let Some(tls) = tls_tcp {
                tokio::spawn(Ingress::new(Kind::Tls, domain.clone(), server, runtime).serve(tls));
            }
            self.log(&format!(
                "ingress for *.{domain}: HTTP on port {http_port}{}",
                tls_port
                    .map(|p| format!(", TLS passthrough on port {p}"))
                    .unwrap_or_default()
            ));
        }
        tokio::spawn(self.server.clone().serve(listener));
        if matches!(self.runtime.as_ref(), AnyRuntime::Docker(d) if d.evicts()) && self.cfg.storage_check_ms > 0 {
            tokio::spawn(self.clone().police_storage());
        }
        self.follow_chain(head + 1).await;
        Ok(())
    }
}
