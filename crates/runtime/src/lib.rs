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
pub mod firewall;
pub mod images;
pub mod ingress;
pub mod loopfs;
pub mod netns;
pub mod rollout;
pub mod sandbox;
pub mod snapshot;

use std::future::Future;
use std::pin::Pin;

use futures_util::Stream;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use pazar_api::manifest::ValidGroup;
use pazar_api::provider::{LogLine, ServiceStatus};
use pazar_types::market::BidId;
use pazar_types::Hash32;

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

/// The persistent volumes (not `ram`) a service mounts: each mount's volume name and the bytes
/// leased for it.
pub fn persistent_mounts(svc: &pazar_api::manifest::Service) -> impl Iterator<Item = (&str, u64)> + '_ {
    svc.storage
        .iter()
        .filter(move |m| !is_ram(svc, &m.name))
        .map(move |m| (m.name.as_str(), volume(svc, &m.name).map_or(0, |v| v.bytes)))
}

/// Whether the service's volume `name` is `class: ram` (a sized tmpfs, not a disk).
pub fn is_ram(svc: &pazar_api::manifest::Service, name: &str) -> bool {
    volume(svc, name).is_some_and(|v| v.class() == Some("ram"))
}

fn hex_prefix(bytes: &[u8], n: usize) -> String {
    bytes.iter().take(n).map(|b| format!("{b:02x}")).collect()
}

/// What a runtime knows of a lease's group: each service's replicas, in the contract's words
/// ([`ServiceStatus`]). The endpoint's `pazar_api::provider::LeaseStatus` adds what only the
/// lease's holder knows (whether it is ready as a whole, and the URIs tenants reach it at).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupStatus {
    /// The lease's label ([`LeaseRef::label`]).
    pub lease: String,
    pub services: Vec<ServiceStatus>,
}

impl GroupStatus {
    /// Every replica of every service runs (and serves its TCP ports).
    pub fn all_running(&self) -> bool {
        !self.services.is_empty() && self.services.iter().all(|s| s.running == s.replicas)
    }
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

/// A persistent volume of a lease as a directory on the host, for snapshots and restores.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeDir {
    pub service: String,
    pub volume: String,
    /// Where its filesystem is mounted (or, for an unbounded volume, where its data lies).
    pub path: std::path::PathBuf,
    /// The user and group a restore gives every entry, for a runtime that runs every workload
    /// as one user (the sandbox); `None` keeps the snapshot's owners (Docker).
    pub owner: Option<(u32, u32)>,
    /// The bytes leased for it: the most a restore may write into it.
    pub bytes: u64,
}

/// The persistent volumes of one lease, reachable on the host while this is held: mounts a
/// runtime made only for it are undone when it is dropped.
#[derive(Debug, Default)]
pub struct OpenVolumes {
    pub dirs: Vec<VolumeDir>,
    /// Mount points made for this access, unmounted (detached) on drop.
    private_mounts: Vec<std::path::PathBuf>,
}

impl OpenVolumes {
    /// Volumes reachable where they are, with no mount of their own to undo.
    pub fn new(dirs: Vec<VolumeDir>) -> OpenVolumes {
        OpenVolumes {
            dirs,
            private_mounts: Vec::new(),
        }
    }

    /// Records a mount made for this access, to be undone on drop.
    pub fn add_mount(&mut self, at: std::path::PathBuf) {
        self.private_mounts.push(at);
    }

    /// The volume `volume` of `service`, if the lease has it.
    pub fn get(&self, service: &str, volume: &str) -> Option<&VolumeDir> {
        self.dirs.iter().find(|d| d.service == service && d.volume == volume)
    }
}

impl Drop for OpenVolumes {
    fn drop(&mut self) {
        for m in self.private_mounts.drain(..) {
            if let Err(e) = nix::mount::umount2(&m, nix::mount::MntFlags::MNT_DETACH) {
                tracing::warn!(mount = %m.display(), "cannot unmount a volume opened for a snapshot: {e}");
            }
            let _ = std::fs::remove_dir(&m);
        }
    }
}

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;
/// A replica's (or a lease's) log lines as they are read.
pub type LogLines = Pin<Box<dyn Stream<Item = Result<LogLine, RuntimeError>> + Send>>;

/// A backend that runs the services of leased groups.
pub trait Runtime: Send + Sync {
    /// Starts (or, after a daemon restart, adopts) every service replica of `group` for `lease`.
    /// Idempotent: what already exists is kept. The group is a [`ValidGroup`]: only a manifest
    /// that passed the parser (names, paths, images, bounds) reaches a runtime, and the server
    /// has checked it against the lease.
    fn deploy<'a>(&'a self, lease: &'a LeaseRef, group: &'a ValidGroup) -> BoxFuture<'a, Result<(), RuntimeError>>;
    /// [`Runtime::deploy`] of `version` of the deployment (the SHA-256 of its manifest), which
    /// each replica records and [`Runtime::status`] reports. On a lease that runs, this is a
    /// manifest update, applied one replica at a time ([`rollout`]): a replica whose service
    /// changed is replaced by one of the new service, the next only once the new one serves;
    /// replicas the group no longer has go first, added ones are started, volumes the group
    /// still mounts keep their data. Images come first, so one that cannot be had changes
    /// nothing; a new replica that does not serve within the runtime's wait stops the update
    /// with the reason, the replicas not yet replaced still serving. The default (a runtime
    /// that keeps no versions) deploys.
    fn deploy_version<'a>(
        &'a self,
        lease: &'a LeaseRef,
        group: &'a ValidGroup,
        version: &'a Hash32,
    ) -> BoxFuture<'a, Result<(), RuntimeError>> {
        let _ = version;
        self.deploy(lease, group)
    }
    fn status<'a>(
        &'a self,
        lease: &'a LeaseRef,
        group: &'a ValidGroup,
    ) -> BoxFuture<'a, Result<GroupStatus, RuntimeError>>;
    /// Log lines of every replica (or one service's), the last `tail`, then new ones while
    /// `follow`.
    fn logs<'a>(
        &'a self,
        lease: &'a LeaseRef,
        service: Option<&'a str>,
        tail: usize,
        follow: bool,
    ) -> BoxFuture<'a, Result<LogLines, RuntimeError>>;
    /// Removes everything of the lease: replicas, its network and its volumes.
    fn close<'a>(&'a self, lease: &'a LeaseRef) -> BoxFuture<'a, Result<(), RuntimeError>>;
    /// Stops every replica of the lease and keeps the rest: its volumes with their data, and
    /// what a later [`Runtime::deploy`] of the same group needs to start the replicas again on
    /// them (that deploy is the start). A stopped replica is not restarted by the runtime on
    /// its own; [`Runtime::status`] reports it as not running. A lease with nothing here is no
    /// error. The holder stops a lease whose escrow ran dry (grace) and deploys it again when a
    /// deposit resumes it.
    fn stop<'a>(&'a self, lease: &'a LeaseRef) -> BoxFuture<'a, Result<(), RuntimeError>>;
    /// The persistent volumes of `group` for `lease` as host directories, for a snapshot (read)
    /// or a restore (written before any replica of the lease starts). With `make`, volumes that
    /// do not exist yet are made as [`Runtime::deploy`] would make them (and then kept by it);
    /// without, a lease with no volumes here is [`RuntimeError::UnknownLease`]. `ram` volumes
    /// are not persistent and not listed. A runtime that cannot reach its volumes on the host
    /// refuses; it never answers with fewer volumes than the group has.
    fn open_volumes<'a>(
        &'a self,
        lease: &'a LeaseRef,
        group: &'a ValidGroup,
        make: bool,
    ) -> BoxFuture<'a, Result<OpenVolumes, RuntimeError>> {
        let _ = (lease, group, make);
        Box::pin(async {
            Err(RuntimeError::Backend(
                "this runtime cannot reach a lease's volumes on the host: no snapshots or restores".into(),
            ))
        })
    }
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
// A daemon holds one, behind an `Arc`, for its whole life: boxing the larger variant would add
// an indirection to every call and save nothing.
#[allow(clippy::large_enum_variant)]
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

    /// Bytes of images pulled for tenants since the runtime started (the sandbox pulls none:
    /// its images are the operator's, or exported from a local engine).
    pub fn pulled_bytes(&self) -> u64 {
        match self {
            AnyRuntime::Docker(d) => d.pulled_bytes(),
            AnyRuntime::Sandbox(_) => 0,
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

    fn deploy_version<'a>(
        &'a self,
        lease: &'a LeaseRef,
        group: &'a ValidGroup,
        version: &'a Hash32,
    ) -> BoxFuture<'a, Result<(), RuntimeError>> {
        self.inner().deploy_version(lease, group, version)
    }

    fn status<'a>(
        &'a self,
        lease: &'a LeaseRef,
        group: &'a ValidGroup,
    ) -> BoxFuture<'a, Result<GroupStatus, RuntimeError>> {
        self.inner().status(lease, group)
    }

    fn logs<'a>(
        &'a self,
        lease: &'a LeaseRef,
        service: Option<&'a str>,
        tail: usize,
        follow: bool,
    ) -> BoxFuture<'a, Result<LogLines, RuntimeError>> {
        self.inner().logs(lease, service, tail, follow)
    }

    fn close<'a>(&'a self, lease: &'a LeaseRef) -> BoxFuture<'a, Result<(), RuntimeError>> {
        self.inner().close(lease)
    }

    fn stop<'a>(&'a self, lease: &'a LeaseRef) -> BoxFuture<'a, Result<(), RuntimeError>> {
        self.inner().stop(lease)
    }

    fn open_volumes<'a>(
        &'a self,
        lease: &'a LeaseRef,
        group: &'a ValidGroup,
        make: bool,
    ) -> BoxFuture<'a, Result<OpenVolumes, RuntimeError>> {
        self.inner().open_volumes(lease, group, make)
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
