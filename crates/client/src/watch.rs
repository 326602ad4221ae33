//! The tenant's agent: keeps one deployment served with no tenant at the keyboard.
//!
//! [`Agent::step`] is one pass over the deployment as the ledger has it now:
//! - each live lease is probed: the provider's status endpoint (signed, bounded by
//!   [`WatchOptions::probe_timeout`]) and a TCP connection to each published port of the
//!   service. A lease whose probes keep failing for [`WatchOptions::unresponsive_after`] is
//!   closed on the ledger with the reason `provider_unresponsive`, which reopens its group's
//!   order; its provider is not taken again by this agent.
//! - a group with no live lease (closed by the agent, by the provider, by another agent) gets
//!   one: the group is started again where the provider's close paused it, the lowest bid under
//!   the tenant's ceiling is leased after a short window, the latest snapshot of the group's
//!   volumes is restored into the new lease, the manifest is sent and the service is awaited.
//!   [`WatchEvent::Failover`] says how long the group had no serving lease.
//! - on its schedule, the volumes of each serving lease are snapshotted into the local
//!   [`SnapshotStore`] (only changed chunks travel).
//!
//! Ledger events of the deployment (`escrow_low`, top-ups, grace, resumes, closes) are read from
//! the node's event stream on a thread of their own and reported too.
//!
//! Several agents for one deployment do not fight: every decision starts from the ledger's
//! state, a lease exists once per order (the ledger refuses a second `CreateLease`), closing a
//! lease that is already closed is no error, and an agent sends the manifest only to a lease it
//! made, or to one that has not served for [`WatchOptions::adopt_after`] (its maker died on the
//! way).
//!
//! Blocking, like [`crate::deploy`]: call it from a thread of its own.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use serde::Serialize;

use pazar_api::manifest::Manifest;
use pazar_api::node::{BidEntry, BidPage, DeploymentDetail, ListQuery};
use pazar_api::provider::LeaseStatus;
use pazar_api::request::SubmitMode;
use pazar_api::ErrorCode;
use pazar_types::event::{Event, TopUpSkipped};
use pazar_types::market::{DeploymentState, GroupState, LeaseCloseReason, LeaseState};
use pazar_types::{Address, Coin, DeploymentId, Hash32, LeaseId, Msg, Price};

use crate::deploy::{self, DeployError, Tenant};
use crate::snapshots::SnapshotStore;
use crate::tenant::TenantError;
use crate::ClientError;

#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error(transparent)]
    Node(#[from] ClientError),
    #[error("deployment {0} is not the signer's: only its owner's agent can lease for it")]
    NotOwner(String),
    #[error("the manifest's version {manifest} is not deployment {id}'s version {ledger} on the ledger: give the file the deployment runs (or update the deployment first)")]
    WrongManifest {
        id: String,
        manifest: String,
        ledger: String,
    },
    #[error("deployment {0} does not exist")]
    NotFound(String),
    #[error("the async runtime for the provider channel cannot start: {0}")]
    Runtime(String),
}

/// How the agent probes, when it gives up on a provider, and what it may pay instead.
#[derive(Debug, Clone)]
pub struct WatchOptions {
    /// Time between two passes (probes, ledger reads).
    pub probe_every: Duration,
    /// Longest one probe (status request, port connections) may take.
    pub probe_timeout: Duration,
    /// A lease whose probes fail for this long is closed as `provider_unresponsive`.
    pub unresponsive_after: Duration,
    /// After the first acceptable bid of a reopened order, wait this long for cheaper ones.
    pub bid_window: Duration,
    /// Longest a new lease's services may take to serve.
    pub ready_timeout: Duration,
    /// The most a replacement lease may cost per block (its denomination must be the group's);
    /// `None`: the group's own ceiling, what the deployment was priced for.
    pub max_price: Option<Price>,
    /// Snapshot the volumes of serving leases this often (`None`: never).
    pub snapshot_every: Option<Duration>,
    /// A lease nobody sent a manifest to (its maker stopped on the way) is taken over after this.
    pub adopt_after: Duration,
}

impl Default for WatchOptions {
    fn default() -> WatchOptions {
        WatchOptions {
            probe_every: Duration::from_secs(2),
            probe_timeout: Duration::from_secs(3),
            unresponsive_after: Duration::from_secs(10),
            bid_window: Duration::from_secs(1),
            ready_timeout: Duration::from_secs(180),
            max_price: None,
            snapshot_every: None,
            adopt_after: Duration::from_secs(300),
        }
    }
}

/// What the agent saw or did. Serialized with its name in `event` (what a notification
/// command reads on its standard input, and what `-o json` prints one per line).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum WatchEvent {
    /// The agent started on the deployment.
    Watching {
        deployment: DeploymentId,
        groups: usize,
    },
    /// A lease answers (the first time, or again after failed probes).
    Healthy {
        lease: LeaseId,
    },
    /// A probe of a live lease failed; `failing_ms` since the first failure in a row.
    ProbeFailed {
        lease: LeaseId,
        error: String,
        failing_ms: u64,
    },
    /// The lease failed its probes for longer than allowed: the agent closes it.
    Unresponsive {
        lease: LeaseId,
        failing_ms: u64,
    },
    /// A lease of the deployment ended on the ledger.
    LeaseClosed {
        lease: LeaseId,
        reason: Option<LeaseCloseReason>,
    },
    /// The agent leased a replacement bid.
    Leased {
        lease: LeaseId,
        price: Price,
    },
    /// The latest snapshot of the group went into the new lease before its services started.
    Restored {
        lease: LeaseId,
        files: u64,
        bytes: u64,
    },
    /// The group serves again: `down_ms` from the first failed probe (or the close the agent
    /// saw) to the replacement answering.
    Failover {
        gseq: u32,
        from: Option<LeaseId>,
        to: LeaseId,
        down_ms: u64,
        restored_bytes: u64,
    },
    /// A step of a failover did not work; the agent tries again on its next pass.
    FailoverFailed {
        gseq: u32,
        error: String,
    },
    /// The volumes of a serving lease were copied into the local store.
    Snapshot {
        lease: LeaseId,
        files: u64,
        bytes_total: u64,
        chunks_fetched: u64,
        bytes_fetched: u64,
    },
    SnapshotFailed {
        lease: LeaseId,
        error: String,
    },
    /// The escrow's runway fell to the tenant's threshold.
    EscrowLow {
        runway_blocks: u64,
        low_blocks: u64,
    },
    /// The ledger topped the escrow up from the tenant's allowance.
    ToppedUp {
        amount: Coin,
        remaining: String,
    },
    /// A top-up was due and could not be made.
    TopUpSkipped {
        reason: String,
    },
    /// The escrow ran dry: the lease is in grace until the end of block `until`.
    Grace {
        lease: LeaseId,
        until: u64,
    },
    /// A deposit resumed the lease.
    Resumed {
        lease: LeaseId,
    },
    /// The deployment was updated to a version this agent does not have: it keeps probing
    /// but leases no replacement until it is restarted with the new file.
    ManifestOutdated {
        ledger: String,
        agent: String,
    },
    /// The node did not answer a pass; the agent tries again on the next.
    NodeError {
        error: String,
    },
    /// The deployment was closed: the agent stops.
    DeploymentClosed,
}

impl WatchEvent {
    /// The event's name (`escrow_low`, `failover`...), as in its JSON.
    pub fn name(&self) -> &'static str {
        match self {
            WatchEvent::Watching { .. } => "watching",
            WatchEvent::Healthy { .. } => "healthy",
            WatchEvent::ProbeFailed { .. } => "probe_failed",
            WatchEvent::Unresponsive { .. } => "unresponsive",
            WatchEvent::LeaseClosed { .. } => "lease_closed",
            WatchEvent::Leased { .. } => "leased",
            WatchEvent::Restored { .. } => "restored",
            WatchEvent::Failover { .. } => "failover",
            WatchEvent::FailoverFailed { .. } => "failover_failed",
            WatchEvent::Snapshot { .. } => "snapshot",
            WatchEvent::SnapshotFailed { .. } => "snapshot_failed",
            WatchEvent::EscrowLow { .. } => "escrow_low",
            WatchEvent::ToppedUp { .. } => "topped_up",
            WatchEvent::TopUpSkipped { .. } => "top_up_skipped",
            WatchEvent::Grace { .. } => "grace",
            WatchEvent::Resumed { .. } => "resumed",
            WatchEvent::ManifestOutdated { .. } => "manifest_outdated",
            WatchEvent::NodeError { .. } => "node_error",
            WatchEvent::DeploymentClosed => "deployment_closed",
        }
    }

    /// Whether the tenant's notification hook hears of it: what needs a person or a record
    /// (money running low, a lease lost or replaced, data restored), not every probe.
    pub fn notifies(&self) -> bool {
        !matches!(
            self,
            WatchEvent::Watching { .. }
                | WatchEvent::Healthy { .. }
                | WatchEvent::ProbeFailed { .. }
                | WatchEvent::Snapshot { .. }
                | WatchEvent::Leased { .. }
                | WatchEvent::NodeError { .. }
        )
    }
}

/// What the agent knows of one group between passes.
#[derive(Default)]
struct GroupWatch {
    /// The live lease seen on the last pass.
    lease: Option<LeaseId>,
    /// Since when the lease's probes fail (reset by a good probe).
    failing_since: Option<Instant>,
    /// The lease has answered at least once since the agent knows it.
    healthy: bool,
    /// Since when the group has no serving lease, and which lease it lost.
    down: Option<(Instant, Option<LeaseId>)>,
    /// When the current lease was first seen not serving and not made by this agent.
    unsent_since: Option<Instant>,
    /// When an acceptable bid of the open order was first seen.
    bids_since: Option<Instant>,
    last_snapshot: Option<Instant>,
    /// Failed replacement or start attempts in a row, and when the next may be made: each
    /// failure doubles the wait (2 s … 5 min), so a step that keeps failing (and may cost a
    /// fee) is not repeated every pass.
    failures: u32,
    retry_at: Option<Instant>,
}

impl GroupWatch {
    fn may_try(&self) -> bool {
        self.retry_at.is_none_or(|t| Instant::now() >= t)
    }

    fn failed(&mut self) {
        self.failures = self.failures.saturating_add(1);
        let secs = 1u64 << self.failures.min(8);
        self.retry_at = Some(Instant::now() + Duration::from_secs(secs.min(300)));
    }

    fn succeeded(&mut self) {
        self.failures = 0;
        self.retry_at = None;
    }
}

/// The agent of one deployment.
pub struct Agent<'a> {
    tenant: &'a Tenant,
    id: DeploymentId,
    manifest: Manifest,
    version: Hash32,
    told_outdated: bool,
    opts: WatchOptions,
    store: Option<SnapshotStore>,
    groups: BTreeMap<u32, GroupWatch>,
    /// Providers this agent closed a lease of as unresponsive: not leased again by it.
    avoid: BTreeSet<Address>,
    /// Leases this agent made (it sends their manifests).
    made: BTreeSet<LeaseId>,
    /// Each group's leased persistent bytes: the most a snapshot of it may hold.
    limits: BTreeMap<u32, u64>,
    ledger_events: Option<mpsc::Receiver<WatchEvent>>,
    stop_events: Arc<AtomicBool>,
    rt: tokio::runtime::Runtime,
}

impl Drop for Agent<'_> {
    fn drop(&mut self) {
        self.stop_events.store(true, Ordering::Relaxed);
    }
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl<'a> Agent<'a> {
    /// An agent of the tenant's deployment `dseq` that runs `manifest` (it must be the version
    /// on the ledger). `store`: where snapshots are kept and restored from.
    pub fn new(
        tenant: &'a Tenant,
        dseq: u64,
        manifest: Manifest,
        opts: WatchOptions,
        store: Option<SnapshotStore>,
    ) -> Result<Agent<'a>, WatchError> {
        let id = DeploymentId {
            owner: tenant.address(),
            dseq,
        };
        let detail = match tenant.rpc.deployment(&id, false) {
            Ok(d) => d.item,
            Err(e) if e.is_not_found() => return Err(WatchError::NotFound(format!("{}/{}", id.owner, id.dseq))),
            Err(e) => return Err(e.into()),
        };
        let version: Hash32 = manifest.version();
        if version != detail.deployment.version {
            return Err(WatchError::WrongManifest {
                id: format!("{}/{}", id.owner, id.dseq),
                manifest: hex::encode(version),
                ledger: hex::encode(detail.deployment.version),
            });
        }
        let rt = crate::provider_runtime().map_err(|e| WatchError::Runtime(e.to_string()))?;
        Ok(Agent {
            tenant,
            id,
            manifest,
            version,
            told_outdated: false,
            opts,
            store,
            groups: BTreeMap::new(),
            avoid: BTreeSet::new(),
            made: BTreeSet::new(),
            limits: BTreeMap::new(),
            ledger_events: None,
            stop_events: Arc::new(AtomicBool::new(false)),
            rt,
        })
    }

    /// Follows the node's event stream from the current height on a thread of its own; its
    /// events of this deployment come out of the next [`Agent::step`]s.
    pub fn follow_ledger(&mut self) -> Result<(), WatchError> {
        let from = self.tenant.rpc.status()?.height + 1;
        let mut stream = self.tenant.rpc.events(from);
        let (tx, rx) = mpsc::channel();
        let stop = self.stop_events.clone();
        let id = self.id.clone();
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match stream.next_block() {
                    Ok(block) => {
                        let events = block
                            .receipts
                            .iter()
                            .flat_map(|r| r.events.iter())
                            .chain(block.end_block_events.iter());
                        for e in events {
                            if let Some(w) = ledger_event(&id, e) {
                                if tx.send(w).is_err() {
                                    return;
                                }
                            }
                        }
                    }
                    // The stream reconnects on the next call.
                    Err(_) => std::thread::sleep(Duration::from_secs(1)),
                }
            }
        });
        self.ledger_events = Some(rx);
        Ok(())
    }

    /// Runs passes until `stop` is set or the deployment closes.
    pub fn run(&mut self, stop: &AtomicBool, on: &mut dyn FnMut(&WatchEvent)) -> Result<(), WatchError> {
        let detail = self.tenant.rpc.deployment(&self.id, false)?.item;
        on(&WatchEvent::Watching {
            deployment: self.id.clone(),
            groups: detail.groups.len(),
        });
        while !stop.load(Ordering::Relaxed) {
            let t0 = Instant::now();
            match self.step(on) {
                Ok(true) => {}
                Ok(false) => return Ok(()),
                // A node that does not answer now may answer on the next pass; the provider
                // side never stops the agent.
                Err(WatchError::Node(e)) if !e.is_not_found() => {
                    on(&WatchEvent::NodeError { error: e.to_string() });
                }
                Err(e) => return Err(e),
            }
            let left = self.opts.probe_every.saturating_sub(t0.elapsed());
            sleep_unless(stop, left);
        }
        Ok(())
    }

    /// One pass; `false` once the deployment is closed.
    pub fn step(&mut self, on: &mut dyn FnMut(&WatchEvent)) -> Result<bool, WatchError> {
        if let Some(rx) = &self.ledger_events {
            while let Ok(e) = rx.try_recv() {
                on(&e);
            }
        }
        let detail = self.tenant.rpc.deployment(&self.id, false)?.item;
        if detail.deployment.state != DeploymentState::Active {
            on(&WatchEvent::DeploymentClosed);
            return Ok(false);
        }
        let outdated = detail.deployment.version != self.version;
        if outdated && !self.told_outdated {
            self.told_outdated = true;
            on(&WatchEvent::ManifestOutdated {
                ledger: hex::encode(detail.deployment.version),
                agent: hex::encode(self.version),
            });
        }
        for g in &detail.groups {
            let gseq = g.gseq;
            self.limits.insert(gseq, g.group.spec.persistent_bytes());
            let live = detail
                .leases
                .iter()
                .find(|l| l.id.gseq == gseq && l.lease.state.is_live())
                .map(|l| (l.id.clone(), l.lease.state));
            let w = self.groups.entry(gseq).or_default();
            // A lease seen last pass and gone now: closed by someone.
            if let Some(prev) = w.lease.clone() {
                if live.as_ref().is_none_or(|(l, _)| *l != prev) {
                    let reason = detail.leases.iter().find(|l| l.id == prev).and_then(|l| l.lease.reason);
                    on(&WatchEvent::LeaseClosed {
                        lease: prev.clone(),
                        reason,
                    });
                    if w.down.is_none() {
                        w.down = Some((w.failing_since.unwrap_or_else(Instant::now), Some(prev)));
                    }
                    w.lease = None;
                    w.failing_since = None;
                    w.healthy = false;
                    w.unsent_since = None;
                }
            }
            match (live, g.group.state) {
                (Some((lease, LeaseState::Grace)), _) => {
                    // The provider stopped it on purpose; a deposit resumes it.
                    let w = self.groups.entry(gseq).or_default();
                    w.lease = Some(lease);
                    w.failing_since = None;
                }
                (Some((lease, _)), _) => self.probe_lease(gseq, lease, on),
                // The money ran out, or the tenant closed the group: nothing to fail over.
                (None, GroupState::InsufficientFunds | GroupState::Closed) => {}
                // A replacement would be sent a manifest its provider refuses.
                (None, _) if outdated => {}
                // Paused by the tenant (or by an order that found no bid): the agent does not
                // undo what the tenant did; only a provider's close or its own is failed over.
                (None, GroupState::Paused) if !paused_by_provider(&detail, gseq) => {}
                (None, _) => {
                    if !self.groups.entry(gseq).or_default().may_try() {
                        continue;
                    }
                    match self.replace(&detail, gseq, on) {
                        Ok(()) => {}
                        Err(e) => {
                            self.groups.entry(gseq).or_default().failed();
                            on(&WatchEvent::FailoverFailed {
                                gseq,
                                error: short(&e.to_string()),
                            });
                        }
                    }
                }
            }
        }
        Ok(true)
    }

    /// Probes a live lease; closes it when it has failed for too long, snapshots it when due.
    fn probe_lease(&mut self, gseq: u32, lease: LeaseId, on: &mut dyn FnMut(&WatchEvent)) {
        let result = self.probe(&lease);
        let made_here = self.made.contains(&lease);
        let w = self.groups.entry(gseq).or_default();
        if w.lease.as_ref() != Some(&lease) {
            w.lease = Some(lease.clone());
            w.failing_since = None;
            w.healthy = false;
            w.unsent_since = None;
        }
        match result {
            Ok(_) => {
                w.failing_since = None;
                w.unsent_since = None;
                if !w.healthy {
                    w.healthy = true;
                    on(&WatchEvent::Healthy { lease: lease.clone() });
                }
                if let Some((since, from)) = w.down.take() {
                    // Someone else (another agent, the tenant) brought it back.
                    on(&WatchEvent::Failover {
                        gseq,
                        from,
                        to: lease.clone(),
                        down_ms: ms(since.elapsed()),
                        restored_bytes: 0,
                    });
                }
                self.maybe_snapshot(gseq, &lease, on);
            }
            Err(Probe::NotStarted(why)) if !w.healthy => {
                // A lease that has not started: another agent may still be restoring and
                // sending its manifest (taken over after `adopt_after`); one this agent made
                // and could not start is started again, with a growing wait between tries.
                // Neither is closed for it: the provider answers.
                let since = *w.unsent_since.get_or_insert_with(Instant::now);
                let due = if made_here {
                    w.may_try()
                } else {
                    since.elapsed() >= self.opts.adopt_after
                };
                if due {
                    self.made.insert(lease.clone());
                    if let Err(e) = self.start_lease(gseq, &lease, on) {
                        self.groups.entry(gseq).or_default().failed();
                        on(&WatchEvent::FailoverFailed {
                            gseq,
                            error: short(&format!("starting {lease} ({why}): {e}")),
                        });
                    }
                }
            }
            // The provider answers and its replicas are pulling, starting, being replaced by an
            // update, or the app itself is down: no other provider would do better.
            Err(Probe::NotReady(_)) | Err(Probe::NotStarted(_)) => {
                w.failing_since = None;
            }
            Err(p) => {
                let since = *w.failing_since.get_or_insert_with(Instant::now);
                let failing = since.elapsed();
                on(&WatchEvent::ProbeFailed {
                    lease: lease.clone(),
                    error: short(&p.to_string()),
                    failing_ms: ms(failing),
                });
                if failing >= self.opts.unresponsive_after {
                    on(&WatchEvent::Unresponsive {
                        lease: lease.clone(),
                        failing_ms: ms(failing),
                    });
                    w.down = Some((since, Some(lease.clone())));
                    self.avoid.insert(lease.provider);
                    if let Err(e) = self.close_unresponsive(&lease) {
                        on(&WatchEvent::FailoverFailed {
                            gseq,
                            error: short(&format!("closing {lease}: {e}")),
                        });
                    }
                }
            }
        }
    }

    /// The provider's status of the lease, and a TCP connection to each published port.
    fn probe(&self, lease: &LeaseId) -> Result<LeaseStatus, Probe> {
        let client = self
            .tenant
            .provider_client(&lease.provider)
            .map_err(|e| Probe::Provider(e.to_string()))?;
        let timeout = self.opts.probe_timeout;
        let status = self
            .rt
            .block_on(async { tokio::time::timeout(timeout, client.status(lease)).await })
            .map_err(|_| Probe::Provider(format!("no status answer within {} ms", ms(timeout))))?
            .map_err(|e| match &e {
                TenantError::Refused {
                    code: ErrorCode::NoManifest,
                    ..
                } => Probe::NotStarted(e.to_string()),
                _ => Probe::Provider(e.to_string()),
            })?;
        if status.services.is_empty() {
            return Err(Probe::NotStarted("no services run yet".into()));
        }
        if !status.ready {
            return Err(Probe::NotReady("not every replica runs".into()));
        }
        // The provider says it serves: its published ports must take connections. At most
        // `MAX_PROBED_PORTS`, within one probe's time in all (a provider that lists many
        // addresses cannot stall the agent or aim it at other hosts at length).
        let deadline = Instant::now() + timeout;
        for u in status.uris.iter().take(MAX_PROBED_PORTS) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Probe::Service(
                    "the published ports did not all answer within the probe's time".into(),
                ));
            }
            let Some(addr) = authority(&u.uri) else { continue };
            let reached = self.rt.block_on(port_reached(&addr, left));
            if reached == Some(false) {
                return Err(Probe::Service(format!(
                    "{}:{} at {} does not accept connections",
                    u.service, u.port, u.uri
                )));
            }
        }
        Ok(status)
    }

    /// Closes `lease` as `provider_unresponsive`; one that another agent closed first is fine.
    fn close_unresponsive(&self, lease: &LeaseId) -> Result<(), DeployError> {
        let msg = Msg::CloseLease {
            lease: lease.clone(),
            reason: LeaseCloseReason::ProviderUnresponsive,
        };
        match self.tenant.submit(vec![msg], SubmitMode::Commit) {
            Ok(r) => match deploy::committed("closing the lease", &r) {
                Ok(_) => Ok(()),
                Err(e) if !self.still_live(lease)? => {
                    let _ = e;
                    Ok(())
                }
                Err(e) => Err(e),
            },
            Err(e) => Err(e.into()),
        }
    }

    fn still_live(&self, lease: &LeaseId) -> Result<bool, DeployError> {
        Ok(self.tenant.rpc.lease(lease, false)?.item.lease.state.is_live())
    }

    /// A group without a live lease: start it again, lease the best acceptable bid, restore,
    /// send the manifest, wait until it serves.
    fn replace(
        &mut self,
        detail: &DeploymentDetail,
        gseq: u32,
        on: &mut dyn FnMut(&WatchEvent),
    ) -> Result<(), DeployError> {
        let Some(g) = detail.groups.iter().find(|g| g.gseq == gseq) else {
            return Ok(());
        };
        let w = self.groups.entry(gseq).or_default();
        if w.down.is_none() {
            w.down = Some((Instant::now(), None));
        }
        if g.group.state == GroupState::Paused {
            // A provider's close pauses the group; starting it opens a fresh order.
            let r = self.tenant.submit(
                vec![Msg::StartGroup {
                    dseq: self.id.dseq,
                    gseq,
                }],
                SubmitMode::Commit,
            )?;
            // Another agent may have started it first: the next pass sees the order.
            let _ = deploy::committed("starting the group", &r);
            return Ok(());
        }
        let Some(oseq) = g.group.current_order else {
            return Ok(());
        };
        let ceiling = self.opts.max_price.clone().or_else(|| g.group.spec.max_price());
        let bids = self.tenant.rpc.list_all::<BidPage>(&ListQuery {
            owner: Some(self.id.owner),
            dseq: Some(self.id.dseq),
            state: Some("open".into()),
            ..ListQuery::default()
        })?;
        let best = best_bid(bids.into_iter(), gseq, oseq, &self.avoid, ceiling.as_ref());
        let w = self.groups.entry(gseq).or_default();
        let Some(best) = best else {
            w.bids_since = None;
            return Ok(());
        };
        let since = *w.bids_since.get_or_insert_with(Instant::now);
        if since.elapsed() < self.opts.bid_window {
            return Ok(());
        }
        w.bids_since = None;
        let r = self
            .tenant
            .submit(vec![Msg::CreateLease { bid: best.id.clone() }], SubmitMode::Commit)?;
        if let Err(e) = deploy::committed("leasing the replacement", &r) {
            // Another agent leased this order first: the next pass sees its lease.
            let taken = self.tenant.rpc.order(&best.id.order(), false)?.item.order.state
                != pazar_types::market::OrderState::Open;
            return if taken { Ok(()) } else { Err(e) };
        }
        let lease = best.id.clone();
        self.made.insert(lease.clone());
        on(&WatchEvent::Leased {
            lease: lease.clone(),
            price: best.bid.price.clone(),
        });
        self.start_lease(gseq, &lease, on)
    }

    /// Restores the group's latest snapshot into `lease`, sends the manifest and waits until
    /// it serves; reports the failover.
    fn start_lease(&mut self, gseq: u32, lease: &LeaseId, on: &mut dyn FnMut(&WatchEvent)) -> Result<(), DeployError> {
        let client = self.tenant.provider_client(&lease.provider)?;
        let mut restored = 0;
        if let Some(store) = &self.store {
            if store.latest(gseq).map_err(snapshot_err)?.is_some() {
                let r = store.push(&client, lease).map_err(snapshot_err)?;
                restored = r.bytes_total;
                on(&WatchEvent::Restored {
                    lease: lease.clone(),
                    files: r.files,
                    bytes: r.bytes_total,
                });
            }
        }
        deploy::send_manifest_and_wait(&client, lease, &self.manifest, self.opts.ready_timeout, &mut |_| {})?;
        let w = self.groups.entry(gseq).or_default();
        w.lease = Some(lease.clone());
        w.healthy = true;
        w.failing_since = None;
        w.last_snapshot = None;
        w.succeeded();
        let (since, from) = w.down.take().unwrap_or((Instant::now(), None));
        on(&WatchEvent::Healthy { lease: lease.clone() });
        on(&WatchEvent::Failover {
            gseq,
            from,
            to: lease.clone(),
            down_ms: ms(since.elapsed()),
            restored_bytes: restored,
        });
        Ok(())
    }

    fn maybe_snapshot(&mut self, gseq: u32, lease: &LeaseId, on: &mut dyn FnMut(&WatchEvent)) {
        let (Some(store), Some(every)) = (&self.store, self.opts.snapshot_every) else {
            return;
        };
        let w = self.groups.entry(gseq).or_default();
        if w.last_snapshot.is_some_and(|t| t.elapsed() < every) {
            return;
        }
        w.last_snapshot = Some(Instant::now());
        let limit = self.limits.get(&gseq).copied();
        let result = self
            .tenant
            .provider_client(&lease.provider)
            .map_err(|e| e.to_string())
            .and_then(|c| store.pull_within(&c, lease, limit).map_err(|e| e.to_string()));
        match result {
            Ok(r) => on(&WatchEvent::Snapshot {
                lease: lease.clone(),
                files: r.files,
                bytes_total: r.bytes_total,
                chunks_fetched: r.chunks_fetched,
                bytes_fetched: r.bytes_fetched,
            }),
            Err(error) => on(&WatchEvent::SnapshotFailed {
                lease: lease.clone(),
                error: short(&error),
            }),
        }
    }
}

fn snapshot_err(e: crate::snapshots::SnapshotError) -> DeployError {
    DeployError::Provider(TenantError::Decode(format!("snapshot: {e}")))
}

/// Most published ports probed per lease.
const MAX_PROBED_PORTS: usize = 16;
/// Longest text of another party (a provider's error) carried in an event.
const MAX_EVENT_TEXT: usize = 512;

/// `text` cut to [`MAX_EVENT_TEXT`] bytes (at a character boundary), for events and hooks.
fn short(text: &str) -> String {
    if text.len() <= MAX_EVENT_TEXT {
        return text.to_string();
    }
    let mut end = MAX_EVENT_TEXT;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// Whether group `gseq`'s last lease was closed by its provider (which pauses the group) or
/// by an agent as unresponsive: a pause to fail over, not one the tenant chose.
fn paused_by_provider(detail: &DeploymentDetail, gseq: u32) -> bool {
    detail
        .leases
        .iter()
        .filter(|l| l.id.gseq == gseq)
        .max_by_key(|l| l.id.oseq)
        .and_then(|l| l.lease.reason)
        .is_some_and(|r| r.is_provider_reason() || r == LeaseCloseReason::ProviderUnresponsive)
}

/// Why a probe failed.
#[derive(Debug)]
enum Probe {
    /// The provider did not answer, or not as a provider.
    Provider(String),
    /// The provider answers and runs nothing for the lease (yet).
    NotStarted(String),
    /// The provider answers; not every replica runs (pulling, starting, an update, a crash).
    NotReady(String),
    /// The provider answers; the service does not.
    Service(String),
}

impl std::fmt::Display for Probe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Probe::Provider(e) => write!(f, "provider: {e}"),
            Probe::NotStarted(e) => write!(f, "not started: {e}"),
            Probe::NotReady(e) => write!(f, "not ready: {e}"),
            Probe::Service(e) => write!(f, "service: {e}"),
        }
    }
}

/// Whether a TCP connection to `addr` (`host:port`) opens within `timeout`; `None` when the
/// name does not resolve here (an ingress name whose DNS is not set up on this machine says
/// nothing about the provider, so it is not counted).
async fn port_reached(addr: &str, timeout: Duration) -> Option<bool> {
    let Ok(Ok(addrs)) = tokio::time::timeout(timeout, tokio::net::lookup_host(addr)).await else {
        return None;
    };
    let addrs: Vec<_> = addrs.collect();
    if addrs.is_empty() {
        return None;
    }
    let connect = tokio::net::TcpStream::connect(&addrs[..]);
    Some(matches!(tokio::time::timeout(timeout, connect).await, Ok(Ok(_))))
}

/// `host:port` of a URI (`http://127.0.0.1:31000/...`, `tcp://h:1`, `h:1`).
fn authority(uri: &str) -> Option<String> {
    let rest = uri.split_once("://").map_or(uri, |(_, r)| r);
    let auth = rest.split(['/', '?', '#']).next()?;
    if auth.is_empty() {
        return None;
    }
    if auth.rsplit_once(':').is_some_and(|(_, p)| p.parse::<u16>().is_ok()) {
        return Some(auth.to_string());
    }
    let port = if uri.starts_with("https://") { 443 } else { 80 };
    Some(format!("{auth}:{port}"))
}

/// The lowest open bid of order `gseq`/`oseq` whose provider is not avoided and whose price is
/// within `ceiling` (same denomination); the earliest provider address breaks ties.
fn best_bid(
    bids: impl Iterator<Item = BidEntry>,
    gseq: u32,
    oseq: u32,
    avoid: &BTreeSet<Address>,
    ceiling: Option<&Price>,
) -> Option<BidEntry> {
    bids.filter(|b| b.id.gseq == gseq && b.id.oseq == oseq && !avoid.contains(&b.id.provider))
        .filter(|b| ceiling.is_none_or(|c| c.denom == b.bid.price.denom && b.bid.price.amount <= c.amount))
        .min_by(|a, b| {
            a.bid
                .price
                .amount
                .cmp(&b.bid.price.amount)
                .then(a.id.provider.cmp(&b.id.provider))
        })
}

/// The agent's view of a ledger event, if it concerns deployment `id`.
fn ledger_event(id: &DeploymentId, e: &Event) -> Option<WatchEvent> {
    match e {
        Event::EscrowLow {
            id: d,
            runway_blocks,
            low_blocks,
        } if d == id => Some(WatchEvent::EscrowLow {
            runway_blocks: *runway_blocks,
            low_blocks: *low_blocks,
        }),
        Event::EscrowToppedUp {
            id: d,
            amount,
            remaining,
            ..
        } if d == id => Some(WatchEvent::ToppedUp {
            amount: amount.clone(),
            remaining: remaining.to_string(),
        }),
        Event::EscrowTopUpSkipped { id: d, reason } if d == id => Some(WatchEvent::TopUpSkipped {
            reason: match reason {
                TopUpSkipped::AllowanceSpent => "allowance_spent",
                TopUpSkipped::Expired => "expired",
                TopUpSkipped::NoFunds => "no_funds",
            }
            .into(),
        }),
        Event::LeaseGrace { id: l, until } if l.deployment() == *id => Some(WatchEvent::Grace {
            lease: l.clone(),
            until: *until,
        }),
        Event::LeaseResumed { id: l } if l.deployment() == *id => Some(WatchEvent::Resumed { lease: l.clone() }),
        _ => None,
    }
}

/// Sleeps `d`, waking early when `stop` is set.
fn sleep_unless(stop: &AtomicBool, d: Duration) {
    let end = Instant::now() + d;
    while !stop.load(Ordering::Relaxed) {
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        std::thread::sleep(left.min(Duration::from_millis(100)));
    }
}

/// Where the agent's notable events go: a command the tenant configured (the event's JSON on
/// its standard input, its name in `PAZAR_EVENT`), and/or an HTTP(S) URL it is POSTed to.
/// Deliveries run on a thread of their own, so a slow hook never delays a failover; at most
/// [`Notifier::QUEUE`] wait, later ones are dropped and counted.
pub struct Notifier {
    tx: Option<mpsc::SyncSender<(String, Vec<u8>)>>,
    thread: Option<std::thread::JoinHandle<()>>,
    dropped: u64,
}

/// How to deliver notifications.
#[derive(Debug, Clone, Default)]
pub struct NotifyConfig {
    /// Run by `sh -c` (the tenant's own command line, on the tenant's machine). Nothing of an
    /// event reaches its arguments: the event is on standard input, its name in `PAZAR_EVENT`
    /// (one of the fixed names of [`WatchEvent::name`]).
    pub command: Option<String>,
    /// POSTed the event as JSON.
    pub url: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error("the notification URL {0:?} is not http:// or https://")]
    Url(String),
}

/// Longest a notification command or POST may take.
pub const NOTIFY_TIMEOUT: Duration = Duration::from_secs(30);

impl Notifier {
    pub const QUEUE: usize = 64;

    /// Starts the delivery thread (none when nothing is configured). `report` hears of each
    /// delivery that failed.
    pub fn start(cfg: NotifyConfig, report: impl Fn(String) + Send + 'static) -> Result<Notifier, NotifyError> {
        if let Some(u) = &cfg.url {
            if !(u.starts_with("http://") || u.starts_with("https://")) {
                return Err(NotifyError::Url(u.clone()));
            }
        }
        if cfg.command.is_none() && cfg.url.is_none() {
            return Ok(Notifier {
                tx: None,
                thread: None,
                dropped: 0,
            });
        }
        let (tx, rx) = mpsc::sync_channel::<(String, Vec<u8>)>(Self::QUEUE);
        let thread = std::thread::spawn(move || {
            let agent: ureq::Agent = ureq::Agent::config_builder()
                .timeout_global(Some(NOTIFY_TIMEOUT))
                .build()
                .into();
            for (name, body) in rx {
                if let Some(cmd) = &cfg.command {
                    if let Err(e) = run_hook(cmd, &name, &body) {
                        report(format!("notification command for {name}: {e}"));
                    }
                }
                if let Some(url) = &cfg.url {
                    let r = agent
                        .post(url)
                        .header("content-type", "application/json")
                        .send(&body[..]);
                    if let Err(e) = r {
                        report(format!("notification POST of {name} to {url}: {e}"));
                    }
                }
            }
        });
        Ok(Notifier {
            tx: Some(tx),
            thread: Some(thread),
            dropped: 0,
        })
    }

    /// Queues `e` for delivery if it is one the tenant hears of.
    pub fn notify(&mut self, e: &WatchEvent) {
        let Some(tx) = &self.tx else { return };
        if !e.notifies() {
            return;
        }
        let Ok(body) = serde_json::to_vec(e) else { return };
        if tx.try_send((e.name().to_string(), body)).is_err() {
            self.dropped += 1;
        }
    }

    /// Delivers what is queued, then stops the delivery thread.
    pub fn finish(mut self) {
        self.tx = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }

    /// Notifications dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }
}

/// Runs the tenant's hook with the event on standard input; kills it after [`NOTIFY_TIMEOUT`].
fn run_hook(cmd: &str, name: &str, body: &[u8]) -> Result<(), String> {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .env("PAZAR_EVENT", name)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start sh: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        // On a thread: a hook that does not read its input neither blocks nor fails.
        let body = body.to_vec();
        std::thread::spawn(move || {
            let _ = stdin.write_all(&body);
        });
    }
    let t0 = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(s)) if s.success() => return Ok(()),
            Ok(Some(s)) => return Err(format!("exited with {s}")),
            Ok(None) if t0.elapsed() > NOTIFY_TIMEOUT => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("still running after {} s: killed", NOTIFY_TIMEOUT.as_secs()));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => return Err(e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pazar_types::market::BidState;
    use pazar_types::records::Bid;
    use pazar_types::{Dec, Denom};

    fn addr(b: u8) -> Address {
        Address::Native([b; 20])
    }

    fn bid(provider: u8, gseq: u32, oseq: u32, price: u128) -> BidEntry {
        let id = pazar_types::BidId {
            owner: addr(1),
            dseq: 7,
            gseq,
            oseq,
            provider: addr(provider),
        };
        BidEntry {
            id,
            bid: Bid {
                state: BidState::Open,
                price: Price {
                    denom: Denom::new("uusd").expect("denom"),
                    amount: Dec::from_int(price).expect("small"),
                },
                deposit: Coin::new(0, Denom::new("uusd").expect("denom")),
                created_at: 1,
                expires_at: 100,
                expired: false,
            },
        }
    }

    #[test]
    fn the_replacement_is_the_cheapest_bid_of_the_current_order_from_a_provider_not_given_up_on() {
        let bids = vec![
            bid(2, 1, 2, 50),
            bid(3, 1, 2, 40),
            bid(4, 1, 1, 10), // an earlier order's
            bid(5, 2, 2, 10), // another group's
            bid(6, 1, 2, 30), // the provider that failed
        ];
        let avoid = BTreeSet::from([addr(6)]);
        let best = best_bid(bids.clone().into_iter(), 1, 2, &avoid, None).expect("a bid");
        assert_eq!(best.id.provider, addr(3));
        let ceiling = Price {
            denom: Denom::new("uusd").expect("denom"),
            amount: Dec::from_int(35).expect("small"),
        };
        assert!(best_bid(bids.clone().into_iter(), 1, 2, &avoid, Some(&ceiling)).is_none());
        let other_denom = Price {
            denom: Denom::new("upzr").expect("denom"),
            amount: Dec::from_int(1000).expect("small"),
        };
        assert!(
            best_bid(bids.into_iter(), 1, 2, &avoid, Some(&other_denom)).is_none(),
            "a ceiling in another denomination admits nothing"
        );
    }

    #[test]
    fn only_a_group_its_provider_paused_or_an_agent_closed_as_unresponsive_is_started_again() {
        use pazar_api::node::LeaseRef;
        use pazar_types::records::Lease;
        let lease = |oseq: u32, reason: Option<LeaseCloseReason>| LeaseRef {
            id: bid(2, 1, oseq, 1).id,
            lease: Lease {
                state: LeaseState::Closed,
                price: bid(2, 1, oseq, 1).bid.price,
                created_at: 1,
                closed_at: Some(2),
                reason,
                grace_until: None,
            },
        };
        let detail = |leases: Vec<LeaseRef>| DeploymentDetail {
            id: DeploymentId {
                owner: addr(1),
                dseq: 7,
            },
            deployment: pazar_types::records::Deployment {
                state: DeploymentState::Active,
                version: [0; 32],
                created_at: 1,
                groups: 1,
                auto_accept_after: None,
            },
            groups: vec![],
            leases,
            escrow: None,
        };
        let by = |r| {
            paused_by_provider(
                &detail(vec![
                    lease(1, Some(LeaseCloseReason::ProviderUnresponsive)),
                    lease(2, Some(r)),
                ]),
                1,
            )
        };
        assert!(by(LeaseCloseReason::Decommission), "the provider closed it");
        assert!(by(LeaseCloseReason::ProviderUnresponsive), "an agent closed it");
        assert!(
            !by(LeaseCloseReason::Owner),
            "the tenant paused the group: its latest lease decides"
        );
        assert!(!paused_by_provider(&detail(vec![]), 1), "an order that found no bid");
    }

    #[test]
    fn a_step_that_keeps_failing_waits_longer_each_time_and_a_success_resets_it() {
        let mut w = GroupWatch::default();
        assert!(w.may_try());
        w.failed();
        assert!(!w.may_try(), "not again at once");
        let first = w.retry_at.expect("a wait");
        w.failed();
        w.failed();
        assert!(
            w.retry_at.expect("a wait") > first + Duration::from_secs(4),
            "the wait grows"
        );
        for _ in 0..40 {
            w.failed();
        }
        assert!(
            w.retry_at.expect("a wait") <= Instant::now() + Duration::from_secs(300),
            "at most 5 min"
        );
        w.succeeded();
        assert!(w.may_try());
    }

    #[test]
    fn another_party_s_text_in_an_event_is_cut_at_a_character_boundary() {
        assert_eq!(short("ok"), "ok");
        let long = "é".repeat(1000);
        let cut = short(&long);
        assert!(cut.len() <= MAX_EVENT_TEXT + "…".len(), "{}", cut.len());
        assert!(cut.ends_with('…'));
    }

    #[test]
    fn a_uri_s_authority_is_what_the_port_probe_dials() {
        assert_eq!(
            authority("http://127.0.0.1:31000/x").as_deref(),
            Some("127.0.0.1:31000")
        );
        assert_eq!(
            authority("https://web.ingress.localhost").as_deref(),
            Some("web.ingress.localhost:443")
        );
        assert_eq!(authority("tcp://10.0.0.1:5432").as_deref(), Some("10.0.0.1:5432"));
        assert_eq!(authority("http://"), None);
    }

    #[test]
    fn a_closed_port_fails_the_probe_and_a_name_that_does_not_resolve_here_is_not_counted() {
        let rt = crate::provider_runtime().expect("runtime");
        let t = Duration::from_secs(2);
        let open = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let open_addr = open.local_addr().expect("addr").to_string();
        let closed_addr = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            l.local_addr().expect("addr").to_string()
        };
        assert_eq!(rt.block_on(port_reached(&open_addr, t)), Some(true));
        assert_eq!(rt.block_on(port_reached(&closed_addr, t)), Some(false));
        assert_eq!(rt.block_on(port_reached("web-pz-0.no-such-name.invalid:80", t)), None);
    }

    #[test]
    fn only_this_deployment_s_ledger_events_are_reported() {
        let id = DeploymentId {
            owner: addr(1),
            dseq: 7,
        };
        let other = DeploymentId {
            owner: addr(1),
            dseq: 8,
        };
        let low = |d: &DeploymentId| Event::EscrowLow {
            id: d.clone(),
            runway_blocks: 3,
            low_blocks: 10,
        };
        assert_eq!(
            ledger_event(&id, &low(&id)),
            Some(WatchEvent::EscrowLow {
                runway_blocks: 3,
                low_blocks: 10
            })
        );
        assert_eq!(ledger_event(&id, &low(&other)), None);
        let lease = bid(2, 1, 1, 1).id;
        let grace = Event::LeaseGrace {
            id: lease.clone(),
            until: 99,
        };
        assert_eq!(ledger_event(&id, &grace), Some(WatchEvent::Grace { lease, until: 99 }));
        assert_eq!(ledger_event(&other, &grace), None);
    }

    #[test]
    fn a_notification_command_reads_the_event_on_stdin_and_its_name_from_the_environment() {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("got");
        let cmd = format!("{{ printf '%s ' \"$PAZAR_EVENT\"; cat; }} > {}", out.display());
        let e = WatchEvent::EscrowLow {
            runway_blocks: 3,
            low_blocks: 10,
        };
        run_hook(&cmd, e.name(), &serde_json::to_vec(&e).expect("json")).expect("runs");
        let got = std::fs::read_to_string(&out).expect("written");
        assert_eq!(
            got,
            r#"escrow_low {"event":"escrow_low","runway_blocks":3,"low_blocks":10}"#
        );
        assert!(run_hook("exit 3", "x", b"").expect_err("fails").contains("exit"));
    }

    #[test]
    fn a_notification_url_must_be_http() {
        let cfg = NotifyConfig {
            command: None,
            url: Some("file:///etc/passwd".into()),
        };
        assert!(matches!(Notifier::start(cfg, |_| {}), Err(NotifyError::Url(_))));
    }
}
