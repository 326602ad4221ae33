//! Reactions in a lease's life: a won lease takes over its bid's reservation and waits for its
//! manifest (the tenant endpoint deploys it); a lease whose escrow ran dry (grace) has its
//! workload stopped, its volumes, manifest and reservation kept, and a deposit that resumes it
//! starts the workload again from that manifest on those volumes; a closed lease, for any
//! reason (tenant, provider, insufficient funds at the end of grace), has its workload removed
//! under the lease's lock and its reservation given back; earnings are withdrawn every
//! `withdraw_every_blocks`; Docker replicas over their ephemeral storage are evicted (not those
//! of leases in grace, which would start them). After a restart, leases still active are run
//! again from their accepted manifests, leases in grace keep their volumes with nothing
//! running, and a workload of this provider is removed only when the ledger, read for that
//! lease alone, says it ended (the lists of active leases and of leases in grace are read at
//! different heights: a lease that moved between them meanwhile is in neither).
//!
//! Must not know: the event stream (the follower calls these), bidding, or how a runtime runs a
//! group (it deploys and closes through `pazar_runtime::Runtime`).

use std::collections::BTreeMap;
use std::sync::Arc;

use pazar_api::node::{LeasePage, ListQuery};
use pazar_client::{ClientError, Rpc};
use pazar_types::market::{BidId, LeaseCloseReason, LeaseState};
use pazar_types::records::Lease;
use pazar_types::Msg;

use super::{Daemon, DaemonError};
use crate::bidding;
use pazar_runtime::{AnyRuntime, LeaseRef, Runtime};

/// What the ledger says of one of this provider's leases, for a restart to act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OnLedger {
    Active,
    Grace {
        until: u64,
    },
    /// A final state, or a lease this ledger does not have: only then does its workload go.
    Ended,
}

impl OnLedger {
    fn of(lease: &Lease) -> OnLedger {
        match lease.state {
            LeaseState::Active => OnLedger::Active,
            LeaseState::Grace => OnLedger::Grace {
                until: lease.grace_until.unwrap_or(0),
            },
            _ => OnLedger::Ended,
        }
    }
}

/// One lease read on its own: one answer, so one height. A lease the node does not know is
/// `Ended` (a workload left from another chain); any other failure is an error, never a guess.
fn read_one(rpc: &Rpc, id: &BidId) -> Result<OnLedger, ClientError> {
    match rpc.lease(id, false) {
        Ok(d) => Ok(OnLedger::of(&d.item.lease)),
        Err(e) if e.is_not_found() => Ok(OnLedger::Ended),
        Err(e) => Err(e),
    }
}

/// The ledger's word on every lease a restart decides about, by runtime name. `active` and
/// `grace` are the two lists (read at different heights, so a lease in both takes the later
/// read: grace); every lease in `local` (accepted manifests and this provider's workloads)
/// that is in neither is read again on its own with `lookup`, because it may have moved from
/// one list to the other between the reads. So a lease is `Ended` only on a read that says so.
fn ledger_view<E>(
    active: Vec<BidId>,
    grace: Vec<(BidId, u64)>,
    local: &[BidId],
    mut lookup: impl FnMut(&BidId) -> Result<OnLedger, E>,
) -> Result<BTreeMap<String, (BidId, OnLedger)>, E> {
    let mut view = BTreeMap::new();
    for id in active {
        view.insert(LeaseRef::new(id.clone()).name(), (id, OnLedger::Active));
    }
    for (id, until) in grace {
        view.insert(LeaseRef::new(id.clone()).name(), (id, OnLedger::Grace { until }));
    }
    for id in local {
        let name = LeaseRef::new(id.clone()).name();
        if let std::collections::btree_map::Entry::Vacant(e) = view.entry(name) {
            e.insert((id.clone(), lookup(id)?));
        }
    }
    Ok(view)
}

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
    /// have gone into grace meanwhile); workloads of leases the ledger says ended
    /// ([`ledger_view`]: read again one by one when in neither list), and such orphans of this
    /// provider in the runtime, are removed; stale isolation rules are swept.
    pub(super) async fn restore_leases(self: &Arc<Self>) -> Result<(), DaemonError> {
        let (accepted, unreadable) = self.server.accepted_files();
        let workloads = self.runtime.leases().await?;
        let me = self.address;
        // A manifest of another provider's lease (two daemons given one data directory) is
        // neither run nor removed here: it is not this daemon's to touch.
        let (accepted, foreign): (Vec<_>, Vec<_>) = accepted.into_iter().partition(|a| a.lease.provider == me);
        for a in foreign {
            self.log(&format!(
                "ignored the stored manifest of lease {}: it is another provider's (is the data directory shared?)",
                a.lease
            ));
        }
        let mut local: Vec<BidId> = accepted.iter().map(|a| a.lease.clone()).collect();
        local.extend(
            workloads
                .iter()
                .filter_map(|(_, label)| label.parse::<BidId>().ok())
                .filter(|id| id.provider == me),
        );
        let page = self.cfg.list_page;
        let view = self
            .node(move |rpc| {
                let list = |state: &str| {
                    let q = ListQuery {
                        provider: Some(me),
                        state: Some(state.into()),
                        limit: Some(page),
                        ..ListQuery::default()
                    };
                    rpc.list_all::<LeasePage>(&q)
                };
                let active = list("active")?.into_iter().map(|l| l.id).collect();
                let grace = list("grace")?
                    .into_iter()
                    .map(|l| {
                        let until = l.lease.grace_until.unwrap_or(0);
                        (l.id, until)
                    })
                    .collect();
                ledger_view(active, grace, &local, |id| read_one(rpc, id))
            })
            .await?;
        if let Ok(mut g) = self.grace.lock() {
            *g = view
                .values()
                .filter_map(|(id, on)| match on {
                    OnLedger::Grace { until } => Some((id.clone(), *until)),
                    _ => None,
                })
                .collect();
        }
        for why in unreadable {
            // Not run: a stored manifest is held to the rules of a received one.
            self.log(&format!("ignored a stored manifest that fails the checks: {why}"));
        }
        for acc in accepted {
            let lease = LeaseRef::new(acc.lease.clone());
            let on = view.get(&lease.name()).map(|(_, on)| *on);
            if let Some(OnLedger::Grace { until }) = on {
                // Nothing runs in grace: what a previous daemon left running stops.
                if let Err(e) = self.server.stop_lease(&acc.lease).await {
                    self.log(&format!("cannot stop lease {} in grace: {e}", lease.label()));
                }
                self.adopt_reservation(&acc.lease).await;
                self.log(&format!(
                    "lease {} is in grace until height {until}: its workload stays stopped, its volumes kept",
                    lease.label()
                ));
            } else if on == Some(OnLedger::Active) {
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
            } else if on == Some(OnLedger::Ended) {
                self.server.close_lease(&acc.lease).await?;
                self.log(&format!("removed workload of ended lease {}", lease.label()));
            }
        }
        // Only this provider's workloads: other providers may share the engine. Each one's
        // lease is in the view, so only one the ledger says ended goes.
        for (name, label) in workloads {
            if let Ok(id) = label.parse::<BidId>() {
                let ended = view.get(&name).is_some_and(|(_, on)| *on == OnLedger::Ended);
                if id.provider == self.address && ended {
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

#[cfg(test)]
mod tests {
    use super::*;
    use pazar_types::Address;

    fn lease(dseq: u64) -> BidId {
        BidId {
            owner: Address::MIN,
            dseq,
            gseq: 1,
            oseq: 1,
            provider: Address::MAX,
        }
    }

    /// The view, and which leases were read again one by one.
    fn check(
        active: &[u64],
        grace: &[(u64, u64)],
        local: &[u64],
        ledger: &[(u64, OnLedger)],
    ) -> (Vec<(u64, OnLedger)>, Vec<u64>) {
        let mut read = Vec::new();
        let local: Vec<BidId> = local.iter().map(|d| lease(*d)).collect();
        let view = ledger_view(
            active.iter().map(|d| lease(*d)).collect(),
            grace.iter().map(|(d, u)| (lease(*d), *u)).collect(),
            &local,
            |id| {
                read.push(id.dseq);
                ledger
                    .iter()
                    .find(|(d, _)| *d == id.dseq)
                    .map(|(_, on)| *on)
                    .ok_or("no answer")
            },
        )
        .expect("every read answered");
        let mut out: Vec<(u64, OnLedger)> = view.values().map(|(id, on)| (id.dseq, *on)).collect();
        out.sort_by_key(|(d, _)| *d);
        (out, read)
    }

    #[test]
    fn a_lease_resumed_between_the_two_lists_is_read_again_and_kept_running() {
        // Lease 1 was in grace when the active list was read and active when the grace list
        // was: in neither. Read alone, the ledger says active: it is restored, not removed.
        let (view, read) = check(&[], &[], &[1], &[(1, OnLedger::Active)]);
        assert_eq!(view, vec![(1, OnLedger::Active)]);
        assert_eq!(read, vec![1]);
    }

    #[test]
    fn a_lease_that_went_into_grace_between_the_lists_stays_with_its_volumes() {
        let (view, _) = check(&[], &[], &[1], &[(1, OnLedger::Grace { until: 90 })]);
        assert_eq!(view, vec![(1, OnLedger::Grace { until: 90 })]);
    }

    #[test]
    fn only_a_lease_read_as_ended_is_ended_and_listed_leases_are_not_read_again() {
        let (view, read) = check(&[1], &[(2, 50)], &[1, 2, 3], &[(3, OnLedger::Ended)]);
        assert_eq!(
            view,
            vec![
                (1, OnLedger::Active),
                (2, OnLedger::Grace { until: 50 }),
                (3, OnLedger::Ended)
            ]
        );
        assert_eq!(read, vec![3]);
    }

    #[test]
    fn a_lease_in_both_lists_takes_the_later_read_grace() {
        let (view, read) = check(&[1], &[(1, 70)], &[1], &[]);
        assert_eq!(view, vec![(1, OnLedger::Grace { until: 70 })]);
        assert!(read.is_empty());
    }

    #[test]
    fn a_failed_read_is_an_error_not_an_ended_lease() {
        let r = ledger_view(Vec::new(), Vec::new(), &[lease(1)], |_| Err::<OnLedger, _>("node down"));
        assert_eq!(r, Err("node down"));
    }
}
