//! The model bundle: one file with a checkpoint's weights, the model's shape, its tokenizer and
//! the proof of where it came from, checked with nothing but the file and a trust anchor the
//! user already holds (a chain's genesis file, or a header hash they took from their own node).
//!
//! ```text
//! MAGIC (8) ‖ version u32 LE ‖ meta length u64 LE ‖ meta (Borsh [`Meta`]) ‖ weights (f32 LE × spec.params())
//! ```
//!
//! What ties the bytes to the ledger ([`Bundle::verify`]), each check naming what failed:
//! 1. the weights and the momentum's hash give the checkpoint's name
//!    ([`pazar_types::train::checkpoint_hash`]): one flipped bit of the weights changes it;
//! 2. every record the bundle carries (the checkpoint's index entry, its job, every round back to
//!    the initial checkpoint, the dataset) is proven by a Merkle proof against the state root of
//!    one header;
//! 3. the index entry says a round of the job produced this checkpoint: a checkpoint no round
//!    produced is refused (the proof then proves the entry absent, or proves nothing);
//! 4. the rounds walk back to the job's initial checkpoint ([`crate::provenance::lineage`]), the
//!    job's model is the bundle's shape and its tokenizer the protocol's (bytes);
//! 5. the header is final for the user's trust anchor ([`FinalityCheck`], implemented by the CLI
//!    with the consensus engine's certificate checks; this crate links no consensus code).
//!
//! Every length is bounded before anything is allocated, decoding is strict (Borsh refuses
//! trailing bytes), and the file's size must be exactly what the shape needs.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::Path;

use borsh::{BorshDeserialize, BorshSerialize};
use serde::Serialize;

use pazar_api::proof::verify_proof;
use pazar_api::sync::Handoff;
use pazar_types::state_key::{store_key, table_id};
use pazar_types::train::{checkpoint_hash, f32s_hash, DatasetRecord, ModelSpec, RoundRecord, TrainJob, WEIGHTS_TAG};
use pazar_types::tx::hex_array;
use pazar_types::{Hash32, Header};

use crate::provenance::{self, Provenance, Source, WalkError};

/// The first bytes of every bundle.
pub const MAGIC: &[u8; 8] = b"PAZARMB\0";
/// The format this code writes and reads.
pub const VERSION: u32 = 1;
/// Largest metadata section (the proofs of a job of many rounds, hand-off records).
pub const MAX_META_BYTES: u64 = 64 << 20;
/// Most store entries a bundle carries (a job's rounds, its index entry, job and dataset).
pub const MAX_ENTRIES: usize = 4_096;
/// Most hand-off records a bundle carries (one per epoch from genesis to the header's).
pub const MAX_HANDOFFS: usize = 4_096;
/// The vocabulary of the byte tokenizer.
pub const BYTE_VOCAB: u32 = 256;
const PREFIX: usize = 8 + 4 + 8;

/// How text becomes tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Tokenizer {
    /// Token `i` is byte `i` (vocabulary 256): the training protocol's only tokenizer
    /// (`pazar_train::data::tokens`).
    Bytes,
}

/// What makes the header final.
#[derive(Debug, Clone, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub enum Finality {
    /// A single-validator chain: its validator signs nothing, so the header is only as good
    /// as the user's own record of it (a header hash they pin).
    Unsigned,
    /// A chain of many validators: the consensus engine's finalization certificate of the
    /// header, and the hand-off records from the genesis set to the certificate's epoch.
    Certified {
        finalization: Vec<u8>,
        #[borsh(deserialize_with = "read_handoffs")]
        handoffs: Vec<Handoff>,
    },
}

/// The chain and the block the proofs are against.
#[derive(Debug, Clone, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct Anchor {
    pub chain_id: String,
    /// SHA-256 of the chain's genesis file.
    pub genesis_hash: Hash32,
    /// The header whose `state_root` every entry is proven against (the state after block
    /// `header.height - 1`).
    pub header: Header,
    pub finality: Finality,
}

/// One state entry and its sparse Merkle proof (Borsh of a `jmt` proof).
#[derive(Debug, Clone, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct Entry {
    pub key: Vec<u8>,
    pub value: Option<Vec<u8>>,
    pub proof: Vec<u8>,
}

/// Everything but the weights.
#[derive(Debug, Clone, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct Meta {
    pub spec: ModelSpec,
    pub tokenizer: Tokenizer,
    /// The checkpoint's name on the ledger.
    pub checkpoint: Hash32,
    /// [`f32s_hash`] of the checkpoint's outer momentum (`MOMENTUM_TAG`), which the bundle
    /// does not carry.
    pub momentum_hash: Hash32,
    /// The job whose round produced the checkpoint.
    pub job: u64,
    pub anchor: Anchor,
    #[borsh(deserialize_with = "read_entries")]
    pub entries: Vec<Entry>,
}

/// A Borsh vector of at most `max` items: the count is checked before any item is decoded, so
/// a small file cannot claim millions of tiny items and make the reader hold them all.
fn read_bounded<R: borsh::io::Read, T: BorshDeserialize>(
    r: &mut R,
    max: usize,
    what: &str,
) -> borsh::io::Result<Vec<T>> {
    let n = u32::deserialize_reader(r)? as usize;
    if n > max {
        return Err(borsh::io::Error::new(
            borsh::io::ErrorKind::InvalidData,
            format!("{n} {what}; at most {max}"),
        ));
    }
    let mut out = Vec::with_capacity(n.min(64));
    for _ in 0..n {
        out.push(T::deserialize_reader(r)?);
    }
    Ok(out)
}

fn read_entries<R: borsh::io::Read>(r: &mut R) -> borsh::io::Result<Vec<Entry>> {
    read_bounded(r, MAX_ENTRIES, "proven entries")
}

fn read_handoffs<R: borsh::io::Read>(r: &mut R) -> borsh::io::Result<Vec<Handoff>> {
    read_bounded(r, MAX_HANDOFFS, "hand-off records")
}

#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("cannot read the bundle: {0}")]
    Io(#[from] std::io::Error),
    #[error("not a Pazar model bundle (it does not start with the bundle's magic bytes)")]
    Magic,
    #[error("bundle format version {0}; this build reads version {VERSION}")]
    Version(u32),
    #[error("the bundle's metadata is {0} bytes; at most {MAX_META_BYTES}")]
    MetaTooLarge(u64),
    #[error("the bundle's metadata is not valid: {0}")]
    Meta(String),
    #[error("the model spec in the bundle is invalid: {0}")]
    Spec(String),
    #[error("the bundle has {got} bytes; its {params} parameters need exactly {expected}")]
    Size { got: u64, expected: u64, params: u64 },
}

/// Why a bundle is refused: each names the part that failed.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error(
        "weights: they hash to checkpoint {computed}, the bundle names checkpoint {named} (the weights or the \
         momentum hash were altered)"
    )]
    Weights { computed: String, named: String },
    #[error("proof: {0}")]
    Proof(String),
    #[error("ledger: checkpoint {checkpoint} is not on the ledger: {why}")]
    NotOnLedger { checkpoint: String, why: String },
    #[error("provenance: {0}")]
    Provenance(String),
    #[error("model: {0}")]
    Model(String),
    #[error("finality: {0}")]
    Finality(String),
}

/// Checks that an anchor's header is final for a trust anchor the user holds. Returns how (one
/// line for people: "finalized by 4 validators of epoch 2 of chain …").
pub trait FinalityCheck {
    fn check(&self, anchor: &Anchor) -> Result<String, String>;
}

/// A bundle read from a file: structurally valid, not yet verified.
#[derive(Debug, Clone)]
pub struct Bundle {
    pub meta: Meta,
    weights: Vec<f32>,
}

/// What [`Bundle::verify`] established.
#[derive(Debug, Clone, Serialize)]
pub struct Verified {
    #[serde(with = "hex_array")]
    pub checkpoint: Hash32,
    pub job: u64,
    pub spec: ModelSpec,
    pub tokenizer: Tokenizer,
    pub params: u64,
    pub chain_id: String,
    #[serde(with = "hex_array")]
    pub genesis_hash: Hash32,
    /// The header the proofs are against.
    pub height: u64,
    #[serde(with = "hex_array")]
    pub header_hash: Hash32,
    #[serde(with = "hex_array")]
    pub state_root: Hash32,
    /// How the header was found final.
    pub finality: String,
    pub provenance: Provenance,
}

impl Bundle {
    /// A bundle of these weights and this metadata (unchecked: [`Bundle::verify`] checks).
    pub fn new(meta: Meta, weights: Vec<f32>) -> Result<Bundle, BundleError> {
        check_spec(&meta.spec)?;
        let params = meta.spec.params();
        if weights.len() as u64 != params {
            return Err(BundleError::Size {
                got: weights.len() as u64 * 4,
                expected: params * 4,
                params,
            });
        }
        Ok(Bundle { meta, weights })
    }

    pub fn spec(&self) -> ModelSpec {
        self.meta.spec
    }

    pub fn tokenizer(&self) -> Tokenizer {
        self.meta.tokenizer
    }

    /// The weights in the training model's flat layout.
    pub fn weights(&self) -> &[f32] {
        &self.weights
    }

    /// Reads and structurally checks a bundle file.
    pub fn read(path: &Path) -> Result<Bundle, BundleError> {
        let f = std::fs::File::open(path)?;
        let len = f.metadata()?.len();
        Bundle::read_from(f, len)
    }

    /// Reads a bundle of `len` bytes from `r`.
    pub fn read_from(mut r: impl Read, len: u64) -> Result<Bundle, BundleError> {
        let mut prefix = [0u8; PREFIX];
        if len < PREFIX as u64 {
            return Err(BundleError::Magic);
        }
        r.read_exact(&mut prefix)?;
        if &prefix[..8] != MAGIC {
            return Err(BundleError::Magic);
        }
        let version = u32::from_le_bytes(prefix[8..12].try_into().unwrap_or_default());
        if version != VERSION {
            return Err(BundleError::Version(version));
        }
        let meta_len = u64::from_le_bytes(prefix[12..20].try_into().unwrap_or_default());
        if meta_len > MAX_META_BYTES || meta_len > len - PREFIX as u64 {
            return Err(BundleError::MetaTooLarge(meta_len));
        }
        let mut meta = vec![0u8; meta_len as usize];
        r.read_exact(&mut meta)?;
        let meta = Meta::try_from_slice(&meta).map_err(|e| BundleError::Meta(e.to_string()))?;
        check_spec(&meta.spec)?;
        let params = meta.spec.params();
        let expected = PREFIX as u64 + meta_len + params * 4;
        if len != expected {
            return Err(BundleError::Size {
                got: len,
                expected,
                params,
            });
        }
        let mut weights = Vec::with_capacity(params as usize);
        let mut buf = vec![0u8; 1 << 16];
        let mut left = params as usize * 4;
        while left > 0 {
            let n = left.min(buf.len());
            r.read_exact(&mut buf[..n])?;
            weights.extend(
                buf[..n]
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
            );
            left -= n;
        }
        Ok(Bundle { meta, weights })
    }

    /// Writes the bundle.
    pub fn write_to(&self, mut w: impl Write) -> Result<(), BundleError> {
        let meta = borsh::to_vec(&self.meta).map_err(|e| BundleError::Meta(e.to_string()))?;
        w.write_all(MAGIC)?;
        w.write_all(&VERSION.to_le_bytes())?;
        w.write_all(&(meta.len() as u64).to_le_bytes())?;
        w.write_all(&meta)?;
        let mut buf = Vec::with_capacity(1 << 16);
        for chunk in self.weights.chunks(1 << 14) {
            buf.clear();
            for x in chunk {
                buf.extend_from_slice(&x.to_le_bytes());
            }
            w.write_all(&buf)?;
        }
        w.flush()?;
        Ok(())
    }

    /// Writes the bundle to `path` atomically (a temporary file beside it, then a rename), so a
    /// crash never leaves half a bundle under the name.
    pub fn write(&self, path: &Path) -> Result<(), BundleError> {
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp = dir.join(format!(".{name}.partial"));
        {
            let f = std::fs::File::create(&tmp)?;
            let mut w = std::io::BufWriter::new(f);
            self.write_to(&mut w)?;
            w.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        }
        std::fs::rename(&tmp, path)?;
        Ok(())
    }

    /// Checks everything the module documentation lists, in that order, and returns the
    /// provenance the proven records give.
    pub fn verify(&self, finality: &dyn FinalityCheck) -> Result<Verified, VerifyError> {
        let m = &self.meta;
        let named = hex::encode(m.checkpoint);
        let computed = checkpoint_hash(&f32s_hash(WEIGHTS_TAG, &[&self.weights]), &m.momentum_hash);
        if computed != m.checkpoint {
            return Err(VerifyError::Weights {
                computed: hex::encode(computed),
                named,
            });
        }
        let header = &m.anchor.header;
        if header.chain_id != m.anchor.chain_id {
            return Err(VerifyError::Proof(format!(
                "the header is of chain {:?}, the bundle says {:?}",
                header.chain_id, m.anchor.chain_id
            )));
        }
        let height = header.height.checked_sub(1).ok_or_else(|| {
            VerifyError::Proof("the header is of height 0; state is proven by a block's successor".into())
        })?;
        let mut proven = BTreeMap::new();
        for e in &m.entries {
            verify_proof(&header.state_root, &e.key, e.value.as_deref(), &e.proof).map_err(|err| {
                VerifyError::Proof(format!(
                    "the entry {} does not verify against the state root {} of block {}: {err}",
                    describe_key(&e.key),
                    hex::encode(header.state_root),
                    header.height
                ))
            })?;
            if proven.insert(e.key.clone(), e.value.clone()).is_some() {
                return Err(VerifyError::Proof(format!(
                    "the entry {} is carried twice",
                    describe_key(&e.key)
                )));
            }
        }
        let index = store_key(table_id::TRAIN_CHECKPOINTS, &(m.checkpoint, m.job));
        let round: u32 = match proven.get(&index) {
            None => {
                return Err(VerifyError::NotOnLedger {
                    checkpoint: named,
                    why: format!("the bundle carries no proof that job {} produced it", m.job),
                })
            }
            Some(None) => {
                return Err(VerifyError::NotOnLedger {
                    checkpoint: named,
                    why: format!(
                        "the ledger at height {height} proves that no round of job {} produced it",
                        m.job
                    ),
                })
            }
            Some(Some(v)) => decode(v, "the checkpoint's index entry").map_err(VerifyError::Proof)?,
        };
        let mut src = Proven {
            entries: &proven,
            height,
        };
        let first = src
            .round(m.job, round)
            .map_err(|e| VerifyError::Provenance(e.to_string()))?;
        if (first.job, first.round) != (m.job, round) {
            return Err(VerifyError::Provenance(format!(
                "the record stored as round {round} of job {} is round {} of job {}",
                m.job, first.round, first.job
            )));
        }
        if first.checkpoint != m.checkpoint {
            return Err(VerifyError::Provenance(format!(
                "round {round} of job {} produced {}, not this checkpoint",
                m.job,
                hex::encode(first.checkpoint)
            )));
        }
        let lineage = provenance::lineage(&mut src, first).map_err(|e| VerifyError::Provenance(e.to_string()))?;
        let job = src.job(m.job).map_err(|e| VerifyError::Provenance(e.to_string()))?;
        if job.spec.model != m.spec {
            return Err(VerifyError::Model(format!(
                "the bundle's shape {:?} is not job {}'s model {:?}",
                m.spec, m.job, job.spec.model
            )));
        }
        match m.tokenizer {
            Tokenizer::Bytes if m.spec.vocab == BYTE_VOCAB => {}
            Tokenizer::Bytes => {
                return Err(VerifyError::Model(format!(
                    "the byte tokenizer has {BYTE_VOCAB} tokens, the model's vocabulary {}",
                    m.spec.vocab
                )))
            }
        }
        let how = finality.check(&m.anchor).map_err(VerifyError::Finality)?;
        Ok(Verified {
            checkpoint: m.checkpoint,
            job: m.job,
            spec: m.spec,
            tokenizer: m.tokenizer,
            params: m.spec.params(),
            chain_id: m.anchor.chain_id.clone(),
            genesis_hash: m.anchor.genesis_hash,
            height: header.height,
            header_hash: header.hash(),
            state_root: header.state_root,
            finality: how,
            provenance: Provenance {
                checkpoint: m.checkpoint,
                lineages: vec![lineage],
            },
        })
    }
}

fn check_spec(spec: &ModelSpec) -> Result<(), BundleError> {
    spec.validate("spec").map_err(|e| BundleError::Spec(e.to_string()))
}

fn decode<T: BorshDeserialize>(bytes: &[u8], what: &str) -> Result<T, String> {
    T::try_from_slice(bytes).map_err(|e| format!("{what} is not a ledger record: {e}"))
}

/// A store key for people: its table and its bytes.
fn describe_key(key: &[u8]) -> String {
    let table = match key.first().copied() {
        Some(table_id::TRAIN_CHECKPOINTS) => "checkpoint index",
        Some(table_id::TRAIN_JOBS) => "job",
        Some(table_id::TRAIN_ROUNDS) => "round",
        Some(table_id::DATASETS) => "dataset",
        _ => "entry",
    };
    format!("{table} {}", hex::encode(key.get(1..).unwrap_or_default()))
}

/// The records the bundle proves, as a [`Source`] for the provenance walk.
struct Proven<'a> {
    entries: &'a BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    height: u64,
}

impl Proven<'_> {
    fn get<T: BorshDeserialize>(&self, key: Vec<u8>, what: String) -> Result<T, WalkError> {
        match self.entries.get(&key) {
            None => Err(WalkError::Missing(format!("the bundle carries no proof of {what}"))),
            Some(None) => Err(WalkError::Missing(format!(
                "the ledger at height {} proves {what} absent",
                self.height
            ))),
            Some(Some(v)) => decode(v, &what).map_err(WalkError::Source),
        }
    }
}

impl Source for Proven<'_> {
    fn job(&mut self, id: u64) -> Result<TrainJob, WalkError> {
        self.get(store_key(table_id::TRAIN_JOBS, &id), format!("job {id}"))
    }

    fn dataset(&mut self, root: &Hash32) -> Result<DatasetRecord, WalkError> {
        self.get(
            store_key(table_id::DATASETS, root),
            format!("dataset {}", hex::encode(root)),
        )
    }

    fn round(&mut self, job: u64, round: u32) -> Result<RoundRecord, WalkError> {
        self.get(
            store_key(table_id::TRAIN_ROUNDS, &(job, round)),
            format!("round {round} of job {job}"),
        )
    }
}

/// The store keys a bundle of `checkpoint` from `job` must prove, given the lineage of rounds
/// walked (newest first) and the job's dataset: the exporter asks the node for exactly these.
pub fn keys_to_prove(checkpoint: &Hash32, job: u64, rounds: &[u32], dataset: &Hash32) -> Vec<Vec<u8>> {
    let mut keys = vec![
        store_key(table_id::TRAIN_CHECKPOINTS, &(*checkpoint, job)),
        store_key(table_id::TRAIN_JOBS, &job),
        store_key(table_id::DATASETS, dataset),
    ];
    keys.extend(rounds.iter().map(|r| store_key(table_id::TRAIN_ROUNDS, &(job, *r))));
    keys
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Bundle {
        let spec = ModelSpec {
            vocab: 256,
            dim: 8,
            layers: 1,
            heads: 2,
            ffn_dim: 8,
            seq_len: 4,
        };
        let n = spec.params() as usize;
        let meta = Meta {
            spec,
            tokenizer: Tokenizer::Bytes,
            checkpoint: [1; 32],
            momentum_hash: [2; 32],
            job: 3,
            anchor: Anchor {
                chain_id: "c".into(),
                genesis_hash: [4; 32],
                header: Header {
                    chain_id: "c".into(),
                    height: 5,
                    time_ms: 0,
                    parent: [0; 32],
                    state_root: [0; 32],
                    txs_root: [0; 32],
                    proposer: pazar_types::Address::module("v"),
                },
                finality: Finality::Unsigned,
            },
            entries: Vec::new(),
        };
        Bundle::new(meta, (0..n).map(|i| i as f32).collect()).expect("bundle")
    }

    fn bytes(b: &Bundle) -> Vec<u8> {
        let mut out = Vec::new();
        b.write_to(&mut out).expect("write");
        out
    }

    fn read(bytes: &[u8]) -> Result<Bundle, BundleError> {
        Bundle::read_from(bytes, bytes.len() as u64)
    }

    #[test]
    fn a_bundle_reads_back_as_written() {
        let b = sample();
        let again = read(&bytes(&b)).expect("reads");
        assert_eq!(again.meta, b.meta);
        assert_eq!(again.weights(), b.weights());
    }

    #[test]
    fn a_file_of_another_kind_version_or_size_is_refused_before_its_weights_are_read() {
        let good = bytes(&sample());
        let mut other = good.clone();
        other[0] ^= 1;
        assert!(matches!(read(&other), Err(BundleError::Magic)));
        let mut version = good.clone();
        version[8] = 9;
        assert!(matches!(read(&version), Err(BundleError::Version(9))));
        assert!(matches!(read(&good[..good.len() - 1]), Err(BundleError::Size { .. })));
        let mut longer = good.clone();
        longer.push(0);
        assert!(matches!(read(&longer), Err(BundleError::Size { .. })));
        assert!(matches!(read(&good[..10]), Err(BundleError::Magic)));
    }

    #[test]
    fn a_claimed_entry_count_over_the_bound_is_refused_before_any_entry_is_decoded() {
        let b = sample();
        let mut out = bytes(&b);
        // The meta ends with the entries' u32 count (0 here): claim 4 billion.
        let meta_len = borsh::to_vec(&b.meta).expect("meta").len();
        let at = PREFIX + meta_len - 4;
        out[at..at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        match read(&out) {
            Err(BundleError::Meta(m)) => assert!(m.contains("at most 4096"), "{m}"),
            other => panic!("{other:?}"),
        }
    }
}
