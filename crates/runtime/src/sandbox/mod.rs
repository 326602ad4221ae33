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
//! Persistent volumes are ext4 filesystems of the leased size ([`super::loopfs`]) mounted on
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

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::task::AbortHandle;

use super::cgroup::{Cgroup, Limits};
use super::images::{ImageConfig, ImageStore};
use super::netns;
use super::{
    is_ram, volume, BoxFuture, Forward, LeaseRef, LeaseStatus, LogLine, LogStream, Runtime, RuntimeError, ServiceStatus,
};
use crate::files::write_atomic;
use pazar_api::manifest::{Group, Proto, Service};

/// Processes a replica may have at once.
const PIDS_LIMIT: u64 = 512;
/// How often the supervisor looks at every replica: notes the ones that stopped, starts them
/// again, and rotates their logs.
const SUPERVISE_EVERY: Duration = Duration::from_millis(300);
/// A replica's live log is rotated past this size, checked at every supervisor round. The
/// workload writes its log itself (its stdout is the file, so it outlives the daemon), so
/// between two rounds it can write past the bound: the worst overshoot is what it writes in
/// one round, its write speed times [`SUPERVISE_EVERY`] plus the round's own time (at a page
/// cache speed of 2 GB/s, about 600 MB; a workload with a fraction of a CPU writes that
/// fraction of it). The cgroup's CPU bound is thus also the bound on that overshoot.
const LOG_MAX_BYTES: u64 = 16 << 20;
/// What rotation keeps of a live log, in `.log.1`: so a replica's logs take at most
/// `LOG_MAX_BYTES + LOG_KEPT_BYTES` on disk, plus the overshoot above.
const LOG_KEPT_BYTES: u64 = 4 << 20;
const _: () = assert!(LOG_KEPT_BYTES <= LOG_MAX_BYTES);
/// Longest log line a reader emits: a longer one comes in pieces of this size.
pub const MAX_LOG_LINE: usize = 16 << 10;
/// Most bytes one read of a followed log takes from the file.
const LOG_READ_CHUNK: usize = 64 << 10;
/// Most bytes of a log read back for `tail` lines.
const TAIL_MAX_BYTES: u64 = 1 << 20;
const _: () = assert!(MAX_LOG_LINE <= LOG_READ_CHUNK && LOG_READ_CHUNK as u64 <= TAIL_MAX_BYTES);
/// `/tmp` when the SDL asks for no ephemeral storage.
const DEFAULT_EPHEMERAL: u64 = 64 << 20;
const RUN_TMPFS: u64 = 8 << 20;
/// `PATH` inside the sandbox unless the image or the tenant sets one.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// `PATH` of every host command the runtime starts: fixed, so neither the daemon's environment
/// nor a tenant's can choose which programs run as root.
pub const HOST_PATH: &str = "/usr/sbin:/usr/bin:/sbin:/bin";
/// Arguments bubblewrap accepts in all (its `MAX_ARGS`, command line and `--args` together).
const BWRAP_MAX_ARGS: usize = 9000;
/// Environment variables a replica may have (each costs bubblewrap three arguments).
pub const MAX_ENV: usize = 1000;
/// Arguments of a replica's command.
pub const MAX_ARGV: usize = 1000;
/// What bubblewrap gets besides the environment and the command: fixed options and, per
/// volume, at most five arguments.
const FIXED_BWRAP_ARGS: usize = 64 + 5 * pazar_types::market::limits::MAX_VOLUMES;
const _: () = assert!(3 * MAX_ENV + MAX_ARGV + FIXED_BWRAP_ARGS < BWRAP_MAX_ARGS);
/// Longest mount point inside the sandbox (Linux's `PATH_MAX`).
const MAX_MOUNT_PATH: usize = 4096;

/// The host side of a replica's start, as a fixed script: every variable part is a positional
/// parameter, which `sh` substitutes as data and never parses as code. `$1` is the lease's
/// network namespace, `$2` and `$3` the sandbox user's uid and gid, `$4` how many `cgroup.procs`
/// files follow; then the files, then bubblewrap and its command-line arguments. The process
/// joins its cgroups first (so nothing it forks escapes them), moves its standard input (the
/// pipe that carries bubblewrap's `--args`) to fd 3 and takes `/dev/null` instead, enters the
/// namespace, drops to the sandbox user and becomes bubblewrap: one PID from the shell to the
/// sandbox.
const LAUNCH: &str = r#"ns=$1 uid=$2 gid=$3 n=$4
shift 4
while [ "$n" -gt 0 ]; do echo $$ > "$1" || exit 125; shift; n=$((n - 1)); done
exec 3<&0 </dev/null
exec nsenter --net="$ns" setpriv --reuid="$uid" --regid="$gid" --clear-groups -- "$@"
"#;

/// A command for the host with a fixed environment (a constant `PATH`, the C locale, nothing
/// else): the daemon's environment and a tenant's never reach a program the runtime starts.
pub fn host_command(program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut c = Command::new(program);
    c.env_clear().env("PATH", HOST_PATH).env("LC_ALL", "C");
    c
}

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

fn lease_dir(dir: &Path, key: &LeaseKey) -> PathBuf {
    dir.join("leases").join(key.as_str())
}

/// `volumes/<service>.<volume>`: `.` is in neither grammar, so two pairs never share a name.
fn volume_dir(lease_dir: &Path, service: HostName, volume: HostName) -> PathBuf {
    lease_dir.join("volumes").join(format!("{service}.{volume}"))
}

/// The volume's file in [`super::loopfs`]: `<lease key>.<service>.<volume>`.
fn volume_file(key: &LeaseKey, service: HostName, volume: HostName) -> String {
    format!("{key}.{service}.{volume}")
}

fn log_path(lease_dir: &Path, service: HostName, replica: u32) -> PathBuf {
    lease_dir.join("logs").join(format!("{service}.{replica}.log"))
}

fn cgroup_rel(key: &LeaseKey, service: HostName, replica: u32) -> String {
    format!("pazar/{key}/{service}.{replica}")
}

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
    pub local_images: super::images::ImagePolicy,
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
            local_images: super::images::ImagePolicy::default(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct ReplicaState {
    service: String,
    replica: u32,
    pid: Option<u32>,
    /// `/proc/PID/stat` start time, so a reused PID is not taken for the replica.
    starttime: u64,
    restarts: u64,
    last_error: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct FwdState {
    service: String,
    replica: u32,
    port: u16,
    host_port: u16,
}

/// What survives a daemon restart (`leases/<key>/lease.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct LeaseState {
    /// The [`LeaseKey`] the record was written for.
    name: String,
    /// The whole lease id: a record is adopted only by the lease it names.
    label: String,
    group: Group,
    forwards: Vec<FwdState>,
    replicas: Vec<ReplicaState>,
}

struct LeaseRun {
    /// The name of the lease's objects on the host.
    key: LeaseKey,
    state: LeaseState,
    /// Replicas this daemon started (reaped here); adopted ones are watched through /proc.
    children: BTreeMap<(String, u32), Child>,
    /// When a stopped replica is started again.
    next_start: BTreeMap<(String, u32), Instant>,
    forwards: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for LeaseRun {
    fn drop(&mut self) {
        for f in &self.forwards {
            f.abort();
        }
    }
}

type Leases = Arc<Mutex<BTreeMap<String, LeaseRun>>>;

pub struct SandboxRuntime {
    opts: SandboxOptions,
    /// Size-bounded persistent volumes (`<dir>/volume-files/`), or why there are none.
    volumes: Result<super::loopfs::LoopFs, String>,
    images: ImageStore,
    leases: Leases,
    supervisor: AbortHandle,
}

impl Drop for SandboxRuntime {
    fn drop(&mut self) {
        self.supervisor.abort();
    }
}

fn backend(e: impl std::fmt::Display) -> RuntimeError {
    RuntimeError::Backend(e.to_string())
}

/// An error's sentence without the "the runtime refused" its display adds, to wrap it in
/// another.
fn reason(e: RuntimeError) -> String {
    match e {
        RuntimeError::Backend(why) => why,
        other => other.to_string(),
    }
}

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

/// `(state, starttime)` of a process from `/proc/PID/stat`.
fn proc_stat(pid: u32) -> Option<(char, u64)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold spaces: fields start after the last ')'.
    let rest = &s[s.rfind(')')? + 2..];
    let mut fields = rest.split(' ');
    let state = fields.next()?.chars().next()?;
    let starttime = fields.nth(18)?.parse().ok()?;
    Some((state, starttime))
}

fn alive(pid: u32, starttime: u64) -> bool {
    matches!(proc_stat(pid), Some((s, t)) if s != 'Z' && s != 'X' && t == starttime)
}

fn ephemeral_bytes(svc: &Service) -> u64 {
    super::ephemeral_bytes(svc).unwrap_or(DEFAULT_EPHEMERAL)
}

fn exit_text(status: std::process::ExitStatus, oom: bool) -> String {
    use std::os::unix::process::ExitStatusExt;
    let base = match (status.code(), status.signal()) {
        (Some(c), _) => format!("exited with code {c}"),
        (None, Some(s)) => format!("killed by signal {s}"),
        _ => "exited".to_string(),
    };
    if oom {
        format!("{base} (out of memory: it hit its memory limit)")
    } else {
        base
    }
}

fn backoff(restarts: u64) -> Duration {
    Duration::from_millis((250u64 << restarts.min(6)).min(10_000))
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
        let volumes = match super::loopfs::unavailable() {
            Some(why) => Err(why),
            None => {
                let fs = super::loopfs::LoopFs::new(opts.dir.join("volume-files"));
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
        })
    }

    pub fn images(&self) -> &ImageStore {
        &self.images
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

    async fn deploy_group(&self, lease: &LeaseRef, group: &Group) -> Result<(), RuntimeError> {
        let key = LeaseKey::of(lease);
        if self.leases.lock().map_err(backend)?.contains_key(key.as_str()) {
            return self.converge(&key, group).await;
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
                let mut r = old.cloned().unwrap_or(ReplicaState {
                    service: svc.name.clone(),
                    replica,
                    pid: None,
                    starttime: 0,
                    restarts: 0,
                    last_error: None,
                });
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

    /// Brings a running lease to `group` (a tenant's new manifest for its lease): replicas
    /// whose service or index is gone, or whose service's launch spec changed, are stopped and
    /// their cgroups removed; missing replicas are started; the others run on untouched.
    /// Forwards follow the global ports, `/etc/hosts` the services, and the volumes of a
    /// service or volume that is gone are unmounted and deleted (the tenant no longer pays for
    /// them); a gone replica's log goes with it, a restarted replica appends to its own.
    async fn converge(&self, key: &LeaseKey, group: &Group) -> Result<(), RuntimeError> {
        let old = {
            let leases = self.leases.lock().map_err(backend)?;
            let run = leases
                .get(key.as_str())
                .ok_or_else(|| backend("the lease stopped meanwhile"))?;
            run.state.clone()
        };
        if old.group == *group {
            return Ok(());
        }
        self.prepare_images(group).await?;
        self.prepare_host(key, group)?;
        let mut listeners = Vec::new();
        for svc in &group.services {
            for x in svc.expose.iter().filter(|x| x.global) {
                if !old.forwards.iter().any(|f| f.service == svc.name && f.port == x.port) {
                    let l = tokio::net::TcpListener::bind(("0.0.0.0", 0)).await.map_err(backend)?;
                    listeners.push((svc.name.clone(), x.port, l));
                }
            }
        }
        let dir = self.lease_dir(key);
        let same = |a: &Service, b: &Service| Service { count: 0, ..a.clone() } == Service { count: 0, ..b.clone() };
        let result = {
            let mut leases = self.leases.lock().map_err(backend)?;
            let run = leases
                .get_mut(key.as_str())
                .ok_or_else(|| backend("the lease stopped meanwhile"))?;
            let keeps = |r: &ReplicaState| {
                let new = group.services.iter().find(|s| s.name == r.service);
                let was = old.group.services.iter().find(|s| s.name == r.service);
                matches!((new, was), (Some(n), Some(w)) if r.replica < n.count && same(n, w))
            };
            let (kept, gone): (Vec<_>, Vec<_>) = std::mem::take(&mut run.state.replicas).into_iter().partition(keeps);
            for r in &gone {
                let id = (r.service.clone(), r.replica);
                if let Some(mut child) = run.children.remove(&id) {
                    let _ = child.kill();
                    let _ = child.wait();
                }
                run.next_start.remove(&id);
                let host_svc = HostName::parse("service", &r.service)?;
                if let Ok(cg) = Cgroup::at(&cgroup_rel(key, host_svc, r.replica)) {
                    cg.kill_and_remove();
                }
                let still = group
                    .services
                    .iter()
                    .any(|s| s.name == r.service && r.replica < s.count);
                if !still {
                    let log = log_path(&dir, host_svc, r.replica);
                    let _ = std::fs::remove_file(log.with_extension("log.1"));
                    let _ = std::fs::remove_file(log);
                }
            }
            run.state.replicas = kept;
            run.state.group = group.clone();
            for svc in &group.services {
                for replica in 0..svc.count {
                    if !run
                        .state
                        .replicas
                        .iter()
                        .any(|r| r.service == svc.name && r.replica == replica)
                    {
                        run.state.replicas.push(ReplicaState {
                            service: svc.name.clone(),
                            replica,
                            pid: None,
                            starttime: 0,
                            restarts: 0,
                            last_error: None,
                        });
                    }
                }
            }
            // Forwards of ports no longer global go; new ones come.
            let mut i = 0;
            while i < run.state.forwards.len() {
                let f = &run.state.forwards[i];
                let wanted = group
                    .services
                    .iter()
                    .any(|s| s.name == f.service && s.expose.iter().any(|x| x.global && x.port == f.port));
                if wanted {
                    i += 1;
                } else {
                    run.state.forwards.remove(i);
                    if i < run.forwards.len() {
                        run.forwards.remove(i).abort();
                    }
                }
            }
            for (service, port, listener) in listeners {
                let host_port = listener.local_addr().map_err(backend)?.port();
                run.forwards.push(tokio::spawn(forward(listener, key.clone(), port)));
                run.state.forwards.push(FwdState {
                    service,
                    replica: 0,
                    port,
                    host_port,
                });
            }
            let mut failure = None;
            for i in 0..run.state.replicas.len() {
                if run.state.replicas[i].pid.is_none()
                    && !run
                        .next_start
                        .contains_key(&(run.state.replicas[i].service.clone(), run.state.replicas[i].replica))
                {
                    if let Err(e) = start_replica(&self.opts, run, i) {
                        failure = Some(e);
                        break;
                    }
                }
            }
            save(&self.opts, key, &run.state).and(failure.map_or(Ok(()), Err))
        };
        // Volumes of a service or volume that is gone: unmounted, then their files deleted.
        for svc in &old.group.services {
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
        result
    }

    async fn group_status(&self, lease: &LeaseRef, group: &Group) -> Result<LeaseStatus, RuntimeError> {
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
                state: "running".into(),
                forwards: Vec::new(),
                last_error: None,
                // `/tmp` is a tmpfs of the leased size: writes past it fail, nothing is evicted.
                evictions: 0,
                last_eviction: None,
                pull: None,
            };
            let Some((state, pending)) = &snapshot else {
                st.state = "missing".into();
                services.push(st);
                continue;
            };
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
                        st.state = "starting".into();
                    }
                } else {
                    st.state = if pending.contains(&(r.service.clone(), r.replica)) {
                        "restarting".into()
                    } else {
                        "exited".into()
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
        Ok(LeaseStatus {
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
    ) -> Result<LogStream, RuntimeError> {
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
            for e in std::fs::read_dir(dir.join("volumes")).into_iter().flatten().flatten() {
                unmount_volume(&e.path())?;
            }
            if let Ok(fs) = &volumes {
                for n in fs.names(&format!("{key}.")) {
                    fs.remove(&n).map_err(backend)?;
                }
            }
            if dir.exists() {
                std::fs::remove_dir_all(&dir).map_err(|e| backend(format!("cannot remove {}: {e}", dir.display())))?;
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

/// Writes the lease's record atomically (a crash leaves the old record or the new one).
fn save(opts: &SandboxOptions, key: &LeaseKey, state: &LeaseState) -> Result<(), RuntimeError> {
    let path = lease_dir(&opts.dir, key).join("lease.json");
    let json = serde_json::to_vec_pretty(state).map_err(backend)?;
    write_atomic(&path, &json, 0o600).map_err(|e| backend(format!("cannot write {}: {e}", path.display())))
}

/// The workload's environment: defaults, then the image's (its operator's), then the
/// tenant's, each overriding the one before. Names are 1-255 bytes of ASCII letters, digits,
/// `_`, `-` and `.`, not starting with a digit; values hold no NUL (bubblewrap's arguments are
/// NUL-separated); at most [`MAX_ENV`] variables.
pub fn workload_env(svc: &Service, image: &ImageConfig) -> Result<BTreeMap<String, String>, RuntimeError> {
    let mut env: BTreeMap<String, String> = BTreeMap::new();
    env.insert("PATH".into(), DEFAULT_PATH.into());
    env.insert("HOSTNAME".into(), svc.name.clone());
    env.insert("HOME".into(), "/root".into());
    for (whose, list) in [("the image", &image.env), ("the SDL", &svc.env)] {
        for kv in list {
            let (k, v) = kv.split_once('=').unwrap_or((kv.as_str(), ""));
            let b = k.as_bytes();
            let name_ok = !b.is_empty()
                && b.len() <= 255
                && !b[0].is_ascii_digit()
                && b.iter()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'.'));
            if !name_ok || v.contains('\0') {
                return Err(backend(format!(
                    "service {:?}: {whose} sets the environment variable {k:?}, which cannot be passed on \
                     (names are letters, digits, '_', '-' and '.', not starting with a digit; values hold no NUL)",
                    svc.name
                )));
            }
            env.insert(k.to_string(), v.to_string());
        }
    }
    if env.len() > MAX_ENV {
        return Err(backend(format!(
            "service {:?} has {} environment variables; at most {MAX_ENV}",
            svc.name,
            env.len()
        )));
    }
    Ok(env)
}

/// What bubblewrap reads from its `--args` pipe: every option of the sandbox (namespaces,
/// mounts, hostname, working directory, the environment from `--clearenv`). None of it appears
/// on a command line, where other users of the host could read it in `/proc/*/cmdline`.
fn sandbox_options(
    opts: &SandboxOptions,
    dir: &Path,
    svc: &Service,
    rootfs: &Path,
    config: &ImageConfig,
) -> Result<Vec<String>, RuntimeError> {
    let svc_name = HostName::parse("service", &svc.name)?;
    let path = |p: &Path| p.to_string_lossy().into_owned();
    let mut args: Vec<String> = [
        "--unshare-user",
        "--unshare-pid",
        "--unshare-ipc",
        "--unshare-uts",
        "--unshare-cgroup",
        "--uid",
        "0",
        "--gid",
        "0",
        "--cap-drop",
        "ALL",
        "--new-session",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(["--hostname".into(), svc_name.to_string()]);
    args.extend(["--ro-bind".into(), path(rootfs), "/".into()]);
    args.extend(["--proc".into(), "/proc".into(), "--dev".into(), "/dev".into()]);
    args.extend([
        "--size".into(),
        ephemeral_bytes(svc).to_string(),
        "--tmpfs".into(),
        "/tmp".into(),
    ]);
    args.extend(["--size".into(), RUN_TMPFS.to_string(), "--tmpfs".into(), "/run".into()]);
    args.extend(["--ro-bind".into(), path(&dir.join("hosts")), "/etc/hosts".into()]);
    for m in &svc.storage {
        let vol = HostName::volume(&m.name)?;
        let at = mount_point(&m.mount)?.to_string();
        if is_ram(svc, &m.name) {
            let bytes = volume(svc, &m.name).map_or(0, |v| v.bytes);
            args.extend(["--size".into(), bytes.to_string(), "--tmpfs".into(), at]);
        } else {
            let how = if m.read_only { "--ro-bind" } else { "--bind" };
            args.extend([how.into(), path(&volume_dir(dir, svc_name, vol)), at]);
        }
    }
    if !config.workdir.is_empty() {
        args.extend(["--chdir".into(), config.workdir.clone()]);
    }
    args.push("--clearenv".into());
    for (k, v) in workload_env(svc, config)? {
        args.extend(["--setenv".into(), k, v]);
    }
    debug_assert!(opts.uid != 0, "the sandbox user is not root");
    Ok(args)
}

/// Starts replica `i` of `run` (its cgroup, its log, bubblewrap in the lease's namespace).
fn start_replica(opts: &SandboxOptions, run: &mut LeaseRun, i: usize) -> Result<(), RuntimeError> {
    let (svc_name, replica) = (run.state.replicas[i].service.clone(), run.state.replicas[i].replica);
    let svc = run
        .state
        .group
        .services
        .iter()
        .find(|s| s.name == svc_name)
        .cloned()
        .ok_or_else(|| RuntimeError::UnknownService(svc_name.clone()))?;
    let host_svc = HostName::parse("service", &svc.name)?;
    let images = ImageStore::new(&opts.images);
    let (rootfs, config) = images.get(&svc.image).ok_or_else(|| RuntimeError::Image {
        image: svc.image.clone(),
        reason: "its rootfs was removed from the image store".into(),
    })?;
    let key = run.key.clone();
    let dir = lease_dir(&opts.dir, &key);

    let argv: Vec<String> = if svc.command.is_empty() {
        let mut a = config.entrypoint.clone();
        a.extend(if svc.args.is_empty() {
            config.cmd.clone()
        } else {
            svc.args.clone()
        });
        a
    } else {
        svc.command.iter().chain(&svc.args).cloned().collect()
    };
    if argv.is_empty() {
        return Err(backend(format!(
            "service {svc_name:?} has no command: its image sets no entrypoint and the SDL gives none"
        )));
    }
    if argv.len() > MAX_ARGV || argv.iter().any(|a| a.contains('\0')) {
        return Err(backend(format!(
            "service {svc_name:?}: its command has more than {MAX_ARGV} arguments or a NUL byte"
        )));
    }
    let options = sandbox_options(opts, &dir, &svc, &rootfs, &config)?;
    let mut piped = Vec::new();
    for a in &options {
        if a.contains('\0') {
            return Err(backend(format!(
                "service {svc_name:?}: a sandbox option holds a NUL byte"
            )));
        }
        piped.extend_from_slice(a.as_bytes());
        piped.push(0);
    }
    // The workload's own arguments are the one variable part on bubblewrap's command line
    // (its `--args` file cannot carry the command): the workload's /proc/PID/cmdline shows
    // them to the host's users anyway, as `ps` shows a container's, so nothing more leaks.
    let total = options.len() + argv.len() + 3;
    if total > BWRAP_MAX_ARGS {
        return Err(backend(format!(
            "service {svc_name:?} needs {total} sandbox arguments; bubblewrap takes at most {BWRAP_MAX_ARGS}"
        )));
    }

    let cg = Cgroup::create(
        &cgroup_rel(&key, host_svc, replica),
        Limits {
            cpu_millis: svc.resources.cpu_millis,
            memory_bytes: svc.resources.memory_bytes,
            pids: PIDS_LIMIT,
        },
    )
    .map_err(backend)?;
    // Leftovers of an earlier run of this replica go first.
    for pid in cg.pids() {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
    }

    let log_path = log_path(&dir, host_svc, replica);
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(|e| backend(format!("cannot open {}: {e}", log_path.display())))?;
    let log2 = log.try_clone().map_err(backend)?;
    let ns = netns::path(key.as_str()).map_err(backend)?;
    if !ns.exists() {
        return Err(backend(format!(
            "the lease's network namespace {} is gone",
            ns.display()
        )));
    }
    let procs = cg.procs_files();
    let mut cmd = host_command("/bin/sh");
    cmd.arg("-c")
        .arg(LAUNCH)
        .arg("pazar-launch")
        .arg(&ns)
        .arg(opts.uid.to_string())
        .arg(opts.gid.to_string())
        .arg(procs.len().to_string())
        .args(&procs)
        .arg(&opts.bwrap)
        .args(["--args", "3", "--"])
        .args(&argv)
        .stdin(Stdio::piped())
        .stdout(Stdio::from(log))
        .stderr(Stdio::from(log2))
        .current_dir("/")
        // Its own process group, so a signal to the daemon's group does not reach it.
        .process_group(0);
    let mut child = cmd
        .spawn()
        .map_err(|e| backend(format!("cannot start service {svc_name:?}: {e}")))?;
    // Written from a thread: a pipe holds 64 KiB, and bubblewrap reads only once it runs.
    // Closing the pipe ends the list; if the replica dies first the write fails and is moot.
    if let Some(mut stdin) = child.stdin.take() {
        std::thread::spawn(move || {
            use std::io::Write;
            let _ = stdin.write_all(&piped);
        });
    }
    let pid = child.id();
    let r = &mut run.state.replicas[i];
    r.pid = Some(pid);
    r.starttime = proc_stat(pid).map_or(0, |(_, t)| t);
    run.children.insert((svc_name.clone(), replica), child);
    run.next_start.remove(&(svc_name, replica));
    Ok(())
}

/// Every 300 ms: notes replicas that stopped, starts them again after a backoff, rotates logs.
async fn supervise(opts: SandboxOptions, leases: Leases) {
    loop {
        tokio::time::sleep(SUPERVISE_EVERY).await;
        let opts2 = opts.clone();
        let leases2 = leases.clone();
        let _ = tokio::task::spawn_blocking(move || supervise_once(&opts2, &leases2)).await;
    }
}

fn supervise_once(opts: &SandboxOptions, leases: &Leases) {
    let Ok(mut leases) = leases.lock() else { return };
    let now = Instant::now();
    for run in leases.values_mut() {
        let mut changed = false;
        for i in 0..run.state.replicas.len() {
            let key = (run.state.replicas[i].service.clone(), run.state.replicas[i].replica);
            // The group was checked at deploy; a name that fails now is left alone.
            let Ok(host_svc) = HostName::parse("service", &key.0) else {
                continue;
            };
            let cg = Cgroup::at(&cgroup_rel(&run.key, host_svc, key.1)).ok();
            let oom = || cg.as_ref().is_some_and(Cgroup::oom_killed);
            let r = &mut run.state.replicas[i];
            if let Some(pid) = r.pid {
                let stopped = match run.children.get_mut(&key) {
                    Some(child) => match child.try_wait() {
                        Ok(Some(status)) => Some(exit_text(status, oom())),
                        _ => None,
                    },
                    None => (!alive(pid, r.starttime)).then(|| "exited".to_string()),
                };
                if let Some(why) = stopped {
                    run.children.remove(&key);
                    r.pid = None;
                    r.last_error = Some(why);
                    run.next_start.insert(key.clone(), now + backoff(r.restarts));
                    changed = true;
                }
            } else if !run.next_start.contains_key(&key) {
                run.next_start.insert(key.clone(), now + backoff(r.restarts));
            }
            if run.state.replicas[i].pid.is_none() && run.next_start.get(&key).is_some_and(|t| *t <= now) {
                run.state.replicas[i].restarts += 1;
                if let Err(e) = start_replica(opts, run, i) {
                    let r = &mut run.state.replicas[i];
                    r.last_error = Some(e.to_string());
                    run.next_start.insert(key.clone(), now + backoff(r.restarts));
                }
                changed = true;
            }
            rotate_log(&log_path(&lease_dir(&opts.dir, &run.key), host_svc, key.1));
        }
        if changed {
            // A record that cannot be written now is written at the next change; the replicas
            // run on meanwhile.
            let _ = save(opts, &run.key, &run.state);
        }
    }
}

/// Rotates a log past [`LOG_MAX_BYTES`]: its last [`LOG_KEPT_BYTES`] become `.log.1` (the one
/// old file kept, replaced whole by a rename) and the live file is emptied. The workload holds
/// the live file open with `O_APPEND`, so it writes on at the new end without noticing;
/// nothing is copied but the kept part, so rotating costs the same however large the workload
/// made the file. What the workload writes between the copy and the truncation is lost, as
/// when a log driver drops lines.
fn rotate_log(log: &Path) {
    let Ok(mut f) = File::options().read(true).write(true).open(log) else {
        return;
    };
    let len = f.metadata().map_or(0, |m| m.len());
    if len <= LOG_MAX_BYTES {
        return;
    }
    let start = len - LOG_KEPT_BYTES;
    let old = log.with_extension("log.1");
    let mut kept = Vec::with_capacity(LOG_KEPT_BYTES as usize);
    let read = f
        .seek(SeekFrom::Start(start))
        .and_then(|_| (&mut f).take(LOG_KEPT_BYTES).read_to_end(&mut kept));
    // The live file is emptied even when the old one cannot be written: the bound on the disk
    // matters more than the old lines.
    if read.is_ok() {
        let _ = write_atomic(&old, &kept, 0o600);
    }
    let _ = f.set_len(0);
}

/// Accepts on a host port and joins each connection to `port` in the lease's namespace.
async fn forward(listener: tokio::net::TcpListener, ns: LeaseKey, port: u16) {
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

/// Cuts a replica's output into lines of at most [`MAX_LOG_LINE`] bytes: a longer line is
/// emitted in pieces (as Docker does), so a reader never holds more than one piece of a line
/// however long the workload makes it. A piece is cut before a UTF-8 character that it would
/// split; bytes that are not UTF-8 are shown as U+FFFD.
#[derive(Debug, Default)]
struct LineSplitter {
    partial: Vec<u8>,
}

/// How many bytes at the end of `b` begin a UTF-8 character that is not complete there.
fn incomplete_utf8_tail(b: &[u8]) -> usize {
    for back in 1..=b.len().min(3) {
        let c = b[b.len() - back];
        if c & 0xC0 == 0x80 {
            continue; // A continuation byte: the lead byte is further back.
        }
        let need = match c {
            0xC0..=0xDF => 2,
            0xE0..=0xEF => 3,
            0xF0..=0xF7 => 4,
            _ => 1,
        };
        return if need > back { back } else { 0 };
    }
    0
}

impl LineSplitter {
    /// Feeds `buf`; complete lines and full pieces go to `out`.
    fn push(&mut self, mut buf: &[u8], out: &mut Vec<String>) {
        while let Some(i) = buf.iter().position(|c| *c == b'\n') {
            self.take(&buf[..i], true, out);
            buf = &buf[i + 1..];
        }
        self.take(buf, false, out);
        debug_assert!(self.partial.len() < MAX_LOG_LINE);
    }

    /// What is left of an unfinished line, as a last line.
    fn finish(&mut self, out: &mut Vec<String>) {
        if !self.partial.is_empty() {
            self.take(&[], true, out);
        }
    }

    fn take(&mut self, mut piece: &[u8], end: bool, out: &mut Vec<String>) {
        loop {
            let room = MAX_LOG_LINE - self.partial.len();
            if piece.len() < room || (end && piece.len() == room) {
                self.partial.extend_from_slice(piece);
                break;
            }
            self.partial.extend_from_slice(&piece[..room]);
            piece = &piece[room..];
            let carry = self.partial.len() - incomplete_utf8_tail(&self.partial);
            let carry = self.partial.split_off(carry);
            out.push(String::from_utf8_lossy(&self.partial).into_owned());
            self.partial = carry;
        }
        if end {
            let line = std::mem::take(&mut self.partial);
            let line = line.strip_suffix(b"\r").unwrap_or(&line);
            out.push(String::from_utf8_lossy(line).into_owned());
        }
    }
}

/// Where the last `tail` lines of the file begin, reading it backwards from `len` and at most
/// [`TAIL_MAX_BYTES`] of it (a file of one endless line is not read whole for one line).
fn tail_start(f: &mut File, len: u64, tail: usize) -> std::io::Result<u64> {
    if tail == 0 {
        return Ok(len);
    }
    let floor = len.saturating_sub(TAIL_MAX_BYTES);
    let mut end = len;
    let mut seen = 0;
    let mut buf = vec![0u8; LOG_READ_CHUNK];
    while end > floor {
        let start = end.saturating_sub(LOG_READ_CHUNK as u64).max(floor);
        let chunk = &mut buf[..(end - start) as usize];
        f.seek(SeekFrom::Start(start))?;
        f.read_exact(chunk)?;
        for (i, c) in chunk.iter().enumerate().rev() {
            let at = start + i as u64;
            // The newline that ends the last line starts no line.
            if *c == b'\n' && at + 1 < len {
                seen += 1;
                if seen == tail {
                    return Ok(at + 1);
                }
            }
        }
        end = start;
    }
    Ok(floor)
}

/// The last `tail` lines of the log at `path` (fewer when they are more than
/// [`TAIL_MAX_BYTES`]), and the length they were read up to.
fn read_tail(path: &Path, tail: usize) -> (Vec<String>, u64) {
    let Ok(mut f) = File::open(path) else {
        return (Vec::new(), 0);
    };
    let len = f.metadata().map_or(0, |m| m.len());
    let Ok(start) = tail_start(&mut f, len, tail) else {
        return (Vec::new(), len);
    };
    let mut bytes = Vec::new();
    if f.seek(SeekFrom::Start(start)).is_err() || f.take(len - start).read_to_end(&mut bytes).is_err() {
        return (Vec::new(), len);
    }
    let mut text: &[u8] = &bytes;
    // Started mid-line at the byte bound: what comes before the first newline is the end of a
    // longer line, shown as its last pieces, from the first whole UTF-8 character.
    while start > 0 && text.first().is_some_and(|c| c & 0xC0 == 0x80) {
        text = &text[1..];
    }
    let mut lines = Vec::new();
    let mut split = LineSplitter::default();
    split.push(text, &mut lines);
    split.finish(&mut lines);
    let skip = lines.len().saturating_sub(tail);
    lines.drain(..skip);
    (lines, len)
}

/// Reads what was appended to the log at `path` since `pos`, at most [`LOG_READ_CHUNK`] bytes,
/// into `split`; a log shorter than `pos` was rotated and is read from its start. Returns the
/// lines completed and whether the reader caught up with the file; `None` when the file is
/// gone.
fn read_more(path: &Path, pos: &mut u64, split: &mut LineSplitter) -> Option<(Vec<String>, bool)> {
    let mut f = File::open(path).ok()?;
    let len = f.metadata().ok()?.len();
    if len < *pos {
        *pos = 0;
    }
    let mut lines = Vec::new();
    if len > *pos {
        let mut buf = Vec::with_capacity(LOG_READ_CHUNK);
        f.seek(SeekFrom::Start(*pos)).ok()?;
        f.take((len - *pos).min(LOG_READ_CHUNK as u64))
            .read_to_end(&mut buf)
            .ok()?;
        *pos += buf.len() as u64;
        split.push(&buf, &mut lines);
    }
    Some((lines, *pos >= len))
}

/// The last `tail` lines of a replica's log (of its rotated log too when the live one holds
/// fewer), then (with `follow`) lines as they are written. What one stream holds is bounded
/// whatever the workload writes: at most twice [`TAIL_MAX_BYTES`] for the tail, then one read of [`LOG_READ_CHUNK`] bytes and one unfinished line of less
/// than [`MAX_LOG_LINE`] at a time.
fn log_stream(path: PathBuf, service: String, replica: u32, tail: usize, follow: bool) -> LogStream {
    let (mut first, pos) = read_tail(&path, tail);
    // A log just rotated holds few lines: the rest come from the end of the old one.
    if first.len() < tail {
        let (mut older, _) = read_tail(&path.with_extension("log.1"), tail - first.len());
        older.append(&mut first);
        first = older;
    }
    let line = {
        let service = service.clone();
        move |l: String| {
            Ok(LogLine {
                service: service.clone(),
                replica,
                stream: "output".into(),
                line: l,
            })
        }
    };
    let initial = futures_util::stream::iter(first.into_iter().map(line.clone()));
    if !follow {
        return initial.boxed();
    }
    let rest = futures_util::stream::unfold(
        (path, pos, LineSplitter::default()),
        move |(path, mut pos, mut split)| {
            let line = line.clone();
            async move {
                loop {
                    let (lines, caught_up) = read_more(&path, &mut pos, &mut split)?;
                    if !lines.is_empty() {
                        let lines: Vec<_> = lines.into_iter().map(&line).collect();
                        return Some((futures_util::stream::iter(lines), (path, pos, split)));
                    }
                    if !caught_up {
                        // A piece of a long line was read and kept: read on, yielding first.
                        tokio::task::yield_now().await;
                        continue;
                    }
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
            }
        },
    )
    .flatten();
    initial.chain(rest).boxed()
}

impl Runtime for SandboxRuntime {
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
        Box::pin(async move { self.lease_logs(lease, service, tail, follow) })
    }

    fn close<'a>(&'a self, lease: &'a LeaseRef) -> BoxFuture<'a, Result<(), RuntimeError>> {
        Box::pin(self.close_lease_ref(lease))
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

#[cfg(test)]
mod tests {
    use super::{mount_point, read_tail, HostName, LeaseKey, LineSplitter, MAX_LOG_LINE, TAIL_MAX_BYTES};

    fn split(chunks: &[&[u8]]) -> (Vec<String>, usize) {
        let mut s = LineSplitter::default();
        let mut out = Vec::new();
        for c in chunks {
            s.push(c, &mut out);
        }
        let held = s.partial.len();
        s.finish(&mut out);
        (out, held)
    }

    #[test]
    fn a_line_longer_than_the_bound_comes_in_pieces_and_nothing_more_is_held() {
        let long = vec![b'x'; 3 * MAX_LOG_LINE + 5];
        let (lines, held) = split(&[b"a\r\nb", &long, b"\nc\n", &long]);
        assert!(held < MAX_LOG_LINE, "held {held}");
        let lens: Vec<usize> = lines.iter().map(String::len).collect();
        assert_eq!(
            lens,
            [
                1,
                MAX_LOG_LINE,
                MAX_LOG_LINE,
                MAX_LOG_LINE,
                6,
                1,
                MAX_LOG_LINE,
                MAX_LOG_LINE,
                MAX_LOG_LINE,
                5
            ]
        );
        assert_eq!(lines[0], "a");
        assert!(lines[1].starts_with('b'));
        // The bytes come out in order, none lost, however the input is chunked.
        let one_by_one: Vec<&[u8]> = b"hello\nworld".iter().map(std::slice::from_ref).collect();
        assert_eq!(split(&one_by_one).0, ["hello", "world"]);
    }

    #[test]
    fn a_piece_is_never_cut_inside_a_utf8_character() {
        let mut text = vec![b'a'; MAX_LOG_LINE - 1];
        text.extend("é€".as_bytes());
        text.push(b'\n');
        let (lines, _) = split(&[&text]);
        assert_eq!(
            lines.len(),
            2,
            "{:?}",
            lines.iter().map(String::len).collect::<Vec<_>>()
        );
        assert_eq!(lines[0].len(), MAX_LOG_LINE - 1);
        assert_eq!(lines[1], "é€");
    }

    #[test]
    fn tail_reads_only_the_end_of_the_log() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("a.log");
        let mut text: Vec<u8> = (0..100).flat_map(|i| format!("line {i}\n").into_bytes()).collect();
        std::fs::write(&path, &text).expect("write");
        let (lines, pos) = read_tail(&path, 3);
        assert_eq!(lines, ["line 97", "line 98", "line 99"]);
        assert_eq!(pos, text.len() as u64);
        assert!(read_tail(&path, 0).0.is_empty());
        assert_eq!(read_tail(&path, 1000).0.len(), 100);
        // One endless line: at most the byte bound is read, and it comes back in pieces.
        text.extend(std::iter::repeat_n(b'z', 3 * TAIL_MAX_BYTES as usize));
        std::fs::write(&path, &text).expect("write");
        let (lines, _) = read_tail(&path, 1_000_000);
        let bytes: usize = lines.iter().map(String::len).sum();
        assert!(bytes <= TAIL_MAX_BYTES as usize, "{bytes}");
        assert!(lines
            .iter()
            .all(|l| l.len() <= MAX_LOG_LINE && l.bytes().all(|c| c == b'z')));
        assert_eq!(read_tail(&path, 2).0.len(), 2);
        // The same line ended: its last pieces are the last lines.
        text.extend(b"end\n");
        std::fs::write(&path, &text).expect("write");
        let (lines, _) = read_tail(&path, 2);
        assert_eq!(lines.len(), 2);
        assert!(lines[1].ends_with("zend"), "{}", &lines[1][lines[1].len() - 8..]);
    }

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
