//! The node's home directory: `node.toml` (the node's settings; the genesis stays JSON),
//! `genesis.json`, `data/` (the store), `keys/` and `rpc.addr` (where a running node listens,
//! for the CLI to find it).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use pazar_client::keyring::{write_private, Backend, Keyring};
use pazar_ledger::{GenesisBalance, Params};
use pazar_node::genesis::{GenesisFile, Validator};
use pazar_node::mempool::MempoolLimits;
use pazar_node::{Faucet, NodeConfig};
use pazar_store::StoreOptions;
use pazar_types::{Coin, Denom, KeyScheme, SigningKey};

pub const NATIVE: &str = "upzr";
pub const STABLE: &str = "uusd";
pub const DEVNET_CHAIN: &str = "pazar-devnet-1";
pub const DEFAULT_RPC: &str = "127.0.0.1:26657";

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub rpc_listen: String,
    pub block_time_ms: u64,
    /// Versions of the state commitment kept for proofs; null keeps all (archive).
    pub keep_versions: Option<u64>,
    pub mempool_max_txs: usize,
    pub max_block_txs: usize,
    /// Name of the validator's key in the keyring.
    pub validator_key: String,
    /// Devnet faucet: the key that funds `POST /faucet` requests.
    pub faucet_key: Option<String>,
    /// Which engine makes blocks: `solo` (this node alone) or `simplex` (one validator of the
    /// genesis set, over the network).
    #[serde(default)]
    pub consensus: ConsensusKind,
    /// Where the validator's p2p listener binds (`simplex` only).
    #[serde(default)]
    pub p2p_listen: Option<String>,
    /// The other validators, each `PUBKEYHEX@HOST:PORT` (`simplex` only).
    #[serde(default)]
    pub peers: Vec<String>,
    /// RPC addresses of nodes to copy the state from when this node's store is empty
    /// (`simplex` only): the node then joins at their height instead of replaying every block.
    #[serde(default)]
    pub state_sync: Vec<String>,
    /// The trust anchor of a state sync past the epochs the genesis names (`EPOCH:SET_HASH`, the
    /// `set_hash` of that epoch in `GET /validators` of a node the operator trusts): see
    /// [`crate::chain::state_sync::TrustAnchor`].
    #[serde(default)]
    pub state_sync_trust: Option<crate::chain::state_sync::TrustAnchor>,
}

/// The block-making engine of a node.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ConsensusKind {
    /// A single validator finalizes its own blocks every `block_time_ms`.
    #[default]
    Solo,
    /// Many validators behind simplex: a block is final with the votes of more than two
    /// thirds of them.
    Simplex,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            rpc_listen: DEFAULT_RPC.into(),
            block_time_ms: 1000,
            keep_versions: Some(1000),
            mempool_max_txs: 100_000,
            max_block_txs: 20_000,
            validator_key: "validator".into(),
            faucet_key: None,
            consensus: ConsensusKind::Solo,
            p2p_listen: None,
            peers: Vec::new(),
            state_sync: Vec::new(),
            state_sync_trust: None,
        }
    }
}

/// `--home`, else `$PAZAR_HOME`, else `~/.pazar`.
pub fn resolve(home: Option<PathBuf>) -> PathBuf {
    home.or_else(|| std::env::var_os("PAZAR_HOME").map(PathBuf::from))
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".pazar")))
        .unwrap_or_else(|| PathBuf::from(".pazar"))
}

/// The node's settings in `home`: `node.toml`, whose keys are the flags' names (`rpc_listen`,
/// `block_time_ms`, …); a flag given on the command line wins over the file.
pub fn config_path(home: &Path) -> PathBuf {
    home.join("node.toml")
}

pub fn genesis_path(home: &Path) -> PathBuf {
    home.join("genesis.json")
}

pub fn db_path(home: &Path) -> PathBuf {
    home.join("data").join("store.redb")
}

pub fn rpc_addr_path(home: &Path) -> PathBuf {
    home.join("rpc.addr")
}

/// Reads the node's settings from `path` (`--config`, else `node.toml` in the home). An unknown
/// key is refused with its name: a misspelt setting silently ignored would run another node.
pub fn read_config(home: &Path, path: Option<&Path>) -> Result<Config> {
    let p = path.map_or_else(|| config_path(home), Path::to_path_buf);
    let text = std::fs::read_to_string(&p).with_context(|| {
        format!(
            "no node configuration at {} (create a devnet with `pazar devnet --home {}`)",
            p.display(),
            home.display()
        )
    })?;
    toml::from_str(&text).with_context(|| format!("{} is not a valid node configuration", p.display()))
}

/// `config` as `node.toml`. Strings are written as JSON strings, which are TOML basic strings;
/// an absent option is left out (an absent `keep_versions` keeps every version).
pub fn config_toml(config: &Config) -> String {
    let q = |s: &str| serde_json::to_string(s).expect("a string serializes");
    let mut out = String::from("# Settings of the node in this home; the flags of `pazar node start` override them.\n");
    out.push_str(&format!("rpc_listen = {}\n", q(&config.rpc_listen)));
    out.push_str(&format!("block_time_ms = {}\n", config.block_time_ms));
    match config.keep_versions {
        Some(k) => out.push_str(&format!("keep_versions = {k}\n")),
        None => out.push_str("# keep_versions is absent: every version of the state is kept (archive).\n"),
    }
    out.push_str(&format!("mempool_max_txs = {}\n", config.mempool_max_txs));
    out.push_str(&format!("max_block_txs = {}\n", config.max_block_txs));
    out.push_str(&format!("validator_key = {}\n", q(&config.validator_key)));
    if let Some(f) = &config.faucet_key {
        out.push_str(&format!("faucet_key = {}\n", q(f)));
    }
    // A solo node's file stays as it was before the engine could be chosen.
    if config.consensus == ConsensusKind::Simplex {
        out.push_str("consensus = \"simplex\"\n");
    }
    if let Some(l) = &config.p2p_listen {
        out.push_str(&format!("p2p_listen = {}\n", q(l)));
    }
    if !config.peers.is_empty() {
        let peers: Vec<String> = config.peers.iter().map(|p| q(p)).collect();
        out.push_str(&format!("peers = [\n    {},\n]\n", peers.join(",\n    ")));
    }
    if !config.state_sync.is_empty() {
        let urls: Vec<String> = config.state_sync.iter().map(|p| q(p)).collect();
        out.push_str(&format!("state_sync = [{}]\n", urls.join(", ")));
    }
    if let Some(t) = &config.state_sync_trust {
        out.push_str(&format!("state_sync_trust = {}\n", q(&t.to_string())));
    }
    out
}

/// The node URL for clients: `--node`, else `$PAZAR_NODE`, else the address a node in `home`
/// wrote, else the default.
pub fn node_url(flag: Option<String>, home: &Path) -> String {
    let raw = flag
        .or_else(|| std::env::var("PAZAR_NODE").ok())
        .or_else(|| {
            std::fs::read_to_string(rpc_addr_path(home))
                .ok()
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| DEFAULT_RPC.to_string());
    if raw.starts_with("http://") || raw.starts_with("https://") {
        raw
    } else {
        format!("http://{raw}")
    }
}

/// Keys a fresh devnet creates, with the scheme of each. `bob` is an Ethereum key, as MetaMask
/// users have.
pub const DEVNET_KEYS: &[(&str, KeyScheme)] = &[
    ("validator", KeyScheme::Ed25519),
    ("faucet", KeyScheme::Ed25519),
    ("alice", KeyScheme::Ed25519),
    ("bob", KeyScheme::Eth),
    ("provider", KeyScheme::Ed25519),
];

/// Creates a devnet home: keys (test keyring), genesis funding them, configuration.
pub fn init_devnet(home: &Path, rpc_listen: &str, block_time_ms: u64, grace_blocks: Option<u64>) -> Result<()> {
    let keys = add_keys(home, DEVNET_KEYS)?;
    let validator = keys
        .iter()
        .find(|(name, _)| name == "validator")
        .context("validator key was created")?;
    let mut genesis = devnet_genesis(
        devnet_balances(&keys)?,
        vec![Validator {
            name: "validator".into(),
            address: validator.1.address(),
            power: 1,
            consensus_key: None,
        }],
    );
    if let Some(g) = grace_blocks {
        genesis.params.grace_blocks = g;
    }
    let config = Config {
        rpc_listen: rpc_listen.into(),
        block_time_ms,
        faucet_key: Some("faucet".into()),
        ..Config::default()
    };
    write_home(home, &genesis, &config)
}

/// Creates `keys` (fresh mnemonics, test keyring) in `home`; returns each with its key.
pub fn add_keys(home: &Path, keys: &[(&str, KeyScheme)]) -> Result<Vec<(String, SigningKey)>> {
    std::fs::create_dir_all(home).with_context(|| format!("cannot create {}", home.display()))?;
    let kr = Keyring::new(home);
    let no_pass = |_: &str, _: bool| None;
    let mut rng = rand_core::OsRng;
    let mut out = Vec::new();
    for (name, scheme) in keys {
        let phrase = pazar_types::keys::generate_mnemonic(&mut rng);
        let key = SigningKey::from_mnemonic(*scheme, &phrase, 0).map_err(|e| anyhow::anyhow!("{e}"))?;
        kr.add(name, &key, Some(&phrase), 0, Backend::Test, &no_pass)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        out.push((name.to_string(), key));
    }
    Ok(out)
}

/// The devnet's genesis funding of `keys`, both denominations, by key name: the faucet holds
/// the most, validators the least.
pub fn devnet_balances(keys: &[(String, SigningKey)]) -> Result<Vec<GenesisBalance>> {
    keys.iter()
        .map(|(name, key)| {
            let amount: u128 = match name.as_str() {
                "faucet" => 1_000_000_000_000_000,
                "validator" => 1_000_000_000,
                _ => 1_000_000_000_000,
            };
            Ok(GenesisBalance {
                address: key.address(),
                coins: vec![
                    Coin::new(amount, Denom::new(NATIVE).map_err(|e| anyhow::anyhow!("{e}"))?),
                    Coin::new(amount, Denom::new(STABLE).map_err(|e| anyhow::anyhow!("{e}"))?),
                ],
            })
        })
        .collect()
}

/// A devnet genesis (chain id, parameters, starting now) with these balances and validators.
pub fn devnet_genesis(balances: Vec<GenesisBalance>, validators: Vec<Validator>) -> GenesisFile {
    GenesisFile {
        genesis_time_ms: pazar_node::consensus::Clock::now_ms(&pazar_node::consensus::SystemClock),
        chain_id: DEVNET_CHAIN.into(),
        params: Params::devnet(NATIVE, STABLE),
        balances,
        validators,
        epoch_length: pazar_node::genesis::DEFAULT_EPOCH_LENGTH,
    }
}

/// Writes `genesis.json` and `node.toml` into `home`.
pub fn write_home(home: &Path, genesis: &GenesisFile, config: &Config) -> Result<()> {
    std::fs::write(genesis_path(home), serde_json::to_vec_pretty(genesis)?)?;
    write_private(&config_path(home), config_toml(config).as_bytes()).map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(())
}

/// Builds the node's settings from the home's configuration and keyring.
pub fn node_config(
    home: &Path,
    config: &Config,
    passphrase: pazar_client::keyring::PassphraseFn,
) -> Result<(NodeConfig, SigningKey)> {
    if config.block_time_ms == 0 {
        bail!("block_time_ms must be at least 1");
    }
    let kr = Keyring::new(home);
    let validator = kr
        .signer(&config.validator_key, passphrase)
        .map_err(|e| anyhow::anyhow!("validator key: {e}"))?;
    let faucet = match &config.faucet_key {
        Some(name) => Some(Faucet {
            key: kr
                .signer(name, passphrase)
                .map_err(|e| anyhow::anyhow!("faucet key: {e}"))?,
            amounts: vec![
                Coin::new(100_000_000, Denom::new(NATIVE).map_err(|e| anyhow::anyhow!("{e}"))?),
                Coin::new(100_000_000, Denom::new(STABLE).map_err(|e| anyhow::anyhow!("{e}"))?),
            ],
            fee: Coin::new(200, Denom::new(NATIVE).map_err(|e| anyhow::anyhow!("{e}"))?),
        }),
        None => None,
    };
    let nc = NodeConfig {
        block_time: Duration::from_millis(config.block_time_ms),
        mempool: MempoolLimits {
            max_txs: config.mempool_max_txs,
            ..MempoolLimits::default()
        },
        store: StoreOptions {
            keep_versions: config.keep_versions,
        },
        max_block_txs: config.max_block_txs,
        faucet,
        ..NodeConfig::default()
    };
    Ok((nc, validator))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A solo node's `node.toml` is written as before the engine could be chosen, and one
    /// without the new keys reads as solo.
    #[test]
    fn a_solo_config_has_no_consensus_keys_and_reads_back_as_solo() {
        let text = config_toml(&Config::default());
        assert!(!text.contains("consensus") && !text.contains("p2p_listen") && !text.contains("peers"));
        let back: Config = toml::from_str(&text).expect("reads");
        assert_eq!(back.consensus, ConsensusKind::Solo);
        assert_eq!((back.p2p_listen, back.peers.len()), (None, 0));
    }

    #[test]
    fn a_simplex_config_round_trips_and_unknown_engines_are_refused() {
        let config = Config {
            consensus: ConsensusKind::Simplex,
            p2p_listen: Some("127.0.0.1:26656".into()),
            peers: vec![
                format!("{}@127.0.0.1:26658", "ab".repeat(32)),
                format!("{}@host:1", "cd".repeat(32)),
            ],
            state_sync: vec!["http://127.0.0.1:26657".into()],
            state_sync_trust: Some(crate::chain::state_sync::TrustAnchor {
                epoch: 9,
                set_hash: [7; 32],
            }),
            ..Config::default()
        };
        let back: Config = toml::from_str(&config_toml(&config)).expect("reads");
        assert_eq!(back.consensus, ConsensusKind::Simplex);
        assert_eq!(back.p2p_listen, config.p2p_listen);
        assert_eq!(back.peers, config.peers);
        assert_eq!(back.state_sync, config.state_sync);
        assert_eq!(back.state_sync_trust, config.state_sync_trust);
        let bad = config_toml(&Config::default()) + "consensus = \"tendermint\"\n";
        assert!(toml::from_str::<Config>(&bad).is_err());
        let bad = config_toml(&Config::default()) + "state_sync_trust = \"1:00\"\n";
        assert!(toml::from_str::<Config>(&bad).is_err());
    }
}
