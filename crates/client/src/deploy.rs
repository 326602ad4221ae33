//! A tenant's workflows as library functions: deploy (create the deployment, collect bids,
//! choose, lease, send the manifest, wait until it serves), update, close, and why no provider
//! bids. Each reports its progress through a callback, so the CLI renders spinners and lines and
//! a console or a training job renders the same events its own way.
//!
//! The functions block (the node client is blocking; the provider channel runs on a small
//! runtime of its own): from async code, call them inside `tokio::task::spawn_blocking`.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use pazar_api::manifest::Manifest;
use pazar_api::node::{BidEntry, BidPage, ListQuery, OrderPage, ProviderPage, TxResult, TxState};
use pazar_api::provider::LeaseStatus;
use pazar_api::request::SubmitMode;
use pazar_types::market::{GroupSpec, LeaseCloseReason};
use pazar_types::{Address, BidId, Coin, DeploymentId, Hash32, LeaseId, Msg, OrderId, Price, SigningKey};

use crate::tenant::{ProviderClient, TenantError};
use crate::why_no_bids::{self, ProviderFacts};
use crate::{ClientError, Rpc};

/// How often the bids and the lease's status are polled.
const POLL: Duration = Duration::from_millis(250);

#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    #[error(transparent)]
    Node(#[from] ClientError),
    #[error(transparent)]
    Provider(#[from] TenantError),
    /// A dry run ([`Tenant::dry_run`]) simulated its first transaction and stopped.
    #[error(transparent)]
    DryRun(Box<crate::DryRun>),
    /// A transaction was committed but failed (its fee was charged), or never committed.
    #[error("{what} failed: {reason} (tx {hash})")]
    Tx { what: String, hash: String, reason: String },
    #[error("no bid for {missing} of {groups} group(s) after {secs} s; `pazar deployment why-no-bids {id}` explains, per provider, what does not match (the deployment stays open: bids may still come)")]
    NoBids {
        id: String,
        missing: usize,
        groups: usize,
        secs: u64,
    },
    #[error("the provider did not accept the manifest of {lease}; the lease stays open and is paid from the escrow: send a corrected manifest (`pazar lease send-manifest {lease}`) or close it (`pazar lease close {lease}`): {source}")]
    ManifestRefused { lease: String, source: TenantError },
    #[error("services of {lease} not all running after {secs} s: {services}")]
    NotReady { lease: String, secs: u64, services: String },
    #[error("only the owner {owner} can {what} {id}")]
    NotOwner {
        owner: Address,
        what: &'static str,
        id: String,
    },
    #[error("the async runtime for the provider channel cannot start: {0}")]
    Runtime(String),
    /// An update may change what runs (images, env, commands, counts within the lease), not the
    /// groups the leases were priced for: a provider would refuse such a manifest after the new
    /// version was already on the ledger, leaving the leases with a version nobody runs.
    #[error("the file's groups differ from deployment {id}'s on the ledger ({differences}); an update changes what runs, not what was leased: deploy the new groups as a new deployment")]
    GroupsChanged { id: String, differences: String },
    #[error("deployment {0} is closed")]
    Closed(String),
    #[error(
        "the provider did not apply the update of {lease}; its replicas of the earlier version keep serving: {reason}"
    )]
    UpdateFailed { lease: String, reason: String },
}

/// What a workflow reports as it goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Progress {
    /// A transaction was signed and submitted; its block is awaited.
    Submitted { what: String, hash: String },
    /// The deployment is on the ledger and its orders are open for bids.
    DeploymentCreated { id: DeploymentId, height: u64 },
    /// A bid seen for the first time.
    Bid { id: BidId, price: Price },
    /// Every group has a bid; cheaper ones are awaited until the window closes.
    BidWindow { secs: u64 },
    /// The chosen bid became a lease.
    Leased { id: LeaseId, price: Price },
    /// The manifest is on its way to the lease's provider.
    SendingManifest { lease: LeaseId },
    /// The provider accepted the manifest and starts the workloads.
    ManifestAccepted { lease: LeaseId },
    /// The workloads do not all run yet (each poll).
    Starting { lease: LeaseId, status: LeaseStatus },
    /// Every service of the lease runs.
    Serving { lease: LeaseId, status: LeaseStatus },
}

/// A signing tenant of one node: signs, submits, and waits for each transaction's block.
pub struct Tenant {
    pub rpc: Rpc,
    key: SigningKey,
    chain_id: String,
    /// The fee of each transaction; `None`: the node's minimum for its messages.
    pub fee: Option<Coin>,
    pub memo: String,
    /// Simulate each transaction before broadcasting it and refuse one the node says would
    /// fail (default on). Off only where another transaction of this key, still pending, makes
    /// the simulation's answer stale.
    pub simulate: bool,
    /// Sign and simulate the workflow's first transaction, then stop with
    /// [`DeployError::DryRun`]: nothing is broadcast.
    pub dry_run: bool,
}

impl Tenant {
    pub fn new(rpc: Rpc, key: SigningKey) -> Result<Tenant, ClientError> {
        let chain_id = rpc.chain_id()?;
        Ok(Tenant {
            rpc,
            key,
            chain_id,
            fee: None,
            memo: String::new(),
            simulate: true,
            dry_run: false,
        })
    }

    pub fn address(&self) -> Address {
        self.key.address()
    }

    pub fn key(&self) -> &SigningKey {
        &self.key
    }

    /// Signs `msgs`, submits them and waits for the block (with [`SubmitMode::Commit`]).
    pub fn submit(&self, msgs: Vec<Msg>, mode: SubmitMode) -> Result<TxResult, ClientError> {
        let fee = match &self.fee {
            Some(f) => f.clone(),
            None => crate::min_fee(&self.rpc, msgs.len())?,
        };
        let bytes = crate::sign(&self.rpc, &self.chain_id, &self.key, msgs, fee, &self.memo)?;
        self.rpc.submit(&bytes, mode)
    }

    /// Submits `msgs` and waits for the block; a transaction that is not committed with code 0
    /// is an error naming `what`.
    fn commit(&self, what: &str, msgs: Vec<Msg>, progress: &mut dyn FnMut(Progress)) -> Result<u64, DeployError> {
        let r = self.submit_reporting(what, msgs, SubmitMode::Commit, progress)?;
        committed(what, &r)
    }

    fn submit_reporting(
        &self,
        what: &str,
        msgs: Vec<Msg>,
        mode: SubmitMode,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<TxResult, DeployError> {
        let fee = match &self.fee {
            Some(f) => f.clone(),
            None => crate::min_fee(&self.rpc, msgs.len())?,
        };
        let bytes = crate::sign(&self.rpc, &self.chain_id, &self.key, msgs, fee, &self.memo)?;
        if self.dry_run || self.simulate {
            let result = self.rpc.simulate(&bytes)?;
            if self.dry_run {
                return Err(DeployError::DryRun(Box::new(crate::DryRun {
                    what: what.to_string(),
                    result,
                })));
            }
            if let Some(reason) = crate::simulation_failure(&result) {
                return Err(DeployError::Tx {
                    what: what.to_string(),
                    hash: crate::hash_hex(&bytes),
                    reason: format!("not broadcast, the node says it would fail: {reason}"),
                });
            }
        }
        progress(Progress::Submitted {
            what: what.to_string(),
            hash: crate::hash_hex(&bytes),
        });
        Ok(self.rpc.submit(&bytes, mode)?)
    }

    /// A client of `provider` as the ledger records it, signing as this tenant.
    pub fn provider_client(&self, provider: &Address) -> Result<ProviderClient, TenantError> {
        ProviderClient::from_ledger(&self.rpc, provider, self.key.clone())
    }
}

/// The height a transaction was committed at, or why it did not succeed.
pub fn committed(what: &str, r: &TxResult) -> Result<u64, DeployError> {
    let fail = |reason: String| DeployError::Tx {
        what: what.to_string(),
        hash: hex::encode(r.hash),
        reason,
    };
    match &r.state {
        TxState::Committed { height, receipt, .. } if receipt.code == 0 => Ok(*height),
        TxState::Committed { receipt, .. } => Err(fail(receipt.log.clone())),
        TxState::Pending => Err(fail("still pending".into())),
        TxState::Dropped { reason } => Err(fail(format!("dropped: {reason}"))),
        TxState::Refused { error } => Err(fail(error.message.clone())),
    }
}

/// A deployment to create: what goes on the ledger (groups, the manifest's version, a deposit)
/// and the manifest that goes to the winning providers.
#[derive(Debug, Clone)]
pub struct DeploymentPlan {
    pub dseq: u64,
    pub groups: Vec<GroupSpec>,
    pub manifest: Manifest,
    /// SHA-256 of the manifest's canonical bytes.
    pub version: Hash32,
    pub deposit: Coin,
    pub auto_accept_after: Option<u32>,
}

/// How bids are chosen and how long each step may take.
#[derive(Debug, Clone)]
pub struct BidRules {
    /// Take this provider's bid instead of the lowest.
    pub provider: Option<Address>,
    /// Give up when an order has no bid after this long.
    pub bid_timeout: Duration,
    /// After every order has a bid, wait this long for cheaper ones.
    pub bid_window: Duration,
    /// Give up when the services are not all running after this long.
    pub ready_timeout: Duration,
}

/// A lease made by [`deploy`], as it serves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseOutcome {
    #[serde(with = "as_string")]
    pub lease: LeaseId,
    pub price: Price,
    pub status: LeaseStatus,
}

/// Creates the deployment of `plan` and waits for its block: the first step of [`deploy`], for
/// a tenant who chooses bids later.
pub fn create_deployment(
    tenant: &Tenant,
    plan: &DeploymentPlan,
    progress: &mut dyn FnMut(Progress),
) -> Result<TxResult, DeployError> {
    let msg = Msg::CreateDeployment {
        dseq: plan.dseq,
        version: plan.version,
        groups: plan.groups.clone(),
        deposit: plan.deposit.clone(),
        auto_accept_after: plan.auto_accept_after,
    };
    let r = tenant.submit_reporting("creating the deployment", vec![msg], SubmitMode::Commit, progress)?;
    if let TxState::Committed { height, receipt, .. } = &r.state {
        if receipt.code == 0 {
            progress(Progress::DeploymentCreated {
                id: DeploymentId {
                    owner: tenant.address(),
                    dseq: plan.dseq,
                },
                height: *height,
            });
        }
    }
    Ok(r)
}

/// Waits until each of the deployment's `groups` orders has a bid (then `bid_window` more for
/// cheaper ones) and returns the chosen bid of each order: the lowest, or `rules.provider`'s.
pub fn choose_bids(
    rpc: &Rpc,
    id: &DeploymentId,
    groups: usize,
    rules: &BidRules,
    progress: &mut dyn FnMut(Progress),
) -> Result<Vec<BidEntry>, DeployError> {
    let t0 = Instant::now();
    let mut seen = BTreeSet::new();
    let mut all_since: Option<Instant> = None;
    let query = ListQuery {
        owner: Some(id.owner),
        dseq: Some(id.dseq),
        state: Some("open".into()),
        ..ListQuery::default()
    };
    loop {
        // Every page: the lowest bid may be on any of them.
        let bids = rpc.list_all::<BidPage>(&query)?;
        let mut best: BTreeMap<u32, BidEntry> = BTreeMap::new();
        for b in bids {
            if seen.insert(b.id.clone()) {
                progress(Progress::Bid {
                    id: b.id.clone(),
                    price: b.bid.price.clone(),
                });
            }
            if rules.provider.is_some_and(|p| p != b.id.provider) {
                continue;
            }
            let better = best
                .get(&b.id.gseq)
                .is_none_or(|x| b.bid.price.amount < x.bid.price.amount);
            if better {
                best.insert(b.id.gseq, b);
            }
        }
        if best.len() == groups {
            let since = *all_since.get_or_insert_with(|| {
                progress(Progress::BidWindow {
                    secs: rules.bid_window.as_secs(),
                });
                Instant::now()
            });
            if since.elapsed() >= rules.bid_window {
                return Ok(best.into_values().collect());
            }
        }
        if t0.elapsed() > rules.bid_timeout {
            return Err(DeployError::NoBids {
                id: format!("{}/{}", id.owner, id.dseq),
                missing: groups - best.len(),
                groups,
                secs: rules.bid_timeout.as_secs(),
            });
        }
        std::thread::sleep(POLL);
    }
}

/// A small runtime for the provider channel, on this thread.
fn runtime() -> Result<tokio::runtime::Runtime, DeployError> {
    crate::provider_runtime().map_err(|e| DeployError::Runtime(e.to_string()))
}

/// Sends `manifest` to the lease's provider and waits until every service runs; returns the
/// last status.
pub fn send_manifest_and_wait(
    client: &ProviderClient,
    lease: &LeaseId,
    manifest: &Manifest,
    timeout: Duration,
    progress: &mut dyn FnMut(Progress),
) -> Result<LeaseStatus, DeployError> {
    let rt = runtime()?;
    progress(Progress::SendingManifest { lease: lease.clone() });
    rt.block_on(client.send_manifest(lease, manifest))
        .map_err(|source| DeployError::ManifestRefused {
            lease: lease.to_string(),
            source,
        })?;
    progress(Progress::ManifestAccepted { lease: lease.clone() });
    let version = hex::encode(manifest.version());
    wait_serving_on(&rt, client, lease, Some(&version), timeout, progress)
}

/// Waits until every service of the lease runs; returns that status.
pub fn wait_serving(
    client: &ProviderClient,
    lease: &LeaseId,
    timeout: Duration,
    progress: &mut dyn FnMut(Progress),
) -> Result<LeaseStatus, DeployError> {
    wait_serving_on(&runtime()?, client, lease, None, timeout, progress)
}

fn wait_serving_on(
    rt: &tokio::runtime::Runtime,
    client: &ProviderClient,
    lease: &LeaseId,
    version: Option<&str>,
    timeout: Duration,
    progress: &mut dyn FnMut(Progress),
) -> Result<LeaseStatus, DeployError> {
    let t0 = Instant::now();
    loop {
        let status = rt.block_on(client.status(lease))?;
        // After a manifest, serving means serving *that* version: during an update the earlier
        // replicas are all running too. A provider that does not report versions is taken at
        // its word that it applied the manifest before answering.
        let on_version = version.is_none_or(|v| {
            status
                .services
                .iter()
                .all(|s| s.version.as_deref().is_none_or(|sv| sv == v))
        });
        if let Some(reason) = status.services.iter().find_map(|s| s.update_error.clone()) {
            if !on_version {
                return Err(DeployError::UpdateFailed {
                    lease: lease.to_string(),
                    reason,
                });
            }
        }
        if status.ready && on_version {
            progress(Progress::Serving {
                lease: lease.clone(),
                status: status.clone(),
            });
            return Ok(status);
        }
        if t0.elapsed() > timeout {
            return Err(DeployError::NotReady {
                lease: lease.to_string(),
                secs: timeout.as_secs(),
                services: serde_json::to_string(&status.services).unwrap_or_default(),
            });
        }
        progress(Progress::Starting {
            lease: lease.clone(),
            status,
        });
        std::thread::sleep(POLL);
    }
}

/// The whole deploy of a created deployment: choose a bid per group, lease them in one
/// transaction, send the manifest to each provider and wait until each serves.
pub fn lease_and_start(
    tenant: &Tenant,
    plan: &DeploymentPlan,
    rules: &BidRules,
    progress: &mut dyn FnMut(Progress),
) -> Result<Vec<LeaseOutcome>, DeployError> {
    let id = DeploymentId {
        owner: tenant.address(),
        dseq: plan.dseq,
    };
    let chosen = choose_bids(&tenant.rpc, &id, plan.groups.len(), rules, progress)?;
    let msgs = chosen.iter().map(|b| Msg::CreateLease { bid: b.id.clone() }).collect();
    tenant.commit("lease creation", msgs, progress)?;
    let mut out = Vec::with_capacity(chosen.len());
    for b in chosen {
        progress(Progress::Leased {
            id: b.id.clone(),
            price: b.bid.price.clone(),
        });
        let client = tenant.provider_client(&b.id.provider)?;
        let status = send_manifest_and_wait(&client, &b.id, &plan.manifest, rules.ready_timeout, progress)?;
        out.push(LeaseOutcome {
            lease: b.id,
            price: b.bid.price,
            status,
        });
    }
    Ok(out)
}

/// Deploys `plan` from start to serving: [`create_deployment`], then [`lease_and_start`].
/// Returns the deployment's transaction and the leases serving it.
pub fn deploy(
    tenant: &Tenant,
    plan: &DeploymentPlan,
    rules: &BidRules,
    progress: &mut dyn FnMut(Progress),
) -> Result<(TxResult, Vec<LeaseOutcome>), DeployError> {
    let r = create_deployment(tenant, plan, progress)?;
    committed("creating the deployment", &r)?;
    let leases = lease_and_start(tenant, plan, rules, progress)?;
    Ok((r, leases))
}

/// Updates a deployment to a new manifest: the new version goes on the ledger, then the
/// manifest to the provider of each of its active leases, and each is awaited until it serves.
///
/// Nothing is submitted unless the deployment is open and the file's groups are exactly the
/// ones on the ledger (see [`DeployError::GroupsChanged`]).
pub fn update(
    tenant: &Tenant,
    dseq: u64,
    groups: &[GroupSpec],
    manifest: &Manifest,
    version: Hash32,
    ready_timeout: Duration,
    progress: &mut dyn FnMut(Progress),
) -> Result<Vec<LeaseOutcome>, DeployError> {
    let id = DeploymentId {
        owner: tenant.address(),
        dseq,
    };
    let before = tenant.rpc.deployment(&id, false)?.item;
    if before.deployment.state != pazar_types::market::DeploymentState::Active {
        return Err(DeployError::Closed(format!("{}/{}", id.owner, id.dseq)));
    }
    let on_ledger: Vec<&GroupSpec> = before.groups.iter().map(|g| &g.group.spec).collect();
    let differences = group_differences(&on_ledger, groups);
    if !differences.is_empty() {
        return Err(DeployError::GroupsChanged {
            id: format!("{}/{}", id.owner, id.dseq),
            differences: differences.join("; "),
        });
    }
    tenant.commit(
        "updating the deployment",
        vec![Msg::UpdateDeployment { dseq, version }],
        progress,
    )?;
    let detail = tenant.rpc.deployment(&id, false)?.item;
    let mut out = Vec::new();
    for l in detail.leases {
        // Closed leases run nothing; a lease in grace neither: its provider stopped it and
        // refuses manifests (`lease_in_grace`) until a deposit resumes it, and then starts the
        // manifest it had, so the new one is sent again after the deposit.
        if l.lease.state != pazar_types::market::LeaseState::Active {
            continue;
        }
        let client = tenant.provider_client(&l.id.provider)?;
        let status = send_manifest_and_wait(&client, &l.id, manifest, ready_timeout, progress)?;
        out.push(LeaseOutcome {
            lease: l.id,
            price: l.lease.price,
            status,
        });
    }
    Ok(out)
}

/// What differs between the groups on the ledger and a file's, by group name, for people.
fn group_differences(on_ledger: &[&GroupSpec], file: &[GroupSpec]) -> Vec<String> {
    let mut out = Vec::new();
    for g in file {
        match on_ledger.iter().find(|l| l.name == g.name) {
            None => out.push(format!("group {:?} is not on the ledger", g.name)),
            Some(l) if l.requirements != g.requirements => {
                out.push(format!("group {:?} has other placement requirements", g.name))
            }
            Some(l) if l.resources != g.resources => {
                out.push(format!("group {:?} has other resources, counts or prices", g.name))
            }
            Some(l) if **l != *g => out.push(format!("group {:?} differs", g.name)),
            Some(_) => {}
        }
    }
    for l in on_ledger {
        if !file.iter().any(|g| g.name == l.name) {
            out.push(format!("group {:?} is missing from the file", l.name));
        }
    }
    out
}

/// Closes a deployment: its leases end and the escrow's balance is refunded. Returns the
/// transaction (its receipt says whether it succeeded).
/// With [`SubmitMode::Sync`] it answers once the node admitted the transaction (pending).
pub fn close(
    tenant: &Tenant,
    id: &DeploymentId,
    mode: SubmitMode,
    progress: &mut dyn FnMut(Progress),
) -> Result<TxResult, DeployError> {
    if tenant.address() != id.owner {
        return Err(DeployError::NotOwner {
            owner: id.owner,
            what: "close",
            id: format!("{}/{}", id.owner, id.dseq),
        });
    }
    tenant.submit_reporting(
        "closing the deployment",
        vec![Msg::CloseDeployment { dseq: id.dseq }],
        mode,
        progress,
    )
}

/// Closes one lease (the provider removes its workload). With [`SubmitMode::Sync`] it answers
/// once the node admitted the transaction (pending).
pub fn close_lease(
    tenant: &Tenant,
    lease: &LeaseId,
    mode: SubmitMode,
    progress: &mut dyn FnMut(Progress),
) -> Result<TxResult, DeployError> {
    tenant.submit_reporting(
        "closing the lease",
        vec![Msg::CloseLease {
            lease: lease.clone(),
            reason: LeaseCloseReason::Owner,
        }],
        mode,
        progress,
    )
}

/// One provider's answer for one open order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderReason {
    /// `None` when no provider is registered at all.
    pub provider: Option<Address>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_uri: Option<String>,
    pub why: String,
}

/// Why each provider did or did not bid on one open order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderReasons {
    pub order: OrderId,
    pub group: String,
    pub ceiling: Option<Price>,
    pub providers: Vec<ProviderReason>,
}

/// Why no provider bids: every open order of the deployment, each with every provider's
/// reason by the ledger's matching rule ([`why_no_bids::why_no_bids`]), or the bid it made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WhyNoBids {
    pub deployment: DeploymentId,
    pub orders: Vec<OrderReasons>,
}

/// Reads every open order of the deployment, every provider and every bid (all pages: a
/// provider left out would be a reason left out), and explains each order.
pub fn why_no_bids(rpc: &Rpc, id: &DeploymentId) -> Result<WhyNoBids, ClientError> {
    let orders = rpc.list_all::<OrderPage>(&ListQuery {
        owner: Some(id.owner),
        dseq: Some(id.dseq),
        state: Some("open".into()),
        ..ListQuery::default()
    })?;
    let providers = rpc.list_all::<ProviderPage>(&ListQuery::default())?;
    let bids = rpc.list_all::<BidPage>(&ListQuery {
        owner: Some(id.owner),
        dseq: Some(id.dseq),
        ..ListQuery::default()
    })?;
    // What the ledger holds of each provider, read once for every order.
    let mut facts = Vec::with_capacity(providers.len());
    let mut host_uris = Vec::with_capacity(providers.len());
    for p in &providers {
        let detail = rpc.provider(&p.owner, false)?.item;
        facts.push(ProviderFacts {
            address: detail.owner,
            attributes: detail.provider.attributes,
            audits: detail.audits.into_iter().map(|a| (a.auditor, a.attributes)).collect(),
        });
        host_uris.push(detail.provider.host_uri);
    }
    let mut out = Vec::new();
    for o in orders {
        let Some(group) = o.group else {
            return Err(ClientError::Decode(format!(
                "order {}/{}/{} has no group on the node",
                o.id.dseq, o.id.gseq, o.id.oseq
            )));
        };
        let mut rows = Vec::new();
        for ((addr, verdict), host_uri) in why_no_bids::why_no_bids(&group, &facts).into_iter().zip(&host_uris) {
            let bid = bids
                .iter()
                .find(|b| b.id.provider == addr && b.id.gseq == o.id.gseq && b.id.oseq == o.id.oseq);
            let why = match bid {
                Some(b) => format!(
                    "bid {} {} per block ({})",
                    b.bid.price.amount,
                    b.bid.price.denom,
                    serde_json::to_value(b.bid.state)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_string))
                        .unwrap_or_default()
                ),
                None => verdict.to_string(),
            };
            rows.push(ProviderReason {
                provider: Some(addr),
                host_uri: Some(host_uri.clone()),
                why,
            });
        }
        if rows.is_empty() {
            rows.push(ProviderReason {
                provider: None,
                host_uri: None,
                why: "no provider is registered on this chain".into(),
            });
        }
        out.push(OrderReasons {
            order: o.id,
            ceiling: group.max_price(),
            group: group.name,
            providers: rows,
        });
    }
    Ok(WhyNoBids {
        deployment: id.clone(),
        orders: out,
    })
}

/// A lease id as its `OWNER/DSEQ/GSEQ/OSEQ/PROVIDER` string, as the CLI prints it.
mod as_string {
    use serde::{Deserialize, Deserializer, Serializer};

    use pazar_types::LeaseId;

    pub fn serialize<S: Serializer>(id: &LeaseId, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(id)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<LeaseId, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pazar_types::market::{Endpoint, EndpointKind, Gpu, PlacementRequirements, ResourceUnit, Resources};
    use pazar_types::{Attribute, Dec, Denom};

    fn group(name: &str, count: u32, price: u128) -> GroupSpec {
        GroupSpec {
            name: name.into(),
            requirements: PlacementRequirements::default(),
            resources: vec![ResourceUnit {
                id: 1,
                resources: Resources {
                    cpu_millis: 500,
                    memory_bytes: 512 << 20,
                    storage: vec![],
                    gpu: Gpu::default(),
                    endpoints: vec![Endpoint {
                        kind: EndpointKind::SharedHttp,
                        sequence: 0,
                    }],
                },
                count,
                price: Price {
                    denom: Denom::new("uusd").expect("valid"),
                    amount: Dec::from_int(price).expect("small"),
                },
            }],
        }
    }

    #[test]
    fn an_update_may_not_change_the_leased_groups() {
        let ledger = [group("web", 1, 10)];
        let refs: Vec<&GroupSpec> = ledger.iter().collect();
        assert!(group_differences(&refs, &[group("web", 1, 10)]).is_empty());
        let more = group_differences(&refs, &[group("web", 2, 10)]);
        assert_eq!(more, vec!["group \"web\" has other resources, counts or prices"]);
        let renamed = group_differences(&refs, &[group("api", 1, 10)]);
        assert_eq!(renamed.len(), 2, "{renamed:?}");
        let mut placed = group("web", 1, 10);
        placed.requirements.attributes = vec![Attribute::new("region", "eu")];
        assert_eq!(
            group_differences(&refs, &[placed]),
            vec!["group \"web\" has other placement requirements"]
        );
    }
}
