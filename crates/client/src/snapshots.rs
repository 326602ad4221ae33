//! A tenant's copies of its leases' persistent volumes, kept as content-addressed chunks: a
//! pull lists a lease's volumes and fetches only the chunks the store lacks (so a second pull of
//! a volume that barely changed moves little), and a push uploads a group's latest snapshot into
//! a new lease before its manifest is sent, so its services start on the data.
//!
//! The store is a directory: `chunks/<hex>` (one file per chunk, named by its SHA-256 and
//! checked against it when it arrives and when it is read back) and `latest-<gseq>.json` (the
//! last complete listing of the group's lease). A listing becomes the latest only once every
//! chunk it names is in the store, so a pull cut short leaves the previous snapshot whole.
//! Chunks no latest listing names are deleted after a pull.
//!
//! What is lost on a move is what the workload wrote after the last pull finished.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use pazar_api::provider::{snapshot_limits, ChunkAnswer, ChunkHash, EntryKind, SnapshotCheck, VolumeSnapshot};
use pazar_types::LeaseId;

use crate::tenant::{ProviderClient, TenantError};

/// Listings tried by one pull when chunks change under it (a busy volume), before it gives up.
pub const MAX_LIST_ATTEMPTS: usize = 3;

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("snapshot store {path}: {reason}")]
    Store { path: String, reason: String },
    #[error(transparent)]
    Provider(#[from] TenantError),
    #[error("the provider's listing is not a valid snapshot: {0}")]
    BadListing(#[from] SnapshotCheck),
    #[error("chunk {0} the provider sent does not hash to its name")]
    BadChunk(ChunkHash),
    #[error("the provider does not know chunk {0} of its own listing")]
    UnknownChunk(ChunkHash),
    #[error("the volumes kept changing while they were read ({MAX_LIST_ATTEMPTS} listings); try again")]
    KeptChanging,
    /// The listing passed its own checks but no provider would restore it; it is not kept,
    /// so the previous snapshot stays the latest.
    #[error("the provider's listing could not be restored anywhere, so it is not kept: {0}")]
    Unrestorable(String),
    #[error("there is no snapshot of group {0} to restore")]
    NoSnapshot(u32),
    #[error("cannot start an async runtime: {0}")]
    Runtime(String),
}

/// What a pull did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullReport {
    pub files: u64,
    /// Bytes of every file of the snapshot.
    pub bytes_total: u64,
    pub chunks_fetched: u64,
    pub bytes_fetched: u64,
    /// When the provider listed the volumes.
    pub at_unix_ms: u64,
}

/// What a push did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushReport {
    pub files: u64,
    pub bytes_total: u64,
    pub chunks_sent: u64,
    pub bytes_sent: u64,
}

/// Largest listing file read back.
const MAX_LISTING_FILE: u64 = snapshot_limits::MAX_LISTING_BYTES as u64 + 4096;

pub struct SnapshotStore {
    dir: PathBuf,
}

fn runtime() -> Result<tokio::runtime::Runtime, SnapshotError> {
    crate::provider_runtime().map_err(|e| SnapshotError::Runtime(e.to_string()))
}

impl SnapshotStore {
    /// Opens (making it if needed) the store in `dir`.
    pub fn open(dir: &Path) -> Result<SnapshotStore, SnapshotError> {
        let s = SnapshotStore { dir: dir.to_path_buf() };
        std::fs::create_dir_all(s.chunks_dir()).map_err(|e| s.err(&s.chunks_dir(), e))?;
        Ok(s)
    }

    fn err(&self, path: &Path, e: impl std::fmt::Display) -> SnapshotError {
        SnapshotError::Store {
            path: path.display().to_string(),
            reason: e.to_string(),
        }
    }

    fn chunks_dir(&self) -> PathBuf {
        self.dir.join("chunks")
    }

    fn chunk_path(&self, h: &ChunkHash) -> PathBuf {
        self.chunks_dir().join(h.hex())
    }

    fn latest_path(&self, gseq: u32) -> PathBuf {
        self.dir.join(format!("latest-{gseq}.json"))
    }

    /// The chunk's bytes, if the store has them and they still hash to the name.
    fn read_chunk(&self, h: &ChunkHash) -> Option<Vec<u8>> {
        use std::io::Read;
        let mut out = Vec::new();
        std::fs::File::open(self.chunk_path(h))
            .ok()?
            .take(snapshot_limits::CHUNK_BYTES + 1)
            .read_to_end(&mut out)
            .ok()?;
        (ChunkHash::of(&out) == *h).then_some(out)
    }

    fn has_chunk(&self, h: &ChunkHash) -> bool {
        self.chunk_path(h).is_file()
    }

    /// Lists the lease's volumes, fetches the chunks not yet in the store (only changed ones
    /// travel), then makes the listing this group's latest. Blocking.
    pub fn pull(&self, client: &ProviderClient, lease: &LeaseId) -> Result<PullReport, SnapshotError> {
        self.pull_within(client, lease, None)
    }

    /// [`SnapshotStore::pull`] of a lease whose persistent volumes hold at most `max_bytes` (the
    /// group's leased persistent storage): a listing any new lease of the group would refuse
    /// (larger than that, larger than a provider takes, chunks whose lengths do not fit their
    /// files) is refused before anything is fetched or replaced.
    pub fn pull_within(
        &self,
        client: &ProviderClient,
        lease: &LeaseId,
        max_bytes: Option<u64>,
    ) -> Result<PullReport, SnapshotError> {
        let out = runtime()?.block_on(self.pull_async(client, lease, max_bytes));
        if out.is_err() {
            // Chunks of a listing that was not kept go again: what the store holds stays the
            // latest listings' chunks (plus one pull's worth while it runs), however often a
            // provider's listings fail.
            let _ = self.collect_garbage();
        }
        out
    }

    /// Every chunk of the listing is in the store with the length its place in its file needs
    /// (what a provider's restore checks again).
    fn check_lengths(&self, snap: &VolumeSnapshot) -> Result<(), SnapshotError> {
        for t in &snap.volumes {
            for e in &t.entries {
                if let EntryKind::File { size, chunks, .. } = &e.kind {
                    for (i, h) in chunks.iter().enumerate() {
                        let want = pazar_api::provider::chunk_len(*size, i as u64);
                        let got = std::fs::metadata(self.chunk_path(h)).map(|m| m.len()).ok();
                        if got != Some(want) {
                            return Err(SnapshotError::Unrestorable(format!(
                                "chunk {i} of {}/{}/{} is {got:?} bytes, its place needs {want}",
                                t.service, t.volume, e.path
                            )));
                        }
                    }
                }
            }
        }
        Ok(())
    }

    async fn pull_async(
        &self,
        client: &ProviderClient,
        lease: &LeaseId,
        max_bytes: Option<u64>,
    ) -> Result<PullReport, SnapshotError> {
        let (mut fetched, mut fetched_bytes) = (0u64, 0u64);
        for _ in 0..MAX_LIST_ATTEMPTS {
            let snap = client.snapshot(lease).await?;
            let totals = snap.check(max_bytes)?;
            let missing: Vec<ChunkHash> = snap.chunks().into_iter().filter(|h| !self.has_chunk(h)).collect();
            let mut changed = false;
            for batch in missing.chunks(snapshot_limits::MAX_CHUNKS_PER_FETCH) {
                let answers = client.snapshot_chunks(lease, batch).await?;
                for (h, a) in batch.iter().zip(answers) {
                    match a {
                        ChunkAnswer::Data(bytes) => {
                            if ChunkHash::of(&bytes) != *h {
                                return Err(SnapshotError::BadChunk(*h));
                            }
                            let path = self.chunk_path(h);
                            pazar_files::write_atomic(&path, &bytes, 0o600).map_err(|e| self.err(&path, e))?;
                            fetched += 1;
                            fetched_bytes += bytes.len() as u64;
                        }
                        ChunkAnswer::Changed => changed = true,
                        ChunkAnswer::Unknown => return Err(SnapshotError::UnknownChunk(*h)),
                    }
                }
                if changed {
                    break;
                }
            }
            if changed {
                continue;
            }
            let path = self.latest_path(lease.gseq);
            let bytes = serde_json::to_vec(&snap).map_err(|e| self.err(&path, e))?;
            if bytes.len() > snapshot_limits::MAX_LISTING_BYTES {
                return Err(SnapshotError::Unrestorable(format!(
                    "the listing is {} bytes, a provider takes at most {}",
                    bytes.len(),
                    snapshot_limits::MAX_LISTING_BYTES
                )));
            }
            self.check_lengths(&snap)?;
            pazar_files::write_atomic(&path, &bytes, 0o600).map_err(|e| self.err(&path, e))?;
            self.collect_garbage()?;
            return Ok(PullReport {
                files: totals.files,
                bytes_total: totals.bytes,
                chunks_fetched: fetched,
                bytes_fetched: fetched_bytes,
                at_unix_ms: snap.taken_unix_ms,
            });
        }
        Err(SnapshotError::KeptChanging)
    }

    /// Whether group `gseq` has a snapshot, and its size (bytes of its files).
    pub fn latest(&self, gseq: u32) -> Result<Option<(VolumeSnapshot, u64)>, SnapshotError> {
        use std::io::Read;
        let path = self.latest_path(gseq);
        let f = match std::fs::File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(self.err(&path, e)),
        };
        let mut bytes = Vec::new();
        f.take(MAX_LISTING_FILE + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| self.err(&path, e))?;
        if bytes.len() as u64 > MAX_LISTING_FILE {
            return Err(self.err(&path, format!("larger than {MAX_LISTING_FILE} bytes")));
        }
        let snap: VolumeSnapshot = serde_json::from_slice(&bytes).map_err(|e| self.err(&path, e))?;
        let totals = snap.check(None)?;
        Ok(Some((snap, totals.bytes)))
    }

    /// Uploads the group's latest snapshot into the new `lease` (before its manifest is sent):
    /// every chunk, then the listing. Returns what was sent. Blocking.
    pub fn push(&self, client: &ProviderClient, lease: &LeaseId) -> Result<PushReport, SnapshotError> {
        runtime()?.block_on(self.push_async(client, lease))
    }

    async fn push_async(&self, client: &ProviderClient, lease: &LeaseId) -> Result<PushReport, SnapshotError> {
        let (snap, bytes_total) = self.latest(lease.gseq)?.ok_or(SnapshotError::NoSnapshot(lease.gseq))?;
        let (mut sent, mut sent_bytes) = (0u64, 0u64);
        for h in snap.chunks() {
            let bytes = self
                .read_chunk(&h)
                .ok_or_else(|| self.err(&self.chunk_path(&h), "missing, or its bytes no longer hash to its name"))?;
            sent_bytes += bytes.len() as u64;
            client.stage_chunk(lease, &h, bytes).await?;
            sent += 1;
        }
        let staged = client.stage_restore(lease, &snap).await?;
        Ok(PushReport {
            files: staged.files,
            bytes_total,
            chunks_sent: sent,
            bytes_sent: sent_bytes,
        })
    }

    /// Deletes the chunks no latest listing names.
    fn collect_garbage(&self) -> Result<(), SnapshotError> {
        let mut keep: BTreeSet<ChunkHash> = BTreeSet::new();
        let rd = std::fs::read_dir(&self.dir).map_err(|e| self.err(&self.dir, e))?;
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(gseq) = name
                .strip_prefix("latest-")
                .and_then(|n| n.strip_suffix(".json"))
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            if let Some((snap, _)) = self.latest(gseq)? {
                keep.extend(snap.chunks());
            }
        }
        let dir = self.chunks_dir();
        for e in std::fs::read_dir(&dir).map_err(|e| self.err(&dir, e))?.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if ChunkHash::parse(&name).is_some_and(|h| !keep.contains(&h)) {
                let _ = std::fs::remove_file(e.path());
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pazar_api::provider::{EntryKind, SnapshotEntry, VolumeTree};

    fn snap(chunks: &[ChunkHash]) -> VolumeSnapshot {
        VolumeSnapshot {
            taken_unix_ms: 7,
            volumes: vec![VolumeTree {
                service: "db".into(),
                volume: "data".into(),
                entries: chunks
                    .iter()
                    .enumerate()
                    .map(|(i, h)| SnapshotEntry {
                        path: format!("f{i}"),
                        kind: EntryKind::File {
                            mode: 0o644,
                            size: 1,
                            chunks: vec![*h],
                        },
                        uid: 0,
                        gid: 0,
                    })
                    .collect(),
            }],
        }
    }

    #[test]
    fn a_store_keeps_each_group_s_latest_listing_and_only_the_chunks_one_names() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SnapshotStore::open(dir.path()).expect("opens");
        assert_eq!(store.latest(1).expect("reads"), None);
        let (a, b) = (ChunkHash::of(b"a"), ChunkHash::of(b"b"));
        for (h, bytes) in [(a, b"a"), (b, b"b")] {
            pazar_files::write_atomic(&store.chunk_path(&h), bytes, 0o600).expect("chunk");
        }
        let s = snap(&[a]);
        pazar_files::write_atomic(&store.latest_path(1), &serde_json::to_vec(&s).expect("json"), 0o600)
            .expect("latest");
        store.collect_garbage().expect("collects");
        assert!(store.has_chunk(&a) && !store.has_chunk(&b), "b is named by no listing");
        assert_eq!(store.latest(1).expect("reads"), Some((s, 1)));
        assert_eq!(store.read_chunk(&a), Some(b"a".to_vec()));
        // A chunk whose bytes were changed on disk is not read back as itself.
        std::fs::write(store.chunk_path(&a), b"z").expect("tamper");
        assert_eq!(store.read_chunk(&a), None);
    }
}
