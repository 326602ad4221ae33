//! What simplex shows this validator about the others, turned into the evidence blocks carry
//! ([`pazar_types::block::Evidence`]).
//!
//! [`Evidence`] is a reporter of simplex's activities. It keeps, bounded: the faults (two
//! conflicting votes of one validator in one view: with ed25519 votes, a signed proof anyone can
//! check), the finalization certificates by block, and the finalize votes by block (a
//! certificate holds only the first quorum of votes; the votes that arrive after it show who
//! else signed, so an honest validator whose vote was merely late is not counted as missing).
//!
//! [`Attestations`] is the node's [`Attestor`]: it turns those into records for proposals and
//! checks the records of others' proposals against the validator set of each record's epoch
//! ([`Epochs`]) and the chain's namespace. Nothing a peer sends is trusted: votes and faults reach the reporter before
//! simplex verifies them, so a record is built only from what verifies here, and a proposal's
//! records are verified again by every validator.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use commonware_actor::Feedback;
use commonware_codec::{Copying, Decode, DecodeExt, Encode};
use commonware_consensus::simplex::types::{
    Activity, Attributable, ConflictingFinalize, ConflictingNotarize, Finalize, Notarization, NullifyFinalize,
};
use commonware_consensus::{Epochable, Reporter, Viewable};
use commonware_cryptography::certificate::Scheme as _;
use commonware_cryptography::sha256::{Digest, Sha256};
use commonware_cryptography::Hasher as _;
use commonware_utils::iter::NonEmpty;
use rand_core_010::CryptoRng;

use pazar_node::consensus::Attestor;
use pazar_types::block::{signer_bitmap, Attestation, DoubleSign, MAX_BLOCK_DOUBLE_SIGNS, MAX_PROOF_BYTES};
use pazar_types::Hash32;

pub use pazar_types::block::FaultKind;

use crate::app::Scheme;
use crate::engine::Finalization;
use crate::epochs::Epochs;

/// Most fault proofs kept (not yet on the ledger); more are dropped until some are recorded.
pub const MAX_FAULTS: usize = 4 * MAX_BLOCK_DOUBLE_SIGNS;
/// Most blocks whose certificate and finalize votes are kept (the latest views).
pub const MAX_CERTIFIED: usize = 512;

/// First byte of a commit record's certificate: a finalization certificate follows (in
/// commonware's encoding), or a notarization certificate (of a block finalized only through a
/// descendant's finalization: its notarize votes show who took part).
pub const CERT_FINALIZATION: u8 = 0;
pub const CERT_NOTARIZATION: u8 = 1;

/// One fault: what kind, and in which view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fault {
    pub kind: FaultKind,
    pub view: u64,
}

/// A fault with its proof, until it is verified (or found forged) here.
struct Proof {
    record: DoubleSign,
    verified: bool,
}

/// What this validator knows of one block's commit.
#[derive(Default)]
struct Certified {
    finalization: Option<Finalization>,
    /// Every block built on was notarized; a block finalized only through a descendant has no
    /// finalization of its own, and its notarization shows who voted for it.
    notarization: Option<Notarization<Scheme, Digest>>,
    votes: Vec<Finalize<Scheme, Digest>>,
}

#[derive(Default)]
struct Inner {
    faults: Vec<Fault>,
    /// By (epoch, validator, view).
    proofs: BTreeMap<(u64, u32, u64), Proof>,
    blocks: BTreeMap<Hash32, Certified>,
    /// (view, block) of `blocks`, to evict the oldest.
    /// (epoch, view, block) of `blocks`, to evict the oldest (views restart in each epoch).
    by_view: BTreeMap<(u64, u64, Hash32), ()>,
}

impl Inner {
    fn block(&mut self, round: (u64, u64), digest: &Digest) -> &mut Certified {
        let key: Hash32 = digest_bytes(digest);
        if !self.blocks.contains_key(&key) {
            self.by_view.insert((round.0, round.1, key), ());
            while self.by_view.len() > MAX_CERTIFIED {
                if let Some(((_, _, old), ())) = self.by_view.pop_first() {
                    self.blocks.remove(&old);
                }
            }
        }
        self.blocks.entry(key).or_default()
    }
}

fn digest_bytes(d: &Digest) -> Hash32 {
    let mut out = [0; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// Collects what simplex reports: faults, finalizations and finalize votes (bounded).
#[derive(Clone, Default)]
pub struct Evidence {
    inner: Arc<Mutex<Inner>>,
}

impl Evidence {
    /// Every fault reported, verified or not, in order.
    pub fn faults(&self) -> Vec<Fault> {
        self.inner.lock().map(|f| f.faults.clone()).unwrap_or_default()
    }
}

fn fault_record(activity: &Activity<Scheme, Digest>) -> Option<DoubleSign> {
    let (kind, validator, proof) = match activity {
        Activity::ConflictingNotarize(c) => (FaultKind::ConflictingNotarize, c.signer(), c.encode()),
        Activity::ConflictingFinalize(c) => (FaultKind::ConflictingFinalize, c.signer(), c.encode()),
        Activity::NullifyFinalize(c) => (FaultKind::NullifyFinalize, c.signer(), c.encode()),
        _ => return None,
    };
    Some(DoubleSign {
        epoch: activity.epoch().get(),
        validator: validator.get(),
        view: activity.view().get(),
        kind,
        proof: proof.to_vec(),
    })
}

impl Reporter for Evidence {
    type Activity = Activity<Scheme, Digest>;

    fn report(&mut self, activity: Self::Activity) -> Feedback {
        let Ok(mut inner) = self.inner.lock() else {
            return Feedback::Ok;
        };
        match &activity {
            Activity::Finalization(f) => {
                let round = (f.proposal.round.epoch().get(), f.proposal.round.view().get());
                inner.block(round, &f.proposal.payload).finalization = Some(f.clone());
            }
            Activity::Notarization(n) => {
                let round = (n.proposal.round.epoch().get(), n.proposal.round.view().get());
                inner.block(round, &n.proposal.payload).notarization = Some(n.clone());
            }
            Activity::Finalize(v) => {
                let round = (v.proposal.round.epoch().get(), v.proposal.round.view().get());
                let b = inner.block(round, &v.proposal.payload);
                // One vote per signer; a repeated signer is either the same vote or a fault
                // simplex reports on its own.
                if b.votes.len() < u16::MAX as usize && !b.votes.iter().any(|o| o.signer() == v.signer()) {
                    b.votes.push(v.clone());
                }
            }
            _ => {
                let Some(record) = fault_record(&activity) else {
                    return Feedback::Ok;
                };
                tracing::warn!(kind = ?record.kind, view = record.view, validator = record.validator, "a validator signed conflicting votes");
                inner.faults.push(Fault {
                    kind: record.kind,
                    view: record.view,
                });
                let key = (record.epoch, record.validator, record.view);
                if inner.proofs.len() < MAX_FAULTS && record.proof.len() <= MAX_PROOF_BYTES {
                    inner.proofs.entry(key).or_insert(Proof {
                        record,
                        verified: false,
                    });
                }
            }
        }
        Feedback::Ok
    }
}

/// The coefficients of batch signature verification: SHA-256 in counter mode over a 32-byte
/// seed from the operating system, so a peer cannot predict them. Not the runtime's random
/// source: drawing from it would change a simulation's schedule, and verification's outcome
/// does not depend on the coefficients (valid signatures pass, invalid ones fail but with
/// negligible probability), so a simulation stays reproducible.
pub struct VerifierRng {
    seed: [u8; 32],
    counter: u64,
}

impl VerifierRng {
    pub fn from_os() -> VerifierRng {
        VerifierRng::from_rng(&mut commonware_utils::sys_rng())
    }

    pub fn from_rng(rng: &mut impl CryptoRng) -> VerifierRng {
        let mut seed = [0; 32];
        rng.fill_bytes(&mut seed);
        VerifierRng { seed, counter: 0 }
    }

    fn block(&mut self) -> [u8; 32] {
        let mut h = Sha256::default();
        h.update(b"pazar/verifier-rng/v1")
            .update(&self.seed)
            .update(&self.counter.to_le_bytes());
        self.counter += 1;
        digest_bytes(&h.finalize().1)
    }
}

impl rand_core_010::TryRng for VerifierRng {
    type Error = core::convert::Infallible;

    fn try_next_u32(&mut self) -> Result<u32, Self::Error> {
        let b = self.block();
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn try_next_u64(&mut self) -> Result<u64, Self::Error> {
        let b = self.block();
        let mut w = [0; 8];
        w.copy_from_slice(&b[..8]);
        Ok(u64::from_le_bytes(w))
    }

    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), Self::Error> {
        for chunk in dest.chunks_mut(32) {
            let b = self.block();
            chunk.copy_from_slice(&b[..chunk.len()]);
        }
        Ok(())
    }
}

impl rand_core_010::TryCryptoRng for VerifierRng {}

/// The node's [`Attestor`]: records from what [`Evidence`] collected, and checks of records,
/// with the validator set of each record's epoch and the namespace of [`Epochs`].
pub struct Attestations {
    evidence: Evidence,
    epochs: Epochs,
    rng: Mutex<VerifierRng>,
}

impl Attestations {
    pub fn new(evidence: Evidence, epochs: Epochs, rng: VerifierRng) -> Attestations {
        Attestations {
            evidence,
            epochs,
            rng: Mutex::new(rng),
        }
    }

    /// The scheme of `epoch`, whose set a record of that epoch counts in.
    fn scheme(&self, epoch: u64) -> Result<Arc<Scheme>, String> {
        self.epochs
            .scheme(epoch)
            .map(|(s, _)| s)
            .ok_or_else(|| format!("no validator set of epoch {epoch} here"))
    }

    /// [`Attestations::scheme`] from the schemes already built only: the node calls
    /// [`Attestor::commit`] and [`Attestor::double_signs`] while it holds its state, which
    /// building a scheme reads.
    fn cached(&self, epoch: u64) -> Result<Arc<Scheme>, String> {
        self.epochs
            .cached(epoch)
            .map(|(s, _)| s)
            .ok_or_else(|| format!("no validator set of epoch {epoch} built here yet"))
    }

    fn verify_finalization(&self, scheme: &Scheme, f: &Finalization) -> bool {
        match self.rng.lock() {
            Ok(mut rng) => f.verify(&mut *rng, scheme, &commonware_parallel::Sequential),
            Err(_) => false,
        }
    }

    fn attestation(&self, scheme: &Scheme, f: &Finalization) -> Attestation {
        let mut certificate = vec![CERT_FINALIZATION];
        certificate.extend_from_slice(&f.encode());
        Attestation::Certified {
            signers: signer_bitmap(
                scheme.participants().len(),
                f.certificate.signers.iter().map(|p| p.get() as usize),
            ),
            certificate,
        }
    }

    fn notarized(&self, scheme: &Scheme, n: &Notarization<Scheme, Digest>) -> Attestation {
        let mut certificate = vec![CERT_NOTARIZATION];
        certificate.extend_from_slice(&n.encode());
        Attestation::Certified {
            signers: signer_bitmap(
                scheme.participants().len(),
                n.certificate.signers.iter().map(|p| p.get() as usize),
            ),
            certificate,
        }
    }

    /// Whether `record`'s proof verifies as what it claims.
    fn proof_holds(&self, record: &DoubleSign, scheme: &Scheme) -> Result<(), String> {
        if record.proof.len() > MAX_PROOF_BYTES {
            return Err("the proof is too large".into());
        }
        let Ok(mut rng) = self.rng.lock() else {
            return Err("the random source is poisoned".into());
        };
        let rng = &mut *rng;
        let seq = &commonware_parallel::Sequential;
        let bytes = record.proof.as_slice();
        let decoded = |e: commonware_codec::Error| format!("the proof does not decode: {e}");
        let (signer, view, epoch, ok, canonical) = match record.kind {
            FaultKind::ConflictingNotarize => {
                let c = ConflictingNotarize::<Scheme, Digest>::decode(Copying(bytes)).map_err(decoded)?;
                (c.signer(), c.view(), c.epoch(), c.verify(rng, scheme, seq), c.encode())
            }
            FaultKind::ConflictingFinalize => {
                let c = ConflictingFinalize::<Scheme, Digest>::decode(Copying(bytes)).map_err(decoded)?;
                (c.signer(), c.view(), c.epoch(), c.verify(rng, scheme, seq), c.encode())
            }
            FaultKind::NullifyFinalize => {
                let c = NullifyFinalize::<Scheme, Digest>::decode(Copying(bytes)).map_err(decoded)?;
                (c.signer(), c.view(), c.epoch(), c.verify(rng, scheme, seq), c.encode())
            }
        };
        if canonical.as_ref() != bytes {
            return Err("the proof is not canonically encoded".into());
        }
        if signer.get() != record.validator || view.get() != record.view {
            return Err(format!(
                "the proof is of validator {} in view {}",
                signer.get(),
                view.get()
            ));
        }
        if epoch.get() != record.epoch {
            return Err(format!("the proof is of epoch {}, not {}", epoch.get(), record.epoch));
        }
        if !ok {
            return Err("the votes' signatures do not verify".into());
        }
        Ok(())
    }
}

impl Attestor for Attestations {
    fn commit(&self, _height: u64, hash: &Hash32) -> Option<Attestation> {
        let (finalization, notarization, votes) = {
            let inner = self.evidence.inner.lock().ok()?;
            let b = inner.blocks.get(hash)?;
            (b.finalization.clone(), b.notarization.clone(), b.votes.clone())
        };
        if finalization.is_none() && votes.is_empty() {
            let n = notarization?;
            let scheme = self.cached(n.proposal.round.epoch().get()).ok()?;
            return Some(self.notarized(&scheme, &n));
        }
        // The votes of the finalized proposal (or of the first vote's, with no certificate).
        let proposal = finalization
            .as_ref()
            .map(|f| f.proposal.clone())
            .or_else(|| votes.first().map(|v| v.proposal.clone()))?;
        let scheme = self.cached(proposal.round.epoch().get()).ok()?;
        let votes: Vec<_> = votes.into_iter().filter(|v| v.proposal == proposal).collect();
        let have = finalization.as_ref().map_or(0, |f| f.certificate.signers.count());
        if votes.len() > have {
            // Votes reach the reporter unverified: the certificate made of them is used only if
            // it verifies.
            if let Some(all) = NonEmpty::try_new(votes.iter())
                .and_then(|v| Finalization::from_finalizes(scheme.as_ref(), v, &commonware_parallel::Sequential).ok())
            {
                if self.verify_finalization(&scheme, &all) {
                    return Some(self.attestation(&scheme, &all));
                }
            }
        }
        finalization.map(|f| self.attestation(&scheme, &f))
    }

    fn double_signs(&self) -> Vec<DoubleSign> {
        let unverified: Vec<DoubleSign> = match self.evidence.inner.lock() {
            Ok(inner) => inner
                .proofs
                .values()
                .filter(|p| !p.verified)
                .map(|p| p.record.clone())
                .collect(),
            Err(_) => return Vec::new(),
        };
        // A proof of an epoch whose scheme is not built here yet waits (it is checked later).
        let checked: Vec<((u64, u32, u64), bool)> = unverified
            .iter()
            .filter_map(|r| {
                let scheme = self.cached(r.epoch).ok()?;
                Some(((r.epoch, r.validator, r.view), self.proof_holds(r, &scheme).is_ok()))
            })
            .collect();
        let Ok(mut inner) = self.evidence.inner.lock() else {
            return Vec::new();
        };
        for (key, ok) in checked {
            if ok {
                if let Some(p) = inner.proofs.get_mut(&key) {
                    p.verified = true;
                }
            } else {
                inner.proofs.remove(&key);
            }
        }
        inner
            .proofs
            .values()
            .filter(|p| p.verified)
            .map(|p| p.record.clone())
            .collect()
    }

    fn check_commit(&self, height: u64, attestation: &Attestation, hash: &Hash32) -> Result<(), String> {
        let Attestation::Certified { signers, certificate } = attestation else {
            return Err("no certificate to check".into());
        };
        let epoch = self.epochs.epoch_of(height);
        let scheme = self.scheme(epoch)?;
        let n = scheme.participants().len();
        let decoded = |e: commonware_codec::Error| format!("the certificate does not decode: {e}");
        let (kind, body) = certificate.split_first().ok_or("an empty certificate")?;
        // The fields both kinds share, and whether the signatures verify for the kind's subject.
        let (proposal, cert, canonical, verified) = match *kind {
            CERT_FINALIZATION => {
                let f = Finalization::decode_cfg(Copying(body), &n).map_err(decoded)?;
                let ok = self.verify_finalization(&scheme, &f);
                (f.proposal.clone(), f.certificate.clone(), f.encode(), ok)
            }
            CERT_NOTARIZATION => {
                let x = Notarization::<Scheme, Digest>::decode_cfg(Copying(body), &n).map_err(decoded)?;
                let ok = match self.rng.lock() {
                    Ok(mut rng) => x.verify(&mut *rng, scheme.as_ref(), &commonware_parallel::Sequential),
                    Err(_) => false,
                };
                (x.proposal.clone(), x.certificate.clone(), x.encode(), ok)
            }
            other => return Err(format!("unknown certificate kind {other}")),
        };
        if canonical.as_ref() != body {
            return Err("the certificate is not canonically encoded".into());
        }
        if digest_bytes(&proposal.payload) != *hash {
            return Err("the certificate is of another block".into());
        }
        if proposal.round.epoch().get() != epoch {
            return Err(format!(
                "the certificate is of epoch {}; height {height} is in epoch {epoch}",
                proposal.round.epoch().get()
            ));
        }
        let named = signer_bitmap(n, cert.signers.iter().map(|p| p.get() as usize));
        if named != *signers {
            return Err("the signer bitmap is not the certificate's signers".into());
        }
        if !verified {
            return Err("the certificate's signatures do not verify against the validator set".into());
        }
        Ok(())
    }

    fn check_double_sign(&self, record: &DoubleSign) -> Result<(), String> {
        self.proof_holds(record, self.scheme(record.epoch)?.as_ref())
    }

    fn recorded(&self, double_signs: &[(u64, u32, u64)]) {
        if let Ok(mut inner) = self.evidence.inner.lock() {
            for key in double_signs {
                inner.proofs.remove(key);
            }
        }
    }
}
