//! The training data: a deterministic corpus with checkable structure, content-addressed chunks
//! and their Merkle proofs, a chunk store that refuses corrupt files, shard assignment and
//! batches that any auditor re-derives from the same seed material.

use std::path::PathBuf;

use pazar_train::data::{
    assign_shards, chunk_hash, chunks, eval_batches, eval_count, generate_corpus, hex, merkle_leaf, merkle_node,
    merkle_root, sample_batch, tokens, verify_proof, Batch, ChunkStore, DataError, Dataset, CHUNK_BYTES,
};
use proptest::prelude::*;
use sha2::{Digest, Sha256};

fn sha256_hex(parts: &[&[u8]]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p);
    }
    hex(&h.finalize().into())
}

/// A directory under the system's temporary directory, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("pazar-train-data-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temporary directory");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn seed(byte: u8) -> [u8; 32] {
    [byte; 32]
}

fn batch_hash(b: &Batch) -> String {
    let mut h = Sha256::new();
    h.update(b.batch.to_le_bytes());
    h.update(b.seq_len.to_le_bytes());
    for t in b.tokens.iter().chain(&b.targets) {
        h.update(t.to_le_bytes());
    }
    hex(&h.finalize().into())
}

// ---------------------------------------------------------------------------------------------
// The corpus.

#[test]
fn corpus_of_seed_1_and_100_kb_is_frozen() {
    let corpus = generate_corpus(1, 100_000);
    assert_eq!(corpus.len(), 100_000);
    assert_eq!(
        sha256_hex(&[&corpus]),
        "62e473dbd320dc22556e48d21078ecb1de24d75c9fc777cd6207a90c2cc590e4",
        "the corpus generator changed: every dataset root it produced changes with it"
    );
}

#[test]
fn corpus_is_ascii_of_the_exact_length_and_a_prefix_of_a_longer_one() {
    let long = generate_corpus(7, 50_000);
    for len in [0, 1, 17, 16_384, 49_999, 50_000] {
        let short = generate_corpus(7, len);
        assert_eq!(short.len(), len);
        assert_eq!(short[..], long[..len]);
    }
    assert!(long.is_ascii());
    assert!(long.iter().all(|&b| b == b'\n' || (b' '..=b'~').contains(&b)));
}

#[test]
fn different_seeds_give_different_corpora() {
    assert_ne!(generate_corpus(1, 4096), generate_corpus(2, 4096));
}

#[test]
fn arithmetic_facts_in_the_corpus_are_correct() {
    let corpus = String::from_utf8(generate_corpus(3, 200_000)).expect("ASCII");
    let mut checked = 0;
    for line in corpus.lines() {
        let Some(body) = line.strip_suffix('.') else {
            continue;
        };
        let parts: Vec<&str> = body.split(' ').collect();
        let [a, op, b, "=", c] = parts[..] else {
            continue;
        };
        let (Ok(a), Ok(b), Ok(c)) = (a.parse::<u32>(), b.parse::<u32>(), c.parse::<u32>()) else {
            continue;
        };
        let want = match op {
            "+" => a + b,
            "-" => a - b,
            "*" => a * b,
            other => panic!("unexpected operator {other:?} in {line:?}"),
        };
        assert_eq!(c, want, "{line}");
        checked += 1;
    }
    assert!(checked > 500, "only {checked} facts found");
}

#[test]
fn counting_lines_count_up_by_one() {
    let corpus = String::from_utf8(generate_corpus(4, 200_000)).expect("ASCII");
    let mut checked = 0;
    for line in corpus.lines() {
        let Some(rest) = line.strip_prefix("count: ") else {
            continue;
        };
        let Some(rest) = rest.strip_suffix('.') else {
            continue; // The corpus's last line may be cut.
        };
        let numbers: Vec<u32> = rest.split(", ").map(|n| n.parse().expect("a number")).collect();
        assert!(numbers.windows(2).all(|w| w[1] == w[0] + 1), "{line}");
        checked += 1;
    }
    assert!(checked > 100, "only {checked} counting lines found");
}

#[test]
fn record_checks_repeat_the_records_values() {
    let corpus = String::from_utf8(generate_corpus(5, 300_000)).expect("ASCII");
    let mut checked = 0;
    // Drop the last paragraph: it may be cut.
    let paragraphs: Vec<&str> = corpus.split("\n\n").collect();
    for p in &paragraphs[..paragraphs.len() - 1] {
        if !p.starts_with("record ") {
            continue;
        }
        let (record, check) = p.split_once("\ncheck ").expect("a record has a check");
        let defined: Vec<&str> = record.lines().filter(|l| l.contains('=')).collect();
        for line in check.lines().skip(1) {
            assert!(defined.contains(&line), "{line:?} not in {defined:?}");
            checked += 1;
        }
    }
    assert!(checked > 500, "only {checked} repeated lines found");
}

#[test]
fn present_tense_verbs_agree_with_a_name_subject() {
    // "Ada sees ..." never "Ada see ...": after a name, a present verb takes its -s form.
    let corpus = String::from_utf8(generate_corpus(6, 200_000)).expect("ASCII");
    let base_forms = ["see", "find", "carry", "watch", "build", "sleep", "run", "sing"];
    for sentence in corpus.split(". ") {
        let words: Vec<&str> = sentence.split(' ').collect();
        if let [first, second, ..] = words[..] {
            let is_name = first.len() > 1
                && first.as_bytes()[0].is_ascii_uppercase()
                && first.bytes().skip(1).all(|b| b.is_ascii_lowercase())
                && !["The", "A", "An", "This", "Every", "Some", "Does", "Do", "Yesterday"].contains(&first)
                && !first.ends_with("s"); // Number words ("Six") start plural phrases.
            if is_name && base_forms.contains(&second) {
                panic!("disagreement in {sentence:?}");
            }
        }
    }
}

#[test]
fn tokens_are_the_bytes() {
    assert_eq!(tokens(b"a\n\xff"), vec![97, 10, 255]);
}

// ---------------------------------------------------------------------------------------------
// Chunks and the Merkle tree.

#[test]
fn chunk_hash_is_domain_separated_sha256() {
    assert_eq!(
        hex(&chunk_hash(b"abc")),
        sha256_hex(&[b"pazar/train/chunk/v1\0", b"abc"])
    );
    assert_ne!(hex(&chunk_hash(b"abc")), sha256_hex(&[b"abc"]));
}

#[test]
fn merkle_leaves_and_nodes_are_domain_separated() {
    let h = [7u8; 32];
    assert_eq!(hex(&merkle_leaf(&h)), sha256_hex(&[b"pazar/train/merkle/leaf\0", &h]));
    assert_eq!(
        hex(&merkle_node(&h, &[8; 32])),
        sha256_hex(&[b"pazar/train/merkle/node\0", &h, &[8; 32]])
    );
}

#[test]
fn the_corpus_is_cut_into_full_chunks_and_a_shorter_last_one() {
    let corpus = generate_corpus(1, 2 * CHUNK_BYTES + 5);
    let lens: Vec<usize> = chunks(&corpus).map(<[u8]>::len).collect();
    assert_eq!(lens, vec![CHUNK_BYTES, CHUNK_BYTES, 5]);
    let d = Dataset::from_corpus(&corpus).expect("dataset");
    assert_eq!(d.count(), 3);
    assert_eq!(d.total_bytes(), corpus.len() as u64);
    assert_eq!(d.chunk_hashes()[2], chunk_hash(&corpus[2 * CHUNK_BYTES..]));
}

#[test]
fn an_empty_corpus_is_not_a_dataset() {
    assert!(matches!(Dataset::from_corpus(&[]), Err(DataError::EmptyCorpus)));
}

/// A dataset of `count` chunks with different contents (the last one byte long).
fn dataset_of(count: usize) -> Dataset {
    let corpus = generate_corpus(count as u64, (count - 1) * CHUNK_BYTES + 1);
    Dataset::from_corpus(&corpus).expect("dataset")
}

#[test]
fn roots_of_small_trees_follow_the_promotion_rule() {
    let d1 = dataset_of(1);
    assert_eq!(d1.root(), merkle_root(1, &merkle_leaf(&d1.chunk_hashes()[0])));
    let d3 = dataset_of(3);
    let l: Vec<_> = d3.chunk_hashes().iter().map(merkle_leaf).collect();
    // The odd third leaf is promoted unchanged, not paired with itself.
    assert_eq!(
        d3.root(),
        merkle_root(3, &merkle_node(&merkle_node(&l[0], &l[1]), &l[2]))
    );
    let d5 = dataset_of(5);
    let l: Vec<_> = d5.chunk_hashes().iter().map(merkle_leaf).collect();
    let left = merkle_node(&merkle_node(&l[0], &l[1]), &merkle_node(&l[2], &l[3]));
    assert_eq!(d5.root(), merkle_root(5, &merkle_node(&left, &l[4])));
}

#[test]
fn every_proof_verifies_for_every_count_up_to_40() {
    let corpus = generate_corpus(11, 40 * CHUNK_BYTES);
    let all: Vec<&[u8]> = chunks(&corpus).collect();
    for count in 1..=40usize {
        let d = Dataset::from_corpus(&corpus[..count * CHUNK_BYTES]).expect("dataset");
        assert_eq!(d.count() as usize, count);
        let root = d.root();
        for index in 0..count as u32 {
            let proof = d.proof(index).expect("proof");
            let leaf = chunk_hash(all[index as usize]);
            assert!(
                verify_proof(&root, index, count as u32, &leaf, &proof),
                "count {count} index {index}"
            );
            // The same proof fails for another index, count, leaf, root or a changed sibling.
            let other = (index + 1) % count as u32;
            if other != index {
                assert!(!verify_proof(&root, other, count as u32, &leaf, &proof));
                assert!(!verify_proof(
                    &root,
                    index,
                    count as u32,
                    &chunk_hash(all[other as usize]),
                    &proof
                ));
            }
            let mut bad_root = root;
            bad_root[0] ^= 1;
            assert!(!verify_proof(&bad_root, index, count as u32, &leaf, &proof));
            for i in 0..proof.len() {
                let mut p = proof.clone();
                p[i][31] ^= 0x80;
                assert!(!verify_proof(&root, index, count as u32, &leaf, &p));
            }
            let mut longer = proof.clone();
            longer.push([0; 32]);
            assert!(!verify_proof(&root, index, count as u32, &leaf, &longer));
            if !proof.is_empty() {
                assert!(!verify_proof(
                    &root,
                    index,
                    count as u32,
                    &leaf,
                    &proof[..proof.len() - 1]
                ));
            }
        }
        let first = d.proof(0).expect("proof");
        assert!(!verify_proof(
            &root,
            count as u32,
            count as u32,
            &chunk_hash(all[0]),
            &first
        ));
        assert!(matches!(d.proof(count as u32), Err(DataError::ChunkIndex { .. })));
    }
}

#[test]
fn duplicating_the_last_chunk_changes_the_root() {
    // With duplicate-the-odd-leaf trees, [a, b, c] and [a, b, c, c] share a root; here they do not.
    let corpus = generate_corpus(12, 3 * CHUNK_BYTES);
    let three = Dataset::from_corpus(&corpus).expect("dataset");
    let mut four_bytes = corpus.clone();
    four_bytes.extend_from_slice(&corpus[2 * CHUNK_BYTES..]);
    let four = Dataset::from_corpus(&four_bytes).expect("dataset");
    assert_eq!(four.chunk_hashes()[3], three.chunk_hashes()[2]);
    assert_ne!(three.root(), four.root());
}

#[test]
fn a_proof_checked_against_another_count_is_refused() {
    let d = dataset_of(4);
    let proof = d.proof(0).expect("proof");
    let leaf = d.chunk_hashes()[0];
    assert!(verify_proof(&d.root(), 0, 4, &leaf, &proof));
    assert!(!verify_proof(&d.root(), 0, 0, &leaf, &proof));
    assert!(!verify_proof(&d.root(), 4, 4, &leaf, &proof));
    // Without the count in the root, index 0's path is the same in trees of 3 and 4 leaves.
    assert!(!verify_proof(&d.root(), 0, 3, &leaf, &proof));
    // Chunk 2 of 3 has the same path as chunk 1 of 2 (the third leaf is promoted).
    let d3 = dataset_of(3);
    let p2 = d3.proof(2).expect("proof");
    assert!(verify_proof(&d3.root(), 2, 3, &d3.chunk_hashes()[2], &p2));
    assert!(!verify_proof(&d3.root(), 1, 2, &d3.chunk_hashes()[2], &p2));
}

#[test]
fn the_root_commits_to_the_count_with_its_own_domain() {
    assert_eq!(
        hex(&merkle_root(3, &[5; 32])),
        sha256_hex(&[b"pazar/train/merkle/root\0", &3u32.to_le_bytes(), &[5; 32]])
    );
}

// ---------------------------------------------------------------------------------------------
// The held-out split.

#[test]
fn the_last_twentieth_of_chunks_and_at_least_one_is_held_out() {
    for (count, eval) in [(1, 1), (2, 1), (19, 1), (20, 1), (39, 1), (40, 2), (100, 5), (1001, 50)] {
        assert_eq!(eval_count(count), eval, "count {count}");
    }
    let d = dataset_of(45);
    assert_eq!(d.train_count(), 43);
    assert_eq!(d.eval_range(), 43..45);
    assert_eq!(dataset_of(1).train_count(), 0);
}

// ---------------------------------------------------------------------------------------------
// The chunk store.

#[test]
fn stored_chunks_come_back_and_give_the_same_dataset() {
    let tmp = TempDir::new("roundtrip");
    let store = ChunkStore::open(&tmp.0.join("chunks")).expect("store");
    let corpus = generate_corpus(21, 3 * CHUNK_BYTES + 100);
    let d = store.put_corpus(&corpus).expect("put");
    for (c, h) in chunks(&corpus).zip(d.chunk_hashes()) {
        assert_eq!(store.get(h).expect("get"), c);
        // Files are named by the hex of the hash.
        assert!(store.dir().join(hex(h)).is_file());
        // Putting a chunk again is harmless.
        assert_eq!(store.put(c).expect("put again"), *h);
    }
    let again = Dataset::from_store(&store, d.chunk_hashes()).expect("from store");
    assert_eq!(again, d);
    assert_eq!(again.root(), d.root());
}

#[test]
fn a_file_whose_bytes_do_not_match_its_name_is_refused_naming_the_chunk() {
    let tmp = TempDir::new("corrupt");
    let store = ChunkStore::open(&tmp.0).expect("store");
    let h = store.put(b"honest bytes").expect("put");
    std::fs::write(tmp.0.join(hex(&h)), b"honest bytez").expect("tamper");
    match store.get(&h) {
        Err(DataError::CorruptChunk { chunk, actual }) => {
            assert_eq!(chunk, hex(&h));
            assert_eq!(actual, hex(&chunk_hash(b"honest bytez")));
        }
        other => panic!("expected a corrupt chunk, got {other:?}"),
    }
    let err = Dataset::from_store(&store, &[h]).expect_err("corrupt");
    assert!(err.to_string().contains(&hex(&h)), "{err}");
    // Putting the honest bytes again repairs the file.
    assert_eq!(store.put(b"honest bytes").expect("put"), h);
    assert_eq!(store.get(&h).expect("repaired"), b"honest bytes");
}

#[test]
fn a_missing_chunk_is_named() {
    let tmp = TempDir::new("missing");
    let store = ChunkStore::open(&tmp.0).expect("store");
    match store.get(&[9; 32]) {
        Err(DataError::MissingChunk { chunk }) => assert_eq!(chunk, hex(&[9; 32])),
        other => panic!("expected a missing chunk, got {other:?}"),
    }
}

#[test]
fn an_oversized_file_is_refused_without_reading_it_all() {
    let tmp = TempDir::new("oversize");
    let store = ChunkStore::open(&tmp.0).expect("store");
    let big = vec![b'x'; 4 * CHUNK_BYTES];
    let h = chunk_hash(&big);
    std::fs::write(tmp.0.join(hex(&h)), &big).expect("plant");
    match store.get(&h) {
        Err(DataError::ChunkSize { len, .. }) => assert_eq!(len, CHUNK_BYTES + 1),
        other => panic!("expected a size error, got {other:?}"),
    }
    assert!(matches!(store.put(&big), Err(DataError::ChunkSize { .. })));
    assert!(matches!(store.put(&[]), Err(DataError::ChunkSize { .. })));
}

#[test]
fn a_short_chunk_before_the_last_is_refused() {
    let tmp = TempDir::new("short");
    let store = ChunkStore::open(&tmp.0).expect("store");
    let short = store.put(b"short").expect("put");
    let full = store.put(&vec![b'y'; CHUNK_BYTES]).expect("put");
    assert!(Dataset::from_store(&store, &[full, short]).is_ok());
    match Dataset::from_store(&store, &[short, full]) {
        Err(DataError::ChunkSize { index, len, .. }) => assert_eq!((index, len), (0, 5)),
        other => panic!("expected a size error, got {other:?}"),
    }
    assert!(matches!(Dataset::from_store(&store, &[]), Err(DataError::EmptyCorpus)));
}

// ---------------------------------------------------------------------------------------------
// Shards.

#[test]
fn shard_assignment_is_frozen() {
    let shards = assign_shards(&seed(1), b"worker-1", 1000, 8).expect("shards");
    assert_eq!(shards, vec![62, 104, 164, 370, 515, 722, 780, 982]);
}

#[test]
fn shards_depend_on_the_seed_and_the_worker() {
    let a = assign_shards(&seed(1), b"worker-1", 1000, 16).expect("shards");
    assert_eq!(a, assign_shards(&seed(1), b"worker-1", 1000, 16).expect("shards"));
    assert_ne!(a, assign_shards(&seed(2), b"worker-1", 1000, 16).expect("shards"));
    assert_ne!(a, assign_shards(&seed(1), b"worker-2", 1000, 16).expect("shards"));
    // The worker's length is hashed too, so moving bytes between seed and worker cannot collide.
    assert_ne!(
        assign_shards(&seed(1), b"", 1000, 16).expect("shards"),
        assign_shards(&seed(1), b"\0", 1000, 16).expect("shards")
    );
}

#[test]
fn asking_for_every_chunk_gives_every_chunk() {
    let all = assign_shards(&seed(3), b"w", 37, 37).expect("shards");
    assert_eq!(all, (0..37).collect::<Vec<u32>>());
}

#[test]
fn impossible_shard_sizes_are_refused() {
    assert!(matches!(
        assign_shards(&seed(1), b"w", 0, 1),
        Err(DataError::NoTrainChunks)
    ));
    assert!(matches!(
        assign_shards(&seed(1), b"w", 10, 0),
        Err(DataError::ShardSize { .. })
    ));
    assert!(matches!(
        assign_shards(&seed(1), b"w", 10, 11),
        Err(DataError::ShardSize { .. })
    ));
    assert!(matches!(
        assign_shards(&seed(1), b"w", u32::MAX, (1 << 20) + 1),
        Err(DataError::ShardSize { .. })
    ));
}

#[test]
fn every_chunk_is_about_equally_likely_to_be_assigned() {
    // 4000 draws of 3 out of 10: each chunk expects 1200; a biased sampler (modulo, or Floyd
    // done wrong) is far off.
    let mut hits = [0u32; 10];
    for i in 0..4000u32 {
        let mut s = [0u8; 32];
        s[..4].copy_from_slice(&i.to_le_bytes());
        for c in assign_shards(&s, b"w", 10, 3).expect("shards") {
            hits[c as usize] += 1;
        }
    }
    assert!(hits.iter().all(|&h| (1080..=1320).contains(&h)), "{hits:?}");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn shards_are_distinct_ascending_and_in_range(
        s in any::<[u8; 32]>(),
        worker in proptest::collection::vec(any::<u8>(), 0..40),
        train_chunks in 1u32..5000,
        frac in 0.0f64..=1.0,
    ) {
        let per_worker = ((f64::from(train_chunks) * frac) as u32).clamp(1, train_chunks);
        let shards = assign_shards(&s, &worker, train_chunks, per_worker).expect("shards");
        prop_assert_eq!(shards.len(), per_worker as usize);
        prop_assert!(shards.windows(2).all(|w| w[0] < w[1]));
        prop_assert!(shards.iter().all(|&c| c < train_chunks));
    }
}

// ---------------------------------------------------------------------------------------------
// Batches.

#[test]
fn a_training_batch_is_frozen() {
    let corpus = generate_corpus(1, 3 * CHUNK_BYTES);
    let shard: Vec<&[u8]> = chunks(&corpus).collect();
    let b = sample_batch(&shard, &seed(4), 17, 4, 32).expect("batch");
    assert_eq!(
        batch_hash(&b),
        "a18bd8d9c4738e0bab41c8636073a6e230c5f53c756f22c280502f414a5d47d0"
    );
}

#[test]
fn targets_are_the_next_tokens_of_a_window_of_one_chunk() {
    let corpus = generate_corpus(31, 2 * CHUNK_BYTES + 700);
    let shard: Vec<&[u8]> = chunks(&corpus).collect();
    let (batch, seq) = (16u32, 64u32);
    let b = sample_batch(&shard, &seed(5), 3, batch, seq).expect("batch");
    assert_eq!((b.batch, b.seq_len), (batch, seq));
    assert_eq!(b.tokens.len(), (batch * seq) as usize);
    assert_eq!(b.targets.len(), (batch * seq) as usize);
    for row in 0..batch as usize {
        let r = row * seq as usize..(row + 1) * seq as usize;
        let (x, y) = (&b.tokens[r.clone()], &b.targets[r]);
        assert_eq!(x[1..], y[..seq as usize - 1]);
        let window: Vec<u8> = x
            .iter()
            .chain(y.last())
            .map(|&t| u8::try_from(t).expect("a byte"))
            .collect();
        assert!(
            shard.iter().any(|c| c.windows(window.len()).any(|w| w == window)),
            "row {row} is not a window of one chunk"
        );
    }
}

#[test]
fn batches_depend_on_the_step_and_the_seed_and_nothing_else() {
    let corpus = generate_corpus(32, 2 * CHUNK_BYTES);
    let shard: Vec<&[u8]> = chunks(&corpus).collect();
    let b = sample_batch(&shard, &seed(6), 9, 4, 16).expect("batch");
    assert_eq!(b, sample_batch(&shard, &seed(6), 9, 4, 16).expect("batch"));
    assert_ne!(b, sample_batch(&shard, &seed(6), 10, 4, 16).expect("batch"));
    assert_ne!(b, sample_batch(&shard, &seed(7), 9, 4, 16).expect("batch"));
    // Sequence b of a larger batch is sequence b of a smaller one: each is drawn on its own.
    let bigger = sample_batch(&shard, &seed(6), 9, 8, 16).expect("batch");
    assert_eq!(bigger.tokens[..64], b.tokens[..]);
}

#[test]
fn chunks_too_short_for_a_sequence_are_skipped() {
    let long = vec![b'L'; 100];
    let short = vec![b's'; 32];
    let shard: Vec<&[u8]> = vec![&short, &long, &short];
    for step in 0..50 {
        let b = sample_batch(&shard, &seed(8), step, 4, 32).expect("batch");
        assert!(b.tokens.iter().all(|&t| t == u16::from(b'L')));
    }
    match sample_batch(&[&short[..]], &seed(8), 0, 1, 32) {
        Err(DataError::NoUsableChunk { needed, longest }) => assert_eq!((needed, longest), (33, 32)),
        other => panic!("expected no usable chunk, got {other:?}"),
    }
}

#[test]
fn empty_shards_and_bad_shapes_are_refused() {
    let c = [b'a'; 100];
    assert!(matches!(
        sample_batch(&[], &seed(1), 0, 1, 8),
        Err(DataError::EmptyShard)
    ));
    for (batch, seq) in [(0, 8), (1, 0), (1 << 16, 1 << 9)] {
        assert!(matches!(
            sample_batch(&[&c[..]], &seed(1), 0, batch, seq),
            Err(DataError::BatchShape { .. })
        ));
    }
}

#[test]
fn eval_batches_cover_held_out_chunks_in_order() {
    let a: Vec<u8> = (0..=255u8).cycle().take(100).collect();
    let b: Vec<u8> = (0..=255u8).rev().cycle().take(35).collect();
    // seq_len 10: windows of 11 bytes; a gives 9 windows (99 bytes), b gives 3.
    let batches = eval_batches(&[&a, &b], 4, 10, 100).expect("batches");
    let counts: Vec<u32> = batches.iter().map(|x| x.batch).collect();
    assert_eq!(counts, vec![4, 4, 4]);
    assert_eq!(batches[0].tokens[..10], tokens(&a[..10])[..]);
    assert_eq!(batches[0].targets[..10], tokens(&a[1..11])[..]);
    assert_eq!(batches[0].tokens[10..20], tokens(&a[11..21])[..]);
    assert_eq!(batches[2].tokens[10..20], tokens(&b[..10])[..]);
    // A cap on batches, and a last batch that is not full.
    assert_eq!(eval_batches(&[&a, &b], 4, 10, 2).expect("batches").len(), 2);
    let five = eval_batches(&[&a, &b], 5, 10, 100).expect("batches");
    assert_eq!(five.iter().map(|x| x.batch).collect::<Vec<_>>(), vec![5, 5, 2]);
    assert_eq!(five[2].tokens.len(), 20);
    assert!(matches!(
        eval_batches(&[&b], 1, 40, 1),
        Err(DataError::NoUsableChunk { .. })
    ));
    assert!(matches!(eval_batches(&[], 1, 4, 1), Err(DataError::EmptyShard)));
}
