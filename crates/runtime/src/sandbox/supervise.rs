//! The leases this daemon runs and keeping them running: each lease's record (`lease.json`,
//! written atomically, read back by a restarted daemon to adopt its replicas by PID and start
//! time), a supervisor that every [`SUPERVISE_EVERY`] notes replicas that stopped (the exit
//! reason kept, OOM named), starts them again after a backoff and rotates their logs, and the
//! convergence of a running lease to a tenant's new group. Must not know how a replica is
//! launched beyond [`start_replica`], nor the chain.

use std::collections::BTreeMap;
use std::process::Child;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use pazar_api::manifest::{Group, Service};

use crate::cgroup::Cgroup;
use crate::RuntimeError;
use pazar_files::write_atomic;

use super::launch::start_replica;
use super::logs::rotate_log;
use super::names::{cgroup_rel, lease_dir, log_path, HostName, LeaseKey};
use super::{backend, forward, SandboxOptions, SandboxRuntime};

/// How often the supervisor looks at every replica: notes the ones that stopped, starts them
/// again, and rotates their logs.
pub(super) const SUPERVISE_EVERY: Duration = Duration::from_millis(300);

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct ReplicaState {
    pub(super) service: String,
    pub(super) replica: u32,
    pub(super) pid: Option<u32>,
    /// `/proc/PID/stat` start time, so a reused PID is not taken for the replica.
    pub(super) starttime: u64,
    pub(super) restarts: u64,
    pub(super) last_error: Option<String>,
    /// The [`spec_of`] the service it was last started from: a manifest update replaces it
    /// when the service asks something else. `None` in records written before it was kept.
    #[serde(default)]
    pub(super) spec: Option<String>,
    /// The deployment version it runs (hex), where the deploy said.
    #[serde(default)]
    pub(super) version: Option<String>,
}

impl ReplicaState {
    /// A replica not started yet.
    pub(super) fn new(service: &str, replica: u32) -> ReplicaState {
        ReplicaState {
            service: service.to_string(),
            replica,
            pid: None,
            starttime: 0,
            restarts: 0,
            last_error: None,
            spec: None,
            version: None,
        }
    }
}

/// What a replica of `svc` is started from (image, command, env, resources, ports, mounts),
/// as a hex SHA-256: the count is left out, so scaling a service leaves its replicas alone.
pub(super) fn spec_of(svc: &Service) -> String {
    use sha2::{Digest, Sha256};
    let unit = Service {
        count: 0,
        ..svc.clone()
    };
    hex::encode(Sha256::digest(
        serde_json::to_vec(&unit).expect("a manifest service always serializes"),
    ))
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct FwdState {
    pub(super) service: String,
    pub(super) replica: u32,
    pub(super) port: u16,
    pub(super) host_port: u16,
}

/// What survives a daemon restart (`leases/<key>/lease.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct LeaseState {
    /// The [`LeaseKey`] the record was written for.
    pub(super) name: String,
    /// The whole lease id: a record is adopted only by the lease it names.
    pub(super) label: String,
    pub(super) group: Group,
    /// The deployment version of `group` (hex), where the deploy said.
    #[serde(default)]
    pub(super) version: Option<String>,
    pub(super) forwards: Vec<FwdState>,
    pub(super) replicas: Vec<ReplicaState>,
}

pub(super) struct LeaseRun {
    /// The name of the lease's objects on the host.
    pub(super) key: LeaseKey,
    pub(super) state: LeaseState,
    /// Replicas this daemon started (reaped here); adopted ones are watched through /proc.
    pub(super) children: BTreeMap<(String, u32), Child>,
    /// When a stopped replica is started again.
    pub(super) next_start: BTreeMap<(String, u32), Instant>,
    pub(super) forwards: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for LeaseRun {
    fn drop(&mut self) {
        for f in &self.forwards {
            f.abort();
        }
    }
}

pub(super) type Leases = Arc<Mutex<BTreeMap<String, LeaseRun>>>;

/// Writes the lease's record atomically (a crash leaves the old record or the new one).
pub(super) fn save(opts: &SandboxOptions, key: &LeaseKey, state: &LeaseState) -> Result<(), RuntimeError> {
    let path = lease_dir(&opts.dir, key).join("lease.json");
    let json = serde_json::to_vec_pretty(state).map_err(backend)?;
    write_atomic(&path, &json, 0o600).map_err(|e| backend(format!("cannot write {}: {e}", path.display())))
}

/// `(state, starttime)` of a process from `/proc/PID/stat`.
pub(super) fn proc_stat(pid: u32) -> Option<(char, u64)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold spaces: fields start after the last ')'.
    let rest = &s[s.rfind(')')? + 2..];
    let mut fields = rest.split(' ');
    let state = fields.next()?.chars().next()?;
    let starttime = fields.nth(18)?.parse().ok()?;
    Some((state, starttime))
}

pub(super) fn alive(pid: u32, starttime: u64) -> bool {
    matches!(proc_stat(pid), Some((s, t)) if s != 'Z' && s != 'X' && t == starttime)
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

/// Every 300 ms: notes replicas that stopped, starts them again after a backoff, rotates logs.
pub(super) async fn supervise(opts: SandboxOptions, leases: Leases) {
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

impl SandboxRuntime {
    /// Brings a running lease to `group`, version `version` (a tenant's new manifest for its
    /// lease), one replica at a time. First, replicas whose service or index is gone are
    /// stopped with their cgroups (and their logs removed), replicas the group adds are
    /// started, and replicas whose service is unchanged run on untouched as the new version.
    /// Then each replica whose service changed is replaced: the old process stops and one of
    /// the new service starts (all services of a lease share one network namespace, where two
    /// processes cannot listen on one port, so the new one cannot start beside the old), and
    /// the next waits until it serves (alive, every exposed TCP port accepting) or the ready
    /// wait ends, which stops the update with the reason. Images are resolved before anything
    /// changes, so one that is missing changes nothing. Forwards follow the global ports,
    /// `/etc/hosts` the services, and once every replica was replaced the volumes of a service
    /// or volume that is gone are unmounted and deleted (the tenant no longer pays for them);
    /// volumes the group still mounts keep their data.
    pub(super) async fn converge(
        &self,
        key: &LeaseKey,
        group: &Group,
        version: Option<&str>,
    ) -> Result<(), RuntimeError> {
        let old = {
            let leases = self.leases.lock().map_err(backend)?;
            let run = leases
                .get(key.as_str())
                .ok_or_else(|| backend("the lease stopped meanwhile"))?;
            run.state.clone()
        };
        let same_version = version.is_none() || old.version.as_deref() == version;
        let replaced_all = old.replicas.iter().all(|r| {
            let svc = group.services.iter().find(|s| s.name == r.service);
            svc.is_some_and(|s| r.spec.is_none() || r.spec == Some(spec_of(s)))
        });
        if old.group == *group && same_version && replaced_all {
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
        // What each replica was started from; records written before specs were kept are taken
        // to run the group they were recorded with.
        let started_from = |r: &ReplicaState| {
            r.spec
                .clone()
                .or_else(|| old.group.services.iter().find(|s| s.name == r.service).map(spec_of))
        };
        let to_replace = {
            let mut leases = self.leases.lock().map_err(backend)?;
            let run = leases
                .get_mut(key.as_str())
                .ok_or_else(|| backend("the lease stopped meanwhile"))?;
            let (kept, gone): (Vec<_>, Vec<_>) = std::mem::take(&mut run.state.replicas).into_iter().partition(|r| {
                group
                    .services
                    .iter()
                    .any(|s| s.name == r.service && r.replica < s.count)
            });
            for r in &gone {
                stop_replica(run, key, r)?;
                let log = log_path(&dir, HostName::parse("service", &r.service)?, r.replica);
                let _ = std::fs::remove_file(log.with_extension("log.1"));
                let _ = std::fs::remove_file(log);
            }
            run.state.replicas = kept;
            run.state.group = group.clone();
            run.state.version = version.map(str::to_string).or(old.version.clone());
            let mut to_replace = Vec::new();
            for r in &mut run.state.replicas {
                let svc = group
                    .services
                    .iter()
                    .find(|s| s.name == r.service)
                    .expect("kept replicas belong to a service of the group");
                if started_from(r) == Some(spec_of(svc)) {
                    // Unchanged: it runs this version as it is.
                    r.spec = Some(spec_of(svc));
                    r.version = run.state.version.clone();
                } else {
                    to_replace.push((r.service.clone(), r.replica));
                }
            }
            for svc in &group.services {
                for replica in 0..svc.count {
                    if !run
                        .state
                        .replicas
                        .iter()
                        .any(|r| r.service == svc.name && r.replica == replica)
                    {
                        run.state.replicas.push(ReplicaState::new(&svc.name, replica));
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
                let r = &run.state.replicas[i];
                if r.pid.is_none() && !run.next_start.contains_key(&(r.service.clone(), r.replica)) {
                    if let Err(e) = start_replica(&self.opts, run, i) {
                        failure = Some(e);
                        break;
                    }
                }
            }
            save(&self.opts, key, &run.state)?;
            if let Some(e) = failure {
                return Err(e);
            }
            to_replace
        };
        for (service, replica) in to_replace {
            let svc = group
                .services
                .iter()
                .find(|s| s.name == service)
                .expect("replicas to replace belong to a service of the group");
            self.replace(key, svc, replica, version).await?;
        }
        self.remove_gone_volumes(key, &old.group, group)
    }

    /// Stops replica `replica` of `svc` and starts one of what `svc` asks now, then waits until
    /// it serves; a replica the supervisor already restarted from `svc` is left as it is.
    async fn replace(
        &self,
        key: &LeaseKey,
        svc: &Service,
        replica: u32,
        version: Option<&str>,
    ) -> Result<(), RuntimeError> {
        let spec = spec_of(svc);
        {
            let mut leases = self.leases.lock().map_err(backend)?;
            let run = leases
                .get_mut(key.as_str())
                .ok_or_else(|| backend("the lease was closed during its update"))?;
            let i = run
                .state
                .replicas
                .iter()
                .position(|r| r.service == svc.name && r.replica == replica)
                .ok_or_else(|| backend("the replica left the lease during its update"))?;
            if run.state.replicas[i].spec.as_deref() != Some(spec.as_str()) {
                let r = run.state.replicas[i].clone();
                stop_replica(run, key, &r)?;
                let r = &mut run.state.replicas[i];
                r.pid = None;
                r.last_error = None;
                let started = start_replica(&self.opts, run, i);
                save(&self.opts, key, &run.state)?;
                started?;
            }
        }
        let t0 = Instant::now();
        loop {
            let up = {
                let leases = self.leases.lock().map_err(backend)?;
                let run = leases
                    .get(key.as_str())
                    .ok_or_else(|| backend("the lease was closed during its update"))?;
                run.state
                    .replicas
                    .iter()
                    .find(|r| r.service == svc.name && r.replica == replica)
                    .map(|r| (r.pid.is_some_and(|p| alive(p, r.starttime)), r.last_error.clone()))
            };
            let Some((alive, last_error)) = up else {
                return Err(backend("the replica left the lease during its update"));
            };
            if alive && self.ports_open(key, svc).await {
                return Ok(());
            }
            if t0.elapsed() >= self.ready_wait {
                // An exit during the window is the reason, even when the supervisor has
                // started the replica again since (its error was cleared when this update
                // started it).
                let why = match last_error {
                    Some(e) => e,
                    None if alive => "it runs, but does not accept connections on every port it exposes".to_string(),
                    None => "it exited".to_string(),
                };
                return Err(backend(crate::rollout::not_serving(
                    &svc.name,
                    replica,
                    version,
                    self.ready_wait,
                    &why,
                )));
            }
            tokio::time::sleep(crate::rollout::READY_POLL).await;
        }
    }

    /// Whether every TCP port `svc` exposes accepts a connection in the lease's namespace.
    pub(super) async fn ports_open(&self, key: &LeaseKey, svc: &Service) -> bool {
        for x in svc.expose.iter().filter(|x| x.proto == pazar_api::manifest::Proto::Tcp) {
            if crate::netns::connect(key.as_str(), x.port, Duration::from_millis(500))
                .await
                .is_err()
            {
                return false;
            }
        }
        true
    }
}

/// Stops a replica of the lease: its process if this daemon started it, then every process of
/// its cgroup, which goes; it will not be restarted.
fn stop_replica(run: &mut LeaseRun, key: &LeaseKey, r: &ReplicaState) -> Result<(), RuntimeError> {
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
    Ok(())
}
