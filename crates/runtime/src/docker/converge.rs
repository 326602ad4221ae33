//! What a Docker lease runs made exactly what its group asks: containers whose (service,
//! replica) the group lacks are removed before anything is made (those whose spec differs are
//! replaced one at a time by `rollout`), volumes no service mounts go with their files once the
//! group runs, and the volumes the group mounts are made (size-bounded where loop devices
//! allow). Must not know how a container is started or how storage is policed.

use std::collections::{HashMap, HashSet};

use bollard::query_parameters::{ListContainersOptions, ListVolumesOptions, RemoveVolumeOptions};

use pazar_api::manifest::{Group, Service};

use super::spec::VOLUME_MOUNT_OPTIONS;
use super::{backend, check_owner, is_not_found, DockerRuntime};
use crate::{LeaseRef, RuntimeError};

impl DockerRuntime {
    /// The Docker volumes `svc` mounts (its persistent storage; `ram` volumes are tmpfs), with
    /// the mount and the bytes leased.
    pub(super) fn service_volumes<'s>(
        lease: &'s LeaseRef,
        svc: &'s Service,
    ) -> impl Iterator<Item = (String, &'s pazar_api::manifest::StorageMount, u64)> + 's {
        svc.storage.iter().filter_map(move |m| {
            let vol = crate::volume(svc, &m.name).filter(|_| !crate::is_ram(svc, &m.name))?;
            Some((Self::volume_name(lease, &svc.name, &m.name), m, vol.bytes))
        })
    }

    /// Makes what the lease runs no more than what `group` asks for, before anything new is
    /// made: every container labelled with the lease's id whose (service, replica) the group
    /// does not have is removed (a new replica an interrupted update left under its temporary
    /// name too). Without it a tenant that renames its one service at each manifest update
    /// (every manifest fits the lease on its own) keeps every earlier service's containers
    /// running on a lease of one replica. A replica whose spec hash differs from what the
    /// group asks stays until `rollout` has a new one serving in its place, and a container the
    /// group asks for as it is stays untouched (a redeploy restarts nothing). Called under the
    /// lifecycle lock.
    pub(super) async fn converge(&self, lease: &LeaseRef, group: &Group) -> Result<(), RuntimeError> {
        let wanted: HashSet<String> = group
            .services
            .iter()
            .flat_map(|svc| (0..svc.count).map(move |r| Self::container_name(lease, &svc.name, r)))
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
            let Some(name) = c.names.and_then(|n| n.into_iter().next()) else {
                continue;
            };
            let name = name.trim_start_matches('/');
            if wanted.contains(name) {
                continue;
            }
            // A replica that leaves the group takes the logs of its evictions along.
            if let Some(path) = self.kept_logs(name) {
                let _ = std::fs::remove_file(path);
            }
            self.remove(name).await?;
        }
        Ok(())
    }

    /// Removes every volume of the lease that no service of `group` mounts, with its file: the
    /// volumes removed are this tenant's own (labelled with its lease's id) and belong to
    /// services or mounts it no longer has; a volume a service of the group still mounts keeps
    /// its data. Called under the lifecycle lock once the group runs, so no replica of an
    /// earlier service still mounts what goes.
    pub(super) async fn remove_unmounted_volumes(&self, lease: &LeaseRef, group: &Group) -> Result<(), RuntimeError> {
        let volumes: HashSet<String> = group
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

    /// Makes the Docker volumes `svc` mounts that do not exist yet, each a filesystem of the
    /// leased size where loop devices allow; another lease's volume under one of their names is
    /// refused and left alone.
    pub(super) async fn ensure_volumes(&self, lease: &LeaseRef, svc: &Service) -> Result<(), RuntimeError> {
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
        Ok(())
    }

    /// Removes every volume of the lease (labelled with its id) and every volume file named
    /// after it.
    pub(super) async fn remove_volumes(&self, lease: &LeaseRef) -> Result<(), RuntimeError> {
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
        Ok(())
    }
}
