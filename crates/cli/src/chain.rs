//! `pazar devnet`, `node start`, `keys`, `tx` and `query`.

use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, Subcommand};
use serde::Serialize;
use serde_json::{json, Value};

use pazar_api::node::{
    BidPage, DeploymentPage, LeasePage, ListQuery, OrderPage, Page, Proven, ProviderPage, TxResult, TxState,
};
use pazar_api::proof::Proof;
use pazar_api::request::SubmitMode;
use pazar_api::state_key::{store_key, table_id};
use pazar_api::ErrorCode;
use pazar_client::deploy::DeployError;
use pazar_client::keyring::{Backend, Keyring};
use pazar_client::{ClientError, DryRun, Rpc};
use pazar_node::consensus::{Solo, SystemClock};
use pazar_node::genesis::GenesisOnDisk;
use pazar_node::Node;
use pazar_store::Store;
use pazar_types::market::{GroupId, GroupSpec, LeaseCloseReason};
use pazar_types::{
    Address, Attribute, Coin, Denom, DeploymentId, Hash32, KeyScheme, Msg, Price, ProviderInfo, SigningKey,
};

use crate::failure::{Exit, Failure};
use crate::ids::{self, Ids};
use crate::{home, progress};
use crate::{ClientOpts, Output};

// ---------------------------------------------------------------------------------------------
// Running a node.

pub fn devnet(home: PathBuf, config: Option<PathBuf>, rpc_listen: &str, block_time_ms: u64, reset: bool) -> Result<()> {
    if reset && home.join("genesis.json").exists() {
        for p in ["data", "keys"] {
            let _ = std::fs::remove_dir_all(home.join(p));
        }
        for p in ["genesis.json", "node.toml", "rpc.addr"] {
            let _ = std::fs::remove_file(home.join(p));
        }
    }
    let fresh = !home::genesis_path(&home).exists();
    if fresh {
        home::init_devnet(&home, rpc_listen, block_time_ms)?;
    }
    node_start(home, config, Some(rpc_listen.to_string()), None, true)
}

pub fn passphrase_prompt(name: &str, confirm: bool) -> Option<String> {
    if let Ok(p) = std::env::var("PAZAR_KEYRING_PASSPHRASE") {
        return Some(p);
    }
    if !std::io::stdin().is_terminal() {
        return None;
    }
    let p = rpassword::prompt_password(format!("passphrase for key {name}: ")).ok()?;
    if confirm {
        let again = rpassword::prompt_password("repeat passphrase: ").ok()?;
        if again != p {
            eprintln!("passphrases differ");
            return None;
        }
    }
    Some(p)
}

pub fn node_start(
    home: PathBuf,
    config_file: Option<PathBuf>,
    rpc_listen: Option<String>,
    block_time_ms: Option<u64>,
    devnet_banner: bool,
) -> Result<()> {
    // The file, then the flags given on the command line over it.
    let mut config = home::read_config(&home, config_file.as_deref())?;
    if let Some(l) = rpc_listen {
        config.rpc_listen = l;
    }
    if let Some(b) = block_time_ms {
        config.block_time_ms = b;
    }
    let (node_config, validator) = home::node_config(&home, &config, &passphrase_prompt)?;
    std::fs::create_dir_all(home.join("data"))?;
    let db = home::db_path(&home);
    let store =
        Store::open(&db, node_config.store).with_context(|| format!("cannot open the store {}", db.display()))?;
    let genesis = GenesisOnDisk::open_with_record(&home::genesis_path(&home), Node::genesis_record(&store)?.as_ref())?;
    if !genesis
        .header
        .validators
        .iter()
        .any(|v| v.address == validator.address())
    {
        bail!(
            "key {:?} ({}) is not a validator in {}",
            config.validator_key,
            validator.address(),
            home::genesis_path(&home).display()
        );
    }
    if genesis.header.validators.len() != 1 {
        bail!(
            "this build runs single-validator chains; the genesis lists {}",
            genesis.header.validators.len()
        );
    }
    let block_time = node_config.block_time;
    let node = Node::with_store(store, &genesis, validator.address(), node_config)
        .with_context(|| format!("cannot open the node in {}", home.display()))?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&config.rpc_listen)
            .await
            .with_context(|| format!("cannot listen on {} (is another node running?)", config.rpc_listen))?;
        let addr = listener.local_addr()?;
        // Readers poll this file for the address: they must never see half of it.
        pazar_client::files::write_atomic(&home::rpc_addr_path(&home), format!("http://{addr}\n").as_bytes(), 0o644)?;
        let head = node.head();
        if devnet_banner {
            print_banner(&home, &format!("http://{addr}"), node.chain_id(), head.height);
        }
        tracing::info!(
            chain = node.chain_id(),
            height = head.height,
            "node serving RPC on http://{addr}"
        );
        let (tx, rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
            }
            let _ = tx.send(true);
        });
        let engine = Solo {
            block_time,
            clock: Arc::new(SystemClock),
        };
        pazar_node::run(node, engine, listener, rx).await?;
        tracing::info!("node stopped");
        Ok::<(), anyhow::Error>(())
    })
}

fn print_banner(home: &Path, url: &str, chain: &str, height: u64) {
    println!("Pazar devnet {chain} (height {height})");
    println!("  RPC:      {url}   (API: {url}/openapi.json, metrics: {url}/metrics, events: {url}/events)");
    println!("  home:     {}", home.display());
    if let Ok(keys) = Keyring::new(home).list() {
        println!("  keys (test keyring, funded):");
        for k in keys {
            println!("    {:<10} {:<8} {}", k.name, scheme_name(k.scheme), k.address);
        }
    }
    println!("  try:      pazar query account <address> --home {}", home.display());
    println!("Press Ctrl-C to stop; run `pazar devnet` again to resume from the last block.");
    let _ = std::io::stdout().flush();
}

fn scheme_name(s: KeyScheme) -> &'static str {
    match s {
        KeyScheme::Ed25519 => "ed25519",
        KeyScheme::Eth => "eth",
    }
}

// ---------------------------------------------------------------------------------------------
// Output.

fn emit(out: Output, v: &Value, text: impl FnOnce(&Value) -> String) {
    match out {
        Output::Json => println!("{}", serde_json::to_string_pretty(v).unwrap_or_default()),
        Output::Text => println!("{}", text(v)),
    }
}

/// Indented `key: value` lines of a JSON value, for people.
fn text_of(v: &Value) -> String {
    fn walk(v: &Value, indent: usize, out: &mut String) {
        let pad = " ".repeat(indent);
        match v {
            Value::Object(m) => {
                for (k, x) in m {
                    match x {
                        Value::Object(_) | Value::Array(_) if !is_empty(x) => {
                            out.push_str(&format!("{pad}{k}:\n"));
                            walk(x, indent + 2, out);
                        }
                        _ => out.push_str(&format!("{pad}{k}: {}\n", scalar(x))),
                    }
                }
            }
            Value::Array(a) => {
                for x in a {
                    match x {
                        Value::Object(_) | Value::Array(_) => {
                            out.push_str(&format!("{pad}-\n"));
                            walk(x, indent + 2, out);
                        }
                        _ => out.push_str(&format!("{pad}- {}\n", scalar(x))),
                    }
                }
            }
            x => out.push_str(&format!("{pad}{}\n", scalar(x))),
        }
    }
    fn is_empty(v: &Value) -> bool {
        match v {
            Value::Object(m) => m.is_empty(),
            Value::Array(a) => a.is_empty(),
            _ => false,
        }
    }
    fn scalar(v: &Value) -> String {
        match v {
            Value::String(s) => s.clone(),
            Value::Null => "-".into(),
            Value::Array(_) => "[]".into(),
            Value::Object(_) => "{}".into(),
            x => x.to_string(),
        }
    }
    let mut s = String::new();
    walk(v, 0, &mut s);
    s.trim_end().to_string()
}

/// A spinner on stderr while a closure runs (see `progress`: a line when stderr is no
/// terminal, nothing under `-o json`).
pub fn with_spinner<T>(msg: &str, f: impl FnOnce() -> T) -> T {
    progress::with_spinner(msg, f)
}

// ---------------------------------------------------------------------------------------------
// Keys.

#[derive(Subcommand)]
pub enum KeysCmd {
    /// Create a new key from a fresh mnemonic (shown once).
    #[command(
        after_help = "Examples:\n  pazar keys add alice\n  pazar keys add bob --scheme eth\n  \
                            pazar keys add dev --keyring-backend test -o json"
    )]
    Add {
        name: String,
        #[arg(long, default_value = "ed25519")]
        scheme: KeyScheme,
        /// `file` (encrypted, default) or `test` (clear text, throwaway devnet keys only).
        #[arg(long, default_value = "file")]
        keyring_backend: Backend,
    },
    /// Import a key from a BIP-39 mnemonic (MetaMask's phrase works with --scheme eth): typed at
    /// a prompt that does not echo it, or read from stdin when stdin is not a terminal. Never
    /// give it as an argument: it would stay in the shell's history and show in `ps`.
    #[command(
        after_help = "Examples:\n  pazar keys import alice                      # prompts, without echo\n  \
                            pazar keys import metamask --scheme eth --index 1\n  \
                            pazar keys import ci-key < mnemonic.txt      # non-interactive"
    )]
    Import {
        name: String,
        #[arg(long, default_value = "ed25519")]
        scheme: KeyScheme,
        /// Account index in the derivation path.
        #[arg(long, default_value_t = 0)]
        index: u32,
        #[arg(long, default_value = "file")]
        keyring_backend: Backend,
        /// Refused: the words of a mnemonic given on the command line.
        #[arg(hide = true, num_args = 0..)]
        words: Vec<String>,
    },
    /// Every key: name, scheme, address.
    #[command(after_help = "Examples:\n  pazar keys list\n  pazar keys list -o json")]
    List,
    /// A key's address.
    #[command(after_help = "Examples:\n  pazar keys show alice\n  pazar keys show alice -o json")]
    Show { name: String },
    /// Print the secret key and mnemonic. Anyone who sees them controls the account.
    #[command(after_help = "Examples:\n  pazar keys export alice --unsafe-show-secret")]
    Export {
        name: String,
        /// Required: confirms that the secret may be printed.
        #[arg(long)]
        unsafe_show_secret: bool,
    },
    /// Delete a key file (the account and its tokens stay on the chain).
    #[command(after_help = "Examples:\n  pazar keys delete old-key")]
    Delete { name: String },
}

/// Longest mnemonic read from stdin (24 words of at most 8 letters are 215 bytes).
const MAX_MNEMONIC: u64 = 4096;

/// The mnemonic of `keys import`: from a prompt without echo when stdin is a terminal, else
/// from stdin; words on the command line are refused.
fn read_mnemonic(words: &[String]) -> Result<String> {
    if !words.is_empty() {
        return Err(Failure::input(
            "a mnemonic given on the command line stays in the shell's history and shows in `ps`: \
             run `pazar keys import NAME` and type it at the prompt (not echoed), or pipe it on stdin \
             (`pazar keys import NAME < mnemonic.txt`)",
        )
        .into());
    }
    let raw = if std::io::stdin().is_terminal() {
        rpassword::prompt_password("mnemonic (not echoed): ").context("reading the mnemonic from the terminal")?
    } else {
        let mut raw = String::new();
        std::io::Read::take(std::io::stdin().lock(), MAX_MNEMONIC)
            .read_to_string(&mut raw)
            .context("reading the mnemonic from stdin")?;
        raw
    };
    let phrase = raw.split_whitespace().collect::<Vec<_>>().join(" ");
    if phrase.is_empty() {
        return Err(Failure::input("no mnemonic: type it at the prompt or pipe it on stdin").into());
    }
    Ok(phrase)
}

/// A keyring error, kept typed so it is reported with the code `key`.
pub fn key_err(e: pazar_client::keyring::KeyringError) -> anyhow::Error {
    anyhow::Error::new(e)
}

pub fn keys(cmd: KeysCmd, opts: &ClientOpts) -> Result<()> {
    let home = home::resolve(opts.home.clone());
    let kr = Keyring::new(&home);
    match cmd {
        KeysCmd::Add {
            name,
            scheme,
            keyring_backend,
        } => {
            let phrase = pazar_types::keys::generate_mnemonic(&mut rand_core::OsRng);
            let key = SigningKey::from_mnemonic(scheme, &phrase, 0).map_err(|e| anyhow!("{e}"))?;
            let info = kr
                .add(&name, &key, Some(&phrase), 0, keyring_backend, &passphrase_prompt)
                .map_err(key_err)?;
            let v = json!({"key": info, "mnemonic": phrase});
            emit(opts.output, &v, |_| {
                format!(
                    "added {} ({}) {}\n\nWrite down this mnemonic; it is the only way to recover the key:\n\n{phrase}",
                    info.name,
                    scheme_name(info.scheme),
                    info.address
                )
            });
        }
        KeysCmd::Import {
            name,
            scheme,
            index,
            keyring_backend,
            words,
        } => {
            let phrase = read_mnemonic(&words)?;
            let key = SigningKey::from_mnemonic(scheme, &phrase, index).map_err(|e| anyhow!("{e}"))?;
            let info = kr
                .add(&name, &key, Some(&phrase), index, keyring_backend, &passphrase_prompt)
                .map_err(key_err)?;
            let v = json!({ "key": info });
            emit(opts.output, &v, |_| format!("imported {} {}", info.name, info.address));
        }
        KeysCmd::List => {
            let list = kr.list().map_err(key_err)?;
            let v = json!({ "keys": list });
            emit(opts.output, &v, |_| {
                list.iter()
                    .map(|k| format!("{:<16} {:<8} {}", k.name, scheme_name(k.scheme), k.address))
                    .collect::<Vec<_>>()
                    .join("\n")
            });
        }
        KeysCmd::Show { name } => {
            let info = kr.show(&name).map_err(key_err)?;
            emit(opts.output, &json!(info), |_| info.address.to_string());
        }
        KeysCmd::Export {
            name,
            unsafe_show_secret,
        } => {
            if !unsafe_show_secret {
                bail!("export prints the secret key; add --unsafe-show-secret to confirm");
            }
            let e = kr.export(&name, &passphrase_prompt).map_err(key_err)?;
            emit(opts.output, &json!(e), text_of);
        }
        KeysCmd::Delete { name } => {
            let info = kr.delete(&name).map_err(key_err)?;
            emit(opts.output, &json!({ "deleted": info }), |_| format!("deleted {name}"));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Transactions.

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

fn parse_hash(s: &str) -> Result<Hash32> {
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

// ---------------------------------------------------------------------------------------------
// Queries.

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
