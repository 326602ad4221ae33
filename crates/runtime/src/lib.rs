//! Where workloads run. One trait, several backends: Docker through its Engine API (default
//! where Docker is present) and sandboxed processes (bubblewrap, cgroups, a network namespace
//! per lease) for hosts without it; Kubernetes later. Around them: size-bounded volumes
//! ([`loopfs`]), the egress firewall ([`firewall`]), images ([`images`], [`demo_image`]) and
//! the ingress by host name ([`ingress`]).
//!
//! A runtime takes a lease's [`LeaseRef`] and a [`ValidGroup`] and nothing else: it knows
//! nothing of the chain, bids, prices or the node client. Whoever holds it (the provider
//! daemon, a training worker) decides what runs and tells it.

pub mod cgroup;
pub mod demo_image;
pub mod docker;
mod files;
pub mod firewall;
pub mod images;
pub mod ingress;
pub mod loopfs;
pub mod netns;
pub mod sandbox;

use std::future::Future;
use std::pin::Pin;

use futures_util::Stream;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use pazar_api::manifest::Proto;
use pazar_api::manifest::ValidGroup;
use pazar_types::market::BidId;

/// A lease's handle in a runtime: a name derived from its whole id, safe for container,
/// network and volume names, plus the id itself in labels.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct LeaseRef {
    pub id: BidId,
}

impl LeaseRef {
    pub fn new(id: BidId) -> LeaseRef {
        LeaseRef { id }
    }

    /// `pz-` and the 64 hex digits of the SHA-256 of the lease id: the name of everything a
    /// runtime keeps for the lease. The whole digest, because a tenant chooses its dseq and
    /// could grind a shorter one into another tenant's name.
    pub fn name(&self) -> String {
        let text = self.label();
        let h = Sha256::digest(text.as_bytes());
        format!("pz-{}", hex_prefix(&h, 32))
    }

    /// `pz-` and the first 12 hex digits of the same digest, for the one name a kernel limit
    /// keeps short (a bridge interface: 15 bytes). Two leases may share it, so whoever uses it
    /// checks the full lease id of the object that holds it.
    pub fn short_name(&self) -> String {
        self.name()[..15].to_string()
    }

    /// `OWNER/DSEQ/GSEQ/OSEQ/PROVIDER`, the id as people and the CLI write it.
    pub fn label(&self) -> String {
        let i = &self.id;
        format!("{}/{}/{}/{}/{}", i.owner, i.dseq, i.gseq, i.oseq, i.provider)
    }
}

/// A service's ephemeral storage: its volumes that are neither mounted nor persistent (what the
/// container's own writable layer, or the sandbox's `/tmp`, may hold). `None` if it asks none.
pub fn ephemeral_bytes(svc: &pazar_api::manifest::Service) -> Option<u64> {
    let n: u64 = svc
        .resources
        .storage
        .iter()
        .filter(|v| !v.persistent() && !svc.storage.iter().any(|m| m.name == v.name))
        .map(|v| v.bytes)
        .sum();
    (n > 0).then_some(n)
}

/// The leased volume `name` of a service.
pub fn volume<'a>(svc: &'a pazar_api::manifest::Service, name: &str) -> Option<&'a pazar_types::market::StorageVolume> {
    svc.resources.storage.iter().find(|v| v.name == name)
}

/// Whether the service's volume `name` is `class: ram` (a sized tmpfs, not a disk).
pub fn is_ram(svc: &pazar_api::manifest::Service, name: &str) -> bool {
    volume(svc, name).is_some_and(|v| v.class() == Some("ram"))
}

fn hex_prefix(bytes: &[u8], n: usize) -> String {
    bytes.iter().take(n).map(|b| format!("{b:02x}")).collect()
}

/// Where one exposed port of one replica can be reached.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Forward {
    pub port: u16,
    pub proto: Proto,
    pub host_port: u16,
    /// Replica index.
    pub replica: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceStatus {
    pub name: String,
    /// Replicas asked for.
    pub replicas: u32,
    /// Replicas running now.
    pub running: u32,
    /// Restarts summed over replicas (kept across restarts: containers are restarted in place).
    pub restarts: u64,
    /// `running`, `starting`, `restarting`, `exited`, or `missing`.
    pub state: String,
    pub forwards: Vec<Forward>,
    /// The last exit code or error, when a replica is not running.
    pub last_error: Option<String>,
    /// Replicas evicted (removed and started afresh) for writing more than their ephemeral
    /// storage, where the runtime cannot cap it outright; summed over replicas.
    #[serde(default)]
    pub evictions: u64,
    /// Why the last eviction happened.
    #[serde(default)]
    pub last_eviction: Option<String>,
    /// The image pull under way for this service (state `pulling`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull: Option<PullProgress>,
}

/// How far an image pull has come, as the registry announced its layers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PullProgress {
    pub image: String,
    /// Bytes downloaded so far.
    pub bytes: u64,
    /// Bytes of the layers whose size is known so far (layers already on the host excluded).
    pub total: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseStatus {
    pub lease: String,
    pub services: Vec<ServiceStatus>,
}

impl LeaseStatus {
    pub fn all_running(&self) -> bool {
        !self.services.is_empty() && self.services.iter().all(|s| s.running == s.replicas)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLine {
    pub service: String,
    pub replica: u32,
    /// `stdout` or `stderr`, or `output` where the runtime keeps both in one file (sandbox).
    pub stream: String,
    pub line: String,
}

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("image {image:?} is not available on this provider: {reason}")]
    Image { image: String, reason: String },
    #[error("lease {0} is not running here")]
    UnknownLease(String),
    #[error("service {0:?} is not part of this lease")]
    UnknownService(String),
    #[error("the runtime refused: {0}")]
    Backend(String),
}

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;
pub type LogStream = Pin<Box<dyn Stream<Item = Result<LogLine, RuntimeError>> + Send>>;

/// A backend that runs the services of leased groups.
pub trait Runtime: Send + Sync {
    /// Starts (or, after a daemon restart, adopts) every service replica of `group` for `lease`.
    /// Idempotent: what already exists is kept. The group is a [`ValidGroup`]: only a manifest
    /// that passed the parser (names, paths, images, bounds) reaches a runtime, and the server
    /// has checked it against the lease.
    fn deploy<'a>(&'a self, lease: &'a LeaseRef, group: &'a ValidGroup) -> BoxFuture<'a, Result<(), RuntimeError>>;
    fn status<'a>(
        &'a self,
        lease: &'a LeaseRef,
        group: &'a ValidGroup,
    ) -> BoxFuture<'a, Result<LeaseStatus, RuntimeError>>;
    /// Log lines of every replica (or one service's), the last `tail`, then new ones while
    /// `follow`.
    fn logs<'a>(
        &'a self,
        lease: &'a LeaseRef,
        service: Option<&'a str>,
        tail: usize,
        follow: bool,
    ) -> BoxFuture<'a, Result<LogStream, RuntimeError>>;
    /// Removes everything of the lease: replicas, its network and its volumes.
    fn close<'a>(&'a self, lease: &'a LeaseRef) -> BoxFuture<'a, Result<(), RuntimeError>>;
    /// Names ([`LeaseRef::name`]) and labels of the leases with anything in this runtime.
    fn leases(&self) -> BoxFuture<'_, Result<Vec<(String, String)>, RuntimeError>>;
    /// A TCP connection from this host to `port` of one replica of a service (the ingress's
    /// way in; it needs no host port).
    fn dial<'a>(
        &'a self,
        lease: &'a LeaseRef,
        service: &'a str,
        replica: u32,
        port: u16,
    ) -> BoxFuture<'a, Result<tokio::net::TcpStream, RuntimeError>>;
}

/// The backend a daemon was configured with.
pub enum AnyRuntime {
    Docker(docker::DockerRuntime),
    Sandbox(sandbox::SandboxRuntime),
}

impl AnyRuntime {
    fn inner(&self) -> &dyn Runtime {
        match self {
            AnyRuntime::Docker(d) => d,
            AnyRuntime::Sandbox(s) => s,
        }
    }

    /// `docker` or `sandbox`.
    pub fn kind(&self) -> &'static str {
        match self {
            AnyRuntime::Docker(_) => "docker",
            AnyRuntime::Sandbox(_) => "sandbox",
        }
    }

    /// How storage is bounded where it is not capped outright, for the operator.
    pub fn storage_notes(&self) -> Vec<String> {
        match self {
            AnyRuntime::Docker(d) => d.storage_notes(),
            AnyRuntime::Sandbox(s) => s.storage_notes(),
        }
    }

    /// Removes isolation rules left by leases that are gone (Docker only: a sandboxed lease's
    /// isolation is its own namespace, which goes with it). Returns how many.
    pub async fn sweep_firewall(&self) -> Result<usize, RuntimeError> {
        match self {
            AnyRuntime::Docker(d) => d.sweep_firewall().await,
            AnyRuntime::Sandbox(_) => Ok(0),
        }
    }
}

impl Runtime for AnyRuntime {
    fn deploy<'a>(&'a self, lease: &'a LeaseRef, group: &'a ValidGroup) -> BoxFuture<'a, Result<(), RuntimeError>> {
        self.inner().deploy(lease, group)
    }

    fn status<'a>(
        &'a self,
        lease: &'a LeaseRef,
        group: &'a ValidGroup,
    ) -> BoxFuture<'a, Result<LeaseStatus, RuntimeError>> {
        self.inner().status(lease, group)
    }

    fn logs<'a>(
        &'a self,
        lease: &'a LeaseRef,
        service: Option<&'a str>,
        tail: usize,
        follow: bool,
    ) -> BoxFuture<'a, Result<LogStream, RuntimeError>> {
        self.inner().logs(lease, service, tail, follow)
    }

    fn close<'a>(&'a self, lease: &'a LeaseRef) -> BoxFuture<'a, Result<(), RuntimeError>> {
        self.inner().close(lease)
    }

    fn leases(&self) -> BoxFuture<'_, Result<Vec<(String, String)>, RuntimeError>> {
        self.inner().leases()
    }

    fn dial<'a>(
        &'a self,
        lease: &'a LeaseRef,
        service: &'a str,
        replica: u32,
        port: u16,
    ) -> BoxFuture<'a, Result<tokio::net::TcpStream, RuntimeError>> {
        self.inner().dial(lease, service, replica, port)
    }
}
