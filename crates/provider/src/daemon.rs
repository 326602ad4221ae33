//! `pazar provider run`: the provider daemon. It registers (or updates) the provider on the
//! ledger, serves the tenant endpoint over pinned TLS, follows the node's event stream (resuming
//! by height after a disconnect), bids on the orders it can serve at its price list while
//! reserving the capacity, runs leases when their manifest arrives, removes their workloads when
//! they close for any reason, withdraws earnings periodically, and restores its leases after a
//! restart.

use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::mpsc;

use pazar_client::Rpc;
use pazar_types::market::{Attribute, BidId, GroupSpec, OrderId};
use pazar_types::tx::ProviderInfo;
use pazar_types::{Address, Coin, Dec, Msg, Price, SigningKey};

use crate::bidding::{self, Demand, Free, PriceList, ProviderView};
use crate::inventory::{self, Inventory, Overrides};
use crate::server::{LeaseServer, RpcChain};
use crate::tls::{Identity, TlsListener};
use pazar_runtime::docker::{DockerOptions, DockerRuntime};
use pazar_runtime::sandbox::{SandboxOptions, SandboxRuntime};
use pazar_runtime::{AnyRuntime, LeaseRef, Runtime};

/// `provider.toml`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address the TLS endpoint listens on.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// What tenants connect to (recorded on the ledger); default `https://` + `listen`.
    pub host_uri: Option<String>,
    /// Host name or address put in the URIs of running services.
    #[serde(default = "default_public_host")]
    pub public_host: String,
    /// Where the TLS identity and accepted manifests are kept; default `<home>/provider`.
    pub data_dir: Option<PathBuf>,
    /// `docker`, `sandbox`, or `auto` (the default: Docker when its engine answers, the
    /// sandbox otherwise).
    #[serde(default = "default_runtime")]
    pub runtime: String,
    #[serde(default)]
    pub sandbox: SandboxConfig,
    /// HTTP ingress by host name (off without it).
    pub ingress: Option<IngressConfig>,
    /// Deposit locked with each bid, in base units of the order's denomination.
    #[serde(default = "default_bid_deposit")]
    pub bid_deposit: u128,
    /// Withdraw earnings of every lease this often (blocks).
    #[serde(default = "default_withdraw_every")]
    pub withdraw_every_blocks: u64,
    /// Drop what workloads send to this host, and their connections to link-local, cloud
    /// metadata and private addresses (needs root, iptables and ip6tables).
    #[serde(default = "default_true")]
    pub isolate_host: bool,
    /// `[egress]`: private ranges workloads may reach nonetheless.
    #[serde(default)]
    pub egress: EgressConfig,
    /// `[images]`: which local images tenants may run, and the limits of pulls.
    #[serde(default)]
    pub images: ImagesConfig,
    /// How often (milliseconds) the Docker runtime measures replicas' writable layers and
    /// evicts those over their ephemeral storage, where the storage driver cannot cap them.
    #[serde(default = "default_storage_check_ms")]
    pub storage_check_ms: u64,
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
    #[serde(default)]
    pub pricing: PriceList,
    /// An executable that prices orders instead of the price list (as Akash's bid price
    /// script): it gets the order as JSON on stdin and prints the price per block of the whole
    /// group in the order's denomination; a non-zero exit or empty output means no bid.
    pub pricing_script: Option<PathBuf>,
    #[serde(default)]
    pub capacity: Overrides,
    /// Items per page when the daemon reads a list from the node (leases, bids and orders at
    /// restore), at most 1,000 (the node's largest page). Every page is read whatever the size;
    /// small values only make more requests.
    #[serde(default = "default_list_page")]
    pub list_page: usize,
}

fn default_list_page() -> usize {
    1_000
}

fn default_listen() -> String {
    "127.0.0.1:8443".into()
}
fn default_public_host() -> String {
    "127.0.0.1".into()
}
fn default_runtime() -> String {
    "auto".into()
}

/// `[ingress]` in `provider.toml`: one listener that routes HTTP by `Host` to every lease's
/// `as: 80` services.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngressConfig {
    /// Address it listens on for HTTP (services exposed `as: 80`), e.g. `0.0.0.0:80`.
    pub listen: String,
    /// Address it listens on for TLS, passed through by server name to services exposed
    /// `as: 443` (which hold their own certificates), e.g. `0.0.0.0:443`.
    pub tls_listen: Option<String>,
    /// Services are named `<service>-<lease>.<domain>`; point a wildcard DNS record
    /// `*.<domain>` at this machine.
    pub domain: String,
}

/// `[egress]` in `provider.toml`. Workloads reach their own lease's replicas and the public
/// internet; link-local and cloud-metadata addresses, private, shared (CGNAT) and unique-local
/// ranges, and this host itself are refused, except the ranges listed here.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EgressConfig {
    /// Ranges opened to workloads, e.g. `["10.1.2.0/24"]` (an address alone is one host).
    #[serde(default)]
    pub allow: Vec<pazar_runtime::firewall::Cidr>,
}

/// `[images]` in `provider.toml`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImagesConfig {
    /// Images tenants may run from this host's own copies (built here, or pulled by the
    /// operator), e.g. `["pazar-demo:*"]`: `NAME:TAG`, `NAME:*` for every tag. Every other image
    /// is pulled anonymously from its registry at exactly the tag the tenant names.
    #[serde(default)]
    pub allow_local: Vec<pazar_runtime::images::LocalImage>,
    /// Longest a pull may take, in seconds.
    #[serde(default = "default_pull_timeout_s")]
    pub pull_timeout_s: u64,
    /// Largest image a tenant may pull, in bytes as stored on this host.
    #[serde(default = "default_max_image_bytes")]
    pub max_bytes: u64,
}

impl Default for ImagesConfig {
    fn default() -> Self {
        ImagesConfig {
            allow_local: Vec::new(),
            pull_timeout_s: default_pull_timeout_s(),
            max_bytes: default_max_image_bytes(),
        }
    }
}

fn default_pull_timeout_s() -> u64 {
    pazar_runtime::docker::DEFAULT_PULL_TIMEOUT.as_secs()
}
fn default_max_image_bytes() -> u64 {
    pazar_runtime::docker::DEFAULT_MAX_IMAGE_BYTES
}

impl ImagesConfig {
    pub fn policy(&self) -> pazar_runtime::images::ImagePolicy {
        pazar_runtime::images::ImagePolicy {
            allow_local: self.allow_local.clone(),
        }
    }
}

/// `[sandbox]` in `provider.toml`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SandboxConfig {
    /// Lease state, logs and volumes. Default `<data_dir>/sandbox`, or
    /// `/var/lib/pazar/sandbox-<hash of data_dir>` when the sandbox user cannot reach that.
    pub dir: Option<PathBuf>,
    /// The image store (`<name>/rootfs`, `<name>/config.json`); default `<dir>/images`.
    pub images: Option<PathBuf>,
    #[serde(default = "default_nobody")]
    pub uid: u32,
    #[serde(default = "default_nobody")]
    pub gid: u32,
    #[serde(default = "default_bwrap")]
    pub bwrap: PathBuf,
    /// Export images missing from the store from a local Docker engine.
    #[serde(default = "default_true")]
    pub docker_images: bool,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        SandboxConfig {
            dir: None,
            images: None,
            uid: default_nobody(),
            gid: default_nobody(),
            bwrap: default_bwrap(),
            docker_images: true,
        }
    }
}

fn default_nobody() -> u32 {
    65534
}
fn default_bwrap() -> PathBuf {
    PathBuf::from("bwrap")
}

impl SandboxConfig {
    /// The runtime's options for a daemon whose data directory is `data`.
    pub fn options(&self, data: &Path) -> SandboxOptions {
        let dir = self.dir.clone().unwrap_or_else(|| {
            let own = data.join("sandbox");
            if pazar_runtime::sandbox::blocking_ancestor(&own, self.uid).is_none() {
                own
            } else {
                let h = <sha2::Sha256 as sha2::Digest>::digest(data.to_string_lossy().as_bytes());
                PathBuf::from(format!("/var/lib/pazar/sandbox-{}", hex::encode(&h[..6])))
            }
        });
        let mut o = SandboxOptions::new(dir);
        if let Some(i) = &self.images {
            o.images = i.clone();
        }
        o.uid = self.uid;
        o.gid = self.gid;
        o.bwrap = self.bwrap.clone();
        o.docker_images = self.docker_images;
        o
    }
}

fn default_bid_deposit() -> u128 {
    500_000
}
fn default_withdraw_every() -> u64 {
    20
}
fn default_true() -> bool {
    true
}
fn default_storage_check_ms() -> u64 {
    5_000
}

impl Config {
    pub fn read(path: &Path) -> Result<Config, DaemonError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| DaemonError::Config(format!("cannot read {}: {e}", path.display())))?;
        toml::from_str(&text).map_err(|e| DaemonError::Config(format!("{}: {e}", path.display())))
    }

    /// The Docker runtime's options for a daemon whose data directory is `data`.
    pub fn docker_options(&self, gpus: bool, data: &Path) -> DockerOptions {
        DockerOptions {
            gpus,
            isolate_host: self.isolate_host,
            egress: pazar_runtime::firewall::EgressPolicy::with_host_resolvers(self.egress.allow.clone()),
            images: self.images.policy(),
            pull_timeout: Duration::from_secs(self.images.pull_timeout_s),
            max_image_bytes: self.images.max_bytes,
            state_dir: Some(data.join("docker")),
        }
    }

    /// The sandbox runtime's options for a daemon whose data directory is `data`.
    pub fn sandbox_options(&self, data: &Path) -> SandboxOptions {
        let mut o = self.sandbox.options(data);
        o.local_images = self.images.policy();
        o
    }

    pub fn host_uri(&self) -> String {
        self.host_uri
            .clone()
            .unwrap_or_else(|| format!("https://{}", self.listen))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("provider configuration: {0}")]
    Config(String),
    #[error("node: {0}")]
    Node(String),
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    #[error(transparent)]
    Runtime(#[from] pazar_runtime::RuntimeError),
    #[error("cannot serve the tenant endpoint on {addr}: {reason}")]
    Listen { addr: String, reason: String },
}

fn node_err(e: impl std::fmt::Display) -> DaemonError {
    DaemonError::Node(e.to_string())
}

/// Capacity promised to open bids and active leases.
#[derive(Default)]
struct Book {
    free: Free,
    bids: BTreeMap<OrderId, Demand>,
    leases: BTreeMap<BidId, Demand>,
}

impl Book {
    fn reserve(&mut self, order: OrderId, d: Demand) {
        self.free.take(&d);
        self.bids.insert(order, d);
    }

    fn bid_ended(&mut self, order: &OrderId) {
        if let Some(d) = self.bids.remove(order) {
            self.free.give_back(&d);
        }
    }

    fn leased(&mut self, id: &BidId) {
        if let Some(d) = self.bids.remove(&id.order()) {
            self.leases.insert(id.clone(), d);
        }
    }

    fn lease_ended(&mut self, id: &BidId) {
        if let Some(d) = self.leases.remove(id) {
            self.free.give_back(&d);
        }
    }
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
    /// Printed progress (one line per action) for the operator.
    log: fn(&str),
}

fn print_line(s: &str) {
    eprintln!("provider: {s}");
}

/// What `pazar provider inventory` prints.
pub fn inventory(cfg: &Config, home: &Path) -> Inventory {
    let data = cfg.data_dir.clone().unwrap_or_else(|| home.join("provider"));
    inventory::probe(&data, &cfg.capacity)
}

impl Daemon {
    pub async fn start(cfg: Config, home: &Path, rpc: Rpc, key: SigningKey) -> Result<Arc<Daemon>, DaemonError> {
        if !(1..=1_000).contains(&cfg.list_page) {
            return Err(DaemonError::Config(format!(
                "list_page is {}; it must be 1 to 1000",
                cfg.list_page
            )));
        }
        if !["docker", "sandbox", "auto"].contains(&cfg.runtime.as_str()) {
            return Err(DaemonError::Config(format!(
                "runtime {:?} is not known (use \"docker\", \"sandbox\" or \"auto\")",
                cfg.runtime
            )));
        }
        if let Some(ing) = &cfg.ingress {
            if !pazar_runtime::ingress::is_dns_name(&pazar_runtime::ingress::normalize_host(&ing.domain)) {
                return Err(DaemonError::Config(format!(
                    "ingress domain {:?} is not a DNS name (labels of letters, digits and inner hyphens)",
                    ing.domain
                )));
            }
        }
        let data = cfg.data_dir.clone().unwrap_or_else(|| home.join("provider"));
        let inv = inventory::probe(&data, &cfg.capacity);
        let chain_id = rpc.chain_id().map_err(node_err)?;
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
        let server = Arc::new(LeaseServer::new(
            chain_id.clone(),
            address,
            cfg.public_host.clone(),
            Arc::new(RpcChain { rpc: rpc.clone() }),
            runtime.clone(),
            data.join("leases"),
        ));
        let gpu_attributes = inventory::gpu_attributes(&inv.gpus);
        let d = Arc::new(Daemon {
            gpu_attributes,
            book: Mutex::new(Book {
                free: Free::of(&inv),
                ..Book::default()
            }),
            cfg,
            rpc,
            key,
            address,
            chain_id,
            runtime,
            server,
            identity,
            log: print_line,
        });
        Ok(d)
    }

    fn log(&self, s: &str) {
        (self.log)(s)
    }

    /// Signs and submits `msgs`, waiting for the block; the receipt's failure is an error.
    async fn submit(self: &Arc<Self>, msgs: Vec<Msg>) -> Result<Value, DaemonError> {
        let me = self.clone();
        tokio::task::spawn_blocking(move || {
            let fee = pazar_client::min_fee(&me.rpc, msgs.len()).map_err(node_err)?;
            let bytes =
                pazar_client::sign(&me.rpc, &me.chain_id, &me.key, msgs, fee, "pazar provider").map_err(node_err)?;
            let r = me
                .rpc
                .submit(&bytes, pazar_api::request::SubmitMode::Commit)
                .map_err(node_err)?;
            if let pazar_api::node::TxState::Committed { receipt, .. } = &r.state {
                if receipt.code != 0 {
                    return Err(DaemonError::Node(format!("transaction failed: {}", receipt.log)));
                }
            }
            serde_json::to_value(&r).map_err(node_err)
        })
        .await
        .map_err(node_err)?
    }

    /// Every item of a paged list query, all pages read (`field` names the answer's list).
    async fn list(self: &Arc<Self>, path: String, field: &'static str) -> Result<Vec<Value>, DaemonError> {
        let rpc = self.rpc.clone();
        let sep = if path.contains('?') { '&' } else { '?' };
        let path = format!("{path}{sep}limit={}", self.cfg.list_page);
        tokio::task::spawn_blocking(move || rpc.list_all_json(&path, field))
            .await
            .map_err(node_err)?
            .map_err(node_err)
    }

    async fn get(self: &Arc<Self>, path: String) -> Result<Value, DaemonError> {
        let rpc = self.rpc.clone();
        tokio::task::spawn_blocking(move || rpc.get(&path))
            .await
            .map_err(node_err)?
            .map_err(node_err)
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
        let existing = match self.get(format!("/providers/{}", self.address)).await {
            Ok(v) => Some(v),
            Err(DaemonError::Node(m)) if m.contains("not_found") || m.contains("404") || m.contains("no provider") => {
                None
            }
            Err(e) => return Err(e),
        };
        let msg = match existing {
            None => Msg::CreateProvider {
                host_uri: host_uri.clone(),
                tls_fingerprint: fp,
                attributes,
                info,
            },
            Some(v) => {
                let same = v["provider"]["host_uri"] == host_uri.as_str()
                    && v["provider"]["tls_fingerprint"] == hex::encode(fp)
                    && serde_json::to_value(&attributes).ok().as_ref() == Some(&v["provider"]["attributes"]);
                if same {
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

    /// The provider as bid matching sees it: its attributes and the audits of it.
    async fn view(self: &Arc<Self>) -> ProviderView {
        let mut v = ProviderView {
            address: Some(self.address),
            ..ProviderView::default()
        };
        if let Ok(p) = self.get(format!("/providers/{}", self.address)).await {
            v.attributes = serde_json::from_value(p["provider"]["attributes"].clone()).unwrap_or_default();
            if let Some(audits) = p["audits"].as_array() {
                for a in audits {
                    if let (Some(aud), Ok(attrs)) = (
                        a["auditor"].as_str().and_then(|s| s.parse::<Address>().ok()),
                        serde_json::from_value::<Vec<Attribute>>(a["attributes"].clone()),
                    ) {
                        v.audits.insert(aud, attrs);
                    }
                }
            }
        }
        v
    }

    /// Considers one open order: bids when it matches, logging why not otherwise.
    async fn consider(self: &Arc<Self>, order: OrderId, group: GroupSpec) {
        if self.book.lock().map(|b| b.bids.contains_key(&order)).unwrap_or(true) {
            return;
        }
        let view = self.view().await;
        let decision = {
            let b = match self.book.lock() {
                Ok(b) => b,
                Err(_) => return,
            };
            match &self.cfg.pricing_script {
                None => bidding::evaluate(&group, &view, &b.free, &self.cfg.pricing).map(|(p, d)| (Some(p), d)),
                Some(_) => bidding::check_requirements(&group, &view)
                    .and_then(|()| bidding::reserve(&group, &b.free))
                    .map(|d| (None, d)),
            }
        };
        let (listed, demand) = match decision {
            Ok(x) => x,
            Err(why) => {
                self.log(&format!("no bid on {order}: {why}"));
                return;
            }
        };
        let price = match (listed, &self.cfg.pricing_script) {
            (Some(p), _) => p,
            (None, None) => return,
            (None, Some(script)) => {
                let input = serde_json::json!({"order": order, "group": group, "demand": demand});
                let script = script.clone();
                let priced = tokio::task::spawn_blocking(move || run_pricing_script(&script, &input))
                    .await
                    .map_err(|e| e.to_string())
                    .and_then(|r| r)
                    .and_then(|amount| {
                        let ceiling = group.max_price().ok_or("the order's prices overflow")?;
                        if amount.is_zero() || amount > ceiling.amount {
                            return Err(format!(
                                "the pricing script asks {amount} {}; the order's ceiling is {}",
                                ceiling.denom, ceiling.amount
                            ));
                        }
                        Ok(Price {
                            denom: ceiling.denom,
                            amount,
                        })
                    });
                match priced {
                    Ok(p) => p,
                    Err(why) => {
                        self.log(&format!("no bid on {order}: {why}"));
                        return;
                    }
                }
            }
        };
        if let Ok(mut b) = self.book.lock() {
            b.reserve(order.clone(), demand);
        }
        let deposit = Coin::new(self.cfg.bid_deposit, price.denom.clone());
        match self
            .submit(vec![Msg::CreateBid {
                order: order.clone(),
                price: price.clone(),
                deposit,
            }])
            .await
        {
            Ok(_) => self.log(&format!("bid {} {} per block on {order}", price.amount, price.denom)),
            Err(e) => {
                self.log(&format!("bid on {order} failed: {e}"));
                if let Ok(mut b) = self.book.lock() {
                    b.bid_ended(&order);
                }
            }
        }
    }

    /// Brings runtime and book in line with the ledger after a (re)start: leases still active
    /// are adopted, others removed; open bids keep their reservation; open orders are considered.
    pub async fn restore(self: &Arc<Self>) -> Result<(), DaemonError> {
        // Every page: a lease missing from the list would have its workload removed below.
        let mine = self
            .list(format!("/leases?provider={}&state=active", self.address), "leases")
            .await?;
        let mut active = BTreeMap::new();
        for l in &mine {
            if let Ok(id) = serde_json::from_value::<BidId>(l["id"].clone()) {
                active.insert(LeaseRef::new(id.clone()).name(), id);
            }
        }
        let (accepted, unreadable) = self.server.accepted_files();
        for why in unreadable {
            // Not run: a stored manifest is held to the rules of a received one.
            self.log(&format!("ignored a stored manifest that fails the checks: {why}"));
        }
        for acc in accepted {
            let lease = LeaseRef::new(acc.lease.clone());
            if active.contains_key(&lease.name()) {
                // A lease that cannot run (its image vanished, say) is reported, not fatal.
                if let Err(e) = self.runtime.deploy(&lease, &acc.group).await {
                    self.log(&format!("cannot restore lease {}: {e}", lease.label()));
                    continue;
                }
                if let Ok(orders) = self
                    .get(format!(
                        "/orders/{}/{}/{}/{}",
                        acc.lease.owner, acc.lease.dseq, acc.lease.gseq, acc.lease.oseq
                    ))
                    .await
                {
                    if let Ok(spec) = serde_json::from_value::<GroupSpec>(orders["group"].clone()) {
                        if let Ok(mut b) = self.book.lock() {
                            if let Ok(d) = bidding::reserve(&spec, &b.free) {
                                b.free.take(&d);
                                b.leases.insert(acc.lease.clone(), d);
                            }
                        }
                    }
                }
                self.log(&format!("restored lease {}", lease.label()));
            } else {
                self.server.close_lease(&acc.lease).await?;
                self.log(&format!("removed workload of ended lease {}", lease.label()));
            }
        }
        // Only this provider's workloads: other providers may share the engine.
        for (name, label) in self.runtime.leases().await? {
            if let Ok(id) = label.parse::<BidId>() {
                if id.provider == self.address && !active.contains_key(&name) {
                    self.server.close_lease(&id).await?;
                    self.log(&format!("removed orphaned workload {label}"));
                }
            }
        }
        if self.cfg.isolate_host {
            let n = self.runtime.sweep_firewall().await?;
            if n > 0 {
                self.log(&format!("removed {n} stale isolation rule(s)"));
            }
        }
        let bids = self
            .list(format!("/bids?provider={}&state=open", self.address), "bids")
            .await?;
        for b in &bids {
            if let Ok(id) = serde_json::from_value::<BidId>(b["id"].clone()) {
                if let Ok(o) = self
                    .get(format!("/orders/{}/{}/{}/{}", id.owner, id.dseq, id.gseq, id.oseq))
                    .await
                {
                    if let Ok(spec) = serde_json::from_value::<GroupSpec>(o["group"].clone()) {
                        if let Ok(mut book) = self.book.lock() {
                            if let Ok(d) = bidding::reserve(&spec, &book.free) {
                                book.reserve(id.order(), d);
                            }
                        }
                    }
                }
            }
        }
        let open = self.list("/orders?state=open".into(), "orders").await?;
        for o in &open {
            if let (Ok(id), Ok(spec)) = (
                serde_json::from_value::<OrderId>(o["id"].clone()),
                serde_json::from_value::<GroupSpec>(o["group"].clone()),
            ) {
                self.consider(id, spec).await;
            }
        }
        Ok(())
    }

    async fn on_event(self: &Arc<Self>, ev: &Value) {
        let mine = |v: &Value| v["provider"].as_str() == Some(self.address.to_string().as_str());
        match ev["type"].as_str().unwrap_or("") {
            "order_created" => {
                let Ok(id) = serde_json::from_value::<OrderId>(ev["id"].clone()) else {
                    return;
                };
                let Ok(o) = self
                    .get(format!("/orders/{}/{}/{}/{}", id.owner, id.dseq, id.gseq, id.oseq))
                    .await
                else {
                    return;
                };
                if let Ok(spec) = serde_json::from_value::<GroupSpec>(o["group"].clone()) {
                    self.consider(id, spec).await;
                }
            }
            "bid_closed" if mine(&ev["id"]) => {
                if let Ok(id) = serde_json::from_value::<BidId>(ev["id"].clone()) {
                    if let Ok(mut b) = self.book.lock() {
                        b.bid_ended(&id.order());
                    }
                }
            }
            "lease_created" if mine(&ev["id"]) => {
                if let Ok(id) = serde_json::from_value::<BidId>(ev["id"].clone()) {
                    if let Ok(mut b) = self.book.lock() {
                        b.leased(&id);
                    }
                    self.log(&format!("won lease {id}; waiting for its manifest"));
                }
            }
            "lease_closed" if mine(&ev["id"]) => {
                if let Ok(id) = serde_json::from_value::<BidId>(ev["id"].clone()) {
                    // Under the lease's lock: a manifest being deployed right now finishes first
                    // and is removed here; one that comes later finds the lease closed.
                    match self.server.close_lease(&id).await {
                        Ok(()) => self.log(&format!(
                            "lease {id} closed ({}): workload removed",
                            ev["reason"].as_str().unwrap_or("")
                        )),
                        Err(e) => self.log(&format!("lease {id} closed but removing its workload failed: {e}")),
                    }
                    if let Ok(mut b) = self.book.lock() {
                        b.lease_ended(&id);
                    }
                }
            }
            _ => {}
        }
    }

    async fn withdraw_all(self: &Arc<Self>) {
        let ids: Vec<BidId> = self
            .book
            .lock()
            .map(|b| b.leases.keys().cloned().collect())
            .unwrap_or_default();
        if ids.is_empty() {
            return;
        }
        let msgs = ids.iter().map(|id| Msg::WithdrawLease { lease: id.clone() }).collect();
        match self.submit(msgs).await {
            Ok(_) => self.log(&format!("withdrew earnings of {} lease(s)", ids.len())),
            Err(e) => self.log(&format!("withdrawal failed: {e}")),
        }
    }

    /// Every `storage_check_ms`, evicts the Docker replicas that outgrew their ephemeral storage.
    async fn police_storage(self: Arc<Self>) {
        let AnyRuntime::Docker(docker) = self.runtime.as_ref() else {
            return;
        };
        let mut tick = tokio::time::interval(std::time::Duration::from_millis(self.cfg.storage_check_ms));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let leases: Vec<_> = self
                .server
                .all_accepted()
                .into_iter()
                .map(|a| (LeaseRef::new(a.lease), a.group))
                .collect();
            match docker.evict_over_storage(&leases).await {
                Ok(evicted) => {
                    for e in evicted {
                        self.log(&format!(
                            "lease {} service {:?} replica {} {}",
                            e.lease,
                            e.service,
                            e.replica,
                            e.reason()
                        ));
                    }
                }
                Err(e) => self.log(&format!("cannot check the storage of leases: {e}")),
            }
        }
    }

    /// Binds the tenant endpoint, registers, restores, serves, then follows the chain until the
    /// process ends.
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
        let (mut http_tcp, mut tls_tcp) = (None, None);
        if let Some(ing) = &self.cfg.ingress {
            http_tcp = Some(bind(ing.listen.clone()).await?);
            if let Some(t) = &ing.tls_listen {
                tls_tcp = Some(bind(t.clone()).await?);
            }
        }
        self.register().await?;
        let head = self.get("/status".into()).await?["height"].as_u64().unwrap_or(0);
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
        self.log(&format!("following the chain from height {}", head + 1));
        let mut rx = follow(self.rpc.base().to_string(), head + 1);
        while let Some(block) = rx.recv().await {
            let height = block["height"].as_u64().unwrap_or(0);
            for r in block["receipts"].as_array().into_iter().flatten() {
                for ev in r["events"].as_array().into_iter().flatten() {
                    self.on_event(ev).await;
                }
            }
            for ev in block["end_block_events"].as_array().into_iter().flatten() {
                self.on_event(ev).await;
            }
            if self.cfg.withdraw_every_blocks > 0 && height % self.cfg.withdraw_every_blocks == 0 {
                self.withdraw_all().await;
            }
        }
        Ok(())
    }
}

/// Runs the pricing script with `input` on stdin (5 s at most) and reads a decimal price.
fn run_pricing_script(script: &Path, input: &Value) -> Result<Dec, String> {
    use std::io::{Read, Write};
    let mut child = std::process::Command::new(script)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot run the pricing script {}: {e}", script.display()))?;
    if let Some(mut stdin) = child.stdin.take() {
        // From a thread: a script that does not read its input must not block us.
        let bytes = input.to_string().into_bytes();
        std::thread::spawn(move || {
            let _ = stdin.write_all(&bytes);
        });
    }
    let t0 = std::time::Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) if t0.elapsed() > Duration::from_secs(5) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err("the pricing script ran longer than 5 s".into());
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => return Err(format!("pricing script: {e}")),
        }
    };
    let mut out = String::new();
    if let Some(o) = child.stdout.take() {
        let _ = o.take(1024).read_to_string(&mut out);
    }
    if !status.success() {
        return Err(format!("the pricing script declined ({status})"));
    }
    out.trim()
        .parse::<Dec>()
        .map_err(|_| format!("the pricing script printed {:?}, not a decimal price", out.trim()))
}

/// Follows `/events` from height `from` on a thread, reconnecting after any failure and
/// resuming after the last block delivered; blocks arrive in order, each once.
pub fn follow(base: String, from: u64) -> mpsc::Receiver<Value> {
    let (tx, rx) = mpsc::channel(256);
    std::thread::spawn(move || {
        let mut next = from;
        let agent: ureq::Agent = ureq::Agent::config_builder().timeout_global(None).build().into();
        loop {
            let url = format!("{base}/events?from={next}");
            if let Ok(resp) = agent.get(&url).call() {
                let reader = std::io::BufReader::new(resp.into_body().into_reader());
                let mut event = String::new();
                for line in reader.lines() {
                    let Ok(line) = line else { break };
                    if let Some(e) = line.strip_prefix("event:") {
                        event = e.trim().to_string();
                    } else if let Some(data) = line.strip_prefix("data:") {
                        if event == "block" {
                            if let Ok(v) = serde_json::from_str::<Value>(data.trim()) {
                                let h = v["height"].as_u64().unwrap_or(0);
                                if h >= next {
                                    next = h + 1;
                                    if tx.blocking_send(v).is_err() {
                                        return;
                                    }
                                }
                            }
                        } else if event == "lagged" {
                            break;
                        }
                    }
                }
            }
            if tx.is_closed() {
                return;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    });
    rx
}

#[cfg(test)]
mod tests {
    use super::Config;

    #[test]
    fn egress_ranges_and_local_images_are_checked_when_the_config_is_read() {
        let parse = |t: &str| toml::from_str::<Config>(t).map_err(|e| e.to_string());
        let cfg =
            parse("[egress]\nallow = [\"10.1.2.0/24\", \"fd00::1\"]\n[images]\nallow_local = [\"pazar-demo:*\"]\n")
                .expect("valid");
        assert_eq!(cfg.egress.allow[1].to_string(), "fd00::1/128");
        assert!(cfg
            .images
            .policy()
            .allows_local(&pazar_runtime::images::ImageRef::parse("pazar-demo:1").expect("ref")));
        let none = parse("").expect("defaults");
        assert!(
            none.egress.allow.is_empty() && none.images.allow_local.is_empty(),
            "nothing opened by default"
        );
        for (bad, says) in [
            ("[egress]\nallow = [\"10.1.2.3/24\"]\n", "starts at 10.1.2.0"),
            ("[egress]\nallow = [\"10.0.0.0/8 -j ACCEPT\"]\n", "not an address range"),
            ("[images]\nallow_local = [\"Bad Name\"]\n", "allow_local entry"),
            ("[images]\nallowed = []\n", "unknown field"),
        ] {
            let err = parse(bad).expect_err(bad);
            assert!(err.contains(says), "{bad}: {err}");
        }
    }

    /// README's `provider.toml`, with its commented-out settings switched on, is a valid
    /// configuration: the documentation cannot drift from the parser.
    #[test]
    fn the_provider_toml_in_the_readme_parses_with_every_option_on() {
        let readme = include_str!("../../../README.md");
        let start = readme.find("<<'TOML'\n").expect("README has a provider.toml") + "<<'TOML'\n".len();
        let end = start + readme[start..].find("\nTOML\n").expect("the block ends");
        let text: String = readme[start..end]
            .lines()
            .map(|l| match l.strip_prefix("# ") {
                Some(rest) if rest.starts_with('[') || rest.starts_with(|c: char| c.is_ascii_lowercase()) => rest,
                _ => l,
            })
            .map(|l| format!("{l}\n"))
            .collect();
        let cfg: Config = toml::from_str(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(cfg.runtime, "sandbox");
        assert_eq!(cfg.storage_check_ms, 5000);
        assert!(cfg.pricing_script.is_some());
        let ingress = cfg.ingress.expect("[ingress]");
        assert_eq!(ingress.listen, "0.0.0.0:80");
        assert_eq!(ingress.tls_listen.as_deref(), Some("0.0.0.0:443"));
        assert_eq!(cfg.sandbox.uid, 65534);
        assert_eq!(cfg.egress.allow.len(), 2);
        assert_eq!(cfg.images.allow_local.len(), 1);
        assert_eq!((cfg.images.pull_timeout_s, cfg.images.max_bytes), (600, 20 << 30));
    }
}
