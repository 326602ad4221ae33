//! The store against a real redb file: blocks commit atomically, the state comes back
//! identical after reopening, proofs verify and fail when tampered with, pruning bounds history,
//! and a failing disk (redb's storage backend trait) loses no committed block.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use pazar_api::proof::verify_proof;
use pazar_ledger::state::{store_key, table_id};
use pazar_ledger::State;
use pazar_store::{Store, StoreError, StoreOptions};
use pazar_types::{Address, SigningKey};

use crate::common;

use common::*;

#[test]
fn reopened_store_restores_the_same_state_and_head() {
    let (dir, store, mut state, keys) = setup(StoreOptions::default());
    run_blocks(&store, &mut state, &keys, 5);
    let head = store.head().expect("head").expect("some");
    assert_eq!(head.height, 5);
    drop(store);
    let store = Store::open(&dir.path().join("db"), StoreOptions::default()).expect("reopens");
    let (restored, head2) = store.load_state().expect("loads");
    assert_eq!(head2, head);
    assert_eq!(restored.state_hash(), state.state_hash());
    assert_eq!(store.genesis_hash().expect("reads"), Some([9; 32]));
    // The header of each block carries the root after its parent.
    let b5 = store.block(5).expect("reads").expect("exists");
    let b4 = store.block(4).expect("reads").expect("exists");
    assert_eq!(b5.block.header.state_root, b4.state_root);
    assert_eq!(b5.block.header.parent, b4.block.header.hash());
    let tx = &b5.block.txs[2];
    assert_eq!(
        store.tx_location(&pazar_types::tx_hash(tx)).expect("reads"),
        Some((5, 2))
    );
    // Many at once, in order, unknown ones included.
    let first = pazar_types::tx_hash(&b4.block.txs[0]);
    assert_eq!(
        store
            .tx_locations(&[pazar_types::tx_hash(tx), [0xee; 32], first])
            .expect("reads"),
        vec![Some((5, 2)), None, Some((4, 0))]
    );
}

#[test]
fn the_same_blocks_give_the_same_roots_in_another_store() {
    let (_d1, s1, mut st1, keys) = setup(StoreOptions::default());
    let (_d2, s2, mut st2, _) = setup(StoreOptions { keep_versions: None });
    run_blocks(&s1, &mut st1, &keys, 4);
    run_blocks(&s2, &mut st2, &keys, 4);
    for h in 1..=4 {
        assert_eq!(
            s1.block(h).expect("r").expect("b").state_root,
            s2.block(h).expect("r").expect("b").state_root
        );
    }
    assert_eq!(
        s1.root_at(4).expect("root"),
        s1.head().expect("h").expect("h").state_root
    );
}

#[test]
fn proofs_verify_against_the_root_and_fail_when_tampered() {
    let (_dir, store, mut state, keys) = setup(StoreOptions::default());
    run_blocks(&store, &mut state, &keys, 3);
    let k = store_key(table_id::BALANCES, &(keys[1].address(), upzr()));
    let p = store.prove(&k).expect("proves");
    let value = p.value.clone().expect("balance exists");
    let expect: u128 = borsh::from_slice(&value).expect("a balance is a u128");
    assert_eq!(expect, state.balance(&keys[1].address(), &upzr()));
    verify_proof(&p.root, &k, Some(&value), &p.proof).expect("verifies");

    // Another value, another key, another root, or flipped proof bytes: all refused.
    let other: Vec<u8> = borsh::to_vec(&(expect + 1)).expect("enc");
    assert!(verify_proof(&p.root, &k, Some(&other), &p.proof).is_err());
    let k2 = store_key(table_id::BALANCES, &(keys[2].address(), upzr()));
    assert!(verify_proof(&p.root, &k2, Some(&value), &p.proof).is_err());
    let mut root = p.root;
    root[0] ^= 1;
    assert!(verify_proof(&root, &k, Some(&value), &p.proof).is_err());
    for i in [0, p.proof.len() / 2, p.proof.len() - 1] {
        let mut bad = p.proof.clone();
        bad[i] ^= 0x40;
        assert!(verify_proof(&p.root, &k, Some(&value), &bad).is_err(), "byte {i}");
    }

    // An absent key has a verifiable exclusion proof, which does not prove a value.
    let missing = store_key(table_id::BALANCES, &(Address::Native([0xee; 20]), upzr()));
    let p = store.prove(&missing).expect("proves");
    assert_eq!(p.value, None);
    verify_proof(&p.root, &missing, None, &p.proof).expect("exclusion verifies");
    assert!(verify_proof(&p.root, &missing, Some(&value), &p.proof).is_err());
}

#[test]
fn pruning_keeps_only_recent_versions() {
    let (_dir, store, mut state, keys) = setup(StoreOptions { keep_versions: Some(2) });
    run_blocks(&store, &mut state, &keys, 8);
    assert!(store.root_at(8).is_ok());
    assert!(store.root_at(7).is_ok());
    // The root node of version 3 was superseded at version 4 and pruned.
    assert!(matches!(
        store.root_at(3),
        Err(StoreError::Pruned(3)) | Err(StoreError::Tree(_))
    ));
    // Proofs at the head still work after pruning.
    let k = store_key(table_id::BALANCES, &(keys[0].address(), upzr()));
    let p = store.prove(&k).expect("proves");
    verify_proof(&p.root, &k, p.value.as_deref(), &p.proof).expect("verifies");
    // Blocks are kept whatever the pruning.
    assert!(store.block(1).expect("reads").is_some());
}

#[test]
fn a_second_open_of_the_same_data_dir_is_refused() {
    let (dir, _store, _state, _keys) = setup(StoreOptions::default());
    match Store::open(&dir.path().join("db"), StoreOptions::default()) {
        Err(StoreError::Locked) => {}
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("opened twice"),
    }
}

#[test]
fn a_corrupt_file_is_an_error_not_a_fresh_store() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("db");
    std::fs::write(&path, vec![0x5a; 64 * 1024]).expect("writes");
    let r = Store::open(&path, StoreOptions::default());
    assert!(r.is_err(), "garbage opened as a store");
    // And the file was not replaced.
    assert_eq!(std::fs::read(&path).expect("reads"), vec![0x5a; 64 * 1024]);
}

#[test]
fn a_block_that_does_not_follow_the_head_is_refused() {
    let (_dir, store, mut state, keys) = setup(StoreOptions::default());
    run_blocks(&store, &mut state, &keys, 1);
    let b1 = store.block(1).expect("r").expect("b");
    match store.commit_block(&b1.block, &b1.outcome, vec![]) {
        Err(StoreError::NotNext { head: 1, got: 1 }) => {}
        other => panic!("unexpected {other:?}"),
    }
    assert!(matches!(
        store.init_genesis(&mut state, [1; 32]),
        Err(StoreError::AlreadyInitialised(_))
    ));
}

/// A disk in memory that can be told to fail every write and sync, as a full or dying disk does.
#[derive(Debug, Clone, Default)]
struct FaultyDisk {
    bytes: Arc<RwLock<Vec<u8>>>,
    failing: Arc<AtomicBool>,
}

impl FaultyDisk {
    fn check(&self) -> Result<(), std::io::Error> {
        if self.failing.load(Ordering::SeqCst) {
            return Err(std::io::Error::other("injected: no space left on device"));
        }
        Ok(())
    }
}

impl redb::StorageBackend for FaultyDisk {
    fn len(&self) -> Result<u64, std::io::Error> {
        Ok(self.bytes.read().expect("lock").len() as u64)
    }
    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), std::io::Error> {
        let b = self.bytes.read().expect("lock");
        let start = offset as usize;
        let src = b
            .get(start..start + out.len())
            .ok_or_else(|| std::io::Error::other("read past the end"))?;
        out.copy_from_slice(src);
        Ok(())
    }
    fn set_len(&self, len: u64) -> Result<(), std::io::Error> {
        self.check()?;
        self.bytes.write().expect("lock").resize(len as usize, 0);
        Ok(())
    }
    fn sync_data(&self) -> Result<(), std::io::Error> {
        self.check()
    }
    fn write(&self, offset: u64, data: &[u8]) -> Result<(), std::io::Error> {
        self.check()?;
        let mut b = self.bytes.write().expect("lock");
        let start = offset as usize;
        b[start..start + data.len()].copy_from_slice(data);
        Ok(())
    }
}

#[test]
fn a_disk_failure_during_commit_is_an_error_and_the_store_keeps_the_previous_block() {
    let disk = FaultyDisk::default();
    let keys: Vec<SigningKey> = (1..=4).map(key).collect();
    let mut state = State::from_genesis(&genesis(&keys)).expect("genesis");
    let (committed_hash, committed_head) = {
        let store = Store::open_on(disk.clone(), StoreOptions::default()).expect("opens");
        store.init_genesis(&mut state, [9; 32]).expect("init");
        run_blocks(&store, &mut state, &keys, 3);
        let committed = (state.state_hash(), store.head().expect("head").expect("head"));

        let (block, outcome) = next_block(&store, &mut state, &keys);
        disk.failing.store(true, Ordering::SeqCst);
        let err = store
            .commit_block(&block, &outcome, state.take_changes())
            .expect_err("a failing disk cannot commit");
        assert!(err.to_string().contains("no space left"), "{err}");
        committed
    };

    // The node stops on the error; a restart on the repaired disk finds block 3 intact.
    disk.failing.store(false, Ordering::SeqCst);
    let store = Store::open_on(disk, StoreOptions::default()).expect("reopens");
    let (restored, head) = store.load_state().expect("loads");
    assert_eq!(head, committed_head);
    assert_eq!(restored.height, 3);
    assert_eq!(restored.state_hash(), committed_hash);
    let mut restored = restored;
    run_blocks(&store, &mut restored, &keys, 1);
    assert_eq!(store.head().expect("head").expect("head").height, 4);
}

#[test]
fn speculative_roots_are_the_roots_the_blocks_commit_and_write_nothing() {
    let (_dir, store, mut state, keys) = setup(StoreOptions::default());
    run_blocks(&store, &mut state, &keys, 2);
    let head = store.head().expect("head").expect("some");
    // Two blocks ahead, each change set taken as the node would after applying it.
    let mut probe = state.clone();
    let (b3, o3) = next_block(&store, &mut probe, &keys);
    let c3 = probe.take_changes();
    let mut sets = vec![c3.clone()];
    // Block 4's header needs block 3's root, which is what is being predicted: build it after.
    let predicted3 = store.speculative_roots(sets.clone()).expect("speculates")[0];
    assert_eq!(store.head().expect("head"), Some(head), "nothing was committed");
    let roots_before = store.root_at(head.height).expect("root");
    assert_eq!(roots_before, head.state_root);
    let committed3 = store.commit_block(&b3, &o3, c3).expect("commits").state_root;
    assert_eq!(predicted3, committed3);
    let (b4, o4) = next_block(&store, &mut probe, &keys);
    let c4 = probe.take_changes();
    // From the head before block 3, both versions at once.
    let (_dir2, store2, mut state2, _) = setup(StoreOptions::default());
    run_blocks(&store2, &mut state2, &keys, 2);
    sets.push(c4.clone());
    let both = store2.speculative_roots(sets).expect("speculates");
    let committed4 = store.commit_block(&b4, &o4, c4).expect("commits").state_root;
    assert_eq!(both, vec![committed3, committed4]);
    assert_eq!(store2.head().expect("head").map(|h| h.height), Some(2));
    assert!(matches!(store2.root_at(3), Err(StoreError::Pruned(3))));
}

/// The frames of a snapshot of `store`, through the wire encoding.
fn snapshot_frames(store: &Store, chunk: usize) -> Vec<pazar_store::Frame> {
    let mut wire = Vec::new();
    store
        .snapshot(chunk, |f| {
            pazar_store::write_frame(&mut wire, &f).expect("writes to memory");
            true
        })
        .expect("snapshot");
    let mut r = wire.as_slice();
    let mut frames = Vec::new();
    while let Some(f) = pazar_store::read_frame(&mut r).expect("reads back") {
        frames.push(f);
    }
    frames
}

fn split(frames: Vec<pazar_store::Frame>) -> (pazar_store::SnapshotHead, Vec<pazar_store::SnapshotChunk>) {
    let mut it = frames.into_iter();
    let Some(pazar_store::Frame::Head(head)) = it.next() else {
        panic!("a snapshot starts with its head")
    };
    let mut chunks = Vec::new();
    for f in it {
        match f {
            pazar_store::Frame::Chunk(c) => chunks.push(c),
            pazar_store::Frame::End => break,
            pazar_store::Frame::Head(_) => panic!("a second head"),
        }
    }
    (head, chunks)
}

fn store_head(store: &Store) -> pazar_store::Head {
    store.head().expect("head").expect("initialised")
}

#[test]
fn a_snapshot_restores_into_an_empty_store_and_the_chain_goes_on_with_the_same_roots() {
    let (_d1, s1, mut st1, keys) = setup(StoreOptions::default());
    run_blocks(&s1, &mut st1, &keys, 6);
    let (head, chunks) = split(snapshot_frames(&s1, 3));
    assert_eq!(head.height, 6);
    assert!(chunks.len() > 3, "small chunks: several of them ({})", chunks.len());

    let d2 = tempfile::tempdir().expect("tempdir");
    let s2 = Store::open(&d2.path().join("db"), StoreOptions::default()).expect("opens");
    let mut r = s2.begin_restore(&head).expect("an empty store");
    for c in chunks {
        r.add_chunk(c).expect("an honest chunk verifies");
    }
    let h1 = store_head(&s1);
    r.finish(&s2, h1, &[("proof", b"certificate")]).expect("restores");
    assert_eq!(s2.node_record("proof").expect("reads"), Some(b"certificate".to_vec()));
    assert_eq!(store_head(&s2), h1);
    assert_eq!(s2.snapshot_base().expect("reads"), Some(6));
    assert_eq!(s1.snapshot_base().expect("reads"), None);
    assert_eq!(s2.block(6).expect("reads"), None, "no history before the snapshot");
    let (mut st2, _) = s2.load_state().expect("loads");
    assert_eq!(st2.state_hash(), st1.state_hash());
    // Both stores commit the next blocks with the same roots.
    run_blocks(&s1, &mut st1, &keys, 3);
    run_blocks(&s2, &mut st2, &keys, 3);
    for h in 7..=9 {
        assert_eq!(
            s1.block(h).expect("r").expect("b").state_root,
            s2.block(h).expect("r").expect("b").state_root
        );
    }
    // A restored store serves snapshots in turn.
    let (again, _) = split(snapshot_frames(&s2, 100));
    assert_eq!(again.state_root, store_head(&s1).state_root);
}

#[test]
fn a_snapshot_chunk_that_was_tampered_with_is_refused() {
    let (_d1, s1, mut st1, keys) = setup(StoreOptions::default());
    run_blocks(&s1, &mut st1, &keys, 3);
    let (head, chunks) = split(snapshot_frames(&s1, 4));
    let d2 = tempfile::tempdir().expect("tempdir");
    let s2 = Store::open(&d2.path().join("db"), StoreOptions::default()).expect("opens");
    let refused = |head: &pazar_store::SnapshotHead, chunks: &[pazar_store::SnapshotChunk]| {
        let mut r = s2.begin_restore(head).expect("an empty store");
        for c in chunks {
            r.add_chunk(c.clone())?;
        }
        r.finish(&s2, store_head(&s1), &[]).map(|_| ())
    };
    // A changed value.
    let mut bad = chunks.clone();
    bad[1].entries[0].1.push(0);
    assert!(matches!(refused(&head, &bad), Err(StoreError::Snapshot(_))));
    // An entry left out.
    let mut bad = chunks.clone();
    bad[1].entries.remove(1);
    assert!(matches!(refused(&head, &bad), Err(StoreError::Snapshot(_))));
    // An entry added.
    let mut bad = chunks.clone();
    bad[0].entries.push((b"\x01forged".to_vec(), b"money".to_vec()));
    assert!(matches!(refused(&head, &bad), Err(StoreError::Snapshot(_))));
    // Chunks out of order.
    let mut bad = chunks.clone();
    bad.swap(0, 1);
    assert!(matches!(refused(&head, &bad), Err(StoreError::Snapshot(_))));
    // A chunk missing at the end: the tree is incomplete.
    let bad = &chunks[..chunks.len() - 1];
    assert!(matches!(refused(&head, bad), Err(StoreError::Snapshot(_))));
    // No chunks at all, and a head that says so.
    let mut empty = head.clone();
    empty.entries = 0;
    assert!(matches!(refused(&empty, &[]), Err(StoreError::Snapshot(_))));
    // Honest chunks against another root.
    let mut other = head.clone();
    other.state_root[0] ^= 1;
    assert!(matches!(refused(&other, &chunks), Err(StoreError::Snapshot(_))));
    // Nothing was written by any of these.
    assert_eq!(s2.head().expect("reads"), None);
    // And the honest snapshot still restores.
    refused(&head, &chunks).expect("restores");
    // Into a store that holds a chain, no snapshot is restored.
    assert!(matches!(s2.begin_restore(&head), Err(StoreError::Snapshot(_))));
}

#[test]
fn a_snapshot_stream_that_is_cut_or_oversized_is_an_error() {
    let (_d1, s1, mut st1, keys) = setup(StoreOptions::default());
    run_blocks(&s1, &mut st1, &keys, 2);
    let mut wire = Vec::new();
    s1.snapshot(4, |f| {
        pazar_store::write_frame(&mut wire, &f).expect("writes to memory");
        true
    })
    .expect("snapshot");
    for cut in [1, 3, 5, wire.len() - 3, wire.len() - 1] {
        let mut r = &wire[..cut];
        let mut err = None;
        loop {
            match pazar_store::read_frame(&mut r) {
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(e) => {
                    err = Some(e);
                    break;
                }
            }
        }
        assert!(
            matches!(err, Some(pazar_store::SnapshotError::Truncated)),
            "cut at {cut}: {err:?}"
        );
    }
    let huge = (pazar_store::MAX_FRAME_BYTES as u32 + 1).to_le_bytes();
    assert!(matches!(
        pazar_store::read_frame(&mut &huge[..]),
        Err(pazar_store::SnapshotError::FrameTooLarge(_))
    ));
    let garbage = [3u8, 0, 0, 0, 9, 9, 9];
    assert!(matches!(
        pazar_store::read_frame(&mut &garbage[..]),
        Err(pazar_store::SnapshotError::Decode(_))
    ));
}
