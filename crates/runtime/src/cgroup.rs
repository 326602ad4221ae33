//! Control groups that bound a sandboxed replica's CPU, memory (swap included) and process
//! count, and let the daemon kill every process of a replica at once. Works on the unified
//! hierarchy (cgroup v2) and on the v1 controllers `cpu`, `memory` and `pids`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const ROOT: &str = "/sys/fs/cgroup";
const V1_CONTROLLERS: [&str; 3] = ["cpu", "memory", "pids"];
const PERIOD_US: u64 = 100_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub cpu_millis: u32,
    pub memory_bytes: u64,
    pub pids: u64,
}

/// One replica's group: a directory per hierarchy (one on v2, three on v1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cgroup {
    dirs: Vec<PathBuf>,
}

fn unified() -> bool {
    Path::new(ROOT).join("cgroup.controllers").exists()
}

fn write(dir: &Path, file: &str, value: &str) -> Result<(), String> {
    std::fs::write(dir.join(file), value).map_err(|e| format!("cannot write {}/{file}: {e}", dir.display()))
}

/// Refuses a relative group path that could leave the runtime's subtree or name a control
/// file: 1-4 components of 1-200 ASCII lower-case letters, digits, `-` and `.`, none of them
/// `.` or `..` or starting with `.`, the first one `pazar`.
fn checked(rel: &str) -> Result<&str, String> {
    let parts: Vec<&str> = rel.split('/').collect();
    let ok = parts.len() <= 4
        && parts[0] == "pazar"
        && parts.iter().all(|p| {
            let b = p.as_bytes();
            !b.is_empty()
                && b.len() <= 200
                && b[0] != b'.'
                && b.iter()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'-' | b'.'))
        });
    if ok {
        Ok(rel)
    } else {
        Err(format!("{rel:?} cannot name a cgroup of the sandbox"))
    }
}

impl Cgroup {
    /// The group at `rel` (e.g. `pazar/pz-0123…/web.0`), whether or not it exists.
    pub fn at(rel: &str) -> Result<Cgroup, String> {
        let rel = checked(rel)?;
        let dirs = if unified() {
            vec![Path::new(ROOT).join(rel)]
        } else {
            V1_CONTROLLERS
                .iter()
                .map(|c| Path::new(ROOT).join(c).join(rel))
                .collect()
        };
        Ok(Cgroup { dirs })
    }

    /// Whether this host lets the daemon make groups (it needs root, or a delegated subtree).
    pub fn check() -> Result<(), String> {
        let probe = if unified() {
            PathBuf::from(ROOT)
        } else {
            Path::new(ROOT).join("memory")
        };
        let meta = std::fs::metadata(&probe).map_err(|e| format!("no cgroup hierarchy at {}: {e}", probe.display()))?;
        if !meta.is_dir() || !nix::unistd::Uid::effective().is_root() {
            return Err(format!(
                "the sandbox runtime needs root to make cgroups under {} and network namespaces",
                probe.display()
            ));
        }
        Ok(())
    }

    /// Makes the group (and its parents) and sets its limits.
    pub fn create(rel: &str, limits: Limits) -> Result<Cgroup, String> {
        let cg = Cgroup::at(rel)?;
        if unified() {
            // Controllers must be enabled in every ancestor's subtree_control.
            let mut dir = PathBuf::from(ROOT);
            for part in Path::new(rel).parent().into_iter().flat_map(|p| p.components()) {
                write(&dir, "cgroup.subtree_control", "+cpu +memory +pids")?;
                dir.push(part);
                std::fs::create_dir_all(&dir).map_err(|e| format!("cannot make {}: {e}", dir.display()))?;
            }
            write(&dir, "cgroup.subtree_control", "+cpu +memory +pids")?;
            let d = &cg.dirs[0];
            std::fs::create_dir_all(d).map_err(|e| format!("cannot make {}: {e}", d.display()))?;
            write(d, "memory.max", &limits.memory_bytes.to_string())?;
            if d.join("memory.swap.max").exists() {
                write(d, "memory.swap.max", "0")?;
            }
            let quota = u64::from(limits.cpu_millis) * PERIOD_US / 1000;
            write(d, "cpu.max", &format!("{} {PERIOD_US}", quota.max(1000)))?;
            write(d, "pids.max", &limits.pids.to_string())?;
        } else {
            for d in &cg.dirs {
                std::fs::create_dir_all(d).map_err(|e| format!("cannot make {}: {e}", d.display()))?;
            }
            let [cpu, mem, pids] = [&cg.dirs[0], &cg.dirs[1], &cg.dirs[2]];
            write(mem, "memory.limit_in_bytes", &limits.memory_bytes.to_string())?;
            if mem.join("memory.memsw.limit_in_bytes").exists() {
                write(mem, "memory.memsw.limit_in_bytes", &limits.memory_bytes.to_string())?;
            }
            write(cpu, "cpu.cfs_period_us", &PERIOD_US.to_string())?;
            let quota = u64::from(limits.cpu_millis) * PERIOD_US / 1000;
            write(cpu, "cpu.cfs_quota_us", &quota.max(1000).to_string())?;
            write(pids, "pids.max", &limits.pids.to_string())?;
        }
        Ok(cg)
    }

    /// The `cgroup.procs` files a new process writes itself into.
    pub fn procs_files(&self) -> Vec<PathBuf> {
        self.dirs.iter().map(|d| d.join("cgroup.procs")).collect()
    }

    /// Processes in the group now.
    pub fn pids(&self) -> Vec<i32> {
        let Some(d) = self.dirs.last() else { return Vec::new() };
        std::fs::read_to_string(d.join("cgroup.procs"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }

    /// Kills every process of the group (2 s at most), then removes the group.
    pub fn kill_and_remove(&self) {
        let t0 = Instant::now();
        loop {
            let pids = self.pids();
            if pids.is_empty() || t0.elapsed() > Duration::from_secs(2) {
                break;
            }
            for pid in pids {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        for d in &self.dirs {
            let _ = std::fs::remove_dir(d);
        }
    }

    /// Whether the memory limit was hit (v1 `failcnt`, v2 `memory.events` oom_kill).
    pub fn oom_killed(&self) -> bool {
        for d in &self.dirs {
            if let Ok(s) = std::fs::read_to_string(d.join("memory.events")) {
                return s
                    .lines()
                    .any(|l| l.strip_prefix("oom_kill ").is_some_and(|n| n.trim() != "0"));
            }
            if let Ok(s) = std::fs::read_to_string(d.join("memory.oom_control")) {
                return s
                    .lines()
                    .any(|l| l.strip_prefix("oom_kill ").is_some_and(|n| n.trim() != "0"));
            }
        }
        false
    }

    /// Removes an (empty) parent group such as a lease's, on every hierarchy.
    pub fn remove_dir(rel: &str) {
        for d in Cgroup::at(rel).map(|c| c.dirs).unwrap_or_default() {
            let _ = std::fs::remove_dir(d);
        }
    }
}
