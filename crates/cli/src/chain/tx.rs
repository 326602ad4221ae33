//! `pazar tx`: building, simulating, signing and submitting transactions.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context, Result};
use clap::{Args, Subcommand};
use serde_json::Value;

use pazar_api::node::{TxResult, TxState};
use pazar_api::request::SubmitMode;
use pazar_api::ErrorCode;
use pazar_client::deploy::DeployError;
use pazar_client::keyring::Keyring;
use pazar_client::{ClientError, DryRun, Rpc};
use pazar_node::consensus::SystemClock;
use pazar_types::market::{GroupId, GroupSpec, LeaseCloseReason};
use pazar_types::{Address, Attribute, Coin, DeploymentId, Hash32, Msg, Price, ProviderInfo, SigningKey};

use crate::failure::{Exit, Failure};
use crate::ids::{self, Ids};
use crate::{home, ClientOpts, Output};

use super::keys::key_err;
use super::node::passphrase_prompt;
use super::output::{emit, with_spinner};

#[derive(Args, Clone)]
pub struct TxOpts {
    /// Name of the signing key in the keyring.
    #[arg(long, global = true)]
    pub from: Option<String>,
    /// Fee, e.g. `200upzr`; default the minimum for the messages, in the native denomination.
    #[arg(long, global = true)]
    pub fee: Option<Coin>,
    #[arg(long, global = true, default_value = "")]
    pub memo: String,
    /// Return once the node accepts the transaction instead of waiting for its block.
    #[arg(long, global = true)]
    pub no_wait: bool,
    /// Sign and simulate the transaction (a workflow: its first one), print what would happen
    /// (-o json: the node's SimulateResult) and submit nothing. Exit 0 when it would succeed,
    /// 2 when it would fail.
    #[arg(long, global = true, conflicts_with = "no_simulate")]
    pub dry_run: bool,
    /// Broadcast without simulating first. By default a transaction the node says would fail is
    /// not broadcast (so a typo costs no fee); the simulation runs after the key's pending
    /// transactions, but one racing it (sent at the same time from elsewhere, or a block that
    /// changes the state first) can make a good transaction look bad, or the reverse.
    #[arg(long, global = true)]
    pub no_simulate: bool,
}

/// Applies `--fee`, `--dry-run` and `--no-simulate` to a workflow's tenant.
pub fn configure(tenant: &mut pazar_client::deploy::Tenant, t: &TxOpts) {
    tenant.fee = t.fee.clone();
    tenant.dry_run = t.dry_run;
    tenant.simulate = !t.no_simulate;
}

/// The dry run an error carries, from `submit_as` or a workflow's tenant.
pub fn dry_run_of(e: &anyhow::Error) -> Option<&DryRun> {
    e.chain().find_map(|c| {
        c.downcast_ref::<DryRun>()
            .or_else(|| match c.downcast_ref::<DeployError>() {
                Some(DeployError::DryRun(d)) => Some(&**d),
                _ => None,
            })
    })
}

/// Prints a dry run's answer and says how the command exits: 0 when the transaction would
/// succeed, 2 (a transaction that would not take effect) when it would fail.
pub fn report_dry_run(d: &DryRun, out: Output) -> Exit {
    let r = &d.result;
    match out {
        Output::Json => println!("{}", serde_json::to_string_pretty(r).unwrap_or_default()),
        Output::Text => {
            let hash = hex::encode(r.hash);
            let verdict = match pazar_client::simulation_failure(r) {
                None => "would succeed".to_string(),
                Some(reason) => format!("would fail: {reason}"),
            };
            println!(
                "dry run of {} at height {}: {verdict} (tx {hash}; nothing was submitted)",
                d.what, r.height
            );
            for e in &r.receipt.events {
                println!("  {}", serde_json::to_string(e).unwrap_or_default());
            }
        }
    }
    if r.would_succeed {
        Exit::Ok
    } else {
        Exit::TxFailed
    }
}

#[derive(Subcommand)]
pub enum TxCmd {
    /// Send tokens to an address or a key name.
    #[command(after_help = "Examples:\n  pazar tx send bob 1000upzr --from alice\n  \
                            pazar tx send pazar1… 5uusd --from alice --no-wait -o json")]
    Send { to: String, amount: Coin },
    /// Register, update or remove this key as a provider.
    Provider {
        #[command(subcommand)]
        which: ProviderTx,
    },
    /// Auditors sign (or remove) provider attributes.
    Audit {
        #[command(subcommand)]
        which: AuditTx,
    },
    /// Deployments from JSON group specs (SDL files: `pazar deploy`).
    Deployment {
        #[command(subcommand)]
        which: DeploymentTx,
    },
    /// Close, pause or start one group of one's own deployment.
    Group {
        #[command(subcommand)]
        which: GroupTx,
    },
    /// Providers bid on orders and close their bids.
    Bid {
        #[command(subcommand)]
        which: BidTx,
    },
    /// Accept a bid, close a lease, withdraw its earnings.
    Lease {
        #[command(subcommand)]
        which: LeaseTx,
    },
    /// Same as `pazar tx lease withdraw` (kept for old scripts).
    #[command(hide = true)]
    Withdraw { lease: String },
    /// Validators vote on the validator set (from their validator key's account).
    Validator {
        #[command(subcommand)]
        which: ValidatorTx,
    },
}

#[derive(Subcommand)]
pub enum ValidatorTx {
    /// Vote to give the validator with this consensus key this power (0 removes it). More than
    /// two thirds of the epoch's validators voting the same within the epoch makes it hold from
    /// the start of the epoch after next (see `GET /validators`).
    #[command(
        after_help = "Examples:\n  pazar tx validator vote 3b6a27bc…(64 hex) --power 1 --from validator\n  \
                            pazar tx validator vote 3b6a27bc… --power 0 --from validator   # remove"
    )]
    Vote {
        /// The validator's ed25519 consensus key, 64 hex digits.
        key: pazar_node::genesis::ConsensusKey,
        #[arg(long)]
        power: u64,
    },
}

#[derive(Args)]
pub struct ProviderArgs {
    /// Where tenants reach the provider, e.g. https://provider.example.com:8443
    #[arg(long)]
    host_uri: String,
    /// SHA-256 of the provider's TLS certificate, hex (tenants pin it).
    #[arg(
        long,
        default_value = "0000000000000000000000000000000000000000000000000000000000000000"
    )]
    tls_fingerprint: String,
    /// Attribute key=value (repeatable), e.g. --attr region=eu-west
    #[arg(long = "attr")]
    attrs: Vec<String>,
    #[arg(long, default_value = "")]
    email: String,
    #[arg(long, default_value = "")]
    website: String,
}

#[derive(Subcommand)]
pub enum ProviderTx {
    /// Register the signer as a provider.
    #[command(
        after_help = "Examples:\n  pazar tx provider create --from provider --host-uri https://p.example:8443 --attr region=eu"
    )]
    Create(ProviderArgs),
    /// Replace the signer's provider record.
    #[command(
        after_help = "Examples:\n  pazar tx provider update --from provider --host-uri https://p.example:8443 --attr region=eu-west"
    )]
    Update(ProviderArgs),
    /// Remove the signer's provider record.
    #[command(after_help = "Examples:\n  pazar tx provider delete --from provider")]
    Delete,
}

#[derive(Subcommand)]
pub enum AuditTx {
    /// Vouch for attributes of a provider.
    #[command(after_help = "Examples:\n  pazar tx audit sign pazar1… --attr region=eu --attr tier=1 --from auditor")]
    Sign {
        provider: Address,
        #[arg(long = "attr", required = true)]
        attrs: Vec<String>,
    },
    /// Withdraw attributes one vouched for.
    #[command(after_help = "Examples:\n  pazar tx audit delete pazar1… --key tier --from auditor")]
    Delete {
        provider: Address,
        #[arg(long = "key", required = true)]
        keys: Vec<String>,
    },
}

#[derive(Subcommand)]
pub enum DeploymentTx {
    /// Create a deployment from a JSON file of group specs (SDL files come with `pazar deploy`).
    #[command(
        after_help = "Examples:\n  pazar tx deployment create --from alice --groups groups.json --deposit 5000000uusd --dseq 7"
    )]
    Create {
        /// JSON array of groups (see the GroupSpec schema in /openapi.json's examples).
        #[arg(long)]
        groups: PathBuf,
        #[arg(long)]
        deposit: Coin,
        /// Deployment sequence; default the current time in milliseconds.
        #[arg(long)]
        dseq: Option<u64>,
        /// Manifest version hash, hex; default the SHA-256 of the groups file.
        #[arg(long)]
        version: Option<String>,
        /// Accept the lowest bid automatically after this many blocks.
        #[arg(long)]
        auto_accept_after: Option<u32>,
    },
    /// Same as `pazar deployment deposit` (kept for old scripts).
    #[command(hide = true)]
    Deposit {
        /// The deployment, [OWNER/]DSEQ.
        deployment: Option<String>,
        amount: Option<Coin>,
        #[arg(long, hide = true)]
        dseq: Option<u64>,
        #[arg(long, hide = true)]
        owner: Option<Address>,
    },
    /// Set the deployment's version (the manifest's hash) on the ledger.
    #[command(after_help = "Examples:\n  pazar tx deployment update 7 --version 5f2c… --from alice")]
    Update {
        /// One's own deployment, [OWNER/]DSEQ.
        #[arg(required_unless_present = "dseq")]
        deployment: Option<String>,
        #[arg(long)]
        version: String,
        /// The deployment's DSEQ (old form of the argument above).
        #[arg(long, hide = true)]
        dseq: Option<u64>,
    },
    /// Same as `pazar deployment close` (kept for old scripts).
    #[command(hide = true)]
    Close {
        deployment: Option<String>,
        #[arg(long, hide = true)]
        dseq: Option<u64>,
    },
}

/// A group of one's own deployment: `[OWNER/]DSEQ/GSEQ` (or the old `--dseq N --gseq N`).
#[derive(Args)]
pub struct GroupArg {
    /// The group, [OWNER/]DSEQ/GSEQ.
    #[arg(required_unless_present_all = ["dseq", "gseq"])]
    group: Option<String>,
    #[arg(long, hide = true, requires = "gseq")]
    dseq: Option<u64>,
    #[arg(long, hide = true, requires = "dseq")]
    gseq: Option<u32>,
}

#[derive(Subcommand)]
pub enum GroupTx {
    /// Close the group: its order and lease end.
    #[command(after_help = "Examples:\n  pazar tx group close 7/1 --from alice")]
    Close(GroupArg),
    /// Pause the group: its lease ends, its order waits for `start`.
    #[command(after_help = "Examples:\n  pazar tx group pause 7/1 --from alice")]
    Pause(GroupArg),
    /// Start a paused (or expired) group again: a new order opens for bids.
    #[command(after_help = "Examples:\n  pazar tx group start 7/1 --from alice")]
    Start(GroupArg),
}

#[derive(Subcommand)]
pub enum BidTx {
    /// Bid on an order [OWNER/]DSEQ/GSEQ/OSEQ.
    #[command(
        after_help = "Examples:\n  pazar tx bid create pazar1…/7/1/1 --from provider --price 800uusd --deposit 500000uusd"
    )]
    Create {
        order: String,
        /// Price per block, e.g. `1.5uusd`.
        #[arg(long)]
        price: Price,
        #[arg(long)]
        deposit: Coin,
    },
    /// Close a bid [OWNER/]DSEQ/GSEQ/OSEQ/PROVIDER.
    #[command(after_help = "Examples:\n  pazar tx bid close pazar1…/7/1/1/provider --from provider")]
    Close { bid: String },
}

#[derive(Subcommand)]
pub enum LeaseTx {
    /// Accept a bid [OWNER/]DSEQ/GSEQ/OSEQ/PROVIDER, making it a lease.
    #[command(after_help = "Examples:\n  pazar tx lease create 7/1/1/provider --from alice")]
    Create { bid: String },
    /// Same as `pazar lease close` (kept for old scripts).
    #[command(hide = true)]
    Close {
        lease: String,
        /// owner, unstable, decommission, unspecified, manifest_timeout
        #[arg(long, default_value = "owner")]
        reason: String,
    },
    /// Withdraw what a lease [OWNER/]DSEQ/GSEQ/OSEQ/PROVIDER has earned (its provider).
    #[command(after_help = "Examples:\n  pazar tx lease withdraw pazar1…/7/1/1/provider --from provider")]
    Withdraw { lease: String },
}

fn parse_attrs(attrs: &[String]) -> Result<Vec<Attribute>> {
    attrs
        .iter()
        .map(|a| {
            let (k, v) = a
                .split_once('=')
                .ok_or_else(|| anyhow!("attribute {a:?} must be key=value"))?;
            Ok(Attribute::new(k, v))
        })
        .collect()
}

pub(super) fn parse_hash(s: &str) -> Result<Hash32> {
    hex::decode(s.trim_start_matches("0x"))
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| anyhow!("{s:?} is not a 32-byte hex hash"))
}

fn provider_msg(a: ProviderArgs, update: bool) -> Result<Msg> {
    let attributes = parse_attrs(&a.attrs)?;
    let tls_fingerprint = parse_hash(&a.tls_fingerprint)?;
    let info = ProviderInfo {
        email: a.email,
        website: a.website,
    };
    Ok(if update {
        Msg::UpdateProvider {
            host_uri: a.host_uri,
            tls_fingerprint,
            attributes,
            info,
        }
    } else {
        Msg::CreateProvider {
            host_uri: a.host_uri,
            tls_fingerprint,
            attributes,
            info,
        }
    })
}

/// Tells that a command is an old name for another, which scripts should move to.
fn deprecated(old: &str, new: &str) {
    tracing::warn!("`pazar {old}` is `pazar {new}`; this name is kept for old scripts and may go");
}

fn not_owner(what: String, owner: Address, sender: Address) -> anyhow::Error {
    Failure::new(
        Exit::Local,
        "not_owner",
        format!("{what} is {owner}'s: only its owner can sign this (the signer is {sender})"),
    )
    .into()
}

/// The DSEQ of one's own deployment named `[OWNER/]DSEQ` (or by the old `--dseq`).
pub fn own_deployment(ids: &Ids, sender: Address, id: Option<&str>, dseq: Option<u64>) -> Result<u64> {
    let id = match (id, dseq) {
        (Some(s), _) => ids.deployment(s)?,
        (None, Some(dseq)) => DeploymentId { owner: sender, dseq },
        (None, None) => {
            return Err(Failure::input(format!("name the deployment: {}", ids::Kind::Deployment.form())).into())
        }
    };
    if id.owner != sender {
        return Err(not_owner(
            format!("deployment {}/{}", id.owner, id.dseq),
            id.owner,
            sender,
        ));
    }
    Ok(id.dseq)
}

/// The DSEQ and GSEQ of a group of one's own deployment.
fn own_group(ids: &Ids, sender: Address, g: &GroupArg) -> Result<(u64, u32)> {
    let id = match (&g.group, g.dseq, g.gseq) {
        (Some(s), _, _) => ids.group(s)?,
        (None, Some(dseq), Some(gseq)) => GroupId {
            owner: sender,
            dseq,
            gseq,
        },
        _ => return Err(Failure::input(format!("name the group: {}", ids::Kind::Group.form())).into()),
    };
    if id.owner != sender {
        return Err(not_owner(
            format!("group {}/{}/{}", id.owner, id.dseq, id.gseq),
            id.owner,
            sender,
        ));
    }
    Ok((id.dseq, id.gseq))
}

fn tx_msg(home: &Path, cmd: TxCmd, sender: Address) -> Result<Msg> {
    let me = sender.to_string();
    let ids = Ids::new(home, Some(&me));
    Ok(match cmd {
        TxCmd::Send { to, amount } => Msg::Send {
            to: ids::address(home, &to)?,
            amount,
        },
        TxCmd::Validator {
            which: ValidatorTx::Vote { key, power },
        } => Msg::VoteValidator { key: key.0, power },
        TxCmd::Provider { which } => match which {
            ProviderTx::Create(a) => provider_msg(a, false)?,
            ProviderTx::Update(a) => provider_msg(a, true)?,
            ProviderTx::Delete => Msg::DeleteProvider,
        },
        TxCmd::Audit { which } => match which {
            AuditTx::Sign { provider, attrs } => Msg::SignProviderAttributes {
                provider,
                attributes: parse_attrs(&attrs)?,
            },
            AuditTx::Delete { provider, keys } => Msg::DeleteProviderAttributes { provider, keys },
        },
        TxCmd::Deployment { which } => match which {
            DeploymentTx::Create {
                groups,
                deposit,
                dseq,
                version,
                auto_accept_after,
            } => {
                let bytes =
                    std::fs::read(&groups).with_context(|| format!("cannot read groups file {}", groups.display()))?;
                let specs: Vec<GroupSpec> = serde_json::from_slice(&bytes)
                    .with_context(|| format!("{} is not a JSON array of group specs", groups.display()))?;
                let version = match version {
                    Some(v) => parse_hash(&v)?,
                    None => pazar_types::tx_hash(&bytes),
                };
                let dseq = dseq.unwrap_or_else(|| pazar_node::consensus::Clock::now_ms(&SystemClock));
                Msg::CreateDeployment {
                    dseq,
                    version,
                    groups: specs,
                    deposit,
                    auto_accept_after,
                }
            }
            DeploymentTx::Deposit {
                deployment,
                amount,
                dseq,
                owner,
            } => {
                deprecated("tx deployment deposit", "deployment deposit");
                // The old form put the amount first and the deployment in --dseq.
                let (id, amount) = match (deployment, amount, dseq) {
                    (Some(s), Some(amount), _) => (ids.deployment(&s)?, amount),
                    (Some(amount), None, Some(dseq)) => (
                        DeploymentId {
                            owner: owner.unwrap_or(sender),
                            dseq,
                        },
                        amount
                            .parse::<Coin>()
                            .map_err(|e| Failure::input(format!("amount {amount:?}: {e}")))?,
                    ),
                    _ => return Err(Failure::input("usage: pazar deployment deposit [OWNER/]DSEQ AMOUNT").into()),
                };
                Msg::DepositDeployment { id, amount }
            }
            DeploymentTx::Update {
                deployment,
                dseq,
                version,
            } => Msg::UpdateDeployment {
                dseq: own_deployment(&ids, sender, deployment.as_deref(), dseq)?,
                version: parse_hash(&version)?,
            },
            DeploymentTx::Close { deployment, dseq } => {
                deprecated("tx deployment close", "deployment close");
                Msg::CloseDeployment {
                    dseq: own_deployment(&ids, sender, deployment.as_deref(), dseq)?,
                }
            }
        },
        TxCmd::Group { which } => match which {
            GroupTx::Close(g) => {
                let (dseq, gseq) = own_group(&ids, sender, &g)?;
                Msg::CloseGroup { dseq, gseq }
            }
            GroupTx::Pause(g) => {
                let (dseq, gseq) = own_group(&ids, sender, &g)?;
                Msg::PauseGroup { dseq, gseq }
            }
            GroupTx::Start(g) => {
                let (dseq, gseq) = own_group(&ids, sender, &g)?;
                Msg::StartGroup { dseq, gseq }
            }
        },
        TxCmd::Bid { which } => match which {
            BidTx::Create { order, price, deposit } => Msg::CreateBid {
                order: ids.order(&order)?,
                price,
                deposit,
            },
            BidTx::Close { bid } => Msg::CloseBid { bid: ids.bid(&bid)? },
        },
        TxCmd::Lease { which } => match which {
            LeaseTx::Create { bid } => Msg::CreateLease { bid: ids.bid(&bid)? },
            LeaseTx::Close { lease, reason } => {
                deprecated("tx lease close", "lease close");
                Msg::CloseLease {
                    lease: ids.lease(&lease)?,
                    reason: close_reason(&reason)?,
                }
            }
            LeaseTx::Withdraw { lease } => Msg::WithdrawLease {
                lease: ids.lease(&lease)?,
            },
        },
        TxCmd::Withdraw { lease } => {
            deprecated("tx withdraw", "tx lease withdraw");
            Msg::WithdrawLease {
                lease: ids.lease(&lease)?,
            }
        }
    })
}

/// A lease close reason by its name (`owner`, `unstable`, `decommission`, …).
pub fn close_reason(reason: &str) -> Result<LeaseCloseReason> {
    serde_json::from_value(Value::String(reason.to_string()))
        .map_err(|_| Failure::input(format!("unknown close reason {reason:?}")).into())
}

/// A node client's error with a hint where one helps, kept typed for its exit code and code.
pub fn client_err(e: ClientError) -> anyhow::Error {
    let hint = match e.code() {
        Some(ErrorCode::StaleSequence) | Some(ErrorCode::SequenceTaken) => {
            "another transaction from this account is pending or was just committed; retry in a moment"
        }
        Some(ErrorCode::FeeUnpayable) => "fund the account first (on a devnet: POST /faucet)",
        _ => return anyhow::Error::new(e),
    };
    anyhow::Error::new(e).context(hint)
}

/// The failure of a transaction whose result the command printed: exit code 2.
pub fn tx_failed(r: &TxResult) -> anyhow::Error {
    Failure::reported(Exit::TxFailed, "tx_failed", tx_failure(r)).into()
}

/// Whether a submission ended well: committed with code 0, or (with `--no-wait`) pending.
pub fn tx_ok(r: &TxResult) -> bool {
    match &r.state {
        TxState::Committed { receipt, .. } => receipt.code == 0,
        TxState::Pending => true,
        TxState::Dropped { .. } | TxState::Refused { .. } => false,
    }
}

/// One line about a submission's outcome, for people.
pub fn tx_text(r: &TxResult) -> String {
    let hash = hex::encode(r.hash);
    match &r.state {
        TxState::Committed { height, receipt, .. } if receipt.code == 0 => {
            format!("committed at height {height} (tx {hash})")
        }
        TxState::Committed { height, receipt, .. } => format!(
            "committed at height {height} but failed: {} [{} {}] (tx {hash}; the fee was charged)",
            receipt.log, receipt.codespace, receipt.code
        ),
        TxState::Pending => format!("accepted, pending (tx {hash}); check with `pazar query tx {hash}`"),
        TxState::Dropped { reason } => format!("dropped from the mempool: {reason} (tx {hash})"),
        TxState::Refused { error } => format!("refused: {} [{}] (tx {hash})", error.message, error.code),
    }
}

/// Why a submission did not end well (the receipt's log, or the state), for an error message.
pub fn tx_failure(r: &TxResult) -> String {
    match &r.state {
        TxState::Committed { receipt, .. } => receipt.log.clone(),
        TxState::Pending => "pending".into(),
        TxState::Dropped { reason } => format!("dropped: {reason}"),
        TxState::Refused { error } => error.message.clone(),
    }
}

pub fn tx(cmd: TxCmd, opts: &ClientOpts, t: &TxOpts) -> Result<()> {
    let r = submit(opts, t, |home, sender| tx_msg(home, cmd, sender))?;
    emit(opts.output, &serde_json::to_value(&r)?, |_| tx_text(&r));
    if !tx_ok(&r) {
        return Err(tx_failed(&r));
    }
    Ok(())
}

/// Signs one message built by `build` (given the home and the signer's address) with `--from`,
/// submits it and, unless `--no-wait`, waits for its block.
pub fn submit(opts: &ClientOpts, t: &TxOpts, build: impl FnOnce(&Path, Address) -> Result<Msg>) -> Result<TxResult> {
    let home = home::resolve(opts.home.clone());
    let key = signer(opts, t)?;
    let msg = build(&home, key.address())?;
    submit_as(opts, t, &key, vec![msg])
}

/// How long a submission waits: for its block, or (`--no-wait`) only for the mempool.
pub fn submit_mode(t: &TxOpts) -> SubmitMode {
    if t.no_wait {
        SubmitMode::Sync
    } else {
        SubmitMode::Commit
    }
}

/// The `--from` key, unlocked.
pub fn signer(opts: &ClientOpts, t: &TxOpts) -> Result<SigningKey> {
    let home = home::resolve(opts.home.clone());
    let from = t
        .from
        .clone()
        .ok_or_else(|| anyhow!("--from KEY is required: the key that signs (see `pazar keys list`)"))?;
    Keyring::new(&home).signer(&from, &passphrase_prompt).map_err(key_err)
}

/// Signs `msgs` with `key` (fee: `--fee`, or the minimum per message), simulates (unless
/// `--no-simulate`) and refuses what would fail, submits, and waits for the block unless
/// `--no-wait`. With `--dry-run` it stops after the simulation with a [`DryRun`] error.
pub fn submit_as(opts: &ClientOpts, t: &TxOpts, key: &SigningKey, msgs: Vec<Msg>) -> Result<TxResult> {
    let home = home::resolve(opts.home.clone());
    let rpc = Rpc::new(&home::node_url(opts.node.clone(), &home));
    let chain_id = rpc.chain_id().map_err(client_err)?;
    let fee = match &t.fee {
        Some(f) => f.clone(),
        None => pazar_client::min_fee(&rpc, msgs.len()).map_err(client_err)?,
    };
    let bytes = pazar_client::sign(&rpc, &chain_id, key, msgs, fee, &t.memo).map_err(client_err)?;
    let hash = pazar_client::hash_hex(&bytes);
    if t.dry_run || !t.no_simulate {
        let result = rpc.simulate(&bytes).map_err(client_err)?;
        if t.dry_run {
            return Err(DryRun {
                what: "the transaction".into(),
                result,
            }
            .into());
        }
        if let Some(reason) = pazar_client::simulation_failure(&result) {
            return Err(Failure::new(
                Exit::TxFailed,
                "tx_failed",
                format!(
                    "not broadcast: the node says tx {hash} would fail: {reason} (nothing was charged; \
                     --no-simulate broadcasts anyway)"
                ),
            )
            .into());
        }
    }
    match submit_mode(t) {
        SubmitMode::Sync => rpc.submit(&bytes, SubmitMode::Sync).map_err(client_err),
        SubmitMode::Commit => with_spinner(&format!("waiting for {hash} to be committed"), || {
            rpc.submit(&bytes, SubmitMode::Commit)
        })
        .map_err(client_err),
    }
}
