//! Ephemeral storage where the engine's storage driver cannot cap a writable layer: replicas
//! whose layer outgrows what their service leased are evicted as kubelet does. Their last log
//! lines are kept for the tenant, the container is made again from the image on the same host
//! ports, and labels carry the eviction count, its reason and the restarts before it. Must not
//! know the chain: the caller says which leases run which groups.

use std::collections::HashMap;
use std::path::PathBuf;

use bollard::query_parameters::{InspectContainerOptions, ListContainersOptions, LogsOptions};
use futures_util::StreamExt;

use pazar_api::manifest::Service;

use super::spec::{
    spec_hash, LABEL_EVICTED, LABEL_EVICTIONS, LABEL_LEASE, LABEL_LEASE_ID, LABEL_RESTARTS, LABEL_SPEC, LABEL_VERSION,
};
use super::{backend, log_line, DockerRuntime};
use crate::{LeaseRef, RuntimeError};

/// Log lines of an evicted replica kept for the tenant (over all its evictions).
const KEPT_LOG_LINES: usize = 1000;

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
pub(super) fn driver_bounds_storage(driver: &str, status: &[Vec<String>]) -> bool {
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
    pub(super) fn kept_logs(&self, container: &str) -> Option<PathBuf> {
        let dir = self.opts.state_dir.as_ref()?;
        Some(dir.join("evicted").join(format!("{container}.jsonl")))
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
                let Some(limit) = crate::ephemeral_bytes(svc) else {
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
            // Made again from the same service: it runs the version it ran.
            if let Some(v) = labels.get(LABEL_VERSION) {
                l.insert(LABEL_VERSION.into(), v.clone());
            }
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
}

#[cfg(test)]
mod tests {
    use super::driver_bounds_storage;

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
