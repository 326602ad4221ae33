//! The validator set of each epoch, as the ledger fixed it, turned into commonware's signing
//! schemes ([`Epochs`] is marshal's scheme [`Provider`]: certificates of every epoch verify
//! against that epoch's set).
//!
//! The ledger ([`pazar_ledger::validators`]) fixes the set of epoch `e + 2` in the last block
//! of epoch `e`, so when a validator enters an epoch it has long had that epoch's set, and a
//! node that follows the chain can verify every certificate it is handed with the set of the
//! certificate's epoch. A set once fixed never changes, so schemes are cached (all of them:
//! a few keys per epoch).

use std::collections::BTreeMap;
use std::num::NonZeroU64;
use std::sync::{Arc, Mutex, Weak};

use commonware_codec::{Copying, DecodeExt};
use commonware_consensus::types::{Epoch, Epocher as _, FixedEpocher, Height};
use commonware_cryptography::certificate::{Provider, Scoped};
use commonware_cryptography::ed25519::{PrivateKey, PublicKey};
use commonware_cryptography::Signer;
use commonware_utils::ordered::Set;

use pazar_node::consensus::Application;

use crate::app::Scheme;

#[derive(Debug, thiserror::Error)]
pub enum EpochsError {
    #[error("the ledger holds no validator set: every genesis validator needs a consensus key")]
    NoSet,
    #[error("the ledger's validator set of epoch {epoch} holds {key}, which is not an ed25519 public key")]
    BadKey { epoch: u64, key: String },
}

/// Validator sets by epoch from the node's committed ledger. It does not keep the node alive
/// (the node holds it, through its attestor): once the node is closed it knows no set.
#[derive(Clone)]
pub struct Epochs {
    app: Weak<dyn Application>,
    namespace: Arc<Vec<u8>>,
    key: Option<PrivateKey>,
    length: NonZeroU64,
    cache: Arc<Mutex<BTreeMap<u64, EpochScheme>>>,
}

/// An epoch's scheme, and whether this validator signs with it (it is in the set).
type EpochScheme = (Arc<Scheme>, bool);

impl Epochs {
    /// The sets of `app`'s ledger, for votes in `namespace`, signing with `key` in the epochs
    /// whose set holds it (verifying only in the others, or everywhere without a key).
    pub fn new(app: Arc<dyn Application>, namespace: &[u8], key: Option<PrivateKey>) -> Result<Epochs, EpochsError> {
        let length = app.epoch_length().and_then(NonZeroU64::new).ok_or(EpochsError::NoSet)?;
        let epochs = Epochs {
            app: Arc::downgrade(&app),
            namespace: Arc::new(namespace.to_vec()),
            key,
            length,
            cache: Arc::default(),
        };
        // Genesis fixes epoch 0: a set the engine cannot use is refused before anything starts.
        epochs.participants(0)?.ok_or(EpochsError::NoSet)?;
        Ok(epochs)
    }

    /// The node whose ledger holds the sets, while it is open.
    pub fn app(&self) -> Option<Arc<dyn Application>> {
        self.app.upgrade()
    }

    pub fn length(&self) -> NonZeroU64 {
        self.length
    }

    pub fn epocher(&self) -> FixedEpocher {
        FixedEpocher::new(self.length)
    }

    /// The epoch holding `height`, as marshal's epocher cuts heights.
    pub fn epoch_of(&self, height: u64) -> u64 {
        self.epocher()
            .containing(Height::new(height))
            .map_or(u64::MAX, |info| info.epoch().get())
    }

    /// The last height of `epoch`, as marshal's epocher cuts heights.
    pub fn last_height(&self, epoch: u64) -> Option<u64> {
        self.epocher().last(Epoch::new(epoch)).map(|h| h.get())
    }

    /// The set of `epoch` in consensus order, if the ledger has fixed it.
    pub fn participants(&self, epoch: u64) -> Result<Option<Set<PublicKey>>, EpochsError> {
        let Some(keys) = self.app.upgrade().and_then(|a| a.validator_set(epoch)) else {
            return Ok(None);
        };
        let mut set = Vec::with_capacity(keys.len());
        for k in &keys {
            set.push(PublicKey::decode(Copying(&k[..])).map_err(|_| EpochsError::BadKey {
                epoch,
                key: pazar_node::genesis::ConsensusKey(*k).to_string(),
            })?);
        }
        Ok(Some(Set::from_iter_dedup(set)))
    }

    /// The scheme of `epoch` (signing when this validator is in its set) and whether it signs.
    pub fn scheme(&self, epoch: u64) -> Option<EpochScheme> {
        if let Some(hit) = self.cache.lock().ok()?.get(&epoch) {
            return Some(hit.clone());
        }
        let participants = match self.participants(epoch) {
            Ok(Some(p)) => p,
            Ok(None) => return None,
            Err(e) => {
                tracing::error!(error = %e, "cannot build an epoch's validator set");
                return None;
            }
        };
        let signing = self
            .key
            .as_ref()
            .filter(|k| participants.position(&k.public_key()).is_some())
            .and_then(|k| Scheme::signer(&self.namespace, participants.clone(), k.clone()));
        let entry = match signing {
            Some(s) => (Arc::new(s), true),
            None => (Arc::new(Scheme::verifier(&self.namespace, participants)), false),
        };
        // Every set asked for stays: sets are small, fixed once, and [`Epochs::cached`] must
        // find the ones in use without reading the ledger.
        if let Ok(mut cache) = self.cache.lock() {
            cache.insert(epoch, entry.clone());
        }
        Some(entry)
    }

    /// The scheme of `epoch` if already built, without reading the ledger (callers that hold
    /// the node's state use this; the orchestrator builds each epoch's scheme and its
    /// neighbours' when it enters the epoch).
    pub fn cached(&self, epoch: u64) -> Option<EpochScheme> {
        self.cache.lock().ok()?.get(&epoch).cloned()
    }
}

impl Provider for Epochs {
    type Scope = Epoch;
    type Scheme = Scheme;

    fn scoped(&self, epoch: Epoch) -> Option<Scoped<Scheme>> {
        let (scheme, signs) = self.scheme(epoch.get())?;
        Some(if signs {
            Scoped::scheme(scheme)
        } else {
            Scoped::verifier(scheme)
        })
    }
}
