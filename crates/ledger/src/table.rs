//! An ordered table with an undo journal, so a failing transaction can be rolled back exactly.
//!
//! Iteration is in key order (a `BTreeMap`): nothing that reaches state depends on hashing order.

use std::collections::btree_map::Entry;
use std::collections::BTreeMap;
use std::ops::RangeBounds;

use borsh::{BorshDeserialize, BorshSerialize};
use sha2::{Digest, Sha256};

#[derive(Debug, Clone)]
pub struct Table<K, V> {
    map: BTreeMap<K, Slot<V>>,
    /// Previous slots of keys written since the last checkpoint, oldest first.
    journal: Vec<(K, Option<Slot<V>>)>,
    /// Keys whose writes were committed since the last [`Table::drain_changes`] (may repeat).
    changed: Vec<K>,
    /// Rows read from the store, built into `map` in one go by [`Table::finish_load`].
    loading: Vec<(K, V)>,
    /// `Some(floor)` while a savepoint is open: a commit then keeps its journal entries and only
    /// raises the floor a rollback stops at, so closing the savepoint undoes every write made
    /// under it, committed or not.
    savepoint: Option<usize>,
}

/// A value and whether its key is already accounted for in the next change set.
///
/// A block writes the same few keys over and over (the fee pool's balance once per
/// transaction); recording a key in `changed` only on its first write since the last drain
/// keeps the change list, and the sort that deduplicates it, proportional to the keys touched
/// rather than to the writes. `dirty` is set by every insert and restored with the old slot on
/// rollback, so it is true exactly when a live (not rolled back) write since the last drain
/// left the value: that write's key is in `changed`, or its journal entry will put it there at
/// commit.
#[derive(Debug, Clone)]
struct Slot<V> {
    value: V,
    dirty: bool,
}

impl<K, V> Default for Table<K, V> {
    fn default() -> Self {
        Table {
            map: BTreeMap::new(),
            journal: Vec::new(),
            changed: Vec::new(),
            loading: Vec::new(),
            savepoint: None,
        }
    }
}

impl<K: Ord + Clone, V: Clone> Table<K, V> {
    pub fn get(&self, k: &K) -> Option<&V> {
        self.map.get(k).map(|s| &s.value)
    }

    pub fn contains(&self, k: &K) -> bool {
        self.map.contains_key(k)
    }

    pub fn insert(&mut self, k: K, v: V) {
        let old = self.map.insert(k.clone(), Slot { value: v, dirty: true });
        self.journal.push((k, old));
    }

    pub fn remove(&mut self, k: &K) -> Option<V> {
        let old = self.map.remove(k)?;
        let value = old.value.clone();
        self.journal.push((k.clone(), Some(old)));
        Some(value)
    }

    /// Sets `k` to what `f` makes of its current value, with one search: `Ok(Some(v))` stores
    /// `v`, `Ok(None)` removes the entry (or leaves it absent), and an error changes nothing.
    /// Journaled exactly as the [`Table::insert`] or [`Table::remove`] it stands for.
    pub fn try_update<E>(&mut self, k: K, f: impl FnOnce(Option<&V>) -> Result<Option<V>, E>) -> Result<(), E> {
        match self.map.entry(k) {
            Entry::Occupied(mut e) => match f(Some(&e.get().value))? {
                Some(value) => {
                    let old = std::mem::replace(e.get_mut(), Slot { value, dirty: true });
                    self.journal.push((e.key().clone(), Some(old)));
                }
                None => {
                    let (k, old) = e.remove_entry();
                    self.journal.push((k, Some(old)));
                }
            },
            Entry::Vacant(e) => {
                if let Some(value) = f(None)? {
                    self.journal.push((e.key().clone(), None));
                    e.insert(Slot { value, dirty: true });
                }
            }
        }
        Ok(())
    }

    pub fn range<R: RangeBounds<K>>(&self, r: R) -> impl Iterator<Item = (&K, &V)> {
        self.map.range(r).map(|(k, s)| (k, &s.value))
    }

    pub fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.map.iter().map(|(k, s)| (k, &s.value))
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Forgets the journal: everything written so far is kept, and its keys are remembered as
    /// changed for the store (a key already remembered since the last drain is not repeated).
    #[inline]
    pub fn commit(&mut self) {
        // A transaction touches a few of the state's tables and every commit visits them all.
        if !self.journal.is_empty() {
            match &mut self.savepoint {
                Some(floor) => *floor = self.journal.len(),
                None => self.record_journal(),
            }
        }
    }

    /// Opens a savepoint: from now on commits are provisional, see [`Table::close_savepoint`].
    /// Opened between transactions, with nothing uncommitted.
    pub fn open_savepoint(&mut self) {
        debug_assert!(self.journal.is_empty(), "a savepoint opens with nothing uncommitted");
        debug_assert!(self.savepoint.is_none(), "savepoints do not nest");
        self.savepoint = Some(0);
    }

    /// Undoes every write since [`Table::open_savepoint`], committed or not: the table is
    /// exactly as it was, change list included.
    pub fn close_savepoint(&mut self) {
        self.savepoint = None;
        self.rollback();
    }

    fn record_journal(&mut self) {
        for (k, old) in self.journal.drain(..) {
            // A dirty old slot means an earlier live write of this key since the last drain,
            // already recorded or recorded by this same loop.
            if !old.is_some_and(|s| s.dirty) {
                self.changed.push(k);
            }
        }
    }

    /// The journal's length now: a mark for [`Table::changes_since`].
    pub(crate) fn journal_mark(&self) -> usize {
        self.journal.len()
    }

    /// How many entries the next drain appends at most.
    pub(crate) fn pending_changes(&self) -> usize {
        self.changed.len()
    }

    /// Undoes every write since the last commit, newest first.
    pub fn rollback(&mut self) {
        let floor = self.savepoint.unwrap_or(0);
        while self.journal.len() > floor {
            let Some((k, old)) = self.journal.pop() else { break };
            match old {
                Some(slot) => {
                    self.map.insert(k, slot);
                }
                None => {
                    self.map.remove(&k);
                }
            }
        }
    }
}

impl<K: BorshSerialize, V: BorshSerialize> Table<K, V> {
    /// Feeds `name`, the entry count and every entry, in key order, into `h`.
    pub fn hash_into(&self, name: &str, h: &mut Sha256) {
        h.update((name.len() as u32).to_le_bytes());
        h.update(name.as_bytes());
        h.update((self.map.len() as u64).to_le_bytes());
        let mut buf = Vec::with_capacity(256);
        for (k, slot) in &self.map {
            buf.clear();
            k.serialize(&mut buf).expect("writing into a Vec cannot fail");
            slot.value.serialize(&mut buf).expect("writing into a Vec cannot fail");
            h.update((buf.len() as u32).to_le_bytes());
            h.update(&buf);
        }
    }
}

/// One entry of the state as the store keeps it: `key` is the table's id byte followed by the
/// Borsh encoding of the table key; `value` is the Borsh encoding of the value, `None` when the
/// entry was deleted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateChange {
    pub key: Vec<u8>,
    pub value: Option<Vec<u8>>,
}

/// The Borsh encoding of `v` after the optional `prefix` byte, in a vector of exactly that size.
/// `scratch` is reused between calls: encoding into it and copying out allocates once per entry,
/// where `borsh::to_vec` reserves 1 KiB for every value however small (a change set or a dump
/// would hold a kilobyte per entry).
pub(crate) fn encode_exact<T: BorshSerialize>(scratch: &mut Vec<u8>, prefix: Option<u8>, v: &T) -> Vec<u8> {
    scratch.clear();
    scratch.extend(prefix);
    v.serialize(scratch).expect("writing into a Vec cannot fail");
    scratch.as_slice().to_vec()
}

impl<K: Ord + Clone + BorshSerialize + BorshDeserialize, V: Clone + BorshSerialize + BorshDeserialize> Table<K, V> {
    /// Appends the committed changes since the last call, one per key in key order, and
    /// forgets them. Called between transactions, with nothing uncommitted (every public
    /// method of the state commits or rolls back before it returns).
    pub fn drain_changes(&mut self, id: u8, out: &mut Vec<StateChange>) {
        debug_assert!(self.journal.is_empty(), "changes are drained with nothing uncommitted");
        let mut keys = std::mem::take(&mut self.changed);
        keys.sort_unstable();
        keys.dedup();
        out.reserve(keys.len());
        let mut scratch = Vec::with_capacity(256);
        for k in keys {
            let value = self.map.get_mut(&k).map(|slot| {
                slot.dirty = false;
                encode_exact(&mut scratch, None, &slot.value)
            });
            out.push(StateChange {
                key: encode_exact(&mut scratch, Some(id), &k),
                value,
            });
        }
    }

    /// Appends the entries written at journal positions from `mark` on, one per key in key
    /// order with its value now (`None` when removed): under a savepoint, where commits keep
    /// the journal, exactly what [`Table::drain_changes`] would give for those writes had they
    /// been made outside it.
    pub(crate) fn changes_since(&self, mark: usize, id: u8, out: &mut Vec<StateChange>) {
        let mut keys: Vec<&K> = self
            .journal
            .get(mark..)
            .unwrap_or_default()
            .iter()
            .map(|(k, _)| k)
            .collect();
        keys.sort_unstable();
        keys.dedup();
        out.reserve(keys.len());
        let mut scratch = Vec::with_capacity(256);
        for k in keys {
            let value = self
                .map
                .get(k)
                .map(|slot| encode_exact(&mut scratch, None, &slot.value));
            out.push(StateChange {
                key: encode_exact(&mut scratch, Some(id), k),
                value,
            });
        }
    }

    /// Appends every entry, in key order.
    pub fn dump(&self, id: u8, out: &mut Vec<StateChange>) {
        out.reserve(self.map.len());
        let mut scratch = Vec::with_capacity(256);
        for (k, slot) in &self.map {
            out.push(StateChange {
                key: encode_exact(&mut scratch, Some(id), k),
                value: Some(encode_exact(&mut scratch, None, &slot.value)),
            });
        }
    }

    /// Takes one stored entry (key without its id byte) as committed state; it is visible after
    /// [`Table::finish_load`].
    pub fn load(&mut self, key: &[u8], value: &[u8]) -> Result<(), borsh::io::Error> {
        let k = K::try_from_slice(key)?;
        let v = V::try_from_slice(value)?;
        self.loading.push((k, v));
        Ok(())
    }

    /// Builds the loaded entries into the table. Store order (Borsh bytes) is not always key
    /// order; `BTreeMap::from_iter` sorts the rows and builds the tree in bulk.
    pub fn finish_load(&mut self) {
        let rows = std::mem::take(&mut self.loading);
        if rows.is_empty() {
            return;
        }
        let rows = rows.into_iter().map(|(k, value)| (k, Slot { value, dirty: false }));
        if self.map.is_empty() {
            // Sorts (linear when already in order) and bulk-builds the tree.
            self.map = rows.collect();
        } else {
            self.map.extend(rows);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn change_set_keys_are_the_store_keys_that_proofs_name() {
        let key = (pazar_types::Address::Native([7; 20]), 42u64);
        assert_eq!(
            encode_exact(&mut Vec::new(), Some(9), &key),
            pazar_types::state_key::store_key(9, &key)
        );
    }

    #[test]
    fn rollback_restores_inserts_overwrites_and_removals() {
        let mut t: Table<u32, &str> = Table::default();
        t.insert(1, "a");
        t.insert(2, "b");
        t.commit();
        t.insert(1, "A");
        t.insert(3, "c");
        t.remove(&2);
        t.insert(2, "B");
        t.rollback();
        assert_eq!(
            t.iter().map(|(k, v)| (*k, *v)).collect::<Vec<_>>(),
            vec![(1, "a"), (2, "b")]
        );
    }

    #[test]
    fn closing_a_savepoint_undoes_committed_and_rolled_back_writes_and_keeps_the_change_list() {
        let mut t: Table<u32, u32> = Table::default();
        t.insert(1, 10);
        t.insert(2, 20);
        t.commit();
        let drain = |t: &mut Table<u32, u32>| {
            let mut out = Vec::new();
            t.drain_changes(0, &mut out);
            out
        };
        let mut reference = t.clone();
        t.open_savepoint();
        t.insert(1, 11);
        t.remove(&2);
        t.commit();
        // A rollback under the savepoint stops at the last commit.
        t.insert(3, 30);
        t.rollback();
        assert_eq!(t.get(&1), Some(&11));
        assert_eq!(t.get(&3), None);
        t.insert(4, 40);
        t.commit();
        t.close_savepoint();
        assert_eq!(t.iter().collect::<Vec<_>>(), reference.iter().collect::<Vec<_>>());
        // The store sees exactly the writes made outside the savepoint.
        assert_eq!(drain(&mut t), drain(&mut reference));
        // And later writes are recorded as usual.
        t.insert(5, 50);
        t.commit();
        assert_eq!(drain(&mut t).len(), 1);
    }

    #[test]
    fn drained_changes_hold_committed_writes_once_in_key_order() {
        let mut t: Table<u32, u32> = Table::default();
        t.insert(2, 20);
        t.insert(1, 10);
        t.commit();
        t.insert(3, 30);
        t.rollback();
        t.remove(&2);
        t.insert(1, 11);
        t.commit();
        let mut out = Vec::new();
        t.drain_changes(7, &mut out);
        let enc = |k: u32| pazar_types::state_key::store_key(7, &k);
        assert_eq!(
            out,
            vec![
                StateChange {
                    key: enc(1),
                    value: Some(borsh::to_vec(&11u32).expect("vec"))
                },
                StateChange {
                    key: enc(2),
                    value: None
                },
            ]
        );
        out.clear();
        t.drain_changes(7, &mut out);
        assert!(out.is_empty());
    }

    /// One step of a random table history.
    #[derive(Debug, Clone)]
    enum Op {
        Insert(u8, u32),
        Remove(u8),
        /// `try_update` storing the value, removing the entry, or failing.
        Update(u8, Option<u32>, bool),
        Commit,
        Rollback,
        Drain,
    }

    fn op() -> impl proptest::strategy::Strategy<Value = Op> {
        use proptest::prelude::*;
        prop_oneof![
            4 => (0..8u8, any::<u32>()).prop_map(|(k, v)| Op::Insert(k, v)),
            2 => (0..8u8).prop_map(Op::Remove),
            3 => (0..8u8, proptest::option::of(any::<u32>()), any::<bool>()).prop_map(|(k, v, fail)| Op::Update(k, v, fail)),
            2 => Just(Op::Commit),
            1 => Just(Op::Rollback),
            1 => Just(Op::Drain),
        ]
    }

    proptest::proptest! {
        /// The first-write-only bookkeeping of changed keys drains exactly what recording every
        /// committed write and deduplicating at the end would: the committed keys since the last
        /// drain, with their current values, whatever the interleaving of writes, removals,
        /// rollbacks and drains.
        #[test]
        fn drained_changes_match_a_table_that_records_every_write(ops in proptest::collection::vec(op(), 0..80)) {
            let mut t: Table<u8, u32> = Table::default();
            // The model: the committed map, the uncommitted writes on top, and every committed key.
            let mut committed = BTreeMap::<u8, u32>::new();
            let mut current = BTreeMap::<u8, u32>::new();
            let mut pending = Vec::<u8>::new();
            let mut changed = Vec::<u8>::new();
            let check_drain = |t: &mut Table<u8, u32>, changed: &mut Vec<u8>, current: &BTreeMap<u8, u32>| {
                let mut want_keys = std::mem::take(changed);
                want_keys.sort_unstable();
                want_keys.dedup();
                let want: Vec<StateChange> = want_keys
                    .iter()
                    .map(|k| StateChange {
                        key: pazar_types::state_key::store_key(3, k),
                        value: current.get(k).map(|v| borsh::to_vec(v).expect("vec")),
                    })
                    .collect();
                let mut got = Vec::new();
                t.drain_changes(3, &mut got);
                assert_eq!(got, want);
            };
            for op in ops {
                match op {
                    Op::Insert(k, v) => {
                        t.insert(k, v);
                        current.insert(k, v);
                        pending.push(k);
                    }
                    Op::Remove(k) => {
                        let had = current.remove(&k);
                        assert_eq!(t.remove(&k), had);
                        // Removing an absent key writes nothing.
                        if had.is_some() {
                            pending.push(k);
                        }
                    }
                    Op::Update(k, v, fail) => {
                        let seen = current.get(&k).copied();
                        let r = t.try_update(k, |old| {
                            assert_eq!(old.copied(), seen);
                            if fail {
                                Err(())
                            } else {
                                Ok(v)
                            }
                        });
                        assert_eq!(r.is_err(), fail);
                        if !fail {
                            match v {
                                Some(v) => {
                                    current.insert(k, v);
                                    pending.push(k);
                                }
                                None => {
                                    if current.remove(&k).is_some() {
                                        pending.push(k);
                                    }
                                }
                            }
                        }
                    }
                    Op::Commit => {
                        t.commit();
                        committed = current.clone();
                        changed.append(&mut pending);
                    }
                    Op::Rollback => {
                        t.rollback();
                        current = committed.clone();
                        pending.clear();
                    }
                    Op::Drain => {
                        // Drains happen between transactions, with everything committed.
                        t.commit();
                        committed = current.clone();
                        changed.append(&mut pending);
                        check_drain(&mut t, &mut changed, &current);
                    }
                }
                assert_eq!(t.iter().map(|(k, v)| (*k, *v)).collect::<BTreeMap<_, _>>(), current);
            }
            t.commit();
            changed.append(&mut pending);
            check_drain(&mut t, &mut changed, &current);
        }
    }

    #[test]
    fn commit_keeps_writes() {
        let mut t: Table<u32, u32> = Table::default();
        t.insert(1, 1);
        t.commit();
        t.rollback();
        assert_eq!(t.get(&1), Some(&1));
    }
}
