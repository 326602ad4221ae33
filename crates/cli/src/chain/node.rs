//! `pazar devnet` and `node start`: running a node from a home.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};

use pazar_client::keyring::Keyring;
use pazar_consensus::{ChainBlock, MarshalCertificates, Peer, Settings, Simplex};
use pazar_node::consensus::{Solo, SystemClock};
use pazar_node::genesis::GenesisOnDisk;
use pazar_node::Node;
use pazar_store::Store;
use pazar_types::SigningKey;

use crate::home::{self, ConsensusKind};

use super::output::scheme_name;
use super::state_sync;

pub fn devnet(
    home: PathBuf,
    config: Option<PathBuf>,
    rpc_listen: &str,
    block_time_ms: u64,
    grace_blocks: Option<u64>,
    reset: bool,
) -> Result<()> {
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
        home::init_devnet(&home, rpc_listen, block_time_ms, grace_blocks)?;
    } else if grace_blocks.is_some() {
        anyhow::bail!("--grace-blocks sets a new devnet's genesis; this devnet exists (add --reset to start over)");
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
    if config.consensus == ConsensusKind::Solo && genesis.header.validators.len() != 1 {
        bail!(
            "the genesis lists {} validators: a solo node runs single-validator chains (set consensus = \"simplex\" in node.toml)",
            genesis.header.validators.len()
        );
    }
    let block_time = node_config.block_time;
    let mut simplex = match config.consensus {
        ConsensusKind::Solo => None,
        ConsensusKind::Simplex => Some(simplex_settings(&home, &config, &genesis, &validator, block_time)?),
    };
    match simplex.as_mut() {
        None if !config.state_sync.is_empty() => {
            bail!("state_sync needs consensus = \"simplex\": a solo node's chain has no certificates to check a snapshot against")
        }
        None => {}
        Some(settings) => {
            let namespace = pazar_consensus::sync::namespace(&genesis.header.chain_id, &genesis.hash);
            if store.genesis_hash()?.is_none() && !config.state_sync.is_empty() {
                settings.floor = Some(state_sync::sync_state(
                    &home,
                    &config.state_sync,
                    &store,
                    &genesis,
                    &settings.validators,
                    config.state_sync_trust.as_ref(),
                )?);
            } else if store.snapshot_base()?.is_some() {
                settings.floor = Some(state_sync::load_floor(&namespace, &settings.validators, &store)?);
            }
        }
    }
    let node = Node::with_store(store, &genesis, validator.address(), node_config)
        .with_context(|| format!("cannot open the node in {}", home.display()))?;
    let engine = match simplex {
        None => Engine::Solo(Solo {
            block_time,
            clock: Arc::new(SystemClock),
        }),
        Some(mut settings) => {
            settings.genesis = genesis_block(&node, &genesis);
            node.set_certificates(Arc::new(settings.certificates.clone()));
            let simplex = Simplex::new(settings).context("cannot start consensus")?;
            Engine::Simplex(Box::new(simplex.with_gossip(node.clone())))
        }
    };
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
        match engine {
            Engine::Solo(e) => pazar_node::run(node, e, listener, rx).await?,
            Engine::Simplex(e) => pazar_node::run(node, *e, listener, rx).await?,
        }
        tracing::info!("node stopped");
        Ok::<(), anyhow::Error>(())
    })
}

/// The engine `node.toml` chose.
enum Engine {
    Solo(Solo<SystemClock>),
    Simplex(Box<Simplex>),
}

/// What a `simplex` validator needs from its home: its consensus key (the validator key's
/// ed25519 secret, which must be the one the genesis names), the validator set, its p2p
/// listener and peers. The genesis block is filled in once the node is open.
fn simplex_settings(
    home: &Path,
    config: &home::Config,
    genesis: &GenesisOnDisk,
    validator: &SigningKey,
    block_time: std::time::Duration,
) -> Result<Settings> {
    let (secret, public) = validator.ed25519_parts().with_context(|| {
        format!(
            "key {:?} is not an ed25519 key: a simplex validator signs votes with ed25519",
            config.validator_key
        )
    })?;
    let mut validators = Vec::new();
    for v in &genesis.header.validators {
        let key = v.consensus_key.with_context(|| {
            format!(
                "genesis validator {:?} has no consensus_key: a simplex chain needs one for every validator",
                v.name
            )
        })?;
        // Votes are counted one per validator: a weight the engine would ignore is refused.
        if v.power != 1 {
            bail!(
                "genesis validator {:?} has power {}: a simplex chain counts one vote per validator (power 1)",
                v.name,
                v.power
            );
        }
        if v.address == validator.address() && key.0 != public {
            bail!(
                "genesis names consensus key {key} for validator {:?}, but key {:?} is {}",
                v.name,
                config.validator_key,
                hex::encode(public)
            );
        }
        validators.push(key);
    }
    let listen = config
        .p2p_listen
        .as_deref()
        .context("consensus = \"simplex\" needs p2p_listen in node.toml")?;
    let listen = listen
        .parse()
        .map_err(|e| anyhow::anyhow!("p2p_listen {listen:?} is not an IP address and port: {e}"))?;
    let peers = config
        .peers
        .iter()
        .map(|p| p.parse::<Peer>().map_err(|e| anyhow::anyhow!("peers: {e}")))
        .collect::<Result<Vec<_>>>()?;
    Ok(Settings {
        chain_id: genesis.header.chain_id.clone(),
        genesis_hash: genesis.hash,
        validators,
        secret,
        listen,
        peers,
        storage_dir: home.join("data").join("consensus"),
        genesis: ChainBlock::genesis(&genesis.header.chain_id, genesis.header.genesis_time_ms, [0; 32]),
        block_time,
        floor: None,
        certificates: MarshalCertificates::default(),
    })
}

/// The height-0 block: the genesis state's time and root. Its hash, which is all consensus
/// compares, is the zero hash whatever it holds; the root is the store's version 0 while the
/// store keeps it (a pruned store no longer has it, and the zero root stands in).
fn genesis_block(node: &Node, genesis: &GenesisOnDisk) -> ChainBlock {
    let root = node.store().root_at(0).unwrap_or([0; 32]);
    ChainBlock::genesis(&genesis.header.chain_id, genesis.header.genesis_time_ms, root)
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
