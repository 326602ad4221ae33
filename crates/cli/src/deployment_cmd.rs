//! `pazar deployment …`: a tenant's view of a deployment, including why no provider bids.

use anyhow::{anyhow, bail, Context, Result};
use clap::Subcommand;
use serde_json::{json, Value};

use pazar_client::Rpc;
use pazar_provider::bidding::{self, ProviderView};
use pazar_provider::inventory::GpuInfo;
use pazar_types::market::{Attribute, GroupSpec, OrderId};
use pazar_types::{Address, Coin, DeploymentId, Msg};

use crate::chain::{self, client_err, TxOpts};
use crate::{home, ClientOpts, Output};

#[derive(Subcommand)]
pub enum DeploymentCmd {
    /// For each open order, what each provider lacks to bid (attributes, auditors, GPU models)
    /// or, when it matches, the bid it made or the ceiling it did not meet.
    WhyNoBids { deployment: String },
    /// Add funds to the deployment's escrow.
    Deposit { deployment: String, amount: Coin },
    /// Close the deployment: its leases end and the escrow's balance is refunded.
    Close { deployment: String },
}

fn parse_deployment(s: &str) -> Result<DeploymentId> {
    let (o, d) = s
        .split_once('/')
        .ok_or_else(|| anyhow!("deployment id {s:?} must be OWNER/DSEQ"))?;
    Ok(DeploymentId {
        owner: o.parse().map_err(|e| anyhow!("owner: {e}"))?,
        dseq: d.parse().context("dseq")?,
    })
}

/// GPUs a provider advertises as `capabilities/gpu/vendor/<vendor>/model/<model>` attributes.
fn advertised_gpus(attrs: &[Attribute]) -> Vec<GpuInfo> {
    attrs
        .iter()
        .filter_map(|a| {
            let rest = a.key.strip_prefix("capabilities/gpu/vendor/")?;
            let (vendor, model) = rest.split_once("/model/")?;
            Some(GpuInfo {
                vendor: vendor.into(),
                model: model.into(),
                name: model.into(),
                memory_bytes: 0,
                interface: String::new(),
                uuid: String::new(),
            })
        })
        .collect()
}

/// The GPU attribute keys a group asks for, reduced to vendor and model (what providers
/// advertise on the ledger).
fn gpu_mismatch(group: &GroupSpec, gpus: &[GpuInfo]) -> Option<String> {
    for u in &group.resources {
        if u.resources.gpu.units == 0 {
            continue;
        }
        let wanted: Vec<String> = u.resources.gpu.attributes.iter().map(|a| a.key.clone()).collect();
        let ok = wanted.iter().any(|k| {
            let model_only: String = k.split('/').take(4).collect::<Vec<_>>().join("/");
            gpus.iter().any(|g| g.satisfies(&model_only))
        });
        if !ok {
            return Some(format!(
                "unit {} needs GPU {}; the provider advertises {}",
                u.id,
                wanted.join(" or "),
                if gpus.is_empty() {
                    "no GPU".to_string()
                } else {
                    gpus.iter()
                        .map(|g| format!("{}/{}", g.vendor, g.model))
                        .collect::<Vec<_>>()
                        .join(", ")
                }
            ));
        }
    }
    None
}

fn why_no_bids(rpc: &Rpc, id: &DeploymentId) -> Result<Value> {
    // Every page of each list: a provider left out would be a reason left out.
    let orders = rpc
        .list_all(
            &format!("/orders?owner={}&dseq={}&state=open", id.owner, id.dseq),
            "orders",
        )
        .map_err(client_err)?;
    let providers = rpc.list_all("/providers", "providers").map_err(client_err)?;
    let bids = rpc
        .list_all(&format!("/bids?owner={}&dseq={}", id.owner, id.dseq), "bids")
        .map_err(client_err)?;
    let mut out = Vec::new();
    for o in &orders {
        let oid: OrderId = serde_json::from_value(o["id"].clone())?;
        let group: GroupSpec = serde_json::from_value(o["group"].clone())?;
        let ceiling = group.max_price();
        let mut rows = Vec::new();
        for p in &providers {
            let addr: Address = serde_json::from_value(p["owner"].clone())?;
            let full = rpc.get(&format!("/providers/{addr}")).map_err(client_err)?;
            let mut view = ProviderView {
                address: Some(addr),
                attributes: serde_json::from_value(full["provider"]["attributes"].clone()).unwrap_or_default(),
                ..ProviderView::default()
            };
            for a in full["audits"].as_array().into_iter().flatten() {
                if let (Ok(aud), Ok(attrs)) = (
                    serde_json::from_value::<Address>(a["auditor"].clone()),
                    serde_json::from_value::<Vec<Attribute>>(a["attributes"].clone()),
                ) {
                    view.audits.insert(aud, attrs);
                }
            }
            let bid = bids.iter().find(|b| {
                b["id"]["provider"] == addr.to_string() && b["id"]["gseq"] == oid.gseq && b["id"]["oseq"] == oid.oseq
            });
            let verdict = if let Some(b) = bid {
                format!(
                    "bid {} {} per block ({})",
                    b["bid"]["price"]["amount"].as_str().unwrap_or(""),
                    b["bid"]["price"]["denom"].as_str().unwrap_or(""),
                    b["bid"]["state"].as_str().unwrap_or("")
                )
            } else if let Err(why) = bidding::check_requirements(&group, &view) {
                why.to_string()
            } else if let Some(why) = gpu_mismatch(&group, &advertised_gpus(&view.attributes)) {
                why
            } else {
                format!(
                    "matches the placement but has not bid: its free capacity or its price is above the ceiling of {} (its log says which; a higher price or a smaller group may help)",
                    ceiling.as_ref().map(|c| format!("{} {} per block", c.amount, c.denom)).unwrap_or_default()
                )
            };
            rows.push(json!({"provider": addr, "host_uri": full["provider"]["host_uri"], "why": verdict}));
        }
        if rows.is_empty() {
            rows.push(json!({"provider": null, "why": "no provider is registered on this chain"}));
        }
        out.push(json!({"order": oid, "group": group.name, "ceiling": ceiling, "providers": rows}));
    }
    Ok(json!({"deployment": id, "orders": out}))
}

pub fn run(cmd: DeploymentCmd, opts: &ClientOpts, t: &TxOpts) -> Result<()> {
    let home = home::resolve(opts.home.clone());
    let rpc = Rpc::new(&home::node_url(opts.node.clone(), &home));
    match cmd {
        DeploymentCmd::WhyNoBids { deployment } => {
            let id = parse_deployment(&deployment)?;
            let v = why_no_bids(&rpc, &id)?;
            match opts.output {
                Output::Json => println!("{}", serde_json::to_string_pretty(&v)?),
                Output::Text => {
                    let orders = v["orders"].as_array().cloned().unwrap_or_default();
                    if orders.is_empty() {
                        println!("deployment {deployment} has no open order (it is leased or closed)");
                    }
                    for o in orders {
                        println!(
                            "order {}/{}/{} (group {}):",
                            o["order"]["dseq"],
                            o["order"]["gseq"],
                            o["order"]["oseq"],
                            o["group"].as_str().unwrap_or("")
                        );
                        for p in o["providers"].as_array().into_iter().flatten() {
                            println!(
                                "  {}: {}",
                                p["provider"].as_str().unwrap_or("-"),
                                p["why"].as_str().unwrap_or("")
                            );
                        }
                    }
                }
            }
            Ok(())
        }
        DeploymentCmd::Deposit { deployment, amount } => {
            let id = parse_deployment(&deployment)?;
            let key = chain::signer(opts, t)?;
            report(
                opts,
                chain::submit_as(opts, t, &key, vec![Msg::DepositDeployment { id, amount }])?,
            )
        }
        DeploymentCmd::Close { deployment } => {
            let id = parse_deployment(&deployment)?;
            let key = chain::signer(opts, t)?;
            if key.address() != id.owner {
                bail!("only the owner {} can close {deployment}", id.owner);
            }
            report(
                opts,
                chain::submit_as(opts, t, &key, vec![Msg::CloseDeployment { dseq: id.dseq }])?,
            )
        }
    }
}

fn report(opts: &ClientOpts, v: Value) -> Result<()> {
    let ok = v["receipt"]["code"].as_u64().unwrap_or(0) == 0;
    match opts.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&v)?),
        Output::Text if ok => println!("committed at height {}", v["height"]),
        Output::Text => println!("failed: {}", v["receipt"]["log"].as_str().unwrap_or("")),
    }
    if !ok {
        std::process::exit(2);
    }
    Ok(())
}
