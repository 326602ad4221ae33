//! The tenant's side of a running lease: status, logs, sending the manifest, close. Providers
//! are reached at the URI the ledger records, pinned to its TLS fingerprint, through
//! `pazar_client::tenant`.

use std::io::Write;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use clap::Subcommand;
use serde::Serialize;

use pazar_api::node::{TxResult, TxState};
use pazar_api::provider::{LeaseStatus, LogItem, LogsQuery};
use pazar_client::deploy::{self, Tenant};
use pazar_client::tenant::ProviderClient;
use pazar_client::Rpc;
use pazar_sdl::Manifest;
use pazar_types::market::{LeaseCloseReason, LeaseState};
use pazar_types::{Address, Msg, SigningKey};

use crate::chain::{self, client_err, TxOpts};
use crate::ids::Ids;
use crate::progress::View;
use crate::sdl_cmd::SavedManifest;
use crate::{home, ClientOpts, Output};

#[derive(Subcommand)]
pub enum LeaseCmd {
    /// Services of a lease [OWNER/]DSEQ/GSEQ/OSEQ/PROVIDER, asked of its provider: replicas
    /// running, restarts, image pulls, URIs.
    #[command(after_help = "Examples:\n  pazar lease status 12/1/1/provider --from alice\n  \
                            pazar lease status pazar1…/12/1/1/pazar1… --from alice -o json")]
    Status { lease: String },
    /// Logs of a lease's services (NDJSON with --output json).
    #[command(
        after_help = "Examples:\n  pazar lease logs 12/1/1/provider --from alice --tail 20\n  \
                            pazar lease logs 12/1/1/provider --from alice --service web -f"
    )]
    Logs {
        lease: String,
        #[arg(long)]
        service: Option<String>,
        #[arg(long, default_value_t = 100)]
        tail: usize,
        /// Keep streaming new lines.
        #[arg(long, short)]
        follow: bool,
    },
    /// Send (again) the manifest saved by `pazar deploy` to the lease's provider, and wait until
    /// its services run.
    #[command(after_help = "Examples:\n  pazar lease send-manifest 12/1/1/provider --from alice")]
    SendManifest {
        lease: String,
        /// Give up when services are not all running after this many seconds.
        #[arg(long, default_value_t = 120)]
        ready_timeout_s: u64,
    },
    /// Close the lease (the provider removes its workload); its tenant or its provider.
    #[command(after_help = "Examples:\n  pazar lease close 12/1/1/provider --from alice\n  \
                            pazar lease close pazar1…/12/1/1/provider --from provider --reason decommission")]
    Close {
        lease: String,
        /// owner (the tenant), or the provider's: unstable, decommission, unspecified,
        /// manifest_timeout.
        #[arg(long, default_value = "owner")]
        reason: String,
    },
}

/// A client for `provider`, from what the ledger records of it.
pub fn provider_client(rpc: &Rpc, provider: &Address, key: SigningKey) -> Result<ProviderClient> {
    Ok(ProviderClient::from_ledger(rpc, provider, key)?)
}

pub fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// The manifest `pazar deploy` saved for this deployment.
pub(crate) fn saved_manifest(home: &std::path::Path, lease: &pazar_types::DeploymentId) -> Result<Manifest> {
    let p = home
        .join("deployments")
        .join(format!("{}-{}.json", lease.owner, lease.dseq));
    let bytes =
        std::fs::read(&p).with_context(|| format!("no saved manifest {} (deploy from this home)", p.display()))?;
    let saved: SavedManifest =
        serde_json::from_slice(&bytes).with_context(|| format!("{} is not a saved manifest", p.display()))?;
    // Checked here as the provider will check it, so an edited file is refused with the reason
    // before anything is sent.
    pazar_sdl::ValidManifest::new(saved.manifest.clone())
        .with_context(|| format!("the saved manifest {} is not valid", p.display()))?;
    Ok(saved.manifest)
}

/// A provider's text made safe for a terminal: control characters (escape sequences that could
/// rewrite the screen or the title) become U+FFFD; `keep` lists the ones the caller laid out.
pub fn printable(s: &str, keep: &[char]) -> String {
    s.chars()
        .map(|c| {
            if c.is_control() && !keep.contains(&c) {
                '\u{fffd}'
            } else {
                c
            }
        })
        .collect()
}

/// The lease status for people; every string in it is the provider's, made printable.
pub fn status_text(st: &LeaseStatus) -> String {
    printable(&status_text_raw(st), &['\n'])
}

fn status_text_raw(st: &LeaseStatus) -> String {
    let mut out = String::new();
    for s in &st.services {
        out.push_str(&format!(
            "{}: {}/{} running, {} restart(s){}\n",
            s.name,
            s.running,
            s.replicas,
            s.restarts,
            s.last_error
                .as_deref()
                .map(|e| format!(", last: {e}"))
                .unwrap_or_default()
        ));
        if s.evictions > 0 {
            out.push_str(&format!(
                "  {} eviction(s), last: {}\n",
                s.evictions,
                s.last_eviction.as_deref().unwrap_or("")
            ));
        }
    }
    for u in &st.uris {
        out.push_str(&format!("  {} port {} → {}\n", u.service, u.port, u.uri));
    }
    out.trim_end().to_string()
}

/// The ledger's side of a lease for people: its state (with the end of a grace period) and
/// its deployment's escrow runway in blocks and wall time.
pub fn ledger_text(l: &pazar_api::node::LeaseDetail) -> String {
    let state = match (l.lease.state, l.lease.grace_until) {
        (LeaseState::Grace, Some(until)) => {
            format!("in grace until height {until} (the provider is not paid; a deposit resumes it)")
        }
        (state, _) => format!("{state:?}").to_lowercase(),
    };
    let mut out = format!("lease: {state}");
    if let Some(v) = &l.escrow {
        out.push_str(&format!("\nescrow: {}", runway_text(v)));
    }
    out
}

/// `balance 1200000uusd, runway 1200 blocks (about 20 min)`, and the policy if there is one.
pub fn runway_text(v: &pazar_types::records::EscrowView) -> String {
    let mut out = format!("balance {}{}", v.balance, v.denom);
    match (v.runway_blocks, v.runway_ms) {
        (Some(b), Some(ms)) => out.push_str(&format!(", runway {b} blocks (about {})", human_ms(ms))),
        (Some(b), None) => out.push_str(&format!(", runway {b} blocks")),
        (None, _) => out.push_str(", nothing to pay"),
    }
    if let Some(p) = &v.policy {
        if p.low_blocks > 0 {
            out.push_str(&format!(", alert at {} blocks", p.low_blocks));
        }
        if let Some(a) = &p.top_up {
            out.push_str(&format!(
                ", top-up allowance {}{} left (to {} blocks)",
                a.remaining, v.denom, a.target_blocks
            ));
        }
    }
    out
}

/// A duration for people, to its largest two units: `3 d 4 h`, `20 min 5 s`, `900 ms`.
pub fn human_ms(ms: u64) -> String {
    let s = ms / 1000;
    let (d, h, m) = (s / 86_400, (s / 3600) % 24, (s / 60) % 60);
    match () {
        _ if d > 0 => format!("{d} d {h} h"),
        _ if h > 0 => format!("{h} h {m} min"),
        _ if m > 0 => format!("{m} min {} s", s % 60),
        _ if s > 0 => format!("{s} s"),
        _ => format!("{ms} ms"),
    }
}

/// One log record for people: `[service-replica] line`, made printable.
fn log_text(item: &LogItem) -> String {
    match item {
        LogItem::Line(l) => format!(
            "[{}-{}] {}",
            printable(&l.service, &[]),
            l.replica,
            printable(&l.line, &['\t'])
        ),
        LogItem::Error { error } => format!("[error] {}", printable(error, &['\t'])),
    }
}

/// What `pazar lease close -o json` prints.
#[derive(Serialize)]
struct Closed<'a> {
    lease: &'a str,
    tx: &'a TxResult,
}

pub fn run(cmd: LeaseCmd, opts: &ClientOpts, t: &TxOpts) -> Result<()> {
    let home = home::resolve(opts.home.clone());
    let rpc = Rpc::new(&home::node_url(opts.node.clone(), &home));
    let ids = Ids::new(&home, t.from.as_deref());
    match cmd {
        LeaseCmd::Status { lease } => {
            let id = ids.lease(&lease)?;
            // The ledger's side first (state, grace, escrow runway): it is there even when the
            // provider does not answer.
            let ledger = rpc.lease(&id, false).map_err(client_err)?.item;
            let c = provider_client(&rpc, &id.provider, chain::signer(opts, t)?)?;
            let st = runtime()?.block_on(c.status(&id));
            match opts.output {
                // One JSON document: the provider's status with the ledger's side added, or
                // (the provider failing) the error document alone.
                Output::Json => {
                    if let Ok(st) = &st {
                        let mut v = serde_json::to_value(st)?;
                        if let Some(o) = v.as_object_mut() {
                            o.insert("ledger".into(), serde_json::to_value(&ledger)?);
                        }
                        println!("{}", serde_json::to_string_pretty(&v)?);
                    }
                }
                Output::Text => {
                    println!("{}", ledger_text(&ledger));
                    if let Ok(st) = &st {
                        println!("{}", status_text(st));
                    }
                }
            }
            st.map(|_| ()).map_err(anyhow::Error::from)
        }
        LeaseCmd::Logs {
            lease,
            service,
            tail,
            follow,
        } => {
            let id = ids.lease(&lease)?;
            let c = provider_client(&rpc, &id.provider, chain::signer(opts, t)?)?;
            let query = LogsQuery {
                service,
                tail: Some(tail),
                follow: Some(follow),
            };
            runtime()?.block_on(async {
                let mut stream = c.logs(&id, &query).await?;
                while let Some(item) = stream.next().await {
                    let item = item.map_err(|e| anyhow!("log stream: {e}"))?;
                    let mut out = std::io::stdout().lock();
                    match opts.output {
                        // Re-encoded, so only JSON (with its control characters escaped) is printed.
                        Output::Json => writeln!(out, "{}", serde_json::to_string(&item)?)?,
                        Output::Text => writeln!(out, "{}", log_text(&item))?,
                    }
                }
                Ok(())
            })
        }
        LeaseCmd::SendManifest { lease, ready_timeout_s } => {
            let id = ids.lease(&lease)?;
            let m = saved_manifest(&home, &id.deployment())?;
            let c = provider_client(&rpc, &id.provider, chain::signer(opts, t)?)?;
            let text = opts.output == Output::Text;
            let mut view = View::new(text);
            let timeout = Duration::from_secs(ready_timeout_s);
            let st = deploy::send_manifest_and_wait(&c, &id, &m, timeout, &mut |p| view.on(p))?;
            drop(view);
            if !text {
                println!("{}", serde_json::to_string_pretty(&st)?);
            }
            Ok(())
        }
        LeaseCmd::Close { lease, reason } => {
            let id = ids.lease(&lease)?;
            let lease = id.to_string();
            let reason = chain::close_reason(&reason)?;
            let r = if reason == LeaseCloseReason::Owner {
                let mut tenant = Tenant::new(rpc, chain::signer(opts, t)?).map_err(client_err)?;
                chain::configure(&mut tenant, t);
                tenant.memo = t.memo.clone();
                chain::with_spinner(&format!("closing {lease}"), || {
                    deploy::close_lease(&tenant, &id, chain::submit_mode(t), &mut |_| {})
                })?
            } else {
                // A provider's close: the workflow is the tenant's, the message is the same.
                let key = chain::signer(opts, t)?;
                let msg = Msg::CloseLease {
                    lease: id.clone(),
                    reason,
                };
                chain::submit_as(opts, t, &key, vec![msg])?
            };
            let ok = chain::tx_ok(&r);
            match opts.output {
                Output::Json => println!("{}", serde_json::to_string_pretty(&Closed { lease: &lease, tx: &r })?),
                Output::Text => match &r.state {
                    TxState::Committed { height, .. } if ok => println!("lease {lease} closed at height {height}"),
                    TxState::Pending => println!("lease {lease}: close {}", chain::tx_text(&r)),
                    _ => println!("lease not closed: {}", chain::tx_failure(&r)),
                },
            }
            if !ok {
                return Err(chain::tx_failed(&r));
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{human_ms, printable, runway_text, status_text};
    use pazar_api::provider::LeaseStatus;
    use serde_json::json;

    fn status(v: serde_json::Value) -> LeaseStatus {
        serde_json::from_value(v).expect("a lease status")
    }

    #[test]
    fn a_provider_s_escape_sequences_never_reach_the_terminal() {
        let st = status(json!({
            "lease": "pz-1", "ready": false,
            "services": [{"name": "web\u{1b}]0;owned\u{7}", "running": 1, "replicas": 1, "restarts": 0,
                          "state": "running", "forwards": [], "last_error": "boom\u{1b}[2J"}],
            "uris": []
        }));
        let text = status_text(&st);
        assert!(!text.chars().any(|c| c.is_control() && c != '\n'), "{text:?}");
        assert!(text.contains("web\u{fffd}]0;owned\u{fffd}"), "{text:?}");
        assert_eq!(printable("a\tb\u{1b}c", &['\t']), "a\tb\u{fffd}c");
    }

    #[test]
    fn status_text_names_restarts_evictions_and_every_uri() {
        let st = status(json!({
            "lease": "pz-1", "ready": true,
            "services": [{"name": "web", "running": 1, "replicas": 1, "restarts": 2, "last_error": null,
                          "state": "running", "forwards": [],
                          "evictions": 1, "last_eviction": "evicted: its writable layer held 9 bytes"}],
            "uris": [{"service": "web", "port": 8080, "uri": "http://127.0.0.1:32768"},
                     {"service": "web", "port": 8080, "uri": "http://web-pz-1.ingress.test", "ingress": true}]
        }));
        let text = status_text(&st);
        assert!(text.contains("web: 1/1 running, 2 restart(s)"), "{text}");
        assert!(
            text.contains("1 eviction(s), last: evicted: its writable layer held 9 bytes"),
            "{text}"
        );
        assert!(text.contains("web port 8080 → http://web-pz-1.ingress.test"), "{text}");
        let calm = status(json!({"lease": "pz-1", "ready": true, "uris": [],
            "services": [{"name": "web", "running": 1, "replicas": 1, "restarts": 0, "evictions": 0,
                          "state": "running", "forwards": [], "last_error": null}]}));
        assert!(!status_text(&calm).contains("eviction"));
    }

    #[test]
    fn durations_read_in_their_two_largest_units() {
        assert_eq!(human_ms(900), "900 ms");
        assert_eq!(human_ms(59_000), "59 s");
        assert_eq!(human_ms(1_205_000), "20 min 5 s");
        assert_eq!(human_ms(3_600_000 * 5 + 60_000 * 7), "5 h 7 min");
        assert_eq!(human_ms(86_400_000 * 3 + 3_600_000 * 4), "3 d 4 h");
    }

    #[test]
    fn runway_text_gives_blocks_wall_time_and_the_allowance_left() {
        let v: pazar_types::records::EscrowView = serde_json::from_value(json!({
            "denom": "uusd", "balance": "1200000", "accrued": "0",
            "runway_blocks": 1200, "depletes_at": 1300, "runway_ms": 1_200_000,
            "policy": { "low_blocks": 300, "alerted": false, "low_at": 1000,
                        "top_up": { "remaining": "5000000", "spent": "0", "target_blocks": 3600 } }
        }))
        .expect("a view");
        assert_eq!(
            runway_text(&v),
            "balance 1200000uusd, runway 1200 blocks (about 20 min 0 s), alert at 300 blocks, \
             top-up allowance 5000000uusd left (to 3600 blocks)"
        );
    }
}
