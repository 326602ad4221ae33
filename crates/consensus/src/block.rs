//! Our [`Block`] as commonware's consensus and marshal see it: addressed by its header's hash,
//! at its height, naming its parent, encoded with commonware's codec around the block's own
//! Borsh bytes (bounded, and canonical: bytes that do not re-encode to themselves are refused).

use std::sync::Arc;

use bytes::{BufMut, Bytes};
use commonware_codec::{Buf, EncodeSize, Error, Read, Write};
use commonware_consensus::types::Height;
use commonware_consensus::Heightable;
use commonware_cryptography::sha256::Digest;
use commonware_cryptography::Digestible;

use pazar_types::block::{txs_root, Evidence, MAX_BLOCK_BYTES, MAX_BLOCK_TXS, MAX_EVIDENCE_BYTES};
use pazar_types::{Address, Block, Hash32, Header};

/// Most bytes a block's encoding may take: its transactions and its evidence at their limits,
/// with room for the header, every transaction's length prefix and the evidence's own framing
/// (its records' heights, views and length prefixes).
pub const MAX_ENCODED_BLOCK: usize = MAX_BLOCK_BYTES + 4 * MAX_BLOCK_TXS + MAX_EVIDENCE_BYTES + 8192;

/// A block with its hash computed once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChainBlock {
    block: Arc<Block>,
    hash: Hash32,
}

impl ChainBlock {
    pub fn new(block: Block) -> ChainBlock {
        let hash = hash_of(&block);
        ChainBlock {
            block: Arc::new(block),
            hash,
        }
    }

    /// The height-0 block every validator of `chain_id` agrees on without consensus: it stands
    /// for the genesis state. Its hash is the zero hash, which block 1 names as its parent.
    pub fn genesis(chain_id: &str, genesis_time_ms: u64, genesis_root: Hash32) -> ChainBlock {
        ChainBlock::new(Block {
            header: Header {
                chain_id: chain_id.to_string(),
                height: 0,
                time_ms: genesis_time_ms,
                parent: [0; 32],
                state_root: genesis_root,
                txs_root: txs_root(&[]),
                proposer: Address::module("genesis"),
            },
            txs: Vec::new(),
            evidence: Evidence::default(),
        })
    }

    pub fn block(&self) -> &Block {
        &self.block
    }

    pub fn hash(&self) -> Hash32 {
        self.hash
    }

    pub fn into_block(self) -> Block {
        Arc::unwrap_or_clone(self.block)
    }
}

/// A block's identity: the hash of its header (which commits to its transactions), and the
/// zero hash for the genesis block (as the store's genesis head records it).
fn hash_of(block: &Block) -> Hash32 {
    if block.header.height == 0 {
        [0; 32]
    } else {
        block.header.hash()
    }
}

impl ChainBlock {
    fn borsh(&self) -> Bytes {
        Bytes::from(borsh::to_vec(&*self.block).expect("encoding into a Vec cannot fail"))
    }
}

impl Write for ChainBlock {
    fn write(&self, w: &mut impl BufMut) {
        self.borsh().write(w);
    }
}

impl EncodeSize for ChainBlock {
    fn encode_size(&self) -> usize {
        self.borsh().encode_size()
    }
}

impl Read for ChainBlock {
    type Cfg = ();

    fn read_cfg(r: &mut impl Buf, _: &()) -> Result<Self, Error> {
        let bytes = Bytes::read_cfg(r, &(..=MAX_ENCODED_BLOCK).into())?;
        let block: Block = borsh::from_slice(&bytes).map_err(|_| Error::Invalid("Block", "not a Borsh block"))?;
        if borsh::to_vec(&block).map_err(|_| Error::Invalid("Block", "cannot re-encode"))? != bytes {
            return Err(Error::Invalid("Block", "not canonical"));
        }
        Ok(ChainBlock::new(block))
    }
}

impl Digestible for ChainBlock {
    type Digest = Digest;

    fn digest(&self) -> Digest {
        Digest::from(self.hash)
    }
}

impl Heightable for ChainBlock {
    fn height(&self) -> Height {
        Height::new(self.block.header.height)
    }
}

impl commonware_consensus::Block for ChainBlock {
    fn parent(&self) -> Digest {
        Digest::from(self.block.header.parent)
    }
}
