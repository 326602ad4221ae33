//! An ordered table with an undo journal, so a failing transaction can be rolled back exactly.
//!
//! Iteration is in key order (a `BTreeMap`): nothing that reaches state depends on hashing order.

use std::collections::BTreeMap;
use std::ops::RangeBounds;

use borsh::BorshSerialize;
use sha2::{Digest, Sha256};

#[derive(Debug, Clone)]
pub struct Table<K, V> {
    map: BTreeMap<K, V>,
    /// Previous values of keys written since the last checkpoint, oldest first.
    journal: Vec<(K, Option<V>)>,
}

impl<K, V> Default for Table<K, V> {
    fn default() -> Self {
        Table {
            map: BTreeMap::new(),
            journal: Vec::new(),
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

    /// Forgets the journal: everything written so far is kept.
    pub fn commit(&mut self) {
        self.journal.clear();
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
    fn commit_keeps_writes() {
        let mut t: Table<u32, u32> = Table::default();
        t.insert(1, 1);
        t.commit();
        t.rollback();
        assert_eq!(t.get(&1), Some(&1));
    }
}
