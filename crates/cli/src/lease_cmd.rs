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
use pazar_types::market::{BidId, LeaseCloseReason};
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
fn saved_manifest(home: &std::path::Path, lease: &BidId) -> Result<Manifest> {
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
            let c = provider_client(&rpc, &id.provider, chain::signer(opts, t)?)?;
            let st = runtime()?.block_on(c.status(&id))?;
            match opts.output {
                Output::Json => println!("{}", serde_json::to_string_pretty(&st)?),
                Output::Text => println!("{}", status_text(&st)),
            }
            Ok(())
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
            let m = saved_manifest(&home, &id)?;
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
    use super::{printable, status_text};
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
}
