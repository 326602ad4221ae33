//! The provider endpoint (pinned TLS, every request signed by the lease's owner): what it
//! answers about itself, a manifest sent to it, a lease's status and its log lines, and the
//! snapshots of a lease's persistent volumes (listings, chunks, restores).

use serde::{Deserialize, Serialize};

use pazar_types::Address;

use crate::manifest::Proto;

/// `GET /status`: who this endpoint is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ProviderStatus {
    pub provider: Address,
    pub chain_id: String,
}

/// `PUT /lease/{owner}/{dseq}/{gseq}/{oseq}/manifest`: the manifest was accepted and its
/// workloads are starting (the lease's status tells when they serve).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ManifestAccepted {
    /// The lease's label on this provider.
    pub lease: String,
    /// Always `deployed`.
    pub status: String,
}

/// What a service's replicas are doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ServiceState {
    /// Every replica runs.
    Running,
    /// The image is being pulled (see [`ServiceStatus::pull`]).
    Pulling,
    /// A replica was created and has not started yet.
    Starting,
    /// A replica stopped and is being restarted.
    Restarting,
    /// A replica stopped and will not be restarted.
    Exited,
    /// A replica the provider should run does not exist.
    Missing,
    /// A state this client does not know (from a newer provider).
    #[serde(other)]
    Unknown,
}

/// Where one exposed port of one replica can be reached.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Forward {
    pub port: u16,
    pub proto: Proto,
    pub host_port: u16,
    /// Replica index.
    pub replica: u32,
}

/// How far an image pull has come, as the registry announced its layers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PullProgress {
    pub image: String,
    /// Bytes downloaded so far.
    pub bytes: u64,
    /// Bytes of the layers whose size is known so far (layers already on the host excluded).
    pub total: u64,
}

/// One service of a lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ServiceStatus {
    pub name: String,
    /// Replicas asked for.
    pub replicas: u32,
    /// Replicas running now.
    pub running: u32,
    /// Restarts summed over replicas (kept across restarts: containers are restarted in place).
    pub restarts: u64,
    pub state: ServiceState,
    pub forwards: Vec<Forward>,
    /// The last exit code or error, when a replica is not running.
    pub last_error: Option<String>,
    /// Replicas evicted (removed and started afresh) for writing more than their ephemeral
    /// storage, where the runtime cannot cap it outright; summed over replicas.
    #[serde(default)]
    pub evictions: u64,
    /// Why the last eviction happened.
    #[serde(default)]
    pub last_eviction: Option<String>,
    /// The image pull under way for this service (state `pulling`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull: Option<PullProgress>,
    /// The deployment version (hex SHA-256 of the manifest) every replica of the service runs:
    /// a replica an update left unchanged runs the new version as it is. `None` while replicas
    /// run different versions (an update replaces them one at a time), or from a provider that
    /// does not say.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Why the lease's last manifest update was not applied (the image could not be had, a new
    /// replica did not serve in time): the replicas of the version above keep serving.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_error: Option<String>,
}

/// An address a tenant reaches a service at: a host port, or a name on the provider's ingress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ServiceUri {
    pub service: String,
    /// The service's own port.
    pub port: u16,
    /// The replica behind a host port (`None` for an ingress name, which balances them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replica: Option<u32>,
    /// Served by the provider's ingress (a host name) rather than a host port.
    #[serde(default)]
    pub ingress: bool,
    pub uri: String,
}

/// `GET /lease/{owner}/{dseq}/{gseq}/{oseq}/status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LeaseStatus {
    pub lease: String,
    /// Every replica of every service runs.
    pub ready: bool,
    pub services: Vec<ServiceStatus>,
    pub uris: Vec<ServiceUri>,
    /// The lease is in grace until the end of this block: its escrow ran dry, so its workload
    /// is stopped (its volumes kept) until a deposit resumes it; after that block it closes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grace_until: Option<u64>,
}

/// Which of a replica's outputs a log line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum LogStream {
    Stdout,
    Stderr,
    /// Both in one file, where the runtime keeps them so (the sandbox).
    Output,
}

/// One line of `GET /lease/{owner}/{dseq}/{gseq}/{oseq}/logs` (newline-delimited JSON): a line
/// of a replica's output, or an error that ended the stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(untagged)]
pub enum LogItem {
    Line(LogLine),
    Error { error: String },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LogLine {
    pub service: String,
    pub replica: u32,
    pub stream: LogStream,
    pub line: String,
}

/// The query of the logs request.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams))]
#[cfg_attr(feature = "openapi", into_params(parameter_in = Query))]
#[serde(deny_unknown_fields)]
pub struct LogsQuery {
    /// One service's lines only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// Lines of history to start with (default 100, at most 10,000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tail: Option<usize>,
    /// Keep the stream open and send lines as they come.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub follow: Option<bool>,
}

/// Bounds of volume snapshots: what one listing, one path and one request may hold. A listing
/// is read whole into memory by the tenant (`pazar_client::tenant::MAX_RESPONSE_BYTES`, 4 MiB),
/// so its JSON stays under [`snapshot_limits::MAX_LISTING_BYTES`]; a lease whose volumes need
/// more is refused with `too_large`, never listed in part.
pub mod snapshot_limits {
    /// Bytes of one content chunk: files are cut into pieces of this size, the last shorter.
    pub const CHUNK_BYTES: u64 = 1 << 20;
    /// Entries (directories, files, symlinks) of one listing, all volumes together.
    pub const MAX_ENTRIES: usize = 20_000;
    /// Bytes of one entry's path inside its volume.
    pub const MAX_PATH_BYTES: usize = 1024;
    /// Bytes of one path component (ext4's own limit).
    pub const MAX_NAME_BYTES: usize = 255;
    /// Directories nested inside a volume.
    pub const MAX_DEPTH: usize = 64;
    /// Bytes of a symlink's target.
    pub const MAX_TARGET_BYTES: usize = 1024;
    /// Bytes of a listing as JSON.
    pub const MAX_LISTING_BYTES: usize = 3 << 20;
    /// Chunks one fetch may ask for: their bytes and framing stay under the tenant's 4 MiB.
    pub const MAX_CHUNKS_PER_FETCH: usize = 3;

    const _: () = assert!(MAX_CHUNKS_PER_FETCH as u64 * (CHUNK_BYTES + 5) < (4 << 20) - (64 << 10));
    const _: () = assert!(MAX_LISTING_BYTES < 4 << 20);
    const _: () = assert!(MAX_NAME_BYTES <= MAX_PATH_BYTES);
}

/// The SHA-256 of a content chunk, as 64 hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ChunkHash(pub pazar_types::Hash32);

impl ChunkHash {
    /// The hash of `bytes`.
    pub fn of(bytes: &[u8]) -> ChunkHash {
        use sha2::{Digest, Sha256};
        ChunkHash(Sha256::digest(bytes).into())
    }

    /// 64 lower-case hex digits.
    pub fn hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Reads exactly 64 hex digits.
    pub fn parse(text: &str) -> Option<ChunkHash> {
        let mut out = [0u8; 32];
        (text.len() == 64 && hex::decode_to_slice(text, &mut out).is_ok()).then_some(ChunkHash(out))
    }
}

impl std::fmt::Display for ChunkHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.hex())
    }
}

impl Serialize for ChunkHash {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.hex())
    }
}

impl<'de> Deserialize<'de> for ChunkHash {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<ChunkHash, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        ChunkHash::parse(&text).ok_or_else(|| serde::de::Error::custom("a chunk hash is 64 hex digits"))
    }
}

/// `GET /lease/{owner}/{dseq}/{gseq}/{oseq}/snapshot`: every persistent volume of the lease, as
/// trees of entries whose file contents are named by chunk hashes (fetched separately, so only
/// chunks a tenant lacks travel). `PUT /lease/{owner}/{dseq}/{gseq}/{oseq}/restore` takes the
/// same, for a new lease, once its chunks are staged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct VolumeSnapshot {
    /// When the provider listed the volumes (ms since the Unix epoch).
    pub taken_unix_ms: u64,
    pub volumes: Vec<VolumeTree>,
}

/// One persistent volume of one service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct VolumeTree {
    pub service: String,
    pub volume: String,
    /// Parents before their children; the volume's root itself is the entry with the empty path.
    pub entries: Vec<SnapshotEntry>,
}

/// One entry of a volume: its path inside the volume (components joined by `/`, no leading
/// `/`, no `.` or `..`), what it is, and its owner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SnapshotEntry {
    pub path: String,
    pub kind: EntryKind,
    pub uid: u32,
    pub gid: u32,
}

/// What an entry is. FIFOs, sockets and device nodes are not listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum EntryKind {
    /// A directory; `mode` is its permission bits (at most `0o777`).
    Dir { mode: u32 },
    /// A regular file of `size` bytes: the SHA-256 of each [`snapshot_limits::CHUNK_BYTES`]
    /// piece in order, the last piece shorter.
    File {
        mode: u32,
        size: u64,
        #[cfg_attr(feature = "openapi", schema(value_type = Vec<pazar_types::openapi::Hash>))]
        chunks: Vec<ChunkHash>,
    },
    /// A symbolic link, never followed: its target as written.
    Symlink { target: String },
}

/// Why a listing cannot be restored (or is not one a provider may answer): the first problem
/// found, with the entry it was found at.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotCheck {
    #[error("the snapshot has more than {} entries", snapshot_limits::MAX_ENTRIES)]
    TooManyEntries,
    #[error("{service:?}/{volume:?} is not a service name and a volume name")]
    BadName { service: String, volume: String },
    #[error("volume {volume:?} of service {service:?} appears twice in the snapshot")]
    DuplicateVolume { service: String, volume: String },
    #[error("{service}/{volume}: {path:?} is an absolute path; paths are relative to the volume")]
    Absolute {
        service: String,
        volume: String,
        path: String,
    },
    #[error(
        "{service}/{volume}: {path:?} has an empty, `.` or `..` component, a NUL byte, or a component over {} bytes",
        snapshot_limits::MAX_NAME_BYTES
    )]
    BadComponent {
        service: String,
        volume: String,
        path: String,
    },
    #[error(
        "{service}/{volume}: a path of {len} bytes (at most {})",
        snapshot_limits::MAX_PATH_BYTES
    )]
    PathTooLong {
        service: String,
        volume: String,
        len: usize,
    },
    #[error(
        "{service}/{volume}: {path:?} is nested more than {} directories deep",
        snapshot_limits::MAX_DEPTH
    )]
    TooDeep {
        service: String,
        volume: String,
        path: String,
    },
    #[error("{service}/{volume}: {path:?} appears twice")]
    DuplicatePath {
        service: String,
        volume: String,
        path: String,
    },
    #[error("{service}/{volume}: {path:?} comes before its parent directory, or its parent is not a directory (a file or a symlink cannot hold entries)")]
    NoParentDir {
        service: String,
        volume: String,
        path: String,
    },
    #[error("{service}/{volume}: the root (empty path) must be a directory and come first")]
    BadRoot { service: String, volume: String },
    #[error("{service}/{volume}: {path:?} is {size} bytes but lists {chunks} chunks ({want} expected)")]
    ChunkCount {
        service: String,
        volume: String,
        path: String,
        size: u64,
        chunks: usize,
        want: u64,
    },
    #[error(
        "{service}/{volume}: the symlink {path:?} has an empty target, a NUL byte or one over {} bytes",
        snapshot_limits::MAX_TARGET_BYTES
    )]
    BadTarget {
        service: String,
        volume: String,
        path: String,
    },
    #[error("the snapshot's files add up to {total} bytes, more than the {max} bytes allowed")]
    TooLarge { total: u64, max: u64 },
}

/// What a checked snapshot holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SnapshotTotals {
    pub entries: usize,
    pub files: u64,
    /// Bytes of every file together.
    pub bytes: u64,
}

/// Number of chunks a file of `size` bytes is cut into.
pub fn chunk_count(size: u64) -> u64 {
    size.div_ceil(snapshot_limits::CHUNK_BYTES)
}

/// Length of chunk `index` of a file of `size` bytes.
pub fn chunk_len(size: u64, index: u64) -> u64 {
    size.saturating_sub(index * snapshot_limits::CHUNK_BYTES)
        .min(snapshot_limits::CHUNK_BYTES)
}

impl VolumeTree {
    /// Checks one volume's tree: every path relative and made of plain names, unique, within
    /// the bounds, below a directory listed before it (so nothing is ever below a file or a
    /// symlink), the root a directory; each file with as many chunks as its size needs. Modes
    /// are not checked: whoever writes them masks them to `0o777`.
    pub fn check(&self) -> Result<SnapshotTotals, SnapshotCheck> {
        use snapshot_limits::*;
        let (service, volume) = (self.service.clone(), self.volume.clone());
        let at = |path: &str| (service.clone(), volume.clone(), path.to_string());
        // The root exists whether or not it is listed (listed, it carries its mode and owner).
        let mut dirs: std::collections::BTreeSet<&str> = std::collections::BTreeSet::from([""]);
        let mut seen: std::collections::BTreeSet<&str> = std::collections::BTreeSet::new();
        let mut totals = SnapshotTotals::default();
        if self.entries.len() > MAX_ENTRIES {
            return Err(SnapshotCheck::TooManyEntries);
        }
        for (i, e) in self.entries.iter().enumerate() {
            totals.entries += 1;
            let p = e.path.as_str();
            if p.is_empty() {
                if i != 0 || !matches!(e.kind, EntryKind::Dir { .. }) {
                    return Err(SnapshotCheck::BadRoot { service, volume });
                }
                seen.insert("");
                continue;
            }
            if p.len() > MAX_PATH_BYTES {
                return Err(SnapshotCheck::PathTooLong {
                    service,
                    volume,
                    len: p.len(),
                });
            }
            if p.starts_with('/') {
                let (service, volume, path) = at(p);
                return Err(SnapshotCheck::Absolute { service, volume, path });
            }
            let bad = |c: &str| c.is_empty() || c == "." || c == ".." || c.contains('\0') || c.len() > MAX_NAME_BYTES;
            if p.split('/').any(bad) {
                let (service, volume, path) = at(p);
                return Err(SnapshotCheck::BadComponent { service, volume, path });
            }
            if p.split('/').count() > MAX_DEPTH {
                let (service, volume, path) = at(p);
                return Err(SnapshotCheck::TooDeep { service, volume, path });
            }
            if !seen.insert(p) {
                let (service, volume, path) = at(p);
                return Err(SnapshotCheck::DuplicatePath { service, volume, path });
            }
            let parent = p.rsplit_once('/').map_or("", |(d, _)| d);
            if !dirs.contains(parent) {
                let (service, volume, path) = at(p);
                return Err(SnapshotCheck::NoParentDir { service, volume, path });
            }
            match &e.kind {
                EntryKind::Dir { .. } => {
                    dirs.insert(p);
                }
                EntryKind::File { size, chunks, .. } => {
                    let want = chunk_count(*size);
                    if chunks.len() as u64 != want {
                        let (service, volume, path) = at(p);
                        return Err(SnapshotCheck::ChunkCount {
                            service,
                            volume,
                            path,
                            size: *size,
                            chunks: chunks.len(),
                            want,
                        });
                    }
                    totals.files += 1;
                    totals.bytes = totals.bytes.saturating_add(*size);
                }
                EntryKind::Symlink { target } => {
                    if target.is_empty() || target.contains('\0') || target.len() > MAX_TARGET_BYTES {
                        let (service, volume, path) = at(p);
                        return Err(SnapshotCheck::BadTarget { service, volume, path });
                    }
                }
            }
        }
        Ok(totals)
    }
}

impl VolumeSnapshot {
    /// Checks every tree ([`VolumeTree::check`]), that no (service, volume) appears twice, that
    /// the entries of all volumes stay within [`snapshot_limits::MAX_ENTRIES`], and, with
    /// `max_bytes`, that the files add up to at most that many bytes.
    pub fn check(&self, max_bytes: Option<u64>) -> Result<SnapshotTotals, SnapshotCheck> {
        let mut pairs = std::collections::BTreeSet::new();
        let mut all = SnapshotTotals::default();
        for t in &self.volumes {
            if !crate::names::is_service_name(&t.service) || !crate::names::is_volume_name(&t.volume) {
                return Err(SnapshotCheck::BadName {
                    service: crate::names::shorten(&t.service),
                    volume: crate::names::shorten(&t.volume),
                });
            }
            if !pairs.insert((t.service.as_str(), t.volume.as_str())) {
                return Err(SnapshotCheck::DuplicateVolume {
                    service: t.service.clone(),
                    volume: t.volume.clone(),
                });
            }
            let one = t.check()?;
            all.entries += one.entries;
            all.files += one.files;
            all.bytes = all.bytes.saturating_add(one.bytes);
            if all.entries > snapshot_limits::MAX_ENTRIES {
                return Err(SnapshotCheck::TooManyEntries);
            }
        }
        if let Some(max) = max_bytes.filter(|m| all.bytes > *m) {
            return Err(SnapshotCheck::TooLarge { total: all.bytes, max });
        }
        Ok(all)
    }

    /// Every chunk the snapshot names, each once.
    pub fn chunks(&self) -> std::collections::BTreeSet<ChunkHash> {
        self.volumes
            .iter()
            .flat_map(|t| &t.entries)
            .filter_map(|e| match &e.kind {
                EntryKind::File { chunks, .. } => Some(chunks.iter().copied()),
                _ => None,
            })
            .flatten()
            .collect()
    }
}

/// `POST /lease/{owner}/{dseq}/{gseq}/{oseq}/snapshot/chunks`: chunks of the lease's last
/// listing, at most [`snapshot_limits::MAX_CHUNKS_PER_FETCH`]. Answered as [`ChunkFrames`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ChunkRequest {
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<pazar_types::openapi::Hash>))]
    pub chunks: Vec<ChunkHash>,
}

/// What a provider answers for one chunk asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChunkAnswer {
    /// Its bytes (the asker checks they hash to the name).
    Data(Vec<u8>),
    /// The file it was read from changed since the listing: list again.
    Changed,
    /// The lease's last listing named no such chunk (or there was none).
    Unknown,
}

/// The binary answer to a [`ChunkRequest`] (`application/octet-stream`): for each chunk asked
/// for, in order, one tag byte (`0` data, `1` changed, `2` unknown) and, after `0`, the bytes'
/// length as a 4-byte big-endian number and the bytes. Binary, since a chunk in JSON would grow
/// by a third (base64) or double (hex).
pub struct ChunkFrames;

/// Why a [`ChunkFrames`] answer does not read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("the answer ends inside chunk {0}")]
    Truncated(usize),
    #[error("chunk {0} has the unknown tag {1}")]
    BadTag(usize, u8),
    #[error("chunk {0} is {1} bytes, more than a chunk holds")]
    TooLong(usize, u64),
    #[error("{0} bytes follow the last chunk asked for")]
    Trailing(usize),
}

impl ChunkFrames {
    /// Appends one answer to `out`.
    pub fn push(out: &mut Vec<u8>, answer: &ChunkAnswer) {
        match answer {
            ChunkAnswer::Data(d) => {
                debug_assert!(d.len() as u64 <= snapshot_limits::CHUNK_BYTES);
                out.push(0);
                out.extend_from_slice(&(d.len() as u32).to_be_bytes());
                out.extend_from_slice(d);
            }
            ChunkAnswer::Changed => out.push(1),
            ChunkAnswer::Unknown => out.push(2),
        }
    }

    /// Reads exactly `asked` answers from `bytes`, and nothing after them.
    pub fn decode(bytes: &[u8], asked: usize) -> Result<Vec<ChunkAnswer>, FrameError> {
        let mut out = Vec::with_capacity(asked.min(snapshot_limits::MAX_CHUNKS_PER_FETCH));
        let mut rest = bytes;
        for i in 0..asked {
            let (&tag, after) = rest.split_first().ok_or(FrameError::Truncated(i))?;
            rest = after;
            out.push(match tag {
                0 => {
                    let (len, after) = rest.split_first_chunk::<4>().ok_or(FrameError::Truncated(i))?;
                    let len = u64::from(u32::from_be_bytes(*len));
                    if len > snapshot_limits::CHUNK_BYTES {
                        return Err(FrameError::TooLong(i, len));
                    }
                    if (after.len() as u64) < len {
                        return Err(FrameError::Truncated(i));
                    }
                    let (data, after) = after.split_at(len as usize);
                    rest = after;
                    ChunkAnswer::Data(data.to_vec())
                }
                1 => ChunkAnswer::Changed,
                2 => ChunkAnswer::Unknown,
                t => return Err(FrameError::BadTag(i, t)),
            });
        }
        if !rest.is_empty() {
            return Err(FrameError::Trailing(rest.len()));
        }
        Ok(out)
    }
}

/// `PUT /lease/{owner}/{dseq}/{gseq}/{oseq}/restore/chunks/{hash}`: the chunk was checked
/// against its name and staged for the lease's restore.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ChunkStaged {
    #[cfg_attr(feature = "openapi", schema(value_type = pazar_types::openapi::Hash))]
    pub chunk: ChunkHash,
    /// Bytes staged for the lease so far, this chunk included.
    pub staged_bytes: u64,
    /// The most the lease may stage: its leased persistent storage.
    pub max_bytes: u64,
}

/// `PUT /lease/{owner}/{dseq}/{gseq}/{oseq}/restore`: the listing was checked, its chunks are
/// all staged, and it will be written into the lease's volumes when its first manifest
/// arrives, before any replica starts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RestoreStaged {
    pub volumes: u32,
    pub files: u64,
    /// Bytes of every file together.
    pub bytes: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_log_stream_reads_lines_and_its_closing_error() {
        let line: LogItem =
            serde_json::from_str(r#"{"service":"web","replica":0,"stream":"stdout","line":"hi"}"#).expect("line");
        assert!(matches!(line, LogItem::Line(LogLine { ref line, .. }) if line == "hi"));
        let err: LogItem = serde_json::from_str(r#"{"error":"gone"}"#).expect("error");
        assert_eq!(err, LogItem::Error { error: "gone".into() });
    }

    #[test]
    fn a_service_state_from_a_newer_provider_reads_as_unknown() {
        let s: ServiceState = serde_json::from_str("\"hibernating\"").expect("reads");
        assert_eq!(s, ServiceState::Unknown);
        assert_eq!(
            serde_json::to_string(&ServiceState::Pulling).expect("json"),
            "\"pulling\""
        );
    }

    fn tree(entries: &[(&str, EntryKind)]) -> VolumeTree {
        VolumeTree {
            service: "db".into(),
            volume: "data".into(),
            entries: entries
                .iter()
                .map(|(p, k)| SnapshotEntry {
                    path: (*p).into(),
                    kind: k.clone(),
                    uid: 0,
                    gid: 0,
                })
                .collect(),
        }
    }

    fn dir() -> EntryKind {
        EntryKind::Dir { mode: 0o755 }
    }

    fn file(size: u64) -> EntryKind {
        EntryKind::File {
            mode: 0o644,
            size,
            chunks: (0..chunk_count(size)).map(|i| ChunkHash([i as u8; 32])).collect(),
        }
    }

    fn link(t: &str) -> EntryKind {
        EntryKind::Symlink { target: t.into() }
    }

    /// One line per case: the entries, and the check's answer (its variant's name, or `ok`).
    fn check(entries: &[(&str, EntryKind)], expect: &str) {
        let got = match tree(entries).check() {
            Ok(_) => "ok".to_string(),
            Err(e) => format!("{e:?}").split([' ', '{', '(']).next().unwrap_or("").to_string(),
        };
        assert_eq!(got, expect, "{entries:?}");
    }

    #[test]
    fn a_tree_is_refused_for_each_way_out_of_its_volume_and_each_bound() {
        check(
            &[("", dir()), ("a", dir()), ("a/b", file(3)), ("l", link("/etc/passwd"))],
            "ok",
        );
        check(&[("a", file(0))], "ok");
        check(&[("../x", file(1))], "BadComponent");
        check(&[("a/../../x", file(1))], "BadComponent");
        check(&[("/etc/passwd", file(1))], "Absolute");
        check(&[("a//b", file(1))], "BadComponent");
        check(&[("./a", file(1))], "BadComponent");
        check(&[("a\0b", file(1))], "BadComponent");
        check(&[(&"n".repeat(256), file(1))], "BadComponent");
        check(&[("l", link("/etc")), ("l/passwd", file(1))], "NoParentDir");
        check(&[("f", file(1)), ("f/x", file(1))], "NoParentDir");
        check(&[("a/b", file(1)), ("a", dir())], "NoParentDir");
        check(&[("a", file(1)), ("a", file(1))], "DuplicatePath");
        check(&[("a", dir()), ("", dir())], "BadRoot");
        check(&[("", file(1))], "BadRoot");
        check(
            &[(
                "a",
                EntryKind::File {
                    mode: 0,
                    size: (1 << 20) + 1,
                    chunks: vec![ChunkHash([0; 32])],
                },
            )],
            "ChunkCount",
        );
        check(&[("l", link(""))], "BadTarget");
        let deep: Vec<String> = (1..=snapshot_limits::MAX_DEPTH + 1)
            .map(|n| vec!["d"; n].join("/"))
            .collect();
        let entries: Vec<(&str, EntryKind)> = deep.iter().map(|p| (p.as_str(), dir())).collect();
        check(&entries, "TooDeep");
        let long = vec!["d"; 600].join("/");
        check(&[(long.as_str(), dir())], "PathTooLong");
    }

    #[test]
    fn a_snapshot_is_bounded_in_bytes_and_names_each_volume_once() {
        let s = VolumeSnapshot {
            taken_unix_ms: 1,
            volumes: vec![tree(&[("a", file(10)), ("b", file(5))])],
        };
        assert_eq!(
            s.check(Some(15)),
            Ok(SnapshotTotals {
                entries: 2,
                files: 2,
                bytes: 15
            })
        );
        assert_eq!(s.check(Some(14)), Err(SnapshotCheck::TooLarge { total: 15, max: 14 }));
        let twice = VolumeSnapshot {
            taken_unix_ms: 1,
            volumes: vec![s.volumes[0].clone(), s.volumes[0].clone()],
        };
        assert!(matches!(twice.check(None), Err(SnapshotCheck::DuplicateVolume { .. })));
        // The wire form reads back as itself, and a hash is 64 hex digits.
        let text = serde_json::to_string(&s).expect("json");
        assert_eq!(serde_json::from_str::<VolumeSnapshot>(&text).expect("reads"), s);
        assert!(serde_json::from_str::<ChunkHash>("\"00\"").is_err());
    }

    #[test]
    fn chunk_frames_read_back_and_refuse_what_is_not_exactly_them() {
        let answers = vec![
            ChunkAnswer::Data(vec![1, 2, 3]),
            ChunkAnswer::Changed,
            ChunkAnswer::Unknown,
        ];
        let mut bytes = Vec::new();
        for a in &answers {
            ChunkFrames::push(&mut bytes, a);
        }
        assert_eq!(ChunkFrames::decode(&bytes, 3), Ok(answers));
        assert_eq!(ChunkFrames::decode(&bytes, 4), Err(FrameError::Truncated(3)));
        assert_eq!(ChunkFrames::decode(&bytes, 2), Err(FrameError::Trailing(1)));
        assert_eq!(ChunkFrames::decode(&bytes[..5], 1), Err(FrameError::Truncated(0)));
        assert_eq!(ChunkFrames::decode(&[7], 1), Err(FrameError::BadTag(0, 7)));
        assert_eq!(
            ChunkFrames::decode(&[0, 0, 0x10, 0, 1], 1),
            Err(FrameError::TooLong(0, (1 << 20) + 1))
        );
    }
}
