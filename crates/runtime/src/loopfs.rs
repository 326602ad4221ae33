//! Size-bounded persistent volumes: each volume is an ext4 filesystem in a sparse file of its
//! own, attached to a loop device. A workload that fills it gets `ENOSPC`, as on a real disk of
//! the size it leased, whatever the host's storage driver can or cannot cap. Both runtimes use
//! it: Docker mounts the device as a `local` volume (`type=ext4`), the sandbox mounts it on the
//! host and binds it in.
//!
//! Files live in one directory: `<name>.ext4` (the filesystem) and `<name>.dev`, a symlink to
//! the loop device it is attached to now. The link is the stable name given to Docker: after a
//! reboot the file is attached again (maybe to another `/dev/loopN`) and the link moves with it.

use std::path::{Path, PathBuf};

use super::sandbox::host_command;

/// Refuses a volume name that is not safe as a file name of this directory and as an argument
/// of the tools: 1-200 ASCII letters, digits, `.`, `_` and `-`, the first a letter or digit (so
/// no `/`, no `..`, no option). Both runtimes name volumes after lease, service and volume
/// names; this is the last check before those reach the host.
fn checked(name: &str) -> Result<&str, String> {
    let b = name.as_bytes();
    let ok = !b.is_empty()
        && b.len() <= 200
        && b[0].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'));
    if ok {
        Ok(name)
    } else {
        Err(format!("{name:?} cannot name a volume file"))
    }
}

/// ext4's own space (journal, inode tables) on top of what the tenant asked for: a 4 MiB
/// journal, one inode per 64 KiB, then 2 % and 8 MiB of slack so that at least the leased
/// bytes are free on the fresh filesystem (32 MiB gives 34.6 MiB free, 1 GiB 1.0016 GiB).
fn file_bytes(leased: u64) -> u64 {
    let b = leased.saturating_add(leased / 50).saturating_add(8 << 20);
    b.checked_next_multiple_of(4096).unwrap_or(b / 4096 * 4096)
}

fn run(cmd: &str, args: &[&str]) -> Result<String, String> {
    let out = host_command(cmd)
        .args(args)
        .output()
        .map_err(|e| format!("cannot run `{cmd}`: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "`{cmd} {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Why volumes cannot be bounded here, if they cannot: loop devices and the tools need root
/// (Debian's util-linux `losetup`, e2fsprogs `mkfs.ext4` and `debugfs`).
pub fn unavailable() -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("size-bounded volumes need root (loop devices)".into());
    }
    if !Path::new("/dev/loop-control").exists() {
        return Some("this host has no loop devices (/dev/loop-control)".into());
    }
    for (tool, package) in [
        ("losetup", "util-linux"),
        ("mkfs.ext4", "e2fsprogs"),
        ("debugfs", "e2fsprogs"),
    ] {
        if host_command(tool).arg("-V").output().is_err() {
            return Some(format!("`{tool}` is missing (Debian's {package})"));
        }
    }
    None
}

/// Whether `path` is a mount point (its device differs from its parent's).
pub(crate) fn is_mount_point(path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(path), path.parent().map(std::fs::metadata)) {
        (Ok(m), Some(Ok(p))) => m.dev() != p.dev(),
        _ => false,
    }
}

/// Mounts the volume behind `dev` on `dir` for the provider's own access (a snapshot read or a
/// restore), `nosuid,nodev,noexec`: a second mount of a filesystem a container may have
/// mounted too (the kernel shares one superblock between them). Whatever an earlier access
/// left mounted on `dir` goes first.
pub(crate) fn mount_private(dev: &Path, dir: &Path) -> Result<(), String> {
    use nix::mount::{mount, umount2, MntFlags, MsFlags};
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot make {}: {e}", dir.display()))?;
    while is_mount_point(dir) {
        umount2(dir, MntFlags::MNT_DETACH).map_err(|e| format!("cannot unmount {}: {e}", dir.display()))?;
    }
    mount(
        Some(dev),
        dir,
        Some("ext4"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None::<&str>,
    )
    .map_err(|e| format!("cannot mount {} on {}: {e}", dev.display(), dir.display()))
}

/// The volumes of one runtime, in one directory.
#[derive(Debug, Clone)]
pub struct LoopFs {
    dir: PathBuf,
}

impl LoopFs {
    pub fn new(dir: impl Into<PathBuf>) -> LoopFs {
        LoopFs { dir: dir.into() }
    }

    fn image(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.ext4"))
    }

    /// The stable device path of `name` (a symlink to its loop device).
    pub fn device(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.dev"))
    }

    /// Loop devices the file of `name` is attached to.
    fn attached(&self, name: &str) -> Result<Vec<String>, String> {
        let img = self.image(name);
        let out = run("losetup", &["-j", &img.to_string_lossy()])?;
        Ok(out
            .lines()
            .filter_map(|l| l.split(':').next())
            .filter(|d| d.starts_with("/dev/loop"))
            .map(str::to_string)
            .collect())
    }

    /// Makes the filesystem the first time (empty: no `lost+found`, so images that want an
    /// empty data directory get one), attaches it when it is not, points the link at its loop
    /// device, and returns the link.
    pub fn ensure(&self, name: &str, leased: u64) -> Result<PathBuf, String> {
        let name = checked(name)?;
        std::fs::create_dir_all(&self.dir).map_err(|e| format!("cannot make {}: {e}", self.dir.display()))?;
        let img = self.image(name);
        let img_s = img.to_string_lossy().into_owned();
        if !img.exists() {
            let partial = self.dir.join(format!("{name}.ext4.new"));
            let partial_s = partial.to_string_lossy().into_owned();
            let f = std::fs::File::create(&partial).map_err(|e| format!("cannot create {partial_s}: {e}"))?;
            f.set_len(file_bytes(leased))
                .map_err(|e| format!("cannot size {partial_s}: {e}"))?;
            drop(f);
            run(
                "mkfs.ext4",
                &[
                    "-q",
                    "-F",
                    "-m",
                    "0",
                    "-i",
                    "65536",
                    "-J",
                    "size=4",
                    "-E",
                    "root_owner=0:0",
                    &partial_s,
                ],
            )?;
            run("debugfs", &["-w", "-R", "rmdir lost+found", &partial_s])?;
            std::fs::rename(&partial, &img).map_err(|e| format!("cannot rename {partial_s}: {e}"))?;
        }
        let dev = match self.attached(name)?.into_iter().next() {
            Some(d) => d,
            None => run("losetup", &["--find", "--show", &img_s])?.trim().to_string(),
        };
        let link = self.device(name);
        let current = std::fs::read_link(&link).ok();
        if current.as_deref() != Some(Path::new(&dev)) {
            let tmp = self.dir.join(format!("{name}.dev.new"));
            let _ = std::fs::remove_file(&tmp);
            std::os::unix::fs::symlink(&dev, &tmp).map_err(|e| format!("cannot link {dev}: {e}"))?;
            std::fs::rename(&tmp, &link).map_err(|e| format!("cannot link {}: {e}", link.display()))?;
        }
        Ok(link)
    }

    /// Removes every link that does not lead to its own file's loop device. After a reboot a
    /// link may name a device now attached to another volume, and Docker, restarting a
    /// container before the daemon is back, would mount that; without the link the mount fails
    /// until [`LoopFs::ensure`] makes it right. Called before any volume is attached. Returns
    /// how many links went.
    pub fn sweep_links(&self) -> Result<usize, String> {
        let Ok(rd) = std::fs::read_dir(&self.dir) else {
            return Ok(0);
        };
        let mut removed = 0;
        for e in rd.flatten() {
            let file = e.file_name().to_string_lossy().into_owned();
            let Some(name) = file.strip_suffix(".dev") else {
                continue;
            };
            let own = std::fs::canonicalize(self.image(name)).ok();
            let backing = std::fs::read_link(e.path()).ok().and_then(|dev| {
                let n = dev.file_name()?.to_string_lossy().into_owned();
                let b = std::fs::read_to_string(format!("/sys/block/{n}/loop/backing_file")).ok()?;
                Some(PathBuf::from(b.trim_end()))
            });
            if own.is_none() || backing != own {
                std::fs::remove_file(e.path()).map_err(|err| format!("cannot remove {file}: {err}"))?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Detaches and deletes the volume `name`; absent is fine. Its filesystem must be unmounted.
    pub fn remove(&self, name: &str) -> Result<(), String> {
        let name = checked(name)?;
        if self.image(name).exists() {
            for dev in self.attached(name)? {
                run("losetup", &["-d", &dev])?;
            }
        }
        for p in [self.device(name), self.image(name)] {
            match std::fs::remove_file(&p) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(format!("cannot remove {}: {e}", p.display())),
            }
        }
        Ok(())
    }

    /// Names of the volumes whose name starts with `prefix`.
    pub fn names(&self, prefix: &str) -> Vec<String> {
        let Ok(rd) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut out: Vec<String> = rd
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter_map(|f| f.strip_suffix(".ext4").map(str::to_string))
            .filter(|n| n.starts_with(prefix))
            .collect();
        out.sort();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::{file_bytes, unavailable, LoopFs};

    /// Needs root and loop devices, as the daemon does (the test suite runs as root).
    #[test]
    fn a_link_left_on_another_volume_s_device_is_swept_and_made_right_again() {
        assert_eq!(unavailable(), None);
        let dir = tempfile::tempdir().expect("tempdir");
        let fs = LoopFs::new(dir.path());
        let a = fs.ensure("a", 1 << 20).expect("volume a");
        let b = fs.ensure("b", 1 << 20).expect("volume b");
        let dev_b = std::fs::read_link(&b).expect("b's link");
        assert_ne!(std::fs::read_link(&a).expect("a's link"), dev_b);
        assert_eq!(fs.sweep_links(), Ok(0), "right links stay");
        // As after a reboot: a is not attached, and its link names the device b now has.
        for dev in fs.attached("a").expect("losetup") {
            super::run("losetup", &["-d", &dev]).expect("detach");
        }
        std::fs::remove_file(&a).expect("unlink");
        std::os::unix::fs::symlink(&dev_b, &a).expect("stale link");
        assert_eq!(fs.sweep_links(), Ok(1));
        assert!(
            !a.exists() && std::fs::symlink_metadata(&a).is_err(),
            "the stale link is gone"
        );
        assert_eq!(std::fs::read_link(&b).expect("b's link"), dev_b, "b's link stays");
        let a = fs.ensure("a", 1 << 20).expect("a again");
        assert_ne!(std::fs::read_link(&a).expect("a's link"), dev_b);
        assert_eq!(fs.sweep_links(), Ok(0));
        fs.remove("a").expect("remove a");
        fs.remove("b").expect("remove b");
        assert!(fs.names("").is_empty());
    }

    #[test]
    fn the_file_leaves_room_for_ext4_and_is_block_aligned() {
        for leased in [1u64 << 20, 32 << 20, 1 << 30, 100 << 30] {
            let b = file_bytes(leased);
            assert_eq!(b % 4096, 0);
            assert!(b >= leased + (8 << 20));
            assert!(b <= leased + leased / 50 + (8 << 20) + 4096);
        }
        assert_eq!(file_bytes(u64::MAX), u64::MAX / 4096 * 4096);
    }
}
