//! State sync for a validator whose store is empty (`state_sync` in node.toml): copy a peer's
//! state at its height H, prove it with consensus, and start consensus from block H + 1.
//!
//! The peer is not trusted. What it sends is checked in this order: the snapshot is of this
//! chain (genesis hash); the validator set of the epoch of the certificate of block H + 1 is
//! learned by walking the peer's hand-off records from this node's own genesis
//! ([`pazar_consensus::sync::HandoffChain`]: each a certificate of the set before it, proving the
//! next set under a finalized block's state root); the header of block H + 1 carries the
//! snapshot's root and is finalized by a certificate of a quorum of that set
//! ([`pazar_consensus::sync::verify_finalization`]); block H is the parent that header names;
//! every chunk of the snapshot is in the Merkle tree of that root ([`pazar_store::Restore`]); and
//! the snapshot's state holds that same set for that epoch. Nothing is written to the store
//! before all of it holds. The certificate is kept in the store (node record [`FLOOR_RECORD`])
//! with the hand-off records walked (served in turn to the next node that syncs), all written
//! in the restore's one transaction: consensus starts from the certificate on this and every
//! later start.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use pazar_api::sync::{Handoff, MAX_HANDOFFS};
use pazar_client::Rpc;
use pazar_consensus::engine::Finalization;
use pazar_consensus::sync::{
    certificate_epoch, check_set, decode_finalization, finalized_hash, namespace, verify_certificate,
    verify_finalization, HandoffChain,
};
use pazar_ledger::validators::MAX_SET;
use pazar_node::genesis::{ConsensusKey, GenesisOnDisk};
use pazar_store::{read_frame, Frame, Head, Store, StoreError};
use pazar_types::state_key::{store_key, table_id};

/// Longest the peer may take to commit block H + 1 and show its certificate.
const NEXT_BLOCK_WAIT: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(100);
/// Attempts per peer: a block finalized only through a descendant has no certificate of its
/// own, and a fresh snapshot is then taken.
const ATTEMPTS: usize = 3;
/// Pause before the second attempt (longer before each later one).
const RETRY_PAUSE: Duration = Duration::from_secs(2);

/// The node record holding the finalization consensus starts from after a state sync.
pub const FLOOR_RECORD: &str = "consensus_floor";

/// The floor of a store restored from a snapshot, read back and checked again: a certificate
/// of the validator set of its epoch, of the block after the snapshot (once that block is
/// stored). The set is the genesis set (`validators`) for epochs 0 and 1, and the state's own
/// entry for a later epoch (a set once fixed never changes; the state was proven by the root
/// this certificate finalized, and is this node's own since).
pub fn load_floor(namespace: &[u8], validators: &[ConsensusKey], store: &Store) -> Result<Finalization> {
    let bytes = store
        .node_record(FLOOR_RECORD)?
        .context("the store was restored from a snapshot but holds no consensus floor")?;
    let fin = decode_finalization(&bytes, MAX_SET).context("the store's consensus floor")?;
    let epoch = certificate_epoch(&fin);
    let set: Vec<ConsensusKey> = if epoch <= 1 {
        validators.to_vec()
    } else {
        let entry = store
            .state_value(&store_key(table_id::VALIDATOR_SETS, &epoch))?
            .with_context(|| format!("the store's state holds no validator set of epoch {epoch}, its floor's"))?;
        check_set(&entry)
            .map_err(|e| anyhow::anyhow!("the store's validator set of epoch {epoch}: {e}"))?
            .iter()
            .map(|m| ConsensusKey(m.key))
            .collect()
    };
    verify_certificate(namespace, &set, &fin).context("the store's consensus floor")?;
    let base = store
        .snapshot_base()?
        .context("the store was not restored from a snapshot")?;
    if let Some(b) = store.block(base + 1)? {
        if b.block.header.hash() != finalized_hash(&fin) {
            bail!("the store's consensus floor does not finalize its block {}", base + 1);
        }
    }
    Ok(fin)
}

/// Refuses a sync into a home that still holds consensus data: simplex's journal of this
/// validator's votes must never be dropped behind its back (a validator that forgets a vote may
/// sign a conflicting one), and marshal's records of an old chain position would skip the floor.
pub fn check_consensus_dir(home: &Path) -> Result<()> {
    let dir = home.join("data").join("consensus");
    let holds_data = std::fs::read_dir(&dir).map(|mut d| d.next().is_some()).unwrap_or(false);
    if holds_data {
        bail!(
            "the store is empty but {} holds consensus data; to sync the state afresh remove it too \
             (it holds this validator's votes: never run two copies of a validator)",
            dir.display()
        );
    }
    Ok(())
}

/// What an operator tells a node to trust beyond its genesis before it copies a state past the
/// epochs the genesis names: the set of epoch `epoch` is the one named `set_hash`
/// ([`pazar_ledger::validators::set_hash`]), read from a node the operator trusts
/// (`GET /validators`). Without it a node that knows only its genesis cannot tell the chain's
/// later sets from ones that validators since voted out sign with their old keys (a
/// long-range fork: keys retired from the chain lose nothing by signing one). The walk of
/// hand-off records must pass through the anchor; a state older than its epoch is refused.
/// The anchor should be recent: keys retired after it could still sign a fork that starts
/// after it. Written `EPOCH:HEX` in node.toml (`state_sync_trust`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TrustAnchor {
    pub epoch: u64,
    pub set_hash: pazar_types::Hash32,
}

impl std::fmt::Display for TrustAnchor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.epoch, hex::encode(self.set_hash))
    }
}

impl std::str::FromStr for TrustAnchor {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<TrustAnchor, String> {
        let (epoch, hash) = s
            .split_once(':')
            .ok_or_else(|| format!("state_sync_trust {s:?}: expected EPOCH:SET_HASH (64 hex digits)"))?;
        let epoch: u64 = epoch
            .parse()
            .map_err(|_| format!("state_sync_trust {s:?}: the epoch {epoch:?} is not a number"))?;
        if epoch < 2 {
            return Err(format!(
                "state_sync_trust {s:?}: epochs 0 and 1 are the genesis's own; name a later one"
            ));
        }
        let mut set_hash = [0u8; 32];
        hex::decode_to_slice(hash, &mut set_hash)
            .map_err(|_| format!("state_sync_trust {s:?}: the set hash is not 64 hex digits"))?;
        Ok(TrustAnchor { epoch, set_hash })
    }
}

impl TryFrom<String> for TrustAnchor {
    type Error = String;

    fn try_from(s: String) -> std::result::Result<TrustAnchor, String> {
        s.parse()
    }
}

impl From<TrustAnchor> for String {
    fn from(t: TrustAnchor) -> String {
        t.to_string()
    }
}

/// Copies the state from the first of `urls` that serves a provable one into `store` (empty),
/// and returns the finalization consensus starts from.
pub fn sync_state(
    home: &Path,
    urls: &[String],
    store: &Store,
    genesis: &GenesisOnDisk,
    validators: &[ConsensusKey],
    trust: Option<&TrustAnchor>,
) -> Result<Finalization> {
    check_consensus_dir(home)?;
    let mut errors = Vec::new();
    for url in urls {
        for attempt in 1..=ATTEMPTS {
            if attempt > 1 {
                // A busy peer (or one between blocks) gets a moment.
                std::thread::sleep(RETRY_PAUSE * attempt as u32);
            }
            match sync_from(url, store, genesis, validators, trust) {
                Ok((fin, height)) => {
                    tracing::info!(peer = %url, height, "state restored from a peer's snapshot");
                    return Ok(fin);
                }
                Err(e) => {
                    tracing::warn!(peer = %url, attempt, error = %format!("{e:#}"), "state sync failed");
                    errors.push(format!("{url} (attempt {attempt}): {e:#}"));
                    // An untrustworthy answer is not worth asking again, nor a state this
                    // node may not take without an anchor.
                    if e.downcast_ref::<Untrusted>().is_some() || e.downcast_ref::<Unanchored>().is_some() {
                        break;
                    }
                }
            }
        }
    }
    bail!("state sync failed from every peer:\n  {}", errors.join("\n  "))
}

/// A peer's answer that does not check out (as opposed to one that is not there yet).
#[derive(Debug)]
struct Untrusted(String);

impl std::fmt::Display for Untrusted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Untrusted {}

/// A state past the genesis's epochs, offered to a node without the trust anchor it needs (or
/// with one beyond it): this node's configuration, not the peer, decides.
#[derive(Debug)]
struct Unanchored(String);

impl std::fmt::Display for Unanchored {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Unanchored {}

fn untrusted(m: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(Untrusted(m.into()))
}

/// A store error: the snapshot's fault, or this node's own.
fn judged(e: StoreError) -> anyhow::Error {
    match e {
        StoreError::Snapshot(e) => untrusted(e.to_string()),
        e => anyhow::Error::new(e),
    }
}

fn sync_from(
    url: &str,
    store: &Store,
    genesis: &GenesisOnDisk,
    validators: &[ConsensusKey],
    trust: Option<&TrustAnchor>,
) -> Result<(Finalization, u64)> {
    let rpc = Rpc::new(url);
    let mut stream = rpc.snapshot().context("cannot open the snapshot stream")?;
    let head = match read_frame(&mut stream)? {
        Some(Frame::Head(h)) => h,
        _ => return Err(untrusted("the snapshot stream does not start with its head")),
    };
    if head.genesis_hash != genesis.hash {
        return Err(untrusted(format!(
            "the peer's chain has genesis {}, this node's {}",
            hex::encode(head.genesis_hash),
            hex::encode(genesis.hash)
        )));
    }
    if head.height == 0 {
        bail!("the peer is at genesis: there is nothing to sync");
    }
    let chain_id = &genesis.header.chain_id;
    let h = head.height;
    let next_height = h
        .checked_add(1)
        .ok_or_else(|| untrusted("the snapshot's height has no block after it"))?;

    // Block H + 1 and the certificate that finalizes it.
    let deadline = Instant::now() + NEXT_BLOCK_WAIT;
    let (next, cert) = loop {
        let next = match rpc.block(next_height) {
            Ok(b) => Some(b),
            Err(e) if e.is_not_found() => None,
            Err(e) => return Err(e).context("cannot read the block after the snapshot"),
        };
        if let Some(next) = next {
            match rpc.finalization(next_height) {
                Ok(bytes) => break (next, bytes),
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e).context("cannot read the certificate of the block after the snapshot"),
            }
        }
        if Instant::now() > deadline {
            bail!(
                "the peer showed no finalization certificate of block {} within {NEXT_BLOCK_WAIT:?}",
                next_height
            );
        }
        std::thread::sleep(POLL);
    };
    if next.header.hash() != next.hash || next.header.height != next_height || next.header.chain_id != *chain_id {
        return Err(untrusted(format!(
            "block {} as the peer sent it is inconsistent",
            next_height
        )));
    }
    let fin = decode_finalization(&cert, MAX_SET).map_err(|e| untrusted(e.to_string()))?;
    let epoch = certificate_epoch(&fin);
    // Genesis fixes the sets of epochs 0 and 1 only; later the genesis keys may have been voted
    // out, and a quorum of retired keys could sign any state: the set of the certificate's
    // epoch is learned from the hand-off records, each checked with the set before it.
    let namespace = namespace(chain_id, &genesis.hash);
    let epoch_length = genesis.full().context("cannot read the genesis file")?.epoch_length;
    let mut chain = HandoffChain::new(&namespace, chain_id, epoch_length, validators)?;
    if chain.epoch_of(next_height) != epoch {
        return Err(untrusted(format!(
            "the certificate of block {} is of epoch {epoch}, the block of epoch {}",
            next_height,
            chain.epoch_of(next_height)
        )));
    }
    match trust {
        // Genesis names these sets: no anchor is needed (nor can one be given).
        _ if epoch <= 1 => {}
        None => {
            return Err(anyhow::Error::new(Unanchored(format!(
                "the peer's state is of epoch {epoch}, past the two epochs whose validators this node's \
             genesis names: set state_sync_trust = \"EPOCH:SET_HASH\" in node.toml, an epoch of at \
             least 2 and at most {epoch} with its set_hash from GET /validators of a node you trust \
             (without it, validators voted out long ago could sign a chain of their own)"
            ))))
        }
        Some(t) if t.epoch > epoch => {
            return Err(anyhow::Error::new(Unanchored(format!(
                "the peer's state is of epoch {epoch}, before the trusted epoch {} (state_sync_trust): \
                 ask a node that is further on",
                t.epoch
            ))))
        }
        Some(_) => {}
    }
    walk(&rpc, &mut chain, epoch, trust)?;
    let set = chain.set(epoch).expect("the walk ends knowing the set of the epoch");
    let fin = decode_finalization(&cert, set.len()).map_err(|e| untrusted(e.to_string()))?;
    verify_finalization(&namespace, set, &fin, &next.header).map_err(|e| untrusted(e.to_string()))?;
    if next.header.state_root != head.state_root {
        return Err(untrusted(format!(
            "the snapshot's root {} is not the root {} that finalized block {} carries",
            hex::encode(head.state_root),
            hex::encode(next.header.state_root),
            next_height
        )));
    }
    // Block H, for its time: the header that block H + 1 names as its parent.
    let parent = rpc.block(h).context("cannot read the snapshot's block")?;
    if parent.header.hash() != next.header.parent || parent.header.height != h {
        return Err(untrusted(format!(
            "block {h} as the peer sent it is not the parent of block {}",
            next_height
        )));
    }

    let mut restore = store.begin_restore(&head)?;
    let mut ended = false;
    // The certificate proves the state only if its signers, the set the walk proved, are the
    // set of its epoch in that state (the entry is read from chunks the tree has verified).
    let set_key = store_key(table_id::VALIDATOR_SETS, &epoch);
    let mut set: Option<Vec<u8>> = None;
    while let Some(frame) = read_frame(&mut stream).map_err(|e| untrusted(e.to_string()))? {
        match frame {
            Frame::Chunk(c) => {
                let found = c.entries.iter().find(|(k, _)| *k == set_key).map(|(_, v)| v.clone());
                restore.add_chunk(c).map_err(judged)?;
                set = set.or(found);
            }
            Frame::End => {
                ended = true;
                break;
            }
            Frame::Head(_) => return Err(untrusted("a second head in the snapshot stream")),
        }
    }
    if !ended {
        bail!("the snapshot stream ended before its end frame");
    }
    let set: Vec<pazar_types::records::SetMember> = set
        .and_then(|v| pazar_ledger::validators::decode_set(&v))
        .ok_or_else(|| {
            untrusted(format!(
                "the snapshot has no validator set of epoch {}",
                certificate_epoch(&fin)
            ))
        })?;
    let proven: Vec<[u8; 32]> = chain
        .set(epoch)
        .expect("the walk ends knowing the set of the epoch")
        .iter()
        .map(|k| k.0)
        .collect();
    if set.iter().map(|m| m.key).collect::<Vec<_>>() != proven {
        return Err(untrusted(format!(
            "the snapshot's validator set of epoch {epoch} is not the one the hand-off records prove"
        )));
    }
    // The floor and the records walked go into the store in the restore's transaction: never
    // one without the other.
    let records: Vec<(String, Vec<u8>)> = chain
        .records()
        .iter()
        .map(|r| (Handoff::record_name(r.epoch), r.to_record()))
        .collect();
    let mut written: Vec<(&str, &[u8])> = vec![(FLOOR_RECORD, &cert)];
    written.extend(records.iter().map(|(n, b)| (n.as_str(), b.as_slice())));
    restore
        .finish(
            store,
            Head {
                height: h,
                block_hash: next.header.parent,
                state_root: head.state_root,
                time_ms: parent.header.time_ms,
            },
            &written,
        )
        .map_err(judged)?;
    Ok((fin, h))
}

/// Learns the validator set of `epoch` from the peer's hand-off records, checking each with the
/// set the one before it proved (from `chain`'s genesis sets). A peer without the records is
/// not a liar (it may have joined late), but it cannot prove its state.
fn walk(rpc: &Rpc, chain: &mut HandoffChain, epoch: u64, trust: Option<&TrustAnchor>) -> Result<()> {
    while chain.known() < epoch {
        let from = chain.known();
        let page = match rpc.handoffs(from) {
            Ok(page) => page,
            Err(e @ pazar_client::ClientError::Decode(_)) => {
                return Err(untrusted(format!("the peer's hand-off records do not parse: {e}")))
            }
            Err(e) => return Err(e).context("cannot read the peer's hand-off records"),
        };
        if page.handoffs.len() > MAX_HANDOFFS {
            return Err(untrusted(format!(
                "the peer sent {} hand-off records at once, more than {MAX_HANDOFFS}",
                page.handoffs.len()
            )));
        }
        if page.handoffs.is_empty() {
            bail!(
                "the peer holds no hand-off record of epoch {from}: it cannot prove the validator set \
                 of epoch {epoch}, its state's"
            );
        }
        for record in page.handoffs {
            if chain.known() >= epoch {
                break;
            }
            // The record of epoch E proves the set of E + 1: the anchor's is checked here.
            let anchored = trust
                .filter(|t| t.epoch == record.epoch + 1)
                .map(|t| (t, pazar_ledger::validators::set_hash(&record.next_set)));
            chain.accept(record).map_err(|e| untrusted(e.to_string()))?;
            if let Some((t, got)) = anchored {
                if got != t.set_hash {
                    return Err(untrusted(format!(
                        "the peer's chain gives epoch {} the set {}, not the trusted {} \
                         (state_sync_trust): it is not the chain the operator trusts",
                        t.epoch,
                        hex::encode(got),
                        hex::encode(t.set_hash)
                    )));
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::TrustAnchor;

    #[test]
    fn a_trust_anchor_reads_as_epoch_and_set_hash_and_refuses_anything_else() {
        let hash = "ab".repeat(32);
        let a: TrustAnchor = format!("7:{hash}").parse().expect("an anchor");
        assert_eq!((a.epoch, a.set_hash), (7, [0xab; 32]));
        assert_eq!(a.to_string(), format!("7:{hash}"));
        for bad in [
            format!("1:{hash}"),
            format!("0:{hash}"),
            format!("x:{hash}"),
            format!("7:{}", "ab".repeat(31)),
            format!("7:{}zz", "ab".repeat(31)),
            hash.clone(),
            String::new(),
        ] {
            assert!(bad.parse::<TrustAnchor>().is_err(), "{bad:?}");
        }
    }
}
