//! The hand-off verifier ([`HandoffChain`]): from the genesis set alone it learns the set of
//! each later epoch from records a peer hands over, and refuses every forged link with its own
//! error (a proof that does not prove the set it carries, a certificate of another set, a
//! record out of order or of a block of another epoch, a set beyond the ledger's bound).

use std::collections::HashMap;
use std::sync::Mutex;

use commonware_codec::Encode;
use commonware_consensus::simplex::types::{Finalization, Finalize, Proposal};
use commonware_consensus::types::{Epoch, Round, View};
use commonware_cryptography::ed25519::PrivateKey;
use commonware_cryptography::sha256::Digest;
use commonware_cryptography::Signer;
use commonware_utils::iter::NonEmpty;
use commonware_utils::ordered::Set;
use jmt::storage::{LeafNode, Node, NodeKey, TreeReader};
use jmt::{KeyHash, OwnedValue, Sha256Jmt, Version};
use sha2::Sha256;

use pazar_api::sync::Handoff;
use pazar_consensus::sync::{namespace, HandoffChain, HandoffError, SyncError};
use pazar_consensus::Scheme;
use pazar_ledger::validators::MAX_SET;
use pazar_node::genesis::ConsensusKey;
use pazar_types::block::txs_root;
use pazar_types::records::SetMember;
use pazar_types::state_key::{store_key, table_id};
use pazar_types::{Address, Hash32, Header};

const CHAIN: &str = "handoff-test";
const LENGTH: u64 = 10;

fn ns() -> Vec<u8> {
    namespace(CHAIN, &[7; 32])
}

fn key(seed: u64) -> PrivateKey {
    PrivateKey::from_seed(seed)
}

fn public(k: &PrivateKey) -> [u8; 32] {
    k.public_key()
        .encode()
        .as_ref()
        .try_into()
        .expect("an ed25519 key is 32 bytes")
}

/// The validators of genesis (seeds 0 to 3) and of the set voted in for epoch 2 (validator 3
/// replaced by seed 10).
fn genesis() -> Vec<PrivateKey> {
    (0..4).map(key).collect()
}

fn changed() -> Vec<PrivateKey> {
    [0, 1, 2, 10].into_iter().map(key).collect()
}

fn members(keys: &[PrivateKey]) -> Vec<SetMember> {
    let mut m: Vec<SetMember> = keys
        .iter()
        .map(|k| SetMember {
            key: public(k),
            power: 1,
        })
        .collect();
    m.sort();
    m
}

fn consensus_keys(keys: &[PrivateKey]) -> Vec<ConsensusKey> {
    keys.iter().map(|k| ConsensusKey(public(k))).collect()
}

/// A one-version Jellyfish Merkle tree in memory, as the store keeps the state.
#[derive(Default)]
struct Tree {
    nodes: Mutex<HashMap<NodeKey, Node>>,
    values: Mutex<HashMap<KeyHash, OwnedValue>>,
}

impl TreeReader for Tree {
    fn get_node_option(&self, node_key: &NodeKey) -> anyhow::Result<Option<Node>> {
        Ok(self.nodes.lock().expect("lock").get(node_key).cloned())
    }

    fn get_value_option(&self, _max_version: Version, key_hash: KeyHash) -> anyhow::Result<Option<OwnedValue>> {
        Ok(self.values.lock().expect("lock").get(&key_hash).cloned())
    }

    fn get_rightmost_leaf(&self) -> anyhow::Result<Option<(NodeKey, LeafNode)>> {
        anyhow::bail!("not needed")
    }
}

impl Tree {
    /// A state holding `entries` (and some others): its root.
    fn with(entries: &[(Vec<u8>, Vec<u8>)]) -> (Tree, Hash32) {
        let tree = Tree::default();
        let mut set: Vec<(KeyHash, Option<OwnedValue>)> = entries
            .iter()
            .map(|(k, v)| (KeyHash::with::<Sha256>(k), Some(v.clone())))
            .collect();
        for i in 0u8..8 {
            set.push((KeyHash::with::<Sha256>(&[0xaa, i]), Some(vec![i; 3])));
        }
        let (root, batch) = Sha256Jmt::new(&tree).put_value_set(set, 0).expect("builds");
        tree.nodes
            .lock()
            .expect("lock")
            .extend(batch.node_batch.nodes().clone());
        for ((_, kh), v) in batch.node_batch.values() {
            if let Some(v) = v {
                tree.values.lock().expect("lock").insert(*kh, v.clone());
            }
        }
        (tree, root.0)
    }

    fn prove(&self, k: &[u8]) -> Vec<u8> {
        let (_, proof) = Sha256Jmt::new(self)
            .get_with_proof(KeyHash::with::<Sha256>(k), 0)
            .expect("proves");
        borsh::to_vec(&proof).expect("encodes")
    }
}

fn set_key(epoch: u64) -> Vec<u8> {
    store_key(table_id::VALIDATOR_SETS, &epoch)
}

/// The record of `epoch` at `height`: the state under it holds `next` as the set of
/// `epoch + 1`; the certificate (of `cert_epoch`) is signed by a quorum of `signers`.
struct Make {
    epoch: u64,
    height: u64,
    cert_epoch: u64,
    signers: Vec<PrivateKey>,
    next: Vec<u8>,
}

impl Make {
    fn new(epoch: u64, signers: Vec<PrivateKey>, next: &[PrivateKey]) -> Make {
        Make {
            epoch,
            height: epoch * LENGTH + 1,
            cert_epoch: epoch,
            signers,
            next: borsh::to_vec(&members(next)).expect("encodes"),
        }
    }

    fn build(&self) -> Handoff {
        let k = set_key(self.epoch + 1);
        let (tree, root) = Tree::with(&[(k.clone(), self.next.clone())]);
        let header = Header {
            chain_id: CHAIN.into(),
            height: self.height,
            time_ms: self.height * 250,
            parent: [1; 32],
            state_root: root,
            txs_root: txs_root(&[]),
            proposer: Address::module("proposer"),
        };
        Handoff {
            epoch: self.epoch,
            finalization: certificate(&self.signers, self.cert_epoch, &header),
            header,
            next_set: self.next.clone(),
            proof: tree.prove(&k),
        }
    }
}

/// A finalization of `header` in `epoch` by a quorum (3 of 4) of `signers`.
fn certificate(signers: &[PrivateKey], epoch: u64, header: &Header) -> Vec<u8> {
    let participants = Set::from_iter_dedup(signers.iter().map(|k| k.public_key()));
    let round = Round::new(Epoch::new(epoch), View::new(header.height + 5));
    let proposal = Proposal::new(round, View::new(header.height + 4), Digest::from(header.hash()));
    let schemes: Vec<Scheme> = signers
        .iter()
        .map(|k| Scheme::signer(&ns(), participants.clone(), k.clone()).expect("a member"))
        .collect();
    let votes: Vec<Finalize<Scheme, Digest>> = schemes[..3]
        .iter()
        .map(|s| Finalize::sign(s, proposal.clone()).expect("signs"))
        .collect();
    let fin = Finalization::from_finalizes(
        &schemes[0],
        NonEmpty::try_new(votes.iter()).expect("votes"),
        &commonware_parallel::Sequential,
    )
    .expect("assembles");
    fin.encode().to_vec()
}

fn chain() -> HandoffChain {
    HandoffChain::new(&ns(), CHAIN, LENGTH, &consensus_keys(&genesis())).expect("a chain")
}

#[test]
fn the_chain_learns_each_later_set_from_genesis_across_a_change() {
    let mut c = chain();
    assert_eq!(c.known(), 1, "genesis fixes epochs 0 and 1");
    c.accept(Make::new(1, genesis(), &changed()).build())
        .expect("epoch 1's record, signed by the genesis set");
    c.accept(Make::new(2, changed(), &changed()).build())
        .expect("epoch 2's record, signed by the changed set");
    assert_eq!(c.known(), 3);
    let mut want = consensus_keys(&changed());
    want.sort();
    assert_eq!(c.set(2), Some(want.as_slice()));
    assert_eq!(c.set(3), Some(want.as_slice()));
    assert_eq!(c.records().len(), 2);
}

#[test]
fn a_proof_that_does_not_prove_the_set_the_record_carries_is_refused() {
    // The state holds the changed set; the peer claims its own keys as the next set.
    let mut forged = Make::new(1, genesis(), &changed()).build();
    forged.next_set = borsh::to_vec(&members(&[key(20), key(21), key(22)])).expect("encodes");
    assert!(matches!(
        chain().accept(forged),
        Err(HandoffError::Proof { epoch: 1, next: 2, .. })
    ));

    let mut flipped = Make::new(1, genesis(), &changed()).build();
    let mid = flipped.proof.len() / 2;
    flipped.proof[mid] ^= 0x40;
    assert!(matches!(chain().accept(flipped), Err(HandoffError::Proof { .. })));

    // A proof of the set of another epoch does not prove the set of epoch 2.
    let mut other = Make::new(1, genesis(), &changed()).build();
    let (tree, root) = Tree::with(&[(set_key(3), other.next_set.clone())]);
    other.header.state_root = root;
    other.proof = tree.prove(&set_key(3));
    other.finalization = certificate(&genesis(), 1, &other.header);
    assert!(matches!(chain().accept(other), Err(HandoffError::Proof { .. })));
}

#[test]
fn a_certificate_of_another_set_than_the_epochs_is_refused() {
    let mut c = chain();
    c.accept(Make::new(1, genesis(), &changed()).build()).expect("epoch 1");
    // Epoch 2 is the changed set's: the genesis set (its retired member among the signers)
    // cannot sign for it.
    let old = c.clone().accept(Make::new(2, genesis(), &[key(30)]).build());
    assert!(
        matches!(
            old,
            Err(HandoffError::Certificate {
                epoch: 2,
                source: SyncError::Signatures | SyncError::Decode(_)
            })
        ),
        "{old:?}"
    );
    // Strangers cannot sign for epoch 1 either.
    let strangers: Vec<PrivateKey> = (40..44).map(key).collect();
    let r = chain().accept(Make::new(1, strangers, &changed()).build());
    assert!(
        matches!(
            r,
            Err(HandoffError::Certificate {
                epoch: 1,
                source: SyncError::Signatures
            })
        ),
        "{r:?}"
    );
    // A certificate of the right set for another block.
    let mut moved = Make::new(1, genesis(), &changed()).build();
    moved.header.time_ms += 1;
    let r = chain().accept(moved);
    assert!(
        matches!(
            r,
            Err(HandoffError::Certificate {
                source: SyncError::OtherBlock { .. },
                ..
            })
        ),
        "{r:?}"
    );
}

#[test]
fn records_out_of_order_or_of_another_epochs_block_are_refused() {
    let r = chain().accept(Make::new(2, genesis(), &changed()).build());
    assert!(
        matches!(r, Err(HandoffError::OutOfOrder { expected: 1, got: 2 })),
        "{r:?}"
    );

    let mut c = chain();
    c.accept(Make::new(1, genesis(), &changed()).build()).expect("epoch 1");
    let again = c.clone().accept(Make::new(1, genesis(), &changed()).build());
    assert!(
        matches!(again, Err(HandoffError::OutOfOrder { expected: 2, got: 1 })),
        "{again:?}"
    );

    // A block of epoch 2 offered as epoch 1's record.
    let mut late = Make::new(1, genesis(), &changed());
    late.height = 2 * LENGTH;
    let r = chain().accept(late.build());
    assert!(
        matches!(
            r,
            Err(HandoffError::BlockEpoch {
                epoch: 1,
                height: 20,
                block_epoch: 2
            })
        ),
        "{r:?}"
    );

    // A certificate made in another epoch than the record's.
    let mut elsewhere = Make::new(1, genesis(), &changed());
    elsewhere.cert_epoch = 0;
    let r = chain().accept(elsewhere.build());
    assert!(
        matches!(r, Err(HandoffError::CertificateEpoch { epoch: 1, got: 0 })),
        "{r:?}"
    );

    // A record of another chain.
    let mut other = Make::new(1, genesis(), &changed()).build();
    other.header.chain_id = "another".into();
    assert!(matches!(chain().accept(other), Err(HandoffError::Chain { .. })));
}

#[test]
fn a_set_beyond_the_ledgers_bound_or_not_a_set_is_refused_even_when_proven() {
    let big: Vec<SetMember> = (0..=MAX_SET as u64)
        .map(|i| SetMember {
            key: public(&key(100 + i)),
            power: 1,
        })
        .collect();
    let mut over = Make::new(1, genesis(), &changed());
    over.next = borsh::to_vec(&big).expect("encodes");
    let r = chain().accept(over.build());
    assert!(
        matches!(r, Err(HandoffError::SetBytes { epoch: 1, next: 2, .. })),
        "{r:?}"
    );

    let mut empty = Make::new(1, genesis(), &changed());
    empty.next = borsh::to_vec(&Vec::<SetMember>::new()).expect("encodes");
    let r = chain().accept(empty.build());
    assert!(matches!(r, Err(HandoffError::Set { epoch: 1, next: 2, .. })), "{r:?}");

    let mut junk = Make::new(1, genesis(), &changed());
    junk.next = vec![9, 9, 9];
    let r = chain().accept(junk.build());
    assert!(matches!(r, Err(HandoffError::Set { .. })), "{r:?}");
}
