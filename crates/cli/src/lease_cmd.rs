//! The tenant's side of a running lease: choosing bids, sending the manifest, status, logs,
//! close. Providers are reached at the URI the ledger records, pinned to its TLS fingerprint.

use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use clap::Subcommand;
use http_body_util::BodyExt;
use serde_json::{json, Value};

use pazar_client::Rpc;
use pazar_provider::tenant::ProviderClient;
use pazar_sdl::Manifest;
use pazar_types::market::{BidId, LeaseCloseReason};
use pazar_types::{Address, Hash32, Msg, SigningKey};

use crate::chain::{self, client_err, TxOpts};
use crate::{home, ClientOpts, Output};

#[derive(Subcommand)]
pub enum LeaseCmd {
    /// Services of a lease: replicas running, restarts, URIs.
    Status { lease: String },
    /// Logs of a lease's services (NDJSON with --output json).
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
    /// Send (again) the manifest saved by `pazar deploy` to the lease's provider.
    SendManifest { lease: String },
    /// Close the lease (the provider removes its workload).
    Close { lease: String },
}

/// A client for `provider`, from what the ledger records of it.
pub fn provider_client(rpc: &Rpc, provider: &Address, key: SigningKey) -> Result<ProviderClient> {
    let p = rpc.get(&format!("/providers/{provider}")).map_err(client_err)?;
    let uri = p["provider"]["host_uri"]
        .as_str()
        .ok_or_else(|| anyhow!("provider {provider} has no host URI on the ledger"))?;
    let fp: Hash32 = p["provider"]["tls_fingerprint"]
        .as_str()
        .and_then(|h| hex::decode(h).ok())
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| anyhow!("provider {provider} has no TLS fingerprint on the ledger"))?;
    let chain_id = rpc.chain_id().map_err(client_err)?;
    Ok(ProviderClient::new(uri, fp, &chain_id, *provider, key)?)
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
    let v: Value = serde_json::from_slice(&bytes)?;
    let m: Manifest = serde_json::from_value(v["manifest"].clone())?;
    // Checked here as the provider will check it, so an edited file is refused with the reason
    // before anything is sent.
    pazar_sdl::ValidManifest::new(m.clone())
        .with_context(|| format!("the saved manifest {} is not valid", p.display()))?;
    Ok(m)
}

/// Sends the manifest and waits until every service runs; returns the last status.
pub fn send_and_wait(
    client: &ProviderClient,
    lease: &BidId,
    manifest: &Manifest,
    timeout: Duration,
    quiet: bool,
) -> Result<Value> {
    let rt = runtime()?;
    rt.block_on(async {
        client.send_manifest(lease, manifest).await.with_context(|| {
            format!(
                "the provider did not accept the manifest of {lease}; the lease stays open and is paid \
                     from the escrow: send a corrected manifest (`pazar lease send-manifest {lease}`) or close it \
                     (`pazar lease close {lease}`)"
            )
        })?;
        let t0 = Instant::now();
        loop {
            let st = client.status(lease).await?;
            if st["ready"] == true {
                return Ok(st);
            }
            if t0.elapsed() > timeout {
                bail!(
                    "services of {lease} not all running after {} s: {}",
                    timeout.as_secs(),
                    serde_json::to_string(&st["services"]).unwrap_or_default()
                );
            }
            if !quiet {
                eprint!(".");
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    })
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

/// Longest log line taken from a provider's stream before it is refused.
const MAX_LOG_LINE: usize = 1 << 20;

/// The lease status for people; every string in it is the provider's, made printable.
pub fn status_text(st: &Value) -> String {
    printable(&status_text_raw(st), &['\n'])
}

fn status_text_raw(st: &Value) -> String {
    let mut out = String::new();
    for s in st["services"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "{}: {}/{} running, {} restart(s){}\n",
            s["name"].as_str().unwrap_or(""),
            s["running"],
            s["replicas"],
            s["restarts"],
            s["last_error"]
                .as_str()
                .map(|e| format!(", last: {e}"))
                .unwrap_or_default()
        ));
        if let Some(n) = s["evictions"].as_u64().filter(|n| *n > 0) {
            out.push_str(&format!(
                "  {n} eviction(s), last: {}\n",
                s["last_eviction"].as_str().unwrap_or("")
            ));
        }
    }
    for u in st["uris"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "  {} port {} → {}\n",
            u["service"].as_str().unwrap_or(""),
            u["port"],
            u["uri"].as_str().unwrap_or("")
        ));
    }
    out.trim_end().to_string()
}

pub fn run(cmd: LeaseCmd, opts: &ClientOpts, t: &TxOpts) -> Result<()> {
    let home = home::resolve(opts.home.clone());
    let rpc = Rpc::new(&home::node_url(opts.node.clone(), &home));
    match cmd {
        LeaseCmd::Status { lease } => {
            let id: BidId = lease.parse()?;
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
            let id: BidId = lease.parse()?;
            let c = provider_client(&rpc, &id.provider, chain::signer(opts, t)?)?;
            runtime()?.block_on(async {
                let mut body = c.logs(&id, service.as_deref(), tail, follow).await?.body;
                let mut pending = Vec::new();
                while let Some(frame) = body.frame().await {
                    let frame = frame.map_err(|e| anyhow!("log stream broke: {e}"))?;
                    let Some(data) = frame.data_ref() else { continue };
                    pending.extend_from_slice(data);
                    while let Some(i) = pending.iter().position(|&b| b == b'\n') {
                        let line: Vec<u8> = pending.drain(..=i).collect();
                        let Ok(v) = serde_json::from_slice::<Value>(&line) else {
                            return Err(anyhow!("the provider sent a log record that is not JSON"));
                        };
                        let mut out = std::io::stdout().lock();
                        match opts.output {
                            // Re-encoded, so only JSON (with its control characters escaped) is printed.
                            Output::Json => writeln!(out, "{}", serde_json::to_string(&v)?)?,
                            Output::Text => writeln!(
                                out,
                                "[{}-{}] {}",
                                printable(v["service"].as_str().unwrap_or(""), &[]),
                                v["replica"],
                                printable(v["line"].as_str().or(v["error"].as_str()).unwrap_or(""), &['\t'])
                            )?,
                        }
                    }
                    if pending.len() > MAX_LOG_LINE {
                        return Err(anyhow!("the provider sent a log record over {MAX_LOG_LINE} bytes"));
                    }
                }
                Ok(())
            })
        }
        LeaseCmd::SendManifest { lease } => {
            let id: BidId = lease.parse()?;
            let m = saved_manifest(&home, &id)?;
            let c = provider_client(&rpc, &id.provider, chain::signer(opts, t)?)?;
            let st = send_and_wait(&c, &id, &m, Duration::from_secs(120), opts.output == Output::Json)?;
            match opts.output {
                Output::Json => println!("{}", serde_json::to_string_pretty(&st)?),
                Output::Text => println!("\n{}", status_text(&st)),
            }
            Ok(())
        }
        LeaseCmd::Close { lease } => {
            let id: BidId = lease.parse()?;
            let key = chain::signer(opts, t)?;
            let v = chain::submit_as(
                opts,
                t,
                &key,
                vec![Msg::CloseLease {
                    lease: id.clone(),
                    reason: LeaseCloseReason::Owner,
                }],
            )?;
            let ok = v["receipt"]["code"].as_u64().unwrap_or(0) == 0;
            match opts.output {
                Output::Json => println!("{}", serde_json::to_string_pretty(&json!({"lease": lease, "tx": v}))?),
                Output::Text if ok => println!("lease {lease} closed at height {}", v["height"]),
                Output::Text => println!("lease not closed: {}", v["receipt"]["log"].as_str().unwrap_or("")),
            }
            if !ok {
                std::process::exit(2);
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{printable, status_text};
    use serde_json::json;

    #[test]
    fn a_provider_s_escape_sequences_never_reach_the_terminal() {
        let st = json!({
            "services": [{"name": "web\u{1b}]0;owned\u{7}", "running": 1, "replicas": 1, "restarts": 0,
                          "last_error": "boom\u{1b}[2J"}],
            "uris": []
        });
        let text = status_text(&st);
        assert!(!text.chars().any(|c| c.is_control() && c != '\n'), "{text:?}");
        assert!(text.contains("web\u{fffd}]0;owned\u{fffd}"), "{text:?}");
        assert_eq!(printable("a\tb\u{1b}c", &['\t']), "a\tb\u{fffd}c");
    }

    #[test]
    fn status_text_names_restarts_evictions_and_every_uri() {
        let st = json!({
            "services": [{"name": "web", "running": 1, "replicas": 1, "restarts": 2, "last_error": null,
                          "evictions": 1, "last_eviction": "evicted: its writable layer held 9 bytes"}],
            "uris": [{"service": "web", "port": 8080, "uri": "http://127.0.0.1:32768"},
                     {"service": "web", "port": 8080, "uri": "http://web-pz-1.ingress.test", "ingress": true}]
        });
        let text = status_text(&st);
        assert!(text.contains("web: 1/1 running, 2 restart(s)"), "{text}");
        assert!(
            text.contains("1 eviction(s), last: evicted: its writable layer held 9 bytes"),
            "{text}"
        );
        assert!(text.contains("web port 8080 → http://web-pz-1.ingress.test"), "{text}");
        let calm = json!({"services": [{"name": "web", "running": 1, "replicas": 1, "restarts": 0, "evictions": 0}]});
        assert!(!status_text(&calm).contains("eviction"));
    }
}
