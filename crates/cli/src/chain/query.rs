//! `pazar query`: state, lists and proofs, each proof checked before it is printed.

use std::path::Path;

use anyhow::{anyhow, Result};
use clap::Subcommand;
use serde::Serialize;
use serde_json::json;

use pazar_api::node::{BidPage, DeploymentPage, LeasePage, ListQuery, OrderPage, Page, Proven, ProviderPage};
use pazar_api::proof::Proof;
use pazar_api::state_key::{store_key, table_id};
use pazar_client::Rpc;
use pazar_types::Denom;

use crate::ids::{self, Ids};
use crate::{home, ClientOpts, Output};

use super::output::{emit, text_of, with_spinner};
use super::tx::{client_err, parse_hash};

#[derive(Subcommand)]
pub enum QueryCmd {
    /// The node: chain, height, latest block.
    #[command(
        after_help = "Examples:\n  pazar query status\n  pazar query status --node http://10.0.0.5:26657 -o json"
    )]
    Status,
    /// Sequence and balances of an address or a key.
    #[command(after_help = "Examples:\n  pazar query account alice\n  pazar query account pazar1… --prove")]
    Account {
        address: String,
        /// Verify the answer against the next block header's state root.
        #[arg(long)]
        prove: bool,
    },
    /// One balance of an address or a key.
    #[command(after_help = "Examples:\n  pazar query balance alice upzr --prove")]
    Balance {
        address: String,
        denom: Denom,
        #[arg(long)]
        prove: bool,
    },
    /// Every registered provider.
    #[command(after_help = "Examples:\n  pazar query providers -o json")]
    Providers,
    /// One provider: host URI, attributes, audits.
    #[command(after_help = "Examples:\n  pazar query provider provider\n  pazar query provider pazar1… --prove")]
    Provider {
        /// An address or a key name.
        address: String,
        #[arg(long)]
        prove: bool,
    },
    /// Deployments, every owner's or one's.
    #[command(after_help = "Examples:\n  pazar query deployments --owner alice")]
    Deployments {
        #[arg(long)]
        owner: Option<String>,
    },
    /// A deployment [OWNER/]DSEQ with groups, leases and escrow runway.
    #[command(
        after_help = "Examples:\n  pazar query deployment 12 --from alice\n  pazar query deployment alice/12 --prove"
    )]
    Deployment {
        id: String,
        #[arg(long)]
        prove: bool,
    },
    /// Escrow of deployment [OWNER/]DSEQ: balance, accrued, runway in blocks.
    #[command(after_help = "Examples:\n  pazar query escrow 12 --from alice\n  pazar query escrow pazar1…/12")]
    Escrow {
        id: String,
        #[arg(long)]
        prove: bool,
    },
    /// Orders, filtered by owner and state (open, active, closed).
    #[command(after_help = "Examples:\n  pazar query orders --state open\n  pazar query orders --owner alice -o json")]
    Orders {
        #[arg(long)]
        owner: Option<String>,
        #[arg(long)]
        state: Option<String>,
    },
    /// An order [OWNER/]DSEQ/GSEQ/OSEQ.
    #[command(
        after_help = "Examples:\n  pazar query order 12/1/1 --from alice\n  pazar query order alice/12/1/1 --prove"
    )]
    Order {
        id: String,
        #[arg(long)]
        prove: bool,
    },
    /// Bids, filtered by owner, provider and state.
    #[command(
        after_help = "Examples:\n  pazar query bids --owner alice --state open\n  pazar query bids --provider provider"
    )]
    Bids {
        #[arg(long)]
        owner: Option<String>,
        #[arg(long)]
        provider: Option<String>,
        #[arg(long)]
        state: Option<String>,
    },
    /// A bid [OWNER/]DSEQ/GSEQ/OSEQ/PROVIDER.
    #[command(after_help = "Examples:\n  pazar query bid 12/1/1/provider --from alice")]
    Bid {
        id: String,
        #[arg(long)]
        prove: bool,
    },
    /// Leases, filtered by owner, provider and state.
    #[command(
        after_help = "Examples:\n  pazar query leases --owner alice --state active\n  pazar query leases --provider provider -o json"
    )]
    Leases {
        #[arg(long)]
        owner: Option<String>,
        #[arg(long)]
        provider: Option<String>,
        #[arg(long)]
        state: Option<String>,
    },
    /// A lease [OWNER/]DSEQ/GSEQ/OSEQ/PROVIDER as the ledger records it (`pazar lease status`
    /// asks its provider what runs).
    #[command(
        after_help = "Examples:\n  pazar query lease 12/1/1/provider --from alice\n  pazar query lease pazar1…/12/1/1/pazar1… --prove"
    )]
    Lease {
        id: String,
        #[arg(long)]
        prove: bool,
    },
    /// A transaction by its hash: its state and receipt.
    #[command(after_help = "Examples:\n  pazar query tx 9f86d081884c7d65…")]
    Tx { hash: String },
    /// A block by height.
    #[command(after_help = "Examples:\n  pazar query block latest\n  pazar query block 42 -o json")]
    Block {
        /// A height or `latest`.
        height: String,
    },
    /// The chain's parameters (denominations, fees, timeouts, take rates).
    #[command(after_help = "Examples:\n  pazar query params")]
    Params,
    /// Tokens in existence, per denomination.
    #[command(after_help = "Examples:\n  pazar query supply")]
    Supply,
}

/// A list query filtered by owner and provider (key names or addresses) and state.
fn party_query(
    home: &Path,
    owner: Option<String>,
    provider: Option<String>,
    state: Option<String>,
) -> Result<ListQuery> {
    Ok(ListQuery {
        owner: owner.map(|o| ids::address(home, &o)).transpose()?,
        provider: provider.map(|o| ids::address(home, &o)).transpose()?,
        state,
        ..ListQuery::default()
    })
}

/// A proof as printed once checked against the next block's header.
#[derive(Serialize)]
struct CheckedProof<'a> {
    #[serde(flatten)]
    proof: &'a Proof,
    verified: bool,
}

/// A single-object answer as printed: the object, its height and its checked proof.
#[derive(Serialize)]
struct ProvenOut<'a, T> {
    #[serde(flatten)]
    item: &'a T,
    height: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    proof: Option<CheckedProof<'a>>,
}

/// Prints a single-object answer; with a store `key` its proof is first verified against the
/// header that commits to it (a failed or missing proof is an error, nothing is printed).
fn show_proven<T: Serialize>(rpc: &Rpc, out: Output, answer: Proven<T>, key: Option<Vec<u8>>) -> Result<()> {
    let proof = match key {
        None => None,
        Some(key) => {
            with_spinner("verifying the proof against the next block header", || {
                rpc.verify_proven(&answer, &key)
            })
            .map_err(client_err)?;
            answer
                .proof
                .as_ref()
                .map(|proof| CheckedProof { proof, verified: true })
        }
    };
    let v = serde_json::to_value(ProvenOut {
        item: &answer.item,
        height: answer.height,
        proof,
    })?;
    emit(out, &v, text_of);
    Ok(())
}

/// Prints every item of a list (all pages read, so nothing is left out unsaid) and the count.
fn show_list<P>(rpc: &Rpc, out: Output, query: &ListQuery) -> Result<()>
where
    P: Page + serde::de::DeserializeOwned,
    P::Item: Serialize,
{
    let items = rpc.list_all::<P>(query).map_err(client_err)?;
    let v = json!({ P::FIELD: items, "count": items.len() });
    emit(out, &v, text_of);
    Ok(())
}

fn show<T: Serialize>(out: Output, answer: &T) -> Result<()> {
    emit(out, &serde_json::to_value(answer)?, text_of);
    Ok(())
}

pub fn query(cmd: QueryCmd, opts: &ClientOpts, from: Option<&str>) -> Result<()> {
    let home = home::resolve(opts.home.clone());
    let rpc = Rpc::new(&home::node_url(opts.node.clone(), &home));
    let ids = Ids::new(&home, from);
    let out = opts.output;
    let key = |prove: bool, table: u8, k: &dyn Fn(u8) -> Vec<u8>| prove.then(|| k(table));
    match cmd {
        QueryCmd::Status => show(out, &rpc.status().map_err(client_err)?),
        QueryCmd::Account { address, prove } => {
            let a = ids::address(&home, &address)?;
            let answer = rpc.account(&a, prove).map_err(client_err)?;
            show_proven(&rpc, out, answer, key(prove, table_id::ACCOUNTS, &|t| store_key(t, &a)))
        }
        QueryCmd::Balance { address, denom, prove } => {
            let a = ids::address(&home, &address)?;
            let answer = rpc.balance(&a, &denom, prove).map_err(client_err)?;
            let k = key(prove, table_id::BALANCES, &|t| store_key(t, &(a, denom.clone())));
            show_proven(&rpc, out, answer, k)
        }
        QueryCmd::Providers => show_list::<ProviderPage>(&rpc, out, &ListQuery::default()),
        QueryCmd::Provider { address, prove } => {
            let address = ids::address(&home, &address)?;
            let answer = rpc.provider(&address, prove).map_err(client_err)?;
            let k = key(prove, table_id::PROVIDERS, &|t| store_key(t, &address));
            show_proven(&rpc, out, answer, k)
        }
        QueryCmd::Deployments { owner } => {
            let q = party_query(&home, owner, None, None)?;
            show_list::<DeploymentPage>(&rpc, out, &q)
        }
        QueryCmd::Deployment { id, prove } => {
            let id = ids.deployment(&id)?;
            let answer = rpc.deployment(&id, prove).map_err(client_err)?;
            let k = key(prove, table_id::DEPLOYMENTS, &|t| store_key(t, &id));
            show_proven(&rpc, out, answer, k)
        }
        QueryCmd::Escrow { id, prove } => {
            let id = ids.deployment(&id)?;
            let answer = rpc.escrow(&id, prove).map_err(client_err)?;
            let k = key(prove, table_id::ESCROW, &|t| store_key(t, &id));
            show_proven(&rpc, out, answer, k)
        }
        QueryCmd::Orders { owner, state } => {
            let q = party_query(&home, owner, None, state)?;
            show_list::<OrderPage>(&rpc, out, &q)
        }
        QueryCmd::Order { id, prove } => {
            let o = ids.order(&id)?;
            let answer = rpc.order(&o, prove).map_err(client_err)?;
            let k = key(prove, table_id::ORDERS, &|t| store_key(t, &o));
            show_proven(&rpc, out, answer, k)
        }
        QueryCmd::Bids { owner, provider, state } => {
            let q = party_query(&home, owner, provider, state)?;
            show_list::<BidPage>(&rpc, out, &q)
        }
        QueryCmd::Bid { id, prove } => {
            let b = ids.bid(&id)?;
            let answer = rpc.bid(&b, prove).map_err(client_err)?;
            let k = key(prove, table_id::BIDS, &|t| store_key(t, &b));
            show_proven(&rpc, out, answer, k)
        }
        QueryCmd::Leases { owner, provider, state } => {
            let q = party_query(&home, owner, provider, state)?;
            show_list::<LeasePage>(&rpc, out, &q)
        }
        QueryCmd::Lease { id, prove } => {
            let b = ids.lease(&id)?;
            let answer = rpc.lease(&b, prove).map_err(client_err)?;
            let k = key(prove, table_id::LEASES, &|t| store_key(t, &b));
            show_proven(&rpc, out, answer, k)
        }
        QueryCmd::Tx { hash } => {
            let h = parse_hash(&hash)?;
            show(out, &rpc.tx(&h).map_err(client_err)?)
        }
        QueryCmd::Block { height } => {
            let b = if height == "latest" {
                rpc.latest_block()
            } else {
                let h: u64 = height
                    .parse()
                    .map_err(|_| anyhow!("block {height:?} is neither a height nor `latest`"))?;
                rpc.block(h)
            };
            show(out, &b.map_err(client_err)?)
        }
        QueryCmd::Params => show(out, &rpc.params().map_err(client_err)?),
        QueryCmd::Supply => show(out, &rpc.supply().map_err(client_err)?),
    }
}
