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
}

impl GenesisFile {
    pub fn ledger(&self) -> Genesis {
        Genesis {
            chain_id: self.chain_id.clone(),
            params: self.params.clone(),
            balances: self.balances.clone(),
        }
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

    pub fn check(&self) -> Result<(), GenesisFileError> {
        check_validators(&self.validators)
    }
}

fn check_validators(validators: &[Validator]) -> Result<(), GenesisFileError> {
    if validators.is_empty() {
        return Err(GenesisFileError::NoValidators);
    }
    if let Some(v) = validators.iter().find(|v| v.power == 0) {
        return Err(GenesisFileError::ZeroPower(v.name.clone()));
    }
    Ok(())
}

/// The part of a genesis file a node needs on every start. The balances (possibly millions)
/// are parsed only when the store is initialised.
#[derive(Debug, Clone, Deserialize)]
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
}

impl GenesisOnDisk {
    pub fn open(path: &std::path::Path) -> Result<GenesisOnDisk, GenesisFileError> {
        let p = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|source| GenesisFileError::Read {
            path: p.clone(),
            source,
        })?;
        let header: GenesisHeader =
            serde_json::from_slice(&bytes).map_err(|source| GenesisFileError::Parse { path: p, source })?;
        check_validators(&header.validators)?;
        Ok(GenesisOnDisk {
            path: path.to_path_buf(),
            header,
            hash: Sha256::digest(&bytes).into(),
        })
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
