//! How the sandbox names host objects after what a tenant chose. Every host path, cgroup,
//! network namespace and `/etc/hosts` line of a lease is built from a [`LeaseKey`] (the whole
//! hash of the lease id) and [`HostName`]s (a safe grammar, checked once), and every mount
//! point inside the sandbox goes through [`mount_point`]. Pure: nothing here touches the host;
//! must not know processes, namespaces or logs.

use std::path::{Path, PathBuf};

use crate::cgroup::Cgroup;
use crate::{LeaseRef, RuntimeError};

use super::backend;

/// Longest mount point inside the sandbox (Linux's `PATH_MAX`).
const MAX_MOUNT_PATH: usize = 4096;

/// A service or volume name made safe to name a host object: one component of a path, of a
/// cgroup or of a file name, an `/etc/hosts` entry, a hostname. The grammar is a lower-case DNS
/// label: 1 to 63 ASCII lower-case letters, digits and `-`, neither first nor last a `-`; so no
/// `/`, `.`, `..`, space, control character or NUL. [`HostName::parse`] is the only way to make
/// one, and every host path of a lease is built from these and a [`LeaseKey`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct HostName<'a>(&'a str);

impl<'a> HostName<'a> {
    /// Checks `name`; `what` says what it names ("service", "volume") in the error.
    pub fn parse(what: &str, name: &'a str) -> Result<HostName<'a>, RuntimeError> {
        let b = name.as_bytes();
        let ok = !b.is_empty()
            && b.len() <= 63
            && b.iter()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
            && b[0] != b'-'
            && b[b.len() - 1] != b'-';
        if ok {
            Ok(HostName(name))
        } else {
            Err(RuntimeError::Backend(format!(
                "{what} name {name:?} cannot name anything on the host: use 1-63 lower-case letters, digits \
                 and '-', neither first nor last a '-'"
            )))
        }
    }

    /// Checks a volume name: the SDL's own grammar ([`pazar_api::names::is_volume_name`]:
    /// 1-63 lower-case letters, digits, `-` and `_`, first and last a letter or digit), so
    /// every volume the SDL accepts names its files here. A volume names only files (its
    /// directory and filesystem), never a host name or a cgroup, where `_` would not do; the
    /// grammar holds no `/`, `.` or control character, so names stay one path component and
    /// `<service>.<volume>` stays unambiguous.
    pub fn volume(name: &'a str) -> Result<HostName<'a>, RuntimeError> {
        if pazar_api::names::is_volume_name(name) && !name.contains(['/', '.']) {
            Ok(HostName(name))
        } else {
            Err(RuntimeError::Backend(format!(
                "volume name {name:?} cannot name anything on the host: use 1-63 lower-case letters, digits, \
                 '-' and '_', first and last a letter or digit"
            )))
        }
    }

    pub fn as_str(&self) -> &'a str {
        self.0
    }
}

impl std::fmt::Display for HostName<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

/// The name of everything the sandbox keeps for one lease (its directory, network namespace,
/// cgroups, volume files): `pz-` and the whole SHA-256 of the lease id (67 characters; nothing
/// here has a kernel limit that forces a shorter one). A shortened hash would let a tenant
/// choosing its deployment sequence grind a lease id whose objects are another lease's; the
/// lease record also keeps the id, and an object recorded for another id is never adopted.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct LeaseKey(String);

impl LeaseKey {
    pub fn of(lease: &LeaseRef) -> LeaseKey {
        use sha2::{Digest, Sha256};
        LeaseKey(format!("pz-{}", hex::encode(Sha256::digest(lease.label().as_bytes()))))
    }

    /// A name read back from the host (a directory under `leases/`), if it is a key.
    pub fn parse(name: &str) -> Option<LeaseKey> {
        let hex = name.strip_prefix("pz-")?;
        (hex.len() == 64 && hex.bytes().all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c)))
            .then(|| LeaseKey(name.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for LeaseKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A volume's mount point inside the sandbox, checked and normalised: absolute and normalised
/// (no empty, `.` or `..` component; one trailing `/` is dropped), no control character, at
/// most [`MAX_MOUNT_PATH`] bytes, and not over what the sandbox mounts itself (`/`, `/proc`,
/// `/dev` but `/dev/shm`, `/sys` and anything under them, `/tmp`, `/run`, `/etc`,
/// `/etc/hosts`).
pub fn mount_point(written: &str) -> Result<&str, RuntimeError> {
    let refuse = |why: &str| {
        Err(RuntimeError::Backend(format!(
            "mount point {written:?} is refused: {why}"
        )))
    };
    // One trailing '/' names the same directory (deploy files write `/mnt/`), as the SDL reads it.
    let path = match written.strip_suffix('/') {
        Some(p) if !p.is_empty() => p,
        _ => written,
    };
    // `/dev/shm` is the one place under the sandbox's `/dev` a volume may go, as the SDL
    // allows: bubblewrap makes that directory in its `/dev` tmpfs and mounts the volume over
    // it (Akash's `ram` volumes are shared memory there).
    if path == "/dev/shm" {
        return Ok(path);
    }
    let Some(rest) = path.strip_prefix('/') else {
        return refuse("it must be an absolute path");
    };
    if path.len() > MAX_MOUNT_PATH || path.chars().any(char::is_control) {
        return refuse("it is too long or holds control characters");
    }
    if rest.is_empty() || rest.split('/').any(|c| c.is_empty() || c == "." || c == "..") {
        return refuse("it must be normalised: no empty, '.' or '..' component and no trailing '/'");
    }
    let first = rest.split('/').next().unwrap_or(rest);
    if ["proc", "dev", "sys"].contains(&first) || ["/tmp", "/run", "/etc", "/etc/hosts"].contains(&path) {
        return refuse("the sandbox mounts its own filesystem there");
    }
    Ok(path)
}

/// Where `volume` of `service` of a lease lies on the host (mounted there, and bound into the
/// sandbox), under the sandbox's directory `dir`.
pub fn host_volume_dir(dir: &Path, lease: &LeaseRef, service: &str, volume: &str) -> Result<PathBuf, RuntimeError> {
    Ok(volume_dir(
        &lease_dir(dir, &LeaseKey::of(lease)),
        HostName::parse("service", service)?,
        HostName::volume(volume)?,
    ))
}

/// The cgroup of one replica of a lease.
pub fn replica_cgroup(lease: &LeaseRef, service: &str, replica: u32) -> Result<Cgroup, RuntimeError> {
    Cgroup::at(&cgroup_rel(
        &LeaseKey::of(lease),
        HostName::parse("service", service)?,
        replica,
    ))
    .map_err(backend)
}

pub(super) fn lease_dir(dir: &Path, key: &LeaseKey) -> PathBuf {
    dir.join("leases").join(key.as_str())
}

/// `volumes/<service>.<volume>`: `.` is in neither grammar, so two pairs never share a name.
pub(super) fn volume_dir(lease_dir: &Path, service: HostName, volume: HostName) -> PathBuf {
    lease_dir.join("volumes").join(format!("{service}.{volume}"))
}

/// The volume's file in [`crate::loopfs`]: `<lease key>.<service>.<volume>`.
pub(super) fn volume_file(key: &LeaseKey, service: HostName, volume: HostName) -> String {
    format!("{key}.{service}.{volume}")
}

pub(super) fn log_path(lease_dir: &Path, service: HostName, replica: u32) -> PathBuf {
    lease_dir.join("logs").join(format!("{service}.{replica}.log"))
}

pub(super) fn cgroup_rel(key: &LeaseKey, service: HostName, replica: u32) -> String {
    format!("pazar/{key}/{service}.{replica}")
}

#[cfg(test)]
mod tests {
    use super::{mount_point, HostName, LeaseKey};

    #[test]
    fn host_names_are_lower_case_dns_labels_and_nothing_else() {
        for ok in ["web", "db-1", "a", "0", &"x".repeat(63)] {
            assert!(HostName::parse("service", ok).is_ok(), "{ok:?}");
        }
        let long = "x".repeat(64);
        for bad in [
            "", "..", ".", "a/b", "../x", "Web", "-a", "a-", "a.b", "a_b", "a b", "a\nb", "a\0b", &long,
        ] {
            let err = HostName::parse("service", bad).expect_err(bad).to_string();
            assert!(err.contains(&format!("service name {bad:?}")), "{err}");
        }
    }

    #[test]
    fn every_volume_name_the_sdl_accepts_names_its_files_and_nothing_else_does() {
        for ok in ["db_data", "a", "x-y_z9", &"v".repeat(63)] {
            assert!(pazar_api::names::is_volume_name(ok));
            assert_eq!(HostName::volume(ok).map(|h| h.as_str()).ok(), Some(ok), "{ok:?}");
        }
        for bad in ["", "_a", "a_", "a.b", "a/b", "..", "A", "a b", &"v".repeat(64)] {
            let err = HostName::volume(bad).expect_err(bad).to_string();
            assert!(err.contains(&format!("volume name {bad:?}")), "{err}");
        }
    }

    #[test]
    fn mount_points_are_absolute_normalised_and_clear_of_the_sandbox_s_own() {
        for ok in [
            "/data",
            "/var/lib/db",
            "/tmp/cache",
            "/etc/app",
            "/run/x",
            "/procfs",
            "/dev/shm",
        ] {
            assert_eq!(mount_point(ok).ok(), Some(ok), "{ok:?}");
        }
        assert_eq!(mount_point("/mnt/").ok(), Some("/mnt"), "one trailing '/' is dropped");
        assert_eq!(mount_point("/dev/shm/").ok(), Some("/dev/shm"));
        let long = format!("/{}", "x".repeat(4096));
        for bad in [
            "",
            "data",
            "/",
            "//data",
            "/data//",
            "/a/./b",
            "/a/../b",
            "/..",
            "/proc",
            "/proc/sys",
            "/dev/shm/x",
            "/dev",
            "/sys",
            "/tmp",
            "/run",
            "/etc",
            "/etc/hosts",
            "/a\nb",
            &long,
        ] {
            assert!(mount_point(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_lease_key_is_the_whole_digest_and_only_that_reads_back() {
        let k = "pz-".to_string() + &"0a".repeat(32);
        assert_eq!(LeaseKey::parse(&k).map(|k| k.to_string()), Some(k.clone()));
        for bad in [
            "pz-0123456789ab",
            "pz-",
            &k.to_uppercase(),
            &format!("{k}0"),
            &k[1..],
            "../pz-x",
        ] {
            assert_eq!(LeaseKey::parse(bad), None, "{bad:?}");
        }
    }
}
