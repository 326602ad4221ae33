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
//! size on loop devices ([`crate::loopfs`]), so a full volume answers `ENOSPC`; `ram` volumes
//! are sized tmpfs; the writable layer gets `storage_opt size` where the engine's storage
//! driver enforces it, and elsewhere (overlay2 on ext4, fuse-overlayfs) a replica whose layer
//! outgrows its ephemeral storage is evicted, as kubelet does: its logs are kept, it is removed
//! and started afresh from its image, and the lease's status counts and explains it.
//!
//! This file is the driver: options, connecting, and the [`Runtime`] operations (deploy,
//! status, logs, stop, close, list, dial) that put the other files together. `spec` says what a
//! replica becomes as a container, `pull` fetches images, `network` makes and releases a
//! lease's network and firewall rules, `converge` makes containers and volumes exactly what
//! the group asks, and `evict` polices ephemeral storage. None of them knows the chain: a
//! lease arrives as a [`LeaseRef`] and a [`ValidGroup`](pazar_api::manifest::ValidGroup).

mod converge;
mod evict;
mod network;
mod pull;
mod rollout;
mod spec;
mod volumes;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use bollard::models::ContainerCreateBody;
use bollard::query_parameters::{
    CreateContainerOptions, InspectContainerOptions, ListContainersOptions, ListNetworksOptions, LogsOptions,
    RemoveContainerOptions, StopContainerOptions,
};
use bollard::Docker;
use futures_util::StreamExt;

use pazar_api::manifest::{Group, Proto, Service};

use evict::driver_bounds_storage;
pub use evict::Eviction;
use network::lease_address;
use spec::{
    port_key, spec_hash, LABEL_EVICTED, LABEL_EVICTIONS, LABEL_LEASE, LABEL_LEASE_ID, LABEL_REPLICA, LABEL_RESTARTS,
    LABEL_SERVICE, LABEL_SPEC,
};

use crate::firewall::EgressPolicy;
use crate::images::{ImagePolicy, ImageRef};
use crate::{BoxFuture, GroupStatus, LeaseRef, LogLines, Runtime, RuntimeError};
use pazar_api::provider::{Forward, LogLine, LogStream, PullProgress, ServiceState, ServiceStatus};

/// Seconds a stopped container has to end on SIGTERM before it is killed.
pub const STOP_GRACE_S: i32 = 5;

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
    volumes: Result<crate::loopfs::LoopFs, String>,
    /// Deploy, close and eviction of leases, one at a time: an eviction never brings back a
    /// replica of a lease being closed.
    lifecycle: tokio::sync::Mutex<()>,
    /// Pulls under way, by lease name and service.
    pulls: Mutex<HashMap<(String, String), PullProgress>>,
    /// Bytes pulled for tenants since the runtime started (for the holder's metrics).
    pulled_bytes: std::sync::atomic::AtomicU64,
    /// How long a new replica may take to serve before a manifest update stops.
    ready_wait: Duration,
    /// The version each container a deploy kept unchanged runs, by container name (labels
    /// cannot change: the label says what it was made for).
    versions: Mutex<HashMap<String, String>>,
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
        let volumes = match (&opts.state_dir, crate::loopfs::unavailable()) {
            (None, _) => Err("no state directory is configured".to_string()),
            (Some(_), Some(why)) => Err(why),
            (Some(dir), None) => {
                let fs = crate::loopfs::LoopFs::new(dir.join("volumes"));
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
            pulled_bytes: std::sync::atomic::AtomicU64::new(0),
            ready_wait: crate::rollout::DEFAULT_READY_WAIT,
            versions: Mutex::new(HashMap::new()),
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

    pub fn docker(&self) -> &Docker {
        &self.docker
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

    async fn deploy_group(&self, lease: &LeaseRef, group: &Group, version: Option<&str>) -> Result<(), RuntimeError> {
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
        self.roll_out(lease, &net, group, version).await?;
        // Only now: a replica being replaced still mounted the volumes of its old service.
        self.remove_unmounted_volumes(lease, group).await
    }

    async fn group_status(&self, lease: &LeaseRef, group: &Group) -> Result<GroupStatus, RuntimeError> {
        let mut services = Vec::new();
        for svc in &group.services {
            let mut st = ServiceStatus {
                name: svc.name.clone(),
                replicas: svc.count,
                running: 0,
                restarts: 0,
                state: ServiceState::Running,
                forwards: Vec::new(),
                last_error: None,
                evictions: 0,
                last_eviction: None,
                pull: self
                    .pulls
                    .lock()
                    .ok()
                    .and_then(|p| p.get(&(lease.name(), svc.name.clone())).cloned()),
                version: None,
                update_error: None,
            };
            if st.pull.is_some() {
                st.state = ServiceState::Pulling;
                services.push(st);
                continue;
            }
            let mut versions = Vec::new();
            for replica in 0..svc.count {
                let name = Self::container_name(lease, &svc.name, replica);
                let Some(info) = self.inspect_own(&name, lease).await? else {
                    st.state = ServiceState::Missing;
                    continue;
                };
                st.restarts += info.restart_count.unwrap_or(0).max(0) as u64;
                let labels = info.config.as_ref().and_then(|c| c.labels.as_ref());
                versions.push(self.replica_version(&name, labels));
                let label = |k: &str| labels.and_then(|l| l.get(k));
                st.restarts += label(LABEL_RESTARTS).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
                st.evictions += label(LABEL_EVICTIONS).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
                if let Some(why) = label(LABEL_EVICTED) {
                    st.last_eviction = Some(why.clone());
                }
                let ip = lease_address(&info, lease);
                let state = info.state.unwrap_or_default();
                if state.running == Some(true) && state.restarting != Some(true) {
                    // Ready means serving: every exposed TCP port accepts a connection.
                    if tcp_ports_open(ip, svc).await {
                        st.running += 1;
                    } else {
                        st.state = ServiceState::Starting;
                    }
                } else {
                    st.state = if state.restarting == Some(true) {
                        ServiceState::Restarting
                    } else {
                        service_state(state.status)
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
            st.version = crate::rollout::common_version(versions);
            services.push(st);
        }
        Ok(GroupStatus {
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
    ) -> Result<LogLines, RuntimeError> {
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
        self.forget_versions(lease);
        self.remove_volumes(lease).await?;
        self.release_network(lease).await
    }

    /// Stops every container of the lease (SIGTERM, then SIGKILL after [`STOP_GRACE_S`]) and
    /// keeps them, their volumes and the lease's network: `unless-stopped` does not bring a
    /// stopped container back, and a deploy of the same group starts each again as it is
    /// ([`DockerRuntime::roll_out`] starts an unchanged replica).
    async fn stop_lease(&self, lease: &LeaseRef) -> Result<(), RuntimeError> {
        let _one = self.lifecycle.lock().await;
        for (name, _, _) in self.lease_containers(lease).await? {
            let opts = StopContainerOptions {
                t: Some(STOP_GRACE_S),
                ..Default::default()
            };
            match self.docker.stop_container(&name, Some(opts)).await {
                Ok(()) => {}
                // Stopped already (304), or gone meanwhile.
                Err(bollard::errors::Error::DockerResponseServerError { status_code: 304, .. }) => {}
                Err(e) if is_not_found(&e) => {}
                Err(e) => return Err(backend(e)),
            }
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

/// What a replica that does not run is doing, in the contract's words, from the engine's
/// container state (`None` when the engine did not say).
fn service_state(status: Option<bollard::models::ContainerStateStatusEnum>) -> ServiceState {
    use bollard::models::ContainerStateStatusEnum as S;
    match status {
        Some(S::CREATED) => ServiceState::Starting,
        Some(S::RESTARTING) => ServiceState::Restarting,
        Some(S::RUNNING) => ServiceState::Running,
        Some(S::EXITED | S::DEAD | S::REMOVING | S::STOPPING) => ServiceState::Exited,
        // Paused (the daemon never pauses a replica), or a state the engine did not name.
        Some(S::PAUSED | S::EMPTY) | None => ServiceState::Unknown,
    }
}

fn log_line(out: bollard::container::LogOutput, service: &str, replica: u32) -> LogLine {
    let (stream, bytes) = match out {
        bollard::container::LogOutput::StdErr { message } => (LogStream::Stderr, message),
        bollard::container::LogOutput::StdOut { message }
        | bollard::container::LogOutput::Console { message }
        | bollard::container::LogOutput::StdIn { message } => (LogStream::Stdout, message),
    };
    LogLine {
        service: service.to_string(),
        replica,
        stream,
        line: String::from_utf8_lossy(&bytes).trim_end_matches('\n').to_string(),
    }
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
        Box::pin(self.deploy_group(lease, group, None))
    }

    fn deploy_version<'a>(
        &'a self,
        lease: &'a LeaseRef,
        group: &'a pazar_api::manifest::ValidGroup,
        version: &'a pazar_types::Hash32,
    ) -> BoxFuture<'a, Result<(), RuntimeError>> {
        Box::pin(async move {
            let v = crate::rollout::version_text(version);
            self.deploy_group(lease, group, Some(&v)).await
        })
    }

    fn status<'a>(
        &'a self,
        lease: &'a LeaseRef,
        group: &'a pazar_api::manifest::ValidGroup,
    ) -> BoxFuture<'a, Result<GroupStatus, RuntimeError>> {
        Box::pin(self.group_status(lease, group))
    }

    fn logs<'a>(
        &'a self,
        lease: &'a LeaseRef,
        service: Option<&'a str>,
        tail: usize,
        follow: bool,
    ) -> BoxFuture<'a, Result<LogLines, RuntimeError>> {
        Box::pin(self.lease_logs(lease, service, tail, follow))
    }

    fn close<'a>(&'a self, lease: &'a LeaseRef) -> BoxFuture<'a, Result<(), RuntimeError>> {
        Box::pin(self.close_lease(lease))
    }

    fn stop<'a>(&'a self, lease: &'a LeaseRef) -> BoxFuture<'a, Result<(), RuntimeError>> {
        Box::pin(self.stop_lease(lease))
    }

    fn open_volumes<'a>(
        &'a self,
        lease: &'a LeaseRef,
        group: &'a pazar_api::manifest::ValidGroup,
        make: bool,
    ) -> BoxFuture<'a, Result<crate::OpenVolumes, RuntimeError>> {
        Box::pin(self.open_lease_volumes(lease, group, make))
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
