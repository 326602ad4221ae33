//! `pazar deployment …`: a tenant's view of a deployment, including why no provider bids (the
//! workflow is `pazar_client::deploy`; this renders it).

use anyhow::Result;
use clap::Subcommand;

use pazar_api::node::TxResult;
use pazar_client::deploy::{self, Tenant, WhyNoBids};
use pazar_client::Rpc;
use pazar_types::{Coin, Msg};

use crate::chain::{self, client_err, TxOpts};
use crate::ids::Ids;
use crate::{home, ClientOpts, Output};

#[derive(Subcommand)]
pub enum DeploymentCmd {
    /// For each open order of a deployment [OWNER/]DSEQ, what each provider lacks to bid by the
    /// ledger's matching rule (attributes, auditors, GPU models, storage classes, leased IPs) or,
    /// when it matches, the bid it made or the ceiling it did not meet.
    #[command(
        after_help = "Examples:\n  pazar deployment why-no-bids 12 --from alice\n  pazar deployment why-no-bids pazar1…/12 -o json"
    )]
    WhyNoBids { deployment: String },
    /// Add funds to the escrow of a deployment [OWNER/]DSEQ (anyone's).
    #[command(after_help = "Examples:\n  pazar deployment deposit 12 5000000uusd --from alice\n  \
                            pazar deployment deposit pazar1…/12 1000000uusd --from bob")]
    Deposit { deployment: String, amount: Coin },
    /// Close one's deployment [OWNER/]DSEQ: its leases end and the escrow's balance is refunded.
    #[command(
        after_help = "Examples:\n  pazar deployment close 12 --from alice\n  pazar deployment close 12 --from alice --no-wait"
    )]
    Close { deployment: String },
    /// Update one's deployment [OWNER/]DSEQ to a new SDL file (Akash's flow): the new version
    /// goes on the ledger and each provider replaces the lease's replicas one by one, keeping
    /// its volumes. The groups (resources, counts, prices, placement) must stay the ones leased.
    #[command(
        after_help = "Examples:\n  pazar deployment update 12 deploy.yaml --from alice\n  pazar deployment update 12 deploy.yaml --from alice -o json"
    )]
    Update(crate::sdl_cmd::UpdateArgs),
}

/// The reasons for people: one block per open order, one line per provider.
fn why_text(deployment: &str, w: &WhyNoBids) -> String {
    if w.orders.is_empty() {
        return format!("deployment {deployment} has no open order (it is leased or closed)");
    }
    let mut out = Vec::new();
    for o in &w.orders {
        out.push(format!(
            "order {}/{}/{} (group {}):",
            o.order.dseq, o.order.gseq, o.order.oseq, o.group
        ));
        for p in &o.providers {
            let who = p.provider.map_or_else(|| "-".to_string(), |a| a.to_string());
            out.push(format!("  {who}: {}", p.why));
        }
    }
    out.join("\n")
}

pub fn run(cmd: DeploymentCmd, opts: &ClientOpts, t: &TxOpts) -> Result<()> {
    let home = home::resolve(opts.home.clone());
    let rpc = Rpc::new(&home::node_url(opts.node.clone(), &home));
    let ids = Ids::new(&home, t.from.as_deref());
    match cmd {
        DeploymentCmd::WhyNoBids { deployment } => {
            let id = ids.deployment(&deployment)?;
            let deployment = format!("{}/{}", id.owner, id.dseq);
            let w = deploy::why_no_bids(&rpc, &id).map_err(client_err)?;
            match opts.output {
                Output::Json => println!("{}", serde_json::to_string_pretty(&w)?),
                Output::Text => println!("{}", why_text(&deployment, &w)),
            }
            Ok(())
        }
        DeploymentCmd::Deposit { deployment, amount } => {
            let id = ids.deployment(&deployment)?;
            let key = chain::signer(opts, t)?;
            report(
                opts,
                &chain::submit_as(opts, t, &key, vec![Msg::DepositDeployment { id, amount }])?,
            )
        }
        DeploymentCmd::Close { deployment } => {
            let id = ids.deployment(&deployment)?;
            let deployment = format!("{}/{}", id.owner, id.dseq);
            let mut tenant = Tenant::new(rpc, chain::signer(opts, t)?).map_err(client_err)?;
            chain::configure(&mut tenant, t);
            tenant.memo = t.memo.clone();
            let r = chain::with_spinner(&format!("closing {deployment}"), || {
                deploy::close(&tenant, &id, chain::submit_mode(t), &mut |_| {})
            })?;
            report(opts, &r)
        }
        DeploymentCmd::Update(a) => {
            let id = ids.deployment(&a.deployment)?;
            crate::sdl_cmd::update(&a, id, opts, t)
        }
    }
}

fn report(opts: &ClientOpts, r: &TxResult) -> Result<()> {
    let ok = chain::tx_ok(r);
    match opts.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(r)?),
        Output::Text if ok => println!("{}", chain::tx_text(r)),
        Output::Text => println!("failed: {}", chain::tx_failure(r)),
    }
    if !ok {
        return Err(chain::tx_failed(r));
    }
    Ok(())
}
