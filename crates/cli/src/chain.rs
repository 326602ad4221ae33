//! `pazar devnet`, `node start`, `keys`, `tx` and `query`.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

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
use pazar_client::keyring::{Backend, Keyring};
use pazar_client::{ClientError, Rpc};
use pazar_node::consensus::{Solo, SystemClock};
use pazar_node::genesis::GenesisOnDisk;
use pazar_node::Node;
use pazar_store::Store;
use pazar_types::market::{GroupSpec, LeaseCloseReason};
use pazar_types::{
    Address, Attribute, BidId, Coin, Denom, DeploymentId, Hash32, KeyScheme, Msg, OrderId, Price, ProviderInfo,
    SigningKey,
};

use crate::home;
use crate::{ClientOpts, Output};

// ---------------------------------------------------------------------------------------------
// Running a node.

pub fn devnet(home: PathBuf, rpc_listen: &str, block_time_ms: u64, reset: bool) -> Result<()> {
    if reset && home.join("genesis.json").exists() {
        for p in ["data", "keys"] {
            let _ = std::fs::remove_dir_all(home.join(p));
        }
        for p in ["genesis.json", "config.json", "rpc.addr"] {
            let _ = std::fs::remove_file(home.join(p));
        }
    }
    let fresh = !home::genesis_path(&home).exists();
    if fresh {
        home::init_devnet(&home, rpc_listen, block_time_ms)?;
    }
    node_start(home, Some(rpc_listen.to_string()), true)
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

pub fn node_start(home: PathBuf, rpc_listen: Option<String>, devnet_banner: bool) -> Result<()> {
    let mut config = home::read_config(&home)?;
    if let Some(l) = rpc_listen {
        config.rpc_listen = l;
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
        } else {
            println!(
                "node {} at height {} serving RPC on http://{addr}",
                node.chain_id(),
                head.height
            );
        }
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
        println!("node stopped");
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

/// A spinner on stderr while a closure runs, only when stderr is a terminal.
pub fn with_spinner<T>(msg: &str, f: impl FnOnce() -> T) -> T {
    if !std::io::stderr().is_terminal() {
        return f();
    }
    let done = Arc::new(AtomicBool::new(false));
    let d = done.clone();
    let msg = msg.to_string();
    let h = std::thread::spawn(move || {
        let frames = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];
        let mut i = 0;
        while !d.load(Ordering::Relaxed) {
            eprint!("\r{} {msg}", frames[i % frames.len()]);
            let _ = std::io::stderr().flush();
            i += 1;
            std::thread::sleep(Duration::from_millis(80));
        }
        eprint!("\r\x1b[2K");
    });
    let r = f();
    done.store(true, Ordering::Relaxed);
    let _ = h.join();
    r
}

// ---------------------------------------------------------------------------------------------
// Keys.

#[derive(Subcommand)]
pub enum KeysCmd {
    /// Create a new key from a fresh mnemonic (shown once).
    Add {
        name: String,
        #[arg(long, default_value = "ed25519")]
        scheme: KeyScheme,
        /// `file` (encrypted, default) or `test` (clear text, throwaway devnet keys only).
        #[arg(long, default_value = "file")]
        keyring_backend: Backend,
    },
    /// Import a key from a BIP-39 mnemonic read from stdin (MetaMask's phrase works with --scheme eth).
    Import {
        name: String,
        #[arg(long, default_value = "ed25519")]
        scheme: KeyScheme,
        /// Account index in the derivation path.
        #[arg(long, default_value_t = 0)]
        index: u32,
        #[arg(long, default_value = "file")]
        keyring_backend: Backend,
    },
    List,
    Show {
        name: String,
    },
    /// Print the secret key and mnemonic. Anyone who sees them controls the account.
    Export {
        name: String,
        /// Required: confirms that the secret may be printed.
        #[arg(long)]
        unsafe_show_secret: bool,
    },
    Delete {
        name: String,
    },
}

pub fn key_err(e: pazar_client::keyring::KeyringError) -> anyhow::Error {
    anyhow!("{e}")
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
        } => {
            let mut phrase = String::new();
            std::io::stdin()
                .read_line(&mut phrase)
                .context("reading the mnemonic from stdin")?;
            let phrase = phrase.split_whitespace().collect::<Vec<_>>().join(" ");
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
}

#[derive(Subcommand)]
pub enum TxCmd {
    /// Send tokens to an address or a key name.
    Send { to: String, amount: Coin },
    Provider {
        #[command(subcommand)]
        which: ProviderTx,
    },
    /// Auditors sign (or remove) provider attributes.
    Audit {
        #[command(subcommand)]
        which: AuditTx,
    },
    Deployment {
        #[command(subcommand)]
        which: DeploymentTx,
    },
    Group {
        #[command(subcommand)]
        which: GroupTx,
    },
    Bid {
        #[command(subcommand)]
        which: BidTx,
    },
    Lease {
        #[command(subcommand)]
        which: LeaseTx,
    },
    /// Withdraw what a lease has earned (provider) — same as `lease withdraw`.
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
    Create(ProviderArgs),
    Update(ProviderArgs),
    Delete,
}

#[derive(Subcommand)]
pub enum AuditTx {
    Sign {
        provider: Address,
        #[arg(long = "attr", required = true)]
        attrs: Vec<String>,
    },
    Delete {
        provider: Address,
        #[arg(long = "key", required = true)]
        keys: Vec<String>,
    },
}

#[derive(Subcommand)]
pub enum DeploymentTx {
    /// Create a deployment from a JSON file of group specs (SDL files come with `pazar deploy`).
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
    Deposit {
        #[arg(long)]
        dseq: u64,
        amount: Coin,
        /// Owner of the deployment when depositing into someone else's.
        #[arg(long)]
        owner: Option<Address>,
    },
    Update {
        #[arg(long)]
        dseq: u64,
        #[arg(long)]
        version: String,
    },
    Close {
        #[arg(long)]
        dseq: u64,
    },
}

#[derive(Subcommand)]
pub enum GroupTx {
    Close {
        #[arg(long)]
        dseq: u64,
        #[arg(long)]
        gseq: u32,
    },
    Pause {
        #[arg(long)]
        dseq: u64,
        #[arg(long)]
        gseq: u32,
    },
    Start {
        #[arg(long)]
        dseq: u64,
        #[arg(long)]
        gseq: u32,
    },
}

#[derive(Subcommand)]
pub enum BidTx {
    /// Bid on an order OWNER/DSEQ/GSEQ/OSEQ.
    Create {
        order: String,
        /// Price per block, e.g. `1.5uusd`.
        #[arg(long)]
        price: Price,
        #[arg(long)]
        deposit: Coin,
    },
    /// Close a bid OWNER/DSEQ/GSEQ/OSEQ/PROVIDER.
    Close { bid: String },
}

#[derive(Subcommand)]
pub enum LeaseTx {
    /// Accept a bid OWNER/DSEQ/GSEQ/OSEQ/PROVIDER, making it a lease.
    Create {
        bid: String,
    },
    Close {
        lease: String,
        /// owner, unstable, decommission, unspecified, manifest_timeout
        #[arg(long, default_value = "owner")]
        reason: String,
    },
    Withdraw {
        lease: String,
    },
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

fn parse_order(s: &str) -> Result<OrderId> {
    let p: Vec<&str> = s.split('/').collect();
    let [owner, dseq, gseq, oseq] = p.as_slice() else {
        bail!("order id {s:?} must be OWNER/DSEQ/GSEQ/OSEQ");
    };
    Ok(OrderId {
        owner: owner.parse().map_err(|e| anyhow!("order owner: {e}"))?,
        dseq: dseq.parse().context("order dseq")?,
        gseq: gseq.parse().context("order gseq")?,
        oseq: oseq.parse().context("order oseq")?,
    })
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

fn tx_msg(home: &Path, cmd: TxCmd, sender: Address) -> Result<Msg> {
    Ok(match cmd {
        TxCmd::Send { to, amount } => Msg::Send {
            to: address_arg(home, &to)?,
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
            DeploymentTx::Deposit { dseq, amount, owner } => Msg::DepositDeployment {
                id: DeploymentId {
                    owner: owner.unwrap_or(sender),
                    dseq,
                },
                amount,
            },
            DeploymentTx::Update { dseq, version } => Msg::UpdateDeployment {
                dseq,
                version: parse_hash(&version)?,
            },
            DeploymentTx::Close { dseq } => Msg::CloseDeployment { dseq },
        },
        TxCmd::Group { which } => match which {
            GroupTx::Close { dseq, gseq } => Msg::CloseGroup { dseq, gseq },
            GroupTx::Pause { dseq, gseq } => Msg::PauseGroup { dseq, gseq },
            GroupTx::Start { dseq, gseq } => Msg::StartGroup { dseq, gseq },
        },
        TxCmd::Bid { which } => match which {
            BidTx::Create { order, price, deposit } => Msg::CreateBid {
                order: parse_order(&order)?,
                price,
                deposit,
            },
            BidTx::Close { bid } => Msg::CloseBid {
                bid: bid.parse::<BidId>()?,
            },
        },
        TxCmd::Lease { which } => match which {
            LeaseTx::Create { bid } => Msg::CreateLease {
                bid: bid.parse::<BidId>()?,
            },
            LeaseTx::Close { lease, reason } => {
                let reason: LeaseCloseReason = serde_json::from_value(Value::String(reason.clone()))
                    .map_err(|_| anyhow!("unknown close reason {reason:?}"))?;
                Msg::CloseLease {
                    lease: lease.parse::<BidId>()?,
                    reason,
                }
            }
            LeaseTx::Withdraw { lease } => Msg::WithdrawLease {
                lease: lease.parse::<BidId>()?,
            },
        },
        TxCmd::Withdraw { lease } => Msg::WithdrawLease {
            lease: lease.parse::<BidId>()?,
        },
    })
}

pub fn client_err(e: ClientError) -> anyhow::Error {
    match e.code() {
        Some(ErrorCode::StaleSequence) | Some(ErrorCode::SequenceTaken) => {
            anyhow!("{e}\nanother transaction from this account is pending or was just committed; retry in a moment")
        }
        Some(ErrorCode::FeeUnpayable) => anyhow!("{e}\nfund the account first (on a devnet: POST /faucet)"),
        _ => anyhow!("{e}"),
    }
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
        std::process::exit(2);
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

/// Signs `msgs` with `key` (fee: `--fee`, or the minimum per message), submits, and waits for
/// the block unless `--no-wait`.
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
    Status,
    /// Sequence and balances.
    Account {
        address: String,
        #[arg(long)]
        prove: bool,
    },
    Balance {
        address: String,
        denom: Denom,
        #[arg(long)]
        prove: bool,
    },
    Providers,
    Provider {
        address: Address,
        #[arg(long)]
        prove: bool,
    },
    Deployments {
        #[arg(long)]
        owner: Option<String>,
    },
    /// A deployment OWNER/DSEQ with groups, leases and escrow runway.
    Deployment {
        id: String,
        #[arg(long)]
        prove: bool,
    },
    /// Escrow of deployment OWNER/DSEQ: balance, accrued, runway in blocks.
    Escrow {
        id: String,
        #[arg(long)]
        prove: bool,
    },
    Orders {
        #[arg(long)]
        owner: Option<String>,
        #[arg(long)]
        state: Option<String>,
    },
    Order {
        id: String,
        #[arg(long)]
        prove: bool,
    },
    Bids {
        #[arg(long)]
        owner: Option<String>,
        #[arg(long)]
        provider: Option<String>,
        #[arg(long)]
        state: Option<String>,
    },
    Bid {
        id: String,
        #[arg(long)]
        prove: bool,
    },
    Leases {
        #[arg(long)]
        owner: Option<String>,
        #[arg(long)]
        provider: Option<String>,
        #[arg(long)]
        state: Option<String>,
    },
    Lease {
        id: String,
        #[arg(long)]
        prove: bool,
    },
    Tx {
        hash: String,
    },
    Block {
        /// A height or `latest`.
        height: String,
    },
    Params,
    Supply,
}

/// Resolves a key name to its address, so `query account alice` works.
fn address_arg(home: &Path, s: &str) -> Result<Address> {
    if let Ok(a) = s.parse::<Address>() {
        return Ok(a);
    }
    Keyring::new(home)
        .show(s)
        .map(|k| k.address)
        .map_err(|_| anyhow!("{s:?} is neither an address nor a key name"))
}

pub fn deployment_id(s: &str) -> Result<DeploymentId> {
    let (owner, dseq) = s
        .split_once('/')
        .ok_or_else(|| anyhow!("deployment id {s:?} must be OWNER/DSEQ"))?;
    Ok(DeploymentId {
        owner: owner.parse().map_err(|e| anyhow!("owner: {e}"))?,
        dseq: dseq.parse().context("dseq")?,
    })
}

/// A list query filtered by owner and provider (key names or addresses) and state.
fn party_query(
    home: &Path,
    owner: Option<String>,
    provider: Option<String>,
    state: Option<String>,
) -> Result<ListQuery> {
    Ok(ListQuery {
        owner: owner.map(|o| address_arg(home, &o)).transpose()?,
        provider: provider.map(|o| address_arg(home, &o)).transpose()?,
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

pub fn query(cmd: QueryCmd, opts: &ClientOpts) -> Result<()> {
    let home = home::resolve(opts.home.clone());
    let rpc = Rpc::new(&home::node_url(opts.node.clone(), &home));
    let out = opts.output;
    let key = |prove: bool, table: u8, k: &dyn Fn(u8) -> Vec<u8>| prove.then(|| k(table));
    match cmd {
        QueryCmd::Status => show(out, &rpc.status().map_err(client_err)?),
        QueryCmd::Account { address, prove } => {
            let a = address_arg(&home, &address)?;
            let answer = rpc.account(&a, prove).map_err(client_err)?;
            show_proven(&rpc, out, answer, key(prove, table_id::ACCOUNTS, &|t| store_key(t, &a)))
        }
        QueryCmd::Balance { address, denom, prove } => {
            let a = address_arg(&home, &address)?;
            let answer = rpc.balance(&a, &denom, prove).map_err(client_err)?;
            let k = key(prove, table_id::BALANCES, &|t| store_key(t, &(a, denom.clone())));
            show_proven(&rpc, out, answer, k)
        }
        QueryCmd::Providers => show_list::<ProviderPage>(&rpc, out, &ListQuery::default()),
        QueryCmd::Provider { address, prove } => {
            let answer = rpc.provider(&address, prove).map_err(client_err)?;
            let k = key(prove, table_id::PROVIDERS, &|t| store_key(t, &address));
            show_proven(&rpc, out, answer, k)
        }
        QueryCmd::Deployments { owner } => {
            let q = party_query(&home, owner, None, None)?;
            show_list::<DeploymentPage>(&rpc, out, &q)
        }
        QueryCmd::Deployment { id, prove } => {
            let id = deployment_id(&id)?;
            let answer = rpc.deployment(&id, prove).map_err(client_err)?;
            let k = key(prove, table_id::DEPLOYMENTS, &|t| store_key(t, &id));
            show_proven(&rpc, out, answer, k)
        }
        QueryCmd::Escrow { id, prove } => {
            let id = deployment_id(&id)?;
            let answer = rpc.escrow(&id, prove).map_err(client_err)?;
            let k = key(prove, table_id::ESCROW, &|t| store_key(t, &id));
            show_proven(&rpc, out, answer, k)
        }
        QueryCmd::Orders { owner, state } => {
            let q = party_query(&home, owner, None, state)?;
            show_list::<OrderPage>(&rpc, out, &q)
        }
        QueryCmd::Order { id, prove } => {
            let o = parse_order(&id)?;
            let answer = rpc.order(&o, prove).map_err(client_err)?;
            let k = key(prove, table_id::ORDERS, &|t| store_key(t, &o));
            show_proven(&rpc, out, answer, k)
        }
        QueryCmd::Bids { owner, provider, state } => {
            let q = party_query(&home, owner, provider, state)?;
            show_list::<BidPage>(&rpc, out, &q)
        }
        QueryCmd::Bid { id, prove } => {
            let b = id.parse::<BidId>()?;
            let answer = rpc.bid(&b, prove).map_err(client_err)?;
            let k = key(prove, table_id::BIDS, &|t| store_key(t, &b));
            show_proven(&rpc, out, answer, k)
        }
        QueryCmd::Leases { owner, provider, state } => {
            let q = party_query(&home, owner, provider, state)?;
            show_list::<LeasePage>(&rpc, out, &q)
        }
        QueryCmd::Lease { id, prove } => {
            let b = id.parse::<BidId>()?;
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
