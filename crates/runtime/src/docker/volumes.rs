//! A Docker lease's persistent volumes reached from the host, for snapshots and restores. A
//! size-bounded volume ([`crate::loopfs`]) is mounted by Docker only inside the containers that
//! use it, so the provider mounts its device once more, `nosuid,nodev,noexec`, on a private
//! directory of its own (`<state_dir>/snapshot-mounts/<volume>`), undone when the access is
//! dropped; an unbounded volume (no loop devices) is read at the engine's own mount point.
//! Must not know what is read or written there.

use std::path::PathBuf;

use pazar_api::manifest::Group;

use super::{backend, check_owner, is_not_found, DockerRuntime};
use crate::{LeaseRef, OpenVolumes, RuntimeError, VolumeDir};

impl DockerRuntime {
    /// [`crate::Runtime::open_volumes`] for Docker (see the module's doc).
    pub(super) async fn open_lease_volumes(
        &self,
        lease: &LeaseRef,
        group: &Group,
        make: bool,
    ) -> Result<OpenVolumes, RuntimeError> {
        // Filled as mounts are made, so an error below undoes those already made.
        let mut open = OpenVolumes::default();
        for svc in &group.services {
            if make {
                self.ensure_volumes(lease, svc).await?;
            }
            for (name, m, bytes) in Self::service_volumes(lease, svc) {
                let info = match self.docker.inspect_volume(&name).await {
                    Ok(v) => {
                        check_owner(Some(&v.labels), lease, "volume", &name)?;
                        v
                    }
                    Err(e) if is_not_found(&e) => return Err(RuntimeError::UnknownLease(lease.label())),
                    Err(e) => return Err(backend(e)),
                };
                let path = match (&self.volumes, &self.opts.state_dir) {
                    (Ok(fs), Some(state)) => {
                        let (fs, n) = (fs.clone(), name.clone());
                        let at = state.join("snapshot-mounts").join(&name);
                        let mount_at = at.clone();
                        tokio::task::spawn_blocking(move || {
                            // Attached again if a reboot detached it; made only if `make` made it above.
                            let dev = fs.ensure(&n, bytes)?;
                            crate::loopfs::mount_private(&dev, &mount_at)
                        })
                        .await
                        .map_err(backend)?
                        .map_err(|e| RuntimeError::Backend(format!("volume {:?}: {e}", m.name)))?;
                        open.add_mount(at.clone());
                        at
                    }
                    _ => PathBuf::from(info.mountpoint),
                };
                open.dirs.push(VolumeDir {
                    service: svc.name.clone(),
                    volume: m.name.clone(),
                    path,
                    owner: None,
                    bytes,
                });
            }
        }
        Ok(open)
    }
}
