//! A running Docker lease brought to a new group one replica at a time: a replica whose
//! [`spec_hash`] differs from what the group asks is replaced by a container of the new spec,
//! made beside it under a temporary name (`<replica>-next`) on its own host ports, and only once
//! that one serves (running, every exposed TCP port accepting) is the old one removed and the
//! new one given the replica's name; the next replica waits for that. A new container that
//! does not serve within the wait is removed and the update stops with the reason, the old
//! replica (and every one after it) still serving. A replica the group asks for unchanged keeps
//! running and is recorded as running the new version. Must not know how images are pulled or
//! which replicas the group dropped (converge removed those before).

use std::time::{Duration, Instant};

use bollard::query_parameters::RenameContainerOptions;

use pazar_api::manifest::{Group, Service};

use super::network::lease_address;
use super::spec::{spec_hash, LABEL_SPEC, LABEL_VERSION};
use super::{backend, tcp_ports_open, DockerRuntime};
use crate::rollout::{not_serving, READY_POLL};
use crate::{LeaseRef, RuntimeError};

/// The temporary name of the container that replaces `name` while it starts. It ends in
/// `-next`, never in a replica's number, so it is no replica's name and a deploy that finds one
/// left by an interrupted update removes it.
fn next_name(name: &str) -> String {
    format!("{name}-next")
}

/// An error's sentence without the "the runtime refused" its display adds, to wrap it in
/// another.
fn sentence(e: RuntimeError) -> String {
    match e {
        RuntimeError::Backend(why) => why,
        other => other.to_string(),
    }
}

impl DockerRuntime {
    /// How long a new replica may take to serve before an update stops (default
    /// [`crate::rollout::DEFAULT_READY_WAIT`]).
    pub fn set_ready_wait(&mut self, wait: Duration) {
        self.ready_wait = wait;
    }

    /// The version the container `name` runs: the one a deploy recorded for it when it kept it
    /// unchanged, else the one it was made from (its label).
    pub(super) fn replica_version(
        &self,
        name: &str,
        labels: Option<&std::collections::HashMap<String, String>>,
    ) -> Option<String> {
        let kept = self.versions.lock().ok().and_then(|v| v.get(name).cloned());
        kept.or_else(|| labels.and_then(|l| l.get(LABEL_VERSION)).cloned())
    }

    fn note_version(&self, name: &str, version: Option<&str>) {
        if let Ok(mut v) = self.versions.lock() {
            match version {
                Some(version) => v.insert(name.to_string(), version.to_string()),
                None => v.remove(name),
            };
        }
    }

    /// Forgets the versions recorded for the lease's containers (it is closed).
    pub(super) fn forget_versions(&self, lease: &LeaseRef) {
        let prefix = format!("{}-", lease.name());
        if let Ok(mut v) = self.versions.lock() {
            v.retain(|name, _| !name.starts_with(&prefix));
        }
    }

    /// Makes every replica of `group` run, each as its service asks, one replica at a time (see
    /// the module's doc). Called under the lifecycle lock, on the lease's network `net`, after
    /// [`DockerRuntime::converge`] removed what the group no longer has.
    pub(super) async fn roll_out(
        &self,
        lease: &LeaseRef,
        net: &str,
        group: &Group,
        version: Option<&str>,
    ) -> Result<(), RuntimeError> {
        for svc in &group.services {
            self.ensure_volumes(lease, svc).await?;
            let spec = spec_hash(svc);
            for replica in 0..svc.count {
                let name = Self::container_name(lease, &svc.name, replica);
                // What an update cut short (the daemon killed while a new replica started)
                // left: it never became the replica, so it goes.
                let next = next_name(&name);
                if self.inspect_own(&next, lease).await?.is_some() {
                    self.remove(&next).await?;
                }
                let made_from = match self.inspect_own(&name, lease).await? {
                    None => None,
                    Some(info) => Some(
                        info.config
                            .and_then(|c| c.labels)
                            .and_then(|mut l| l.remove(LABEL_SPEC))
                            .unwrap_or_default(),
                    ),
                };
                match made_from {
                    None => {
                        self.create_and_start(&name, self.versioned_body(lease, net, svc, replica, version))
                            .await?;
                        self.note_version(&name, None);
                    }
                    Some(s) if s == spec => {
                        // Unchanged: it keeps running, and runs this version as it is. A
                        // redeploy without a version leaves what it runs as recorded.
                        self.docker.start_container(&name, None).await.map_err(backend)?;
                        if version.is_some() {
                            self.note_version(&name, version);
                        }
                    }
                    Some(_) => self.replace(lease, net, svc, replica, version).await?,
                }
            }
        }
        Ok(())
    }

    /// The container body of a replica of `svc`, labelled with the version it is made for.
    fn versioned_body(
        &self,
        lease: &LeaseRef,
        net: &str,
        svc: &Service,
        replica: u32,
        version: Option<&str>,
    ) -> bollard::models::ContainerCreateBody {
        let mut body = self.container_body(lease, net, svc, replica);
        if let (Some(labels), Some(v)) = (body.labels.as_mut(), version) {
            labels.insert(LABEL_VERSION.into(), v.to_string());
        }
        body
    }

    /// Replaces replica `replica` of `svc` by a container of what `svc` asks now: the new one
    /// starts beside the old one, and takes its name once it serves.
    async fn replace(
        &self,
        lease: &LeaseRef,
        net: &str,
        svc: &Service,
        replica: u32,
        version: Option<&str>,
    ) -> Result<(), RuntimeError> {
        let name = Self::container_name(lease, &svc.name, replica);
        let next = next_name(&name);
        let started = self
            .create_and_start(&next, self.versioned_body(lease, net, svc, replica, version))
            .await;
        let served = match started {
            Ok(()) => self.wait_serving(lease, &next, svc).await,
            Err(e) => Err(sentence(e)),
        };
        if let Err(why) = served {
            // The old replica was never touched: it serves on.
            self.remove(&next).await?;
            return Err(RuntimeError::Backend(not_serving(
                &svc.name,
                replica,
                version,
                self.ready_wait,
                &why,
            )));
        }
        self.remove(&name).await?;
        self.docker
            .rename_container(&next, RenameContainerOptions { name: name.clone() })
            .await
            .map_err(backend)?;
        self.note_version(&name, None);
        Ok(())
    }

    /// Waits until the container `name` serves (running, not restarting, every TCP port `svc`
    /// exposes accepting a connection), at most the ready wait; otherwise says why not.
    async fn wait_serving(&self, lease: &LeaseRef, name: &str, svc: &Service) -> Result<(), String> {
        let t0 = Instant::now();
        loop {
            let info = self
                .inspect_own(name, lease)
                .await
                .map_err(sentence)?
                .ok_or("the new container was removed")?;
            let state = info.state.clone().unwrap_or_default();
            let running = state.running == Some(true) && state.restarting != Some(true);
            if running && tcp_ports_open(lease_address(&info, lease), svc).await {
                return Ok(());
            }
            if t0.elapsed() >= self.ready_wait {
                return Err(if running {
                    "it runs, but does not accept connections on every port it exposes".to_string()
                } else {
                    let err = state.error.filter(|e| !e.is_empty());
                    err.unwrap_or_else(|| format!("it exited with code {}", state.exit_code.unwrap_or(0)))
                });
            }
            tokio::time::sleep(READY_POLL).await;
        }
    }
}
