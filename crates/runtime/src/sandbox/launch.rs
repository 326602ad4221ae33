//! Starting a replica from the host, where the daemon is root: a fixed script ([`LAUNCH`]) run
//! by `sh` with a fixed environment ([`host_command`]), every variable part a positional
//! parameter, that joins the replica's cgroups, enters the lease's network namespace, drops to
//! the sandbox user and becomes bubblewrap. The tenant's environment, mounts, hostname and
//! working directory reach bubblewrap only as NUL-separated `--args` on a pipe
//! ([`sandbox_options`]), never on a command line or through a shell. Must not know how
//! replicas are watched, restarted or their logs read.

use std::collections::BTreeMap;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};

use pazar_api::manifest::Service;

use crate::cgroup::{Cgroup, Limits};
use crate::images::{ImageConfig, ImageStore};
use crate::{is_ram, netns, volume, RuntimeError};

use super::names::{cgroup_rel, lease_dir, log_path, mount_point, volume_dir, HostName};
use super::supervise::{proc_stat, spec_of, LeaseRun};
use super::{backend, SandboxOptions};

/// Processes a replica may have at once.
const PIDS_LIMIT: u64 = 512;
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

fn ephemeral_bytes(svc: &Service) -> u64 {
    crate::ephemeral_bytes(svc).unwrap_or(DEFAULT_EPHEMERAL)
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
pub(super) fn start_replica(opts: &SandboxOptions, run: &mut LeaseRun, i: usize) -> Result<(), RuntimeError> {
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
    let version = run.state.version.clone();
    let r = &mut run.state.replicas[i];
    r.pid = Some(pid);
    r.starttime = proc_stat(pid).map_or(0, |(_, t)| t);
    // What it runs now: the group's service, as the lease's version.
    r.spec = Some(spec_of(&svc));
    r.version = version;
    run.children.insert((svc_name.clone(), replica), child);
    run.next_start.remove(&(svc_name, replica));
    Ok(())
}
