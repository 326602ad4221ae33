//! The Docker backend, through the Engine API (bollard): one bridge network per lease, one
//! container per service replica, with CPU, memory and process limits, all capabilities dropped
//! but those ordinary images need, no new privileges, exposed ports published on random host
//! ports, named volumes for persistent storage, tmpfs for `ram` volumes, GPUs by device request.
//! Containers restart in place (`unless-stopped`), so logs and restart counts survive a crash,
//! and everything carries labels, so a restarted daemon finds its leases again.
//!
//! Everything kept for a lease is named after the whole hash of its id ([`LeaseRef::name`]) and
//! labelled with the id itself; an object found under a lease's name whose id label differs is
//! never adopted, reused or removed. Only the bridge interface has a short name (the kernel
//! allows 15 bytes): before a lease's network is made, no other network may hold it.
//!
//! Images: a tenant names one, and it is pulled anonymously from its registry at exactly that
//! tag (`latest` when none is named) or digest, within a time and a size limit, its progress in
//! the lease's status; the local copy is used without a pull only for the images the operator
//! allows (`[images] allow_local`). A failed pull says what failed, not what the engine said.
//!
//! Storage is bounded three ways: persistent volumes are ext4 filesystems in files of the leased
//! size on loop devices ([`super::loopfs`]), so a full volume answers `ENOSPC`; `ram` volumes
//! are sized tmpfs; the writable layer gets `storage_opt size` where the engine's storage
//! driver enforces it, and elsewhere (overlay2 on ext4, fuse-overlayfs) a replica whose layer
//! outgrows its ephemeral storage is evicted, as kubelet does: its logs are kept, it is removed
//! and started afresh from its image, and the lease's status counts and explains it.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use bollard::models::{
    ContainerCreateBody, DeviceRequest, EndpointSettings, HostConfig, HostConfigLogConfig, Mount, MountType,
    NetworkCreateRequest, NetworkingConfig, PortBinding, RestartPolicy, RestartPolicyNameEnum,
};
use bollard::query_parameters::{
    CreateContainerOptions, CreateImageOptions, InspectContainerOptions, ListContainersOptions, ListNetworksOptions,
    ListVolumesOptions, LogsOptions, RemoveContainerOptions, RemoveImageOptions, RemoveVolumeOptions,
};
use bollard::Docker;
use futures_util::StreamExt;

use pazar_api::manifest::{Group, Proto, Service};

use super::firewall::EgressPolicy;
use super::images::{ImagePolicy, ImageRef};
use super::{
    BoxFuture, Forward, LeaseRef, LeaseStatus, LogLine, LogStream, PullProgress, Runtime, RuntimeError, ServiceStatus,
};

const LABEL_LEASE: &str = "pazar.lease";
const LABEL_LEASE_ID: &str = "pazar.lease-id";
const LABEL_SERVICE: &str = "pazar.service";
const LABEL_REPLICA: &str = "pazar.replica";
/// Times this replica was evicted, carried from container to container.
const LABEL_EVICTIONS: &str = "pazar.evictions";
/// Why it was evicted last.
const LABEL_EVICTED: &str = "pazar.evicted";
/// Restarts of the containers this replica had before its last eviction.
const LABEL_RESTARTS: &str = "pazar.restarts-before";
/// The [`spec_hash`] of the service a container was made from: a deploy keeps a container only
/// while the group asks for exactly what it runs.
const LABEL_SPEC: &str = "pazar.spec";
/// Hashed into every [`spec_hash`]: changed when containers are made differently from the same
/// service (a new volume naming, a new mount option), so a deploy makes them again.
const SPEC_FORMAT: &[u8] = b"pazar-docker-container/2";

/// Mount options of persistent volumes: a tenant that writes a setuid binary or a device node
/// into its volume gains nothing by it.
const VOLUME_MOUNT_OPTIONS: &str = "nosuid,nodev";

/// Log lines of an evicted replica kept for the tenant (over all its evictions).
const KEPT_LOG_LINES: usize = 1000;

/// Capabilities ordinary images need (Docker's defaults without NET_RAW, MKNOD, AUDIT_WRITE).
const CAPS: &[&str] = &[
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "NET_BIND_SERVICE",
    "SYS_CHROOT",
];

/// Processes one replica may run.
const PIDS_LIMIT: i64 = 1024;

/// The network option that names the bridge interface on the host.
const BRIDGE_OPTION: &str = "com.docker.network.bridge.name";

/// Longest an image pull may take, unless the operator says otherwise.
pub const DEFAULT_PULL_TIMEOUT: Duration = Duration::from_secs(600);
/// Largest image a tenant may pull (bytes as stored on the host), unless the operator says
/// otherwise: room for the CUDA and ML framework images GPU leases run.
pub const DEFAULT_MAX_IMAGE_BYTES: u64 = 20 << 30;

fn backend(e: impl std::fmt::Display) -> RuntimeError {
    RuntimeError::Backend(e.to_string())
}

fn is_not_found(e: &bollard::errors::Error) -> bool {
    matches!(
        e,
        bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }
    )
}

/// Refuses an object found under a lease's name that is labelled with another lease's id (or
/// none): it is not this lease's to adopt, reuse or remove.
fn check_owner(
    labels: Option<&HashMap<String, String>>,
    lease: &LeaseRef,
    what: &str,
    name: &str,
) -> Result<(), RuntimeError> {
    if labels.and_then(|l| l.get(LABEL_LEASE_ID)) == Some(&lease.label()) {
        Ok(())
    } else {
        Err(RuntimeError::Backend(format!(
            "{what} {name} does not belong to lease {}: it is left alone and the lease cannot use it",
            lease.label()
        )))
    }
}

/// How the Docker backend runs leases.
#[derive(Debug, Clone)]
pub struct DockerOptions {
    /// Containers get GPU device requests (the host has NVIDIA GPUs and their container runtime).
    pub gpus: bool,
    /// Drop what a lease's containers send to the host itself, and their connections to
    /// link-local, metadata and private addresses (needs root, `iptables` and `ip6tables`).
    pub isolate_host: bool,
    /// Ranges workloads may reach although they are private, and the resolvers they may query.
    pub egress: EgressPolicy,
    /// Local images tenants may run without a pull.
    pub images: ImagePolicy,
    /// Longest an image pull may take.
    pub pull_timeout: Duration,
    /// Largest image a tenant may pull, in bytes as stored on the host.
    pub max_image_bytes: u64,
    /// Where the backend keeps what outlives a container: the files of size-bounded volumes
    /// (`volumes/`) and the logs of evicted replicas (`evicted/`). Without it, volumes are plain
    /// Docker volumes (unbounded) and an evicted replica's logs go with it.
    pub state_dir: Option<PathBuf>,
}

impl Default for DockerOptions {
    fn default() -> Self {
        DockerOptions {
            gpus: false,
            isolate_host: true,
            egress: EgressPolicy::with_host_resolvers(Vec::new()),
            images: ImagePolicy::default(),
            pull_timeout: DEFAULT_PULL_TIMEOUT,
            max_image_bytes: DEFAULT_MAX_IMAGE_BYTES,
            state_dir: None,
        }
    }
}

pub struct DockerRuntime {
    docker: Docker,
    opts: DockerOptions,
    /// The engine's storage driver can cap a container's writable layer (`storage_opt size`).
    storage_quota: bool,
    driver: String,
    /// Size-bounded persistent volumes, or why there are none.
    volumes: Result<super::loopfs::LoopFs, String>,
    /// Deploy, close and eviction of leases, one at a time: an eviction never brings back a
    /// replica of a lease being closed.
    lifecycle: tokio::sync::Mutex<()>,
    /// Pulls under way, by lease name and service.
    pulls: Mutex<HashMap<(String, String), PullProgress>>,
}

/// Removes a pull's progress when the pull ends, however it ends.
struct PullEntry<'a> {
    pulls: &'a Mutex<HashMap<(String, String), PullProgress>>,
    key: (String, String),
}

impl PullEntry<'_> {
    fn set(&self, p: PullProgress) {
        if let Ok(mut m) = self.pulls.lock() {
            m.insert(self.key.clone(), p);
        }
    }
}

impl Drop for PullEntry<'_> {
    fn drop(&mut self) {
        if let Ok(mut m) = self.pulls.lock() {
            m.remove(&self.key);
        }
    }
}

/// What a tenant is told of a failed pull: what failed, in words of its own image and
/// registry, never the engine's message (which can carry registry credentials' realms, host
/// paths and daemon internals). The operator gets the engine's message in the daemon's log.
fn pull_failure(image: &ImageRef, detail: &str) -> String {
    let d = detail.to_ascii_lowercase();
    let registry = image.registry();
    let has = |words: &[&str]| words.iter().any(|w| d.contains(w));
    if has(&["toomanyrequests", "too many requests", "rate limit"]) {
        format!("the registry {registry} is limiting pulls from this provider; try again later")
    } else if has(&[
        "unauthorized",
        "authentication required",
        "denied",
        "forbidden",
        "may require 'docker login'",
    ]) {
        format!("the registry {registry} does not give this image without credentials (this provider pulls public images only), or has no such repository")
    } else if has(&[
        "manifest unknown",
        "not found",
        "does not exist",
        "no matching manifest",
    ]) {
        format!(
            "the registry {registry} has no {} {:?} of this repository",
            if image.digest.is_some() { "digest" } else { "tag" },
            image.tag_or_digest()
        )
    } else if has(&[
        "dial tcp",
        "lookup",
        "no such host",
        "connection refused",
        "i/o timeout",
        "network is unreachable",
        "tls",
        "x509",
        "certificate",
        "eof",
        "connection reset",
        "timeout",
        "server gave http response",
    ]) {
        format!("cannot reach the registry {registry} from this provider")
    } else if has(&["no space left"]) {
        "this provider has no room for the image now".to_string()
    } else {
        format!("the pull from {registry} failed")
    }
}

/// What a replica of `svc` is made from (image, command, args, env, resources, ports, mounts,
/// credentials), as a hex SHA-256; the replica count is left out, so scaling a service up or down
/// leaves its other replicas running.
fn spec_hash(svc: &Service) -> String {
    use sha2::{Digest, Sha256};
    let unit = Service {
        count: 0,
        ..svc.clone()
    };
    let mut h = Sha256::new();
    h.update(SPEC_FORMAT);
    h.update(serde_json::to_vec(&unit).expect("a manifest service always serializes"));
    hex::encode(h.finalize())
}

fn lossless_u64(v: Option<i64>) -> u64 {
    v.unwrap_or(0).max(0) as u64
}

/// A replica evicted for outgrowing its ephemeral storage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Eviction {
    pub lease: String,
    pub service: String,
    pub replica: u32,
    /// Bytes its writable layer held.
    pub used: u64,
    /// Ephemeral storage it leased.
    pub limit: u64,
}

impl Eviction {
    /// What the tenant reads in the lease's status.
    pub fn reason(&self) -> String {
        format!(
            "evicted: its writable layer held {} bytes, over the {} bytes of ephemeral storage leased",
            self.used, self.limit
        )
    }
}

/// Whether a storage driver enforces `--storage-opt size` (overlay2 only on xfs with project
/// quotas; Docker refuses the option at create time when the mount lacks `pquota`).
fn driver_bounds_storage(driver: &str, status: &[Vec<String>]) -> bool {
    let backing = status
        .iter()
        .find(|kv| kv.first().is_some_and(|k| k == "Backing Filesystem"))
        .and_then(|kv| kv.get(1))
        .map(String::as_str);
    match driver {
        "btrfs" | "zfs" | "devicemapper" | "windowsfilter" => true,
        "overlay2" => backing == Some("xfs"),
        _ => false,
    }
}

impl DockerRuntime {
    /// Connects to the local engine (`DOCKER_HOST` or the Unix socket) and agrees on an API
    /// version it speaks.
    pub async fn connect(opts: DockerOptions) -> Result<DockerRuntime, RuntimeError> {
        let docker = Docker::connect_with_local_defaults()
            .map_err(backend)?
            .negotiate_version()
            .await
            .map_err(|e| RuntimeError::Backend(format!("cannot reach the Docker engine: {e}")))?;
        docker
            .ping()
            .await
            .map_err(|e| RuntimeError::Backend(format!("the Docker engine does not answer: {e}")))?;
        let info = docker
            .info()
            .await
            .map_err(|e| RuntimeError::Backend(format!("the Docker engine does not describe itself: {e}")))?;
        let driver = info.driver.unwrap_or_default();
        let storage_quota = driver_bounds_storage(&driver, &info.driver_status.unwrap_or_default());
        let volumes = match (&opts.state_dir, super::loopfs::unavailable()) {
            (None, _) => Err("no state directory is configured".to_string()),
            (Some(_), Some(why)) => Err(why),
            (Some(dir), None) => {
                let fs = super::loopfs::LoopFs::new(dir.join("volumes"));
                fs.sweep_links().map_err(RuntimeError::Backend)?;
                Ok(fs)
            }
        };
        Ok(DockerRuntime {
            docker,
            opts,
            storage_quota,
            driver,
            volumes,
            lifecycle: tokio::sync::Mutex::new(()),
            pulls: Mutex::new(HashMap::new()),
        })
    }

    /// How storage is bounded where it is not capped outright, for the operator.
    pub fn storage_notes(&self) -> Vec<String> {
        let mut notes = Vec::new();
        if !self.storage_quota {
            notes.push(format!(
                "the engine's storage driver {:?} cannot cap a container's writable layer (overlay2 on xfs \
                 with pquota, btrfs or zfs can): replicas that outgrow their ephemeral storage are evicted",
                self.driver
            ));
        }
        if let Err(why) = &self.volumes {
            notes.push(format!("persistent volumes are not size-bounded: {why}"));
        }
        if self.opts.isolate_host {
            // Lease networks are made without IPv6; its rules still apply to link-local IPv6.
            notes.push(
                "lease networks are IPv4 only (Docker's IPv6 is not enabled on them); the ip6tables rules still \
                 keep workloads' link-local IPv6 away from the host and the LAN"
                    .to_string(),
            );
        } else {
            notes.push(
                "isolate_host is off: workloads can reach this host, its LAN and cloud metadata addresses".to_string(),
            );
        }
        notes
    }

    /// Whether ephemeral storage is enforced by eviction ([`DockerRuntime::evict_over_storage`])
    /// rather than by the storage driver.
    pub fn evicts(&self) -> bool {
        !self.storage_quota
    }

    /// Whether persistent volumes are size-bounded filesystems.
    pub fn bounds_volumes(&self) -> bool {
        self.volumes.is_ok()
    }

    fn kept_logs(&self, container: &str) -> Option<PathBuf> {
        let dir = self.opts.state_dir.as_ref()?;
        Some(dir.join("evicted").join(format!("{container}.jsonl")))
    }

    pub fn docker(&self) -> &Docker {
        &self.docker
    }

    fn labels(lease: &LeaseRef) -> HashMap<String, String> {
        HashMap::from([
            (LABEL_LEASE.to_string(), lease.name()),
            (LABEL_LEASE_ID.to_string(), lease.label()),
        ])
    }

    /// Everything of the lease, found by its full id.
    fn filter(lease: &LeaseRef) -> HashMap<String, Vec<String>> {
        HashMap::from([("label".to_string(), vec![format!("{LABEL_LEASE_ID}={}", lease.label())])])
    }

    /// The container `name`, if there is one and it is the lease's; another lease's (or
    /// nobody's) under that name is an error.
    async fn inspect_own(
        &self,
        name: &str,
        lease: &LeaseRef,
    ) -> Result<Option<bollard::models::ContainerInspectResponse>, RuntimeError> {
        match self
            .docker
            .inspect_container(name, None::<InspectContainerOptions>)
            .await
        {
            Ok(info) => {
                check_owner(
                    info.config.as_ref().and_then(|c| c.labels.as_ref()),
                    lease,
                    "container",
                    name,
                )?;
                Ok(Some(info))
            }
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(backend(e)),
        }
    }

    /// Whether every replica of the service exists already, made from this very service (a
    /// restarted daemon adopting its lease): its image was checked when they were made, and a
    /// registry that is down now must not stop the adoption.
    async fn adopted(&self, lease: &LeaseRef, svc: &Service) -> Result<bool, RuntimeError> {
        let spec = spec_hash(svc);
        for replica in 0..svc.count {
            let name = Self::container_name(lease, &svc.name, replica);
            let info = self.inspect_own(&name, lease).await?;
            let made_from = info
                .as_ref()
                .and_then(|i| i.config.as_ref()?.labels.as_ref()?.get(LABEL_SPEC));
            if made_from != Some(&spec) {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// The Docker volumes `svc` mounts (its persistent storage; `ram` volumes are tmpfs), with
    /// the mount and the bytes leased.
    fn service_volumes<'s>(
        lease: &'s LeaseRef,
        svc: &'s Service,
    ) -> impl Iterator<Item = (String, &'s pazar_api::manifest::StorageMount, u64)> + 's {
        svc.storage.iter().filter_map(move |m| {
            let vol = super::volume(svc, &m.name).filter(|_| !super::is_ram(svc, &m.name))?;
            Some((Self::volume_name(lease, &svc.name, &m.name), m, vol.bytes))
        })
    }

    /// Makes what the lease runs exactly what `group` asks for, before anything new is made:
    /// every container labelled with the lease's id whose (service, replica) the group does not
    /// have, or whose [`spec_hash`] differs from what the group asks, is removed, and so is
    /// every volume of the lease that no service of the group mounts. Without it a tenant that
    /// renames its one service at each manifest update (every manifest fits the lease on its
    /// own) keeps every earlier service's containers running on a lease of one replica. The
    /// volumes removed are this tenant's own (labelled with its lease's id) and belong to
    /// services it no longer runs; a volume a service of the group still mounts keeps its data,
    /// and a container the group asks for as it is stays untouched (a redeploy restarts nothing).
    /// Called under the lifecycle lock.
    async fn converge(&self, lease: &LeaseRef, group: &Group) -> Result<(), RuntimeError> {
        let wanted: HashMap<String, String> = group
            .services
            .iter()
            .flat_map(|svc| {
                let spec = spec_hash(svc);
                (0..svc.count).map(move |r| (Self::container_name(lease, &svc.name, r), spec.clone()))
            })
            .collect();
        let list = self
            .docker
            .list_containers(Some(ListContainersOptions {
                all: true,
                filters: Some(Self::filter(lease)),
                ..Default::default()
            }))
            .await
            .map_err(backend)?;
        for c in list {
            let labels = c.labels.unwrap_or_default();
            let Some(name) = c.names.and_then(|n| n.into_iter().next()) else {
                continue;
            };
            let name = name.trim_start_matches('/');
            match wanted.get(name) {
                Some(spec) if labels.get(LABEL_SPEC) == Some(spec) => continue,
                // Made again below, from what the group asks now.
                Some(_) => {}
                None => {
                    // A replica that leaves the group takes the logs of its evictions along.
                    if let Some(path) = self.kept_logs(name) {
                        let _ = std::fs::remove_file(path);
                    }
                }
            }
            self.remove(name).await?;
        }
        let volumes: std::collections::HashSet<String> = group
            .services
            .iter()
            .flat_map(|svc| Self::service_volumes(lease, svc).map(|(name, _, _)| name))
            .collect();
        let vols = self
            .docker
            .list_volumes(Some(ListVolumesOptions {
                filters: Some(Self::filter(lease)),
            }))
            .await
            .map_err(backend)?;
        for v in vols.volumes.unwrap_or_default() {
            if volumes.contains(&v.name) {
                continue;
            }
            match self
                .docker
                .remove_volume(&v.name, Some(RemoveVolumeOptions { force: true }))
                .await
            {
                Ok(()) => {}
                Err(e) if is_not_found(&e) => {}
                Err(e) => return Err(backend(e)),
            }
        }
        if let Ok(fs) = &self.volumes {
            // Every file named after this lease (the digest is of fixed length, so no other
            // lease's name starts with it) that no volume of the group is.
            let (fs, prefix) = (fs.clone(), lease.name());
            tokio::task::spawn_blocking(move || {
                fs.names(&prefix)
                    .iter()
                    .filter(|n| !volumes.contains(*n))
                    .try_for_each(|n| fs.remove(n))
            })
            .await
            .map_err(backend)?
            .map_err(RuntimeError::Backend)?;
        }
        Ok(())
    }

    /// The image is allowed from the host's own copies and is here, or it is pulled now.
    async fn ensure_image(&self, lease: &LeaseRef, service: &str, image: &ImageRef) -> Result<(), RuntimeError> {
        if self.opts.images.allows_local(image) && self.docker.inspect_image(&image.reference()).await.is_ok() {
            return Ok(());
        }
        self.pull(lease, service, image).await
    }

    /// Pulls exactly `image` (its tag or digest; never every tag, which is what the engine does
    /// when asked for a repository without one), anonymously, within the time and size limits,
    /// keeping its progress for the lease's status. A pull stopped early is abandoned by
    /// dropping the engine's stream, which cancels it.
    async fn pull(&self, lease: &LeaseRef, service: &str, image: &ImageRef) -> Result<(), RuntimeError> {
        let fail = |reason: String| RuntimeError::Image {
            image: image.to_string(),
            reason,
        };
        let entry = PullEntry {
            pulls: &self.pulls,
            key: (lease.name(), service.to_string()),
        };
        let mut progress = PullProgress {
            image: image.to_string(),
            bytes: 0,
            total: 0,
        };
        entry.set(progress.clone());
        let max = self.opts.max_image_bytes;
        let too_big = |n: u64| {
            fail(format!(
                "the image is larger than {max} bytes ({n} bytes at least), this provider's limit"
            ))
        };
        let mut stream = self.docker.create_image(
            Some(CreateImageOptions {
                from_image: Some(image.repository.clone()),
                tag: Some(image.tag_or_digest().to_string()),
                ..Default::default()
            }),
            None,
            None,
        );
        let deadline = tokio::time::Instant::now() + self.opts.pull_timeout;
        // Per layer: bytes downloaded, and its size once the download starts.
        let mut layers: HashMap<String, (u64, u64)> = HashMap::new();
        loop {
            let item = match tokio::time::timeout_at(deadline, stream.next()).await {
                Err(_) => {
                    return Err(fail(format!(
                        "the pull took longer than {} s, this provider's limit (pulled {} of {} bytes)",
                        self.opts.pull_timeout.as_secs(),
                        progress.bytes,
                        progress.total
                    )))
                }
                Ok(None) => break,
                Ok(Some(item)) => item,
            };
            let info = match item {
                Ok(info) => info,
                Err(e) => {
                    eprintln!("provider: the pull of {image} failed: {e}");
                    return Err(fail(pull_failure(image, &e.to_string())));
                }
            };
            if let Some(msg) = info.error_detail.and_then(|d| d.message) {
                eprintln!("provider: the pull of {image} failed: {msg}");
                return Err(fail(pull_failure(image, &msg)));
            }
            let (Some(id), Some(status)) = (info.id, info.status) else {
                continue;
            };
            let detail = info.progress_detail.unwrap_or_default();
            let layer = layers.entry(id).or_default();
            match status.as_str() {
                "Downloading" => {
                    layer.1 = lossless_u64(detail.total).max(layer.1);
                    layer.0 = lossless_u64(detail.current).min(layer.1.max(1) * 2);
                }
                "Download complete" | "Verifying Checksum" => layer.0 = layer.1,
                _ => {}
            }
            progress.bytes = layers.values().map(|l| l.0).sum();
            progress.total = layers.values().map(|l| l.1).sum();
            entry.set(progress.clone());
            // Compressed layers are smaller than what they unpack to: a pull whose layers
            // already add up past the limit is stopped before it downloads them.
            if progress.total > max {
                return Err(too_big(progress.total));
            }
        }
        drop(stream);
        let size = match self.docker.inspect_image(&image.reference()).await {
            Ok(i) => lossless_u64(i.size),
            Err(e) => {
                eprintln!("provider: the pulled image {image} cannot be inspected: {e}");
                return Err(fail(format!("the pull from {} failed", image.registry())));
            }
        };
        if size > max {
            // Unless a container of someone else uses it, the image goes again.
            let _ = self
                .docker
                .remove_image(&image.reference(), None::<RemoveImageOptions>, None)
                .await;
            return Err(too_big(size));
        }
        Ok(())
    }

    /// The network (name, lease id label) whose host bridge interface is `iface`.
    async fn bridge_holder(&self, iface: &str) -> Result<Option<(String, Option<String>)>, RuntimeError> {
        let nets = self
            .docker
            .list_networks(None::<ListNetworksOptions>)
            .await
            .map_err(backend)?;
        Ok(nets
            .into_iter()
            .find(|n| {
                n.options
                    .as_ref()
                    .and_then(|o| o.get(BRIDGE_OPTION))
                    .map(String::as_str)
                    == Some(iface)
            })
            .map(|n| {
                let id = n.labels.as_ref().and_then(|l| l.get(LABEL_LEASE_ID)).cloned();
                (n.name.unwrap_or_default(), id)
            }))
    }

    async fn ensure_network(&self, lease: &LeaseRef) -> Result<String, RuntimeError> {
        let name = lease.name();
        let iface = lease.short_name();
        match self.docker.inspect_network(&name, None).await {
            Ok(n) => {
                check_owner(n.labels.as_ref(), lease, "network", &name)?;
                if n.options.as_ref().and_then(|o| o.get(BRIDGE_OPTION)) != Some(&iface) {
                    return Err(RuntimeError::Backend(format!(
                        "network {name} is not on bridge {iface}: it is left alone and the lease cannot use it"
                    )));
                }
            }
            Err(e) if is_not_found(&e) => {
                if self.bridge_holder(&iface).await?.is_some() {
                    return Err(RuntimeError::Backend(format!(
                        "the host interface name {iface} (48 bits of this lease's hash) is held by another \
                         lease's network; this lease cannot run on this provider"
                    )));
                }
                self.docker
                    .create_network(NetworkCreateRequest {
                        name: name.clone(),
                        driver: Some("bridge".into()),
                        labels: Some(Self::labels(lease)),
                        // The host interface carries a short form of the lease's name, so the
                        // firewall can name it (15 characters, the kernel's limit).
                        options: Some(HashMap::from([(BRIDGE_OPTION.to_string(), iface.clone())])),
                        ..Default::default()
                    })
                    .await
                    .map_err(backend)?;
            }
            Err(e) => return Err(backend(e)),
        }
        if self.opts.isolate_host {
            let egress = self.opts.egress.clone();
            let i = iface.clone();
            tokio::task::spawn_blocking(move || super::firewall::isolate(&i, &egress))
                .await
                .map_err(backend)??;
        }
        Ok(name)
    }

    fn container_name(lease: &LeaseRef, service: &str, replica: u32) -> String {
        format!("{}-{service}-{replica}", lease.name())
    }

    /// `<lease>.<service>.<volume>`: `.` is in neither the service nor the volume name grammar
    /// (but in Docker's volume names and [`super::loopfs`]'s), so two pairs of a lease never
    /// share a volume, as `a`/`b-c` and `a-b`/`c` would with `-`.
    fn volume_name(lease: &LeaseRef, service: &str, volume: &str) -> String {
        format!("{}.{service}.{volume}", lease.name())
    }

    fn container_body(&self, lease: &LeaseRef, net: &str, svc: &Service, replica: u32) -> ContainerCreateBody {
        let r = &svc.resources;
        let mut labels = Self::labels(lease);
        labels.insert(LABEL_SERVICE.into(), svc.name.clone());
        labels.insert(LABEL_REPLICA.into(), replica.to_string());
        labels.insert(LABEL_SPEC.into(), spec_hash(svc));
        let mut exposed = Vec::new();
        let mut bindings: HashMap<String, Option<Vec<PortBinding>>> = HashMap::new();
        for x in &svc.expose {
            let key = port_key(x.port, x.proto);
            if !exposed.contains(&key) {
                exposed.push(key.clone());
            }
            if x.global {
                bindings.insert(
                    key,
                    Some(vec![PortBinding {
                        host_ip: Some("0.0.0.0".into()),
                        host_port: Some(String::new()),
                    }]),
                );
            }
        }
        let mut mounts = Vec::new();
        for m in &svc.storage {
            let vol = super::volume(svc, &m.name);
            mounts.push(if super::is_ram(svc, &m.name) {
                Mount {
                    target: Some(m.mount.clone()),
                    typ: Some(MountType::TMPFS),
                    tmpfs_options: Some(bollard::models::MountTmpfsOptions {
                        size_bytes: vol.map(|v| v.bytes as i64),
                        ..Default::default()
                    }),
                    ..Default::default()
                }
            } else {
                Mount {
                    target: Some(m.mount.clone()),
                    source: Some(Self::volume_name(lease, &svc.name, &m.name)),
                    typ: Some(MountType::VOLUME),
                    read_only: Some(m.read_only),
                    ..Default::default()
                }
            });
        }
        let device_requests = (self.opts.gpus && r.gpu.units > 0).then(|| {
            vec![DeviceRequest {
                driver: Some("nvidia".into()),
                count: Some(i64::from(r.gpu.units)),
                capabilities: Some(vec![vec!["gpu".into()]]),
                ..Default::default()
            }]
        });
        let memory = i64::try_from(r.memory_bytes).unwrap_or(i64::MAX);
        ContainerCreateBody {
            image: Some(run_reference(&svc.image)),
            hostname: Some(svc.name.clone()),
            entrypoint: (!svc.command.is_empty()).then(|| svc.command.clone()),
            cmd: (!svc.args.is_empty()).then(|| svc.args.clone()),
            env: Some(svc.env.clone()),
            labels: Some(labels),
            exposed_ports: Some(exposed),
            host_config: Some(HostConfig {
                nano_cpus: Some(i64::from(r.cpu_millis) * 1_000_000),
                memory: Some(memory),
                memory_swap: Some(memory),
                pids_limit: Some(PIDS_LIMIT),
                cap_drop: Some(vec!["ALL".into()]),
                cap_add: Some(CAPS.iter().map(|c| (*c).to_string()).collect()),
                security_opt: Some(vec!["no-new-privileges:true".into()]),
                privileged: Some(false),
                network_mode: Some(net.to_string()),
                port_bindings: Some(bindings),
                restart_policy: Some(RestartPolicy {
                    name: Some(RestartPolicyNameEnum::UNLESS_STOPPED),
                    maximum_retry_count: None,
                }),
                log_config: Some(HostConfigLogConfig {
                    typ: Some("json-file".into()),
                    config: Some(HashMap::from([
                        ("max-size".to_string(), "10m".to_string()),
                        ("max-file".to_string(), "3".to_string()),
                    ])),
                }),
                mounts: Some(mounts),
                storage_opt: self
                    .storage_quota
                    .then(|| super::ephemeral_bytes(svc))
                    .flatten()
                    .map(|b| HashMap::from([("size".to_string(), b.to_string())])),
                device_requests,
                ..Default::default()
            }),
            networking_config: Some(NetworkingConfig {
                endpoints_config: Some(HashMap::from([(
                    net.to_string(),
                    EndpointSettings {
                        aliases: Some(vec![svc.name.clone()]),
                        ..Default::default()
                    },
                )])),
            }),
            ..Default::default()
        }
    }

    async fn deploy_group(&self, lease: &LeaseRef, group: &Group) -> Result<(), RuntimeError> {
        // Images first, outside the lock: a long pull holds up no other lease.
        for svc in &group.services {
            let image = ImageRef::parse(&svc.image).map_err(|reason| RuntimeError::Image {
                image: svc.image.clone(),
                reason,
            })?;
            if !self.adopted(lease, svc).await? {
                self.ensure_image(lease, &svc.name, &image).await?;
            }
        }
        let _one = self.lifecycle.lock().await;
        let net = self.ensure_network(lease).await?;
        self.converge(lease, group).await?;
        for svc in &group.services {
            for (name, m, bytes) in Self::service_volumes(lease, svc) {
                // Another lease's volume under this name is not touched, nor its file.
                let exists = match self.docker.inspect_volume(&name).await {
                    Ok(v) => {
                        check_owner(Some(&v.labels), lease, "volume", &name)?;
                        true
                    }
                    Err(e) if is_not_found(&e) => false,
                    Err(e) => return Err(backend(e)),
                };
                // A filesystem of the leased size where loop devices allow (made once, attached
                // again after a reboot); a plain Docker volume otherwise.
                let driver_opts = match &self.volumes {
                    Ok(fs) => {
                        let (fs, n) = (fs.clone(), name.clone());
                        let dev = tokio::task::spawn_blocking(move || fs.ensure(&n, bytes))
                            .await
                            .map_err(backend)?
                            .map_err(|e| RuntimeError::Backend(format!("volume {:?}: {e}", m.name)))?;
                        Some(HashMap::from([
                            ("type".to_string(), "ext4".to_string()),
                            ("device".to_string(), dev.to_string_lossy().into_owned()),
                            ("o".to_string(), VOLUME_MOUNT_OPTIONS.to_string()),
                        ]))
                    }
                    Err(_) => None,
                };
                if !exists {
                    self.docker
                        .create_volume(bollard::models::VolumeCreateRequest {
                            name: Some(name),
                            labels: Some(Self::labels(lease)),
                            driver_opts,
                            ..Default::default()
                        })
                        .await
                        .map_err(backend)?;
                }
            }
            for replica in 0..svc.count {
                let name = Self::container_name(lease, &svc.name, replica);
                match self.inspect_own(&name, lease).await? {
                    Some(_) => {}
                    None => {
                        self.docker
                            .create_container(
                                Some(CreateContainerOptions {
                                    name: Some(name.clone()),
                                    ..Default::default()
                                }),
                                self.container_body(lease, &net, svc, replica),
                            )
                            .await
                            .map_err(backend)?;
                    }
                }
                self.docker.start_container(&name, None).await.map_err(backend)?;
            }
        }
        Ok(())
    }

    async fn group_status(&self, lease: &LeaseRef, group: &Group) -> Result<LeaseStatus, RuntimeError> {
        let mut services = Vec::new();
        for svc in &group.services {
            let mut st = ServiceStatus {
                name: svc.name.clone(),
                replicas: svc.count,
                running: 0,
                restarts: 0,
                state: "running".into(),
                forwards: Vec::new(),
                last_error: None,
                evictions: 0,
                last_eviction: None,
                pull: self
                    .pulls
                    .lock()
                    .ok()
                    .and_then(|p| p.get(&(lease.name(), svc.name.clone())).cloned()),
            };
            if st.pull.is_some() {
                st.state = "pulling".into();
                services.push(st);
                continue;
            }
            for replica in 0..svc.count {
                let name = Self::container_name(lease, &svc.name, replica);
                let Some(info) = self.inspect_own(&name, lease).await? else {
                    st.state = "missing".into();
                    continue;
                };
                st.restarts += info.restart_count.unwrap_or(0).max(0) as u64;
                let labels = info.config.as_ref().and_then(|c| c.labels.as_ref());
                let label = |k: &str| labels.and_then(|l| l.get(k));
                st.restarts += label(LABEL_RESTARTS).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
                st.evictions += label(LABEL_EVICTIONS).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
                if let Some(why) = label(LABEL_EVICTED) {
                    st.last_eviction = Some(why.clone());
                }
                let ip = lease_address(&info, lease);
                let state = info.state.unwrap_or_default();
                let status = state.status.map(|s| s.to_string()).unwrap_or_default();
                if state.running == Some(true) && state.restarting != Some(true) {
                    // Ready means serving: every exposed TCP port accepts a connection.
                    if tcp_ports_open(ip, svc).await {
                        st.running += 1;
                    } else {
                        st.state = "starting".into();
                    }
                } else {
                    st.state = if state.restarting == Some(true) {
                        "restarting".into()
                    } else {
                        status
                    };
                    let exit = state.exit_code.unwrap_or(0);
                    let err = state.error.filter(|e| !e.is_empty());
                    st.last_error = Some(err.unwrap_or_else(|| format!("exited with code {exit}")));
                }
                let ports = info.network_settings.and_then(|n| n.ports).unwrap_or_default();
                for x in svc.expose.iter().filter(|x| x.global) {
                    let key = port_key(x.port, x.proto);
                    let host_port = ports
                        .get(&key)
                        .and_then(|b| b.as_ref())
                        .and_then(|b| b.iter().find_map(|p| p.host_port.as_deref()?.parse::<u16>().ok()));
                    if let Some(host_port) = host_port {
                        st.forwards.push(Forward {
                            port: x.port,
                            proto: x.proto,
                            host_port,
                            replica,
                        });
                    }
                }
            }
            services.push(st);
        }
        Ok(LeaseStatus {
            lease: lease.label(),
            services,
        })
    }

    async fn lease_containers(&self, lease: &LeaseRef) -> Result<Vec<(String, String, u32)>, RuntimeError> {
        let list = self
            .docker
            .list_containers(Some(ListContainersOptions {
                all: true,
                filters: Some(Self::filter(lease)),
                ..Default::default()
            }))
            .await
            .map_err(backend)?;
        let mut out: Vec<(String, String, u32)> = list
            .into_iter()
            .filter_map(|c| {
                let labels = c.labels.unwrap_or_default();
                let name = c.names?.first()?.trim_start_matches('/').to_string();
                let svc = labels.get(LABEL_SERVICE)?.clone();
                let replica = labels.get(LABEL_REPLICA)?.parse().ok()?;
                Some((name, svc, replica))
            })
            .collect();
        out.sort();
        Ok(out)
    }

    async fn lease_logs(
        &self,
        lease: &LeaseRef,
        service: Option<&str>,
        tail: usize,
        follow: bool,
    ) -> Result<LogStream, RuntimeError> {
        let containers = self.lease_containers(lease).await?;
        if containers.is_empty() {
            return Err(RuntimeError::UnknownLease(lease.label()));
        }
        let chosen: Vec<_> = containers
            .into_iter()
            .filter(|(_, s, _)| service.is_none_or(|want| want == s))
            .collect();
        if chosen.is_empty() {
            return Err(RuntimeError::UnknownService(service.unwrap_or("").to_string()));
        }
        let mut streams = Vec::new();
        for (name, svc, replica) in chosen {
            // What evicted containers of this replica wrote comes first.
            let kept: Vec<Result<LogLine, RuntimeError>> = self
                .kept_logs(&name)
                .and_then(|p| std::fs::read_to_string(p).ok())
                .map(|text| {
                    let lines: Vec<_> = text
                        .lines()
                        .filter_map(|l| serde_json::from_str::<LogLine>(l).ok())
                        .collect();
                    lines[lines.len().saturating_sub(tail)..]
                        .iter()
                        .cloned()
                        .map(Ok)
                        .collect()
                })
                .unwrap_or_default();
            let s = self
                .docker
                .logs(
                    &name,
                    Some(LogsOptions {
                        follow,
                        stdout: true,
                        stderr: true,
                        tail: tail.to_string(),
                        ..Default::default()
                    }),
                )
                .map(move |item| item.map(|out| log_line(out, &svc, replica)).map_err(backend));
            streams.push(futures_util::stream::iter(kept).chain(s).boxed());
        }
        Ok(futures_util::stream::select_all(streams).boxed())
    }

    async fn close_lease(&self, lease: &LeaseRef) -> Result<(), RuntimeError> {
        let _one = self.lifecycle.lock().await;
        if let Some(dir) = self.opts.state_dir.as_ref().map(|d| d.join("evicted")) {
            let prefix = format!("{}-", lease.name());
            for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                if e.file_name().to_string_lossy().starts_with(&prefix) {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        for (name, _, _) in self.lease_containers(lease).await? {
            self.remove(&name).await?;
        }
        let vols = self
            .docker
            .list_volumes(Some(ListVolumesOptions {
                filters: Some(Self::filter(lease)),
            }))
            .await
            .map_err(backend)?;
        for v in vols.volumes.unwrap_or_default() {
            match self
                .docker
                .remove_volume(&v.name, Some(RemoveVolumeOptions { force: true }))
                .await
            {
                Ok(()) => {}
                Err(e) if is_not_found(&e) => {}
                Err(e) => return Err(backend(e)),
            }
        }
        if let Ok(fs) = &self.volumes {
            // Every file named after the lease (the digest has a fixed length, so no other
            // lease's name starts with it), in either naming (`-` was used before `.`).
            let (fs, prefix) = (fs.clone(), lease.name());
            tokio::task::spawn_blocking(move || fs.names(&prefix).iter().try_for_each(|n| fs.remove(n)))
                .await
                .map_err(backend)?
                .map_err(RuntimeError::Backend)?;
        }
        // The rules go before the network, so a lease whose network is gone has no rule left;
        // rules on a bridge another lease's network holds are that lease's, and stay.
        let iface = lease.short_name();
        let holder = self.bridge_holder(&iface).await?;
        if self.opts.isolate_host
            && holder
                .as_ref()
                .is_none_or(|(_, id)| id.as_ref() == Some(&lease.label()))
        {
            tokio::task::spawn_blocking(move || super::firewall::release(&iface))
                .await
                .map_err(backend)??;
        }
        let nets = self
            .docker
            .list_networks(Some(ListNetworksOptions {
                filters: Some(Self::filter(lease)),
            }))
            .await
            .map_err(backend)?;
        for n in nets {
            let Some(name) = n.name else { continue };
            match self.docker.remove_network(&name).await {
                Ok(()) => {}
                Err(e) if is_not_found(&e) => {}
                Err(e) => return Err(backend(e)),
            }
        }
        Ok(())
    }

    /// Evicts every replica of `leases` whose writable layer holds more than the ephemeral
    /// storage its service leased (does nothing where the storage driver caps it): its last
    /// log lines are kept for the tenant, the container is removed (its writable layer with
    /// it) and made again from the image, carrying its restart and eviction counts. Replicas
    /// of leases not in the list are left alone. Called periodically by the daemon, as kubelet
    /// checks its pods' ephemeral storage; between two checks a workload can overshoot.
    pub async fn evict_over_storage(
        &self,
        leases: &[(LeaseRef, pazar_api::manifest::ValidGroup)],
    ) -> Result<Vec<Eviction>, RuntimeError> {
        if !self.evicts() {
            return Ok(Vec::new());
        }
        let _one = self.lifecycle.lock().await;
        let list = self
            .docker
            .list_containers(Some(ListContainersOptions {
                all: true,
                size: true,
                filters: Some(HashMap::from([("label".to_string(), vec![LABEL_LEASE.to_string()])])),
                ..Default::default()
            }))
            .await
            .map_err(backend)?;
        let used: HashMap<String, (u64, HashMap<String, String>)> = list
            .into_iter()
            .filter_map(|c| {
                let name = c.names?.first()?.trim_start_matches('/').to_string();
                Some((
                    name,
                    (c.size_rw.unwrap_or(0).max(0) as u64, c.labels.unwrap_or_default()),
                ))
            })
            .collect();
        let mut evicted = Vec::new();
        for (lease, group) in leases {
            for svc in &group.services {
                let Some(limit) = super::ephemeral_bytes(svc) else {
                    continue;
                };
                for replica in 0..svc.count {
                    let name = Self::container_name(lease, &svc.name, replica);
                    let Some((bytes, labels)) = used.get(&name) else {
                        continue;
                    };
                    if labels.get(LABEL_LEASE_ID) != Some(&lease.label()) {
                        continue;
                    }
                    // A replica made from another manifest than `group` (which an update
                    // replaced since the caller read it) is the next deploy's to judge; made
                    // again from `svc` it would revive what the tenant no longer asks for.
                    if labels.get(LABEL_SPEC) != Some(&spec_hash(svc)) {
                        continue;
                    }
                    if *bytes <= limit {
                        continue;
                    }
                    let e = Eviction {
                        lease: lease.label(),
                        service: svc.name.clone(),
                        replica,
                        used: *bytes,
                        limit,
                    };
                    self.evict(lease, svc, replica, &name, labels, &e).await?;
                    evicted.push(e);
                }
            }
        }
        Ok(evicted)
    }

    async fn evict(
        &self,
        lease: &LeaseRef,
        svc: &Service,
        replica: u32,
        name: &str,
        labels: &HashMap<String, String>,
        e: &Eviction,
    ) -> Result<(), RuntimeError> {
        let count = |k: &str| labels.get(k).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        let info = self
            .docker
            .inspect_container(name, None::<InspectContainerOptions>)
            .await
            .map_err(backend)?;
        let restarts = count(LABEL_RESTARTS) + info.restart_count.unwrap_or(0).max(0) as u64;
        if let Some(path) = self.kept_logs(name) {
            self.keep_logs(name, &svc.name, replica, &path).await?;
        }
        self.remove(name).await?;
        let mut body = self.container_body(lease, &lease.name(), svc, replica);
        if let Some(l) = body.labels.as_mut() {
            l.insert(LABEL_EVICTIONS.into(), (count(LABEL_EVICTIONS) + 1).to_string());
            l.insert(LABEL_EVICTED.into(), e.reason());
            l.insert(LABEL_RESTARTS.into(), restarts.to_string());
        }
        // The replica keeps its host ports, so the tenant's URIs stay right; should one have
        // been taken meanwhile, it gets fresh ones (the status shows them).
        let held = info.network_settings.and_then(|n| n.ports).unwrap_or_default();
        let mut pinned = body.clone();
        if let Some(bindings) = pinned.host_config.as_mut().and_then(|h| h.port_bindings.as_mut()) {
            for (key, b) in bindings.iter_mut() {
                let port = held
                    .get(key)
                    .and_then(|v| v.as_ref())
                    .and_then(|v| v.iter().find_map(|p| p.host_port.clone()));
                if let (Some(port), Some(b)) = (port, b.as_mut()) {
                    b.iter_mut().for_each(|p| p.host_port = Some(port.clone()));
                }
            }
        }
        if self.create_and_start(name, pinned).await.is_err() {
            self.remove(name).await?;
            self.create_and_start(name, body).await?;
        }
        Ok(())
    }

    async fn create_and_start(&self, name: &str, body: ContainerCreateBody) -> Result<(), RuntimeError> {
        self.docker
            .create_container(
                Some(CreateContainerOptions {
                    name: Some(name.to_string()),
                    ..Default::default()
                }),
                body,
            )
            .await
            .map_err(backend)?;
        self.docker.start_container(name, None).await.map_err(backend)
    }

    /// Removes a container with its anonymous volumes; absent is fine.
    async fn remove(&self, name: &str) -> Result<(), RuntimeError> {
        let opts = RemoveContainerOptions {
            force: true,
            v: true,
            ..Default::default()
        };
        match self.docker.remove_container(name, Some(opts)).await {
            Ok(()) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(backend(e)),
        }
    }

    /// Appends the container's last log lines to `path`, which keeps the last
    /// [`KEPT_LOG_LINES`] over all evictions of the replica.
    async fn keep_logs(
        &self,
        name: &str,
        service: &str,
        replica: u32,
        path: &std::path::Path,
    ) -> Result<(), RuntimeError> {
        let mut lines: Vec<String> = std::fs::read_to_string(path)
            .map(|t| t.lines().map(str::to_string).collect())
            .unwrap_or_default();
        let mut logs = self.docker.logs(
            name,
            Some(LogsOptions {
                stdout: true,
                stderr: true,
                tail: KEPT_LOG_LINES.to_string(),
                ..Default::default()
            }),
        );
        while let Some(Ok(out)) = logs.next().await {
            lines.push(serde_json::to_string(&log_line(out, service, replica)).map_err(backend)?);
        }
        let keep = &lines[lines.len().saturating_sub(KEPT_LOG_LINES)..];
        let io = |e: std::io::Error| RuntimeError::Backend(format!("cannot keep the logs in {}: {e}", path.display()));
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        std::fs::write(path, keep.iter().map(|l| format!("{l}\n")).collect::<String>()).map_err(io)
    }

    /// Removes firewall rules left for bridges no network holds any more (a crash between
    /// removing a lease's rules and its network). Returns how many bridges' rules went.
    pub async fn sweep_firewall(&self) -> Result<usize, RuntimeError> {
        let mut removed = 0;
        let ifaces = tokio::task::spawn_blocking(super::firewall::isolated_interfaces)
            .await
            .map_err(backend)?;
        for iface in ifaces {
            if self.bridge_holder(&iface).await?.is_none() {
                tokio::task::spawn_blocking(move || super::firewall::release(&iface))
                    .await
                    .map_err(backend)??;
                removed += 1;
            }
        }
        Ok(removed)
    }

    async fn all_leases(&self) -> Result<Vec<(String, String)>, RuntimeError> {
        let mut out = std::collections::BTreeMap::new();
        let filters = HashMap::from([("label".to_string(), vec![LABEL_LEASE.to_string()])]);
        let containers = self
            .docker
            .list_containers(Some(ListContainersOptions {
                all: true,
                filters: Some(filters.clone()),
                ..Default::default()
            }))
            .await
            .map_err(backend)?;
        for c in containers {
            let l = c.labels.unwrap_or_default();
            if let (Some(n), Some(id)) = (l.get(LABEL_LEASE), l.get(LABEL_LEASE_ID)) {
                out.insert(n.clone(), id.clone());
            }
        }
        let nets = self
            .docker
            .list_networks(Some(ListNetworksOptions { filters: Some(filters) }))
            .await
            .map_err(backend)?;
        for n in nets {
            let l = n.labels.unwrap_or_default();
            if let (Some(n), Some(id)) = (l.get(LABEL_LEASE), l.get(LABEL_LEASE_ID)) {
                out.insert(n.clone(), id.clone());
            }
        }
        Ok(out.into_iter().collect())
    }
}

fn log_line(out: bollard::container::LogOutput, service: &str, replica: u32) -> LogLine {
    let (stream, bytes) = match out {
        bollard::container::LogOutput::StdErr { message } => ("stderr", message),
        bollard::container::LogOutput::StdOut { message }
        | bollard::container::LogOutput::Console { message }
        | bollard::container::LogOutput::StdIn { message } => ("stdout", message),
    };
    LogLine {
        service: service.to_string(),
        replica,
        stream: stream.into(),
        line: String::from_utf8_lossy(&bytes).trim_end_matches('\n').to_string(),
    }
}

/// The reference a container is made from: the tenant's image as pulled (`REPOSITORY:TAG`,
/// `latest` when no tag was named, or `REPOSITORY@DIGEST`).
fn run_reference(image: &str) -> String {
    ImageRef::parse(image).map_or_else(|_| image.to_string(), |r| r.reference())
}

/// Docker's name of a container port, e.g. `8080/tcp`.
fn port_key(port: u16, proto: Proto) -> String {
    match proto {
        Proto::Tcp => format!("{port}/tcp"),
        Proto::Udp => format!("{port}/udp"),
    }
}

/// A container's address on its lease network, which the host reaches; `None` when it has
/// none (not running).
fn lease_address(info: &bollard::models::ContainerInspectResponse, lease: &LeaseRef) -> Option<std::net::IpAddr> {
    info.network_settings
        .as_ref()?
        .networks
        .as_ref()?
        .get(&lease.name())?
        .ip_address
        .as_deref()?
        .parse()
        .ok()
}

/// Whether every TCP port `svc` exposes accepts a connection at `ip` (the replica's address on
/// its lease network, which the host reaches).
async fn tcp_ports_open(ip: Option<std::net::IpAddr>, svc: &Service) -> bool {
    let Some(ip) = ip else { return svc.expose.is_empty() };
    for x in svc.expose.iter().filter(|x| x.proto == Proto::Tcp) {
        let connect = tokio::net::TcpStream::connect((ip, x.port));
        match tokio::time::timeout(std::time::Duration::from_millis(500), connect).await {
            Ok(Ok(_)) => {}
            _ => return false,
        }
    }
    true
}

impl Runtime for DockerRuntime {
    fn deploy<'a>(
        &'a self,
        lease: &'a LeaseRef,
        group: &'a pazar_api::manifest::ValidGroup,
    ) -> BoxFuture<'a, Result<(), RuntimeError>> {
        Box::pin(self.deploy_group(lease, group))
    }

    fn status<'a>(
        &'a self,
        lease: &'a LeaseRef,
        group: &'a pazar_api::manifest::ValidGroup,
    ) -> BoxFuture<'a, Result<LeaseStatus, RuntimeError>> {
        Box::pin(self.group_status(lease, group))
    }

    fn logs<'a>(
        &'a self,
        lease: &'a LeaseRef,
        service: Option<&'a str>,
        tail: usize,
        follow: bool,
    ) -> BoxFuture<'a, Result<LogStream, RuntimeError>> {
        Box::pin(self.lease_logs(lease, service, tail, follow))
    }

    fn close<'a>(&'a self, lease: &'a LeaseRef) -> BoxFuture<'a, Result<(), RuntimeError>> {
        Box::pin(self.close_lease(lease))
    }

    fn leases(&self) -> BoxFuture<'_, Result<Vec<(String, String)>, RuntimeError>> {
        Box::pin(self.all_leases())
    }

    fn dial<'a>(
        &'a self,
        lease: &'a LeaseRef,
        service: &'a str,
        replica: u32,
        port: u16,
    ) -> BoxFuture<'a, Result<tokio::net::TcpStream, RuntimeError>> {
        Box::pin(async move {
            let name = Self::container_name(lease, service, replica);
            let Some(info) = self.inspect_own(&name, lease).await? else {
                return Err(RuntimeError::UnknownService(service.to_string()));
            };
            let ip = lease_address(&info, lease)
                .ok_or_else(|| backend(format!("replica {replica} of {service:?} has no address (not running)")))?;
            let connect = tokio::net::TcpStream::connect((ip, port));
            match tokio::time::timeout(std::time::Duration::from_secs(5), connect).await {
                Ok(Ok(s)) => Ok(s),
                Ok(Err(e)) => Err(backend(format!("{service:?} refuses port {port}: {e}"))),
                Err(_) => Err(backend(format!("{service:?} does not answer on port {port}"))),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::{driver_bounds_storage, spec_hash, DockerRuntime};
    use crate::LeaseRef;
    use pazar_types::market::BidId;
    use pazar_types::{Address, Denom};

    fn service(env: &str, count: u32) -> pazar_api::manifest::Service {
        let sdl = format!(
            "version: \"2.0\"\nservices:\n  web:\n    image: busybox\n    env: [{env}]\nprofiles:\n  compute:\n    \
             p: {{resources: {{cpu: {{units: 0.1}}, memory: {{size: 16Mi}}, storage: {{size: 64Mi}}}}}}\n  placement:\n    \
             dc: {{pricing: {{p: {{denom: uusd, amount: 1}}}}}}\ndeployment:\n  web: {{dc: {{profile: p, count: {count}}}}}\n"
        );
        let opts = pazar_sdl::Options::new(Denom::new("upzr").expect("denom"), Denom::new("uusd").expect("denom"));
        let d = pazar_sdl::parse(sdl.as_bytes(), &opts).expect("valid sdl");
        d.manifest.groups[0].services[0].clone()
    }

    #[test]
    fn a_spec_changes_with_what_a_replica_runs_but_not_with_the_replica_count() {
        assert_eq!(spec_hash(&service("A=1", 1)), spec_hash(&service("A=1", 3)));
        assert_ne!(spec_hash(&service("A=1", 1)), spec_hash(&service("A=2", 1)));
        let mut other = service("A=1", 1);
        other.image = "busybox:1".into();
        assert_ne!(spec_hash(&service("A=1", 1)), spec_hash(&other));
    }

    #[test]
    fn two_service_and_volume_pairs_of_a_lease_never_share_a_volume() {
        let lease = LeaseRef::new(BidId {
            owner: Address::Native([1; 20]),
            dseq: 1,
            gseq: 1,
            oseq: 1,
            provider: Address::Native([2; 20]),
        });
        let a = DockerRuntime::volume_name(&lease, "a", "b-c");
        let b = DockerRuntime::volume_name(&lease, "a-b", "c");
        assert_ne!(a, b);
        assert_eq!(a, format!("{}.a.b-c", lease.name()));
        assert!(pazar_api::names::is_service_name("a-b") && pazar_api::names::is_volume_name("b-c"));
    }

    fn status(backing: &str) -> Vec<Vec<String>> {
        vec![vec!["Backing Filesystem".into(), backing.into()]]
    }

    #[test]
    fn only_drivers_that_enforce_a_size_get_storage_opt() {
        assert!(driver_bounds_storage("overlay2", &status("xfs")));
        assert!(!driver_bounds_storage("overlay2", &status("extfs")));
        assert!(driver_bounds_storage("btrfs", &[]));
        assert!(driver_bounds_storage("zfs", &[]));
        assert!(!driver_bounds_storage("fuse-overlayfs", &[]));
        assert!(!driver_bounds_storage("vfs", &[]));
    }
}
