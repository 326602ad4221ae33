//! The training corpus, content-addressed chunks, their Merkle root, shards and batches.
