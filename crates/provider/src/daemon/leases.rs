//! Reactions in a lease's life: a won lease takes over its bid's reservation and waits for its
//! manifest (the tenant endpoint deploys it); a lease whose escrow ran dry (grace) has its
//! workload stopped, its volumes, manifest and reservation kept, and a deposit that resumes it
//! starts the workload again from that manifest on those volumes; a closed lease, for any
//! reason (tenant, provider, insufficient funds at the end of grace), has its workload removed
//! under the lease's lock and its reservation given back; earnings are withdrawn every
//! `withdraw_every_blocks`; Docker replicas over their ephemeral storage are evicted (not those
//! of leases in grace, which would start them). After a restart, leases still active are run
//! again from their accepted manifests, leases in grace keep their volumes with nothing
//! running, and every other workload of this provider is removed.
//!
//! Must not know: the event stream (the follower calls these), bidding, or how a runtime runs a
//! group (it deploys and closes through `pazar_runtime::Runtime`).

use std::collections::BTreeMap;
use std::sync::Arc;

use pazar_api::node::{LeasePage, ListQuery};
use pazar_types::market::{BidId, LeaseCloseReason};
use pazar_types::Msg;

use super::{Daemon, DaemonError};
use crate::bidding;
use pazar_runtime::{AnyRuntime, LeaseRef, Runtime};

impl Daemon {
    fn count_leases(&self) {
        if let Ok(b) = self.book.lock() {
            self.metrics.set_leases_active(b.leases.len());
        }
    }

    /// `lease_created` for this provider: the bid's reservation is the lease's now.
    pub(super) fn lease_created(&self, id: &BidId) {
        if let Ok(mut b) = self.book.lock() {
            b.leased(id);
        }
        self.count_leases();
        self.log(&format!("won lease {id}; waiting for its manifest"));
    }

    /// `lease_grace` for this provider: the escrow ran dry, so the workload stops until a
    /// deposit resumes the lease or the grace ends at height `until`; volumes, the accepted
    /// manifest and the reservation stay.
    pub(super) async fn lease_grace(&self, id: &BidId, until: u64) {
        if let Ok(mut g) = self.grace.lock() {
            g.insert(id.clone(), until);
        }
        match self.server.stop_lease(id).await {
            Ok(()) => self.log(&format!(
                "lease {id} is in grace until height {until} (its escrow ran dry): workload stopped, volumes kept"
            )),
            Err(e) => self.log(&format!("lease {id} is in grace but stopping its workload failed: {e}")),
        }
    }

    /// `lease_resumed` for this provider: a deposit paid the lease again, so its workload starts
    /// again from its accepted manifest on the volumes it kept.
    pub(super) async fn lease_resumed(&self, id: &BidId) {
        if let Ok(mut g) = self.grace.lock() {
            g.remove(id);
        }
        match self.server.resume_lease(id).await {
            Ok(true) => self.log(&format!("lease {id} resumed: workload started again on its volumes")),
            Ok(false) => self.log(&format!("lease {id} resumed; waiting for its manifest")),
            Err(e) => self.log(&format!("lease {id} resumed but starting its workload failed: {e}")),
        }
    }

    /// Whether the lease is in grace (its workload stopped), as the events said.
    pub(super) fn in_grace(&self, id: &BidId) -> bool {
        self.grace.lock().map(|g| g.contains_key(id)).unwrap_or(false)
    }

    /// `lease_closed` for this provider: the workload goes, then the reservation.
    pub(super) async fn lease_closed(&self, id: &BidId, reason: LeaseCloseReason) {
        // Under the lease's lock: a manifest being deployed right now finishes first and is
        // removed here; one that comes later finds the lease closed.
        match self.server.close_lease(id).await {
            Ok(()) => self.log(&format!("lease {id} closed ({reason:?}): workload removed")),
            Err(e) => self.log(&format!("lease {id} closed but removing its workload failed: {e}")),
        }
        if let Ok(mut g) = self.grace.lock() {
            g.remove(id);
        }
        if let Ok(mut b) = self.book.lock() {
            b.lease_ended(id);
        }
        self.count_leases();
    }

    /// After a (re)start: every lease the ledger says is active (every page read: a lease
    /// missing from the list would have its workload removed) runs again from its accepted
    /// manifest and holds its capacity; a lease in grace holds its capacity and its volumes,
    /// its workload stopped (it may have run on while the daemon was down, or the lease may
    /// have gone into grace meanwhile); workloads of ended leases, and orphans of this provider
    /// in the runtime, are removed; stale isolation rules are swept.
    pub(super) async fn restore_leases(self: &Arc<Self>) -> Result<(), DaemonError> {
        let list = |state: &str| {
            let q = ListQuery {
                provider: Some(self.address),
                state: Some(state.into()),
                limit: Some(self.cfg.list_page),
                ..ListQuery::default()
            };
            self.node(move |rpc| rpc.list_all::<LeasePage>(&q))
        };
        let active: BTreeMap<String, BidId> = list("active")
            .await?
            .into_iter()
            .map(|l| (LeaseRef::new(l.id.clone()).name(), l.id))
            .collect();
        let grace: BTreeMap<String, (BidId, u64)> = list("grace")
            .await?
            .into_iter()
            .map(|l| {
                let until = l.lease.grace_until.unwrap_or(0);
                (LeaseRef::new(l.id.clone()).name(), (l.id, until))
            })
            .collect();
        if let Ok(mut g) = self.grace.lock() {
            *g = grace.values().cloned().collect();
        }
        let (accepted, unreadable) = self.server.accepted_files();
        for why in unreadable {
            // Not run: a stored manifest is held to the rules of a received one.
            self.log(&format!("ignored a stored manifest that fails the checks: {why}"));
        }
        for acc in accepted {
            let lease = LeaseRef::new(acc.lease.clone());
            if let Some((_, until)) = grace.get(&lease.name()) {
                // Nothing runs in grace: what a previous daemon left running stops.
                if let Err(e) = self.server.stop_lease(&acc.lease).await {
                    self.log(&format!("cannot stop lease {} in grace: {e}", lease.label()));
                }
                self.adopt_reservation(&acc.lease).await;
                self.log(&format!(
                    "lease {} is in grace until height {until}: its workload stays stopped, its volumes kept",
                    lease.label()
                ));
            } else if active.contains_key(&lease.name()) {
                // A lease that cannot run (its image vanished, say) is reported, not fatal. With
                // its version, so replicas an update kept unchanged (their labels name the
                // version they were made for) report the version they run after a restart too.
                let run = match &acc.version {
                    Some(v) => self.runtime.deploy_version(&lease, &acc.group, v).await,
                    None => self.runtime.deploy(&lease, &acc.group).await,
                };
                if let Err(e) = run {
                    self.log(&format!("cannot restore lease {}: {e}", lease.label()));
                    continue;
                }
                self.adopt_reservation(&acc.lease).await;
                self.log(&format!("restored lease {}", lease.label()));
            } else {
                self.server.close_lease(&acc.lease).await?;
                self.log(&format!("removed workload of ended lease {}", lease.label()));
            }
        }
        // Only this provider's workloads: other providers may share the engine.
        for (name, label) in self.runtime.leases().await? {
            if let Ok(id) = label.parse::<BidId>() {
                if id.provider == self.address && !active.contains_key(&name) && !grace.contains_key(&name) {
                    self.server.close_lease(&id).await?;
                    self.log(&format!("removed orphaned workload {label}"));
                }
            }
        }
        if self.cfg.isolate_host {
            let n = self.runtime.sweep_firewall().await?;
            if n > 0 {
                self.log(&format!("removed {n} stale isolation rule(s)"));
            }
        }
        self.count_leases();
        Ok(())
    }

    /// The lease holds its group's capacity in the book again (after a restart).
    async fn adopt_reservation(&self, id: &BidId) {
        if let Ok(Some(spec)) = self.order_group(id.order()).await {
            if let Ok(mut b) = self.book.lock() {
                if let Ok(d) = bidding::reserve(&spec, &b.free) {
                    b.adopt_lease(id.clone(), d);
                }
            }
        }
    }

    /// Withdraws the earnings of every lease in the book, in one transaction.
    pub(super) async fn withdraw_all(self: &Arc<Self>) {
        let ids: Vec<BidId> = self
            .book
            .lock()
            .map(|b| b.leases.keys().cloned().collect())
            .unwrap_or_default();
        if ids.is_empty() {
            return;
        }
        let msgs = ids.iter().map(|id| Msg::WithdrawLease { lease: id.clone() }).collect();
        match self.submit(msgs).await {
            Ok(_) => self.log(&format!("withdrew earnings of {} lease(s)", ids.len())),
            Err(e) => self.log(&format!("withdrawal failed: {e}")),
        }
    }

    /// Every `storage_check_ms`, evicts the Docker replicas that outgrew their ephemeral storage.
    pub(super) async fn police_storage(self: Arc<Self>) {
        let AnyRuntime::Docker(docker) = self.runtime.as_ref() else {
            return;
        };
        let mut tick = tokio::time::interval(std::time::Duration::from_millis(self.cfg.storage_check_ms));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let leases: Vec<_> = self
                .server
                .all_accepted()
                .into_iter()
                .filter(|a| !self.in_grace(&a.lease))
                .map(|a| (LeaseRef::new(a.lease), a.group))
                .collect();
            match docker.evict_over_storage(&leases).await {
                Ok(evicted) => {
                    for e in evicted {
                        self.log(&format!(
                            "lease {} service {:?} replica {} {}",
                            e.lease,
                            e.service,
                            e.replica,
                            e.reason()
                        ));
                    }
                }
                Err(e) => self.log(&format!("cannot check the storage of leases: {e}")),
            }
        }
    }
}
