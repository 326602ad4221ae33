//! Snapshots of persistent volumes, read and written on the host: a volume's tree listed with
//! the SHA-256 of every 1 MiB chunk of every file ([`list`]), one chunk read back by where the
//! listing found it ([`read_chunk`]), and a listing written into an empty volume ([`restore`]).
//!
//! A volume's contents are the tenant's and hostile, and its workload may change them while
//! they are read. So nothing here resolves a path: every directory is opened relative to its
//! parent's descriptor with `O_NOFOLLOW | O_DIRECTORY`, a file only after `fstatat` (without
//! following) said it is a regular file and then with `O_NOFOLLOW | O_NONBLOCK`, and its own
//! `fstat` must say so again (a FIFO or a symlink swapped in meanwhile is skipped, never read
//! or followed). A symlink is listed with its target and never opened. Writing a restore, every
//! name is checked first ([`VolumeTree::check`]: no `/`, `.`, `..`, NUL, nothing below a file
//! or a symlink), the volume must be empty, directories are made and opened one component at a
//! time without following, files are created `O_EXCL | O_NOFOLLOW`, modes are masked to `0o777`
//! and symlinks are made last, so no write can go through one. Device nodes cannot appear:
//! workloads have no `CAP_MKNOD` and volumes are mounted `nodev`.
//!
//! Must not know: HTTP, leases, the ledger, or which runtime mounted the volume.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::{openat, readlinkat, AtFlags, OFlag};
use nix::sys::stat::{fchmod, fstat, fstatat, mkdirat, FileStat, Mode, SFlag};

use pazar_api::provider::{
    chunk_len, snapshot_limits, ChunkHash, EntryKind, SnapshotCheck, SnapshotEntry, SnapshotTotals, VolumeTree,
};

/// Why a volume could not be listed, read or restored.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("{what} {path:?}: {errno}")]
    Io {
        what: &'static str,
        path: String,
        errno: Errno,
    },
    #[error("{0:?} is not UTF-8 (a snapshot names files and symlink targets in UTF-8 only)")]
    NotUtf8(String),
    #[error(
        "the volumes hold more than {} entries (files, directories, symlinks): too many for one snapshot",
        snapshot_limits::MAX_ENTRIES
    )]
    TooManyEntries,
    #[error("the volumes' files need more than {max} chunks: too much for one listing")]
    TooManyChunks { max: usize },
    #[error("the volumes' files hold more bytes than the lease's persistent storage (sparse files and hard links count whole): too much for one snapshot")]
    TooManyBytes,
    #[error("{path:?} is nested more than {max} directories deep", max = snapshot_limits::MAX_DEPTH)]
    TooDeep { path: String },
    #[error("{path:?} is longer than {max} bytes", max = snapshot_limits::MAX_PATH_BYTES)]
    PathTooLong { path: String },
    #[error(transparent)]
    Check(#[from] SnapshotCheck),
    #[error("the volume is not empty: a snapshot is restored only into a volume made for it")]
    NotEmpty,
    #[error("chunk {hash} of {path:?} does not hash to its name or has the wrong length")]
    ChunkMismatch { hash: ChunkHash, path: String },
    #[error("chunk {0} is not staged")]
    MissingChunk(ChunkHash),
}

fn io<'a>(what: &'static str, path: &'a str) -> impl FnOnce(Errno) -> SnapshotError + 'a {
    move |errno| SnapshotError::Io {
        what,
        path: path.to_string(),
        errno,
    }
}

/// Where a chunk of a listing was read: the file's path inside its volume, and the piece.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkLoc {
    pub path: String,
    pub offset: u64,
    pub len: u32,
}

/// What one listing may still take, over all the volumes of a lease.
#[derive(Debug, Clone)]
pub struct Budget {
    pub entries: usize,
    pub chunks: usize,
    /// Bytes of file content read: a lease's volumes cannot hold more than it leased, so a
    /// listing past that (a sparse file's apparent size, hard links) stops instead of hashing
    /// holes for minutes.
    pub bytes: u64,
}

impl Default for Budget {
    /// [`snapshot_limits::MAX_ENTRIES`], and as many chunks as a listing of that many bytes can
    /// name (a hash is 67 bytes of JSON).
    fn default() -> Self {
        Budget {
            entries: snapshot_limits::MAX_ENTRIES,
            chunks: snapshot_limits::MAX_LISTING_BYTES / 67,
            bytes: u64::MAX,
        }
    }
}

const DIR_FLAGS: OFlag = OFlag::O_RDONLY
    .union(OFlag::O_DIRECTORY)
    .union(OFlag::O_NOFOLLOW)
    .union(OFlag::O_CLOEXEC);
const FILE_READ_FLAGS: OFlag = OFlag::O_RDONLY
    .union(OFlag::O_NOFOLLOW)
    .union(OFlag::O_NONBLOCK)
    .union(OFlag::O_NOCTTY)
    .union(OFlag::O_CLOEXEC);

/// Opens the volume's root (a host path the runtime chose, not the tenant), not following a
/// symlink in its last component.
fn open_root(root: &Path) -> Result<OwnedFd, SnapshotError> {
    let shown = root.display().to_string();
    nix::fcntl::open(root, DIR_FLAGS, Mode::empty()).map_err(io("cannot open the volume at", &shown))
}

fn kind_of(st: &FileStat) -> SFlag {
    SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits())
}

fn perm(st: &FileStat) -> u32 {
    st.st_mode & 0o777
}

/// The names in the directory `dir`, sorted, without `.` and `..`; at most `max` of them (one
/// more is an error: the listing would be too long).
fn names(dir: &OwnedFd, path: &str, max: usize) -> Result<Vec<Vec<u8>>, SnapshotError> {
    let mut d = nix::dir::Dir::openat(dir.as_fd(), ".", DIR_FLAGS, Mode::empty())
        .map_err(io("cannot read the directory", path))?;
    let mut out = Vec::new();
    for e in d.iter() {
        let e = e.map_err(io("cannot read the directory", path))?;
        let n = e.file_name().to_bytes();
        if n == b"." || n == b".." {
            continue;
        }
        if out.len() >= max {
            return Err(SnapshotError::TooManyEntries);
        }
        out.push(n.to_vec());
    }
    out.sort();
    Ok(out)
}

fn join(parent: &str, name: &str) -> String {
    if parent.is_empty() {
        name.to_string()
    } else {
        format!("{parent}/{name}")
    }
}

/// Errors of an entry that vanished or changed kind while the volume was read: the entry is
/// left out, as if it had been listed a moment later.
fn raced(e: Errno) -> bool {
    matches!(e, Errno::ENOENT | Errno::ELOOP | Errno::ENOTDIR | Errno::ENXIO)
}

/// A volume's entries and where each of its chunks was read.
pub type Listing = (Vec<SnapshotEntry>, Vec<(ChunkHash, ChunkLoc)>);

/// Lists the volume mounted at `root`: its entries (the root first, parents before children,
/// names sorted) and where each chunk was read, within `budget` (shared by the volumes of one
/// listing).
pub fn list(root: &Path, budget: &mut Budget) -> Result<Listing, SnapshotError> {
    let fd = open_root(root)?;
    let st = fstat(&fd).map_err(io("cannot read", ""))?;
    if budget.entries == 0 {
        return Err(SnapshotError::TooManyEntries);
    }
    budget.entries -= 1;
    let mut entries = vec![SnapshotEntry {
        path: String::new(),
        kind: EntryKind::Dir { mode: perm(&st) },
        uid: st.st_uid,
        gid: st.st_gid,
    }];
    let mut chunks = Vec::new();
    walk(&fd, "", 0, budget, &mut entries, &mut chunks)?;
    Ok((entries, chunks))
}

fn walk(
    dir: &OwnedFd,
    path: &str,
    depth: usize,
    budget: &mut Budget,
    entries: &mut Vec<SnapshotEntry>,
    chunks: &mut Vec<(ChunkHash, ChunkLoc)>,
) -> Result<(), SnapshotError> {
    for raw in names(dir, path, budget.entries)? {
        let name = OsStr::from_bytes(&raw);
        let Some(text) = name.to_str() else {
            return Err(SnapshotError::NotUtf8(join(path, &name.to_string_lossy())));
        };
        let p = join(path, text);
        if p.len() > snapshot_limits::MAX_PATH_BYTES {
            return Err(SnapshotError::PathTooLong { path: p });
        }
        let st = match fstatat(dir.as_fd(), name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(e) if raced(e) => continue,
            Err(e) => return Err(io("cannot read", &p)(e)),
        };
        let kind = kind_of(&st);
        let entry = if kind == SFlag::S_IFDIR {
            if depth + 1 >= snapshot_limits::MAX_DEPTH {
                return Err(SnapshotError::TooDeep { path: p });
            }
            let sub = match openat(dir.as_fd(), name, DIR_FLAGS, Mode::empty()) {
                Ok(fd) => fd,
                Err(e) if raced(e) => continue,
                Err(e) => return Err(io("cannot open", &p)(e)),
            };
            let st = fstat(&sub).map_err(io("cannot read", &p))?;
            take_entry(budget)?;
            entries.push(SnapshotEntry {
                path: p.clone(),
                kind: EntryKind::Dir { mode: perm(&st) },
                uid: st.st_uid,
                gid: st.st_gid,
            });
            walk(&sub, &p, depth + 1, budget, entries, chunks)?;
            continue;
        } else if kind == SFlag::S_IFREG {
            let fd = match openat(dir.as_fd(), name, FILE_READ_FLAGS, Mode::empty()) {
                Ok(fd) => fd,
                Err(e) if raced(e) => continue,
                Err(e) => return Err(io("cannot open", &p)(e)),
            };
            // What was opened is what is read: a FIFO or device swapped in is left out.
            let st = fstat(&fd).map_err(io("cannot read", &p))?;
            if kind_of(&st) != SFlag::S_IFREG {
                continue;
            }
            let (size, hashes) = hash_file(fd, &p, budget, chunks)?;
            SnapshotEntry {
                path: p,
                kind: EntryKind::File {
                    mode: perm(&st),
                    size,
                    chunks: hashes,
                },
                uid: st.st_uid,
                gid: st.st_gid,
            }
        } else if kind == SFlag::S_IFLNK {
            let target = match readlinkat(dir.as_fd(), name) {
                Ok(t) => t,
                Err(Errno::EINVAL) => continue,
                Err(e) if raced(e) => continue,
                Err(e) => return Err(io("cannot read the symlink", &p)(e)),
            };
            let Some(target) = target.to_str() else {
                return Err(SnapshotError::NotUtf8(format!("{p} -> {}", target.to_string_lossy())));
            };
            if target.len() > snapshot_limits::MAX_TARGET_BYTES {
                return Err(SnapshotError::PathTooLong {
                    path: format!("{p} -> {target}"),
                });
            }
            SnapshotEntry {
                path: p,
                kind: EntryKind::Symlink {
                    target: target.to_string(),
                },
                uid: st.st_uid,
                gid: st.st_gid,
            }
        } else {
            // FIFOs, sockets and device nodes are not data.
            continue;
        };
        take_entry(budget)?;
        entries.push(entry);
    }
    Ok(())
}

fn take_entry(budget: &mut Budget) -> Result<(), SnapshotError> {
    budget.entries = budget.entries.checked_sub(1).ok_or(SnapshotError::TooManyEntries)?;
    Ok(())
}

/// Reads the open file to its end in chunks; its size is what was read.
fn hash_file(
    fd: OwnedFd,
    path: &str,
    budget: &mut Budget,
    chunks: &mut Vec<(ChunkHash, ChunkLoc)>,
) -> Result<(u64, Vec<ChunkHash>), SnapshotError> {
    let mut f = std::fs::File::from(fd);
    let mut buf = vec![0u8; snapshot_limits::CHUNK_BYTES as usize];
    let mut hashes = Vec::new();
    let mut offset = 0u64;
    loop {
        let mut n = 0;
        while n < buf.len() {
            match f.read(&mut buf[n..]) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    return Err(SnapshotError::Io {
                        what: "cannot read",
                        path: path.to_string(),
                        errno: Errno::from_raw(e.raw_os_error().unwrap_or(0)),
                    })
                }
            }
        }
        if n == 0 {
            break;
        }
        if budget.chunks == 0 {
            return Err(SnapshotError::TooManyChunks {
                max: Budget::default().chunks,
            });
        }
        budget.chunks -= 1;
        budget.bytes = budget.bytes.checked_sub(n as u64).ok_or(SnapshotError::TooManyBytes)?;
        let h = ChunkHash::of(&buf[..n]);
        hashes.push(h);
        chunks.push((
            h,
            ChunkLoc {
                path: path.to_string(),
                offset,
                len: n as u32,
            },
        ));
        offset += n as u64;
        if n < buf.len() {
            break;
        }
    }
    Ok((offset, hashes))
}

/// Opens the directory `components` below `root`, one component at a time, never following a
/// symlink. `Ok(None)` when one is missing or not a directory.
fn open_dir_below(root: &OwnedFd, components: &[&str]) -> Result<Option<OwnedFd>, SnapshotError> {
    let mut fd = openat(root.as_fd(), ".", DIR_FLAGS, Mode::empty()).map_err(io("cannot open", ""))?;
    for c in components {
        fd = match openat(fd.as_fd(), *c, DIR_FLAGS, Mode::empty()) {
            Ok(next) => next,
            Err(e) if raced(e) => return Ok(None),
            Err(e) => return Err(io("cannot open", c)(e)),
        };
    }
    Ok(Some(fd))
}

/// Chunk `loc` of the volume at `root`, if it still holds bytes that hash to `hash`; `None`
/// when the file is gone, is no longer a regular file, or changed since it was listed.
pub fn read_chunk(root: &Path, loc: &ChunkLoc, hash: &ChunkHash) -> Result<Option<Vec<u8>>, SnapshotError> {
    let root = open_root(root)?;
    let parts: Vec<&str> = loc.path.split('/').collect();
    let Some((name, dirs)) = parts.split_last() else {
        return Ok(None);
    };
    let Some(dir) = open_dir_below(&root, dirs)? else {
        return Ok(None);
    };
    let fd = match openat(dir.as_fd(), *name, FILE_READ_FLAGS, Mode::empty()) {
        Ok(fd) => fd,
        Err(e) if raced(e) => return Ok(None),
        Err(e) => return Err(io("cannot open", &loc.path)(e)),
    };
    let st = fstat(&fd).map_err(io("cannot read", &loc.path))?;
    if kind_of(&st) != SFlag::S_IFREG {
        return Ok(None);
    }
    let f = std::fs::File::from(fd);
    let mut buf = vec![0u8; loc.len as usize];
    if f.read_exact_at(&mut buf, loc.offset).is_err() {
        return Ok(None);
    }
    Ok((ChunkHash::of(&buf) == *hash).then_some(buf))
}

/// Whether the directory at `root` holds nothing.
pub fn is_empty(root: &Path) -> Result<bool, SnapshotError> {
    let fd = open_root(root)?;
    names(&fd, "", 1).map(|n| n.is_empty()).or_else(|e| match e {
        SnapshotError::TooManyEntries => Ok(false),
        e => Err(e),
    })
}

/// What a restore wrote.
pub type Restored = SnapshotTotals;

/// Writes `tree` into the empty volume mounted at `root`, each file's chunks taken from
/// `chunk` (and checked against their names and lengths again), owned as listed or, with
/// `owner`, by that user and group (a runtime that runs every workload as one user). Refuses a
/// tree that does not pass [`VolumeTree::check`], whose files add up to more than `max_bytes`,
/// or a volume that is not empty, before writing anything.
pub fn restore(
    root: &Path,
    tree: &VolumeTree,
    owner: Option<(u32, u32)>,
    max_bytes: u64,
    chunk: &mut dyn FnMut(&ChunkHash) -> Result<Vec<u8>, SnapshotError>,
) -> Result<Restored, SnapshotError> {
    let totals = tree.check()?;
    if totals.bytes > max_bytes {
        return Err(SnapshotCheck::TooLarge {
            total: totals.bytes,
            max: max_bytes,
        }
        .into());
    }
    if !is_empty(root)? {
        return Err(SnapshotError::NotEmpty);
    }
    let root_fd = open_root(root)?;
    let who = |e: &SnapshotEntry| owner.unwrap_or((e.uid, e.gid));
    let chown = |fd: &OwnedFd, e: &SnapshotEntry, path: &str| {
        let (uid, gid) = who(e);
        nix::unistd::fchown(
            fd,
            Some(nix::unistd::Uid::from_raw(uid)),
            Some(nix::unistd::Gid::from_raw(gid)),
        )
        .map_err(io("cannot chown", path))
    };
    let chmod = |fd: &OwnedFd, mode: u32, path: &str| {
        fchmod(fd, Mode::from_bits_truncate(mode & 0o777)).map_err(io("cannot chmod", path))
    };
    // The parent directories opened last, by path: entries come parents first and siblings
    // together, so most entries reuse the one before.
    let mut parents: BTreeMap<String, OwnedFd> = BTreeMap::new();
    let mut parent_of = |path: &str| -> Result<OwnedFd, SnapshotError> {
        let dir = path.rsplit_once('/').map_or("", |(d, _)| d);
        if let Some(fd) = parents.get(dir) {
            return fd.try_clone().map_err(|_| io("cannot open", dir)(Errno::EMFILE));
        }
        let comps: Vec<&str> = if dir.is_empty() {
            vec![]
        } else {
            dir.split('/').collect()
        };
        let fd = open_dir_below(&root_fd, &comps)?.ok_or_else(|| io("cannot open", dir)(Errno::ENOENT))?;
        parents.clear();
        parents.insert(
            dir.to_string(),
            fd.try_clone().map_err(|_| io("cannot open", dir)(Errno::EMFILE))?,
        );
        Ok(fd)
    };
    let mut links = Vec::new();
    for e in &tree.entries {
        let p = e.path.as_str();
        let name = p.rsplit('/').next().unwrap_or(p);
        match &e.kind {
            EntryKind::Dir { mode } if p.is_empty() => {
                chown(&root_fd, e, p)?;
                chmod(&root_fd, *mode, p)?;
            }
            EntryKind::Dir { mode } => {
                let parent = parent_of(p)?;
                mkdirat(parent.as_fd(), name, Mode::from_bits_truncate(0o700)).map_err(io("cannot make", p))?;
                let fd = openat(parent.as_fd(), name, DIR_FLAGS, Mode::empty()).map_err(io("cannot open", p))?;
                chown(&fd, e, p)?;
                chmod(&fd, *mode, p)?;
            }
            EntryKind::File { mode, size, chunks } => {
                let parent = parent_of(p)?;
                let flags = OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
                let fd = openat(parent.as_fd(), name, flags, Mode::from_bits_truncate(0o600))
                    .map_err(io("cannot create", p))?;
                chown(&fd, e, p)?;
                let mut f = std::fs::File::from(fd);
                for (i, h) in chunks.iter().enumerate() {
                    let bytes = chunk(h)?;
                    if bytes.len() as u64 != chunk_len(*size, i as u64) || ChunkHash::of(&bytes) != *h {
                        return Err(SnapshotError::ChunkMismatch {
                            hash: *h,
                            path: p.to_string(),
                        });
                    }
                    f.write_all(&bytes).map_err(|err| SnapshotError::Io {
                        what: "cannot write",
                        path: p.to_string(),
                        errno: Errno::from_raw(err.raw_os_error().unwrap_or(0)),
                    })?;
                }
                let fd = OwnedFd::from(f);
                chmod(&fd, *mode, p)?;
            }
            EntryKind::Symlink { target } => links.push((e, target)),
        }
    }
    // Last, so that nothing written above could go through one.
    for (e, target) in links {
        let p = e.path.as_str();
        let name = p.rsplit('/').next().unwrap_or(p);
        let parent = parent_of(p)?;
        nix::unistd::symlinkat(target.as_str(), parent.as_fd(), name).map_err(io("cannot make the symlink", p))?;
        let (uid, gid) = who(e);
        nix::unistd::fchownat(
            parent.as_fd(),
            name,
            Some(nix::unistd::Uid::from_raw(uid)),
            Some(nix::unistd::Gid::from_raw(gid)),
            AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .map_err(io("cannot chown", p))?;
    }
    Ok(totals)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    fn tree_of(entries: Vec<SnapshotEntry>) -> VolumeTree {
        VolumeTree {
            service: "db".into(),
            volume: "data".into(),
            entries,
        }
    }

    /// A volume with what a database leaves: directories, a file of several chunks (the last
    /// shorter), an empty file, modes and owners, a symlink to a host file, a dangling one and a
    /// FIFO.
    fn sample(dir: &Path) -> Vec<u8> {
        let big: Vec<u8> = (0..(2 << 20) + 12_345).map(|i: u32| (i * 7 % 251) as u8).collect();
        std::fs::create_dir_all(dir.join("pg/base")).expect("dirs");
        std::fs::write(dir.join("pg/base/1"), &big).expect("big");
        std::fs::write(dir.join("pg/empty"), b"").expect("empty");
        std::fs::write(dir.join("note.txt"), b"hello").expect("note");
        std::fs::set_permissions(dir.join("note.txt"), std::fs::Permissions::from_mode(0o640)).expect("chmod");
        std::fs::set_permissions(dir.join("pg"), std::fs::Permissions::from_mode(0o700)).expect("chmod");
        std::os::unix::fs::chown(dir.join("pg/base/1"), Some(999), Some(998)).expect("chown");
        std::os::unix::fs::symlink("/etc/passwd", dir.join("passwd")).expect("symlink");
        std::os::unix::fs::symlink("nowhere/at/all", dir.join("dangling")).expect("symlink");
        nix::unistd::mkfifo(&dir.join("fifo"), Mode::from_bits_truncate(0o644)).expect("fifo");
        big
    }

    fn listed(root: &Path) -> Listing {
        list(root, &mut Budget::default()).expect("lists")
    }

    #[test]
    fn a_volume_lists_restores_into_another_and_lists_the_same() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
        std::fs::create_dir_all(&a).expect("a");
        std::fs::create_dir_all(&b).expect("b");
        let big = sample(&a);
        let (entries, chunks) = listed(&a);
        let paths: Vec<&str> = entries.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "",
                "dangling",
                "note.txt",
                "passwd",
                "pg",
                "pg/base",
                "pg/base/1",
                "pg/empty"
            ],
            "the FIFO is left out"
        );
        let one = entries.iter().find(|e| e.path == "pg/base/1").expect("listed");
        match &one.kind {
            EntryKind::File { size, chunks, .. } => {
                assert_eq!(*size, big.len() as u64);
                assert_eq!(chunks.len(), 3);
                assert_eq!(chunks[2], ChunkHash::of(&big[2 << 20..]));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!((one.uid, one.gid), (999, 998));
        let by_hash: BTreeMap<ChunkHash, ChunkLoc> = chunks.into_iter().collect();
        let tree = tree_of(entries.clone());
        let restored = restore(&b, &tree, None, 10 << 20, &mut |h| {
            let loc = by_hash.get(h).ok_or(SnapshotError::MissingChunk(*h))?;
            read_chunk(&a, loc, h)?.ok_or(SnapshotError::MissingChunk(*h))
        })
        .expect("restores");
        assert_eq!(restored.files, 3);
        assert_eq!(std::fs::read(b.join("pg/base/1")).expect("read"), big);
        assert_eq!(listed(&b).0, entries, "the copy lists as the original");
        assert_eq!(
            std::fs::read_link(b.join("passwd")).expect("link"),
            Path::new("/etc/passwd")
        );
        assert_eq!(
            std::fs::metadata(b.join("note.txt")).expect("meta").mode() & 0o777,
            0o640
        );
    }

    #[test]
    fn a_symlink_to_a_host_file_is_listed_as_a_symlink_and_its_target_never_read() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let a = tmp.path().join("a");
        std::fs::create_dir_all(a.join("d")).expect("a");
        std::fs::write(tmp.path().join("secret"), b"the host's secret").expect("secret");
        std::os::unix::fs::symlink(tmp.path().join("secret"), a.join("s")).expect("symlink");
        std::os::unix::fs::symlink(tmp.path(), a.join("up")).expect("symlink to a directory");
        let (entries, chunks) = listed(&a);
        assert!(chunks.is_empty(), "no chunk was read: {chunks:?}");
        let s = entries.iter().find(|e| e.path == "s").expect("listed");
        assert!(matches!(&s.kind, EntryKind::Symlink { target } if target.ends_with("secret")));
        assert!(
            !entries.iter().any(|e| e.path.starts_with("up/")),
            "not followed: {entries:?}"
        );
        // A file listed, then swapped for a symlink to the secret: its chunk is not served.
        std::fs::write(a.join("d/f"), b"the host's secret").expect("f");
        let (_, chunks) = listed(&a);
        let (h, loc) = chunks[0].clone();
        std::fs::remove_file(a.join("d/f")).expect("rm");
        std::os::unix::fs::symlink(tmp.path().join("secret"), a.join("d/f")).expect("swap");
        assert_eq!(read_chunk(&a, &loc, &h).expect("answers"), None);
        // Its directory swapped for a symlink to the secret's directory: not followed either.
        std::fs::remove_file(a.join("d/f")).expect("rm");
        std::fs::remove_dir(a.join("d")).expect("rmdir");
        std::fs::create_dir(tmp.path().join("d2")).expect("d2");
        std::fs::write(tmp.path().join("d2/f"), b"the host's secret").expect("f");
        std::os::unix::fs::symlink(tmp.path().join("d2"), a.join("d")).expect("swap dir");
        assert_eq!(read_chunk(&a, &loc, &h).expect("answers"), None);
    }

    #[test]
    fn a_chunk_whose_file_changed_since_the_listing_is_not_served() {
        let tmp = tempfile::tempdir().expect("tempdir");
        std::fs::write(tmp.path().join("f"), b"before").expect("f");
        let (_, chunks) = listed(tmp.path());
        let (h, loc) = chunks[0].clone();
        assert_eq!(
            read_chunk(tmp.path(), &loc, &h).expect("reads"),
            Some(b"before".to_vec())
        );
        std::fs::write(tmp.path().join("f"), b"after!").expect("f");
        assert_eq!(read_chunk(tmp.path(), &loc, &h).expect("answers"), None);
    }

    fn entry(path: &str, kind: EntryKind) -> SnapshotEntry {
        SnapshotEntry {
            path: path.into(),
            kind,
            uid: 0,
            gid: 0,
        }
    }

    fn file_of(bytes: &[u8]) -> EntryKind {
        EntryKind::File {
            mode: 0o4755,
            size: bytes.len() as u64,
            chunks: vec![ChunkHash::of(bytes)],
        }
    }

    /// Restores `entries` into a fresh volume `vol` inside a fresh directory, chunks served
    /// from `store`; the error, and every path left in the directory (the volume's included).
    fn attempt(entries: Vec<SnapshotEntry>, store: &[&[u8]], max: u64) -> (Option<SnapshotError>, Vec<String>) {
        let tmp = tempfile::tempdir().expect("tempdir");
        let vol = tmp.path().join("vol");
        std::fs::create_dir(&vol).expect("vol");
        let store: BTreeMap<ChunkHash, Vec<u8>> = store.iter().map(|b| (ChunkHash::of(b), b.to_vec())).collect();
        let r = restore(&vol, &tree_of(entries), None, max, &mut |h| {
            store.get(h).cloned().ok_or(SnapshotError::MissingChunk(*h))
        });
        let mut left = Vec::new();
        let mut stack = vec![tmp.path().to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).expect("read").flatten() {
                let rel = e.path().strip_prefix(tmp.path()).expect("below").display().to_string();
                if e.file_type().expect("type").is_dir() {
                    stack.push(e.path());
                }
                left.push(rel);
            }
        }
        left.sort();
        (r.err(), left)
    }

    #[test]
    fn a_restore_refuses_every_way_out_of_the_volume_and_writes_nothing_outside() {
        let x: &[u8] = b"x";
        for (entries, want) in [
            (vec![entry("../x", file_of(x))], "BadComponent"),
            (vec![entry("/etc/x", file_of(x))], "Absolute"),
            (
                vec![
                    entry("l", EntryKind::Symlink { target: "/etc".into() }),
                    entry("l/x", file_of(x)),
                ],
                "NoParentDir",
            ),
            (
                vec![
                    entry("l", EntryKind::Symlink { target: "..".into() }),
                    entry("l/x", file_of(x)),
                ],
                "NoParentDir",
            ),
            (vec![entry("big", file_of(b"0123456789"))], "TooLarge"),
        ] {
            let (err, left) = attempt(entries, &[x, b"0123456789"], 5);
            let err = err.expect("refused");
            assert!(format!("{err:?}").contains(want), "{want}: {err:?}");
            assert_eq!(left, ["vol"], "nothing written, inside or out");
        }
    }

    #[test]
    fn a_chunk_that_does_not_hash_to_its_name_is_refused() {
        let lie = EntryKind::File {
            mode: 0o644,
            size: 5,
            chunks: vec![ChunkHash::of(b"truth")],
        };
        let tmp = tempfile::tempdir().expect("tempdir");
        let r = restore(tmp.path(), &tree_of(vec![entry("f", lie)]), None, 100, &mut |_| {
            Ok(b"lies!".to_vec())
        });
        assert!(matches!(r, Err(SnapshotError::ChunkMismatch { .. })), "{r:?}");
    }

    #[test]
    fn a_restore_writes_only_into_an_empty_volume_masks_modes_and_makes_symlinks_last() {
        let tmp = tempfile::tempdir().expect("tempdir");
        std::os::unix::fs::symlink("/etc", tmp.path().join("planted")).expect("planted");
        let r = restore(tmp.path(), &tree_of(vec![]), None, 0, &mut |h| {
            Err(SnapshotError::MissingChunk(*h))
        });
        assert!(matches!(r, Err(SnapshotError::NotEmpty)), "{r:?}");

        let x: &[u8] = b"x";
        let (err, left) = attempt(
            vec![
                entry("a", EntryKind::Symlink { target: "/etc".into() }),
                entry("d", EntryKind::Dir { mode: 0o7777 }),
                entry("d/f", file_of(x)),
            ],
            &[x],
            10,
        );
        assert!(err.is_none(), "{err:?}");
        assert_eq!(left, ["vol", "vol/a", "vol/d", "vol/d/f"]);
        let tmp = tempfile::tempdir().expect("tempdir");
        restore(
            tmp.path(),
            &tree_of(vec![
                entry("d", EntryKind::Dir { mode: 0o7777 }),
                entry("d/f", file_of(x)),
            ]),
            Some((4242, 4243)),
            10,
            &mut |_| Ok(x.to_vec()),
        )
        .expect("restores");
        let m = std::fs::metadata(tmp.path().join("d/f")).expect("meta");
        assert_eq!(m.mode() & 0o7777, 0o755, "setuid masked away");
        assert_eq!((m.uid(), m.gid()), (4242, 4243), "owned as the runtime asks");
        let d = std::fs::metadata(tmp.path().join("d")).expect("meta");
        assert_eq!(d.mode() & 0o7777, 0o777, "sticky and setgid masked away");
    }

    #[test]
    fn a_sparse_file_larger_than_the_lease_stops_the_listing_instead_of_hashing_its_holes() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let f = std::fs::File::create(tmp.path().join("sparse")).expect("create");
        // 1 GiB of apparent size, no block written.
        f.set_len(1 << 30).expect("set_len");
        let mut b = Budget {
            bytes: 4 << 20,
            ..Budget::default()
        };
        assert!(matches!(list(tmp.path(), &mut b), Err(SnapshotError::TooManyBytes)));
        let mut b = Budget {
            bytes: 2 << 30,
            ..Budget::default()
        };
        assert!(list(tmp.path(), &mut b).is_ok(), "within the leased bytes it lists");
    }

    #[test]
    fn a_listing_stops_at_its_entry_budget_with_an_error() {
        let tmp = tempfile::tempdir().expect("tempdir");
        for i in 0..5 {
            std::fs::write(tmp.path().join(format!("f{i}")), b"x").expect("f");
        }
        let mut b = Budget {
            entries: 4,
            chunks: 100,
            bytes: u64::MAX,
        };
        assert!(matches!(list(tmp.path(), &mut b), Err(SnapshotError::TooManyEntries)));
        let mut b = Budget {
            entries: 100,
            chunks: 2,
            bytes: u64::MAX,
        };
        assert!(matches!(
            list(tmp.path(), &mut b),
            Err(SnapshotError::TooManyChunks { .. })
        ));
    }
}
