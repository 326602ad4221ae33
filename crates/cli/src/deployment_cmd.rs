//! `pazar deployment …`: a tenant's view of a deployment, including why no provider bids (the
//! workflow is `pazar_client::deploy`; this renders it).

use anyhow::Result;
use clap::Subcommand;

use pazar_api::node::TxResult;
use pazar_client::deploy::{self, Tenant, WhyNoBids};
use pazar_client::Rpc;
use pazar_types::records::{EscrowPolicySpec, TopUpSpec};
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
    /// Set one's deployment's runway policy: an `escrow_low` alert when the escrow has
    /// --alert-blocks or fewer left, and an allowance from one's account that the ledger tops
    /// the escrow up from (back to --target-blocks) when it gets that low. Replaces the previous
    /// policy; --clear removes it (revoking the allowance).
    #[command(
        after_help = "Examples:\n  pazar deployment policy 12 --alert-blocks 3600 --from alice\n  \
                            pazar deployment policy 12 --alert-blocks 3600 --allowance 50000000uusd --target-blocks 86400 --from alice\n  \
                            pazar deployment policy 12 --clear --from alice"
    )]
    Policy(PolicyArgs),
    /// Keep one's deployment [OWNER/]DSEQ served: probe each lease (the provider's status and
    /// the service's ports), close one that stops answering as `provider_unresponsive`, lease
    /// the best new bid under the price limit, restore the latest volume snapshot into it and
    /// send the manifest; report runway alerts, grace and failovers, to a command or a URL too.
    /// Runs until the deployment closes or the process stops; several agents of one deployment
    /// do not fight.
    #[command(after_help = "Examples:\n  pazar deployment watch 12 --from alice\n  \
                            pazar deployment watch 12 --from alice --snapshot-every-s 60 --notify-cmd 'mail -s pazar me@example.org'\n  \
                            pazar deployment watch 12 --from alice --unresponsive-s 30 --max-price 12000uusd --notify-url https://hooks.example.org/pazar -o json")]
    Watch(crate::watch_cmd::WatchArgs),
}

#[derive(clap::Args)]
pub struct PolicyArgs {
    /// One's deployment: DSEQ (or OWNER/DSEQ with OWNER the signer).
    deployment: String,
    /// Announce `escrow_low` when the runway falls to this many blocks (0: no alert).
    #[arg(long, default_value_t = 0, conflicts_with = "clear")]
    alert_blocks: u64,
    /// The most the ledger may move from one's account into this escrow, in all (same
    /// denomination as the escrow).
    #[arg(long, requires = "target_blocks", conflicts_with = "clear")]
    allowance: Option<Coin>,
    /// Each top-up brings the runway back to this many blocks (above --alert-blocks).
    #[arg(long, requires = "allowance")]
    target_blocks: Option<u64>,
    /// The allowance ends after this height.
    #[arg(long, requires = "allowance")]
    expires_at: Option<u64>,
    /// Remove the policy: no alert, no allowance.
    #[arg(long)]
    clear: bool,
}

impl PolicyArgs {
    fn spec(&self) -> Result<EscrowPolicySpec> {
        if !self.clear && self.alert_blocks == 0 && self.allowance.is_none() {
            anyhow::bail!("nothing to set: give --alert-blocks, --allowance with --target-blocks, or --clear");
        }
        let top_up = match (&self.allowance, self.target_blocks) {
            (Some(limit), Some(target_blocks)) => Some(TopUpSpec {
                limit: limit.clone(),
                target_blocks,
                expires_at: self.expires_at,
            }),
            _ => None,
        };
        let spec = EscrowPolicySpec {
            low_blocks: self.alert_blocks,
            top_up,
        };
        // The ledger's own checks, before anything is signed.
        spec.validate("policy").map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok(spec)
    }
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
        DeploymentCmd::Policy(a) => {
            let id = ids.deployment(&a.deployment)?;
            let policy = a.spec()?;
            let key = chain::signer(opts, t)?;
            if key.address() != id.owner {
                anyhow::bail!(
                    "deployment {}/{} is not the signer's ({}): only its owner sets its policy",
                    id.owner,
                    id.dseq,
                    key.address()
                );
            }
            report(
                opts,
                &chain::submit_as(opts, t, &key, vec![Msg::SetEscrowPolicy { dseq: id.dseq, policy }])?,
            )
        }
        DeploymentCmd::Watch(a) => crate::watch_cmd::run(a, opts, t),
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
