//! `pazar deployment …`: a tenant's view of a deployment, including why no provider bids.

use anyhow::{anyhow, bail, Context, Result};
use clap::Subcommand;
use serde_json::{json, Value};

use pazar_api::node::{BidPage, ListQuery, OrderPage, ProviderPage};
use pazar_client::why_no_bids::{self, ProviderFacts};
use pazar_client::Rpc;
use pazar_types::{Coin, DeploymentId, Msg};

use crate::chain::{self, client_err, TxOpts};
use crate::{home, ClientOpts, Output};

#[derive(Subcommand)]
pub enum DeploymentCmd {
    /// For each open order, what each provider lacks to bid by the ledger's matching rule
    /// (attributes, auditors, GPU models, storage classes, leased IPs) or, when it matches, the
    /// bid it made or the ceiling it did not meet.
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

fn why_no_bids(rpc: &Rpc, id: &DeploymentId) -> Result<Value> {
    // Every page of each list: a provider left out would be a reason left out.
    let of_deployment = ListQuery {
        owner: Some(id.owner),
        dseq: Some(id.dseq),
        ..ListQuery::default()
    };
    let orders = rpc
        .list_all::<OrderPage>(&ListQuery {
            state: Some("open".into()),
            ..of_deployment.clone()
        })
        .map_err(client_err)?;
    let providers = rpc
        .list_all::<ProviderPage>(&ListQuery::default())
        .map_err(client_err)?;
    let bids = rpc.list_all::<BidPage>(&of_deployment).map_err(client_err)?;
    // What the ledger holds of each provider, read once for every order.
    let mut facts = Vec::with_capacity(providers.len());
    let mut host_uris = Vec::with_capacity(providers.len());
    for p in &providers {
        let detail = rpc.provider(&p.owner, false).map_err(client_err)?.item;
        facts.push(ProviderFacts {
            address: detail.owner,
            attributes: detail.provider.attributes,
            audits: detail.audits.into_iter().map(|a| (a.auditor, a.attributes)).collect(),
        });
        host_uris.push(detail.provider.host_uri);
    }
    let mut out = Vec::new();
    for o in &orders {
        let oid = &o.id;
        let group = o
            .group
            .as_ref()
            .ok_or_else(|| anyhow!("the node answered order {oid} without its group"))?;
        let ceiling = group.max_price();
        let mut rows = Vec::new();
        for ((addr, verdict), host_uri) in why_no_bids::why_no_bids(group, &facts).into_iter().zip(&host_uris) {
            let bid = bids
                .iter()
                .find(|b| b.id.provider == addr && b.id.gseq == oid.gseq && b.id.oseq == oid.oseq);
            let why = match bid {
                Some(b) => format!(
                    "bid {} {} per block ({})",
                    b.bid.price.amount,
                    b.bid.price.denom,
                    serde_json::to_value(b.bid.state)?.as_str().unwrap_or_default()
                ),
                None => verdict.to_string(),
            };
            rows.push(json!({"provider": addr, "host_uri": host_uri, "why": why}));
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
