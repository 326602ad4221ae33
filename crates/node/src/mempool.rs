//! The mempool: transactions whose signature, chain, size, sequence and fee were checked on
//! entry, waiting for a block.
//!
//! A sender cannot fill blocks with transactions it cannot pay for: on entry, and again for
//! each sender touched by a block, everything a sender has pending must be payable together
//! from its committed balance, per denomination, counting each transaction's fee and the
//! tokens its messages move out ([`pazar_types::TxBody::max_spend`]).
//!
//! Transactions are kept per sender in sequence order; a block takes, sender by sender, the
//! contiguous run that starts at the sender's next sequence, highest fee rate first. The pool is
//! bounded in count and bytes; when full, a new transaction evicts the lowest-fee-rate tail
//! (a sender's last transaction, so no gap is created) if it pays a higher rate.
//!
//! Every pending transaction can go into the next blocks: a sender's queue is always the run of
//! sequences that starts at its account's next one, with no gap. A transaction that would leave
//! a gap is refused, so nobody can park transactions that are never included and so never pay
//! (they would fill the pool for free); the cheapest tail of all queues is kept in an index so
//! eviction finds it exactly, whatever sits in the middle of the queues.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap};

use pazar_types::{Address, Coin, Denom, Hash32};

/// How far ahead of the account's sequence a transaction may be.
pub const MAX_SEQUENCE_AHEAD: u64 = 256;
/// A replacement (same sender and sequence) must pay at least this much more, in percent.
pub const REPLACE_BUMP_PERCENT: u128 = 10;
/// Eviction looks at most this many low-fee candidates before declaring the pool full.
const EVICTION_SCAN: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MempoolLimits {
    pub max_txs: usize,
    pub max_bytes: usize,
    /// Blocks after which a transaction that could not be included is dropped.
    pub ttl_blocks: u64,
}

impl Default for MempoolLimits {
    fn default() -> Self {
        MempoolLimits {
            max_txs: 100_000,
            max_bytes: 256 << 20,
            ttl_blocks: 300,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MempoolError {
    #[error("transaction is already in the mempool")]
    Duplicate,
    #[error("sequence {got} is already used; the account's next sequence is {expected}")]
    StaleSequence { expected: u64, got: u64 },
    #[error(
        "sequence {got} is too far ahead of the account's next sequence {expected} (at most {MAX_SEQUENCE_AHEAD})"
    )]
    TooFarAhead { expected: u64, got: u64 },
    #[error(
        "sequence {got} would leave a gap: the sender's next free sequence is {expected} (its account's next plus its pending transactions); submit them in order"
    )]
    SequenceGap { expected: u64, got: u64 },
    #[error("another transaction with sequence {0} is pending; a replacement must pay at least {REPLACE_BUMP_PERCENT}% more")]
    SequenceTaken(u64),
    #[error(
        "this transaction may spend {spend} {denom} (its fee and the tokens its messages move) and the sender's pending transactions {pending} more, above its balance of {balance} {denom}"
    )]
    FeeUnpayable {
        spend: u128,
        pending: u128,
        balance: u128,
        denom: Denom,
    },
    #[error(
        "mempool is full ({txs} transactions, {bytes} bytes) and this fee rate does not beat the lowest pending one"
    )]
    Full { txs: usize, bytes: usize },
}

/// A transaction that passed the stateless checks (decoding, chain, signature).
#[derive(Debug, Clone)]
pub struct Candidate {
    pub bytes: Vec<u8>,
    pub hash: Hash32,
    pub sender: Address,
    pub sequence: u64,
    pub fee: Coin,
    /// The most it can take from the sender, per denomination (fee included).
    pub spend: Vec<Coin>,
}

#[derive(Debug, Clone)]
struct Entry {
    bytes: Vec<u8>,
    hash: Hash32,
    fee: Coin,
    spend: Vec<Coin>,
    rate: u128,
    arrival: u64,
    entered_at: u64,
}

/// Fee per kilobyte, the unit of priority.
fn rate(fee: &Coin, len: usize) -> u128 {
    fee.amount.saturating_mul(1024) / (len.max(1) as u128)
}

#[derive(Debug, Default)]
pub struct Mempool {
    limits: MempoolLimits,
    by_sender: BTreeMap<Address, BTreeMap<u64, Entry>>,
    /// Lookup only (never iterated into anything ordered): hash → (sender, sequence).
    by_hash: HashMap<Hash32, (Address, u64)>,
    /// Each sender's last transaction by priority, lowest first: (rate, newest first, sender,
    /// sequence). Only a tail can be evicted without opening a gap.
    tails: BTreeSet<(u128, Reverse<u64>, Address, u64)>,
    bytes: usize,
    arrivals: u64,
}

/// Outcome of a successful insertion: hashes evicted or replaced to make room.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Inserted {
    pub dropped: Vec<Hash32>,
}

impl Mempool {
    pub fn new(limits: MempoolLimits) -> Mempool {
        Mempool {
            limits,
            ..Mempool::default()
        }
    }

    pub fn len(&self) -> usize {
        self.by_hash.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_hash.is_empty()
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn contains(&self, hash: &Hash32) -> bool {
        self.by_hash.contains_key(hash)
    }

    /// What the pending transactions of `sender` may spend in `denom`, except sequence `skip`.
    fn pending_spend(&self, sender: &Address, denom: &Denom, skip: Option<u64>) -> u128 {
        self.by_sender.get(sender).map_or(0, |q| {
            q.iter()
                .filter(|(s, _)| Some(**s) != skip)
                .flat_map(|(_, e)| e.spend.iter())
                .filter(|c| c.denom == *denom)
                .map(|c| c.amount)
                .fold(0u128, u128::saturating_add)
        })
    }

    /// Whether `c` would be admitted, given the sender's next sequence and balances
    /// (`balance(denom)`) at the latest committed state, changing nothing: every rule of
    /// [`Mempool::insert`] but room, which only an insertion can make (by eviction). Answers the
    /// pending transaction `c` would replace, if any.
    pub fn check(
        &self,
        c: &Candidate,
        account_sequence: u64,
        balance: &dyn Fn(&Denom) -> u128,
    ) -> Result<Option<Hash32>, MempoolError> {
        if self.by_hash.contains_key(&c.hash) {
            return Err(MempoolError::Duplicate);
        }
        if c.sequence < account_sequence {
            return Err(MempoolError::StaleSequence {
                expected: account_sequence,
                got: c.sequence,
            });
        }
        if c.sequence - account_sequence >= MAX_SEQUENCE_AHEAD {
            return Err(MempoolError::TooFarAhead {
                expected: account_sequence,
                got: c.sequence,
            });
        }
        let next_free = self.by_sender.get(&c.sender).map_or(account_sequence, |q| {
            let mut n = account_sequence;
            while q.contains_key(&n) {
                n += 1;
            }
            n
        });
        if c.sequence > next_free {
            return Err(MempoolError::SequenceGap {
                expected: next_free,
                got: c.sequence,
            });
        }
        let replaced = self.by_sender.get(&c.sender).and_then(|q| q.get(&c.sequence));
        if let Some(old) = replaced {
            let needed = old.fee.amount.saturating_mul(100 + REPLACE_BUMP_PERCENT) / 100;
            if c.fee.denom != old.fee.denom || c.fee.amount < needed.max(old.fee.amount + 1) {
                return Err(MempoolError::SequenceTaken(c.sequence));
            }
        }
        let skip = replaced.map(|_| c.sequence);
        for coin in &c.spend {
            let pending = self.pending_spend(&c.sender, &coin.denom, skip);
            let have = balance(&coin.denom);
            if pending.saturating_add(coin.amount) > have {
                return Err(MempoolError::FeeUnpayable {
                    spend: coin.amount,
                    pending,
                    balance: have,
                    denom: coin.denom.clone(),
                });
            }
        }
        Ok(replaced.map(|old| old.hash))
    }

    /// The bytes of the pending transactions of `sender` with sequences `from..to`, in
    /// sequence order: what a block would run before sequence `to` of that sender.
    pub fn pending_between(&self, sender: &Address, from: u64, to: u64) -> Vec<Vec<u8>> {
        self.by_sender
            .get(sender)
            .map_or_else(Vec::new, |q| q.range(from..to).map(|(_, e)| e.bytes.clone()).collect())
    }

    /// Admits `c` given the sender's next sequence and balances (`balance(denom)`) at the
    /// latest committed state, at block height `height`.
    pub fn insert(
        &mut self,
        c: Candidate,
        account_sequence: u64,
        balance: &dyn Fn(&Denom) -> u128,
        height: u64,
    ) -> Result<Inserted, MempoolError> {
        let replaced = self.check(&c, account_sequence, balance)?;
        let new_rate = rate(&c.fee, c.bytes.len());
        let mut dropped = Vec::new();
        if replaced.is_some() {
            if let Some(old) = self.remove_entry(&c.sender, c.sequence) {
                dropped.push(old.hash);
            }
        }
        // Make room, evicting the cheapest tails while the newcomer pays more.
        while self.by_hash.len() + 1 > self.limits.max_txs || self.bytes + c.bytes.len() > self.limits.max_bytes {
            let victim = self
                .tails
                .iter()
                .take(EVICTION_SCAN)
                .find(|(_, _, sender, _)| *sender != c.sender)
                .copied();
            match victim {
                Some((r, _, sender, seq)) if r < new_rate => {
                    if let Some(e) = self.remove_entry(&sender, seq) {
                        dropped.push(e.hash);
                    }
                }
                _ => {
                    return Err(MempoolError::Full {
                        txs: self.by_hash.len(),
                        bytes: self.bytes,
                    })
                }
            }
        }
        self.arrivals += 1;
        let e = Entry {
            hash: c.hash,
            fee: c.fee,
            spend: c.spend,
            rate: new_rate,
            arrival: self.arrivals,
            entered_at: height,
            bytes: c.bytes,
        };
        self.bytes += e.bytes.len();
        self.by_hash.insert(e.hash, (c.sender, c.sequence));
        let sender = c.sender;
        self.untail(&sender);
        self.by_sender.entry(sender).or_default().insert(c.sequence, e);
        self.retail(&sender);
        Ok(Inserted { dropped })
    }

    /// The tails-index key of `sender`'s last transaction, if it has any.
    fn tail_key(&self, sender: &Address) -> Option<(u128, Reverse<u64>, Address, u64)> {
        let (seq, e) = self.by_sender.get(sender)?.iter().next_back()?;
        Some((e.rate, Reverse(e.arrival), *sender, *seq))
    }

    fn untail(&mut self, sender: &Address) {
        if let Some(k) = self.tail_key(sender) {
            self.tails.remove(&k);
        }
    }

    fn retail(&mut self, sender: &Address) {
        if let Some(k) = self.tail_key(sender) {
            self.tails.insert(k);
        }
    }

    fn remove_entry(&mut self, sender: &Address, seq: u64) -> Option<Entry> {
        self.untail(sender);
        let q = self.by_sender.get_mut(sender)?;
        let e = q.remove(&seq);
        if q.is_empty() {
            self.by_sender.remove(sender);
        }
        self.retail(sender);
        let e = e?;
        self.by_hash.remove(&e.hash);
        self.bytes -= e.bytes.len();
        Some(e)
    }

    /// Transactions for the next block: for each sender the run of consecutive sequences from
    /// `next_sequence(sender)`, interleaved by fee rate (highest first, then arrival), within
    /// `max_txs` and `max_bytes`.
    pub fn reap(
        &self,
        max_txs: usize,
        max_bytes: usize,
        next_sequence: impl Fn(&Address) -> u64,
    ) -> Vec<(Hash32, Vec<u8>)> {
        // Heap of each sender's next includable transaction.
        let mut heap = BinaryHeap::new();
        for (sender, q) in &self.by_sender {
            let seq = next_sequence(sender);
            if let Some(e) = q.get(&seq) {
                heap.push((e.rate, Reverse(e.arrival), *sender, seq));
            }
        }
        let mut out = Vec::new();
        let mut bytes = 0usize;
        while let Some((_, _, sender, seq)) = heap.pop() {
            if out.len() >= max_txs {
                break;
            }
            let Some(q) = self.by_sender.get(&sender) else { continue };
            let Some(e) = q.get(&seq) else { continue };
            if bytes + e.bytes.len() > max_bytes {
                continue;
            }
            bytes += e.bytes.len();
            out.push((e.hash, e.bytes.clone()));
            if let Some(next) = q.get(&(seq + 1)) {
                heap.push((next.rate, Reverse(next.arrival), sender, seq + 1));
            }
        }
        out
    }

    /// After a block: drops the included transactions, those whose sequence is now used, those
    /// of a touched sender that its new balance (`balance(sender, denom)`) can no longer pay
    /// for together (from the first unpayable one on, so no gap is left), and those older than
    /// the time-to-live. Returns the hashes dropped without being included.
    pub fn update(
        &mut self,
        included: &[Hash32],
        height: u64,
        next_sequence: impl Fn(&Address) -> u64,
        balance: impl Fn(&Address, &Denom) -> u128,
    ) -> Vec<Hash32> {
        let mut touched = BTreeSet::new();
        for h in included {
            if let Some((sender, seq)) = self.by_hash.get(h).copied() {
                self.remove_entry(&sender, seq);
                touched.insert(sender);
            }
        }
        let mut dropped = Vec::new();
        for sender in touched {
            let next = next_sequence(&sender);
            let stale: Vec<u64> = self
                .by_sender
                .get(&sender)
                .map(|q| q.range(..next).map(|(s, _)| *s).collect())
                .unwrap_or_default();
            for s in stale {
                if let Some(e) = self.remove_entry(&sender, s) {
                    dropped.push(e.hash);
                }
            }
            let unpayable: Vec<u64> = self.by_sender.get(&sender).map_or_else(Vec::new, |q| {
                let mut total: BTreeMap<&Denom, u128> = BTreeMap::new();
                let first = q.iter().find(|(_, e)| {
                    e.spend.iter().any(|c| {
                        let t = total.entry(&c.denom).or_insert(0);
                        *t = t.saturating_add(c.amount);
                        *t > balance(&sender, &c.denom)
                    })
                });
                first.map_or_else(Vec::new, |(s, _)| q.range(*s..).map(|(s, _)| *s).collect())
            });
            for s in unpayable {
                if let Some(e) = self.remove_entry(&sender, s) {
                    dropped.push(e.hash);
                }
            }
        }
        let ttl = self.limits.ttl_blocks;
        if height % 16 == 0 {
            // An expired transaction goes with everything after it, so no queue keeps a gap.
            let expired: Vec<(Address, u64)> = self
                .by_sender
                .iter()
                .flat_map(|(a, q)| {
                    let first = q.iter().find(|(_, e)| e.entered_at + ttl < height).map(|(s, _)| *s);
                    first
                        .into_iter()
                        .flat_map(move |f| q.range(f..).map(move |(s, _)| (*a, *s)))
                })
                .collect();
            for (a, s) in expired {
                if let Some(e) = self.remove_entry(&a, s) {
                    dropped.push(e.hash);
                }
            }
        }
        dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cand(sender: u8, seq: u64, fee: u128, len: usize) -> Candidate {
        let mut bytes = vec![sender; len];
        bytes.extend_from_slice(&seq.to_le_bytes());
        bytes.extend_from_slice(&fee.to_le_bytes());
        Candidate {
            hash: pazar_types::tx_hash(&bytes),
            bytes,
            sender: Address::Native([sender; 20]),
            sequence: seq,
            fee: Coin::new(fee, Denom::new("upzr").expect("valid")),
            spend: vec![Coin::new(fee, Denom::new("upzr").expect("valid"))],
        }
    }

    fn pool(max_txs: usize) -> Mempool {
        Mempool::new(MempoolLimits {
            max_txs,
            max_bytes: 1 << 20,
            ttl_blocks: 10,
        })
    }

    #[test]
    fn reaps_contiguous_sequences_per_sender_highest_rate_first() {
        let mut m = pool(100);
        m.insert(cand(1, 0, 100, 100), 0, &|_| 1_000, 1).expect("in");
        m.insert(cand(1, 1, 100, 100), 0, &|_| 1_000, 1).expect("in");
        // A gap at 2 would make 3 unincludable: refused, not parked.
        assert_eq!(
            m.insert(cand(1, 3, 900, 100), 0, &|_| 10_000, 1),
            Err(MempoolError::SequenceGap { expected: 2, got: 3 })
        );
        m.insert(cand(2, 5, 500, 100), 5, &|_| 1_000, 1).expect("in");
        let got = m.reap(10, 1 << 20, |a| if *a == Address::Native([2; 20]) { 5 } else { 0 });
        let want = [
            cand(2, 5, 500, 100).hash,
            cand(1, 0, 100, 100).hash,
            cand(1, 1, 100, 100).hash,
        ];
        assert_eq!(got.iter().map(|(h, _)| *h).collect::<Vec<_>>(), want);
    }

    #[test]
    fn refuses_duplicates_stale_and_far_sequences_and_unpayable_fees() {
        let mut m = pool(100);
        let c = cand(1, 3, 100, 10);
        m.insert(c.clone(), 3, &|_| 1_000, 1).expect("in");
        assert_eq!(m.insert(c, 3, &|_| 1_000, 1), Err(MempoolError::Duplicate));
        assert!(matches!(
            m.insert(cand(1, 2, 100, 10), 3, &|_| 1_000, 1),
            Err(MempoolError::StaleSequence { .. })
        ));
        assert!(matches!(
            m.insert(cand(1, 3 + MAX_SEQUENCE_AHEAD, 100, 10), 3, &|_| 1_000, 1),
            Err(MempoolError::TooFarAhead { .. })
        ));
        // 100 pending + 950 > 1000.
        assert!(matches!(
            m.insert(cand(1, 4, 950, 10), 3, &|_| 1_000, 1),
            Err(MempoolError::FeeUnpayable { pending: 100, .. })
        ));
    }

    #[test]
    fn tokens_a_transaction_moves_count_with_its_fee_so_a_sender_cannot_queue_what_it_cannot_pay() {
        let mut m = pool(100);
        let denom = Denom::new("upzr").expect("valid");
        // A transfer of 900 with a fee of 10: 910 of a balance of 1,000 is spoken for.
        let mut send = cand(1, 0, 10, 10);
        send.spend = vec![Coin::new(910, denom.clone())];
        m.insert(send.clone(), 0, &|_| 1_000, 1).expect("payable");
        // A second transaction whose fee alone (100) would fit the balance but not what is pending.
        assert!(matches!(
            m.insert(cand(1, 1, 100, 10), 0, &|_| 1_000, 1),
            Err(MempoolError::FeeUnpayable { pending: 910, .. })
        ));
        m.insert(cand(1, 1, 90, 10), 0, &|_| 1_000, 1).expect("exactly payable");
        m.insert(cand(1, 2, 1, 10), 0, &|_| 1_100, 1)
            .expect("payable with a larger balance");
        // After a block includes the transfer, the balance is 90 - 1 short: 1 and 2 go together.
        let dropped = m.update(&[send.hash], 2, |_| 1, |_, _| 89);
        assert_eq!(dropped, vec![cand(1, 1, 90, 10).hash, cand(1, 2, 1, 10).hash]);
        assert!(m.is_empty());
    }

    #[test]
    fn replacement_needs_a_fee_bump() {
        let mut m = pool(100);
        m.insert(cand(1, 0, 100, 10), 0, &|_| 10_000, 1).expect("in");
        assert_eq!(
            m.insert(cand(1, 0, 105, 10), 0, &|_| 10_000, 1),
            Err(MempoolError::SequenceTaken(0))
        );
        let r = m.insert(cand(1, 0, 110, 10), 0, &|_| 10_000, 1).expect("replaces");
        assert_eq!(r.dropped, vec![cand(1, 0, 100, 10).hash]);
        assert_eq!(m.len(), 1);
    }

    #[test]
    fn a_full_pool_evicts_the_cheapest_tail_or_refuses() {
        let mut m = pool(2);
        m.insert(cand(1, 0, 100, 10), 0, &|_| 10_000, 1).expect("in");
        m.insert(cand(2, 0, 300, 10), 0, &|_| 10_000, 1).expect("in");
        assert!(matches!(
            m.insert(cand(3, 0, 50, 10), 0, &|_| 10_000, 1),
            Err(MempoolError::Full { .. })
        ));
        let r = m.insert(cand(3, 0, 200, 10), 0, &|_| 10_000, 1).expect("evicts");
        assert_eq!(r.dropped, vec![cand(1, 0, 100, 10).hash]);
        assert_eq!(m.len(), 2);
        assert!(m.contains(&cand(2, 0, 300, 10).hash));
    }

    #[test]
    fn update_drops_included_used_and_expired() {
        let mut m = pool(100);
        let a0 = cand(1, 0, 100, 10);
        let a1 = cand(1, 1, 100, 10);
        let b = cand(2, 0, 100, 10);
        m.insert(a0.clone(), 0, &|_| 10_000, 1).expect("in");
        m.insert(a1.clone(), 0, &|_| 10_000, 1).expect("in");
        m.insert(b.clone(), 0, &|_| 10_000, 1).expect("in");
        // a0 included; the account's sequence jumped to 2 (a1 was replaced by another path).
        let dropped = m.update(&[a0.hash], 2, |a| if *a == a0.sender { 2 } else { 0 }, |_, _| 10_000);
        assert_eq!(dropped, vec![a1.hash]);
        assert_eq!(m.len(), 1);
        let dropped = m.update(&[], 32, |_| 0, |_, _| 10_000);
        assert_eq!(dropped, vec![b.hash]);
        assert!(m.is_empty());
        assert_eq!(m.bytes(), 0);
    }

    /// Regression (adversarial review): queues behind a gap were never included, so they never
    /// paid, and cheap middles behind expensive tails hid every tail from eviction: a full pool
    /// then refused any newcomer whatever it paid. Gaps are refused now, and eviction reads an
    /// exact index of tails.
    #[test]
    fn a_pool_filled_with_cheap_middles_behind_dear_tails_still_admits_a_higher_paying_newcomer() {
        let mut m = pool(1_000);
        assert!(matches!(
            m.insert(cand(9, 1, 100, 1024), 0, &|_| 1 << 40, 1),
            Err(MempoolError::SequenceGap { expected: 0, got: 1 })
        ));
        'fill: for s in 0..8u8 {
            for seq in 0..250u64 {
                if m.len() == 1_000 {
                    break 'fill;
                }
                let fee = if seq == 249 { 1_000 } else { 100 };
                m.insert(cand(s, seq, fee, 1024), 0, &|_| 1 << 40, 1)
                    .expect("contiguous");
            }
        }
        assert_eq!(m.len(), 1_000);
        let honest = cand(200, 0, 1_000_000, 300);
        let r = m
            .insert(honest.clone(), 0, &|_| 1 << 40, 1)
            .expect("evicts the cheapest tail");
        assert_eq!(r.dropped.len(), 1);
        assert!(m.contains(&honest.hash));
        assert_eq!(m.len(), 1_000);
    }
}
