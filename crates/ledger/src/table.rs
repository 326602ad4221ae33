//! An ordered table with an undo journal, so a failing transaction can be rolled back exactly.
//!
//! Iteration is in key order (a `BTreeMap`): nothing that reaches state depends on hashing order.

use std::collections::BTreeMap;
use std::ops::RangeBounds;

use borsh::{BorshDeserialize, BorshSerialize};
use sha2::{Digest, Sha256};

#[derive(Debug, Clone)]
pub struct Table<K, V> {
    map: BTreeMap<K, V>,
    /// Previous values of keys written since the last checkpoint, oldest first.
    journal: Vec<(K, Option<V>)>,
    /// Keys whose writes were committed since the last [`Table::drain_changes`] (may repeat).
    changed: Vec<K>,
    /// Rows read from the store, built into `map` in one go by [`Table::finish_load`].
    loading: Vec<(K, V)>,
}

impl<K, V> Default for Table<K, V> {
    fn default() -> Self {
        Table {
            map: BTreeMap::new(),
            journal: Vec::new(),
            changed: Vec::new(),
            loading: Vec::new(),
        }
    }
}

impl<K: Ord + Clone, V: Clone> Table<K, V> {
    pub fn get(&self, k: &K) -> Option<&V> {
        self.map.get(k)
    }

    pub fn contains(&self, k: &K) -> bool {
        self.map.contains_key(k)
    }

    pub fn insert(&mut self, k: K, v: V) {
        let old = self.map.insert(k.clone(), v);
        self.journal.push((k, old));
    }

    pub fn remove(&mut self, k: &K) -> Option<V> {
        let old = self.map.remove(k);
        if old.is_some() {
            self.journal.push((k.clone(), old.clone()));
        }
        old
    }

    pub fn range<R: RangeBounds<K>>(&self, r: R) -> impl Iterator<Item = (&K, &V)> {
        self.map.range(r)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.map.iter()
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Forgets the journal: everything written so far is kept, and its keys are remembered as
    /// changed for the store.
    pub fn commit(&mut self) {
        self.changed.extend(self.journal.drain(..).map(|(k, _)| k));
    }

    /// Undoes every write since the last commit, newest first.
    pub fn rollback(&mut self) {
        while let Some((k, old)) = self.journal.pop() {
            match old {
                Some(v) => {
                    self.map.insert(k, v);
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
        for (k, v) in &self.map {
            buf.clear();
            k.serialize(&mut buf).expect("writing into a Vec cannot fail");
            v.serialize(&mut buf).expect("writing into a Vec cannot fail");
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

pub(crate) fn encode_key<K: BorshSerialize>(id: u8, k: &K) -> Vec<u8> {
    let mut key = Vec::with_capacity(48);
    key.push(id);
    k.serialize(&mut key).expect("writing into a Vec cannot fail");
    key
}

impl<K: Ord + Clone + BorshSerialize + BorshDeserialize, V: Clone + BorshSerialize + BorshDeserialize> Table<K, V> {
    /// Appends the committed changes since the last call, one per key in key order, and
    /// forgets them. Uncommitted writes are not included.
    pub fn drain_changes(&mut self, id: u8, out: &mut Vec<StateChange>) {
        let mut keys = std::mem::take(&mut self.changed);
        keys.sort_unstable();
        keys.dedup();
        for k in keys {
            let value = self
                .map
                .get(&k)
                .map(|v| borsh::to_vec(v).expect("writing into a Vec cannot fail"));
            out.push(StateChange {
                key: encode_key(id, &k),
                value,
            });
        }
    }

    /// Appends every entry, in key order.
    pub fn dump(&self, id: u8, out: &mut Vec<StateChange>) {
        for (k, v) in &self.map {
            out.push(StateChange {
                key: encode_key(id, k),
                value: Some(borsh::to_vec(v).expect("writing into a Vec cannot fail")),
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
        if self.map.is_empty() {
            // Sorts (linear when already in order) and bulk-builds the tree.
            self.map = rows.into_iter().collect();
        } else {
            self.map.extend(rows);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let enc = |k: u32| encode_key(7, &k);
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

    #[test]
    fn commit_keeps_writes() {
        let mut t: Table<u32, u32> = Table::default();
        t.insert(1, 1);
        t.commit();
        t.rollback();
        assert_eq!(t.get(&1), Some(&1));
    }
}
