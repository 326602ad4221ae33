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

    /// SHA-256 of the canonical JSON encoding; a store remembers it and refuses another genesis.
    pub fn hash(&self) -> Hash32 {
        let json = serde_json::to_vec(self).expect("genesis always encodes");
        Sha256::digest(json).into()
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
        if self.validators.is_empty() {
            return Err(GenesisFileError::NoValidators);
        }
        if let Some(v) = self.validators.iter().find(|v| v.power == 0) {
            return Err(GenesisFileError::ZeroPower(v.name.clone()));
        }
        Ok(())
    }
}
