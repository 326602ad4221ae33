//! The gossip message: a batch of transactions, each still in the bytes its client signed.
//!
//! Wire format (frozen; `tests` hold a fixture): the number of transactions as a little-endian
//! `u32`, then each transaction as its length (little-endian `u32`) and its bytes. A batch holds
//! 1 to [`MAX_BATCH_TXS`] transactions, each 1 to [`MAX_TX_BYTES`] bytes, [`MAX_BATCH_BYTES`] in
//! all; nothing may follow the last one. The decoder checks every bound before it allocates, so
//! a peer's message costs at most its own size; decoding is canonical (a batch that decodes
//! encodes back to exactly its bytes).
//!
//! This file depends on nothing but `std` and `pazar_types`, so the fuzz target compiles it as
//! it is (`fuzz/fuzz_targets/gossip_batch.rs`).

use pazar_types::tx::MAX_TX_BYTES;

/// Most transactions in one batch.
pub const MAX_BATCH_TXS: usize = 4_096;

/// Most bytes of transactions (their own bytes, without framing) in one batch.
pub const MAX_BATCH_BYTES: usize = 1 << 20;

/// Bytes of the framing: the count, and a length before each transaction.
const HEADER: usize = 4;
const LENGTH: usize = 4;

/// Largest encoded batch: the bound the network is given for the gossip channel.
pub const MAX_MESSAGE: usize = HEADER + MAX_BATCH_TXS * LENGTH + MAX_BATCH_BYTES;

// The largest transaction fits an empty batch, so a sender always makes progress.
const _: () = assert!(MAX_TX_BYTES <= MAX_BATCH_BYTES);
// Every count and length of a batch fits its u32 field.
const _: () = assert!(MAX_MESSAGE <= u32::MAX as usize);

/// Why bytes are not a batch. A peer that sends one is faulty or hostile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchError {
    /// The message is longer than any batch can be.
    TooLong(usize),
    /// The message ends inside its framing or inside a transaction.
    Truncated,
    /// The count is zero or above [`MAX_BATCH_TXS`].
    Count(u32),
    /// A transaction's length is zero or above [`MAX_TX_BYTES`].
    TxLength(u32),
    /// The transactions add up to more than [`MAX_BATCH_BYTES`].
    TooManyBytes,
    /// Bytes follow the last transaction.
    Trailing(usize),
}

impl std::fmt::Display for BatchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BatchError::TooLong(n) => write!(f, "a {n}-byte message is over the {MAX_MESSAGE}-byte bound"),
            BatchError::Truncated => write!(f, "the message ends inside a transaction or its length"),
            BatchError::Count(n) => write!(f, "a batch of {n} transactions (1 to {MAX_BATCH_TXS})"),
            BatchError::TxLength(n) => write!(f, "a {n}-byte transaction (1 to {MAX_TX_BYTES})"),
            BatchError::TooManyBytes => write!(f, "the transactions are over {MAX_BATCH_BYTES} bytes in all"),
            BatchError::Trailing(n) => write!(f, "{n} bytes after the last transaction"),
        }
    }
}

impl std::error::Error for BatchError {}

/// Transactions to gossip or gossiped, within the bounds above.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Batch {
    txs: Vec<Vec<u8>>,
    bytes: usize,
}

impl Batch {
    pub fn new() -> Batch {
        Batch::default()
    }

    /// Adds `tx`, or hands it back when the batch has no room for it (it goes in the next
    /// batch). A transaction that no batch can hold (empty, or over [`MAX_TX_BYTES`]) is an
    /// error of the caller, who gossips only admitted transactions.
    pub fn push(&mut self, tx: Vec<u8>) -> Result<(), Vec<u8>> {
        assert!(
            !tx.is_empty() && tx.len() <= MAX_TX_BYTES,
            "only admitted transactions are gossiped"
        );
        if self.is_full() || self.bytes + tx.len() > MAX_BATCH_BYTES {
            return Err(tx);
        }
        self.bytes += tx.len();
        self.txs.push(tx);
        Ok(())
    }

    /// No transaction fits any more.
    pub fn is_full(&self) -> bool {
        self.txs.len() == MAX_BATCH_TXS || self.bytes == MAX_BATCH_BYTES
    }

    pub fn len(&self) -> usize {
        self.txs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.txs.is_empty()
    }

    pub fn txs(&self) -> &[Vec<u8>] {
        &self.txs
    }

    pub fn into_txs(self) -> Vec<Vec<u8>> {
        self.txs
    }

    /// The wire form. An empty batch is never sent (and is refused by [`Batch::decode`]).
    pub fn encode(&self) -> Vec<u8> {
        assert!(!self.txs.is_empty(), "an empty batch is never sent");
        let mut out = Vec::with_capacity(HEADER + self.txs.len() * LENGTH + self.bytes);
        out.extend_from_slice(&u32_of(self.txs.len()).to_le_bytes());
        for tx in &self.txs {
            out.extend_from_slice(&u32_of(tx.len()).to_le_bytes());
            out.extend_from_slice(tx);
        }
        debug_assert!(out.len() <= MAX_MESSAGE);
        out
    }

    /// Reads a batch from a peer's bytes, checking every bound.
    pub fn decode(mut bytes: &[u8]) -> Result<Batch, BatchError> {
        if bytes.len() > MAX_MESSAGE {
            return Err(BatchError::TooLong(bytes.len()));
        }
        let count = read_u32(&mut bytes)?;
        if count == 0 || count as usize > MAX_BATCH_TXS {
            return Err(BatchError::Count(count));
        }
        let mut batch = Batch {
            txs: Vec::with_capacity(count as usize),
            bytes: 0,
        };
        for _ in 0..count {
            let len = read_u32(&mut bytes)?;
            if len == 0 || len as usize > MAX_TX_BYTES {
                return Err(BatchError::TxLength(len));
            }
            let len = len as usize;
            if batch.bytes + len > MAX_BATCH_BYTES {
                return Err(BatchError::TooManyBytes);
            }
            let (tx, rest) = bytes.split_at_checked(len).ok_or(BatchError::Truncated)?;
            batch.txs.push(tx.to_vec());
            batch.bytes += len;
            bytes = rest;
        }
        if !bytes.is_empty() {
            return Err(BatchError::Trailing(bytes.len()));
        }
        Ok(batch)
    }
}

fn u32_of(n: usize) -> u32 {
    u32::try_from(n).expect("batch bounds fit a u32")
}

fn read_u32(bytes: &mut &[u8]) -> Result<u32, BatchError> {
    let (head, rest) = bytes.split_first_chunk::<4>().ok_or(BatchError::Truncated)?;
    *bytes = rest;
    Ok(u32::from_le_bytes(*head))
}
