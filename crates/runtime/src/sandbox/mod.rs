//! The sandbox runtime: a lease's services as sandboxed processes, for hosts without Docker.
//!
//! Each replica is `bwrap` (bubblewrap) started as an unprivileged user (`nobody` by default)
//! in new user, PID, IPC, UTS and cgroup namespaces, with every capability dropped and
//! no-new-privileges, on the image's root filesystem mounted read-only, a size-bounded tmpfs
//! for `/tmp` and `/run` (its ephemeral storage), its own `/proc` and `/dev`, and nothing of the
//! host's files. A cgroup bounds its CPU, memory and process count. All services of a lease
//! share one network namespace that has only loopback (services reach each other on
//! `localhost`, and by name through `/etc/hosts`); the daemon forwards each global port from a
//! host port into it. Replicas are started in their own session and outlive the daemon: after a
//! restart, [`Runtime::deploy`] adopts them (checked by PID and start time) instead of starting
//! them again. Output goes to one log file per replica, appended across restarts.
//! Persistent volumes are ext4 filesystems of the leased size ([`crate::loopfs`]) mounted on
//! the host under the lease's directory and bound into the sandbox; a full one answers
//! `ENOSPC`.
//!
//! Trust: everything in a lease's manifest is the tenant's. The host commands that start a
//! replica run as root until `setpriv` drops to the sandbox user, so they get a fixed
//! environment ([`host_command`]) and a fixed script whose every variable part is a positional
//! parameter; the tenant's environment, mounts and working directory reach `bwrap` as
//! NUL-separated arguments on a pipe (`--args`), never on a command line or through a shell.
//! Every host object named after something the tenant chose (lease directory, log and volume
//! files, cgroups, network namespace, `/etc/hosts` lines) is named through [`LeaseKey`] and
//! [`HostName`], which accept only a safe grammar; mount points inside the sandbox go through
//! [`mount_point`].
//!
//! This file is the driver: options, checking the host and a group, deploy (adopting what a
//! previous daemon started), status, logs, stop (replicas ended, volumes and record kept for
//! the next deploy), close, list and dial. `names` names host objects,
//! `launch` starts a replica from the host, `supervise` keeps replicas running and
//! converges a lease to a new group, `logs` bounds and reads logs, and `volumes` mounts
//! persistent volumes. None of them knows the chain: a lease arrives as a [`LeaseRef`] and a
//! [`ValidGroup`](pazar_api::manifest::ValidGroup).

mod launch;
mod logs;
mod names;
mod supervise;
mod volumes;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::task::AbortHandle;

use pazar_api::manifest::{Group, Proto};

pub use launch::{host_command, workload_env, HOST_PATH, MAX_ARGV, MAX_ENV};
pub use logs::MAX_LOG_LINE;
pub use names::{host_volume_dir, mount_point, replica_cgroup, HostName, LeaseKey};

use launch::start_replica;
use logs::log_stream;
use names::{lease_dir, log_path};
use supervise::{alive, save, supervise, FwdState, LeaseRun, LeaseState, Leases, ReplicaState};
use volumes::remove_lease_volumes;

use crate::cgroup::Cgroup;
use crate::images::{ImageConfig, ImageStore};
use crate::netns;
use crate::{BoxFuture, GroupStatus, LeaseRef, LogLines, Runtime, RuntimeError};
use pazar_api::provider::{Forward, ServiceState, ServiceStatus};
use pazar_files::write_atomic;

#[derive(Debug, Clone)]
pub struct SandboxOptions {
    /// State, logs and volumes of leases (`leases/<name>/`); default image store `images/`.
    pub dir: PathBuf,
    /// Where rootfs images are looked up ([`ImageStore`]).
    pub images: PathBuf,
    /// The host user and group replicas run as.
    pub uid: u32,
    pub gid: u32,
    pub bwrap: PathBuf,
    /// Export images missing from the store from a local Docker engine, when there is one.
    pub docker_images: bool,
    /// Which images of the store (or of the local Docker engine) tenants may run.
    pub local_images: crate::images::ImagePolicy,
}

impl SandboxOptions {
    pub fn new(dir: impl Into<PathBuf>) -> SandboxOptions {
        let dir = dir.into();
        SandboxOptions {
            images: dir.join("images"),
            dir,
            uid: 65534,
            gid: 65534,
            bwrap: PathBuf::from("bwrap"),
            docker_images: true,
            local_images: crate::images::ImagePolicy::default(),
        }
    }
}

pub struct SandboxRuntime {
    opts: SandboxOptions,
    /// Size-bounded persistent volumes (`<dir>/volume-files/`), or why there are none.
    volumes: Result<crate::loopfs::LoopFs, String>,
    images: ImageStore,
    leases: Leases,
    supervisor: AbortHandle,
    /// How long a new replica may take to serve before a manifest update stops.
    ready_wait: Duration,
}

impl Drop for SandboxRuntime {
    fn drop(&mut self) {
        self.supervisor.abort();
    }
}

pub(super) fn backend(e: impl std::fmt::Display) -> RuntimeError {
    RuntimeError::Backend(e.to_string())
}

/// An error's sentence without the "the runtime refused" its display adds, to wrap it in
/// another.
pub(super) fn reason(e: RuntimeError) -> String {
    match e {
        RuntimeError::Backend(why) => why,
        other => other.to_string(),
    }
}

impl SandboxRuntime {
    /// Checks the host (root for cgroups and namespaces, bubblewrap, `ip`), makes the state
    /// directories and starts the supervisor. Must be called within a tokio runtime.
    pub fn new(opts: SandboxOptions) -> Result<SandboxRuntime, RuntimeError> {
        Cgroup::check().map_err(backend)?;
        let out = host_command(&opts.bwrap).arg("--version").output().map_err(|e| {
            backend(format!(
                "cannot run {} ({e}); install Debian's bubblewrap",
                opts.bwrap.display()
            ))
        })?;
        if !out.status.success() {
            return Err(backend(format!("{} --version failed", opts.bwrap.display())));
        }
        host_command("ip")
            .arg("-V")
            .output()
            .map_err(|e| backend(format!("cannot run `ip` ({e}); install Debian's iproute2")))?;
        for d in [opts.dir.join("leases"), opts.images.clone()] {
            std::fs::create_dir_all(&d).map_err(|e| backend(format!("cannot make {}: {e}", d.display())))?;
        }
        reachable_by(&opts.dir, opts.uid)?;
        reachable_by(&opts.images, opts.uid)?;
        let leases: Leases = Arc::default();
        let supervisor = tokio::spawn(supervise(opts.clone(), leases.clone())).abort_handle();
        let volumes = match crate::loopfs::unavailable() {
            Some(why) => Err(why),
            None => {
                let fs = crate::loopfs::LoopFs::new(opts.dir.join("volume-files"));
                fs.sweep_links().map_err(backend)?;
                Ok(fs)
            }
        };
        Ok(SandboxRuntime {
            volumes,
            images: ImageStore::new(&opts.images),
            opts,
            leases,
            supervisor,
            ready_wait: crate::rollout::DEFAULT_READY_WAIT,
        })
    }

    pub fn images(&self) -> &ImageStore {
        &self.images
    }

    /// How long a new replica may take to serve before a manifest update stops (default
    /// [`crate::rollout::DEFAULT_READY_WAIT`]).
    pub fn set_ready_wait(&mut self, wait: Duration) {
        self.ready_wait = wait;
    }

    /// How storage is bounded where it is not, for the operator.
    pub fn storage_notes(&self) -> Vec<String> {
        match &self.volumes {
            Ok(_) => Vec::new(),
            Err(why) => vec![format!("persistent volumes are not size-bounded: {why}")],
        }
    }

    /// Whether persistent volumes are size-bounded filesystems.
    pub fn bounds_volumes(&self) -> bool {
        self.volumes.is_ok()
    }

    fn lease_dir(&self, key: &LeaseKey) -> PathBuf {
        lease_dir(&self.opts.dir, key)
    }

    /// The rootfs and config of `image`, exported from Docker first when allowed and needed.
    async fn resolve(&self, image: &str) -> Result<(PathBuf, ImageConfig), RuntimeError> {
        self.opts.local_images.admit_local(image)?;
        if let Some(found) = self.images.get(image) {
            return Ok(found);
        }
        let missing = || RuntimeError::Image {
            image: image.to_string(),
            reason: format!(
                "no rootfs for it in {} (put one at {}/rootfs)",
                self.opts.images.display(),
                self.opts.images.join(ImageStore::dir_name(image)).display()
            ),
        };
        if !self.opts.docker_images {
            return Err(missing());
        }
        let Ok(docker) = bollard::Docker::connect_with_local_defaults() else {
            return Err(missing());
        };
        if docker.ping().await.is_err() {
            return Err(missing());
        }
        self.images.import_from_docker(&docker, image).await?;
        self.images.get(image).ok_or_else(missing)
    }

    /// Refuses what cannot name host objects safely (see [`HostName`], [`mount_point`],
    /// [`workload_env`]) and what one network namespace per lease cannot run, before anything
    /// is made on the host.
    fn check_group(group: &Group) -> Result<(), RuntimeError> {
        let mut ports: BTreeMap<u16, &str> = BTreeMap::new();
        let mut names = std::collections::BTreeSet::new();
        for svc in &group.services {
            let name = HostName::parse("service", &svc.name)?;
            if !names.insert(name) {
                return Err(backend(format!("service {name} appears twice in the group")));
            }
            for m in &svc.storage {
                HostName::volume(&m.name)
                    .and_then(|_| mount_point(&m.mount))
                    .map_err(|e| backend(format!("service {name}: {}", reason(e))))?;
            }
            workload_env(svc, &ImageConfig::default())?;
            let nul = svc.command.iter().chain(&svc.args).any(|a| a.contains('\0'));
            if svc.command.len() + svc.args.len() > MAX_ARGV || nul {
                return Err(backend(format!(
                    "service {name}: its command has more than {MAX_ARGV} arguments or a NUL byte"
                )));
            }
            for x in &svc.expose {
                if x.proto == Proto::Udp && x.global {
                    return Err(backend(format!(
                        "service {:?} exposes UDP port {}: the sandbox runtime forwards TCP only",
                        svc.name, x.port
                    )));
                }
            }
            let mut own: Vec<u16> = svc.expose.iter().map(|x| x.port).collect();
            own.sort_unstable();
            own.dedup();
            if svc.count > 1 && !own.is_empty() {
                return Err(backend(format!(
                    "service {:?} asks for {} replicas listening on port {}: the sandbox runtime runs a \
                     lease in one network namespace, so only one replica can listen there",
                    svc.name, svc.count, own[0]
                )));
            }
            for p in own {
                if let Some(other) = ports.insert(p, &svc.name) {
                    return Err(backend(format!(
                        "services {other:?} and {:?} both listen on port {p}: the sandbox runtime runs a \
                         lease in one network namespace",
                        svc.name
                    )));
                }
            }
        }
        Ok(())
    }

    /// Checks the group and makes its images ready: each resolved, with the mount points of its
    /// volumes in its rootfs.
    async fn prepare_images(&self, group: &Group) -> Result<(), RuntimeError> {
        Self::check_group(group)?;
        for svc in &group.services {
            let (rootfs, _) = self.resolve(&svc.image).await?;
            for m in &svc.storage {
                ImageStore::ensure_mount_point(&rootfs, mount_point(&m.mount)?)
                    .map_err(|e| backend(format!("service {:?}: {e}", svc.name)))?;
            }
        }
        Ok(())
    }

    /// The lease's files for `group`: its log directory, its `/etc/hosts`, and each persistent
    /// volume made and mounted (kept as they are when they exist).
    fn prepare_host(&self, key: &LeaseKey, group: &Group) -> Result<(), RuntimeError> {
        let dir = self.lease_dir(key);
        let io = |e: std::io::Error| backend(format!("cannot prepare {}: {e}", dir.display()));
        std::fs::create_dir_all(dir.join("logs")).map_err(io)?;
        let mut hosts = String::from("127.0.0.1 localhost\n");
        for svc in &group.services {
            hosts += &format!("127.0.0.1 {}\n", HostName::parse("service", &svc.name)?);
        }
        write_atomic(&dir.join("hosts"), hosts.as_bytes(), 0o644).map_err(io)?;
        self.prepare_volumes(key, group)
    }

    async fn deploy_group(&self, lease: &LeaseRef, group: &Group, version: Option<&str>) -> Result<(), RuntimeError> {
        let key = LeaseKey::of(lease);
        if self.leases.lock().map_err(backend)?.contains_key(key.as_str()) {
            return self.converge(&key, group, version).await;
        }
        self.prepare_images(group).await?;
        let dir = self.lease_dir(&key);
        let saved: Option<LeaseState> = std::fs::read(dir.join("lease.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        // The directory is named after the whole hash of the lease id, so another lease's
        // record here means a collision or tampering: nothing of it is adopted or reused.
        if let Some(s) = saved
            .as_ref()
            .filter(|s| s.label != lease.label() || s.name != key.as_str())
        {
            return Err(backend(format!(
                "{} holds the record of lease {}, not of {}; refusing to adopt it",
                dir.display(),
                s.label,
                lease.label()
            )));
        }
        self.prepare_host(&key, group)?;
        let k = key.clone();
        tokio::task::spawn_blocking(move || netns::create(k.as_str()))
            .await
            .map_err(backend)?
            .map_err(backend)?;

        // Adopt what a previous daemon started; start the rest.
        let mut state = LeaseState {
            name: key.to_string(),
            label: lease.label(),
            group: group.clone(),
            // A restarted daemon that does not say keeps the version on record.
            version: version
                .map(str::to_string)
                .or_else(|| saved.as_ref().and_then(|s| s.version.clone())),
            forwards: Vec::new(),
            replicas: Vec::new(),
        };
        for svc in &group.services {
            for replica in 0..svc.count {
                let old = saved.as_ref().and_then(|s| {
                    s.replicas
                        .iter()
                        .find(|r| r.service == svc.name && r.replica == replica)
                });
                let mut r = old.cloned().unwrap_or_else(|| ReplicaState::new(&svc.name, replica));
                if let Some(pid) = r.pid {
                    if !alive(pid, r.starttime) {
                        r.pid = None;
                        r.last_error = Some("stopped while the provider daemon was down".into());
                    }
                }
                state.replicas.push(r);
            }
        }
        let mut run = LeaseRun {
            key: key.clone(),
            state,
            children: BTreeMap::new(),
            next_start: BTreeMap::new(),
            forwards: Vec::new(),
        };
        for svc in &group.services {
            for x in svc.expose.iter().filter(|x| x.global) {
                let old = saved.as_ref().and_then(|s| {
                    s.forwards
                        .iter()
                        .find(|f| f.service == svc.name && f.port == x.port)
                        .map(|f| f.host_port)
                });
                let listener = match old {
                    Some(p) => match tokio::net::TcpListener::bind(("0.0.0.0", p)).await {
                        Ok(l) => l,
                        // Taken meanwhile: a new port, which status reports.
                        Err(_) => tokio::net::TcpListener::bind(("0.0.0.0", 0)).await.map_err(backend)?,
                    },
                    None => tokio::net::TcpListener::bind(("0.0.0.0", 0)).await.map_err(backend)?,
                };
                let host_port = listener.local_addr().map_err(backend)?.port();
                run.forwards.push(tokio::spawn(forward(listener, key.clone(), x.port)));
                run.state.forwards.push(FwdState {
                    service: svc.name.clone(),
                    replica: 0,
                    port: x.port,
                    host_port,
                });
            }
        }
        let mut failure = None;
        for i in 0..run.state.replicas.len() {
            if run.state.replicas[i].pid.is_none() {
                if let Err(e) = start_replica(&self.opts, &mut run, i) {
                    failure = Some(e);
                    break;
                }
            }
        }
        if failure.is_none() {
            failure = save(&self.opts, &key, &run.state).err();
        }
        self.leases.lock().map_err(backend)?.insert(key.to_string(), run);
        if let Some(e) = failure {
            self.close_lease(&key).await?;
            return Err(e);
        }
        Ok(())
    }

    async fn group_status(&self, lease: &LeaseRef, group: &Group) -> Result<GroupStatus, RuntimeError> {
        let key = LeaseKey::of(lease);
        // Read under the lock, probe ports after it.
        let snapshot = {
            let leases = self.leases.lock().map_err(backend)?;
            leases
                .get(key.as_str())
                .map(|run| (run.state.clone(), run.next_start.keys().cloned().collect::<Vec<_>>()))
        };
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
                // `/tmp` is a tmpfs of the leased size: writes past it fail, nothing is evicted.
                evictions: 0,
                last_eviction: None,
                pull: None,
                version: None,
                update_error: None,
            };
            let Some((state, pending)) = &snapshot else {
                st.state = ServiceState::Missing;
                services.push(st);
                continue;
            };
            st.version = crate::rollout::common_version(
                state
                    .replicas
                    .iter()
                    .filter(|r| r.service == svc.name)
                    .map(|r| r.version.clone()),
            );
            for r in state.replicas.iter().filter(|r| r.service == svc.name) {
                st.restarts += r.restarts;
                let up = r.pid.is_some_and(|p| alive(p, r.starttime));
                if up {
                    let mut open = true;
                    for x in svc.expose.iter().filter(|x| x.proto == Proto::Tcp) {
                        if netns::connect(key.as_str(), x.port, Duration::from_millis(500))
                            .await
                            .is_err()
                        {
                            open = false;
                            break;
                        }
                    }
                    if open {
                        st.running += 1;
                    } else {
                        st.state = ServiceState::Starting;
                    }
                } else {
                    st.state = if pending.contains(&(r.service.clone(), r.replica)) {
                        ServiceState::Restarting
                    } else {
                        ServiceState::Exited
                    };
                    st.last_error = r.last_error.clone();
                }
            }
            for f in state.forwards.iter().filter(|f| f.service == svc.name) {
                st.forwards.push(Forward {
                    port: f.port,
                    proto: Proto::Tcp,
                    host_port: f.host_port,
                    replica: f.replica,
                });
            }
            services.push(st);
        }
        Ok(GroupStatus {
            lease: lease.label(),
            services,
        })
    }

    fn lease_logs(
        &self,
        lease: &LeaseRef,
        service: Option<&str>,
        tail: usize,
        follow: bool,
    ) -> Result<LogLines, RuntimeError> {
        let dir = self.lease_dir(&LeaseKey::of(lease));
        let state: LeaseState = std::fs::read(dir.join("lease.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .filter(|s: &LeaseState| s.label == lease.label())
            .ok_or_else(|| RuntimeError::UnknownLease(lease.label()))?;
        let chosen: Vec<_> = state
            .replicas
            .iter()
            .filter(|r| service.is_none_or(|want| want == r.service))
            .collect();
        if chosen.is_empty() {
            return Err(RuntimeError::UnknownService(service.unwrap_or("").to_string()));
        }
        let mut streams = Vec::new();
        for r in chosen {
            let path = log_path(&dir, HostName::parse("service", &r.service)?, r.replica);
            streams.push(log_stream(path, r.service.clone(), r.replica, tail, follow));
        }
        Ok(futures_util::stream::select_all(streams).boxed())
    }

    async fn close_lease(&self, key: &LeaseKey) -> Result<(), RuntimeError> {
        let mut run = self.leases.lock().map_err(backend)?.remove(key.as_str());
        // The host ports are closed when close returns: each forward is stopped and awaited.
        if let Some(run) = run.as_mut() {
            for f in std::mem::take(&mut run.forwards) {
                f.abort();
                let _ = f.await;
            }
        }
        let opts = self.opts.clone();
        let volumes = self.volumes.clone();
        let key = key.clone();
        tokio::task::spawn_blocking(move || {
            if let Some(mut run) = run {
                for child in run.children.values_mut() {
                    let _ = child.kill();
                    let _ = child.wait();
                }
            }
            remove_processes(&key);
            netns::delete(key.as_str()).map_err(backend)?;
            let dir = lease_dir(&opts.dir, &key);
            // Volumes are unmounted before the directory goes, so removing it cannot reach
            // into them, and their files are deleted after.
            remove_lease_volumes(&dir, &volumes, &key)?;
            if dir.exists() {
                std::fs::remove_dir_all(&dir).map_err(|e| backend(format!("cannot remove {}: {e}", dir.display())))?;
            }
            Ok(())
        })
        .await
        .map_err(backend)?
    }

    /// Stops every replica of the lease and keeps its directory: the record (each replica
    /// marked stopped, so the next deploy starts it), the logs, the volumes still mounted and
    /// the network namespace. The supervisor forgets the lease, so nothing starts it again
    /// until a deploy; its host ports are closed when this returns.
    async fn stop_lease(&self, lease: &LeaseRef) -> Result<(), RuntimeError> {
        let key = LeaseKey::of(lease);
        let mut run = self.leases.lock().map_err(backend)?.remove(key.as_str());
        if let Some(run) = run.as_mut() {
            for f in std::mem::take(&mut run.forwards) {
                f.abort();
                let _ = f.await;
            }
        }
        let opts = self.opts.clone();
        let label = lease.label();
        tokio::task::spawn_blocking(move || {
            let mut state = None;
            if let Some(mut run) = run {
                for child in run.children.values_mut() {
                    let _ = child.kill();
                    let _ = child.wait();
                }
                state = Some(run.state.clone());
            }
            // Adopted replicas (a daemon restarted) are not children: their cgroups go.
            remove_processes(&key);
            let state = state.or_else(|| {
                std::fs::read(lease_dir(&opts.dir, &key).join("lease.json"))
                    .ok()
                    .and_then(|b| serde_json::from_slice::<LeaseState>(&b).ok())
                    .filter(|s| s.label == label && s.name == key.as_str())
            });
            if let Some(mut state) = state {
                for r in &mut state.replicas {
                    r.pid = None;
                    r.last_error = Some("stopped by the provider; its volumes are kept".into());
                }
                save(&opts, &key, &state)?;
            }
            Ok(())
        })
        .await
        .map_err(backend)?
    }

    /// Every lease with a directory here, by [`LeaseRef::name`] (what the daemon compares with
    /// its own leases) and label, both from the lease's record; a directory without a record
    /// that names it is listed by its own name, with no label.
    fn all_leases(&self) -> Result<Vec<(String, String)>, RuntimeError> {
        let mut out = Vec::new();
        let dir = self.opts.dir.join("leases");
        for e in std::fs::read_dir(&dir).map_err(|e| backend(format!("cannot list {}: {e}", dir.display())))? {
            let Ok(e) = e else { continue };
            let name = e.file_name().to_string_lossy().to_string();
            let Some(key) = LeaseKey::parse(&name) else { continue };
            let owned = std::fs::read(e.path().join("lease.json"))
                .ok()
                .and_then(|b| serde_json::from_slice::<LeaseState>(&b).ok())
                .and_then(|s| {
                    let id = s.label.parse().ok()?;
                    let lease = LeaseRef::new(id);
                    (LeaseKey::of(&lease) == key).then(|| (lease.name(), s.label))
                });
            out.push(owned.unwrap_or((name, String::new())));
        }
        out.sort();
        Ok(out)
    }
}

/// Kills every process of the lease and removes its cgroups: all replica groups, known or not,
/// since a crash may have left some.
pub fn remove_lease_processes(lease: &LeaseRef) {
    remove_processes(&LeaseKey::of(lease));
}

fn remove_processes(key: &LeaseKey) {
    let lease_rel = format!("pazar/{key}");
    let Ok(lease_group) = Cgroup::at(&lease_rel) else {
        return;
    };
    let dir = lease_group
        .procs_files()
        .into_iter()
        .next()
        .and_then(|f| f.parent().map(Path::to_path_buf));
    for e in dir
        .into_iter()
        .flat_map(|d| std::fs::read_dir(d).into_iter().flatten().flatten())
    {
        if e.path().is_dir() {
            // Only groups this runtime could have made: others are not touched.
            if let Ok(cg) = Cgroup::at(&format!("{lease_rel}/{}", e.file_name().to_string_lossy())) {
                cg.kill_and_remove();
            }
        }
    }
    Cgroup::remove_dir(&lease_rel);
}

/// The first ancestor of `dir` (existing ones only) that `uid` cannot pass, with its mode.
pub fn blocking_ancestor(dir: &Path, uid: u32) -> Option<(PathBuf, u32)> {
    use std::os::unix::fs::MetadataExt;
    let abs = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    abs.ancestors().skip(1).find_map(|a| {
        let m = std::fs::metadata(a).ok()?;
        let can = if m.uid() == uid {
            m.mode() & 0o100 != 0
        } else {
            m.mode() & 0o001 != 0
        };
        (!can).then(|| (a.to_path_buf(), m.mode() & 0o7777))
    })
}

/// Checks that the sandbox user can walk down to `dir` (bubblewrap opens paths as that user).
fn reachable_by(dir: &Path, uid: u32) -> Result<(), RuntimeError> {
    match blocking_ancestor(dir, uid) {
        None => Ok(()),
        Some((a, mode)) => Err(backend(format!(
            "the sandbox user (uid {uid}) cannot reach {}: {} is mode {mode:o}; set [sandbox] dir to a path \
             it can traverse, such as /var/lib/pazar-sandbox",
            dir.display(),
            a.display(),
        ))),
    }
}

/// Accepts on a host port and joins each connection to `port` in the lease's namespace.
pub(super) async fn forward(listener: tokio::net::TcpListener, ns: LeaseKey, port: u16) {
    loop {
        let Ok((mut inbound, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let ns = ns.clone();
        tokio::spawn(async move {
            if let Ok(mut out) = netns::connect(ns.as_str(), port, Duration::from_secs(5)).await {
                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
            }
        });
    }
}

impl Runtime for SandboxRuntime {
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
        Box::pin(async move { self.lease_logs(lease, service, tail, follow) })
    }

    fn close<'a>(&'a self, lease: &'a LeaseRef) -> BoxFuture<'a, Result<(), RuntimeError>> {
        Box::pin(self.close_lease_ref(lease))
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
        Box::pin(async move { self.open_lease_volumes(lease, group, make) })
    }

    fn leases(&self) -> BoxFuture<'_, Result<Vec<(String, String)>, RuntimeError>> {
        Box::pin(async move { self.all_leases() })
    }

    fn dial<'a>(
        &'a self,
        lease: &'a LeaseRef,
        service: &'a str,
        _replica: u32,
        port: u16,
    ) -> BoxFuture<'a, Result<tokio::net::TcpStream, RuntimeError>> {
        Box::pin(self.dial_lease(lease, service, port))
    }
}

impl SandboxRuntime {
    /// Replicas of one lease share its network namespace, so any replica's port is reached at
    /// `127.0.0.1` inside it.
    async fn dial_lease(
        &self,
        lease: &LeaseRef,
        service: &str,
        port: u16,
    ) -> Result<tokio::net::TcpStream, RuntimeError> {
        let key = LeaseKey::of(lease);
        let known = self
            .leases
            .lock()
            .map_err(backend)?
            .get(key.as_str())
            .map(|run| run.state.group.services.iter().any(|s| s.name == service));
        match known {
            None => return Err(RuntimeError::UnknownLease(lease.label())),
            Some(false) => return Err(RuntimeError::UnknownService(service.to_string())),
            Some(true) => {}
        }
        netns::connect(key.as_str(), port, Duration::from_secs(5))
            .await
            .map_err(|e| backend(format!("{service:?} does not answer on port {port}: {e}")))
    }

    async fn close_lease_ref(&self, lease: &LeaseRef) -> Result<(), RuntimeError> {
        self.close_lease(&LeaseKey::of(lease)).await
    }
}
