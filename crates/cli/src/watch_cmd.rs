//! `pazar deployment watch`: the tenant's agent (`pazar_client::watch`) as a long-running
//! command: one line per event (`-o json`: one JSON object per line), notifications to the
//! tenant's command or URL.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, Result};

use pazar_client::deploy::Tenant;
use pazar_client::snapshots::SnapshotStore;
use pazar_client::watch::{Agent, Notifier, NotifyConfig, WatchEvent, WatchOptions};
use pazar_client::Rpc;
use pazar_types::{DeploymentId, Price};

use crate::chain::{self, client_err, TxOpts};
use crate::ids::Ids;
use crate::{home, ClientOpts, Output};

#[derive(clap::Args)]
pub struct WatchArgs {
    /// One's deployment: DSEQ (or OWNER/DSEQ with OWNER the signer).
    deployment: String,
    /// The SDL file the deployment runs (default: the manifest `pazar deploy` saved in this home).
    #[arg(long)]
    file: Option<PathBuf>,
    /// Seconds between two probes of each lease.
    #[arg(long, default_value_t = 2)]
    probe_every_s: u64,
    /// Longest one probe (the provider's status, a connection to each published port) may take.
    #[arg(long, default_value_t = 3000)]
    probe_timeout_ms: u64,
    /// Close a lease as `provider_unresponsive` when its probes fail for this many seconds.
    #[arg(long, default_value_t = 10)]
    unresponsive_s: u64,
    /// The most a replacement lease may cost per block (default: the group's own price).
    #[arg(long)]
    max_price: Option<Price>,
    /// After the first acceptable bid of a reopened order, wait this long for cheaper ones.
    #[arg(long, default_value_t = 1)]
    bid_window_s: u64,
    /// Give up on a replacement whose services are not all running after this many seconds.
    #[arg(long, default_value_t = 180)]
    ready_timeout_s: u64,
    /// Snapshot the persistent volumes of each serving lease this often (0: never); the latest
    /// is restored into a replacement lease before its services start.
    #[arg(long, default_value_t = 0)]
    snapshot_every_s: u64,
    /// Where snapshots are kept (default: <home>/snapshots/<owner>-<dseq>); the latest one
    /// there is restored on a failover.
    #[arg(long)]
    snapshots: Option<PathBuf>,
    /// Run this command (by `sh -c`) on escrow_low, grace, failover, restore...: the event's
    /// JSON on its standard input, its name in $PAZAR_EVENT.
    #[arg(long)]
    notify_cmd: Option<String>,
    /// POST each such event as JSON to this http(s) URL.
    #[arg(long)]
    notify_url: Option<String>,
    /// Stop after this many seconds (default: run until the deployment closes or the process
    /// is stopped).
    #[arg(long)]
    for_s: Option<u64>,
}

fn now_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis())
}

/// One line for people.
fn text(e: &WatchEvent) -> String {
    match e {
        WatchEvent::Watching { deployment, groups } => {
            format!("watching {}/{} ({groups} group(s))", deployment.owner, deployment.dseq)
        }
        WatchEvent::Healthy { lease } => format!("{lease} serves"),
        WatchEvent::ProbeFailed {
            lease,
            error,
            failing_ms,
        } => format!(
            "{lease} probe failed ({} s in a row): {}",
            failing_ms / 1000,
            crate::lease_cmd::printable(error, &[])
        ),
        WatchEvent::Unresponsive { lease, failing_ms } => format!(
            "{lease} has not answered for {} s: closing it as provider_unresponsive",
            failing_ms / 1000
        ),
        WatchEvent::LeaseClosed { lease, reason } => match reason {
            Some(r) => format!("{lease} closed ({})", serde_json::to_string(r).unwrap_or_default()),
            None => format!("{lease} closed"),
        },
        WatchEvent::Leased { lease, price } => format!("leased {lease} at {price} per block"),
        WatchEvent::Restored { lease, files, bytes } => {
            format!("restored the latest snapshot into {lease}: {files} file(s), {bytes} bytes")
        }
        WatchEvent::Failover {
            gseq,
            from,
            to,
            down_ms,
            restored_bytes,
        } => format!(
            "group {gseq} serves again from {to}{} after {:.1} s down ({restored_bytes} bytes restored)",
            from.as_ref().map(|f| format!(" (was {f})")).unwrap_or_default(),
            *down_ms as f64 / 1000.0
        ),
        WatchEvent::FailoverFailed { gseq, error } => format!(
            "group {gseq}: {} (trying again)",
            crate::lease_cmd::printable(error, &[])
        ),
        WatchEvent::Snapshot {
            lease,
            files,
            bytes_total,
            chunks_fetched,
            bytes_fetched,
        } => format!(
            "snapshot of {lease}: {files} file(s), {bytes_total} bytes ({chunks_fetched} changed chunk(s), {bytes_fetched} bytes fetched)"
        ),
        WatchEvent::SnapshotFailed { lease, error } => format!(
            "snapshot of {lease} failed: {}",
            crate::lease_cmd::printable(error, &[])
        ),
        WatchEvent::EscrowLow {
            runway_blocks,
            low_blocks,
        } => format!("escrow low: {runway_blocks} block(s) of runway left (alert at {low_blocks})"),
        WatchEvent::ToppedUp { amount, remaining } => {
            format!("escrow topped up with {amount} from the allowance ({remaining} left)")
        }
        WatchEvent::TopUpSkipped { reason } => format!("a top-up was due and skipped: {reason}"),
        WatchEvent::Grace { lease, until } => {
            format!("{lease} is in grace until block {until}: deposit to resume it")
        }
        WatchEvent::Resumed { lease } => format!("{lease} resumed"),
        WatchEvent::ManifestOutdated { ledger, agent } => format!(
            "the deployment runs version {ledger} now, this agent has {agent}: no replacement is leased until the agent is restarted with the new file"
        ),
        WatchEvent::NodeError { error } => format!("the node did not answer: {error} (trying again)"),
        WatchEvent::DeploymentClosed => "the deployment is closed; stopping".into(),
    }
}

pub fn run(a: WatchArgs, opts: &ClientOpts, t: &TxOpts) -> Result<()> {
    let home = home::resolve(opts.home.clone());
    let rpc = Rpc::new(&home::node_url(opts.node.clone(), &home));
    let ids = Ids::new(&home, t.from.as_deref());
    let id: DeploymentId = ids.deployment(&a.deployment)?;
    let key = chain::signer(opts, t)?;
    if key.address() != id.owner {
        return Err(anyhow!(
            "deployment {}/{} is not the signer's ({}): only its owner's agent can close and lease for it",
            id.owner,
            id.dseq,
            key.address()
        ));
    }
    let manifest = match &a.file {
        Some(f) => crate::sdl_cmd::manifest_of(f, &rpc, opts.output)?,
        None => crate::lease_cmd::saved_manifest(&home, &id)?,
    };
    // Always open: snapshots an earlier run kept are restored on a failover even when this
    // run takes none.
    let dir = a
        .snapshots
        .clone()
        .unwrap_or_else(|| home.join("snapshots").join(format!("{}-{}", id.owner, id.dseq)));
    let store = SnapshotStore::open(&dir).map_err(|e| anyhow!("the snapshot store {}: {e}", dir.display()))?;
    let mut tenant = Tenant::new(rpc, key).map_err(client_err)?;
    chain::configure(&mut tenant, t);
    tenant.memo = t.memo.clone();
    let wopts = WatchOptions {
        probe_every: Duration::from_secs(a.probe_every_s.max(1)),
        probe_timeout: Duration::from_millis(a.probe_timeout_ms.max(100)),
        unresponsive_after: Duration::from_secs(a.unresponsive_s),
        bid_window: Duration::from_secs(a.bid_window_s),
        ready_timeout: Duration::from_secs(a.ready_timeout_s),
        max_price: a.max_price.clone(),
        snapshot_every: (a.snapshot_every_s > 0).then(|| Duration::from_secs(a.snapshot_every_s)),
        ..WatchOptions::default()
    };
    let mut agent = Agent::new(&tenant, id.dseq, manifest, wopts, Some(store))?;
    agent.follow_ledger()?;
    let json = opts.output == Output::Json;
    let mut notifier = Notifier::start(
        NotifyConfig {
            command: a.notify_cmd.clone(),
            url: a.notify_url.clone(),
        },
        |warning| eprintln!("warning: {warning}"),
    )?;
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    if let Some(s) = a.for_s {
        let stop = stop.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_secs(s));
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
        });
    }
    agent.run(&stop, &mut |e| {
        if json {
            if let Ok(mut v) = serde_json::to_value(e) {
                v["at_ms"] = serde_json::json!(now_ms() as u64);
                println!("{v}");
            }
        } else {
            println!("{}", text(e));
        }
        notifier.notify(e);
    })?;
    if notifier.dropped() > 0 {
        eprintln!(
            "warning: {} notification(s) dropped (the hook was too slow)",
            notifier.dropped()
        );
    }
    notifier.finish();
    Ok(())
}
