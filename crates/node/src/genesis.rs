//! The genesis file: the ledger's genesis (chain id, parameters, balances of both
//! denominations) plus the validator set, as JSON.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use pazar_ledger::Genesis;
use pazar_types::{Address, Hash32};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Validator {
    pub name: String,
    pub address: Address,
    pub power: u64,
    /// The ed25519 key that signs the validator's consensus votes (hex). Optional so that a
    /// single-validator genesis written before consensus keys existed still reads; a chain of
    /// many validators refuses to start unless every validator has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consensus_key: Option<ConsensusKey>,
}

/// A validator's ed25519 consensus public key: 32 bytes, written as 64 hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ConsensusKey(#[serde(with = "hex::serde")] pub [u8; 32]);

impl std::fmt::Display for ConsensusKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl std::str::FromStr for ConsensusKey {
    type Err = String;

    fn from_str(s: &str) -> Result<ConsensusKey, String> {
        let mut key = [0u8; 32];
        hex::decode_to_slice(s, &mut key)
            .map_err(|e| format!("{s:?} is not an ed25519 public key (64 hex digits): {e}"))?;
        Ok(ConsensusKey(key))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenesisFile {
    /// Milliseconds since the Unix epoch; the first block is stamped after it.
    pub genesis_time_ms: u64,
    pub chain_id: String,
    pub params: pazar_ledger::Params,
    pub balances: Vec<pazar_ledger::GenesisBalance>,
    pub validators: Vec<Validator>,
    /// Blocks per epoch: the validator set changes only where an epoch starts
    /// ([`pazar_ledger::validators`]). Used when every validator has a consensus key.
    #[serde(default = "default_epoch_length")]
    pub epoch_length: u64,
}

/// Default of [`GenesisFile::epoch_length`]: an hour of 250 ms blocks.
pub const DEFAULT_EPOCH_LENGTH: u64 = 14_400;

fn default_epoch_length() -> u64 {
    DEFAULT_EPOCH_LENGTH
}

#[derive(Debug, thiserror::Error)]
pub enum GenesisFileError {
    #[error("cannot read genesis file {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("genesis file {path} is not valid: {source}")]
    Parse { path: String, source: serde_json::Error },
    #[error("genesis file {0} changed while the node was starting")]
    Changed(String),
    #[error("genesis has no validator")]
    NoValidators,
    #[error("genesis validator {0} has zero power")]
    ZeroPower(String),
    #[error("genesis validators {0} and {1} share a consensus key")]
    DuplicateConsensusKey(String, String),
    #[error("genesis parameters are not valid: {0}")]
    Params(#[from] pazar_ledger::state::GenesisError),
}

impl GenesisFile {
    pub fn ledger(&self) -> Genesis {
        Genesis {
            chain_id: self.chain_id.clone(),
            params: self.params.clone(),
            balances: self.balances.clone(),
        }
    }

    /// The ledger's state at height 0: the genesis balances and parameters and, when every
    /// validator has a consensus key, the validator set of the first two epochs.
    pub fn ledger_state(&self) -> Result<pazar_ledger::State, GenesisFileError> {
        let mut state = pazar_ledger::State::from_genesis(&self.ledger())?;
        let keys: Option<Vec<_>> = self.validators.iter().map(|v| v.consensus_key).collect();
        if let Some(keys) = keys {
            let set = keys
                .iter()
                .zip(&self.validators)
                .map(|(k, v)| pazar_types::records::SetMember {
                    key: k.0,
                    power: v.power,
                })
                .collect();
            state.set_genesis_validators(set, self.epoch_length)?;
        }
        Ok(state)
    }

    pub fn read(path: &std::path::Path) -> Result<GenesisFile, GenesisFileError> {
        let p = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|source| GenesisFileError::Read {
            path: p.clone(),
            source,
        })?;
        let g: GenesisFile =
            serde_json::from_slice(&bytes).map_err(|source| GenesisFileError::Parse { path: p, source })?;
        g.check()?;
        Ok(g)
    }

    /// Validators, and the rules between the ledger's parameters (timeouts, auto-accept), so a
    /// bad file is refused with its reason before any state is built from it.
    pub fn check(&self) -> Result<(), GenesisFileError> {
        check_validators(&self.validators)?;
        pazar_ledger::state::validate_params(&self.params)?;
        Ok(())
    }
}

fn check_validators(validators: &[Validator]) -> Result<(), GenesisFileError> {
    if validators.is_empty() {
        return Err(GenesisFileError::NoValidators);
    }
    if let Some(v) = validators.iter().find(|v| v.power == 0) {
        return Err(GenesisFileError::ZeroPower(v.name.clone()));
    }
    let mut seen = std::collections::BTreeMap::new();
    for v in validators {
        if let Some(k) = v.consensus_key {
            if let Some(other) = seen.insert(k, &v.name) {
                return Err(GenesisFileError::DuplicateConsensusKey(other.clone(), v.name.clone()));
            }
        }
    }
    Ok(())
}

/// The part of a genesis file a node needs on every start. The balances (possibly millions)
/// are parsed only when the store is initialised.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GenesisHeader {
    pub genesis_time_ms: u64,
    pub chain_id: String,
    pub validators: Vec<Validator>,
}

/// A genesis file on disk: its header, and the SHA-256 of its bytes, which the store records
/// and checks on every start (as CometBFT does with its genesis document).
#[derive(Debug, Clone)]
pub struct GenesisOnDisk {
    pub path: std::path::PathBuf,
    pub header: GenesisHeader,
    pub hash: Hash32,
    /// The file's identity and times when it was hashed.
    pub stamp: FileStamp,
}

/// What identifies a file's content without reading it, as git's index does: size, inode,
/// device, and the modification and change times in nanoseconds. The change time cannot be set
/// by a user, so any write to the file changes the stamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileStamp {
    pub len: u64,
    pub ino: u64,
    pub dev: u64,
    pub mtime_ns: i128,
    pub ctime_ns: i128,
}

impl FileStamp {
    pub fn of(path: &std::path::Path) -> std::io::Result<FileStamp> {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(path)?;
        Ok(FileStamp {
            len: m.len(),
            ino: m.ino(),
            dev: m.dev(),
            mtime_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
            ctime_ns: i128::from(m.ctime()) * 1_000_000_000 + i128::from(m.ctime_nsec()),
        })
    }
}

/// What a node remembers of the genesis file it was initialised from, so a restart need not
/// re-read and re-hash a file that may hold millions of balances.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GenesisRecord {
    pub stamp: FileStamp,
    #[serde(with = "hex::serde")]
    pub hash: Hash32,
    pub header: GenesisHeader,
}

impl GenesisOnDisk {
    /// Reads, parses and hashes the file.
    pub fn open(path: &std::path::Path) -> Result<GenesisOnDisk, GenesisFileError> {
        let p = path.display().to_string();
        let read_err = |source| GenesisFileError::Read {
            path: p.clone(),
            source,
        };
        let stamp = FileStamp::of(path).map_err(read_err)?;
        let bytes = std::fs::read(path).map_err(read_err)?;
        if FileStamp::of(path).map_err(read_err)? != stamp {
            return Err(GenesisFileError::Changed(p));
        }
        let header: GenesisHeader = serde_json::from_slice(&bytes).map_err(|source| GenesisFileError::Parse {
            path: p.clone(),
            source,
        })?;
        check_validators(&header.validators)?;
        Ok(GenesisOnDisk {
            path: path.to_path_buf(),
            header,
            hash: Sha256::digest(&bytes).into(),
            stamp,
        })
    }

    /// Like [`GenesisOnDisk::open`], but takes header and hash from `record` when the file's
    /// stamp still equals the recorded one (the file was not touched since it was hashed).
    pub fn open_with_record(
        path: &std::path::Path,
        record: Option<&GenesisRecord>,
    ) -> Result<GenesisOnDisk, GenesisFileError> {
        if let Some(r) = record {
            if FileStamp::of(path).ok() == Some(r.stamp) {
                check_validators(&r.header.validators)?;
                return Ok(GenesisOnDisk {
                    path: path.to_path_buf(),
                    header: r.header.clone(),
                    hash: r.hash,
                    stamp: r.stamp,
                });
            }
        }
        GenesisOnDisk::open(path)
    }

    pub fn record(&self) -> GenesisRecord {
        GenesisRecord {
            stamp: self.stamp,
            hash: self.hash,
            header: self.header.clone(),
        }
    }

    /// The whole file, balances included, checked to be the file that was hashed.
    pub fn full(&self) -> Result<GenesisFile, GenesisFileError> {
        let p = self.path.display().to_string();
        let bytes = std::fs::read(&self.path).map_err(|source| GenesisFileError::Read {
            path: p.clone(),
            source,
        })?;
        if <[u8; 32]>::from(Sha256::digest(&bytes)) != self.hash {
            return Err(GenesisFileError::Changed(p));
        }
        let g: GenesisFile =
            serde_json::from_slice(&bytes).map_err(|source| GenesisFileError::Parse { path: p, source })?;
        g.check()?;
        Ok(g)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(path: &std::path::Path, chain_id: &str) {
        let g = serde_json::json!({
            "genesis_time_ms": 1,
            "chain_id": chain_id,
            "params": pazar_ledger::Params::devnet("upzr", "uusd"),
            "balances": [],
            "validators": [{"name": "v", "address": Address::module("v"), "power": 1}],
        });
        std::fs::write(path, serde_json::to_vec(&g).expect("test setup")).expect("test setup");
    }

    /// A genesis written before validators had consensus keys reads (a solo chain needs none);
    /// keys read as hex, and two validators with one key are refused.
    #[test]
    fn consensus_keys_are_optional_hex_and_distinct() {
        let dir = tempfile::tempdir().expect("test setup");
        let path = dir.path().join("genesis.json");
        write(&path, "chain-a");
        let g = GenesisFile::read(&path).expect("a file without consensus keys reads");
        assert_eq!(g.validators[0].consensus_key, None);
        let text = serde_json::to_string(&g).expect("serializes");
        assert!(!text.contains("consensus_key"), "an absent key is not written");

        let mut v: serde_json::Value = serde_json::from_str(&text).expect("test setup");
        let one = "ab".repeat(32);
        let other = serde_json::json!({"name": "w", "address": Address::module("w"), "power": 1, "consensus_key": one});
        v["validators"][0]["consensus_key"] = one.clone().into();
        v["validators"].as_array_mut().expect("test setup").push(other);
        std::fs::write(&path, serde_json::to_vec(&v).expect("test setup")).expect("test setup");
        assert!(matches!(
            GenesisFile::read(&path),
            Err(GenesisFileError::DuplicateConsensusKey(a, b)) if a == "v" && b == "w"
        ));

        v["validators"][1]["consensus_key"] = "cd".repeat(32).into();
        std::fs::write(&path, serde_json::to_vec(&v).expect("test setup")).expect("test setup");
        let g = GenesisFile::read(&path).expect("distinct keys read");
        assert_eq!(g.validators[0].consensus_key, Some(ConsensusKey([0xab; 32])));
        assert_eq!(
            g.validators[1].consensus_key.map(|k| k.to_string()),
            Some("cd".repeat(32))
        );

        v["validators"][1]["consensus_key"] = "cd".into();
        std::fs::write(&path, serde_json::to_vec(&v).expect("test setup")).expect("test setup");
        assert!(matches!(GenesisFile::read(&path), Err(GenesisFileError::Parse { .. })));
    }

    #[test]
    fn a_record_is_used_only_while_the_file_is_untouched() {
        let dir = tempfile::tempdir().expect("test setup");
        let path = dir.path().join("genesis.json");
        write(&path, "chain-a");
        let first = GenesisOnDisk::open(&path).expect("test setup");
        assert_eq!(
            first.hash,
            <[u8; 32]>::from(Sha256::digest(std::fs::read(&path).expect("test setup")))
        );

        // Unchanged file: the record answers without reading the file (its header is taken as is).
        let mut record = first.record();
        record.header.chain_id = "from-record".into();
        let cached = GenesisOnDisk::open_with_record(&path, Some(&record)).expect("test setup");
        assert_eq!(cached.header.chain_id, "from-record");

        // Any write changes the stamp, so the file is read and hashed again.
        std::thread::sleep(std::time::Duration::from_millis(5));
        write(&path, "chain-b");
        let reread = GenesisOnDisk::open_with_record(&path, Some(&record)).expect("test setup");
        assert_eq!(reread.header.chain_id, "chain-b");
        assert_ne!(reread.hash, first.hash);
    }

    /// A genesis file of a chain started before the market's timeouts existed (no
    /// `bid_timeout_blocks` or `order_timeout_blocks`) still reads, with the defaults.
    #[test]
    fn a_genesis_file_without_timeouts_gets_the_default_timeouts() {
        let dir = tempfile::tempdir().expect("test setup");
        let path = dir.path().join("genesis.json");
        write(&path, "chain-a");
        let mut v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).expect("test setup")).expect("test setup");
        let params = v["params"].as_object_mut().expect("test setup");
        assert!(params.remove("bid_timeout_blocks").is_some());
        assert!(params.remove("order_timeout_blocks").is_some());
        params.insert("max_auto_accept_blocks".into(), 100.into());
        std::fs::write(&path, serde_json::to_vec(&v).expect("test setup")).expect("test setup");
        let g = GenesisFile::read(&path).expect("reads");
        assert_eq!(
            (g.params.bid_timeout_blocks, g.params.order_timeout_blocks),
            (
                pazar_ledger::state::DEFAULT_BID_TIMEOUT_BLOCKS,
                pazar_ledger::state::DEFAULT_ORDER_TIMEOUT_BLOCKS
            )
        );
    }

    /// Timeouts an order or bid would hit before its auto-accept moment are refused when the
    /// file is read, naming the parameters.
    #[test]
    fn a_genesis_file_whose_timeouts_come_before_auto_accept_is_refused() {
        let dir = tempfile::tempdir().expect("test setup");
        let path = dir.path().join("genesis.json");
        write(&path, "chain-a");
        let mut v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).expect("test setup")).expect("test setup");
        v["params"]["bid_timeout_blocks"] = 5.into();
        v["params"]["max_auto_accept_blocks"] = 5.into();
        std::fs::write(&path, serde_json::to_vec(&v).expect("test setup")).expect("test setup");
        let e = GenesisFile::read(&path).expect_err("refused");
        assert!(matches!(e, GenesisFileError::Params(_)), "{e}");
        assert!(e.to_string().contains("max_auto_accept_blocks (5)"), "{e}");
    }

    #[test]
    fn a_missing_genesis_file_is_an_error_even_with_a_record() {
        let dir = tempfile::tempdir().expect("test setup");
        let path = dir.path().join("genesis.json");
        write(&path, "chain-a");
        let record = GenesisOnDisk::open(&path).expect("test setup").record();
        std::fs::remove_file(&path).expect("test setup");
        assert!(matches!(
            GenesisOnDisk::open_with_record(&path, Some(&record)),
            Err(GenesisFileError::Read { .. })
        ));
    }
}
