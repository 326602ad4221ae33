//! A sandboxed lease's persistent volumes: ext4 filesystems of the leased size
//! ([`crate::loopfs`]) mounted `nosuid,nodev` under the lease's directory and bound into the
//! sandbox, unmounted before the lease's directory goes and deleted with the lease or with the
//! service that mounted them. Must not know processes or logs.

use std::path::Path;

use pazar_api::manifest::Group;

use crate::loopfs::LoopFs;
use crate::{is_ram, volume, RuntimeError};

use super::names::{volume_dir, volume_file, HostName, LeaseKey};
use super::{backend, SandboxRuntime};

/// Whether `path` is a mount point (its device differs from its parent's).
fn is_mount_point(path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(path), path.parent().map(std::fs::metadata)) {
        (Ok(m), Some(Ok(p))) => m.dev() != p.dev(),
        _ => false,
    }
}

/// Mounts the volume's filesystem on `dir` unless it is mounted there already (a daemon
/// restart keeps mounts; a reboot does not).
fn mount_volume(dev: &Path, dir: &Path) -> Result<(), RuntimeError> {
    use nix::mount::{mount, MsFlags};
    if is_mount_point(dir) {
        return Ok(());
    }
    mount(
        Some(dev),
        dir,
        Some("ext4"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        None::<&str>,
    )
    .map_err(|e| backend(format!("cannot mount {} on {}: {e}", dev.display(), dir.display())))
}

/// Detaches the volume mounted on `dir`, if any.
fn unmount_volume(dir: &Path) -> Result<(), RuntimeError> {
    use nix::mount::{umount2, MntFlags};
    if !is_mount_point(dir) {
        return Ok(());
    }
    umount2(dir, MntFlags::MNT_DETACH).map_err(|e| backend(format!("cannot unmount {}: {e}", dir.display())))
}

impl SandboxRuntime {
    /// Makes each persistent volume of `group` (kept as it is when it exists): its directory
    /// under the lease's, and where loop devices allow, a filesystem of the leased size mounted
    /// there; owned by the sandbox user.
    pub(super) fn prepare_volumes(&self, key: &LeaseKey, group: &Group) -> Result<(), RuntimeError> {
        let dir = self.lease_dir(key);
        let io = |e: std::io::Error| backend(format!("cannot prepare {}: {e}", dir.display()));
        for svc in &group.services {
            let svc_name = HostName::parse("service", &svc.name)?;
            for m in svc.storage.iter().filter(|m| !is_ram(svc, &m.name)) {
                let vol = HostName::volume(&m.name)?;
                let v = volume_dir(&dir, svc_name, vol);
                std::fs::create_dir_all(&v).map_err(io)?;
                if let Ok(fs) = &self.volumes {
                    let bytes = volume(svc, &m.name).map_or(0, |r| r.bytes);
                    let dev = fs
                        .ensure(&volume_file(key, svc_name, vol), bytes)
                        .map_err(|e| backend(format!("volume {vol}: {e}")))?;
                    mount_volume(&dev, &v)?;
                }
                nix::unistd::chown(
                    &v,
                    Some(nix::unistd::Uid::from_raw(self.opts.uid)),
                    Some(nix::unistd::Gid::from_raw(self.opts.gid)),
                )
                .map_err(|e| backend(format!("cannot chown {}: {e}", v.display())))?;
            }
        }
        Ok(())
    }

    /// [`crate::Runtime::open_volumes`] for the sandbox: the volumes are mounted under the
    /// lease's directory anyway (mounted again here if a reboot unmounted them); a restore gives
    /// every entry to the sandbox user, the one user its replicas run as.
    pub(super) fn open_lease_volumes(
        &self,
        lease: &crate::LeaseRef,
        group: &Group,
        make: bool,
    ) -> Result<crate::OpenVolumes, RuntimeError> {
        let key = LeaseKey::of(lease);
        let dir = self.lease_dir(&key);
        if !make && !dir.join("lease.json").exists() {
            return Err(RuntimeError::UnknownLease(lease.label()));
        }
        Self::check_group(group)?;
        self.prepare_volumes(&key, group)?;
        let mut dirs = Vec::new();
        for svc in &group.services {
            let svc_name = HostName::parse("service", &svc.name)?;
            for (vol, bytes) in crate::persistent_mounts(svc) {
                dirs.push(crate::VolumeDir {
                    service: svc.name.clone(),
                    volume: vol.to_string(),
                    path: volume_dir(&dir, svc_name, HostName::volume(vol)?),
                    owner: Some((self.opts.uid, self.opts.gid)),
                    bytes,
                });
            }
        }
        Ok(crate::OpenVolumes::new(dirs))
    }

    /// Unmounts the volumes of `old` whose service or volume `group` no longer has, then deletes
    /// their files (the tenant no longer pays for them).
    pub(super) fn remove_gone_volumes(&self, key: &LeaseKey, old: &Group, group: &Group) -> Result<(), RuntimeError> {
        let dir = self.lease_dir(key);
        for svc in &old.services {
            let svc_name = HostName::parse("service", &svc.name)?;
            let now = group.services.iter().find(|s| s.name == svc.name);
            for m in svc.storage.iter().filter(|m| !is_ram(svc, &m.name)) {
                if now.is_some_and(|n| n.storage.iter().any(|k| k.name == m.name && !is_ram(n, &k.name))) {
                    continue;
                }
                let vol = HostName::volume(&m.name)?;
                unmount_volume(&volume_dir(&dir, svc_name, vol))?;
                let _ = std::fs::remove_dir(volume_dir(&dir, svc_name, vol));
                if let Ok(fs) = &self.volumes {
                    fs.remove(&volume_file(key, svc_name, vol)).map_err(backend)?;
                }
            }
        }
        Ok(())
    }
}

/// Unmounts every volume mounted under the lease's directory `dir` and deletes every volume file
/// of the lease.
pub(super) fn remove_lease_volumes(
    dir: &Path,
    volumes: &Result<LoopFs, String>,
    key: &LeaseKey,
) -> Result<(), RuntimeError> {
    for e in std::fs::read_dir(dir.join("volumes")).into_iter().flatten().flatten() {
        unmount_volume(&e.path())?;
    }
    if let Ok(fs) = &volumes {
        for n in fs.names(&format!("{key}.")) {
            fs.remove(&n).map_err(backend)?;
        }
    }
    Ok(())
}
